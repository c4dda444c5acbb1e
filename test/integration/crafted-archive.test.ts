// A restore point whose volume archive was crafted to escape the destination is refused in
// preflight, before anything is written: no destination, nothing beside it, nothing in /etc. One
// whose owner names disagree with their numbers here is restored by number, and a FIFO as a FIFO.
import { existsSync } from 'node:fs';
import { lstat, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import type { RestoreReport } from '../../src/restore.js';
import { craftedRestorePoint, type CraftedEntry } from '../fixtures/crafted.js';
import { cli, describeWithStack, tempDir, writeConfig } from './helpers.js';

const signal = AbortSignal.timeout(60_000);

describeWithStack('crafted archives', (stack) => {
  /** Restores the volume of restore point `id` in the directory target `dir` into `into`. */
  const restoreVolume = (dir: string, id: string, into: string, ...extra: string[]) => {
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      target: { type: 'dir', path: dir },
    });
    return cli(['restore', id, '--config', file, '--only', 'volume', '--volume-to', into, '--yes', ...extra]);
  };

  it.each<[string, CraftedEntry[], string]>([
    [
      '".." at the start of a path',
      [{ name: '../escape.txt', type: 'file' }],
      '"../escape.txt" rejected: ".." in the path',
    ],
    [
      'an absolute path',
      [{ name: '/etc/deis-backup-test-owned', type: 'file' }],
      '"/etc/deis-backup-test-owned" rejected: absolute path',
    ],
    [
      'a symlink out of the volume',
      [{ name: './logs/evil', type: 'symlink', linkname: '../../../etc' }],
      '"./logs/evil" rejected: symlink ../../../etc points outside the volume',
    ],

    [
      'a symlink chain that leads out, then a file through it',
      [
        { name: './s', type: 'symlink', linkname: '.' },
        { name: './s/up', type: 'symlink', linkname: '..' },
        { name: './s/up/escaped.txt', type: 'file' },
      ],
      '"s/up" rejected: it goes through the symlink "s"',
    ],
    [
      'a file written through a symlink of the archive',
      [
        { name: './logs/tmp', type: 'symlink', linkname: '../logs' },
        { name: './logs/tmp/planted.txt', type: 'file' },
      ],
      '"logs/tmp/planted.txt" rejected: it goes through the symlink "logs/tmp"',
    ],
    [
      'a hard link through a symlink',
      [
        { name: './up', type: 'symlink', linkname: 'logs' },
        { name: './logs/second.log', type: 'link', linkname: 'up/ok.log' },
      ],
      '"logs/second.log" rejected: hard link to up/ok.log goes through the symlink "up"',
    ],
    [
      'a symlink to an absolute path',
      [{ name: './logs/etc', type: 'symlink', linkname: '/etc' }],
      '"./logs/etc" rejected: symlink to the absolute path /etc',
    ],
    [
      'a hard link out of the volume',
      [{ name: './logs/shadow', type: 'link', linkname: '../../etc/shadow' }],
      '"./logs/shadow" rejected: hard link to ../../etc/shadow outside the volume',
    ],
    [
      '".." in the middle of a path',
      [{ name: './logs/../../escaped.txt', type: 'file' }],
      '"./logs/../../escaped.txt" rejected: ".." in the path',
    ],
    [
      'a device node',
      [{ name: './logs/null', type: 'character-device' }],
      '"./logs/null" rejected: entry type character-device is not restored',
    ],
  ])('refuses an archive with %s before writing anything', async (_name, entries, why) => {
    const dir = tempDir('crafted');
    const id = await craftedRestorePoint(dir, entries, { signal });
    const parent = tempDir('restored');
    const into = join(parent, 'store');
    const run = await restoreVolume(dir, id, into);
    expect(run.code).toBe(1);
    expect(run.err).toBe(`deis-backup: volume archive entry ${why}`);
    expect(existsSync(into)).toBe(false);
    expect(existsSync(join(parent, 'escaped.txt'))).toBe(false);
    expect(existsSync('/etc/deis-backup-test-owned')).toBe(false);
  });

  it('restores a FIFO that an archive read over SSH before this version holds, and finds it identical after', async () => {
    const dir = tempDir('crafted');
    const id = await craftedRestorePoint(dir, [{ name: './logs/pipe', type: 'fifo' }], { signal });
    const into = join(tempDir('restored'), 'store');
    const run = await restoreVolume(dir, id, into, '--json');
    expect(run.code, run.err).toBe(0);
    const restored = await lstat(join(into, 'logs', 'pipe'));
    expect(restored.isFIFO()).toBe(true);
    expect(restored.mode & 0o7777).toBe(0o755);
    const plan = JSON.parse((await restoreVolume(dir, id, into, '--json', '--dry-run')).out) as RestoreReport;
    expect(plan.steps[0]?.counts).toMatchObject({ create: 0, conflict: 0, skip: 4 });
  });

  it('restores owners by number whatever names the archive gives them, and finds them identical after', async () => {
    const dir = tempDir('crafted');
    // GNU tar on a volume host writes that host's names; on this one "daemon" is uid 1, not 4242.
    const owner = { uid: 4242, gid: 4243, uname: 'daemon', gname: 'daemon' };
    const id = await craftedRestorePoint(dir, [{ name: './logs/named.log', type: 'file', owner }], {
      signal,
    });
    const into = join(tempDir('restored'), 'store');
    const run = await restoreVolume(dir, id, into, '--json');
    expect(run.code, run.err).toBe(0);
    const restored = await stat(join(into, 'logs', 'named.log'));
    expect([restored.uid, restored.gid]).toEqual([4242, 4243]);
    const plan = JSON.parse((await restoreVolume(dir, id, into, '--json', '--dry-run')).out) as RestoreReport;
    expect(plan.steps[0]?.counts).toMatchObject({ create: 0, conflict: 0, skip: 4 });
  });
});
