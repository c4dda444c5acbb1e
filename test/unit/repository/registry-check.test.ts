// The registry check reads docker-registry v1's image folders from keys, and tags from their bodies.
import { describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { isTagFile, readTagged, RegistryImages } from '../../../src/repository/registry-check.js';

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

  it('names a tag whose body names an image the bucket lacks, and passes over what is no image id', () => {
    const images = new RegistryImages();
    for (const file of ['json', 'layer', 'ancestry']) images.add(`registry/images/${id('a')}/${file}`);
    images.addTag('registry/repositories/library/app/tag_v2', id('a'));
    images.addTag('registry/repositories/library/app/tag_v3', `${id('d')}\n`);
    // Tag "_x"'s metadata file is "tag_x_json": its body is JSON, not an id.
    images.addTag('registry/repositories/library/app/tag_x_json', '{"last_update": 1}');
    images.addTag('registry/repositories/library/app/taggit-1a2b3c4_json', id('e'));
    expect(images.findings()).toEqual([
      `tag library/app:v3 names image ${id('d')}, which the bucket lacks: after a restore that tag cannot be pulled (an image pushed while the bucket was copied can be missed, and its tag, copied later, not)`,
    ]);
  });

  it('names a tag whose image has a parent the bucket lacks, from the ancestry of tagged images only', () => {
    const images = new RegistryImages();
    for (const image of ['a', 'b'])
      for (const file of ['json', 'layer', 'ancestry'])
        images.add(`registry/images/${id(image)}/${file}`, `blob-${image}-${file}`);
    images.addTag('registry/repositories/library/app/tag_v2', id('a'));
    expect(images.taggedAncestries()).toEqual([
      { key: `registry/images/${id('a')}/ancestry`, blob: 'blob-a-ancestry' },
    ]);
    images.addAncestry(
      `registry/images/${id('a')}/ancestry`,
      JSON.stringify([id('a'), id('b'), id('c'), id('d')]),
    );
    // Not JSON, or not a list: nothing to go by.
    images.addAncestry(`registry/images/${id('b')}/ancestry`, 'not json');
    expect(images.findings()).toEqual([
      `tag library/app:v2 names image ${id('a')}, whose parent ${id('c')} the bucket lacks: after a restore that tag cannot be pulled (an image pushed while the bucket was copied can be missed, and its tag, copied later, not)`,
    ]);
  });

  it('names a tag whose image is held only partly when asked to, which findings leaves to the image', () => {
    const images = new RegistryImages();
    for (const file of ['json', '_inprogress', 'ancestry']) images.add(`registry/images/${id('c')}/${file}`);
    for (const file of ['json', 'ancestry']) images.add(`registry/images/${id('b')}/${file}`);
    images.addTag('registry/repositories/library/app/tag_v2', id('b'));
    images.addTag('registry/repositories/library/app/tag_v3', id('c'));
    const why =
      'after a restore that tag cannot be pulled (an image pushed while the bucket was copied can be missed, and its tag, copied later, not)';
    expect(images.tagFindings({ partial: true })).toEqual([
      `tag library/app:v2 names image ${id('b')}, which the bucket holds only partly (without its layer): ${why}`,
      `tag library/app:v3 names image ${id('c')}, which the bucket holds only partly (its push unfinished): ${why}`,
    ]);
    expect(images.tagFindings()).toEqual([]);
    expect(images.findings()).toHaveLength(2);
  });

  it('counts an ancestry file too large to be one as unread, so its tag is not passed unchecked', async () => {
    const images = new RegistryImages();
    for (const file of ['json', 'layer', 'ancestry'])
      images.add(`registry/images/${id('a')}/${file}`, `blob-a-${file}`);
    const bodies: Record<string, Buffer> = {
      'blob-tag': Buffer.from(id('a')),
      'blob-a-ancestry': Buffer.alloc(65 * 1024, 0x20),
    };
    const target = { get: (key: string) => Promise.resolve(Readable.from([bodies[key] ?? Buffer.alloc(0)])) };
    await readTagged(
      images,
      target,
      [{ key: 'registry/repositories/library/app/tag_v2', blob: 'blob-tag' }],
      {
        signal: AbortSignal.timeout(10_000),
      },
    );
    expect(images.tagFindings()).toEqual([
      `1 tag or ancestry file(s) could not be read, so the images they name were not checked (first: registry/images/${id('a')}/ancestry: larger than 65536 bytes)`,
    ]);
  });

  it('says how many small files could not be read, and why the first could not', () => {
    const images = new RegistryImages();
    images.unread('registry/repositories/library/app/tag_v2', 'blob missing');
    images.unread('registry/repositories/library/app/tag_v3', 'EIO');
    expect(images.findings()).toEqual([
      '2 tag or ancestry file(s) could not be read, so the images they name were not checked (first: registry/repositories/library/app/tag_v2: blob missing)',
    ]);
  });

  it('takes as a tag only a small file named tag_<name> under a repository', () => {
    expect(isTagFile('registry/repositories/library/app/tag_v2', 64)).toBe(true);
    expect(isTagFile('registry/repositories/library/app/tag_v2', 129)).toBe(false);
    expect(isTagFile('registry/repositories/library/app/tagv2_json', 64)).toBe(false);
    expect(isTagFile('registry/images/x/tag_v2', 64)).toBe(false);
  });

  it('finds nothing in a bucket without image folders', () => {
    const images = new RegistryImages();
    images.add('wal_005/000000010000000000000002.lzo');
    expect(images.findings()).toEqual([]);
  });
});
