// A restore point whose volume archive was crafted to escape the destination is refused in
// preflight, before anything is written.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { craftedRestorePoint } from '../fixtures/crafted.js';
import { cli, describeWithStack, tempDir, writeConfig } from './helpers.js';

const signal = AbortSignal.timeout(60_000);

describeWithStack('crafted archives', (stack) => {
  it.each([
    [{ name: '../escape.txt', type: 'file' as const }, '"../escape.txt" rejected: ".." in the path'],
    [
      { name: '/etc/deis-backup-test-owned', type: 'file' as const },
      '"/etc/deis-backup-test-owned" rejected: absolute path',
    ],
    [
      { name: './logs/evil', type: 'symlink' as const, linkname: '../../../etc' },
      '"./logs/evil" rejected: symlink ../../../etc points outside the volume',
    ],
  ])('refuses %o before writing anything', async (crafted, why) => {
    const dir = tempDir('crafted');
    const id = await craftedRestorePoint(dir, [{ ...crafted }], { signal });
    const into = join(tempDir('restored'), 'store');
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      target: { type: 'dir', path: dir },
    });
    const run = await cli([
      'restore',
      id,
      '--config',
      file,
      '--only',
      'volume',
      '--volume-to',
      into,
      '--yes',
    ]);
    expect(run.code).toBe(1);
    expect(run.err).toBe(`deis-backup: volume archive entry ${why}`);
    expect(existsSync(into)).toBe(false);
    expect(existsSync('/etc/deis-backup-test-owned')).toBe(false);
  });
});
