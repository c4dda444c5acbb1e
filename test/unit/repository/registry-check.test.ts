// The registry check reads docker-registry v1's image folders from keys alone.
import { describe, expect, it } from 'vitest';
import { RegistryImages } from '../../../src/repository/registry-check.js';

const id = (c: string) => c.repeat(64);

describe('RegistryImages', () => {
  it('names an image caught mid-push and one without all its files, and nothing else', () => {
    const images = new RegistryImages();
    for (const file of ['json', 'layer', 'ancestry', '_checksum'])
      images.add(`registry/images/${id('a')}/${file}`);
    for (const file of ['json', '_inprogress']) images.add(`registry/images/${id('c')}/${file}`);
    for (const file of ['json', 'ancestry']) images.add(`registry/images/${id('b')}/${file}`);
    images.add('registry/repositories/library/app/tag_v2');
    images.add(`registry/images/${id('d')}/extra/json`);
    images.add(`basebackups_005/base_1/json`);
    expect(images.findings()).toEqual([
      `image ${id('b')} lacks its layer: a release that names it cannot be pulled after a restore`,
      `image ${id('c')} was being pushed when the bucket was copied (registry/images/${id('c')}/_inprogress): restored, the registry will not serve it until its app is built again`,
    ]);
  });

  it('finds nothing in a bucket without image folders', () => {
    const images = new RegistryImages();
    images.add('wal_005/000000010000000000000002.lzo');
    expect(images.findings()).toEqual([]);
  });
});
