// Pure rules of a restore: which archive entries are refused, part sizes that rebuild multipart
// ETags, and the Deis-version-specific finishing step.
import { describe, expect, it } from 'vitest';
import { partSizeFor } from '../../../src/restore/buckets.js';
import { appNames, needsRepublish, parseVersion, republishSnippet } from '../../../src/restore/finish.js';
import { checkEntry } from '../../../src/restore/volume.js';

describe('checkEntry', () => {
  it('accepts what a store-volume archive holds', () => {
    expect(checkEntry({ name: './', type: 'directory', mode: 0o755 }).path).toBe('');
    expect(
      checkEntry({ name: './logs/www.log', type: 'file', size: 3, uid: 1000, gid: 1000, mode: 0o644 }),
    ).toMatchObject({
      path: 'logs/www.log',
      uid: 1000,
      size: 3,
    });
    expect(
      checkEntry({ name: './logs/current.log', type: 'symlink', linkname: 'deis-router.log' }).linkname,
    ).toBe('deis-router.log');
    expect(checkEntry({ name: 'logs/a/b', type: 'symlink', linkname: '../../x' }).path).toBe('logs/a/b');
  });

  it.each([
    [{ name: '/etc/passwd', type: 'file' }, 'absolute path'],
    [{ name: './logs/../../etc/cron.d/x', type: 'file' }, '".." in the path'],
    [{ name: '../outside', type: 'file' }, '".." in the path'],
    [
      { name: './logs/link', type: 'symlink', linkname: '/etc/shadow' },
      'symlink to the absolute path /etc/shadow',
    ],
    [
      { name: './logs/link', type: 'symlink', linkname: '../../etc' },
      'symlink ../../etc points outside the volume',
    ],
    [{ name: './hard', type: 'link', linkname: '../x' }, 'hard link to ../x outside the volume'],
    [{ name: './dev', type: 'character-device' }, 'entry type character-device is not restored'],
  ])('refuses %o', (header, why) => {
    expect(() => checkEntry(header)).toThrow(
      `volume archive entry ${JSON.stringify(header.name)} rejected: ${why}`,
    );
  });
});

describe('partSizeFor', () => {
  it('recovers the registry 5 MiB parts and other common sizes from the part count', () => {
    expect(partSizeFor(16 * 1048576 + 12_345, 4)).toBe(5 * 1048576);
    expect(partSizeFor(15 * 1048576 + 1, 4)).toBe(5 * 1048576);
    expect(partSizeFor(20 * 1048576, 3)).toBe(8 * 1048576);
    expect(partSizeFor(3 * 1048576, 1)).toBe(5 * 1048576);
  });
});

describe('finishing a Deis restore', () => {
  it('republishes before 1.11 only, with the models each version has', () => {
    expect(parseVersion('v1.10.1')).toEqual([1, 10, 1]);
    expect(parseVersion('1.13')).toEqual([1, 13, 0]);
    expect(parseVersion('latest')).toBeUndefined();
    expect(needsRepublish([1, 10, 1])).toBe(true);
    expect(needsRepublish([1, 11, 0])).toBe(false);
    expect(republishSnippet([1, 4, 0])).not.toContain('Certificate');
    expect(republishSnippet([1, 8, 0])).toContain('Certificate');
    expect(republishSnippet([1, 8, 0])).not.toContain('Config');
    expect(republishSnippet([1, 9, 0])).toContain('[c.save() for c in Config.objects.all()]');
  });

  it('finds app names in the registry keys', () => {
    expect(
      appNames([
        'registry/repositories/library/www/tag_v2',
        'registry/repositories/library/myapp/_index_images',
        'registry/images/x/json',
      ]),
    ).toEqual(['myapp', 'www']);
  });
});
