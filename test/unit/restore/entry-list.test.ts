// The restore plan's entry list: what goes in comes back out, field for field, past every growth,
// across block boundaries, and for an entry longer than a block.
import { describe, expect, it } from 'vitest';
import type { IndexEntry } from '../../../src/repository/manifest.js';
import { EntryList } from '../../../src/restore/entry-list.js';

function entry(i: number): IndexEntry {
  const sha256 = i.toString(16).padStart(64, '0');
  return {
    // Multi-byte keys: positions are bytes, not characters.
    key: `registry/images/${i}/layer-é€😀-${'x'.repeat(i % 300)}`,
    size: i * 7,
    etag: i % 2 === 0 ? 'd41d8cd98f00b204e9800998ecf8427e' : `${'a'.repeat(32)}-${(i % 9) + 1}`,
    lastModified: new Date(1_700_000_000_000 + i).toISOString(),
    ...(i % 3 === 0 ? {} : { contentType: 'application/octet-stream' }),
    metadata: i % 5 === 0 ? { 'x-who': `ü-${i}` } : {},
    sha256,
    blob: `blobs/${sha256.slice(0, 2)}/${sha256}`,
  };
}

describe('EntryList', () => {
  it('gives back every entry it was given, in order, after growing many times', () => {
    const list = new EntryList();
    const count = 5000;
    for (let i = 0; i < count; i++) list.push(entry(i));
    expect(list.length).toBe(count);
    for (const i of [0, 1, 1023, 1024, 1025, 2999, count - 1]) expect(list.at(i)).toEqual(entry(i));
    let i = 0;
    for (const got of list) expect(got).toEqual(entry(i++));
    expect(i).toBe(count);
  });

  it('fills blocks without splitting an entry, and holds one longer than a block', () => {
    const list = new EntryList();
    const count = 20_000;
    for (let i = 0; i < count; i++) list.push(entry(i));
    const huge = { ...entry(7), metadata: { 'x-big': 'ü'.repeat(700_000) } };
    list.push(huge);
    list.push(entry(8));
    expect(list.length).toBe(count + 2);
    expect(
      [...list].every(
        (got, i) =>
          JSON.stringify(got) === JSON.stringify(i < count ? entry(i) : i === count ? huge : entry(8)),
      ),
    ).toBe(true);
  });

  it('refuses a position it does not hold', () => {
    const list = new EntryList();
    expect([...list]).toEqual([]);
    list.push(entry(1));
    expect(() => list.at(1)).toThrow(RangeError);
    expect(() => list.at(-1)).toThrow(RangeError);
  });
});
