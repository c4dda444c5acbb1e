// A restore point whose volume archive was crafted to escape the destination is refused in
// preflight, before anything is written.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { createGzip } from 'node:zlib';
import { pack as createPack } from 'tar-stream';
import { expect, it } from 'vitest';
import { FORMAT_VERSION, emptyCounts } from '../../src/repository/manifest.js';
import { Repository } from '../../src/repository/repository.js';
import { chain } from '../../src/streams.js';
import { DirTarget } from '../../src/targets/dir.js';
import { cli, describeWithStack, tempDir, writeConfig } from './helpers.js';

const signal = AbortSignal.timeout(60_000);

/** Commits a restore point whose volume archive holds one ordinary file and one crafted entry. */
async function craftedRestorePoint(
  dir: string,
  crafted: { name: string; type: 'file' | 'symlink'; linkname?: string },
): Promise<string> {
  const pack = createPack();
  pack.entry({ name: './', type: 'directory', mode: 0o755 });
  pack.entry({ name: './logs/ok.log', type: 'file', mode: 0o644 }, 'fine\n');
  if (crafted.type === 'file') pack.entry({ name: crafted.name, type: 'file', mode: 0o644 }, 'owned\n');
  else pack.entry({ name: crafted.name, type: 'symlink', linkname: crafted.linkname ?? '' });
  pack.finalize();
  const writer = new Repository(new DirTarget(dir)).begin(new Date());
  const stored = await writer.putArtifact('volume.tar.gz', chain(pack as unknown as Readable, createGzip()), {
    signal,
  });
  await writer.commit(
    {
      formatVersion: FORMAT_VERSION,
      id: writer.id,
      tool: 'test',
      startedAt: new Date().toISOString(),
      finishedAt: new Date().toISOString(),
      status: 'success',
      sources: [
        {
          id: 'volume',
          kind: 'volume',
          status: 'success',
          origin: 'crafted',
          counts: emptyCounts(),
          warnings: [],
          errors: [],
          artifacts: [{ name: 'volume.tar.gz', ...stored }],
        },
      ],
    },
    { signal },
  );
  return writer.id;
}

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
    const id = await craftedRestorePoint(dir, crafted);
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
