// Faults of the process and the machine: the daemon stopped (SIGTERM) or killed (kill -9) mid-backup and
// mid-restore, a directory target that runs out of space, and a volume file the backup user cannot read.
// Each run ends failed, aborted or partial with a message naming the cause, lists no new restore point,
// leaves the older ones verifying and restoring, and the next run reuses what was already stored.
import { spawn, type ChildProcess } from 'node:child_process';
import { once, setMaxListeners } from 'node:events';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { chmod, chown, mkdir, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { Repository } from '../../src/repository/repository.js';
import { verifySnapshots } from '../../src/repository/verify.js';
import type { S3Client } from '../../src/s3/client.js';
import { DirTarget } from '../../src/targets/dir.js';
import { bytes, seedVolume } from '../fixtures/deis-sample.js';
import { stackDumpCommand, stackSsh } from '../fixtures/stack.js';
import {
  bucketContents,
  cli,
  describeTree,
  describeWithStack,
  gatewayClient,
  tempDir,
  unique,
  until,
  writeConfig,
  sample,
  callApi,
} from './helpers.js';

const TOKEN = 'faults-token-0123456789abcdef';
const BIN = join(import.meta.dirname, '..', '..', 'dist', 'bin.js');
const signal = AbortSignal.timeout(600_000);
// Seeding puts 16 objects at once on this signal.
setMaxListeners(64, signal);
const silent = createLogger({ level: 'silent' });

/** A unique cluster lock that a killed holder gives up after 3 s, and that the next run waits for. */
const lock = () => ({ key: `/deis-backup-test/${unique('faults')}/lock`, ttlSeconds: 3, waitSeconds: 20 });

/** A daemon child process: its JSON log lines, its stderr, and where it listens. */
interface Child {
  child: ChildProcess;
  url: string;
  lines: { msg: string; level: number; error?: string; interrupted?: string[] }[];
  stderr: string;
}

const children: Child[] = [];

/** Starts `deis-backup daemon` from dist/ and waits until it listens. */
async function startDaemon(file: string, port: number): Promise<Child> {
  const child = spawn('node', [BIN, 'daemon', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  const daemon: Child = { child, url: `http://127.0.0.1:${port}`, lines: [], stderr: '' };
  children.push(daemon);
  let pending = '';
  child.stdout.on('data', (data: Buffer) => {
    pending += data.toString();
    const parts = pending.split('\n');
    pending = parts.pop() ?? '';
    for (const part of parts) {
      try {
        daemon.lines.push(JSON.parse(part) as Child['lines'][number]);
      } catch {
        // not a log line
      }
    }
  });
  child.stderr.on('data', (data: Buffer) => (daemon.stderr += data.toString()));
  await until(
    `the daemon on port ${port}`,
    () => {
      if (child.exitCode !== null) throw new Error(`daemon exited ${child.exitCode}: ${daemon.stderr}`);
      return Promise.resolve(daemon.stderr.includes('listening') ? true : undefined);
    },
    20_000,
  );
  return daemon;
}

/** Signals a daemon and waits for it to exit; returns the exit code and how long it took. */
async function stopDaemon(
  daemon: Child,
  how: 'SIGTERM' | 'SIGKILL',
): Promise<{ code: number | null; ms: number }> {
  const t0 = Date.now();
  const exited = once(daemon.child, 'exit') as Promise<[number | null]>;
  daemon.child.kill(how);
  const [code] = await exited;
  return { code, ms: Date.now() - t0 };
}

/** Calls the daemon's API with the token. */
function call(daemon: Child, method: string, path: string, body?: unknown) {
  return callApi(daemon.url, method, path, { body, token: TOKEN });
}

/** One sample of the daemon's /metrics, or undefined. */
async function metric(daemon: Child, name: string, labels = ''): Promise<number | undefined> {
  return sample((await call(daemon, 'GET', '/metrics')).body, name, labels);
}

/** Waits for an operation of the daemon to end and returns its view. */
async function finished(daemon: Child, kind: 'backups' | 'restores', id: string) {
  return until(
    `${kind} ${id}`,
    async () => {
      const { body } = await call(daemon, 'GET', `/${kind}/${id}`);
      return body['status'] === 'running' ? undefined : body;
    },
    60_000,
  );
}

/** Every file under a directory, relative to it. */
async function filesUnder(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name).slice(root.length + 1));
}

/** Verifies every restore point, reading every byte; returns the ids that verified. */
async function verifyAll(repository: Repository): Promise<string[]> {
  const report = await verifySnapshots(repository, 'all', { readData: true, signal, log: silent });
  expect(report.status, JSON.stringify(report)).toBe('ok');
  // Verify reports in folder (id) order; two runs within one second may sort either way.
  return report.snapshots.map((s) => s.id).sort();
}

/** Counts of a bucket source in a backup result. */
interface Counts {
  objects: number;
  unchanged: number;
  resumed?: number;
  bytesRead: number;
  bytesStored: number;
  failed: number;
}
interface SourceResult {
  id: string;
  status: string;
  counts: Counts;
  errors: string[];
  artifacts: { size: number }[];
}

describeWithStack('process and machine faults', (stack) => {
  let gateway: S3Client;
  const mounts: string[] = [];
  const holds: string[] = [];

  /** Creates a bucket with `count` objects of `size` bytes, named <prefix>/<n>. */
  async function seedBucket(bucket: string, prefix: string, count: number, size: number): Promise<void> {
    if (!(await gateway.bucketExists(bucket, { signal }))) await gateway.createBucket(bucket, { signal });
    const keys = Array.from({ length: count }, (_, i) => `${prefix}/${String(i).padStart(4, '0')}`);
    for (let i = 0; i < keys.length; i += 16) {
      await Promise.all(
        keys.slice(i, i + 16).map((key) => {
          const body = bytes(`${bucket}/${key}`, size);
          return gateway.putObject(bucket, key, body, {
            signal,
            size: body.length,
            contentType: 'application/octet-stream',
            metadata: { origin: key },
          });
        }),
      );
    }
  }

  /** Restores a restore point with the CLI into a fresh bucket and directory; returns what it restored. */
  async function restoreOnce(file: string, id: string, bucket: string, only = 'buckets,volume') {
    const into = unique('frest');
    const volumeTo = tempDir('faults-restored');
    const run = await cli([
      'restore',
      id,
      '--config',
      file,
      '--only',
      only,
      '--bucket',
      `${bucket}=${into}`,
      // Only for a run that restores the volume: the CLI refuses settings of a step it does not take.
      ...(only.includes('volume') ? ['--volume-to', volumeTo] : []),
      '--yes',
    ]);
    expect(run.code, run.err + run.out).toBe(0);
    return {
      contents: await bucketContents(gateway, into),
      tree: await describeTree(volumeTo),
      root: volumeTo,
    };
  }

  beforeAll(() => {
    gateway = gatewayClient(stack);
  });
  afterAll(async () => {
    for (const daemon of children) if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
    for (const hold of holds) await rm(hold, { force: true });
    for (const dir of mounts) await runChild('umount', ['-l', dir]).catch(() => undefined);
    gateway.close();
  });

  it('SIGTERM and kill -9 of the daemon mid-backup: no restore point, and the next run reuses the bodies', async () => {
    const bucket = unique('fproc');
    await seedBucket(bucket, 'old', 10, 16 * 1024);
    const volume = tempDir('faults-volume');
    await seedVolume(volume);
    const target = tempDir('faults-target');
    const hold = join(tempDir('faults-hold'), 'hold');
    holds.push(hold);
    // The dump waits while the hold file exists: the daemon is stopped after buckets and volume are
    // stored, at a moment the test controls, instead of at a guessed time.
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      sources: {
        buckets: { names: [bucket], concurrency: 1 },
        volume: { path: volume },
        database: {
          host: 'local',
          command: `while [ -e '${hold}' ]; do sleep 0.1; done; ${stackDumpCommand(stack)}`,
        },
      },
      target: { type: 'dir', path: target },
      schedule: { cron: '0 3 * * *' },
      verify: { enabled: false },
      lock: lock(),
      http: { host: '127.0.0.1', port: 24751, token: TOKEN },
    });
    const repository = new Repository(new DirTarget(target));
    const first = await cli(['backup', '--config', file]);
    expect(first.code, first.err).toBe(0);
    const p0 = first.out.trim();
    const p0Contents = await bucketContents(gateway, bucket);
    const p0Tree = await describeTree(volume);
    const [p0Manifest] = await repository.listSnapshots({ signal });
    await seedBucket(bucket, 'new', 20, 16 * 1024);

    /** Starts a daemon, triggers a backup and waits until only the dump is left to do. */
    const interrupted = async (port: number) => {
      const config = writeConfig({ ...readConfig(file), http: { host: '127.0.0.1', port, token: TOKEN } });
      const daemon = await startDaemon(config, port);
      await writeFile(hold, '');
      const accepted = await call(daemon, 'POST', '/backups');
      expect(accepted.status).toBe(202);
      await until('buckets and volume stored', () =>
        Promise.resolve(daemon.lines.some((l) => l.msg === 'volume captured') ? true : undefined),
      );
      expect(await metric(daemon, 'deis_backup_in_progress', 'operation="backup"')).toBe(1);
      expect(await metric(daemon, 'deis_backup_lock_held', 'operation="backup"')).toBe(1);
      expect((await call(daemon, 'GET', `/backups/${String(accepted.body['id'])}`)).body['status']).toBe(
        'running',
      );
      return daemon;
    };

    // SIGTERM: the run aborts, the daemon says so and exits 0 in bounded time.
    const termed = await interrupted(24752);
    const term = await stopDaemon(termed, 'SIGTERM');
    expect(term.code).toBe(0);
    expect(term.ms).toBeLessThan(10_000);
    expect(termed.lines.map((l) => l.msg)).toContain('backup aborted: no restore point written');
    expect(termed.lines.some((l) => l.msg === 'restore point committed')).toBe(false);
    let scanned = await repository.scan({ signal });
    expect(scanned.snapshots.map((m) => m.id)).toEqual([p0]);
    expect(scanned.uncommitted).toHaveLength(1);

    // kill -9: nothing can be said, nothing is committed; the cluster lock stays until its TTL.
    const killed = await interrupted(24753);
    await stopDaemon(killed, 'SIGKILL');
    scanned = await repository.scan({ signal });
    expect(scanned.snapshots.map((m) => m.id)).toEqual([p0]);
    expect(scanned.uncommitted).toHaveLength(2);
    expect(await verifyAll(repository)).toEqual([p0]);
    await rm(hold, { force: true });
    // The killed run's dump was streaming into a temporary, which nothing removes while it could be
    // a live put; left for hours, it is a leftover that the next prune removes.
    const temporaries = (await filesUnder(target)).filter((f) => f.includes('.partial-'));
    expect(temporaries).toEqual([expect.stringMatching(/^snapshots\/[^/]+\/database\.sql\.gz\.partial-/)]);
    const hoursAgo = new Date(Date.now() - 2 * 3600_000);
    for (const temporary of temporaries) await utimes(join(target, temporary), hoursAgo, hoursAgo);

    // A new daemon tells the truth before it runs: one restore point, the last success is P0's.
    const daemon = await startDaemon(
      writeConfig({ ...readConfig(file), http: { host: '127.0.0.1', port: 24754, token: TOKEN } }),
      24754,
    );
    expect(await metric(daemon, 'deis_backup_restore_points')).toBe(1);
    expect(await metric(daemon, 'deis_backup_last_success_timestamp_seconds', 'source="all"')).toBe(
      Date.parse(p0Manifest?.finishedAt ?? '') / 1000,
    );
    const ready = await call(daemon, 'GET', '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body).toMatchObject({ ready: true, targetUp: true, lastSuccess: p0Manifest?.finishedAt });

    // Its backup waits out the dead holder's lock, then reuses every body the killed runs stored.
    const accepted = await call(daemon, 'POST', '/backups');
    const done = await finished(daemon, 'backups', String(accepted.body['id']));
    expect(done, JSON.stringify(done)).toMatchObject({ status: 'success' });
    const result = done['result'] as { id: string; sources: SourceResult[] };
    const source = result.sources.find((s) => s.id === `bucket:${bucket}`);
    expect(source?.counts).toMatchObject({
      objects: 30,
      unchanged: 10,
      resumed: 20,
      bytesRead: 0,
      failed: 0,
    });
    expect(daemon.lines.find((l) => l.msg === 'backup started')?.interrupted).toEqual(scanned.uncommitted);
    // Nothing stored twice: only the new index.
    expect(source?.counts.bytesStored).toBe(source?.artifacts[0]?.size);
    expect(await metric(daemon, 'deis_backup_restore_points')).toBe(2);
    expect(await metric(daemon, 'deis_backup_last_status', 'source="all"')).toBe(1);
    expect(await metric(daemon, 'deis_backup_in_progress', 'operation="backup"')).toBe(0);
    expect((await call(daemon, 'GET', '/readyz')).body['lastSuccess']).not.toBe(p0Manifest?.finishedAt);
    await stopDaemon(daemon, 'SIGTERM');

    expect(await verifyAll(repository)).toEqual([p0, result.id].sort());
    // The retention after the commit pruned the interrupted runs' folders, temporaries and all.
    expect((await repository.scan({ signal })).uncommitted).toEqual([]);
    expect((await filesUnder(target)).filter((f) => f.includes('.partial-'))).toEqual([]);
    const restored = await restoreOnce(file, p0, bucket);
    expect(restored.contents).toEqual(p0Contents);
    expect(restored.tree).toEqual(p0Tree);
  });

  it('SIGTERM and kill -9 of the daemon mid-restore: the point is unharmed, a second restore skips what is there', async () => {
    const OBJECTS = 300;
    const bucket = unique('frsrc');
    await seedBucket(bucket, 'obj', OBJECTS, 4 * 1024);
    const volume = tempDir('faults-rvolume');
    await seedVolume(volume);
    const target = tempDir('faults-rtarget');
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      sources: {
        buckets: { names: [bucket], concurrency: 1 },
        volume: { path: volume },
        database: { enabled: false },
      },
      target: { type: 'dir', path: target },
      schedule: { cron: '0 3 * * *' },
      verify: { enabled: false },
      lock: lock(),
    });
    const backup = await cli(['backup', '--config', file]);
    expect(backup.code, backup.err).toBe(0);
    const id = backup.out.trim();
    const repository = new Repository(new DirTarget(target));
    const contents = await bucketContents(gateway, bucket);
    const tree = await describeTree(volume);
    const daemonOn = (port: number) =>
      startDaemon(
        writeConfig({ ...readConfig(file), http: { host: '127.0.0.1', port, token: TOKEN } }),
        port,
      );
    const request = (into: string, volumeTo: string) => ({
      snapshot: id,
      only: ['buckets', 'volume'],
      buckets: { [bucket]: into },
      volumeTo,
      yes: true,
    });
    const count = async (b: string) => {
      const keys: string[] = [];
      for await (const item of gateway.listObjects(b, { signal, listVersion: 1 })) keys.push(item.key);
      return keys.length;
    };

    for (const [how, ports] of [
      ['SIGTERM', [24755, 24756]],
      ['SIGKILL', [24757, 24758]],
    ] as const) {
      const into = unique('frdst');
      const volumeTo = join(tempDir('faults-rdest'), 'store');
      const first = await daemonOn(ports[0]);
      const accepted = await call(first, 'POST', '/restores', request(into, volumeTo));
      expect(accepted.status).toBe(202);
      await until(
        'the restore half way through the bucket',
        async () => {
          const { body } = await call(first, 'GET', `/restores/${String(accepted.body['id'])}`);
          const progress = (body['progress'] as { progress?: { objects: number } } | undefined)?.progress;
          return (progress?.objects ?? 0) >= 30 ? true : undefined;
        },
        30_000,
      );
      expect(await metric(first, 'deis_backup_in_progress', 'operation="restore"')).toBe(1);
      const stopped = await stopDaemon(first, how);
      if (how === 'SIGTERM') {
        expect(stopped, first.stderr + JSON.stringify(first.lines.slice(-3))).toMatchObject({ code: 0 });
        expect(stopped.ms).toBeLessThan(10_000);
        const aborted = first.lines.find((l) => /^restore (aborted|failed)/.test(l.msg));
        expect(aborted, JSON.stringify(first.lines.slice(-5))).toMatchObject({
          level: 40,
          msg: 'restore aborted: what was restored stays; the same restore again skips it and finishes',
        });
      }
      const there = await count(into);
      // The stop must land half way for this to mean anything.
      expect(there).toBeGreaterThan(0);
      expect(there).toBeLessThan(OBJECTS);
      expect(await verifyAll(repository)).toEqual([id]);

      const second = await daemonOn(ports[1]);
      const again = await call(second, 'POST', '/restores', request(into, volumeTo));
      expect(again.status).toBe(202);
      const done = await finished(second, 'restores', String(again.body['id']));
      expect(done, JSON.stringify(done)).toMatchObject({ status: 'success' });
      const steps = (
        done['result'] as {
          steps: { step: string; status: string; counts: Counts & { skip: number; create: number } }[];
        }
      ).steps;
      expect(steps.map((s) => [s.step, s.status])).toEqual([
        ['buckets', 'success'],
        ['volume', 'success'],
      ]);
      expect(steps[0]?.counts).toMatchObject({
        objects: OBJECTS,
        skip: there,
        create: OBJECTS - there,
        failed: 0,
      });
      expect(await metric(second, 'deis_backup_restore_success_total')).toBe(1);
      expect(await metric(second, 'deis_backup_in_progress', 'operation="restore"')).toBe(0);
      await stopDaemon(second, 'SIGTERM');
      expect(await bucketContents(gateway, into)).toEqual(contents);
      expect(await describeTree(volumeTo)).toEqual(tree);
    }
  });

  /** A config backing up `bucket` alone into a directory target on a tmpfs of `sizeMiB`. */
  async function smallTarget(
    bucket: string,
    name: string,
    sizeMiB: number,
  ): Promise<{ target: string; file: string }> {
    const target = tempDir(name);
    await runChild('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m`, 'tmpfs', target]);
    mounts.push(target);
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      sources: {
        buckets: { names: [bucket], concurrency: 1 },
        volume: { enabled: false },
        database: { enabled: false },
      },
      target: { type: 'dir', path: target },
      lock: lock(),
    });
    return { target, file };
  }

  it('a directory target that runs out of space: failed, named, no temporaries; the next run reuses the bodies', async () => {
    const MIB = 1024 * 1024;
    const bucket = unique('fspace');
    await seedBucket(bucket, 'old', 2, MIB);
    const { target, file } = await smallTarget(bucket, 'faults-full', 8);
    const repository = new Repository(new DirTarget(target));
    const first = await cli(['backup', '--config', file]);
    expect(first.code, first.err).toBe(0);
    const p0 = first.out.trim();
    const p0Contents = await bucketContents(gateway, bucket);
    await seedBucket(bucket, 'new', 10, MIB);

    const full = await cli(['backup', '--config', file]);
    expect(full.code, full.err).toBe(1);
    expect(full.err).toMatch(
      new RegExp(
        `^bucket:${bucket} +failed\\n  error: put blobs/[0-9a-f]{2}/[0-9a-f]{64} to dir:${target}: ENOSPC: no space left on device`,
        'm',
      ),
    );
    expect(full.err).toMatch(/backup failed: no restore point written$/);
    const scanned = await repository.scan({ signal });
    expect(scanned.snapshots.map((m) => m.id)).toEqual([p0]);
    expect(scanned.uncommitted).toHaveLength(1);
    const left = await filesUnder(target);
    expect(left.filter((f) => f.includes('.partial-'))).toEqual([]);
    expect(left.filter((f) => f.endsWith('manifest.json'))).toEqual([`snapshots/${p0}/manifest.json`]);
    const blobsBefore = left.filter((f) => f.startsWith('blobs/')).length;
    // Some new bodies fitted before the target filled up; not all of them.
    expect(blobsBefore).toBeGreaterThan(2);
    expect(blobsBefore).toBeLessThan(12);
    expect(await verifyAll(repository)).toEqual([p0]);

    await runChild('mount', ['-o', 'remount,size=64m', target]);
    const next = await cli(['backup', '--config', file, '--json']);
    expect(next.code, next.err).toBe(0);
    const result = JSON.parse(next.out) as { id: string; sources: SourceResult[] };
    const reused = blobsBefore - 2;
    expect(result.sources[0]?.counts).toMatchObject({
      objects: 12,
      unchanged: 2,
      resumed: reused,
      bytesRead: (10 - reused) * MIB,
      failed: 0,
    });
    expect(result.sources[0]?.counts.bytesStored).toBe(
      (10 - reused) * MIB + (result.sources[0]?.artifacts[0]?.size ?? NaN),
    );
    expect(await verifyAll(repository)).toEqual([p0, result.id].sort());
    const restored = await restoreOnce(file, p0, bucket, 'buckets');
    expect(restored.contents).toEqual(p0Contents);
  });

  it('a directory target that fills up in the middle of a body: the target is named, not the gateway', async () => {
    // The failed write ends the gateway's body half read, which then reports its own cut
    // ("aborted"): the target's error must win over it.
    const bucket = unique('fspacemid');
    await seedBucket(bucket, 'big', 1, 24 * 1024 * 1024);
    const { target, file } = await smallTarget(bucket, 'faults-fullmid', 4);
    const run = await cli(['backup', '--config', file]);
    expect(run.code).toBe(1);
    expect(run.err).toMatch(
      new RegExp(
        `^bucket:${bucket} +failed\\n  error: put blobs/[0-9a-f]{2}/[0-9a-f]{64} to dir:${target}: ENOSPC: no space left on device, write\\nbackup failed: no restore point written$`,
      ),
    );
    expect((await filesUnder(target)).filter((f) => f.includes('.partial-'))).toEqual([]);
  });

  it("a directory target that fills up during a volume read over SSH: failed, and the host's tar stopped", async () => {
    // Bytes gzip cannot shrink, three times what the target holds.
    const volume = tempDir('faults-sshvol');
    for (let i = 0; i < 3; i++) await writeFile(join(volume, `part-${i}`), randomBytes(4 * 1024 * 1024));
    const target = tempDir('faults-sshfull');
    await runChild('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', target]);
    mounts.push(target);
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      ssh: stackSsh(stack),
      sources: {
        buckets: { enabled: false },
        volume: { path: volume, host: stack.sshHost },
        database: { enabled: false },
      },
      target: { type: 'dir', path: target },
      lock: lock(),
    });
    const run = await cli(['backup', '--config', file]);
    expect(run.code).toBe(1);
    expect(run.err).toMatch(/^volume +failed\n  error: put .*ENOSPC: no space left on device/m);
    // Nothing reads the host's tar any more: it is ended, not left waiting on its stdout.
    await until(
      'the host tar to end',
      async () => ((await processesNaming(volume)).length === 0 ? true : undefined),
      15_000,
    );
  });

  it('a volume file the backup user cannot read: partial, named, and everything else committed', async () => {
    const bucket = unique('fperm');
    await seedBucket(bucket, 'obj', 3, 1024);
    const volume = tempDir('faults-pvolume');
    await chmod(volume, 0o755);
    await mkdir(join(volume, 'logs'));
    await writeFile(join(volume, 'logs', 'app.log'), 'readable\n'.repeat(100));
    await writeFile(join(volume, 'private.key'), 'secret bytes\n');
    await mkdir(join(volume, 'sealed'));
    await writeFile(join(volume, 'sealed', 'inner.txt'), 'inside\n');
    await chmod(join(volume, 'sealed'), 0o700);
    await chmod(join(volume, 'logs', 'app.log'), 0o644);
    await chmod(join(volume, 'private.key'), 0o600);
    const target = tempDir('faults-ptarget');
    await chown(target, 65534, 65534);
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      sources: {
        buckets: { names: [bucket], concurrency: 1 },
        volume: { path: volume },
        database: { enabled: false },
      },
      target: { type: 'dir', path: target },
      lock: lock(),
    });
    await chmod(join(file, '..'), 0o755);
    await chmod(file, 0o644);
    const asNobody = () =>
      runChild('runuser', ['-u', 'nobody', '--', 'node', BIN, 'backup', '--config', file]);

    const run = await asNobody();
    expect(run.code, run.stderr).toBe(3);
    expect(run.stderr).toMatch(
      /^volume +partial +4 entries, 2 failed, .*\n  error: \.\/private\.key: cannot read \(EACCES\)\n  error: \.\/sealed\/: cannot list \(EACCES\)$/m,
    );
    expect(run.stderr).toMatch(/restore point \S+ committed to dir:\S+ \(partial\)$/m);
    const id = run.stdout.trim();
    const repository = new Repository(new DirTarget(target));
    const manifests = await repository.listSnapshots({ signal });
    expect(manifests.map((m) => [m.id, m.status])).toEqual([[id, 'partial']]);
    expect(manifests[0]?.sources.map((s) => [s.id, s.status])).toEqual([
      [`bucket:${bucket}`, 'success'],
      ['volume', 'partial'],
    ]);
    expect(await verifyAll(repository)).toEqual([id]);
    // Everything but what could not be read restores as it was; the sealed directory comes back empty.
    const tree = await describeTree(volume);
    const restored = await restoreOnce(file, id, bucket);
    const unread = new Set(['private.key', 'sealed/inner.txt']);
    const readable = Object.fromEntries(Object.entries(tree).filter(([path]) => !unread.has(path)));
    expect(restored.tree).toEqual(readable);
    expect(restored.contents).toEqual(await bucketContents(gateway, bucket));

    // Once readable, the next run is whole and reads no object again.
    await chmod(join(volume, 'private.key'), 0o644);
    await chmod(join(volume, 'sealed'), 0o755);
    const next = await asNobody();
    expect(next.code, next.stderr).toBe(0);
    expect(next.stderr).toMatch(
      new RegExp(`^bucket:${bucket} +success +3 objects, 3 unchanged, 0 vanished, 0 B read`, 'm'),
    );
    expect(next.stderr).toMatch(/^volume +success +6 entries/m);

    // A root it cannot list at all is no partial copy: the source fails and nothing is committed.
    await chmod(volume, 0o700);
    const sealed = await asNobody();
    expect(sealed.code, sealed.stderr).toBe(1);
    expect(sealed.stderr).toContain(
      `volume ${volume}: cannot list it (EACCES); run deis-backup as a user who can read the whole volume (root in the image)`,
    );
    expect((await repository.listSnapshots({ signal })).length).toBe(2);
  });
});

/** The config object a test wrote, to derive another from. */
function readConfig(file: string): Record<string, unknown> {
  return JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
}

/** Runs a command to its end; rejects on a non-zero exit unless the caller looks at the code. */
async function runChild(
  command: string,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const [code] = (await once(child, 'close')) as [number | null];
  if (command !== 'runuser' && code !== 0)
    throw new Error(`${command} ${args.join(' ')} exited ${String(code)}: ${stderr}`);
  return { code: code ?? -1, stdout, stderr };
}

/** The pids of this machine's processes whose command line names `text` (the remote sh names the volume). */
async function processesNaming(text: string): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.split('\0').some((arg) => arg.includes(text))) found.push(Number(entry));
  }
  return found;
}
