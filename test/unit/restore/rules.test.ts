// Pure rules of a restore: which archive entries are refused, part sizes that rebuild multipart
// ETags, and the Deis-version-specific finishing step (its snippet, and what it raised).
import { describe, expect, it } from 'vitest';
import { isWholeSecond, partSizeFor } from '../../../src/restore/buckets.js';
import {
  appNames,
  needsRepublish,
  parseVersion,
  republishedState,
  republishSnippet,
  snippetRaised,
} from '../../../src/restore/finish.js';
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
  it('republishes before 1.11 only', () => {
    expect(parseVersion('v1.10.1')).toEqual([1, 10, 1]);
    expect(parseVersion('1.13')).toEqual([1, 13, 0]);
    expect(parseVersion('latest')).toBeUndefined();
    expect(needsRepublish([0, 9, 0])).toBe(true);
    expect(needsRepublish([1, 10, 1])).toBe(true);
    expect(needsRepublish([1, 11, 0])).toBe(false);
  });

  // The lines every version range gets: the etcd writers of Deis 1.0–1.10 called with created=True
  // (re-saving a row fires created=False, which all but Key's and, before 1.5, Domain's ignore).
  const head = (models: string) => [
    'import sys',
    'import api.models as deis',
    `from api.models import ${models}`,
    'deis._etcd_client or sys.exit("deis-controller cannot reach etcd: api.models._etcd_client is None; check the ETCD host:port in restore.controllerCommand")',
    '[deis._etcd_publish_key(sender=Key, instance=k, created=True) for k in Key.objects.all()]',
    "[deis._etcd_create_app(sender=App, instance=a, created=True) for a in App.objects.all() if '/deis/services/{}'.format(a) not in deis._etcd_client]",
    '[deis._etcd_publish_domains(sender=Domain, instance=d, created=True) for d in Domain.objects.all()]',
  ];
  const cert =
    '[deis._etcd_publish_cert(sender=Certificate, instance=c, created=True) for c in Certificate.objects.all()]';
  const config =
    '[deis._etcd_publish_config(sender=Config, instance=a.config_set.latest(), created=True) for a in App.objects.all() if a.config_set.exists()]';

  it.each([
    ['before 1.0', [0, 9, 3], [...head('Key, App, Domain')]],
    ['1.0–1.4', [1, 4, 1], [...head('Key, App, Domain')]],
    [
      '1.5–1.8 (Certificate from 1.5, not 1.7 as the docs had it)',
      [1, 5, 0],
      [...head('Key, App, Domain, Certificate'), cert],
    ],
    ['1.5–1.8', [1, 8, 0], [...head('Key, App, Domain, Certificate'), cert]],
    ['1.9–1.10', [1, 9, 0], [...head('Key, App, Domain, Certificate, Config'), cert, config]],
    ['1.9–1.10', [1, 10, 1], [...head('Key, App, Domain, Certificate, Config'), cert, config]],
  ])('publishes what the controller of %s has, as if each row were new', (_range, version, lines) => {
    expect(republishSnippet(version)).toBe(`${lines.join('\n')}\n`);
  });

  it('changes no row and publishes only the latest config of each app', () => {
    const snippet = republishSnippet([1, 10, 1]);
    // A save() would fire created=False (publishing nothing), bump `updated` and log "domain added".
    expect(snippet).not.toContain('.save(');
    expect(snippet).not.toContain('post_save');
    // Each config write replaces /deis/config/<app>: every release's config would leave the oldest.
    expect(snippet).not.toContain('Config.objects.all()');
    // One statement a line: the Django shell reads its stdin like an interactive console.
    expect(snippet.split('\n').filter((line) => /^\s|:$/.test(line))).toEqual([]);
  });

  it('names what it published, per version', () => {
    expect(republishedState([1, 4, 0])).toBe('keys, apps and domains');
    expect(republishedState([1, 5, 0])).toBe('keys, apps, domains and certificates');
    expect(republishedState([1, 10, 1])).toBe(
      "keys, apps, domains, certificates and each app's latest config",
    );
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

/** One Traceback as the Django shell prints it for a statement typed at its console. */
const traceback = (exception: string): string =>
  ['Traceback (most recent call last):', '  File "<console>", line 1, in <module>', exception, ''].join('\n');

describe("snippetRaised: what a republish snippet raised, from the Django shell's stderr", () => {
  it('is undefined when nothing raised, whatever else is on stderr', () => {
    expect(snippetRaised('')).toBeUndefined();
    expect(snippetRaised('Python 2.7.9 (default)\nInteractiveConsole\n')).toBeUndefined();
  });

  it('names the one exception', () => {
    expect(snippetRaised(traceback("NameError: name 'Key' is not defined"))).toBe(
      "the snippet raised NameError: name 'Key' is not defined",
    );
  });

  it('names the first of several, which the later ones often follow from, and counts them', () => {
    const stderr = [
      traceback("ImportError: cannot import name '_etcd_publish_key'"),
      traceback("NameError: name '_etcd_publish_key' is not defined"),
      traceback("NameError: name '_etcd_publish_key' is not defined"),
    ].join('');
    expect(snippetRaised(stderr)).toBe(
      "the snippet raised 3 times, first ImportError: cannot import name '_etcd_publish_key'",
    );
  });

  it('says "an exception" for a Traceback cut off before its exception line', () => {
    expect(snippetRaised('Traceback (most recent call last):\n  File "<console>", line 1\n')).toBe(
      'the snippet raised an exception',
    );
  });
});

describe('isWholeSecond', () => {
  it("takes hammer's listed times as whole seconds and a later radosgw's as finer", () => {
    expect(isWholeSecond('2015-09-07T07:02:19.000Z')).toBe(true);
    expect(isWholeSecond('2015-09-07T07:02:19Z')).toBe(true);
    expect(isWholeSecond('2026-12-06T22:53:21.120Z')).toBe(false);
    expect(isWholeSecond('2026-12-06T22:53:21.001Z')).toBe(false);
  });
});
