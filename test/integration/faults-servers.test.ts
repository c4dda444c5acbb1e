// Servers failing mid-run, for real: radosgw behind a proxy that dies mid-read or mid-upload, sshd
// behind one that dies mid-dump and mid-volume, a PostgreSQL of our own stopped mid-dump. Each run
// fails naming the cause, lists no new restore point, leaves the older ones verifying and restoring,
// and the next run succeeds reusing what was stored.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { startDaemon } from '../../src/daemon.js';
import { createLogger } from '../../src/log.js';
import { manifestKey } from '../../src/repository/layout.js';
import type { Manifest } from '../../src/repository/manifest.js';
import { Repository } from '../../src/repository/repository.js';
import type { RestoreReport } from '../../src/restore.js';
import { applyBucket, isSentinel, planBucket } from '../../src/restore/buckets.js';
import { EntryList } from '../../src/restore/entry-list.js';
import { S3Client } from '../../src/s3/client.js';
import { DirTarget } from '../../src/targets/dir.js';
import { bytes, seedDbWal, seedVolume } from '../fixtures/deis-sample.js';
import { startFaultProxy, type FaultProxy } from '../fixtures/fault-proxy.js';
import { stackS3Target, stackS3TargetConfig } from '../fixtures/s3-target.js';
import { startPrivatePostgres, type PrivatePostgres } from '../fixtures/private-postgres.js';
import { gatewayOptions, stackSsh } from '../fixtures/stack.js';
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
} from './helpers.js';

const signal = AbortSignal.timeout(300_000);
const MiB = 1024 * 1024;
const TOKEN = 'faults-token-0123456789abcdef';

/**
 * A load command that keeps the SQL it is fed in a file and, as psql would, prints what the `\echo`
 * line the restore appends to the dump says.
 */
const loadInto = (file: string): string => `tee ${file} | sed -n 's/^\\\\echo //p'`;

/** The file holds a whole pg_dumpall dump with the restore's `\echo` line after it. */
async function expectLoaded(file: string): Promise<void> {
  const sql = await readFile(file, 'utf8');
  expect(sql.includes('COPY public.filler')).toBe(true);
  expect(sql).toMatch(
    /\n-- PostgreSQL database cluster dump complete\n--\n+\\echo deis-backup-end-of-dump-[0-9a-f]{16}\n$/,
  );
}

/** What `backup --json` prints. */
interface BackupJson {
  id?: string;
  status: string;
  sources: {
    id: string;
    status: string;
    errors: string[];
    counts: { objects: number; unchanged: number; resumed?: number; bytesRead: number; bytesStored: number };
    artifacts: { size: number }[];
  }[];
}

describeWithStack('servers failing mid-run', (stack) => {
  const rgwPort = Number(new URL(stack.rgwEndpoint).port);
  const secrets = [stack.gatewaySecretKey, stack.targetSecretKey, stack.gatewayAccessKey, TOKEN];
  let gateway: S3Client;
  let pg: PrivatePostgres;
  const proxies: FaultProxy[] = [];
  /** A fault proxy that is shut when the file ends. */
  const proxyTo = async (port: number) => {
    const proxy = await startFaultProxy(port);
    proxies.push(proxy);
    return proxy;
  };

  /** The `ssh` section that reaches the stack's sshd through `proxy` (known_hosts names its port). */
  const sshThrough = async (proxy: FaultProxy) => {
    const knownHostsFile = join(tempDir('known'), 'known_hosts');
    const known = await readFile(stack.sshKnownHosts, 'utf8');
    await writeFile(
      knownHostsFile,
      known.replace(`[127.0.0.1]:${stack.sshPort}`, `[127.0.0.1]:${proxy.port}`),
    );
    return { ...stackSsh(stack), port: proxy.port, knownHostsFile };
  };

  /** A config that backs up only `bucket`, one object at a time, from the gateway at `endpoint`. */
  const bucketConfig = (bucket: string, endpoint: string, target: Record<string, unknown>) =>
    writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      gateway: { endpoint, accessKey: stack.gatewayAccessKey, secretKey: stack.gatewaySecretKey },
      sources: {
        buckets: { names: [bucket], concurrency: 1 },
        volume: { enabled: false },
        database: { enabled: false },
      },
      target,
    });
  /** A backup through the CLI; never leaks a key. */
  const backup = async (file: string, ...args: string[]) => {
    const run = await cli(['backup', '--config', file, ...args]);
    for (const secret of secrets) expect(run.out + run.err).not.toContain(secret);
    return run;
  };
  /** The next run, as JSON: must succeed. */
  const backupJson = async (file: string) => {
    const run = await backup(file, '--json');
    expect(run.code, run.err).toBe(0);
    return JSON.parse(run.out) as BackupJson;
  };
  const snapshotIds = async (file: string) => {
    const run = await cli(['snapshots', '--json', '--config', file]);
    expect(run.code, run.err).toBe(0);
    return (JSON.parse(run.out) as { id: string }[]).map((s) => s.id);
  };
  /** No new restore point, and every older one still verifies byte for byte. */
  const expectOlderIntact = async (file: string, ids: string[]) => {
    expect(await snapshotIds(file)).toEqual(ids);
    const verify = await cli(['verify', '--all', '--read-data', '--json', '--config', file]);
    expect(verify.code, verify.out + verify.err).toBe(0);
    const report = JSON.parse(verify.out) as { status: string; snapshots: { id: string; status: string }[] };
    expect(report.status).toBe('ok');
    expect(report.snapshots.map((s) => [s.id, s.status])).toEqual(ids.map((id) => [id, 'ok']));
  };
  const restore = async (file: string, args: string[]) => {
    const run = await cli(['restore', '--config', file, '--yes', '--json', ...args]);
    expect(run.code, run.out + run.err).toBe(0);
  };
  const putObject = (bucket: string, key: string, body: Buffer) =>
    gateway.putObject(bucket, key, body, {
      signal,
      size: body.length,
      contentType: 'application/octet-stream',
    });

  beforeAll(async () => {
    gateway = gatewayClient(stack);
    pg = await startPrivatePostgres();
    pg.psql('create database faults');
    // About 16 MB of dump: long enough to cut over SSH mid-stream.
    pg.psql(
      "create table filler as select g, md5(g::text) as h, repeat('x', 40) as pad from generate_series(1, 200000) g",
      'faults',
    );
  });
  afterAll(async () => {
    gateway.close();
    pg.destroy();
    for (const proxy of proxies) await proxy.cut();
  });

  it('fails when the gateway stops mid-read, and the next run reuses the bodies already stored', async () => {
    const bucket = unique('fgw');
    await gateway.createBucket(bucket, { signal });
    for (let i = 0; i < 4; i++) await putObject(bucket, `old/${i}`, bytes(`old-${i}`, 10_000));
    const atFirst = await bucketContents(gateway, bucket);
    const proxy = await proxyTo(rgwPort);
    const endpoint = `http://127.0.0.1:${proxy.port}`;
    const file = bucketConfig(bucket, endpoint, { type: 'dir', path: tempDir('target') });
    const first = await backup(file);
    expect(first.code, first.err).toBe(0);
    const older = [first.out.trim()];

    // Keys in order: four bodies read whole, the big one cut in the middle, two never reached.
    for (let i = 0; i < 4; i++) await putObject(bucket, `new/a-${i}`, bytes(`new-${i}`, MiB));
    await putObject(bucket, 'new/m-big', bytes('big', 24 * MiB));
    for (let i = 0; i < 2; i++) await putObject(bucket, `new/z-${i}`, bytes(`z-${i}`, 1000));
    const cutting = proxy.cutAfter('down', 12 * MiB);
    const run = await backup(file);
    await cutting;
    expect(run.code).toBe(1);
    expect(run.out).toBe('');
    expect(run.err).toMatch(
      new RegExp(
        `^bucket:${bucket}  failed\n  error: bucket ${bucket}: cannot reach gateway ${endpoint} \\(ECONNREFUSED\\); check gateway\\.endpoint or /deis/store/gateway/host and port in etcd: .*\nbackup failed: no restore point written$`,
      ),
    );

    await proxy.open();
    await expectOlderIntact(file, older);
    const fresh = unique('fgw-back');
    await restore(file, [older[0] ?? '', '--only', 'buckets', '--bucket', `${bucket}=${fresh}`]);
    expect(await bucketContents(gateway, fresh)).toEqual(atFirst);

    const next = await backupJson(file);
    expect(next.status).toBe('success');
    expect(next.sources[0]?.counts).toMatchObject({
      objects: 11,
      unchanged: 4,
      resumed: 4,
      bytesRead: 24 * MiB + 2000,
    });
    expect(await snapshotIds(file)).toEqual([...older, next.id]);
  });

  /** A config like bucketConfig's, through `endpoint`, with a short gateway.timeoutMs; a string target is a directory. */
  const stallConfig = (
    bucket: string | string[],
    endpoint: string,
    target: string | Record<string, unknown>,
    gatewayTimeoutMs = 500,
  ) =>
    writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      gateway: {
        endpoint,
        accessKey: stack.gatewayAccessKey,
        secretKey: stack.gatewaySecretKey,
        timeoutMs: gatewayTimeoutMs,
      },
      sources: {
        buckets: { names: [bucket].flat(), concurrency: 1 },
        volume: { enabled: false },
        database: { enabled: false },
      },
      target: typeof target === 'string' ? { type: 'dir', path: target } : target,
    });
  /** The test stack's S3 target under `prefix`, reached through `proxy`. */
  const s3TargetVia = (proxy: FaultProxy, prefix: string, extra: Record<string, unknown> = {}) =>
    s3TargetAt(`http://127.0.0.1:${proxy.port}`, prefix, extra);
  /** The test stack's S3 target under `prefix`, at `endpoint`. */
  const s3TargetAt = (endpoint: string, prefix: string, extra: Record<string, unknown> = {}) =>
    stackS3TargetConfig(stack, endpoint, prefix, extra);
  /**
   * Runs a restore that a stall stops: exit 1, `message`, no key printed. Then, with the proxy open
   * again, the same restore completes it.
   */
  const stoppedThenCompleted = async (
    argv: string[],
    proxy: FaultProxy,
    stalling: Promise<void>,
    message: RegExp,
    check: { bucket: string; want: Awaited<ReturnType<typeof bucketContents>> },
  ) => {
    const run = await cli(argv);
    await stalling;
    expect(run.code, run.out + run.err).toBe(1);
    for (const secret of secrets) expect(run.out + run.err).not.toContain(secret);
    expect(run.out + run.err).toMatch(message);
    await proxy.cut();
    await proxy.open();
    const again = await cli(argv);
    expect(again.code, again.out + again.err).toBe(0);
    expect(await bucketContents(gateway, check.bucket)).toEqual(check.want);
  };

  it('fails within gateway.timeoutMs when the gateway stops answering mid-read, naming the fix', async () => {
    const bucket = unique('fstall');
    await gateway.createBucket(bucket, { signal });
    await putObject(bucket, 'a-big', bytes('big', 24 * MiB));
    await putObject(bucket, 'z-small', bytes('z', 10_000));
    const proxy = await proxyTo(rgwPort);
    const endpoint = `http://127.0.0.1:${proxy.port}`;
    const file = stallConfig(bucket, endpoint, tempDir('target'));
    const stalling = proxy.stallAfter('down', 8 * MiB);
    const run = await backup(file);
    await stalling;
    expect(run.code).toBe(1);
    expect(run.out).toBe('');
    // a-big's body stops mid-way, then z-small gets no answer at all: the source fails.
    expect(run.err).toBe(
      `bucket:${bucket}  failed\n  error: bucket ${bucket}: gateway ${endpoint} stopped answering (GET 127.0.0.1:${proxy.port}: nothing sent or received for 0.5 s); check the store's health (a full Ceph cluster blocks requests), or raise gateway.timeoutMs\nbackup failed: no restore point written`,
    );
    expect(await snapshotIds(file)).toEqual([]);
  });

  it('fails a GET within gateway.timeoutMs when the gateway stops after a slow reader caught up', async () => {
    const bucket = unique('fslowr');
    await gateway.createBucket(bucket, { signal });
    await putObject(bucket, 'big', bytes('slow-big', 24 * MiB));
    const proxy = await proxyTo(rgwPort);
    const client = new S3Client({
      ...gatewayOptions(stack, 'v2'),
      endpoint: `http://127.0.0.1:${proxy.port}`,
      timeoutMs: 300,
    });
    const stalling = proxy.stallAfter('down', 8 * MiB);
    // Three timeouts pass with bytes waiting unread: the reader is the slow side, so each only
    // waits again. Then the gateway stops, and the next timeout fails the body.
    const got = await client.getObject(bucket, 'big', { signal });
    await new Promise((resolve) => setTimeout(resolve, 1000));
    let read = 0;
    const reading = (async () => {
      for await (const chunk of got?.body ?? []) read += (chunk as Buffer).length;
    })();
    await expect(reading).rejects.toMatchObject({
      s3Code: 'RequestTimeout',
      message: `GET 127.0.0.1:${proxy.port}: nothing sent or received for 0.3 s`,
    });
    await stalling;
    expect(read).toBeGreaterThan(MiB);
    expect(read).toBeLessThan(24 * MiB);
    client.close();
  });

  it('stops a restore when the gateway stops taking writes, and a second restore completes it', async () => {
    const bucket = unique('fstall-src');
    await gateway.createBucket(bucket, { signal });
    for (let i = 0; i < 3; i++) await putObject(bucket, `obj/${i}`, bytes(`s-${i}`, 3 * MiB));
    const want = await bucketContents(gateway, bucket);
    const target = tempDir('target');
    const point = await backupJson(stallConfig(bucket, stack.rgwEndpoint, target));
    const proxy = await proxyTo(rgwPort);
    const endpoint = `http://127.0.0.1:${proxy.port}`;
    const file = stallConfig(bucket, endpoint, target);
    const fresh = unique('fstall-back');
    const args = ['restore', point.id ?? '', '--config', file, '--only', 'buckets'];
    const into = ['--bucket', `${bucket}=${fresh}`, '--yes'];
    // The bucket is made and one body is on its way when the gateway stops reading, as a full
    // Ceph cluster does.
    await stoppedThenCompleted(
      [...args, ...into],
      proxy,
      proxy.stallAfter('up', 4 * MiB),
      new RegExp(
        `${fresh}: gateway ${endpoint} stopped the restore \\((PUT|POST) 127\\.0\\.0\\.1:${proxy.port}: nothing sent or received for 0\\.5 s\\); check the store's health \\(a full Ceph cluster blocks writes\\) and restore again: objects already there are skipped`,
      ),
      { bucket: fresh, want },
    );
  });

  it('keeps the buckets restored before a gateway outage in the report of the failed step', async () => {
    const first = unique('fpart-a');
    const second = unique('fpart-b');
    for (const bucket of [first, second]) await gateway.createBucket(bucket, { signal });
    await putObject(first, 'one', bytes('one', 10_000));
    await putObject(first, 'two', bytes('two', 20_000));
    for (let i = 0; i < 3; i++) await putObject(second, `obj/${i}`, bytes(`p-${i}`, 3 * MiB));
    const target = tempDir('target');
    const point = await backupJson(stallConfig([first, second], stack.rgwEndpoint, target));
    const proxy = await proxyTo(rgwPort);
    const file = stallConfig([first, second], `http://127.0.0.1:${proxy.port}`, target);
    const [toFirst, toSecond] = [unique('fpart-a-back'), unique('fpart-b-back')];
    // The first bucket's 30 kB go through; the gateway stops taking writes in the second's bodies.
    const stalling = proxy.stallAfter('up', 4 * MiB);
    const run = await cli([
      'restore',
      point.id ?? '',
      '--config',
      file,
      '--only',
      'buckets',
      '--bucket',
      `${first}=${toFirst}`,
      '--bucket',
      `${second}=${toSecond}`,
      '--yes',
      '--json',
    ]);
    await stalling;
    expect(run.code, run.err).toBe(1);
    const report = JSON.parse(run.out) as RestoreReport;
    const step = report.steps.find((s) => s.step === 'buckets');
    expect(step?.status).toBe('failed');
    expect(step?.errors).toEqual([
      expect.stringContaining(`${toSecond}: gateway http://127.0.0.1:${proxy.port} stopped the restore`),
    ]);
    // What the first bucket holds now, not the plan: the second, cut off, is not listed.
    expect(step?.buckets).toEqual([
      {
        source: first,
        destination: toFirst,
        createBucket: true,
        counts: expect.objectContaining({ objects: 2, create: 2, failed: 0, bytes: 30_000 }) as unknown,
      },
    ]);
    expect(step?.counts).toMatchObject({ objects: 2, create: 2, failed: 0, bytes: 30_000 });
    await proxy.cut();
    expect(await bucketContents(gateway, toFirst)).toEqual(await bucketContents(gateway, first));
  });

  it('stops a restore when the gateway refuses a WAL-E sentinel, though it is back for the listing', async () => {
    const bucket = unique('fsent');
    await gateway.createBucket(bucket, { signal });
    await seedDbWal(gateway, bucket);
    const target = tempDir('target');
    const point = await backupJson(bucketConfig(bucket, stack.rgwEndpoint, { type: 'dir', path: target }));
    const repository = new Repository(new DirTarget(target));
    const manifest = await repository.readManifest(point.id ?? '', { signal });
    const index = manifest.sources[0]?.artifacts[0];
    if (!index) throw new Error('no index');
    const entries = new EntryList();
    for await (const entry of repository.readIndex(index, { signal })) entries.push(entry);
    const proxy = await proxyTo(rgwPort);
    const endpoint = `http://127.0.0.1:${proxy.port}`;
    // The gateway is gone for the oldest sentinel's PUT only, a blip the listing after it never sees.
    let blinked = false;
    class BlinkingGateway extends S3Client {
      override async putObject(...args: Parameters<S3Client['putObject']>): Promise<string> {
        if (blinked || !isSentinel(args[1])) return super.putObject(...args);
        blinked = true;
        await proxy.cut();
        // Let the client see its pooled connections close, so the PUT connects afresh and is refused.
        await new Promise((resolve) => setTimeout(resolve, 200));
        try {
          return await super.putObject(...args);
        } finally {
          await proxy.open();
        }
      }
    }
    const client = new BlinkingGateway({ ...gatewayOptions(stack, 'v2'), endpoint });
    const fresh = unique('fsent-back');
    const plan = await planBucket(
      client,
      {
        source: bucket,
        destination: fresh,
        entries,
        overwrite: false,
        listVersion: 2,
        blobs: repository.target,
      },
      { signal },
    );
    const quiet = {
      started: () => undefined,
      finished: () => undefined,
      progress: () => undefined,
      warn: () => undefined,
    };
    const applying = applyBucket(client, repository.target, plan, {
      signal,
      concurrency: 2,
      listVersion: 2,
      reporter: quiet,
      progress: { objects: 0, bytes: 0, totalObjects: 0, totalBytes: 0 },
    });
    await expect(applying).rejects.toMatchObject({
      code: 'ERR_GATEWAY',
      message: expect.stringMatching(
        new RegExp(
          `^${fresh}: gateway ${endpoint} stopped the restore \\(.*ECONNREFUSED.*\\); check the store's health`,
        ),
      ) as unknown,
    });
    expect(blinked).toBe(true);
    client.close();
  });

  it('stops a restore when the S3 target stops sending, naming the target, not the gateway', async () => {
    const bucket = unique('ftstall');
    await gateway.createBucket(bucket, { signal });
    for (let i = 0; i < 3; i++) await putObject(bucket, `obj/${i}`, bytes(`t-${i}`, 3 * MiB));
    const want = await bucketContents(gateway, bucket);
    const proxy = await proxyTo(rgwPort);
    const prefix = unique('ftstall');
    const where = `s3://${stack.targetBucket}/${prefix}`;
    const file = stallConfig(bucket, stack.rgwEndpoint, s3TargetVia(proxy, prefix));
    const point = await backupJson(file);
    const fresh = unique('ftstall-back');
    const host = new URL(stack.rgwEndpoint).host.replace(/\./g, '\\.');
    // The first body comes whole, the second stops a third of the way in; the gateway is fine.
    await stoppedThenCompleted(
      [
        'restore',
        point.id ?? '',
        '--config',
        file,
        '--only',
        'buckets',
        '--bucket',
        `${bucket}=${fresh}`,
        '--yes',
      ],
      proxy,
      proxy.stallAfter('down', 4 * MiB),
      new RegExp(
        `${fresh}: target ${where} stopped the restore \\(read blobs/[0-9a-f]{2}/[0-9a-f]{64} from ${where}: PUT ${host}: the body to send gave nothing for 0\\.5 s\\); check the target and restore again: objects already there are skipped`,
      ),
      { bucket: fresh, want },
    );
  });

  it('is partial when the S3 target drops one body mid-restore, naming the target and the key', async () => {
    const bucket = unique('ftcut');
    await gateway.createBucket(bucket, { signal });
    for (let i = 0; i < 3; i++) await putObject(bucket, `obj/${i}`, bytes(`c-${i}`, 3 * MiB));
    const proxy = await proxyTo(rgwPort);
    const prefix = unique('ftcut');
    const where = `s3://${stack.targetBucket}/${prefix}`;
    const file = bucketConfig(bucket, stack.rgwEndpoint, s3TargetVia(proxy, prefix));
    const point = await backupJson(file);
    const fresh = unique('ftcut-back');
    const cutting = proxy.cutAfter('down', 4 * MiB, { keepListening: true });
    const run = await cli([
      'restore',
      point.id ?? '',
      '--config',
      file,
      '--only',
      'buckets',
      '--bucket',
      `${bucket}=${fresh}`,
      '--yes',
    ]);
    await cutting;
    expect(run.code, run.out + run.err).toBe(3);
    expect(run.out + run.err).toMatch(
      new RegExp(`${fresh}/obj/1: read blobs/[0-9a-f]{2}/[0-9a-f]{64} from ${where}: (aborted|ECONNRESET)`),
    );
    const want = await bucketContents(gateway, bucket);
    want.delete('obj/1');
    expect(await bucketContents(gateway, fresh)).toEqual(want);
  });

  it('is partial when the gateway drops one transfer but stays up, naming the gateway and the key', async () => {
    const bucket = unique('fgwp');
    await gateway.createBucket(bucket, { signal });
    await putObject(bucket, 'a-small', bytes('a', 10_000));
    await putObject(bucket, 'm-big', bytes('big', 24 * MiB));
    await putObject(bucket, 'z-small', bytes('z', 10_000));
    const proxy = await proxyTo(rgwPort);
    const endpoint = `http://127.0.0.1:${proxy.port}`;
    const file = bucketConfig(bucket, endpoint, { type: 'dir', path: tempDir('target') });
    const cutting = proxy.cutAfter('down', 8 * MiB, { keepListening: true });
    const run = await backup(file);
    await cutting;
    expect(run.code).toBe(3);
    expect(run.err).toMatch(
      new RegExp(
        `^bucket:${bucket}  partial  2 objects, 0 unchanged, 0 vanished, 1 failed, .*\n  error: m-big: read from gateway ${endpoint} cut short \\(ECONNRESET\\)`,
      ),
    );
    const partial = run.out.trim();
    expect(await snapshotIds(file)).toEqual([partial]);
    const next = await backupJson(file);
    expect(next.status).toBe('success');
    expect(next.sources[0]?.counts).toMatchObject({ objects: 3, unchanged: 2, bytesRead: 24 * MiB });
  });

  it('fails when the S3 target stops mid-upload, and the next run reuses the blobs already stored', async () => {
    const bucket = unique('ftg');
    await gateway.createBucket(bucket, { signal });
    for (let i = 0; i < 4; i++) await putObject(bucket, `old/${i}`, bytes(`old-${i}`, 10_000));
    const atFirst = await bucketContents(gateway, bucket);
    const proxy = await proxyTo(rgwPort);
    const prefix = unique('faults');
    const file = bucketConfig(bucket, stack.rgwEndpoint, s3TargetVia(proxy, prefix, { partSizeMiB: 5 }));
    const first = await backup(file);
    expect(first.code, first.err).toBe(0);
    const older = [first.out.trim()];

    for (let i = 0; i < 4; i++) await putObject(bucket, `new/a-${i}`, bytes(`new-${i}`, MiB));
    await putObject(bucket, 'new/m-big', bytes('big', 12 * MiB));
    await putObject(bucket, 'new/z-0', bytes('z-0', 1000));
    // Four bodies uploaded whole, then the big one (a multipart upload) cut in its second part.
    const cutting = proxy.cutAfter('up', 4 * MiB + 7 * MiB);
    const run = await backup(file);
    await cutting;
    expect(run.code).toBe(1);
    expect(run.out).toBe('');
    expect(run.err).toMatch(
      new RegExp(
        `^bucket:${bucket}  failed\n  error: put blobs/[0-9a-f]{2}/[0-9a-f]{64} in s3://${stack.targetBucket}/${prefix}: (ECONNRESET|EPIPE); check target\\.endpoint.*\nbackup failed: no restore point written$`,
      ),
    );

    await proxy.open();
    await expectOlderIntact(file, older);
    const fresh = unique('ftg-back');
    await restore(file, [older[0] ?? '', '--only', 'buckets', '--bucket', `${bucket}=${fresh}`]);
    expect(await bucketContents(gateway, fresh)).toEqual(atFirst);

    const next = await backupJson(file);
    expect(next.status).toBe('success');
    expect(next.sources[0]?.counts).toMatchObject({ objects: 10, unchanged: 4, resumed: 4 });
    expect(next.sources[0]?.counts.bytesStored).toBe(
      12 * MiB + 1000 + (next.sources[0]?.artifacts[0]?.size ?? 0),
    );
  });

  it('fails within target.timeoutMs when the S3 target stops taking an upload, naming the fix', async () => {
    const bucket = unique('ftslow');
    await gateway.createBucket(bucket, { signal });
    await putObject(bucket, 'big', bytes('ftslow-big', 24 * MiB));
    const proxy = await proxyTo(rgwPort);
    const prefix = unique('faults');
    // Parts of 5 MiB: the put has not read the whole body when the upload stalls, so the failed put
    // ends the gateway's body mid-way, which must not be reported as the gateway cutting it short.
    const file = bucketConfig(
      bucket,
      stack.rgwEndpoint,
      s3TargetVia(proxy, prefix, { timeoutMs: 500, partSizeMiB: 5 }),
    );
    // The gateway is fine and waits on its slow reader: only the target's own timeout can end this.
    const stalling = proxy.stallAfter('up', 2 * MiB);
    const run = await backup(file);
    await stalling;
    expect(run.code).toBe(1);
    expect(run.out).toBe('');
    expect(run.err).toMatch(
      new RegExp(
        `^bucket:${bucket}  failed\n  error: put blobs/[0-9a-f]{2}/[0-9a-f]{64} in s3://${stack.targetBucket}/${prefix}: nothing sent or received for 0\\.5 s; check target\\.endpoint, or raise target\\.timeoutMs\nbackup failed: no restore point written$`,
      ),
    );

    await proxy.cut();
    await proxy.open();
    const next = await backupJson(file);
    expect(next.status).toBe('success');
    const fresh = unique('ftslow-back');
    await restore(file, [next.id ?? '', '--only', 'buckets', '--bucket', `${bucket}=${fresh}`]);
    expect(await bucketContents(gateway, fresh)).toEqual(await bucketContents(gateway, bucket));
  });

  it('fails the object, not the S3 target, when its body stops coming for longer than target.timeoutMs', async () => {
    const bucket = unique('fbstall');
    await gateway.createBucket(bucket, { signal });
    await putObject(bucket, 'big', bytes('fbstall-big', 24 * MiB));
    const proxy = await proxyTo(rgwPort);
    const prefix = unique('faults');
    // The gateway waits longer than the target: the target is first to see nothing move, while it
    // has taken every byte it was given.
    const file = stallConfig(
      bucket,
      `http://127.0.0.1:${proxy.port}`,
      s3TargetAt(stack.rgwEndpoint, prefix, { timeoutMs: 500 }),
      20_000,
    );
    const stalling = proxy.stallAfter('down', 8 * MiB);
    const run = await backup(file);
    await stalling;
    expect(run.code).toBe(1);
    expect(run.out).toBe('');
    expect(run.err).toMatch(
      new RegExp(
        `^bucket:${bucket}  failed\n  error: bucket ${bucket}: no object could be read \\(big: put blobs/[0-9a-f]{2}/[0-9a-f]{64} in s3://${stack.targetBucket}/${prefix}: the body gave nothing for 0\\.5 s; check where it is read from, or raise target\\.timeoutMs\\)\nbackup failed: no restore point written$`,
      ),
    );
  });

  it('fails an S3 target GET within target.timeoutMs when the target stops after a slow reader caught up', async () => {
    const proxy = await proxyTo(rgwPort);
    const target = stackS3Target(stack, unique('ftslowr'), {
      endpoint: `http://127.0.0.1:${proxy.port}`,
      timeoutMs: 300,
    });
    await target.put('big', Readable.from([bytes('ftslowr-big', 24 * MiB)]), { signal, size: 24 * MiB });
    const stalling = proxy.stallAfter('down', 8 * MiB);
    // Three timeouts pass with bytes waiting unread: the reader is the slow side, so each only
    // waits again. Then the target stops, and the next timeout fails the body.
    const body = await target.get('big', { signal });
    await new Promise((resolve) => setTimeout(resolve, 1000));
    let read = 0;
    const reading = (async () => {
      for await (const chunk of body) read += (chunk as Buffer).length;
    })();
    await expect(reading).rejects.toThrow(/^GET 127\.0\.0\.1:\d+: nothing sent or received for 0\.3 s$/);
    await stalling;
    expect(read).toBeGreaterThan(MiB);
    expect(read).toBeLessThan(24 * MiB);
  });

  /**
   * A commit to an S3 target through a proxy, held once the target has taken the manifest's PUT
   * whole: its answer does not come back, so an abort lands while the PUT is in flight.
   */
  const heldCommit = async (name: string, timeoutMs?: number) => {
    const proxy = await proxyTo(rgwPort);
    const prefix = unique(name);
    const via = stackS3Target(stack, prefix, {
      endpoint: `http://127.0.0.1:${proxy.port}`,
      ...(timeoutMs === undefined ? {} : { timeoutMs }),
    });
    const direct = stackS3Target(stack, prefix);
    const writer = new Repository(via).begin(new Date());
    const manifest = { formatVersion: 1, id: writer.id } as unknown as Manifest;
    const stalled = proxy.stallAfter('down', 1, { oneConnection: true });
    const controller = new AbortController();
    const committing = writer.commit(manifest, { signal: controller.signal });
    committing.catch(() => undefined);
    await stalled;
    return { proxy, via, direct, writer, controller, committing };
  };

  it('leaves no manifest when the run is aborted while the S3 target takes it', async () => {
    const { proxy, via, direct, writer, controller, committing } = await heldCommit('ftabort');
    expect(await direct.stat(manifestKey(writer.id), { signal })).toBeDefined();
    controller.abort(new Error('run aborted'));
    await expect(committing).rejects.toThrow('run aborted');
    expect(await direct.stat(manifestKey(writer.id), { signal })).toBeUndefined();

    // The abort closed the PUT's connection instead of leaving it to finish later (the remove's own
    // connection closes once idle).
    await until(
      'the aborted PUT closed',
      () => Promise.resolve(proxy.connections === 0 ? true : undefined),
      20_000,
    );

    // Aborted before the commit: nothing is sent.
    const up = proxy.bytes.up;
    const late = new Repository(via).begin(new Date());
    await expect(
      late.commit({ formatVersion: 1, id: late.id } as unknown as Manifest, { signal: controller.signal }),
    ).rejects.toThrow('run aborted');
    expect(proxy.bytes.up).toBe(up);
    expect(await direct.stat(manifestKey(late.id), { signal })).toBeUndefined();
  });

  it('leaves no manifest when the S3 target took it but its answer never came', async () => {
    // Not an abort: the PUT times out, and the run reports failure.
    const { direct, writer, committing } = await heldCommit('ftlost', 1000);
    await expect(committing).rejects.toThrow(/nothing sent or received for 1 s/);
    expect(await direct.stat(manifestKey(writer.id), { signal })).toBeUndefined();
  });

  it('says a restore point may stand when a failed commit cannot remove the manifest', async () => {
    const { proxy, direct, writer, committing } = await heldCommit('ftlostundo');
    // The target goes away with the PUT taken: the PUT fails on its reset connection, and the
    // remove that would undo it cannot reach the target.
    await proxy.cut();
    const key = manifestKey(writer.id);
    await expect(committing).rejects.toThrow(
      new RegExp(
        `^writing the manifest failed \\(.+\\) for ${writer.id}, which could not then be removed \\(.*ECONNREFUSED.*\\): ${writer.id} may be listed as a restore point although this run reports none`,
      ),
    );
    expect(await direct.stat(key, { signal })).toBeDefined();
    await direct.remove(key, { signal });
  });

  it('says a restore point may stand when the manifest of an aborted run cannot be removed', async () => {
    const { proxy, via, direct, writer, controller, committing } = await heldCommit('ftundo');
    // The target goes away with the PUT taken: the remove that would undo it cannot reach it.
    await proxy.cut();
    controller.abort(new Error('run aborted'));
    const key = manifestKey(writer.id);
    await expect(committing).rejects.toThrow(
      new RegExp(
        `^interrupted while writing the manifest of ${writer.id}, which could not then be removed \\(.*ECONNREFUSED.*\\): ${writer.id} may be listed as a restore point although this run reports none; check with deis-backup snapshots, and remove ${key} from ${via.name.replaceAll('.', '\\.')} if it should not stand$`,
      ),
    );
    expect(await direct.stat(key, { signal })).toBeDefined();
    await direct.remove(key, { signal });
  });

  it('fails when the SSH connection drops mid-volume and mid-dump', async () => {
    const proxy = await proxyTo(stack.sshPort);
    const ssh = await sshThrough(proxy);
    const volume = tempDir('fvol');
    await seedVolume(volume);
    await mkdir(join(volume, 'big'));
    for (let i = 0; i < 3; i++) await writeFile(join(volume, 'big', `blob-${i}`), randomBytes(4 * MiB));
    const loaded = join(tempDir('loaded'), 'dump.sql');
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      ssh,
      sources: {
        buckets: { enabled: false },
        volume: { path: volume, host: '127.0.0.1' },
        database: { host: '127.0.0.1', command: pg.dumpCommand },
      },
      target: { type: 'dir', path: tempDir('target') },
      restore: { databaseCommand: loadInto(loaded) },
    });
    // The proxy's cut reaches the client as a FIN, or as an RST when data is still in flight.
    const sshLost = `ssh root@[127.0.0.1]:${proxy.port}: connection lost before the command finished (<cut>); its output is incomplete`;
    const asCut = (err: string): string => err.replace(/\((closed by the peer|ECONNRESET)\)/, '(<cut>)');
    const first = await backup(file);
    expect(first.code, first.err).toBe(0);
    const older = [first.out.trim()];

    let cutting = proxy.cutAfter('down', 2 * MiB);
    const volumeRun = await backup(file, '--only', 'volume');
    await cutting;
    expect(volumeRun.code).toBe(1);
    expect(asCut(volumeRun.err)).toBe(
      `volume    failed\n  error: volume 127.0.0.1:${volume}: ${sshLost}\nbackup failed: no restore point written`,
    );
    await proxy.open();
    cutting = proxy.cutAfter('down', 2 * MiB);
    const dumpRun = await backup(file, '--only', 'database');
    await cutting;
    expect(dumpRun.code).toBe(1);
    expect(asCut(dumpRun.err)).toBe(
      `database  failed\n  error: database: dump command on 127.0.0.1: ${sshLost}\nbackup failed: no restore point written`,
    );

    await proxy.open();
    await expectOlderIntact(file, older);
    const into = join(tempDir('restored'), 'store');
    await restore(file, [older[0] ?? '', '--only', 'volume', '--volume-to', into]);
    expect(await describeTree(into)).toEqual(await describeTree(volume));
    await restore(file, [older[0] ?? '', '--only', 'database']);
    await expectLoaded(loaded);

    const next = await backupJson(file);
    expect(next.status).toBe('success');
    expect(next.sources.map((s) => [s.id, s.status])).toEqual([
      ['volume', 'success'],
      ['database', 'success'],
    ]);
    expect(next.sources[1]?.counts.bytesRead).toBeGreaterThan(10 * MiB);
    expect(await snapshotIds(file)).toEqual([...older, next.id]);
  });

  it('fails within ssh.timeoutMs when the volume host stops answering mid-read', async () => {
    const proxy = await proxyTo(stack.sshPort);
    const ssh = await sshThrough(proxy);
    const volume = tempDir('svol');
    for (let i = 0; i < 3; i++) await writeFile(join(volume, `blob-${i}`), randomBytes(4 * MiB));
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      ssh: { ...ssh, timeoutMs: 3000 },
      sources: {
        buckets: { enabled: false },
        volume: { path: volume, host: '127.0.0.1' },
        database: { enabled: false },
      },
      target: { type: 'dir', path: tempDir('target') },
    });
    // The host goes silent, as one that lost power does: nothing more comes back, no FIN, no RST.
    const stalling = proxy.stallAfter('down', 2 * MiB);
    const started = Date.now();
    const run = await backup(file);
    await stalling;
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(run.code).toBe(1);
    expect(run.err).toBe(
      `volume    failed\n  error: volume 127.0.0.1:${volume}: ssh root@[127.0.0.1]:${proxy.port}: connection lost before the command finished (no answer for 3 s); its output is incomplete\nbackup failed: no restore point written`,
    );
  });

  /** Holds an exclusive lock on the filler table, so a dump stops there until the server dies. */
  const holdLock = () => {
    const holder = spawn(
      'psql',
      ['-X', '-q', '-h', '127.0.0.1', '-p', String(pg.port), '-U', 'postgres', '-d', 'faults', '-c'].concat(
        'begin; lock table filler in access exclusive mode; select pg_sleep(60);',
      ),
      { stdio: 'ignore' },
    );
    // Listened for now: the holder dies with the server, often before anyone awaits it.
    return { exited: once(holder, 'exit') };
  };
  const dumpWaiting = () =>
    until('the dump to wait on the lock', async () =>
      pg
        .psql(
          "select count(*) from pg_stat_activity where application_name = 'pg_dump' and wait_event_type = 'Lock'",
        )
        .trim() === '1'
        ? Promise.resolve(true)
        : Promise.resolve(undefined),
    );

  it('fails when PostgreSQL stops mid-dump', async () => {
    const loaded = join(tempDir('loaded'), 'dump.sql');
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      sources: {
        buckets: { enabled: false },
        volume: { enabled: false },
        database: { host: 'local', command: pg.dumpCommand },
      },
      target: { type: 'dir', path: tempDir('target') },
      restore: { databaseCommand: loadInto(loaded) },
    });
    const first = await backup(file);
    expect(first.code, first.err).toBe(0);
    const older = [first.out.trim()];

    const holder = holdLock();
    const running = backup(file);
    await dumpWaiting();
    pg.crash();
    const run = await running;
    await holder.exited;
    expect(run.code).toBe(1);
    expect(run.err).toBe(
      'database  failed\n  error: database: dump command locally exited 1: pg_dump: error: query failed: server closed the connection unexpectedly; check sources.database.command and that deis-database runs\nbackup failed: no restore point written',
    );
    pg.start();

    await expectOlderIntact(file, older);
    await restore(file, [older[0] ?? '', '--only', 'database']);
    await expectLoaded(loaded);
    const next = await backupJson(file);
    expect(next.status).toBe('success');
    expect(next.sources[0]?.counts.bytesRead).toBeGreaterThan(10 * MiB);
    expect(await snapshotIds(file)).toEqual([...older, next.id]);
  });

  it('tells the truth in metrics and /readyz when PostgreSQL stops mid-dump under the daemon', async () => {
    const logs: string[] = [];
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      sources: {
        buckets: { enabled: false },
        volume: { enabled: false },
        database: { host: 'local', command: pg.dumpCommand },
      },
      target: { type: 'dir', path: tempDir('target') },
      schedule: { cron: '0 3 * * *' },
      http: { host: '127.0.0.1', port: 0, token: TOKEN },
    });
    const config = loadConfig({ file, env: {} });
    const log = createLogger({ level: 'debug' }, { write: (line: string) => logs.push(line) });
    const shutdown = new AbortController();
    const daemon = await startDaemon(config, { log, shutdown: shutdown.signal });
    const call = async (method: string, path: string) => {
      const res = await fetch(`${daemon.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      const text = await res.text();
      return { status: res.status, text, json: () => JSON.parse(text) as Record<string, unknown> };
    };
    const backupOnce = async () => {
      const id = String((await call('POST', '/backups')).json()['id']);
      return until(`backup ${id}`, async () => {
        const body = (await call('GET', `/backups/${id}`)).json();
        return body['status'] === 'running' ? undefined : body;
      });
    };
    try {
      expect(await backupOnce()).toMatchObject({ status: 'success' });
      const ready = await call('GET', '/readyz');
      expect(ready.status).toBe(200);
      const lastSuccess = ready.json()['lastSuccess'];
      expect(lastSuccess).toEqual(expect.any(String));
      const successAt = sample(
        (await call('GET', '/metrics')).text,
        'deis_backup_last_success_timestamp_seconds',
        'source="all"',
      );
      expect(successAt).toBeGreaterThan(0);

      const holder = holdLock();
      const running = backupOnce();
      await dumpWaiting();
      pg.crash();
      const failed = await running;
      await holder.exited;
      expect(failed).toMatchObject({
        status: 'failed',
        result: {
          status: 'failed',
          sources: [
            {
              id: 'database',
              errors: [
                'database: dump command locally exited 1: pg_dump: error: query failed: server closed the connection unexpectedly; check sources.database.command and that deis-database runs',
              ],
            },
          ],
        },
      });
      expect((failed['result'] as { id?: string }).id).toBeUndefined();
      const metrics = (await call('GET', '/metrics')).text;
      expect(sample(metrics, 'deis_backup_last_status', 'source="all"')).toBe(0);
      expect(sample(metrics, 'deis_backup_failure_total', 'source="database"')).toBe(1);
      expect(sample(metrics, 'deis_backup_last_success_timestamp_seconds', 'source="all"')).toBe(successAt);
      expect(sample(metrics, 'deis_backup_restore_points')).toBe(1);
      const after = await call('GET', '/readyz');
      expect(after.status).toBe(200);
      expect(after.json()).toMatchObject({ ready: true, lastSuccess, targetUp: true });

      pg.start();
      expect(await backupOnce()).toMatchObject({ status: 'success' });
      const recovered = (await call('GET', '/metrics')).text;
      expect(sample(recovered, 'deis_backup_last_status', 'source="all"')).toBe(1);
      expect(sample(recovered, 'deis_backup_restore_points')).toBe(2);
      expect((await call('GET', '/readyz')).json()['lastSuccess']).not.toBe(lastSuccess);
    } finally {
      await daemon.stop();
    }
    for (const line of logs) for (const secret of secrets) expect(line).not.toContain(secret);
  });
});
