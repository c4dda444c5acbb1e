// Acceptance of the backup engine against the real stack: every source into each target kind, then
// the stored data compared with the originals (GNU tar for the volume, gunzip | psql for the dump).
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, readdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { chown, link, lstat, mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { main } from '../../src/cli.js';
import { BackupError } from '../../src/errors.js';
import type { IndexEntry, Manifest } from '../../src/repository/manifest.js';
import { artifactKey } from '../../src/repository/layout.js';
import { Repository } from '../../src/repository/repository.js';
import type { RestoreReport } from '../../src/restore.js';
import type { S3Client } from '../../src/s3/client.js';
import { isTarWarning, VOLUME_ARTIFACT } from '../../src/sources/volume.js';
import { strandedSince } from '../../src/sources/mount-calls.js';
import { runRemote } from '../../src/ssh.js';
import { DirTarget } from '../../src/targets/dir.js';
import { S3Target } from '../../src/targets/s3.js';
import type { Target } from '../../src/targets/target.js';
import { Secret } from '../../src/secret.js';
import { mountExfat } from '../fixtures/exfat.js';
import { mountBindfs, type HangingMount } from '../fixtures/hanging-mount.js';
import { stackDumpCommand, stackSsh } from '../fixtures/stack.js';
import { IMAGES, seedDbWal, seedOddKeys, seedRegistry, seedVolume } from '../fixtures/deis-sample.js';
import {
  bucketContents,
  cli,
  describeTree,
  dumpAll,
  gatewayClient,
  gnuTarExtract,
  loadDump,
  resetScratch,
  describeWithStack,
  tempDir,
  restoreVolume,
  unique,
  until,
  writeConfig,
} from './helpers.js';
import { stackS3TargetConfig } from '../fixtures/s3-target.js';

const signal = AbortSignal.timeout(600_000);

describeWithStack('backup', (stack) => {
  const walBucket = unique('wal');
  const registryBucket = unique('registry');
  const volume = tempDir('volume');
  let gateway: S3Client;
  let original: {
    wal: Awaited<ReturnType<typeof bucketContents>>;
    registry: Awaited<ReturnType<typeof bucketContents>>;
    tree: Record<string, string>;
  };

  /** A config for this file's buckets and volume, the database dumped over SSH (host from etcd). */
  const baseConfig = (target: unknown, extra: Record<string, unknown> = {}) => ({
    etcd: { endpoints: [stack.etcdEndpoint] },
    ssh: stackSsh(stack),
    sources: {
      buckets: { names: [walBucket, registryBucket], concurrency: 4 },
      volume: { path: volume },
      database: { command: stackDumpCommand(stack) },
    },
    target,
    ...extra,
  });

  beforeAll(async () => {
    gateway = gatewayClient(stack);
    await gateway.createBucket(walBucket, { signal });
    await gateway.createBucket(registryBucket, { signal });
    await seedDbWal(gateway, walBucket);
    await seedOddKeys(gateway, walBucket);
    await seedRegistry(gateway, registryBucket);
    await seedVolume(volume);
    original = {
      wal: await bucketContents(gateway, walBucket),
      registry: await bucketContents(gateway, registryBucket),
      tree: await describeTree(volume),
    };
  });
  afterAll(() => {
    gateway.close();
  });

  /** Reads a whole target object. */
  async function readTarget(target: Target, key: string): Promise<Buffer> {
    const chunks: Buffer[] = [];
    for await (const chunk of await target.get(key, { signal })) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  }

  /** Asserts that the restore point holds every bucket object exactly, and the volume and dump too. */
  async function verifyRestorePoint(target: Target, manifest: Manifest): Promise<void> {
    const repository = new Repository(target);
    for (const [bucket, contents] of [
      [walBucket, original.wal],
      [registryBucket, original.registry],
    ] as const) {
      const record = manifest.sources.find((s) => s.bucket === bucket);
      expect(record?.status).toBe('success');
      const artifact = record?.artifacts[0];
      if (!artifact) throw new Error(`no index for ${bucket}`);
      const entries: IndexEntry[] = [];
      for await (const entry of repository.readIndex(artifact, { signal })) entries.push(entry);
      expect(entries.map((e) => e.key).sort()).toEqual([...contents.keys()].sort());
      for (const entry of entries) {
        const want = contents.get(entry.key);
        expect({
          key: entry.key,
          size: entry.size,
          etag: entry.etag,
          contentType: entry.contentType,
          metadata: entry.metadata,
          sha256: entry.sha256,
        }).toEqual({
          key: entry.key,
          size: want?.size,
          etag: want?.etag,
          contentType: want?.contentType,
          metadata: want?.metadata,
          sha256: want?.sha256,
        });
        const body = await readTarget(target, entry.blob);
        expect(createHash('sha256').update(body).digest('hex')).toBe(want?.sha256);
      }
    }
    // The volume opens with GNU tar --same-owner and reproduces the tree: owners, modes, mtimes, links.
    const volumeRecord = manifest.sources.find((s) => s.kind === 'volume');
    const volumeArtifact = volumeRecord?.artifacts[0];
    if (!volumeArtifact) throw new Error('no volume artifact');
    const archive = join(tempDir('archive'), 'volume.tar.gz');
    const archiveBody = await readTarget(target, volumeArtifact.key);
    expect(createHash('sha256').update(archiveBody).digest('hex')).toBe(volumeArtifact.sha256);
    await pipeline([archiveBody], createWriteStream(archive));
    const extracted = tempDir('extracted');
    gnuTarExtract(archive, extracted);
    expect(await describeTree(extracted)).toEqual(original.tree);
    // The dump loads with gunzip | psql into a fresh cluster and dumps back the same.
    const dbArtifact = manifest.sources.find((s) => s.kind === 'database')?.artifacts[0];
    if (!dbArtifact) throw new Error('no database artifact');
    const dumpFile = join(tempDir('dump'), 'database.sql.gz');
    const dump = await readTarget(target, dbArtifact.key);
    expect(createHash('sha256').update(dump).digest('hex')).toBe(dbArtifact.sha256);
    await pipeline([dump], createWriteStream(dumpFile));
    resetScratch(stack);
    loadDump(stack, dumpFile);
    expect(dumpAll(stack, stack.pgScratchPort)).toBe(dumpAll(stack, stack.pgPort));
  }

  it('takes a restore point into a directory, and a second one reads no unchanged object', async () => {
    const dir = tempDir('target');
    const file = writeConfig(baseConfig({ type: 'dir', path: dir }));
    const first = await cli(['backup', '--config', file, '--json']);
    expect(first.err).toBe('');
    expect(first.code).toBe(0);
    const summary = JSON.parse(first.out) as { status: string; id: string; sources: Manifest['sources'] };
    expect(summary.status).toBe('success');
    expect(summary.sources.map((s) => `${s.id}:${s.status}`)).toEqual([
      `bucket:${walBucket}:success`,
      `bucket:${registryBucket}:success`,
      'volume:success',
      'database:success',
    ]);
    const target = new DirTarget(dir);
    const manifest = await new Repository(target).readManifest(summary.id, { signal });
    await verifyRestorePoint(target, manifest);

    const second = await cli(['backup', '--config', file, '--json']);
    expect(second.code).toBe(0);
    const again = JSON.parse(second.out) as { id: string; sources: Manifest['sources'] };
    for (const source of again.sources.filter((s) => s.kind === 'bucket')) {
      expect(source.counts.bytesRead).toBe(0);
      expect(source.counts.unchanged).toBe(source.counts.objects);
      // Only the small index is written again.
      expect(source.counts.bytesStored).toBe(source.artifacts[0]?.size);
    }
    await verifyRestorePoint(target, await new Repository(target).readManifest(again.id, { signal }));
    const listed = await cli(['snapshots', '--config', file, '--json']);
    expect((JSON.parse(listed.out) as { id: string }[]).map((s) => s.id)).toEqual([summary.id, again.id]);
  });

  it('takes restore points into a directory on a file system without hard links (exFAT)', async () => {
    const exfat = mountExfat(tempDir('exfat'));
    try {
      const dir = join(exfat.path, 'backups');
      const file = writeConfig(baseConfig({ type: 'dir', path: dir }));
      const first = await cli(['backup', '--config', file]);
      expect(first.code, first.err).toBe(0);
      const target = new DirTarget(dir);
      await verifyRestorePoint(
        target,
        await new Repository(target).readManifest(first.out.trim(), { signal }),
      );
      const second = await cli(['backup', '--config', file, '--json']);
      expect(second.code, second.err).toBe(0);
      const again = JSON.parse(second.out) as { id: string; sources: Manifest['sources'] };
      expect(again.sources.filter((s) => s.kind === 'bucket').map((s) => s.counts.bytesRead)).toEqual([0, 0]);
      await verifyRestorePoint(target, await new Repository(target).readManifest(again.id, { signal }));
    } finally {
      exfat.unmount();
    }
  });

  it('takes a restore point into an S3 target under a prefix', async () => {
    const prefix = unique('prefix');
    const target = stackS3TargetConfig(stack, stack.rgwEndpoint, prefix, { partSizeMiB: 5 });
    const file = writeConfig(baseConfig(target));
    const run = await cli(['backup', '--config', file]);
    expect(run.code).toBe(0);
    const id = run.out.trim();
    const config = loadConfig({ file, env: {} });
    if (config.target.type !== 's3') throw new Error('expected s3 target');
    const s3 = new S3Target({
      ...config.target,
      accessKey: new Secret(stack.targetAccessKey),
      secretKey: new Secret(stack.targetSecretKey),
    });
    await verifyRestorePoint(s3, await new Repository(s3).readManifest(id, { signal }));
    const second = await cli(['backup', '--config', file, '--json']);
    const again = JSON.parse(second.out) as { sources: Manifest['sources'] };
    expect(again.sources.filter((s) => s.kind === 'bucket').map((s) => s.counts.bytesRead)).toEqual([0, 0]);
  });

  it('reads the volume over SSH with the host tar, and finds the gateway and database host in etcd', async () => {
    const dir = tempDir('target');
    const config = baseConfig({ type: 'dir', path: dir });
    config.sources.volume = { path: volume, host: stack.sshHost } as typeof config.sources.volume;
    const run = await cli(['backup', '--config', writeConfig(config), '--json']);
    expect(run.code).toBe(0);
    const summary = JSON.parse(run.out) as { id: string; sources: Manifest['sources'] };
    expect(summary.sources.find((s) => s.kind === 'volume')?.origin).toBe(
      `ssh root@${stack.sshHost}:${volume}`,
    );
    expect(summary.sources.find((s) => s.kind === 'database')?.origin).toMatch(
      /^ssh root@127\.0\.0\.1: pg_dumpall/,
    );
    expect(summary.sources.find((s) => s.kind === 'bucket')?.origin).toBe(
      `${walBucket} at ${stack.rgwEndpoint}`,
    );
    const target = new DirTarget(dir);
    await verifyRestorePoint(target, await new Repository(target).readManifest(summary.id, { signal }));
  });

  it('leaves out sources.volume.exclude alike here and over SSH, and a restore brings back the rest', async () => {
    const tree = tempDir('excluding');
    await mkdir(join(tree, 'logs', 'archive'), { recursive: true });
    await mkdir(join(tree, 'keep'));
    await writeFile(join(tree, 'logs', 'deis-controller.log'), 'controller\n');
    await writeFile(join(tree, 'logs', 'deis-store-metadata.log'), randomBytes(256 * 1024));
    await writeFile(join(tree, 'logs', 'deis-store-metadata.log.1'), 'kept: not the whole name\n');
    await writeFile(join(tree, 'logs', 'www.log'), 'app\n');
    await writeFile(join(tree, 'logs', 'archive', 'old.log'), 'old\n');
    await writeFile(join(tree, 'keep', 'data.txt'), 'data\n');
    execFileSync('chown', ['-R', '1000:1000', join(tree, 'logs', 'www.log'), join(tree, 'keep')]);
    const exclude = ['logs/deis-store-*.log', 'logs/archive'];
    const {
      'logs/deis-store-metadata.log': metadata,
      'logs/archive': archive,
      'logs/archive/old.log': old,
      ...expected
    } = await describeTree(tree);
    expect([metadata, archive, old].every((entry) => entry !== undefined)).toBe(true);
    // After describeTree, which would wait on it: in an excluded folder, so no warning either way.
    execFileSync('mkfifo', [join(tree, 'logs', 'archive', 'pipe')]);
    const dir = tempDir('target');
    const ids: string[] = [];
    for (const host of [undefined, stack.sshHost]) {
      const config = baseConfig({ type: 'dir', path: dir });
      config.sources.volume = {
        path: tree,
        exclude,
        ...(host ? { host } : {}),
      } as typeof config.sources.volume;
      const configFile = writeConfig(config);
      const run = await cli(['backup', '--config', configFile, '--only', 'volume']);
      expect(run.code, run.err).toBe(0);
      expect(run.err).toMatch(
        /^volume +success +7 entries, excluding "logs\/deis-store-\*\.log" "logs\/archive", /m,
      );
      const id = /^restore point (\S+) committed/m.exec(run.err)?.[1] ?? '';
      const manifest = await new Repository(new DirTarget(dir)).readManifest(id, { signal });
      expect(manifest.sources[0]).toMatchObject({ status: 'success', excluded: exclude, warnings: [] });
      const extracted = tempDir('extracted');
      gnuTarExtract(join(dir, ...artifactKey(id, VOLUME_ARTIFACT).split('/')), extracted);
      expect(await describeTree(extracted), host ?? 'local').toEqual(expected);
      ids.push(id);
    }
    // The restore of either brings back what was archived, owners and all, and nothing excluded.
    const into = join(tempDir('restored'), 'store');
    const config = baseConfig({ type: 'dir', path: dir });
    config.sources.volume = { path: tree, exclude } as typeof config.sources.volume;
    const restored = await cli([
      'restore',
      ids[1] ?? '',
      '--config',
      writeConfig(config),
      '--only',
      'volume',
      '--volume-to',
      into,
      '--json',
    ]);
    expect(restored.code, restored.err).toBe(0);
    expect((JSON.parse(restored.out) as RestoreReport).steps[0]?.detail).toBe(
      `${into}, without "logs/deis-store-*.log" "logs/archive" (left out by sources.volume.exclude when backed up)`,
    );
    expect(await describeTree(into)).toEqual(expected);
  });

  it('accepts the warnings GNU tar over SSH exits 1 with, in the exact words it prints them', async () => {
    // A checkpoint action changes the tree while tar reads it, at a fixed point: after the first
    // record, a is cut by one byte and b (listed, not yet read) is removed; every record touches c,
    // also while tar reads it.
    const dir = tempDir('live');
    await writeFile(join(dir, 'a'), Buffer.alloc(1024 * 1024, 1));
    await writeFile(join(dir, 'b'), 'b');
    await writeFile(join(dir, 'c'), Buffer.alloc(1024 * 1024, 2));
    const action = `exec=sh -c 'truncate -s ${String(1024 * 1024 - 1)} ${dir}/a; rm -f ${dir}/b; touch ${dir}/c'`;
    const remote = await runRemote(
      { ...stackSsh(stack), host: stack.sshHost, timeoutMs: 10_000 },
      `tar -C ${dir} --sort=name --checkpoint=1 --checkpoint-action="${action}" -cpzf - .`,
      { signal },
    );
    remote.stdin.end();
    remote.stdout.resume();
    const { code, stderr } = await remote.finished;
    const lines = stderr.split('\n').filter((l) => l !== '');
    expect({ code, lines }).toEqual({
      code: 1,
      lines: [
        'tar: ./a: File shrank by 1 byte; padding with zeros',
        'tar: ./b: File removed before we read it',
        'tar: ./c: file changed as we read it',
        'tar: .: file changed as we read it',
      ],
    });
    expect(lines.filter((l) => !isTarWarning(l))).toEqual([]);
    expect(isTarWarning('tar: ./a: File shrank by 2 bytes; padding with zeros')).toBe(true);
    expect(isTarWarning('tar: ./d: Cannot open: Permission denied')).toBe(false);
  });

  it('warns of a tag it stored whose image the copy lacks or holds only partly, and leaves unchanged tags to verify', async () => {
    // An app pushed while the copy ran: its image sorted before the listing's place, its tag after.
    const pushing = unique('regtag');
    await gateway.createBucket(pushing, { signal });
    await seedRegistry(gateway, pushing, { bigLayers: false });
    const put = (key: string, body: string) =>
      gateway.putObject(pushing, key, Buffer.from(body), { signal, size: Buffer.byteLength(body) });
    const late = 'e'.repeat(64);
    await put('registry/repositories/library/late/tag_v9', late);
    const config = baseConfig({ type: 'dir', path: tempDir('target') });
    config.sources.buckets = { names: [pushing], concurrency: 4 };
    const file = writeConfig(config);
    const why =
      'after a restore that tag cannot be pulled (an image pushed while the bucket was copied can be missed, and its tag, copied later, not)';
    const sourceOf = async () => {
      const run = await cli(['backup', '--config', file, '--only', 'buckets', '--json']);
      expect(run.code, run.err).toBe(0);
      return (JSON.parse(run.out) as { sources: Manifest['sources'] }).sources[0];
    };
    expect(await sourceOf()).toMatchObject({
      status: 'success',
      counts: { warnings: 1 },
      warnings: [`registry: tag library/late:v9 names image ${late}, which the bucket lacks: ${why}`],
    });
    // The next night v9 is unchanged and still names no image: left to verify. A new tag names an
    // image that is whole, another one caught mid-push, its layer not yet written.
    const tip = IMAGES.at(-1)?.id ?? '';
    const mid = 'd'.repeat(64);
    await put(`registry/images/${mid}/_inprogress`, 'true');
    await put(`registry/images/${mid}/json`, '{}');
    await put(`registry/images/${mid}/ancestry`, JSON.stringify([mid, tip]));
    await put('registry/repositories/library/late/tag_v10', tip);
    await put('registry/repositories/library/late/tag_v11', mid);
    expect(await sourceOf()).toMatchObject({
      status: 'success',
      counts: { warnings: 1 },
      warnings: [
        `registry: tag library/late:v11 names image ${mid}, which the bucket holds only partly (its push unfinished): ${why}`,
      ],
    });
  });

  it('stores nothing but the selected sources with --only', async () => {
    const dir = tempDir('target');
    const run = await cli([
      'backup',
      '--config',
      writeConfig(baseConfig({ type: 'dir', path: dir })),
      '--only',
      'volume,database',
      '--json',
    ]);
    expect(run.code).toBe(0);
    const summary = JSON.parse(run.out) as { sources: Manifest['sources'] };
    expect(summary.sources.map((s) => s.id)).toEqual(['volume', 'database']);
    const bad = await cli([
      'backup',
      '--config',
      writeConfig(baseConfig({ type: 'dir', path: dir })),
      '--only',
      'volume,etcd',
    ]);
    expect(bad.code).toBe(2);
    expect(bad.err).toBe(
      'deis-backup: --only: unknown source "etcd"; use a comma-separated list of buckets, volume, database',
    );
  });

  it('archives each mtime as the whole second GNU tar records, however close to the next one', async () => {
    // Node's Stats.mtime rounds to the millisecond: a time in the last half millisecond of a second
    // used to be archived one second late.
    const edge = tempDir('mtimes');
    const times = {
      'late.log': '1700000000.9997',
      'last.log': '1700000000.999999999',
      'early.log': '1700000000.0003',
    };
    for (const [name, time] of Object.entries(times)) {
      await writeFile(join(edge, name), `${name}\n`);
      execFileSync('touch', ['-d', `@${time}`, join(edge, name)]);
    }
    execFileSync('touch', ['-d', '@1700000001.9996', edge]);
    const { dir, file, run } = await backupVolumeAlone(edge);
    expect(run.code, run.err).toBe(0);
    const { id } = JSON.parse(run.out) as { id: string };
    const ours = tempDir('extracted');
    gnuTarExtract(join(dir, ...artifactKey(id, VOLUME_ARTIFACT).split('/')), ours);
    const theirs = tempDir('gnu-tar');
    execFileSync('sh', ['-c', 'tar -C "$1" -cf - . | tar -C "$2" -xpf - --same-owner', 'sh', edge, theirs]);
    expect(await describeTree(ours)).toEqual(await describeTree(theirs));
    expect(await describeTree(ours)).toEqual(await describeTree(edge));
    expect((await lstat(join(ours, 'late.log'))).mtimeMs).toBe(1700000000_000);
    expect((await lstat(ours)).mtimeMs).toBe(1700000001_000);
    // A restore onto the tree itself finds every entry in place: whole seconds on that side too.
    const again = await restoreVolume(id, file, edge, ['--json', '--yes']);
    expect(again.code, again.err).toBe(0);
    const report = JSON.parse(again.out) as { steps: { counts: Record<string, number> }[] };
    expect(report.steps[0]?.counts).toMatchObject({ objects: 4, skip: 4, conflict: 0, create: 0 });
  });

  /** Backs up the volume at `path` alone into a new directory target: the target, the config file and the run. */
  async function backupVolumeAlone(
    path: string,
  ): Promise<{ dir: string; file: string; run: Awaited<ReturnType<typeof cli>> }> {
    const dir = tempDir('target');
    const config = baseConfig({ type: 'dir', path: dir });
    config.sources.volume = { path };
    const file = writeConfig(config);
    return { dir, file, run: await cli(['backup', '--config', file, '--only', 'volume', '--json']) };
  }

  /** Waits until a backup's archive put has begun in the directory target `dir`. */
  async function untilArchiveStarts(dir: string): Promise<void> {
    await until('the archive to start', async () =>
      (await readdir(dir, { recursive: true })).some((name) => name.includes('.partial-')) ? true : undefined,
    );
  }

  /**
   * Runs `body` with a volume on a bindfs mount that can be made to hang, holding a 64 MiB file of
   * incompressible bytes (the walk is still reading it when the mount stops), and a config backing
   * it up into a new directory target with `sources.volume.timeoutMs`; the mount goes afterwards.
   */
  async function withHangingVolume(
    timeoutMs: number,
    body: (v: { mount: HangingMount; dir: string; file: string }) => Promise<void>,
  ): Promise<void> {
    const mount = mountBindfs(tempDir('hung'));
    try {
      await seedVolume(mount.source);
      await writeFile(join(mount.source, 'logs', 'big.log'), randomBytes(64 * 1024 * 1024));
      const dir = tempDir('target');
      const config = baseConfig({ type: 'dir', path: dir });
      config.sources.volume = { path: mount.path, timeoutMs } as typeof config.sources.volume;
      await body({ mount, dir, file: writeConfig(config) });
    } finally {
      mount.release();
    }
  }

  /**
   * A restore point of the sample volume (with `big` as logs/big.log when given), and a config that
   * restores from it with `sources.volume.timeoutMs` 1000.
   */
  async function pointToRestoreQuickly(big?: Buffer): Promise<{ id: string; file: string }> {
    const volume = tempDir('volume');
    await seedVolume(volume);
    if (big) await writeFile(join(volume, 'logs', 'big.log'), big);
    const { dir, run } = await backupVolumeAlone(volume);
    expect(run.code, run.err).toBe(0);
    const { id } = JSON.parse(run.out) as { id: string };
    const config = baseConfig({ type: 'dir', path: dir });
    config.sources.volume = { path: volume, timeoutMs: 1000 } as typeof config.sources.volume;
    return { id, file: writeConfig(config) };
  }

  /** Backs up tree alone, expecting a partial volume; its record and the archive GNU tar extracted. */
  async function backupPartialVolume(
    tree: string,
  ): Promise<{ volume: Manifest['sources'][number] | undefined; extracted: string }> {
    const { dir, run } = await backupVolumeAlone(tree);
    expect(run.code, run.err).toBe(3);
    const summary = JSON.parse(run.out) as { id: string; sources: Manifest['sources'] };
    expect(summary.sources[0]?.status).toBe('partial');
    const extracted = tempDir('extracted');
    gnuTarExtract(join(dir, ...artifactKey(summary.id, VOLUME_ARTIFACT).split('/')), extracted);
    return { volume: summary.sources[0], extracted };
  }

  it('archives mode 000 as 000, and fails an entry whose owner a tar header cannot hold', async () => {
    const tree = tempDir('modes');
    await writeFile(join(tree, 'locked.key'), 'secret\n');
    execFileSync('mkdir', [join(tree, 'closed'), join(tree, 'closed-empty')]);
    await writeFile(join(tree, 'closed', 'inside.log'), 'inside\n');
    await writeFile(join(tree, 'big-owner.log'), 'owner\n');
    execFileSync('chown', ['300000:300001', join(tree, 'big-owner.log')]);
    execFileSync('chmod', [
      '000',
      join(tree, 'locked.key'),
      join(tree, 'closed'),
      join(tree, 'closed-empty'),
    ]);
    const { volume, extracted } = await backupPartialVolume(tree);
    expect(volume?.errors).toEqual([
      './big-owner.log: owner 300000:300001 is above 262143, the largest a tar header holds; not archived',
    ]);
    const { ['big-owner.log']: skipped, ...expected } = await describeTree(tree);
    expect(skipped).toMatch(/uid=300000 gid=300001/);
    const got = await describeTree(extracted);
    expect(got['locked.key']).toMatch(/^file mode=0 /);
    expect(got['closed']).toMatch(/^dir mode=0 /);
    expect(got).toEqual(expected);
  });

  it('fails an entry whose name is not UTF-8 instead of losing it unseen', async () => {
    const tree = tempDir('names');
    await writeFile(join(tree, 'fine-ü.log'), 'fine\n');
    await writeFile(
      Buffer.concat([Buffer.from(`${tree}/bad`), Buffer.from([0xff]), Buffer.from('name.log')]),
      'x\n',
    );
    const { volume, extracted } = await backupPartialVolume(tree);
    expect(volume?.errors).toEqual(['./bad\\xffname.log: name is not UTF-8; not archived']);
    expect(volume?.warnings).toEqual([]);
    expect(Object.keys(await describeTree(extracted))).toEqual(['fine-ü.log']);
  });

  it('fails a symlink whose target is not UTF-8 instead of changing the target unseen', async () => {
    const tree = tempDir('links');
    await symlink('fine-ü.log', join(tree, 'good-link'));
    await symlink(Buffer.from([0x62, 0xff, 0x2e, 0x6c, 0x6f, 0x67]), join(tree, 'bad-link'));
    const { volume, extracted } = await backupPartialVolume(tree);
    expect(volume?.errors).toEqual(['./bad-link: symlink target b\\xff.log is not UTF-8; not archived']);
    expect(await describeTree(extracted)).toEqual({ 'good-link': 'link -> fine-ü.log uid=0 gid=0' });
  });

  it('keeps hard links as links: each file is archived once and restores with all its names', async () => {
    const outside = tempDir('outside');
    const tree = join(outside, 'store');
    await mkdir(join(tree, 'logs', 'old'), { recursive: true });
    await writeFile(join(tree, 'logs', 'app.log'), 'line\n'.repeat(1000));
    await link(join(tree, 'logs', 'app.log'), join(tree, 'logs', 'old', 'app.log.1'));
    await link(join(tree, 'logs', 'app.log'), join(tree, 'logs', 'z-app.log'));
    await chown(join(tree, 'logs', 'app.log'), 1000, 1000);
    // Its other name is outside the volume: within it, a file like any other.
    await writeFile(join(tree, 'logs', 'shared.log'), 'shared\n');
    await link(join(tree, 'logs', 'shared.log'), join(outside, 'shared.log'));
    const original = await describeTree(tree);
    expect(original['logs/z-app.log']).toMatch(/ same-as=logs\/app\.log$/);
    expect(original['logs/old/app.log.1']).toMatch(/ same-as=logs\/app\.log$/);
    expect(original['logs/shared.log']).not.toMatch(/same-as/);

    const { dir, file, run } = await backupVolumeAlone(tree);
    expect(run.code, run.err).toBe(0);
    const summary = JSON.parse(run.out) as { id: string; sources: Manifest['sources'] };
    // Entries: the root, logs, logs/old, four names; the body of app.log is read once.
    expect(summary.sources[0]?.counts).toMatchObject({ objects: 7, bytesRead: 5000 + 7 });
    const archive = join(dir, ...artifactKey(summary.id, VOLUME_ARTIFACT).split('/'));
    const listing = execFileSync('tar', ['-tvzf', archive], { encoding: 'utf8' });
    expect(listing).toMatch(/^h.* \.\/logs\/old\/app\.log\.1 link to \.\/logs\/app\.log$/m);
    expect(listing).toMatch(/^h.* \.\/logs\/z-app\.log link to \.\/logs\/app\.log$/m);

    const into = join(tempDir('restored'), 'store');
    const restored = await restoreVolume(summary.id, file, into);
    expect(restored.code, restored.err).toBe(0);
    expect(await describeTree(into)).toEqual(original);
  });

  it('fails a volume whose root is removed while it is read, so no partial copy stands as a restore point', async () => {
    const root = join(tempDir('going'), 'store');
    await mkdir(join(root, 'logs'), { recursive: true });
    // Incompressible, so the walk is still on it when the root goes.
    await writeFile(join(root, 'logs', 'big.log'), randomBytes(48 * 1024 * 1024));
    const dir = tempDir('target');
    const config = baseConfig({ type: 'dir', path: dir });
    config.sources.volume = { path: root };
    const running = cli(['backup', '--config', writeConfig(config), '--only', 'volume']);
    // The archive's put has begun: the walk has the root open.
    await untilArchiveStarts(dir);
    await rm(root, { recursive: true });
    const run = await running;
    expect(run.code).toBe(1);
    expect(run.err).toContain(
      `volume ${root}: removed or replaced while it was read, so the copy holds only part of it; find what unmounted or removed it, then back up again`,
    );
    expect(await new Repository(new DirTarget(dir)).listSnapshots({ signal })).toEqual([]);
  });

  it('cuts off a volume whose mount stops answering mid-copy, goes on to the database, and starts no new copy until the mount answers', async () => {
    await withHangingVolume(1000, async ({ mount, dir, file }) => {
      const running = cli(['backup', '--config', file, '--only', 'volume,database', '--json']);
      // The archive's put has begun: the walk is inside the mount.
      await untilArchiveStarts(dir);
      mount.hang();
      const run = await running;
      // The run ends, and releases the lock, instead of waiting on the mount for good. A source
      // that failed leaves no restore point, but the database behind the volume was still read.
      expect(run.code, run.err).toBe(1);
      const summary = JSON.parse(run.out) as { status: string; sources: Manifest['sources'] };
      expect(summary.sources.map((s) => `${s.id}:${s.status}`)).toEqual([
        'volume:failed',
        'database:success',
      ]);
      expect(summary.sources[0]?.errors).toEqual([
        `volume ${mount.path}: nothing read for 1 s, so the copy was cut off; check that the store volume's mount answers (ls in the container; a hung CephFS blocks every read of it), or raise sources.volume.timeoutMs`,
      ]);
      expect(await new Repository(new DirTarget(dir)).listSnapshots({ signal })).toEqual([]);
      // Nothing of the cut archive is left in the target: the put was aborted, its file removed.
      const names = await readdir(dir, { recursive: true });
      expect(names.filter((n) => n.includes('volume.tar.gz') || n.includes('.partial-'))).toEqual([]);

      // The cut-off read still holds a thread: a second run starts no copy to block another one.
      const again = await cli(['backup', '--config', file, '--only', 'volume,database', '--json']);
      expect(again.code, again.err).toBe(1);
      const refused = JSON.parse(again.out) as { sources: Manifest['sources'] };
      expect(refused.sources.map((s) => `${s.id}:${s.status}`)).toEqual([
        'volume:failed',
        'database:success',
      ]);
      expect(refused.sources[0]?.errors).toEqual([
        expect.stringMatching(
          new RegExp(
            `^volume ${mount.path}: a copy stopped at \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z still waits on the mount, so no new copy was started; check that the store volume's mount answers \\(ls in the container\\): the next backup reads it once it does$`,
          ),
        ),
      ]);

      // Once the mount answers, the waiting read returns and the next backup copies the volume.
      mount.resume();
      await vi.waitFor(
        () => {
          expect(strandedSince(mount.path)).toBeUndefined();
        },
        { timeout: 10_000 },
      );
      const after = await cli(['backup', '--config', file, '--only', 'volume', '--json']);
      expect(after.code, after.err).toBe(0);
    });
  });

  it('keeps a copy cancelled while the mount hangs on record until the call it left returns', async () => {
    // No watchdog in this test's time: the run is stopped by its caller, as a cancel or shutdown does.
    await withHangingVolume(600_000, async ({ mount, dir, file }) => {
      const cancel = new AbortController();
      const running = main(
        ['backup', '--config', file, '--only', 'volume'],
        {},
        { out: () => undefined, err: () => undefined },
        cancel.signal,
      );
      await untilArchiveStarts(dir);
      mount.hang();
      // Long enough for what was read to drain to the target, and the next read to wait on the mount.
      await new Promise((resolve) => setTimeout(resolve, 1000));
      cancel.abort(new BackupError('ERR_ABORTED', 'interrupted'));
      expect(await running).not.toBe(0);
      expect(strandedSince(mount.path)).toBeInstanceOf(Date);
      mount.resume();
      await vi.waitFor(
        () => {
          expect(strandedSince(mount.path)).toBeUndefined();
        },
        { timeout: 10_000 },
      );
    });
  });

  it.each([
    // Incompressible: tar is still taking the archive when the mount stops.
    ['mid-archive', () => randomBytes(64 * 1024 * 1024), 'took in nothing for 1 s'],
    // Zeros: the archive (about 50 kB) is all in the pipe, nothing of it waits, and tar is still
    // writing the file out when the mount stops.
    [
      'once tar has the whole archive',
      () => Buffer.alloc(48 * 1024 * 1024),
      'did not end within 1 s of taking the whole archive',
    ],
  ])('cuts off a volume restore whose destination mount stops answering %s', async (_when, body, stalled) => {
    const { id, file } = await pointToRestoreQuickly(body());
    const mount = mountBindfs(tempDir('hung-into'));
    try {
      const restoring = restoreVolume(id, file, join(mount.path, 'store'));
      // tar has begun: it made the folder, and writes into it next.
      const deadline = Date.now() + 30_000;
      while (!existsSync(join(mount.source, 'store'))) {
        if (Date.now() > deadline) throw new Error(`tar made no folder: ${JSON.stringify(await restoring)}`);
        await new Promise((r) => setTimeout(r, 5));
      }
      mount.hang();
      const restored = await restoring;
      expect(restored.code).toBe(1);
      expect(restored.out + restored.err).toContain(
        `volume: tar -x into ${mount.path}/store ${stalled}, so the restore was cut off; check that the destination's mount answers (a hung CephFS blocks every write to it), then restore again, or raise sources.volume.timeoutMs`,
      );
    } finally {
      mount.release();
    }
  });

  it('fails a volume restore whose destination mount already hangs, in the preflight', async () => {
    const { id, file } = await pointToRestoreQuickly();
    const mount = mountBindfs(tempDir('hung-before'));
    try {
      mount.hang();
      const restored = await restoreVolume(id, file, join(mount.path, 'store'));
      expect(restored.code).toBe(1);
      expect(restored.out + restored.err).toContain(
        `volume: checking the mount of ${mount.path}/store gave nothing for 1 s; check that its mount answers (a hung CephFS blocks every call on it), then restore again, or raise sources.volume.timeoutMs`,
      );
      expect(readdirSync(mount.source)).toEqual([]);
    } finally {
      mount.release();
    }
  });

  it('captures a live-growing file up to its size at stat time, with a warning, in an archive GNU tar restores', async () => {
    const live = tempDir('live');
    await seedVolume(live);
    const log = join(live, 'logs', 'deis-router.log');
    // Large enough that appends land while the file is read.
    await pipeline(
      (function* () {
        for (let i = 0; i < 64; i++) yield Buffer.alloc(1024 * 1024, 0x61 + (i % 26));
      })(),
      createWriteStream(log),
    );
    const appender = createWriteStream(log, { flags: 'a' });
    const appending = { on: true };
    const appending$ = (async () => {
      while (appending.on) {
        appender.write('2015-08-04T18:04:05UTC deis-router[1]: still running\n');
        await new Promise((r) => setTimeout(r, 1));
      }
    })();
    const { dir, run } = await backupVolumeAlone(live);
    appending.on = false;
    await appending$;
    await new Promise<void>((r) => appender.end(r));
    expect(run.code).toBe(0);
    const summary = JSON.parse(run.out) as { id: string; sources: Manifest['sources'] };
    const record = summary.sources[0];
    expect(record?.status).toBe('success');
    expect(record?.warnings).toContain(
      './logs/deis-router.log: file changed as we read it; archived up to its size when the run saw it',
    );
    const manifest = await new Repository(new DirTarget(dir)).readManifest(summary.id, { signal });
    const archive = join(dir, ...(manifest.sources[0]?.artifacts[0]?.key ?? '').split('/'));
    const extracted = tempDir('extracted');
    gnuTarExtract(archive, extracted);
    const got = await readFile(join(extracted, 'logs', 'deis-router.log'));
    const now = await readFile(log);
    expect(got.length).toBeGreaterThanOrEqual(64 * 1024 * 1024);
    expect(got.length).toBeLessThan(now.length);
    expect(got.equals(now.subarray(0, got.length))).toBe(true);
  });
});
