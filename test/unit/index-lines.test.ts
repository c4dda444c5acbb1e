// The new bucket index leaves in listing order whatever order the objects settle in.
import { describe, expect, it } from 'vitest';
import type { IndexEntry } from '../../src/repository/manifest.js';
import { IndexLines } from '../../src/sources/index-lines.js';

function entry(key: string): IndexEntry {
  return {
    key,
    size: key.length,
    etag: 'e',
    lastModified: '2026-11-25T00:00:00.000Z',
    metadata: {},
    sha256: '0'.repeat(64),
    blob: `blobs/00/${key}`,
  };
}

async function text(index: IndexLines): Promise<string> {
  let out = '';
  for await (const chunk of index.readable) out += String(chunk);
  return out;
}

describe('IndexLines', () => {
  it('writes lines in listing order, skipping objects settled without a line', async () => {
    const index = new IndexLines();
    const reading = text(index);
    // Five objects listed 0..4; 1 vanished; they settle 3, 0, 4, 1, 2.
    await index.settle(3, entry('d'));
    await index.settle(0, entry('a'));
    await index.settle(4, entry('e'));
    await index.settle(1, undefined);
    await index.settle(2, entry('c'));
    index.end();
    const lines = (await reading).trimEnd().split('\n');
    expect(lines.map((l) => (JSON.parse(l) as IndexEntry).key)).toEqual(['a', 'c', 'd', 'e']);
    expect(index.lines).toBe(4);
  });

  it('holds back only the lines behind an object not yet settled, and stays under backpressure', async () => {
    const index = new IndexLines();
    const slow = 0;
    for (let seq = 1; seq <= 3000; seq++) await index.settle(seq, entry(`k${String(seq).padStart(5, '0')}`));
    expect(index.lines).toBe(0);
    const reading = text(index);
    await index.settle(slow, entry('k00000'));
    index.end();
    const keys = (await reading)
      .trimEnd()
      .split('\n')
      .map((l) => (JSON.parse(l) as IndexEntry).key);
    expect(keys).toHaveLength(3001);
    expect(keys).toEqual([...keys].sort());
  });

  it('refuses to end while a listed object was never settled, and fails its reader on fail()', async () => {
    const index = new IndexLines();
    await index.settle(1, entry('b'));
    expect(() => {
      index.end();
    }).toThrow(/never settled/);
    const reading = text(index);
    index.fail(new Error('target full'));
    await expect(reading).rejects.toThrow('target full');
  });
});
