// DigestMap: keys to numbers in typed arrays. Every value comes back after the table grows many
// times, an overwrite keeps one entry; a map of blob keys neither holds nor finds any other key, and
// a map of object keys takes any key.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { DigestMap, hexPrefix, isBlobKey } from '../../../src/repository/digest-map.js';
import { blobKey } from '../../../src/repository/layout.js';

const key = (i: number) => blobKey({ bucket: 'registry', key: `images/${i}/layer`, size: i, etag: `e${i}` });

describe('DigestMap.forBlobs', () => {
  it('holds 100,000 blobs through its growth and finds each one', () => {
    const map = DigestMap.forBlobs();
    const keys = Array.from({ length: 100_000 }, (_, i) => key(i));
    expect(keys.every((k, i) => map.set(k, i * 3))).toBe(true);
    expect(map.size).toBe(100_000);
    expect(keys.filter((k, i) => map.get(k) !== i * 3)).toEqual([]);
    expect(map.get(key(100_000))).toBeUndefined();
  });

  it('replaces the value of a key set twice', () => {
    const map = DigestMap.forBlobs();
    map.set(key(1), 10);
    map.set(key(1), 0);
    expect(map.size).toBe(1);
    expect(map.get(key(1))).toBe(0);
  });

  it('tells apart names that share their first 32 bits', () => {
    const map = DigestMap.forBlobs();
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
    const map = DigestMap.forBlobs();
    for (const other of others) {
      expect(isBlobKey(other), other).toBe(false);
      expect(map.set(other, 1)).toBe(false);
      expect(map.get(other)).toBeUndefined();
    }
    expect(map.size).toBe(0);
    expect(isBlobKey(`blobs/${name.slice(0, 2)}/${name}`)).toBe(true);
  });
});

describe('DigestMap.forKeys', () => {
  it('holds any object keys, each apart from the others', () => {
    const map = DigestMap.forKeys();
    const keys = [
      '',
      'wal_005/000000010000000000000001.lzo',
      'registry/images/ä/json',
      'a key with spaces',
      'registry/images/ä/json ',
      ...Array.from({ length: 20_000 }, (_, i) => `registry/repositories/app${i}/tag_v1`),
    ];
    expect(keys.every((k, i) => map.set(k, i))).toBe(true);
    expect(map.size).toBe(keys.length);
    expect(keys.filter((k, i) => map.get(k) !== i)).toEqual([]);
    expect(map.get('registry/images/a/json')).toBeUndefined();
  });
});

describe('hexPrefix', () => {
  it('reads the first 52 bits of a hex digest exactly', () => {
    expect(hexPrefix('f'.repeat(64))).toBe(2 ** 52 - 1);
    expect(hexPrefix(`0000000000001${'f'.repeat(51)}`)).toBe(1);
  });
});
