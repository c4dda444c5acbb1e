// A volume file is archived at the size it had when opened: cut there if it grew, padded with
// zeros (as GNU tar pads) if it shrank while read.
import { appendFile, open, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { MountCalls } from '../../../src/sources/mount-calls.js';
import { readToSize } from '../../../src/sources/volume.js';
import { tempDir } from '../../temp-dirs.js';

const KiB = 1024;

/** Reads `path`, opened now, as `size` bytes after `change` ran on it. */
async function readAs(path: string, size: number, change: () => Promise<void>) {
  const calls = new MountCalls(new AbortController().signal);
  const file = await open(path);
  try {
    await change();
    const padded = { bytes: 0 };
    const chunks: Buffer[] = [];
    for await (const chunk of readToSize(file, size, calls, padded)) chunks.push(chunk);
    return { body: Buffer.concat(chunks), padded: padded.bytes, waiting: calls.waiting };
  } finally {
    await file.close();
  }
}

describe('readToSize', () => {
  it('cuts a file that grew at its size when opened', async () => {
    const path = join(tempDir('read-'), 'app.log');
    const first = Buffer.alloc(600 * KiB, 'a');
    await writeFile(path, first);
    const read = await readAs(path, first.length, () => appendFile(path, Buffer.alloc(300 * KiB, 'b')));
    expect(read.body.equals(first)).toBe(true);
    expect(read.padded).toBe(0);
    expect(read.waiting).toBe(0);
  });

  it('pads a file that shrank with zeros to its size when opened, and says by how much', async () => {
    const path = join(tempDir('read-'), 'app.log');
    const first = Buffer.alloc(600 * KiB, 'a');
    await writeFile(path, first);
    const read = await readAs(path, first.length, () => truncate(path, 300 * KiB + 7));
    expect(read.body.length).toBe(first.length);
    expect(read.body.subarray(0, 300 * KiB + 7).equals(first.subarray(0, 300 * KiB + 7))).toBe(true);
    expect(read.body.subarray(300 * KiB + 7).equals(Buffer.alloc(first.length - 300 * KiB - 7))).toBe(true);
    expect(read.padded).toBe(first.length - 300 * KiB - 7);
  });
});
