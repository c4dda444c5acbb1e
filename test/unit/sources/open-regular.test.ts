// A volume file is read as it is when opened: what took its place since the walk listed it.
import { execFileSync } from 'node:child_process';
import { mkdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { MountCalls } from '../../../src/sources/mount-calls.js';
import { openRegular } from '../../../src/sources/volume.js';
import { tempDir } from '../../temp-dirs.js';

const calls = new MountCalls(new AbortController().signal);

async function readAll(path: string): Promise<string> {
  const { handle } = await openRegular(path, calls);
  try {
    return (await handle.readFile()).toString('utf8');
  } finally {
    await handle.close();
  }
}

describe('openRegular', () => {
  it('opens a regular file with the stats of what it opened', async () => {
    const dir = tempDir('open-');
    const file = join(dir, 'app.log');
    await writeFile(file, 'first\n');
    // Replaced by another file since it was listed: that one is read, with its own size.
    await writeFile(join(dir, 'next'), 'the new file\n');
    await rename(join(dir, 'next'), file);
    const { handle, stats } = await openRegular(file, calls);
    await handle.close();
    expect(stats.isFile()).toBe(true);
    expect(stats.size).toBe(13n);
    expect(await readAll(file)).toBe('the new file\n');
  });

  it('refuses a symlink, a directory or a FIFO now where a file was, without following or waiting', async () => {
    const dir = tempDir('open-');
    const outside = join(tempDir('outside-'), 'secret');
    await writeFile(outside, 'not of the volume\n');
    const link = join(dir, 'link');
    await symlink(outside, link);
    const folder = join(dir, 'folder');
    await mkdir(folder);
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    for (const path of [link, folder, fifo]) {
      await expect(openRegular(path, calls), path).rejects.toMatchObject({ code: 'ECHANGED' });
    }
    await rm(join(dir, 'gone'), { force: true });
    await expect(openRegular(join(dir, 'gone'), calls)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
