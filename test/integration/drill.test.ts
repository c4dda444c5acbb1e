// Restore drill against the real stack: a real backup is drilled into scratch buckets and a scratch
// directory; differences (tampered blobs, changes behind the restore's back, cut dumps) fail the drill
// naming each thing, and the scratch is always gone afterwards.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import {
  chmod,
  chown,
  lchown,
  lstat,
  lutimes,
  mkdir,
  readFile,
  rm,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { runDrill, type DrillReport } from '../../src/drill.js';
import { createLogger } from '../../src/log.js';
import type { IndexEntry, Manifest } from '../../src/repository/manifest.js';
import { Repository } from '../../src/repository/repository.js';
import type { RestoreDeps } from '../../src/restore.js';
import { createReporter, type Reporter } from '../../src/restore/report.js';
import { S3Client, type ListedObject } from '../../src/s3/client.js';
import { DirTarget } from '../../src/targets/dir.js';
import { createClusterEtcd, createRestoreGateway, sshTarget } from '../../src/wiring.js';
import {
  BASE_BACKUPS,
  DB_WAL_OBJECTS,
  IMAGES,
  ODD_KEYS,
  seedDbWal,
  seedOddKeys,
  seedRegistry,
  seedVolume,
} from '../fixtures/deis-sample.js';
import { gatewayOptions, stackDumpCommand, stackSsh } from '../fixtures/stack.js';
import { cli, describeWithStack, gatewayClient, tempDir, unique, writeConfig } from './helpers.js';

const signal = AbortSignal.timeout(600_000);
const SUFFIX = '-drill';

/** A gateway client whose listings wait for `gate`: set after the restore, it holds the comparison. */
class GatedClient extends S3Client {
  gate: Promise<void> | undefined;
  override async *listObjects(...args: Parameters<S3Client['listObjects']>): AsyncIterable<ListedObject> {
    if (this.gate) await this.gate;
    yield* super.listObjects(...args);
  }
}

/** A gateway client whose listings, once `stalled`, wait until their signal fires: a gateway gone quiet. */
class StallingClient extends S3Client {
  stalled = false;
  override async *listObjects(...args: Parameters<S3Client['listObjects']>): AsyncIterable<ListedObject> {
    if (this.stalled) {
      const stop = args[1].signal;
      await new Promise((_, reject) => {
        const fail = (): void => {
          reject(stop.reason as Error);
        };
        if (stop.aborted) fail();
        else stop.addEventListener('abort', fail, { once: true });
      });
    }
    yield* super.listObjects(...args);
  }
}

describeWithStack('drill', (stack) => {
  const wal = unique('wal');
  const registry = unique('registry');
  const volume = tempDir('volume');
  const target = tempDir('target');
  let gateway: S3Client;
  let snapshot: string;
  const closers: (() => void)[] = [];
  const resaved = join(tempDir('controller'), 'resaved');

  const configFile = writeConfig({
    etcd: { endpoints: [stack.etcdEndpoint] },
    ssh: stackSsh(stack),
    sources: {
      buckets: { names: [wal, registry], concurrency: 4 },
      volume: { path: volume },
      database: { command: stackDumpCommand(stack) },
    },
    target: { type: 'dir', path: target },
    // A Deis whose restore republishes state from the controller: a drill must never do that.
    restore: { deisVersion: 'v1.10.1', controllerHost: stack.sshHost, controllerCommand: `touch ${resaved}` },
  });

  /** Drills `id` (default: latest) of the repository in `from` into a fresh scratch directory. */
  const drill = async (
    opts: {
      from?: string;
      id?: string;
      directory?: string;
      client?: S3Client;
      reporter?: Reporter;
      signal?: AbortSignal;
      cleanupAfterAbortMs?: number;
    } = {},
  ): Promise<{ report: DrillReport; directory: string }> => {
    const config = loadConfig({ file: configFile, env: {} });
    const client = opts.client;
    const etcd = createClusterEtcd(config);
    const restoreGateway = createRestoreGateway(config, etcd, { signal });
    closers.push(() => {
      restoreGateway.close();
    });
    const deps: RestoreDeps = {
      config,
      repository: new Repository(new DirTarget(opts.from ?? target)),
      etcd,
      gateway: client
        ? () => Promise.resolve({ client, listVersion: 1, endpoint: stack.rgwEndpoint })
        : restoreGateway.get,
      sshTarget: (host) => sshTarget(config, host),
      reporter: opts.reporter ?? createReporter({ write: () => undefined }),
      log: createLogger({ level: 'silent' }),
    };
    const directory = opts.directory ?? tempDir('drill');
    const report = await runDrill(deps, {
      ...(opts.id === undefined ? {} : { snapshot: opts.id }),
      bucketSuffix: SUFFIX,
      directory,
      signal: opts.signal ?? signal,
      ...(opts.cleanupAfterAbortMs === undefined ? {} : { cleanupAfterAbortMs: opts.cleanupAfterAbortMs }),
    });
    return { report, directory };
  };

  /** Nothing of the drill is left: no scratch bucket, an empty drill directory. */
  const expectNoScratch = async (directory: string): Promise<void> => {
    for (const bucket of [wal, registry])
      expect(await gateway.bucketExists(`${bucket}${SUFFIX}`, { signal })).toBe(false);
    expect(readdirSync(directory)).toEqual([]);
  };

  /** The index entry of `key` in `bucket` of the restore point. */
  const indexEntry = (bucket: string, key: string): IndexEntry => {
    const text = execFileSync('zcat', [`${target}/snapshots/${snapshot}/bucket-${bucket}.jsonl.gz`], {
      encoding: 'utf8',
    });
    const entry = text
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as IndexEntry)
      .find((e) => e.key === key);
    if (!entry) throw new Error(`no index entry for ${key}`);
    return entry;
  };

  beforeAll(async () => {
    gateway = gatewayClient(stack);
    await gateway.createBucket(wal, { signal });
    await gateway.createBucket(registry, { signal });
    await seedDbWal(gateway, wal);
    await seedOddKeys(gateway, wal);
    await seedRegistry(gateway, registry, { bigLayers: false });
    await seedVolume(volume);
    const run = await cli(['backup', '--config', configFile]);
    expect(run.code).toBe(0);
    snapshot = run.out.trim();
  });
  afterAll(() => {
    for (const close of closers) close();
    gateway.close();
  });

  it('drills the latest restore point to success and leaves no scratch bucket or directory', async () => {
    const { report, directory } = await drill();
    expect(report).toMatchObject({ snapshot, status: 'success', cleanup: [] });
    expect(report.checks.map((c) => [c.step, c.status, c.errors])).toEqual([
      ['buckets', 'success', []],
      ['volume', 'success', []],
      ['database', 'success', []],
    ]);
    const objects = DB_WAL_OBJECTS + ODD_KEYS.length + 1 + 4 * IMAGES.length + 2 * 7;
    expect(report.checks[0]?.detail).toMatch(
      new RegExp(`^${objects} object\\(s\\) \\(.* MiB\\) identical in ${wal}-drill, ${registry}-drill$`),
    );
    expect(report.checks[1]?.detail).toMatch(/^9 entries \(.* MiB of files\) identical in /);
    await expectNoScratch(directory);
    // The stack's etcd says deis-database runs: scratch buckets keep the restore's refusal quiet.
    expect(existsSync(resaved)).toBe(false);
  });

  it('fails naming each difference made behind the restore, in the buckets and the directory', async () => {
    const client = new GatedClient(gatewayOptions(stack));
    closers.push(() => {
      client.close();
    });
    const directory = tempDir('drill');
    const root = join(directory, snapshot);
    const walScratch = `${wal}${SUFFIX}`;
    const registryScratch = `${registry}${SUFFIX}`;
    const image = IMAGES[2]?.id ?? '';
    const base = BASE_BACKUPS[0] ?? '';
    const tamper = async (): Promise<void> => {
      const put = (bucket: string, key: string, body: Buffer, contentType: string, metadata = {}) =>
        gateway.putObject(bucket, key, body, { signal, size: body.length, contentType, metadata });
      const json = await gateway.getObject(registryScratch, `registry/images/${image}/json`, { signal });
      let text = '';
      for await (const chunk of json?.body ?? []) text += (chunk as Buffer).toString();
      await put(
        registryScratch,
        `registry/images/${image}/json`,
        Buffer.from(text.replace('{', '[')),
        'application/octet-stream',
      );
      await put(registryScratch, 'stray', Buffer.from('not restored'), 'text/plain');
      await gateway.deleteObject(walScratch, 'wal_005/00000005.history.lzo', { signal });
      await put(
        walScratch,
        `basebackups_005/${base}/extended_version.txt`,
        Buffer.from('PostgreSQL 9.3.9 on x86_64-unknown-linux-gnu\n'),
        'text/x-other',
      );
      await put(
        walScratch,
        ODD_KEYS[0] ?? '',
        Buffer.from(`body of ${ODD_KEYS[0] ?? ''}\n`),
        'text/plain; charset=utf-8',
        {
          origin: 'changed',
          'mixed-case': 'Value With Spaces',
        },
      );
      // Each change keeps the mtimes the archive holds, so only the intended difference shows.
      const logs = join(root, 'logs');
      const logsTimes = await lstat(logs);
      await chown(join(logs, 'www.log'), 0, 0);
      await chmod(join(logs, 'www.log'), 0o600);
      const router = join(logs, 'deis-router.log');
      const routerTimes = await lstat(router);
      const bytes = await readFile(router);
      bytes.writeUInt8(bytes.readUInt8(10) ^ 0xff, 10);
      await writeFile(router, bytes);
      await utimes(router, routerTimes.atime, routerTimes.mtime);
      await rm(join(logs, 'current.log'));
      await symlink('deis-controller.log', join(logs, 'current.log'));
      await lchown(join(logs, 'current.log'), 1000, 1000);
      await lutimes(
        join(logs, 'current.log'),
        new Date('2015-08-04T18:04:05Z'),
        new Date('2015-08-04T18:04:05Z'),
      );
      await utimes(logs, logsTimes.atime, logsTimes.mtime);
      const empty = join(root, 'empty-dir');
      const emptyTimes = await lstat(empty);
      await writeFile(join(empty, 'extra.txt'), 'not in the archive\n');
      await utimes(empty, emptyTimes.atime, emptyTimes.mtime);
    };
    const quiet = createReporter({ write: () => undefined });
    const reporter: Reporter = {
      ...quiet,
      finished(step, status, detail) {
        quiet.finished(step, status, detail);
        if (step === 'volume') client.gate = tamper();
      },
    };
    const { report } = await drill({ client, reporter, directory });
    expect(report.status).toBe('failed');
    expect(report.cleanup).toEqual([]);
    const [buckets, volumeCheck, database] = report.checks;
    expect(buckets?.status).toBe('failed');
    expect([...(buckets?.errors ?? [])].sort()).toEqual(
      [
        `${registryScratch}/registry/images/${image}/json: sha256 differs`,
        `${registryScratch}/stray: not in the restore point`,
        `${walScratch}/wal_005/00000005.history.lzo: missing`,
        `${walScratch}/basebackups_005/${base}/extended_version.txt: content-type "text/x-other" differs from "text/plain"`,
        `${walScratch}/${ODD_KEYS[0] ?? ''}: metadata [["mixed-case","Value With Spaces"],["origin","changed"]] differs from [["mixed-case","Value With Spaces"],["origin","deis-backup-test"]]`,
      ].sort(),
    );
    expect(buckets?.detail).toBe('5 difference(s)');
    expect(volumeCheck?.status).toBe('failed');
    expect([...(volumeCheck?.errors ?? [])].sort()).toEqual(
      [
        `${root}/logs/www.log: uid 0 differs from 1000, gid 0 differs from 1000, mode 600 differs from 644`,
        `${root}/logs/deis-router.log: sha256 differs`,
        `${root}/logs/current.log: symlink target deis-controller.log differs from deis-router.log`,
        `${root}/empty-dir/extra.txt: not in the archive`,
      ].sort(),
    );
    expect(database?.status).toBe('success');
    await expectNoScratch(directory);
  });

  it('fails on a tampered blob (same size, one byte flipped), naming the object', async () => {
    const tampered = tempDir('tampered');
    execFileSync('cp', ['-a', `${target}/.`, tampered]);
    const key = `registry/images/${IMAGES[0]?.id ?? ''}/layer`;
    const { blob } = indexEntry(registry, key);
    const bytes = await readFile(join(tampered, blob));
    bytes.writeUInt8(bytes.readUInt8(100) ^ 0xff, 100);
    await writeFile(join(tampered, blob), bytes);
    const { report, directory } = await drill({ from: tampered });
    expect(report.status).toBe('failed');
    expect(report.checks[0]).toEqual({
      step: 'buckets',
      status: 'failed',
      detail: 'restore partial',
      errors: [
        `${registry}${SUFFIX}/${key}: body ${blob} does not match the sha256 in the manifest (damaged or tampered); not restored`,
      ],
    });
    expect(report.checks.slice(1).map((c) => c.status)).toEqual(['success', 'success']);
    expect(report.cleanup).toEqual([]);
    await expectNoScratch(directory);
  });

  it('empties a scratch bucket and directory left by a crashed drill, and still succeeds', async () => {
    const directory = tempDir('drill');
    const leftover = `${wal}${SUFFIX}`;
    await gateway.createBucket(leftover, { signal });
    await gateway.putObject(leftover, 'stray/from-last-week', Buffer.from('x'), { signal, size: 1 });
    // The same key as a restored object with other bytes: a restore without --overwrite keeps it.
    await gateway.putObject(leftover, 'wal_005/00000005.history.lzo', Buffer.from('stale'), {
      signal,
      size: 5,
    });
    await mkdir(join(directory, snapshot, 'logs'), { recursive: true });
    await writeFile(join(directory, snapshot, 'logs', 'www.log'), 'half extracted');
    // A crashed drill of another restore point, and something that is no scratch at all.
    const older = '20260101T030000Z-0a1b';
    await mkdir(join(directory, older, 'logs'), { recursive: true });
    await writeFile(join(directory, older, 'logs', 'www.log'), 'half extracted');
    await writeFile(join(directory, 'not-scratch'), 'kept');
    const { report } = await drill({ id: snapshot, directory });
    expect(readdirSync(directory)).toEqual(['not-scratch']);
    await rm(join(directory, 'not-scratch'));
    expect(report.checks.flatMap((c) => c.errors)).toEqual([]);
    expect(report).toMatchObject({ snapshot, status: 'success', cleanup: [] });
    await expectNoScratch(directory);
  });

  it('removes the scratch also when the drill is aborted midway', async () => {
    const directory = tempDir('drill');
    const controller = new AbortController();
    const quiet = createReporter({ write: () => undefined });
    const reporter: Reporter = {
      ...quiet,
      finished(step, status, detail) {
        quiet.finished(step, status, detail);
        if (step === 'buckets') controller.abort();
      },
    };
    await expect(drill({ directory, reporter, signal: controller.signal })).rejects.toThrow(
      'This operation was aborted',
    );
    await expectNoScratch(directory);
  });

  it('gives up removing the scratch soon after an abort, and the next drill empties it', async () => {
    // A daemon's shutdown waits 30 s for the drill to end and release the cluster lock: a cleanup
    // on its own 10-minute deadline against a gateway gone quiet outlived it.
    const directory = tempDir('drill');
    const controller = new AbortController();
    const client = new StallingClient(gatewayOptions(stack));
    closers.push(() => {
      client.close();
    });
    const quiet = createReporter({ write: () => undefined });
    const reporter: Reporter = {
      ...quiet,
      finished(step, status, detail) {
        quiet.finished(step, status, detail);
        if (step !== 'buckets') return;
        client.stalled = true;
        controller.abort();
      },
    };
    await expect(
      drill({ directory, reporter, client, signal: controller.signal, cleanupAfterAbortMs: 500 }),
    ).rejects.toThrow('This operation was aborted');
    for (const bucket of [wal, registry])
      expect(await gateway.bucketExists(`${bucket}${SUFFIX}`, { signal })).toBe(true);

    const { report } = await drill({ directory });
    expect(report).toMatchObject({ status: 'success', cleanup: [] });
    await expectNoScratch(directory);
  });

  it('fails on a dump that was cut short or damaged, naming the artifact', async () => {
    const dump = await readFile(join(target, 'snapshots', snapshot, 'database.sql.gz'));
    const sql = gunzipSync(dump);
    expect(sql.toString('utf8')).toMatch(/-- PostgreSQL database cluster dump complete\n--\n\n$/);
    const manifest = JSON.parse(
      await readFile(join(target, 'snapshots', snapshot, 'manifest.json'), 'utf8'),
    ) as Manifest;
    const database = manifest.sources.find((s) => s.kind === 'database');
    if (!database) throw new Error('no database source');
    /**
     * A restore point holding only `body` as its dump, committed with a manifest that records
     * `recorded` (the body itself, unless the bytes were damaged after the commit).
     */
    const craft = async (id: string, body: Buffer, recorded = body): Promise<string> => {
      const dir = tempDir('crafted');
      const key = `snapshots/${id}/database.sql.gz`;
      await mkdir(join(dir, 'snapshots', id), { recursive: true });
      await writeFile(join(dir, key), body);
      const artifact = {
        name: 'database.sql.gz',
        key,
        size: recorded.length,
        sha256: createHash('sha256').update(recorded).digest('hex'),
      };
      const crafted: Manifest = { ...manifest, id, sources: [{ ...database, artifacts: [artifact] }] };
      await writeFile(join(dir, 'snapshots', id, 'manifest.json'), JSON.stringify(crafted));
      return dir;
    };
    // pg_dumpall cut off mid-stream (the connection dropped) yet committed: a gzip that ends cleanly.
    const cut = gzipSync(sql.subarray(0, Math.floor(sql.length * 0.6)));
    const cutId = '20200101T000000Z-0c17';
    const short = await drill({ from: await craft(cutId, cut) });
    expect(short.report.status).toBe('failed');
    expect(short.report.checks.map((c) => [c.step, c.status])).toEqual([
      ['buckets', 'skipped'],
      ['volume', 'skipped'],
      ['database', 'failed'],
    ]);
    expect(short.report.checks[2]?.errors).toEqual([
      `snapshots/${cutId}/database.sql.gz: the SQL (${Math.floor(sql.length * 0.6)} bytes) does not end with pg_dumpall's "-- PostgreSQL database cluster dump complete" line: the dump was cut short`,
    ]);
    const damaged = Buffer.from(dump);
    damaged.writeUInt8(damaged.readUInt8(damaged.length - 12) ^ 0xff, damaged.length - 12);
    const damagedId = '20200101T000000Z-0d4a';
    const bad = await drill({ from: await craft(damagedId, damaged, dump) });
    expect(bad.report.status).toBe('failed');
    expect(bad.report.checks[2]?.errors).toEqual([
      expect.stringContaining(`snapshots/${damagedId}/database.sql.gz in dir:`),
    ]);
    expect(bad.report.checks[2]?.errors[0]).toContain('does not match the manifest');
    expect(existsSync(join(bad.directory, damagedId))).toBe(false);
  });
});
