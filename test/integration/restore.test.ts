// Restore acceptance against the real stack: backup → restore into fresh buckets and directories →
// compare keys, bodies, ETags, content-types, metadata, files and the SQL with the originals.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, realpathSync } from 'node:fs';
import { readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync, gzipSync } from 'node:zlib';
import { Client } from 'minio';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { RestoreReport } from '../../src/restore.js';
import { republishSnippet } from '../../src/restore/finish.js';
import { S3Client } from '../../src/s3/client.js';
import {
  BASE_BACKUPS,
  IMAGES,
  byteStream,
  WAL_BETWEEN,
  seedDbWal,
  seedOddKeys,
  seedRegistry,
  seedVolume,
} from '../fixtures/deis-sample.js';
import { recordingProxy } from '../fixtures/recording-proxy.js';
import { gatewayOptions, stackDumpCommand, stackSsh } from '../fixtures/stack.js';
import {
  bucketContents,
  cli,
  describeTree,
  describeWithStack,
  dumpAll,
  gatewayClient,
  resetScratch,
  startScratchEtcd,
  tempDir,
  unique,
  until,
  writeConfig,
} from './helpers.js';

const signal = AbortSignal.timeout(600_000);

/** Inverts one byte: same size, different content. */
function flipByte(bytes: Buffer, at: number): void {
  bytes.writeUInt8(bytes.readUInt8(at) ^ 0xff, at);
}
const INIT_ID = '/deis/database/initId';
const SENTINEL = (base: string) => `basebackups_005/${base}_backup_stop_sentinel.json`;

/** The sentinel with the newest LastModified: what WAL-E's backup-fetch LATEST picks. */
async function latest(client: S3Client, bucket: string): Promise<string | undefined> {
  let newest: { key: string; lastModified: string } | undefined;
  for await (const item of client.listObjects(bucket, {
    signal,
    listVersion: 1,
    prefix: 'basebackups_005/',
  })) {
    if (
      item.key.endsWith('_backup_stop_sentinel.json') &&
      (!newest || item.lastModified > newest.lastModified)
    )
      newest = item;
  }
  return newest?.key;
}

/** The bucket's stop sentinels, oldest Last-Modified first, with it. */
async function sentinelTimes(client: S3Client, bucket: string): Promise<[string, string][]> {
  const found: [string, string][] = [];
  for await (const item of client.listObjects(bucket, { signal, listVersion: 1, prefix: 'basebackups_005/' }))
    if (item.key.endsWith('_backup_stop_sentinel.json')) found.push([item.key, item.lastModified]);
  return found.sort((a, b) => (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
}

/** The stand-in deis-controller, and the Python with Debian's Django and python-etcd. */
const CONTROLLER = fileURLToPath(new URL('../fixtures/deis-controller', import.meta.url));
const PYTHON = '/usr/bin/python3';
const PRINT_UPDATED = [
  'from api.models import App, Certificate, Config, Domain, Key',
  'print(sorted(str(m.updated) for M in (Key, App, Config, Domain, Certificate) for m in M.objects.all()))',
].join('\n');
interface EtcdNode {
  key: string;
  value?: string;
  dir?: boolean;
  nodes?: EtcdNode[];
}

describeWithStack('restore', (stack) => {
  const wal = unique('wal');
  const registry = unique('registry');
  const volume = tempDir('volume');
  const target = tempDir('target');
  let gateway: S3Client;
  let snapshot: string;
  let latestAtBackup: string | undefined;

  /** A config for this file; `restore` settings and the volume host can be changed per test. */
  const config = (
    patch: { volumeHost?: string; restore?: Record<string, unknown>; etcd?: string; gateway?: string } = {},
  ) =>
    writeConfig({
      etcd: { endpoints: [patch.etcd ?? stack.etcdEndpoint] },
      ...(patch.gateway === undefined
        ? {}
        : {
            gateway: {
              endpoint: patch.gateway,
              accessKey: stack.gatewayAccessKey,
              secretKey: stack.gatewaySecretKey,
            },
          }),
      ssh: stackSsh(stack),
      sources: {
        buckets: { names: [wal, registry], concurrency: 4 },
        volume: { path: volume, ...(patch.volumeHost ? { host: patch.volumeHost } : {}) },
        database: { command: stackDumpCommand(stack) },
      },
      target: { type: 'dir', path: target },
      restore: {
        databaseCommand: `psql -X -q -h ${stack.pgHost} -p ${stack.pgScratchPort} -U ${stack.pgUser} -d postgres`,
        deisVersion: 'v1.13.4',
        ...patch.restore,
      },
    });
  /** A config backing up only `bucket`, into a target of its own. */
  const oneBucketConfig = (bucket: string) =>
    writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      sources: { buckets: { names: [bucket] }, volume: { enabled: false }, database: { enabled: false } },
      target: { type: 'dir', path: tempDir('bucket-target') },
      restore: { deisVersion: 'v1.13.4' },
    });
  const restore = async (args: string[], file = config()) => {
    const run = await cli(['restore', '--config', file, '--json', '--yes', ...args]);
    return { ...run, report: run.out ? (JSON.parse(run.out) as RestoreReport) : undefined };
  };
  const fresh = (prefix: string) => [
    '--bucket',
    `${wal}=${unique(`${prefix}_wal`)}`,
    '--bucket',
    `${registry}=${unique(`${prefix}-reg`)}`,
  ];
  const destinations = (args: string[]) =>
    [args[1]?.split('=')[1] ?? '', args[3]?.split('=')[1] ?? ''] as const;

  beforeAll(async () => {
    gateway = gatewayClient(stack);
    await gateway.createBucket(wal, { signal });
    await gateway.createBucket(registry, { signal });
    await seedDbWal(gateway, wal);
    await seedOddKeys(gateway, wal);
    await seedRegistry(gateway, registry);
    // Make the middle base backup the newest by time, so LATEST is not simply the last key.
    const middle = SENTINEL(BASE_BACKUPS[1] ?? '');
    await new Promise((r) => setTimeout(r, 1100));
    const body = await gateway.getObject(wal, middle, { signal });
    let text = '';
    for await (const chunk of body?.body ?? []) text += (chunk as Buffer).toString();
    await gateway.putObject(wal, middle, Buffer.from(text), {
      signal,
      size: Buffer.byteLength(text),
      contentType: 'application/json',
    });
    latestAtBackup = await latest(gateway, wal);
    expect(latestAtBackup).toBe(middle);
    await seedVolume(volume);
    const run = await cli(['backup', '--config', config()]);
    expect(run.code).toBe(0);
    snapshot = run.out.trim();
  });
  afterAll(() => {
    gateway.close();
  });

  it('restores buckets into fresh buckets exactly, with LATEST as at backup time, and a second run sends nothing', async () => {
    const args = fresh('rt');
    const [newWal, newRegistry] = destinations(args);
    const first = await restore([snapshot, '--only', 'buckets', ...args]);
    expect(first.err).toBe('');
    expect(first.code).toBe(0);
    expect(first.report?.status).toBe('success');
    for (const [from, to] of [
      [wal, newWal],
      [registry, newRegistry],
    ] as const) {
      const want = await bucketContents(gateway, from);
      const got = await bucketContents(gateway, to);
      expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
      for (const [key, value] of want) expect(got.get(key)).toEqual(value);
    }
    expect(await latest(gateway, newWal)).toBe(latestAtBackup);
    // The sentinels in their original order, each Last-Modified later than the one before, no tie
    // for WAL-E to break by name (this gateway lists milliseconds; hammer's whole seconds get a
    // second between sentinels, see isWholeSecond).
    const restored = await sentinelTimes(gateway, newWal);
    expect(restored.map(([key]) => key)).toEqual((await sentinelTimes(gateway, wal)).map(([key]) => key));
    const times = restored.map(([, at]) => Date.parse(at));
    for (let i = 1; i < times.length; i++) expect(times[i]).toBeGreaterThan(times[i - 1] ?? 0);
    const second = await restore([snapshot, '--only', 'buckets', ...args]);
    expect(second.code).toBe(0);
    const buckets = second.report?.steps.find((s) => s.step === 'buckets');
    expect(buckets?.counts.transferBytes).toBe(0);
    expect(buckets?.counts.create).toBe(0);
    expect(buckets?.counts.skip).toBe(buckets?.counts.objects);
  });

  it('aborts the unfinished uploads of its keys that a killed restore left, and no others', async () => {
    // minio, which starts the upload below, refuses '_' in a bucket name.
    const newRegistry = `leftover-${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
    const args = ['--bucket', `${wal}=${unique('leftover_wal')}`, '--bucket', `${registry}=${newRegistry}`];
    expect((await restore([snapshot, '--only', 'buckets', ...args])).code).toBe(0);
    const at = new URL(stack.rgwEndpoint);
    const minio = new Client({
      endPoint: at.hostname,
      port: Number(at.port),
      useSSL: false,
      pathStyle: true,
      region: 'us-east-1',
      accessKey: stack.gatewayAccessKey,
      secretKey: stack.gatewaySecretKey,
    });
    // What kill -9 leaves: an upload of a key the restore writes, one part sent.
    const [key = ''] = [...(await bucketContents(gateway, registry)).keys()].sort();
    const left = await minio.initiateNewMultipartUpload(newRegistry, key, {});
    await minio.uploadPart(
      { bucketName: newRegistry, objectName: key, uploadID: left, partNumber: 1, headers: {} },
      randomBytes(64 * 1024),
    );
    const foreign = await minio.initiateNewMultipartUpload(newRegistry, 'not/in/the/restore/point', {});
    const again = await restore([snapshot, '--only', 'buckets', ...args]);
    expect(again.code, again.err).toBe(0);
    const record = again.report?.steps[0]?.buckets?.find((b) => b.destination === newRegistry);
    expect(record?.abortedUploads).toBe(1);
    const page = await minio.listIncompleteUploadsQuery(newRegistry, '', '', '', '');
    expect(page.uploads.map((u) => u.uploadId)).toEqual([foreign]);
    await minio.abortMultipartUpload(newRegistry, 'not/in/the/restore/point', foreign);
  });

  it('sends sentinels more than a second apart to a gateway that lists whole seconds, as hammer does', async () => {
    const proxy = await recordingProxy(stack.rgwEndpoint);
    proxy.rewrite = (xml) => xml.replace(/(<LastModified>[^<.]+)\.\d+Z</g, '$1.000Z<');
    const viaProxy = new S3Client({ ...gatewayOptions(stack), endpoint: proxy.url });
    try {
      const args = fresh('hammer');
      const [newWal] = destinations(args);
      const run = await restore([snapshot, '--only', 'buckets', ...args], config({ gateway: proxy.url }));
      expect(run.code, run.err).toBe(0);
      // In milliseconds, each sentinel a second or more after the one before; in whole seconds, as
      // WAL-E on hammer sees them, no tie, and LATEST as at backup time.
      const times = (await sentinelTimes(gateway, newWal)).map(([, at]) => Date.parse(at));
      expect(times.length).toBeGreaterThan(1);
      for (let i = 1; i < times.length; i++)
        expect((times[i] ?? 0) - (times[i - 1] ?? 0)).toBeGreaterThanOrEqual(1000);
      const whole = (await sentinelTimes(viaProxy, newWal)).map(([, at]) => at);
      expect(whole.every((at) => at.endsWith('.000Z'))).toBe(true);
      expect(new Set(whole).size).toBe(whole.length);
      expect(await latest(viaProxy, newWal)).toBe(latestAtBackup);
    } finally {
      viaProxy.close();
      await proxy.close();
    }
  });

  it('re-sends newer sentinels after a missing older one, so LATEST stays the same base backup', async () => {
    const args = fresh('order');
    const [newWal] = destinations(args);
    expect((await restore([snapshot, '--only', 'buckets', ...args])).code).toBe(0);
    await gateway.deleteObject(newWal, SENTINEL(BASE_BACKUPS[0] ?? ''), { signal });
    await new Promise((r) => setTimeout(r, 1100));
    const again = await restore([snapshot, '--only', 'buckets', ...args]);
    expect(again.code).toBe(0);
    const walCounts = again.report?.steps[0]?.buckets?.find((b) => b.destination === newWal)?.counts;
    expect(walCounts).toMatchObject({ create: 1, reorder: 2 });
    expect(await latest(gateway, newWal)).toBe(latestAtBackup);
  });

  it('restores the volume into a fresh directory with owners, modes, mtimes and symlinks, here and over SSH', async () => {
    for (const host of [undefined, stack.sshHost]) {
      const into = join(tempDir('restored'), 'store');
      const file = config(host ? { volumeHost: host } : {});
      const run = await restore([snapshot, '--only', 'volume', '--volume-to', into], file);
      expect(run.code).toBe(0);
      expect(await describeTree(into)).toEqual(await describeTree(volume));
      const again = await restore([snapshot, '--only', 'volume', '--volume-to', into], file);
      expect(again.report?.steps[0]?.counts).toMatchObject({ create: 0, overwrite: 0, transferBytes: 0 });
    }
  });

  it('keeps a differing object unless --overwrite, naming it, and replaces it with it', async () => {
    const args = fresh('conflict');
    const [, newRegistry] = destinations(args);
    expect((await restore([snapshot, '--only', 'buckets', ...args])).code).toBe(0);
    const [key] = [...(await bucketContents(gateway, registry)).keys()].sort();
    const changed = Buffer.from('changed since\n');
    await gateway.putObject(newRegistry, key ?? '', changed, { signal, size: changed.length });
    const kept = await restore([snapshot, '--only', 'buckets', ...args]);
    expect(kept.code, kept.err).toBe(0);
    expect(kept.report?.hazards).toEqual([
      `1 object(s) in ${newRegistry} differ from the restore point and stay as they are (${key}); pass --overwrite to replace them`,
    ]);
    expect((await bucketContents(gateway, newRegistry)).get(key ?? '')?.size).toBe(changed.length);
    const replaced = await restore([snapshot, '--only', 'buckets', '--overwrite', ...args]);
    expect(replaced.report?.steps[0]?.counts).toMatchObject({ overwrite: 1, create: 0 });
    expect(await bucketContents(gateway, newRegistry)).toEqual(await bucketContents(gateway, registry));
  });

  it('takes an object it rebuilt with other parts for the same on a second run, and a changed one for changed', async () => {
    // 13 MiB in 6 MiB parts: 3 parts, which the restore rebuilds in 5 MiB parts, so another ETag.
    const bucket = unique('parts');
    const key = 'registry/images/odd/layer';
    const size = 13 * 1024 * 1024;
    await gateway.createBucket(bucket, { signal });
    await gateway.putObjectMultipart(bucket, key, byteStream('odd-parts', size), {
      signal,
      partSize: 6 * 1024 * 1024,
      size,
    });
    const own = oneBucketConfig(bucket);
    const backup = await cli(['backup', '--config', own]);
    expect(backup.code, backup.err).toBe(0);
    const point = backup.out.trim();
    const fresh = unique('parts-to');
    const args = [point, '--only', 'buckets', '--bucket', `${bucket}=${fresh}`];
    expect((await restore(args, own)).code).toBe(0);
    const original = (await bucketContents(gateway, bucket)).get(key);
    const rebuilt = (await bucketContents(gateway, fresh)).get(key);
    expect(rebuilt?.sha256).toBe(original?.sha256);
    expect(rebuilt?.etag).toMatch(/-3$/);
    expect(rebuilt?.etag).not.toBe(original?.etag);

    const again = await restore(args, own);
    expect(again.code, again.err).toBe(0);
    expect(again.report?.hazards).toEqual([]);
    expect(again.report?.steps[0]?.counts).toMatchObject({ skip: 1, conflict: 0, transferBytes: 0 });

    // The same size and part count with other bytes is still a differing object.
    await gateway.putObjectMultipart(fresh, key, byteStream('other-bytes', size), {
      signal,
      partSize: 5 * 1024 * 1024,
      size,
    });
    const changed = await restore(args, own);
    expect(changed.report?.steps[0]?.counts).toMatchObject({ skip: 0, conflict: 1 });
    expect(changed.report?.hazards.join('\n')).toContain(
      `differ from the restore point and stay as they are (${key})`,
    );
  });

  it('re-sends no older sentinel while the newest differs and stays, and puts it back with --overwrite', async () => {
    const args = fresh('stays');
    const [newWal] = destinations(args);
    expect((await restore([snapshot, '--only', 'buckets', ...args])).code).toBe(0);
    // The newest sentinel changed, then a foreign base backup pushed after it: LATEST is foreign.
    const newest = latestAtBackup ?? '';
    const changed = Buffer.from('{"changed":1}');
    await gateway.putObject(newWal, newest, changed, { signal, size: changed.length });
    await new Promise((r) => setTimeout(r, 1100));
    const pushed = SENTINEL('base_000000020000000000000009_00000040');
    await gateway.putObject(newWal, pushed, Buffer.from('{}'), { signal, size: 2 });
    const counts = (run: Awaited<ReturnType<typeof restore>>) =>
      run.report?.steps[0]?.buckets?.find((b) => b.destination === newWal)?.counts;
    // Sending the older ones without the newest would make an older base backup LATEST.
    const kept = await restore([snapshot, '--only', 'buckets', ...args]);
    // LATEST is then not the restore point's: partial (exit 3), saying so.
    expect(kept.code, kept.err).toBe(3);
    expect(counts(kept)).toMatchObject({ reorder: 0, conflict: 1 });
    expect(kept.report?.steps[0]?.errors).toEqual([
      `${newWal}: WAL-E's LATEST is now ${pushed}, not ${newest} as at backup time; remove the newer base backup or restore into a fresh bucket before the database starts`,
    ]);
    expect(await latest(gateway, newWal)).toBe(pushed);
    const replaced = await restore([snapshot, '--only', 'buckets', '--overwrite', ...args]);
    expect(counts(replaced)).toMatchObject({ reorder: 0, overwrite: 1 });
    expect(await latest(gateway, newWal)).toBe(latestAtBackup);
  });

  it('restores by default what a point holds of buckets and volume, and refuses a named step it lacks', async () => {
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      sources: {
        buckets: { names: [wal] },
        volume: { path: volume },
        database: { host: 'local', command: stackDumpCommand(stack) },
      },
      target: { type: 'dir', path: tempDir('steps-target') },
      restore: { deisVersion: 'v1.13.4' },
    });
    const take = async (only: string) => {
      const run = await cli(['backup', '--config', file, '--only', only]);
      expect(run.code, run.err).toBe(0);
      return run.out.trim();
    };
    const volumeOnly = await take('volume');
    const into = join(tempDir('steps'), 'store');
    const plan = await restore([volumeOnly, '--dry-run', '--volume-to', into], file);
    expect(plan.code, plan.err).toBe(0);
    expect(plan.report?.steps.map((s) => s.step)).toEqual(['volume']);
    const named = await restore([volumeOnly, '--only', 'buckets', '--dry-run'], file);
    expect(named.code).toBe(1);
    expect(named.err.split('\n').at(-1)).toBe(
      `deis-backup: restore point ${volumeOnly} holds no bucket; choose the steps it has with --only ("only" over HTTP)`,
    );
    const databaseOnly = await take('database');
    const none = await restore([databaseOnly, '--dry-run'], file);
    expect(none.code).toBe(1);
    expect(none.err.split('\n').at(-1)).toBe(
      `deis-backup: restore point ${databaseOnly} holds no buckets and no volume; restore its database with --only database ("only" over HTTP)`,
    );
  });

  it('refuses to restore two buckets into one', async () => {
    const shared = unique('shared');
    for (const args of [
      ['--bucket', `${wal}=${shared}`, '--bucket', `${registry}=${shared}`],
      // The registry goes into its own name, which the WAL bucket is mapped onto.
      ['--bucket', `${wal}=${registry}`],
    ]) {
      const run = await restore([snapshot, '--only', 'buckets', '--dry-run', ...args]);
      expect(run.code).toBe(2);
      expect(run.err.split('\n').at(-1)).toBe(
        `deis-backup: buckets ${wal} and ${registry} would both be restored into ${args.length === 4 ? shared : registry}; map each to a bucket of its own (--bucket SOURCE=DESTINATION, "buckets" over HTTP)`,
      );
    }
  });

  it('refuses to restore the volume under /var/lib/deis/store while CephFS is not mounted there, and warns with --yes', async () => {
    // This machine has no CephFS: the store path is on its own disk, as on a host whose
    // deis-store-volume has not mounted yet. Nothing is written there, by the refusal or the dry run.
    const into = `/var/lib/deis/store/${unique('restore-test')}`;
    // The first folder of the path this machine lacks, removed at the end with what is under it.
    const made = ['/var/lib/deis', '/var/lib/deis/store'].find((dir) => !existsSync(dir));
    for (const host of [undefined, stack.sshHost]) {
      const file = config(host ? { volumeHost: host } : {});
      const base = ['restore', snapshot, '--config', file, '--only', 'volume', '--volume-to', into];
      const restoreInto = (dir: string) => cli([...base.slice(0, -1), dir]);
      const refused = await cli(base);
      expect(refused.code, refused.err).toBe(2);
      const where = `${into}${host ? ` on ${host}` : ''}`;
      const line = refused.err.split('\n').at(-1) ?? '';
      expect(line).toMatch(
        new RegExp(`^deis-backup: volume: ${where.replace(/[.]/g, '\\.')} is on [\\w./-]+, not CephFS: `),
      );
      expect(line).toContain('start deis-store-volume (deisctl start store-volume)');
      expect(line).toMatch(/, or pass --yes \("yes": true over HTTP\) to restore there all the same$/);
      // The same folder written another way is refused too.
      const roundabout = into.replace('/deis/store/', '/deis//./store/');
      const other = await restoreInto(roundabout);
      expect(other.code, other.err).toBe(2);
      expect(other.err).toContain(`volume: ${roundabout}${host ? ` on ${host}` : ''} is on `);
      // And so is a path that reaches it through a symlink, named with where it leads.
      const link = join(tempDir('via-link'), 'store');
      await symlink('/var/lib/deis/store', link);
      const linked = `${link}/${into.split('/').at(-1) ?? ''}`;
      const through = await restoreInto(linked);
      expect(through.code, through.err).toBe(2);
      expect(through.err).toContain(`volume: ${linked} (${into})${host ? ` on ${host}` : ''} is on `);
      const planned = await cli([...base, '--dry-run', '--json']);
      expect(planned.code, planned.err).toBe(0);
      const report = JSON.parse(planned.out) as RestoreReport;
      const hazard = line.slice('deis-backup: '.length).replace(/, or pass --yes.*$/, '');
      expect(report.hazards).toEqual([hazard]);
      expect(existsSync(into)).toBe(false);
      if (host !== undefined) continue;
      try {
        const forced = await cli([...base, '--yes', '--json']);
        expect(forced.code, forced.err).toBe(0);
        expect((JSON.parse(forced.out) as RestoreReport).hazards).toEqual([hazard]);
        expect(await describeTree(into)).toEqual(await describeTree(volume));
        // A folder of the store that leads out of it through a symlink is refused too.
        const outside = realpathSync(tempDir('outside'));
        await symlink(outside, `${into}-out`);
        const leaving = await restoreInto(`${into}-out`);
        expect(leaving.code, leaving.err).toBe(2);
        expect(leaving.err.split('\n').at(-1)).toBe(
          `deis-backup: volume: ${into}-out leads through a symlink to ${outside}, outside /var/lib/deis/store: restored there, the files would not be in the store; restore into a folder of the store itself, or pass --yes ("yes": true over HTTP) to restore there all the same`,
        );
      } finally {
        await rm(made ?? into, { recursive: true, force: true });
        await rm(`${into}-out`, { force: true });
      }
    }
  });

  it('refuses a volume destination that is a file in the preflight, before any bucket is written', async () => {
    const file = join(tempDir('not-a-dir'), 'store');
    await writeFile(file, 'a file\n');
    for (const host of [undefined, stack.sshHost]) {
      const args = fresh('notdir');
      const run = await restore(
        [snapshot, ...args, '--volume-to', file],
        config(host ? { volumeHost: host } : {}),
      );
      expect(run.code, run.err).toBe(2);
      expect(run.err.split('\n').at(-1)).toBe(
        `deis-backup: volume: ${file}${host ? ` on ${host}` : ''} exists and is not a directory; restore into a directory (--volume-to, "volumeTo" over HTTP), or move it away first`,
      );
      for (const bucket of destinations(args))
        expect(await gateway.bucketExists(bucket, { signal })).toBe(false);
    }
  });

  it('keeps a differing file unless --overwrite, and replaces it with it', async () => {
    const into = join(tempDir('restored'), 'store');
    expect((await restore([snapshot, '--only', 'volume', '--volume-to', into])).code).toBe(0);
    const log = join(into, 'logs', 'www.log');
    await writeFile(log, 'changed since\n');
    const kept = await restore([snapshot, '--only', 'volume', '--volume-to', into]);
    expect(kept.report?.hazards).toEqual([
      `1 volume entr(ies) in ${into} differ from the restore point and stay as they are (logs/www.log); pass --overwrite to replace them`,
    ]);
    expect(kept.report?.steps[0]?.counts).toMatchObject({ conflict: 1, create: 0 });
    expect(await readFile(log, 'utf8')).toBe('changed since\n');
    const replaced = await restore([snapshot, '--only', 'volume', '--volume-to', into, '--overwrite']);
    expect(replaced.report?.steps[0]?.counts).toMatchObject({ overwrite: 1 });
    expect(await describeTree(into)).toEqual(await describeTree(volume));
  });

  it('loads the dump with psql into a fresh PostgreSQL that then dumps the same', async () => {
    resetScratch(stack);
    const run = await restore([snapshot, '--only', 'database']);
    expect(run.err).toBe('');
    expect(run.code).toBe(0);
    expect(dumpAll(stack, stack.pgScratchPort)).toBe(dumpAll(stack, stack.pgPort));
  });

  it('reports a load whose statements psql went on past as partial, naming the first (exit 3)', async () => {
    resetScratch(stack);
    expect((await restore([snapshot, '--only', 'database'])).code).toBe(0);
    // Loaded again: its tables and rows are there now, and psql exits 0 after every failed statement.
    const again = await restore([snapshot, '--only', 'database']);
    expect(again.code).toBe(3);
    expect(again.report?.status).toBe('partial');
    expect(again.report?.steps[0]).toMatchObject({ step: 'database', status: 'partial' });
    expect(again.report?.steps[0]?.errors).toEqual([
      expect.stringMatching(
        /^database: statements of the dump failed in the load command on \S+, which went on \(relation "[^"]+" already exists and \d+ more\); load the dump into a cluster that does not hold its tables yet$/,
      ),
    ]);
    expect(dumpAll(stack, stack.pgScratchPort)).toBe(dumpAll(stack, stack.pgPort));
  });

  it('plans with --dry-run, writes nothing, and counts what the real run then does', async () => {
    const args = fresh('dry');
    const into = join(tempDir('restored'), 'store');
    const dry = await restore([snapshot, ...args, '--volume-to', into, '--dry-run']);
    expect(dry.code).toBe(0);
    expect(dry.report?.dryRun).toBe(true);
    for (const bucket of destinations(args))
      expect(await gateway.bucketExists(bucket, { signal })).toBe(false);
    expect(existsSync(into)).toBe(false);
    const real = await restore([snapshot, ...args, '--volume-to', into]);
    expect(real.code).toBe(0);
    const counts = (r: RestoreReport | undefined) =>
      r?.steps.map((s) => ({ step: s.step, counts: s.counts, buckets: s.buckets }));
    expect(counts(real.report)).toEqual(counts(dry.report));
  });

  it('fails on a tampered object with a clear message and restores the rest (exit 3)', async () => {
    const tamperedTarget = tempDir('tampered');
    execFileSync('cp', ['-a', `${target}/.`, tamperedTarget]);
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      sources: { buckets: { names: [wal, registry] } },
      target: { type: 'dir', path: tamperedTarget },
    });
    // Same size, different bytes: only the checksums can tell.
    const contents = await bucketContents(gateway, registry);
    const layer = [...contents.keys()].find(
      (k) => k.endsWith('/layer') && (contents.get(k)?.etag.includes('-') ?? false),
    );
    const json = [...contents.keys()].find((k) => k.endsWith('/json'));
    const blobs: string[] = [];
    for (const key of [layer, json]) {
      const index = execFileSync(
        'sh',
        ['-c', `zcat ${target}/snapshots/${snapshot}/bucket-${registry}.jsonl.gz`],
        { encoding: 'utf8' },
      );
      const entry = index
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { key: string; blob: string })
        .find((e) => e.key === key);
      if (!entry) throw new Error(`no index entry for ${String(key)}`);
      const path = join(tamperedTarget, entry.blob);
      const bytes = await readFile(path);
      flipByte(bytes, Math.floor(bytes.length / 2));
      await writeFile(path, bytes);
      blobs.push(entry.blob);
    }
    const args = fresh('tamper');
    const [, newRegistry] = destinations(args);
    const run = await restore([snapshot, '--only', 'buckets', ...args], file);
    expect(run.code).toBe(3);
    expect(run.report?.status).toBe('partial');
    const errors = run.report?.steps[0]?.errors ?? [];
    expect(errors).toHaveLength(2);
    for (const blob of blobs) {
      expect(errors).toContainEqual(
        expect.stringContaining(
          `: body ${blob} does not match the sha256 in the manifest (damaged or tampered); not restored`,
        ),
      );
    }
    const restored = await bucketContents(gateway, newRegistry);
    expect(restored.has(layer ?? '')).toBe(false);
    expect(restored.has(json ?? '')).toBe(false);
    expect(restored.size).toBe(contents.size - 2);
  });

  /**
   * A copy of the target in which the body of `key` of the WAL-E bucket has one byte flipped, and a
   * config restoring from it: its index entry and the config file.
   */
  const walWithDamaged = async (name: string, key: string) => {
    const damaged = tempDir(name);
    execFileSync('cp', ['-a', `${target}/.`, damaged]);
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      sources: { buckets: { names: [wal, registry] } },
      target: { type: 'dir', path: damaged },
    });
    const entry = execFileSync('sh', ['-c', `zcat ${target}/snapshots/${snapshot}/bucket-${wal}.jsonl.gz`], {
      encoding: 'utf8',
    })
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { key: string; blob: string })
      .find((e) => e.key === key);
    if (!entry) throw new Error(`no index entry for ${key}`);
    const path = join(damaged, entry.blob);
    const bytes = await readFile(path);
    flipByte(bytes, Math.floor(bytes.length / 2));
    await writeFile(path, bytes);
    return { file, entry };
  };

  it('withholds the sentinel of a base backup whose tar partition is damaged, so LATEST falls back (exit 3)', async () => {
    // The base backup LATEST named at backup time loses its only partition to a flipped byte.
    const base = BASE_BACKUPS[1] ?? '';
    const partition = `basebackups_005/${base}/tar_partitions/part_00000000.tar.lzo`;
    const { file, entry } = await walWithDamaged('damaged-base', partition);
    const args = fresh('withheld');
    const [newWal] = destinations(args);
    const run = await restore([snapshot, '--only', 'buckets', ...args], file);
    expect(run.code).toBe(3);
    expect(run.report?.status).toBe('partial');
    expect(run.report?.steps[0]?.errors).toEqual([
      `${newWal}/${partition}: body ${entry.blob} does not match the sha256 in the manifest (damaged or tampered); not restored`,
      `${newWal}: base backup ${base} is incomplete (1 of its object(s) failed to restore), so its stop sentinel was withheld and WAL-E will not restore it; fix the cause and restore again`,
    ]);
    const restored = await bucketContents(gateway, newWal);
    expect(restored.has(SENTINEL(base))).toBe(false);
    expect(restored.has(`basebackups_005/${base}/extended_version.txt`)).toBe(true);
    // The newest complete base backup is now LATEST.
    expect(await latest(gateway, newWal)).toBe(SENTINEL(BASE_BACKUPS[2] ?? ''));
  });

  it('names a stop sentinel that failed to upload, and expects the one before it as LATEST (exit 3)', async () => {
    // The newest stop sentinel's body loses a byte: its upload fails its sha256 check.
    const newest = latestAtBackup ?? '';
    const { file, entry } = await walWithDamaged('damaged-sentinel', newest);
    const args = fresh('sentinel');
    const [newWal] = destinations(args);
    const run = await restore([snapshot, '--only', 'buckets', ...args], file);
    expect(run.code).toBe(3);
    // Only the upload is named: no newer base backup is blamed for LATEST.
    expect(run.report?.steps[0]?.errors).toEqual([
      `${newWal}/${newest}: body ${entry.blob} does not match the sha256 in the manifest (damaged or tampered); not restored`,
    ]);
    // The sentinel sent before it (the newest was made so by rewriting the middle one).
    expect(await latest(gateway, newWal)).toBe(SENTINEL(BASE_BACKUPS[2] ?? ''));
  });

  it('fails in preflight, writing nothing, when a body or an artifact is missing or damaged', async () => {
    const broken = tempDir('broken');
    execFileSync('cp', ['-a', `${target}/.`, broken]);
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      sources: { volume: { path: volume } },
      target: { type: 'dir', path: broken },
    });
    const index = execFileSync(
      'sh',
      ['-c', `zcat ${broken}/snapshots/${snapshot}/bucket-${wal}.jsonl.gz | head -1`],
      { encoding: 'utf8' },
    );
    const victim = (JSON.parse(index) as { blob: string }).blob;
    execFileSync('rm', [join(broken, victim)]);
    const args = fresh('missing');
    const run = await restore([snapshot, ...args], file);
    expect(run.code).toBe(1);
    expect(run.err).toMatch(
      new RegExp(
        `^deis-backup: restore point ${snapshot} is incomplete: 1 item\\(s\\) missing or of the wrong size in dir:${broken} \\(first: ${wal}/.* \\(${victim}\\)\\); nothing was restored; choose another restore point$`,
        'm',
      ),
    );
    for (const bucket of destinations(args))
      expect(await gateway.bucketExists(bucket, { signal })).toBe(false);

    const archive = join(broken, 'snapshots', snapshot, 'volume.tar.gz');
    const bytes = await readFile(archive);
    flipByte(bytes, bytes.length - 10);
    await writeFile(archive, bytes);
    const into = join(tempDir('restored'), 'store');
    const volumeRun = await restore([snapshot, '--only', 'volume', '--volume-to', into], file);
    expect(volumeRun.code).toBe(1);
    expect(volumeRun.err).toContain(
      `snapshots/${snapshot}/volume.tar.gz in dir:${broken} does not match the manifest`,
    );
    expect(existsSync(into)).toBe(false);
  });

  it('fails in preflight with one line on a damaged bucket index, which verify reports once', async () => {
    const indexKey = `snapshots/${snapshot}/bucket-${wal}.jsonl.gz`;
    const original = await readFile(join(target, indexKey));
    const damages: [string, Buffer, RegExp][] = [
      [
        'flipped',
        (() => {
          const bytes = Buffer.from(original);
          flipByte(bytes, Math.floor(bytes.length / 2));
          return bytes;
        })(),
        /.+/,
      ],
      ['truncated', original.subarray(0, original.length - 20), /unexpected end of file/],
      [
        'not JSON',
        gzipSync(gunzipSync(original).toString('utf8').replace('\n', '\n{"key": "half a line\n')),
        /a line is not JSON/,
      ],
      [
        'JSON of another shape',
        gzipSync(gunzipSync(original).toString('utf8').replace('\n', '\n{"key": 7, "size": "big"}\n')),
        /a line is not an index entry/,
      ],
    ];
    for (const [what, bytes, cause] of damages) {
      const broken = tempDir('broken-index');
      execFileSync('cp', ['-a', `${target}/.`, broken]);
      await writeFile(join(broken, indexKey), bytes);
      const file = writeConfig({
        etcd: { endpoints: [stack.etcdEndpoint] },
        sources: { buckets: { names: [wal, registry] } },
        target: { type: 'dir', path: broken },
      });
      const args = fresh('badindex');
      const run = await restore([snapshot, '--only', 'buckets', ...args], file);
      expect(run.code, what).toBe(1);
      const lines = run.err.split('\n').filter((l) => l.startsWith('deis-backup:'));
      expect(lines, `${what}: ${run.err}`).toHaveLength(1);
      const prefix = `deis-backup: restore point ${snapshot} is damaged: bucket index ${indexKey} in dir:${broken} is damaged (`;
      const suffix =
        '); nothing was restored; choose another restore point (deis-backup snapshots) and check this one with deis-backup verify';
      const line = lines[0] ?? '';
      expect(line.startsWith(prefix) && line.endsWith(suffix), `${what}: ${line}`).toBe(true);
      expect(line.slice(prefix.length, -suffix.length), what).toMatch(cause);
      expect(run.err).not.toContain('unexpected error');
      for (const bucket of destinations(args))
        expect(await gateway.bucketExists(bucket, { signal })).toBe(false);
      const verify = await cli(['verify', snapshot, '--json', '--config', file]);
      expect(verify.code, what).toBe(1);
      const report = JSON.parse(verify.out) as { snapshots: { errors: string[] }[] };
      const errors = report.snapshots.flatMap((s) => s.errors);
      expect(errors, what).toHaveLength(1);
      expect(errors[0], what).toContain(indexKey);
    }
  });

  it("refuses to restore WAL-E data into the running database's bucket, unless --yes", async () => {
    // Preflight refuses before anything is written, so naming the stack's real db_wal is safe here.
    const intoDatabaseBucket = [
      '--bucket',
      `${wal}=db_wal`,
      '--bucket',
      `${registry}=${unique('alive-reg')}`,
    ];
    const run = await cli([
      'restore',
      snapshot,
      '--config',
      config(),
      '--only',
      'buckets',
      ...intoDatabaseBucket,
    ]);
    expect(run.code).toBe(2);
    expect(run.err).toBe(
      'deis-backup: deis-database looks alive (/deis/database/host = 127.0.0.1 in etcd): a database that starts while db_wal is half restored initialises empty and pushes a backup that wins; stop it (deisctl stop database) or pass --yes',
    );
    // Into another bucket the running database is not at risk.
    const elsewhere = await cli([
      'restore',
      snapshot,
      '--config',
      config(),
      '--only',
      'buckets',
      '--dry-run',
      '--json',
      ...fresh('aside'),
    ]);
    expect(elsewhere.code).toBe(0);
    expect((JSON.parse(elsewhere.out) as RestoreReport).hazards).toEqual([]);
  });

  /**
   * A new cluster's etcd: the stack's gateway, `bucket` as the database's bucket, and `initId` when
   * its database has initialised there.
   */
  const newCluster = (bucket: string, initId?: string) => {
    const gatewayAt = new URL(stack.rgwEndpoint);
    return startScratchEtcd({
      '/deis/store/gateway/host': gatewayAt.hostname,
      '/deis/store/gateway/port': gatewayAt.port,
      '/deis/store/gateway/accessKey': stack.gatewayAccessKey,
      '/deis/store/gateway/secretKey': stack.gatewaySecretKey,
      '/deis/database/bucketName': bucket,
      ...(initId === undefined ? {} : { [INIT_ID]: initId }),
    });
  };

  it("removes /deis/database/initId once the database's bucket is restored, so it restores from it", async () => {
    // A new cluster whose database has initialised once: its own etcd, naming a fresh db_wal.
    const args = fresh('boot');
    const [newWal] = destinations(args);
    let etcd = await newCluster(newWal, 'first-id');
    try {
      const file = config({ etcd: etcd.endpoint });
      const plan = await restore([snapshot, '--only', 'buckets', '--dry-run', ...args], file);
      expect(plan.code, plan.err).toBe(0);
      expect(plan.report?.hazards).toEqual([
        `${INIT_ID} is set: deis-database has initialised in this cluster and would keep its own data at its next start instead of restoring ${newWal}; the restore removes the key once ${newWal} is restored`,
      ]);
      expect(await etcd.get(INIT_ID)).toBe('first-id');
      const run = await restore([snapshot, '--only', 'buckets', ...args], file);
      expect(run.code, run.err).toBe(0);
      expect(run.report?.next.slice(0, 2)).toEqual([
        `removed ${INIT_ID}: deis-database had initialised in this cluster; at its next start it restores from ${newWal}`,
        `when deis-database starts, its log (deisctl journal database) must say "database: restoring from backup..."; if it does not, it kept its own data: stop deis-database (from Deis 1.9 that pushes a base backup of the data it kept), run this restore again with --only buckets (it puts the restore point's base backups back as the newest and removes ${INIT_ID} again; before Deis 1.5 remove the deis-database-data container instead), then start deis-database, before its next base backup (every 3 h)`,
      ]);
      expect(await etcd.get(INIT_ID)).toBeUndefined();

      // It kept its own data anyway, and its stop pushed a base backup of it, now WAL-E's LATEST.
      // Doing what the line says makes the restore point's newest base backup LATEST again.
      await new Promise((r) => setTimeout(r, 1100));
      const pushed = SENTINEL('base_000000020000000000000009_00000040');
      await gateway.putObject(newWal, pushed, Buffer.from('{}'), {
        signal,
        size: 2,
        contentType: 'application/json',
      });
      expect(await latest(gateway, newWal)).toBe(pushed);
      await etcd.put(INIT_ID, 'kept-id');
      const again = await restore([snapshot, '--only', 'buckets', ...args], file);
      expect(again.code, again.err).toBe(0);
      const walCounts = again.report?.steps[0]?.buckets?.find((b) => b.destination === newWal)?.counts;
      expect(walCounts).toMatchObject({ create: 0, reorder: BASE_BACKUPS.length });
      expect(await latest(gateway, newWal)).toBe(latestAtBackup);
      expect(await etcd.get(INIT_ID)).toBeUndefined();
    } finally {
      await etcd.stop();
    }

    // The database initialises again while the restore runs: its new id stays, and the run says so.
    const later = fresh('reboot');
    const [laterWal] = destinations(later);
    etcd = await newCluster(laterWal, 'second-id');
    try {
      const running = restore([snapshot, '--only', 'buckets', ...later], config({ etcd: etcd.endpoint }));
      // Objects in the bucket: the preflight has read the id.
      await until(
        'the restore to write',
        async () => {
          try {
            for await (const item of gateway.listObjects(laterWal, { signal, listVersion: 1 }))
              return item.key;
          } catch {
            // The bucket is not there yet.
          }
          return undefined;
        },
        60_000,
      );
      await etcd.put(INIT_ID, 'third-id');
      const run = await running;
      expect(run.code, run.err).toBe(3);
      expect(run.report?.status).toBe('partial');
      expect(run.report?.next[0]).toBe(
        `${INIT_ID} was not removed (it changed since the preflight: deis-database initialised again): stop deis-database (from Deis 1.9 that pushes a base backup of the data it kept), run this restore again with --only buckets (it puts the restore point's base backups back as the newest and removes ${INIT_ID} again; before Deis 1.5 remove the deis-database-data container instead), then start deis-database`,
      );
      expect(await etcd.get(INIT_ID)).toBe('third-id');
    } finally {
      await etcd.stop();
    }

    // The database's bucket comes back with a failure (LATEST is a foreign base backup): the key stays.
    const foreign = fresh('foreign');
    const [foreignWal] = destinations(foreign);
    etcd = await newCluster(foreignWal, 'fourth-id');
    try {
      const file = config({ etcd: etcd.endpoint });
      expect((await restore([snapshot, '--only', 'buckets', ...foreign], file)).code).toBe(0);
      const changed = Buffer.from('{"changed":1}');
      await gateway.putObject(foreignWal, latestAtBackup ?? '', changed, { signal, size: changed.length });
      await new Promise((r) => setTimeout(r, 1100));
      const pushed = SENTINEL('base_000000020000000000000009_00000040');
      await gateway.putObject(foreignWal, pushed, Buffer.from('{}'), { signal, size: 2 });
      await etcd.put(INIT_ID, 'fifth-id');
      const run = await restore([snapshot, '--only', 'buckets', ...foreign], file);
      expect(run.code, run.err).toBe(3);
      expect(run.report?.steps[0]?.buckets?.find((b) => b.destination === foreignWal)?.counts.failed).toBe(1);
      expect(run.report?.next[0]).toBe(
        `${foreignWal} was not restored whole (1 failed; see the errors): do not start deis-database until this restore runs again without failures, or it restores without what failed; ${INIT_ID} stays until then`,
      );
      expect(await etcd.get(INIT_ID)).toBe('fifth-id');
    } finally {
      await etcd.stop();
    }

    // A WAL segment there with other bytes under its name (a database that pushed its own): kept
    // without --overwrite, and the key stays, as the base backups would replay WAL not theirs.
    const clash = fresh('clash');
    const [clashWal] = destinations(clash);
    etcd = await newCluster(clashWal, 'sixth-id');
    try {
      const file = config({ etcd: etcd.endpoint });
      expect((await restore([snapshot, '--only', 'buckets', ...clash], file)).code).toBe(0);
      const segment = [...(await bucketContents(gateway, clashWal)).keys()].find((k) =>
        k.startsWith('wal_005/'),
      );
      if (segment === undefined) throw new Error('no WAL segment restored');
      const other = Buffer.from('another history');
      await gateway.putObject(clashWal, segment, other, { signal, size: other.length });
      await etcd.put(INIT_ID, 'seventh-id');
      const run = await restore([snapshot, '--only', 'buckets', ...clash], file);
      expect(run.code, run.err).toBe(3);
      expect(run.report?.status).toBe('partial');
      expect(run.report?.next[0]).toBe(
        `${clashWal} holds 1 object(s) that differ from the restore point and were kept: do not start deis-database until this restore runs again with --overwrite, or it restores the restore point's base backups with WAL that is not theirs; ${INIT_ID} stays until then`,
      );
      expect(await etcd.get(INIT_ID)).toBe('seventh-id');
      // With --overwrite the segment is the restore point's again, and the key goes.
      const again = await restore([snapshot, '--only', 'buckets', '--overwrite', ...clash], file);
      expect(again.code, again.err).toBe(0);
      expect(await etcd.get(INIT_ID)).toBeUndefined();
    } finally {
      await etcd.stop();
    }
  });

  it('warns before restoring a db_wal copy with a hole in its WAL', async () => {
    const gap = unique('gap_wal');
    await gateway.createBucket(gap, { signal });
    await seedDbWal(gateway, gap);
    await gateway.deleteObject(gap, `wal_005/${WAL_BETWEEN[0] ?? ''}.lzo`, { signal });
    const file = oneBucketConfig(gap);
    const backup = await cli(['backup', '--config', file]);
    expect(backup.code, backup.err).toBe(0);
    const id = backup.out.trim();
    const plan = await restore(
      [id, '--only', 'buckets', '--dry-run', '--bucket', `${gap}=${unique('gap_to')}`],
      file,
    );
    expect(plan.code, plan.err).toBe(0);
    expect(plan.report?.hazards).toEqual([
      `bucket ${gap} fails the WAL-E check: missing WAL wal_005/${WAL_BETWEEN[0] ?? ''}.lzo (after ${BASE_BACKUPS[0]?.slice(5, 29) ?? ''}, before ${WAL_BETWEEN[1] ?? ''}); a database restoring from it may come up without its data (deis-backup verify ${id} lists them)`,
    ]);
  });

  it('reports extra base backups already in the destination db_wal as a hazard', async () => {
    const args = fresh('extra');
    const [newWal] = destinations(args);
    await gateway.createBucket(newWal, { signal });
    const stray = 'basebackups_005/base_000000010000000000000002_00000040_backup_stop_sentinel.json';
    await gateway.putObject(newWal, stray, Buffer.from('{}'), {
      signal,
      size: 2,
      contentType: 'application/json',
    });
    const dry = await restore([snapshot, '--only', 'buckets', ...args, '--dry-run']);
    expect(dry.report?.hazards).toContain(
      `${newWal} already holds 1 base backup(s) not in the restore point (base_000000010000000000000002_00000040_backup_stop_sentinel.json); the restore point's sentinels go after theirs, so that WAL-E's LATEST is the restore point's: remove them or restore into a fresh bucket to be rid of them`,
    );
  });

  it('reports a registry image caught mid-push, or a tag naming an image not copied, as a hazard', async () => {
    const pushing = unique('push-reg');
    await gateway.createBucket(pushing, { signal });
    await seedRegistry(gateway, pushing, { bigLayers: false });
    const image = IMAGES[0]?.id ?? '';
    await gateway.putObject(pushing, `registry/images/${image}/_inprogress`, Buffer.from('true'), {
      signal,
      size: 4,
    });
    const file = oneBucketConfig(pushing);
    const first = await cli(['backup', '--config', file]);
    expect(first.code, first.err).toBe(0);
    const plan = await restore(['latest', '--bucket', `${pushing}=${unique('push-new')}`, '--dry-run'], file);
    expect(plan.code, plan.err).toBe(0);
    const midPush = `bucket ${pushing}: image ${image} was being pushed when the bucket was copied (registry/images/${image}/_inprogress): restored, the registry will not serve it until its app is built again`;
    expect(plan.report?.hazards).toEqual([midPush]);

    // A tag naming an image the copy lacks is found from the tag's body, read in the preflight.
    await gateway.deleteObject(pushing, `registry/images/${image}/_inprogress`, { signal });
    const absent = 'e'.repeat(64);
    await gateway.putObject(pushing, 'registry/repositories/library/myapp/tag_v4', Buffer.from(absent), {
      signal,
      size: 64,
    });
    const second = await cli(['backup', '--config', file]);
    expect(second.code, second.err).toBe(0);
    const tagged = await restore(
      ['latest', '--bucket', `${pushing}=${unique('push-new')}`, '--dry-run'],
      file,
    );
    expect(tagged.code, tagged.err).toBe(0);
    expect(tagged.report?.hazards).toEqual([
      `bucket ${pushing}: tag library/myapp:v4 names image ${absent}, which the bucket lacks: after a restore that tag cannot be pulled (an image pushed while the bucket was copied can be missed, and its tag, copied later, not)`,
    ]);
  });

  it('feeds the republish snippet to the controller command for Deis before 1.11, over SSH', async () => {
    const out = join(tempDir('controller'), 'snippet.txt');
    const file = config({
      restore: {
        deisVersion: 'v1.10.1',
        controllerHost: stack.sshHost,
        controllerCommand: `cat > ${out}; echo ETCD={etcd} >> ${out}`,
      },
    });
    const run = await restore([snapshot, '--only', 'buckets', ...fresh('ctl')], file);
    expect(run.code).toBe(0);
    expect(await readFile(out, 'utf8')).toBe(`${republishSnippet([1, 10, 1])}ETCD=${stack.sshHost}:4001\n`);
    expect(run.report?.next).toEqual([
      `published keys, apps, domains, certificates and each app's latest config to etcd from deis-controller on ${stack.sshHost}`,
      'after deisctl start platform: run deis scale <type>=0 -a <app> and then deis scale <type>=<count> -a <app> for each app (myapp, www), so the fresh cluster starts the containers the database lists',
    ]);
  });

  it('leaves the republish for --only finish when deis-database has yet to restore from its bucket', async () => {
    const args = fresh('ctlwait');
    const [newWal] = destinations(args);
    // A new cluster whose database bucket is the restore's destination: it restores from it later.
    const etcd = await newCluster(newWal);
    try {
      const out = join(tempDir('controller'), 'snippet.txt');
      const file = config({
        etcd: etcd.endpoint,
        restore: { deisVersion: 'v1.10.1', controllerHost: stack.sshHost, controllerCommand: `cat > ${out}` },
      });
      const run = await restore([snapshot, '--only', 'buckets', ...args], file);
      expect(run.code, run.err).toBe(0);
      expect(run.report?.republish).toBe('none');
      expect(existsSync(out)).toBe(false);
      expect(run.report?.next).toContain(
        `Deis v1.10.1 does not republish to etcd by itself, and deis-database has yet to restore from ${newWal}: once its log says "database: restoring from backup..." and deis-controller runs, run deis-backup --config ${file} restore ${snapshot} --only finish`,
      );
      // Run as that line says, once the database has restored, it publishes.
      const finish = await restore([snapshot, '--only', 'finish'], file);
      expect(finish.code, finish.err).toBe(0);
      expect(finish.report?.republish).toBe('done');
      expect(await readFile(out, 'utf8')).toBe(republishSnippet([1, 10, 1]));
    } finally {
      await etcd.stop();
    }
  });

  it("refuses the database step with WAL-E data for the database's bucket in one run, writing nothing", async () => {
    const args = fresh('dbboth');
    const [newWal] = destinations(args);
    const etcd = await newCluster(newWal);
    try {
      // deis-database stopped, as the restore of its bucket asks: refused before the database step
      // looks for a host to load the dump on (it would say to start deis-database).
      const file = config({ etcd: etcd.endpoint });
      for (const extra of [[], ['--dry-run'], ['--yes']]) {
        const run = await restore([snapshot, '--only', 'buckets,database', ...extra, ...args], file);
        expect(run.code).toBe(2);
        expect(run.err).toContain(
          `restore: the database step and WAL-E data for ${newWal} in one run would load the dump into deis-database, which restores from ${newWal} at its next start and drops what the dump loaded; restore the buckets (deis-database restores itself from them), or the database step alone`,
        );
      }
      expect(await gateway.bucketExists(newWal, { signal })).toBe(false);
    } finally {
      await etcd.stop();
    }
  });

  it('publishes a restored controller database to etcd on Deis 1.10, whose writers ignore a re-save', async () => {
    // A Django controller (test/fixtures/deis-controller: real Django and python-etcd, Deis 1.9–1.10's
    // models and post_save writers rewritten small) whose database holds what etcd lacks after a
    // restore: it was filled while etcd was out of reach, as the old cluster's was for this etcd.
    const dir = tempDir('django');
    const name = unique('ctl').replaceAll('_', '-');
    const etcdAt = new URL(stack.etcdEndpoint).host;
    const env = {
      ...process.env,
      DEIS_TEST_DB: join(dir, 'db.sqlite3'),
      DEIS_LOG_DIR: dir,
      PYTHONDONTWRITEBYTECODE: '1',
    };
    const shell = (input: string, etcd: string) =>
      spawnSync(PYTHON, ['manage.py', 'shell'], {
        cwd: CONTROLLER,
        env: { ...env, ETCD: etcd },
        input,
        encoding: 'utf8',
      });
    execFileSync(PYTHON, ['manage.py', 'migrate', '--run-syncdb', '-v0'], {
      cwd: CONTROLLER,
      env: { ...env, ETCD: '127.0.0.1:1' },
    });
    const seed = shell(
      [
        'from django.contrib.auth.models import User',
        'from api.models import App, Certificate, Config, Domain, Key',
        `u = User.objects.create(username='${name}')`,
        `Key.objects.create(owner=u, id='${name}@laptop', public='ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7 ${name}@laptop')`,
        `a = App.objects.create(owner=u, id='${name}')`,
        `Config.objects.create(owner=u, app=a, values_json='{"OLD": "gone", "PORT": "4000"}')`,
        `Config.objects.create(owner=u, app=a, values_json='{"PORT": "5000"}')`,
        `Domain.objects.create(owner=u, app=a, domain='${name}.example.com')`,
        `Certificate.objects.create(owner=u, certificate='CERT ${name}', key='KEY ${name}', common_name='${name}.example.com')`,
        'print(sorted(str(m.updated) for M in (Key, App, Config, Domain, Certificate) for m in M.objects.all()))',
      ].join('\n'),
      '127.0.0.1:1',
    );
    expect(seed.stderr).toBe('');
    const etcdKeys = [
      `/deis/builder/users/${name}`,
      `/deis/services/${name}`,
      `/deis/domains/${name}.example.com`,
      `/deis/certs/${name}.example.com`,
      `/deis/config/${name}`,
    ];
    const get = async (key: string) => {
      const res = await fetch(`${stack.etcdEndpoint}/v2/keys${key}?recursive=true`);
      return res.ok ? ((await res.json()) as { node: EtcdNode }).node : undefined;
    };
    try {
      const file = config({
        restore: {
          deisVersion: 'v1.10.1',
          controllerHost: stack.sshHost,
          controllerCommand: `cd ${CONTROLLER} && PYTHONDONTWRITEBYTECODE=1 DEIS_TEST_DB=${env.DEIS_TEST_DB} DEIS_LOG_DIR=${dir} ETCD=${etcdAt} ${PYTHON} manage.py shell`,
        },
      });
      const run = await restore([snapshot, '--only', 'buckets', ...fresh('ctl-django')], file);
      expect(run.code).toBe(0);
      const users = await get(`/deis/builder/users/${name}`);
      expect(users?.nodes?.map((n) => n.value)).toEqual([
        `ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7 ${name}@laptop`,
      ]);
      expect((await get(`/deis/services/${name}`))?.dir).toBe(true);
      expect((await get(`/deis/domains/${name}.example.com`))?.value).toBe(name);
      expect((await get(`/deis/certs/${name}.example.com/cert`))?.value).toBe(`CERT ${name}`);
      expect((await get(`/deis/certs/${name}.example.com/key`))?.value).toBe(`KEY ${name}`);
      // Only the latest config: OLD was unset by the newer release.
      const config_ = await get(`/deis/config/${name}`);
      expect(config_?.nodes?.map((n) => [n.key, n.value])).toEqual([[`/deis/config/${name}/port`, '5000']]);
      expect(run.report?.next[0]).toBe(
        `published keys, apps, domains, certificates and each app's latest config to etcd from deis-controller on ${stack.sshHost}`,
      );
      // No row changed (no save), and the app log has only the seed's "domain … added".
      const after = shell(PRINT_UPDATED, '127.0.0.1:1');
      expect(after.stdout.trim()).toBe(seed.stdout.trim());
      expect(await readFile(join(dir, `${name}.log`), 'utf8')).toMatch(/^[^\n]* domain \S+ added\n$/);
      // Again, now that /deis/services/<app> exists (where the 1.10 writer would raise): no error.
      const again = shell(republishSnippet([1, 10, 1]), etcdAt);
      expect(again.stderr).toBe('');
      expect(again.status).toBe(0);
      // With etcd out of reach at import no writer is connected: said, not silently skipped.
      const unreachable = shell(republishSnippet([1, 10, 1]), '127.0.0.1:1');
      expect(unreachable.status).toBe(1);
      expect(unreachable.stderr).toContain('deis-controller cannot reach etcd');
    } finally {
      for (const key of etcdKeys)
        await fetch(`${stack.etcdEndpoint}/v2/keys${key}?recursive=true`, { method: 'DELETE' });
    }
  });

  it('gives the shell one complete statement a line, as its console reads them', () => {
    // What the plain Django shell does with each line it reads: codeop.compile_command, as code.interact.
    const check = [
      'import codeop, sys',
      'for line in sys.stdin.read().splitlines():',
      '    if codeop.compile_command(line) is None: raise SystemExit("incomplete: " + line)',
    ].join('\n');
    for (const version of [
      [1, 4, 0],
      [1, 8, 0],
      [1, 10, 1],
    ])
      execFileSync(PYTHON, ['-c', check], { input: republishSnippet(version) });
  });

  it('reports a controller it cannot reach over SSH as a failed republish, keeping the report (exit 3)', async () => {
    const empty = join(tempDir('known'), 'known_hosts');
    await writeFile(empty, '');
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      ssh: { ...stackSsh(stack), knownHostsFile: empty },
      sources: { buckets: { names: [wal, registry] } },
      target: { type: 'dir', path: target },
      restore: { deisVersion: 'v1.10.1', controllerHost: stack.sshHost },
    });
    const run = await restore([snapshot, '--only', 'buckets', ...fresh('ctl-unknown')], file);
    expect(run.code).toBe(3);
    expect(run.report?.status).toBe('partial');
    expect(run.report?.steps.map((s) => [s.step, s.status])).toEqual([['buckets', 'success']]);
    expect(run.report?.republish).toBe('failed');
    expect(run.report?.next[0]).toBe(
      `republishing from deis-controller on ${stack.sshHost} failed: ssh root@[127.0.0.1]:${stack.sshPort}: host not listed in ${empty}; add its key with ssh-keyscan -p ${stack.sshPort} 127.0.0.1 >> ${empty}; then run deis-backup --config ${file} restore ${snapshot} --only finish`,
    );

    // Once the controller can be reached: the finishing step alone, with no data step.
    const out = join(tempDir('controller'), 'snippet.txt');
    const reachable = config({
      restore: { deisVersion: 'v1.10.1', controllerHost: stack.sshHost, controllerCommand: `cat > ${out}` },
    });
    const finish = await restore([snapshot, '--only', 'finish'], reachable);
    expect(finish.code, finish.err).toBe(0);
    expect(finish.report?.status).toBe('success');
    expect(finish.report?.steps).toEqual([]);
    expect(finish.report?.republish).toBe('done');
    expect(await readFile(out, 'utf8')).toBe(republishSnippet([1, 10, 1]));
    expect(finish.report?.next).toEqual([
      `published keys, apps, domains, certificates and each app's latest config to etcd from deis-controller on ${stack.sshHost}`,
      'after deisctl start platform: run deis scale <type>=0 -a <app> and then deis scale <type>=<count> -a <app> for each app (myapp, www), so the fresh cluster starts the containers the database lists',
    ]);
    // Asked for alone, a republish that fails is a failed run.
    const down = config({
      restore: {
        deisVersion: 'v1.10.1',
        controllerHost: stack.sshHost,
        controllerCommand: "cat > /dev/null; echo 'Error: No such container: deis-controller' >&2; exit 1",
      },
    });
    const failed = await restore([snapshot, '--only', 'finish'], down);
    expect(failed.code).toBe(1);
    expect(failed.report?.status).toBe('failed');
    expect(failed.report?.republish).toBe('failed');
    expect(failed.report?.next[0]).toMatch(
      new RegExp(
        `^republishing from deis-controller on ${stack.sshHost} failed \\(.*No such container: deis-controller.*\\): once deis-controller runs \\(deisctl start platform\\), run deis-backup --config ${down} restore ${snapshot} --only finish$`,
      ),
    );
  });

  it('plans the republish in a dry run, and names --only finish when no controller host is known', async () => {
    const plan = await restore(
      [snapshot, '--only', 'finish', '--dry-run'],
      config({
        restore: { deisVersion: 'v1.10.1', controllerHost: stack.sshHost, controllerCommand: 'cat' },
      }),
    );
    expect(plan.code, plan.err).toBe(0);
    expect(plan.report?.next[0]).toBe(
      `Deis v1.10.1 does not republish to etcd by itself: the restore will feed this to \`cat\` on ${stack.sshHost}: ${republishSnippet([1, 10, 1]).trim().replaceAll('\n', '; ')}`,
    );
    // The stack's etcd has no /deis/controller/host: nothing runs, which fails a run asked only for
    // this, and the line says what to do.
    const versionOnly = config({ restore: { deisVersion: 'v1.10.1' } });
    const unknown = await restore([snapshot, '--only', 'finish'], versionOnly);
    expect(unknown.code, unknown.err).toBe(1);
    expect(unknown.report?.status).toBe('failed');
    expect(unknown.report?.republish).toBe('no host');
    expect(unknown.report?.next[0]).toMatch(
      new RegExp(
        `^Deis v1\\.10\\.1 does not republish to etcd by itself, and no controller host is known \\(restore\\.controllerHost, /deis/controller/host\\): once deis-controller runs, run deis-backup --config ${versionOnly} restore ${snapshot} --only finish, or feed this to \`docker exec -i deis-controller .*'cd /app && ETCD=\\$HOST:4001 \\./manage\\.py shell'\` on its host: `,
      ),
    );
  });

  it('fails a run of only the finishing step when the Deis version is unknown, as it did nothing', async () => {
    // No restore.deisVersion (JSON leaves out the undefined), and no /deis/platform/version in etcd.
    const file = config({ restore: { deisVersion: undefined } });
    const run = await restore([snapshot, '--only', 'finish'], file);
    expect(run.code, run.err).toBe(1);
    expect(run.report?.status).toBe('failed');
    expect(run.report?.republish).toBe('version unknown');
    expect(run.report?.next[0]).toMatch(
      /^Deis version unknown \(\/deis\/platform\/version is not in etcd\): for Deis before 1\.11, publish /,
    );
  });

  it('says why the Deis version is unknown when etcd does not answer', async () => {
    const file = writeConfig({
      etcd: { endpoints: ['http://127.0.0.1:1'] },
      sources: { database: { host: 'local', command: stackDumpCommand(stack) } },
      target: { type: 'dir', path: target },
    });
    const plan = await restore([snapshot, '--only', 'database', '--dry-run'], file);
    expect(plan.code, plan.err).toBe(0);
    expect(plan.report?.next[0]).toMatch(
      /^Deis version unknown \(etcd did not answer for \/deis\/platform\/version: .*ECONNREFUSED.*\): for Deis before 1\.11, publish /,
    );
  });

  it('reports a republish snippet that raised as failed although the shell exits 0 (exit 3)', async () => {
    // What Django's shell does with a statement that raises: a Traceback on stderr, then exit 0.
    const shell = [
      'cat > /dev/null',
      "echo 'Traceback (most recent call last):' >&2",
      `echo '  File "<console>", line 1, in <module>' >&2`,
      `echo "NameError: name 'Key' is not defined" >&2`,
      'exit 0',
    ].join('; ');
    const file = config({
      restore: { deisVersion: 'v1.10.1', controllerHost: stack.sshHost, controllerCommand: shell },
    });
    const run = await restore([snapshot, '--only', 'buckets', ...fresh('ctl-raise')], file);
    expect(run.code).toBe(3);
    expect(run.report?.status).toBe('partial');
    expect(run.report?.next[0]).toBe(
      `republishing from deis-controller on ${stack.sshHost} failed (the snippet raised NameError: name 'Key' is not defined): the snippet is chosen by the Deis version, so check that restore.deisVersion (v1.10.1) is the cluster's, then run deis-backup --config ${file} restore ${snapshot} --only finish`,
    );
  });
});
