// BlobMap: blob keys to numbers in typed arrays. Every value comes back after the table grows many
// times, an overwrite keeps one entry, and keys that are not blob keys are neither held nor found.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { BlobMap, isBlobKey } from '../../../src/repository/blob-map.js';
import { blobKey } from '../../../src/repository/layout.js';

const key = (i: number) => blobKey({ bucket: 'registry', key: `images/${i}/layer`, size: i, etag: `e${i}` });

describe('BlobMap', () => {
  it('holds 100,000 blobs through its growth and finds each one', () => {
    const map = new BlobMap();
    const keys = Array.from({ length: 100_000 }, (_, i) => key(i));
    expect(keys.every((k, i) => map.set(k, i * 3))).toBe(true);
    expect(map.size).toBe(100_000);
    expect(keys.filter((k, i) => map.get(k) !== i * 3)).toEqual([]);
    expect(map.get(key(100_000))).toBeUndefined();
  });

  it('replaces the value of a key set twice', () => {
    const map = new BlobMap();
    map.set(key(1), 10);
    map.set(key(1), 0);
    expect(map.size).toBe(1);
    expect(map.get(key(1))).toBe(0);
  });

  it('tells apart names that share their first 32 bits', () => {
    const map = new BlobMap();
    const name = createHash('sha256').update('a').digest('hex');
    const twin = `${name.slice(0, 8)}${'0'.repeat(56)}`;
    map.set(`blobs/${name.slice(0, 2)}/${name}`, 1);
    expect(map.get(`blobs/${twin.slice(0, 2)}/${twin}`)).toBeUndefined();
    map.set(`blobs/${twin.slice(0, 2)}/${twin}`, 2);
    expect(map.get(`blobs/${name.slice(0, 2)}/${name}`)).toBe(1);
    expect(map.get(`blobs/${twin.slice(0, 2)}/${twin}`)).toBe(2);
  });

  it('holds and finds no key that is not a blob key', () => {
    const name = createHash('sha256').update('b').digest('hex');
    const others = [
      `blobs/${name.slice(0, 2)}/${name.toUpperCase()}`,
      `blobs/zz/${name}`,
      `blobs/${name.slice(0, 2)}/${name}.partial-1`,
      `blobs/${name.slice(0, 2)}/${name.slice(1)}`,
      `snapshots/${name.slice(0, 2)}/${name}`,
      `blobs/${name.slice(2, 4) === name.slice(0, 2) ? 'ff' : name.slice(2, 4)}/${name}`,
    ];
    const map = new BlobMap();
    for (const other of others) {
      expect(isBlobKey(other), other).toBe(false);
      expect(map.set(other, 1)).toBe(false);
      expect(map.get(other)).toBeUndefined();
    }
    expect(map.size).toBe(0);
    expect(isBlobKey(`blobs/${name.slice(0, 2)}/${name}`)).toBe(true);
  });
});
