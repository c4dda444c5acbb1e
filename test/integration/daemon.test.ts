// The daemon listening for real against the real stack: schedule, one operation at a time, auth,
// metrics after success, failure, partial and restart, readiness, shutdown, restore over HTTP.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { afterEach, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { BackupError } from '../../src/errors.js';
import { startDaemon, type Daemon } from '../../src/daemon.js';
import { createLogger } from '../../src/log.js';
import { Repository } from '../../src/repository/repository.js';
import { DirTarget } from '../../src/targets/dir.js';
import { EtcdLock } from '../../src/lock/etcd-lock.js';
import type { RestoreReport } from '../../src/restore.js';
import { createClusterEtcd } from '../../src/wiring.js';
import { seedDbWal, seedOddKeys, seedRegistry, seedVolume } from '../fixtures/deis-sample.js';
import { stackDumpCommand, stackSsh } from '../fixtures/stack.js';
import {
  bucketContents,
  cli,
  describeWithStack,
  gatewayClient,
  putForeignObject,
  tempDir,
  unique,
  until,
  writeConfig,
  sample,
  callApi,
  readmeParagraph,
} from './helpers.js';
import { stackS3TargetConfig } from '../fixtures/s3-target.js';

const TOKEN = 'test-token-0123456789abcdef';
const signal = AbortSignal.timeout(600_000);

/** A TCP forwarder to radosgw that can be shut and opened again on the same port. */
async function switchableProxy(port: number, upstream: number) {
  let server: net.Server | undefined;
  const sockets = new Set<net.Socket>();
  const open = async () => {
    server = net.createServer((client) => {
      const up = net.connect(upstream, '127.0.0.1');
      sockets.add(client).add(up);
      client.pipe(up).pipe(client);
      client.on('error', () => up.destroy());
      up.on('error', () => client.destroy());
    });
    server.listen(port, '127.0.0.1');
    await once(server, 'listening');
  };
  const close = async () => {
    for (const s of sockets) s.destroy();
    sockets.clear();
    if (server) await new Promise((r) => server?.close(r));
  };
  await open();
  return { open, close };
}

/** A webhook receiver on loopback: the events it got, in order, and its URL. */
async function webhookReceiver(): Promise<{
  url: string;
  received: Record<string, unknown>[];
  close(): void;
}> {
  const received: Record<string, unknown>[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      received.push(JSON.parse(body) as Record<string, unknown>);
      res.end();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  return { url: `http://127.0.0.1:${port}/hook`, received, close: () => server.close() };
}

describeWithStack('daemon', (stack) => {
  const wal = unique('dwal');
  const registry = unique('dreg');
  const volume = tempDir('volume');
  const running: Daemon[] = [];
  const logs: string[] = [];
  /** Called with each log line as it is written, before the daemon goes on. */
  let onLog: ((line: string) => void) | undefined;

  /** Writes a config and starts a daemon on a free port. */
  const start = async (patch: Record<string, unknown> = {}, shutdown = new AbortController()) => {
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      ssh: stackSsh(stack),
      sources: {
        buckets: { names: [wal, registry] },
        volume: { path: volume },
        database: { host: 'local', command: stackDumpCommand(stack) },
      },
      target: { type: 'dir', path: tempDir('target') },
      schedule: { cron: '0 3 * * *' },
      http: { host: '127.0.0.1', port: 0, token: TOKEN },
      log: { level: 'debug' },
      ...patch,
    });
    const config = loadConfig({ file, env: {} });
    const log = createLogger(
      { level: 'debug' },
      {
        write: (line: string) => {
          logs.push(line);
          onLog?.(line);
        },
      },
    );
    const daemon = await startDaemon(config, { log, shutdown: shutdown.signal });
    running.push(daemon);
    return { daemon, config, shutdown, file };
  };
  const call = async (
    daemon: Daemon,
    method: string,
    path: string,
    body?: unknown,
    token: string | null = TOKEN,
  ) => {
    const res = await callApi(daemon.url, method, path, { body, token: token ?? undefined });
    return { status: res.status, body: res.body };
  };
  const finished = (daemon: Daemon, kind: 'backups' | 'restores' | 'verifications' | 'drills', id: string) =>
    until(
      `${kind} ${id}`,
      async () => {
        const { body } = await call(daemon, 'GET', `/${kind}/${id}`);
        return body['status'] === 'running' ? undefined : body;
      },
      120_000,
    );

  beforeAll(async () => {
    const gateway = gatewayClient(stack);
    await gateway.createBucket(wal, { signal });
    await gateway.createBucket(registry, { signal });
    await seedDbWal(gateway, wal);
    await seedRegistry(gateway, registry);
    gateway.close();
    await seedVolume(volume);
  });
  afterEach(async () => {
    for (const daemon of running.splice(0)) await daemon.stop();
    for (const line of logs) {
      for (const secret of [TOKEN, stack.gatewaySecretKey, stack.targetSecretKey, stack.gatewayAccessKey])
        expect(line).not.toContain(secret);
    }
  });

  it('takes restore points on a per-second schedule, and refuses a trigger while one runs', async () => {
    const { daemon, config } = await start({
      schedule: { cron: '* * * * * *' },
      sources: {
        buckets: { enabled: false },
        volume: { path: volume },
        database: { host: 'local', command: `sleep 2; ${stackDumpCommand(stack)}` },
      },
    });
    const repository = new Repository(new DirTarget(config.target.type === 'dir' ? config.target.path : ''));
    const busy = await until('a running backup', () => {
      const current = daemon.operations.current();
      return Promise.resolve(current ? current : undefined);
    });
    const refused = await call(daemon, 'POST', '/backups');
    expect(refused.status).toBe(409);
    expect(refused.body['error']).toBe(`a backup is running (${busy.id}); try again when it has finished`);
    await until(
      'two restore points',
      async () => ((await repository.listSnapshots({ signal })).length >= 2 ? true : undefined),
      20_000,
    );
    expect(logs.some((l) => l.includes('scheduled backup skipped: another operation is running'))).toBe(true);
  });

  it('verifies and drills on request, exports both in metrics, and keeps them across a restart', async () => {
    const target = tempDir('target');
    const patch = {
      target: { type: 'dir', path: target },
      drill: { enabled: true, bucketSuffix: '-drl', directory: tempDir('drill') },
    };
    const { daemon, file } = await start(patch);
    // Before the first backup there is nothing to verify: skipped, neither sound nor damaged.
    const early = await call(daemon, 'POST', '/verifications');
    expect(await finished(daemon, 'verifications', String(early.body['id']))).toMatchObject({
      status: 'skipped',
      result: { reason: `no restore point in dir:${target}; run deis-backup backup first` },
    });
    const before = String((await call(daemon, 'GET', '/metrics')).body);
    expect(sample(before, 'deis_backup_verify_success', 'read_data="false"')).toBeUndefined();
    const backup = await call(daemon, 'POST', '/backups');
    expect(await finished(daemon, 'backups', String(backup.body['id']))).toMatchObject({ status: 'success' });

    const verify = await call(daemon, 'POST', '/verifications');
    expect(verify.status).toBe(202);
    const verified = await finished(daemon, 'verifications', String(verify.body['id']));
    expect(verified).toMatchObject({ kind: 'verify', status: 'success', result: { status: 'ok' } });
    const drill = await call(daemon, 'POST', '/drills');
    expect(drill.status).toBe(202);
    const drilled = await finished(daemon, 'drills', String(drill.body['id']));
    expect(drilled, JSON.stringify(drilled)).toMatchObject({ kind: 'drill', status: 'success' });

    const metrics = String((await call(daemon, 'GET', '/metrics')).body);
    expect(sample(metrics, 'deis_backup_verify_success', 'read_data="false"')).toBe(1);
    const verifiedAt = sample(metrics, 'deis_backup_verify_last_success_timestamp_seconds') ?? 0;
    const drilledAt = sample(metrics, 'deis_backup_restore_test_last_success_timestamp_seconds') ?? 0;
    expect(verifiedAt).toBeGreaterThan(Date.now() / 1000 - 60);
    expect(drilledAt).toBeGreaterThan(Date.now() / 1000 - 60);
    expect(sample(metrics, 'deis_backup_restore_test_expected_interval_seconds')).toBe(7 * 86_400);

    // A restarted daemon reads both outcomes back from the target.
    await daemon.stop();
    const { daemon: again } = await start(patch);
    const after = String((await call(again, 'GET', '/metrics')).body);
    expect(sample(after, 'deis_backup_verify_last_success_timestamp_seconds')).toBe(verifiedAt);
    expect(sample(after, 'deis_backup_restore_test_last_success_timestamp_seconds')).toBe(drilledAt);

    // Damage in the target: the CLI names it and exits 1, and the next verify flips the metric.
    const repository = new Repository(new DirTarget(target));
    const [manifest] = await repository.listSnapshots({ signal });
    const index = manifest?.sources.find((s) => s.bucket === registry)?.artifacts[0];
    if (!index) throw new Error('no registry index');
    let victim: { key: string; blob: string } | undefined;
    for await (const entry of repository.readIndex(index, { signal })) victim ??= entry;
    await repository.target.remove(victim?.blob ?? '', { signal });
    const cliVerify = await cli(['verify', '--all', '--config', file]);
    expect(cliVerify.code).toBe(1);
    expect(cliVerify.out).toContain(`${registry}/${victim?.key ?? ''}`);
    const again2 = await call(again, 'POST', '/verifications');
    expect(await finished(again, 'verifications', String(again2.body['id']))).toMatchObject({
      status: 'failed',
    });
    const damaged = String((await call(again, 'GET', '/metrics')).body);
    expect(sample(damaged, 'deis_backup_verify_success', 'read_data="false"')).toBe(0);
    expect(sample(damaged, 'deis_backup_verify_last_success_timestamp_seconds')).toBe(verifiedAt);

    // Every restore point gone after one was known: not skipped as before the first backup, failed.
    await rm(join(target, 'snapshots'), { recursive: true });
    const emptied = await call(again, 'POST', '/verifications');
    expect(await finished(again, 'verifications', String(emptied.body['id']))).toMatchObject({
      status: 'failed',
      error: `no restore point in dir:${target}; run deis-backup backup first`,
    });
  });

  it('skips a backup and a restore while another runner holds the cluster lock, and counts it', async () => {
    const key = `/deis-backup-test/${unique('held')}`;
    const { daemon, config } = await start({ lock: { key, ttlSeconds: 10 } });
    const other = new EtcdLock(createClusterEtcd(config), { key, ttlSeconds: 10 });
    const got = await other.tryAcquire('backup', { signal });
    if (!('held' in got)) throw new Error('the test could not take the lock');
    try {
      const backup = await call(daemon, 'POST', '/backups');
      expect(await finished(daemon, 'backups', String(backup.body['id']))).toMatchObject({
        status: 'skipped',
        result: { reason: expect.stringContaining('another deis-backup holds the cluster lock') as unknown },
      });
      const restore = await call(daemon, 'POST', '/restores', { snapshot: 'latest' });
      expect(await finished(daemon, 'restores', String(restore.body['id']))).toMatchObject({
        status: 'skipped',
      });
      const metrics = String((await call(daemon, 'GET', '/metrics')).body);
      expect(sample(metrics, 'deis_backup_lock_busy_total', 'operation="backup"')).toBe(1);
      expect(sample(metrics, 'deis_backup_lock_busy_total', 'operation="restore"')).toBe(1);
      expect(logs.some((l) => l.includes('backup skipped: another deis-backup holds the cluster lock'))).toBe(
        true,
      );
    } finally {
      await got.held.release();
    }
    const after = await call(daemon, 'POST', '/backups', { only: ['volume'] });
    expect(await finished(daemon, 'backups', String(after.body['id']))).toMatchObject({ status: 'success' });
  });

  it('guards mutating routes with the bearer token, and disables them without one', async () => {
    const { daemon } = await start();
    expect((await call(daemon, 'POST', '/backups', {}, null)).status).toBe(401);
    expect((await call(daemon, 'POST', '/backups', {}, 'wrong-token-0123456789')).status).toBe(401);
    const accepted = await call(daemon, 'POST', '/backups', { only: ['volume'] });
    expect(accepted.status).toBe(202);
    expect(accepted.body['id']).toMatch(/^backup-/);
    expect(await finished(daemon, 'backups', String(accepted.body['id']))).toMatchObject({
      status: 'success',
    });
    expect(
      (await call(daemon, 'POST', '/restores', { snapshot: 'latest', only: ['teleport'] })).body,
    ).toEqual({
      error: 'body.only.0: must be one of "buckets", "volume", "database", "finish"',
    });
    expect((await call(daemon, 'POST', '/backups', { only: ['finish'] })).body).toEqual({
      error: 'body.only.0: must be one of "buckets", "volume", "database"',
    });
    expect((await call(daemon, 'GET', '/healthz', undefined, null)).body).toEqual({ status: 'ok' });
    // The token is checked before the body is read: without it, a bad body is still a 401.
    const raw = (init: RequestInit & { path?: string }) =>
      fetch(`${daemon.url}${init.path ?? '/backups'}`, { method: 'POST', ...init });
    const badBody = await raw({ headers: { 'content-type': 'application/json' }, body: '{bad' });
    expect(badBody.status).toBe(401);
    expect((await raw({ headers: { 'content-type': 'text/plain' }, body: 'x' })).status).toBe(401);
    // A token in the query string is refused, and not logged.
    const queried = await raw({ path: `/backups?token=${TOKEN}` });
    expect(queried.status).toBe(401);
    expect(logs.filter((l) => l.includes('request refused')).at(-1)).toContain('"route":"/backups"');
    // The scheme is case-insensitive; the body's mistakes name the field, once each.
    const lower = { authorization: `bearer ${TOKEN}`, 'content-type': 'application/json' };
    const restore = (body: unknown) =>
      raw({ path: '/restores', headers: lower, body: JSON.stringify(body) }).then(
        async (res) => [res.status, await res.json()] as const,
      );
    expect(await restore({ snapshot: 'latest', buckets: ['registry'] })).toEqual([
      400,
      {
        error:
          'body.buckets: must be an object from source to destination bucket, such as {"registry": "registry-new"}',
      },
    ]);
    expect(await restore({ snapshot: 'latest', buckets: { x: 'y' } })).toEqual([
      400,
      { error: 'body.buckets.x: is not a bucket name' },
    ]);
    expect(await restore({ snapshot: 'latest', only: ['database'], volumeTo: '/tmp/x' })).toEqual([
      400,
      { error: 'body.volumeTo: the restore has no volume step; add "volume" to only, or leave volumeTo out' },
    ]);
    expect(await restore({ snapshot: 'latest', only: ['volume'], buckets: { [wal]: 'elsewhere' } })).toEqual([
      400,
      { error: 'body.buckets: the restore has no buckets step; add "buckets" to only, or leave buckets out' },
    ]);
    const proto = await raw({
      path: '/restores',
      headers: lower,
      body: '{"snapshot": "latest", "buckets": {"__proto__": "x"}}',
    });
    expect([proto.status, await proto.json()]).toEqual([
      400,
      { error: 'body.buckets: the key "__proto__" is not accepted' },
    ]);
    const gzipped = await raw({ headers: { ...lower, 'content-encoding': 'gzip' }, body: '{}' });
    expect([gzipped.status, gzipped.headers.get('accept-encoding')]).toEqual([415, 'identity']);
    // A known path with another method is 405 and names the methods it takes; an unknown one is 404.
    const wrongMethod = await fetch(`${daemon.url}/restores/restore-1`, { method: 'PUT' });
    expect([wrongMethod.status, wrongMethod.headers.get('allow'), await wrongMethod.json()]).toEqual([
      405,
      'DELETE, GET, HEAD',
      { error: '/restores/restore-1 does not take PUT; it takes DELETE, GET, HEAD' },
    ]);
    expect((await fetch(`${daemon.url}/backups`)).status).toBe(405);
    expect((await fetch(`${daemon.url}/nowhere`, { method: 'POST' })).status).toBe(404);
    const badUrl = await fetch(`${daemon.url}/backups/%ZZ`);
    expect(badUrl.status).toBe(400);
    expect(((await badUrl.json()) as { error: string }).error).toMatch(/^bad URL: /);
    const { daemon: open } = await start({ http: { host: '127.0.0.1', port: 0 } });
    const disabled = await call(open, 'POST', '/backups', {}, TOKEN);
    expect(disabled.status).toBe(403);
    expect(disabled.body['error']).toBe(
      'this route is disabled: set http.token (or DEIS_BACKUP_HTTP_TOKEN) to enable backups and restores over HTTP',
    );
  });

  it('stops at once though a client never finishes its request', async () => {
    const { daemon } = await start();
    const url = new URL(daemon.url);
    const client = net.connect(Number(url.port), url.hostname);
    await once(client, 'connect');
    client.on('error', () => undefined);
    client.write(
      'POST /backups HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{',
    );
    const closed = new Promise((resolve) => client.on('close', resolve));
    const started = Date.now();
    running.splice(running.indexOf(daemon), 1);
    await daemon.stop();
    expect(Date.now() - started).toBeLessThan(5_000);
    await closed;
  });

  it('opens its port and answers /snapshots within 30 s when the target never answers', async () => {
    // A target that takes connections and says nothing, for longer than the daemon's own limits.
    const silent = net.createServer(() => undefined);
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    const { port } = silent.address() as net.AddressInfo;
    try {
      const began = Date.now();
      const prefix = unique('silent');
      const target = stackS3TargetConfig(stack, `http://127.0.0.1:${port}`, prefix, { timeoutMs: 90_000 });
      const { daemon } = await start({ target });
      expect(Date.now() - began).toBeLessThan(45_000);
      const asked = Date.now();
      const snapshots = await call(daemon, 'GET', '/snapshots');
      expect(Date.now() - asked).toBeLessThan(45_000);
      expect(snapshots).toEqual({
        status: 504,
        body: {
          error: `target s3://${stack.targetBucket}/${prefix} did not list its restore points within 30 s; check target.endpoint and the target's health`,
        },
      });
    } finally {
      silent.close();
    }
  }, 150_000);

  it('reports success, partial and failure in metrics, and keeps the last success across a restart', async () => {
    const target = tempDir('target');
    // Its own bucket: the object planted below makes every later backup of it partial.
    const spoiled = unique('dspoil');
    const owner = gatewayClient(stack);
    await owner.createBucket(spoiled, { signal });
    await seedOddKeys(owner, spoiled);
    owner.close();
    const sources = { buckets: { names: [wal, spoiled] }, volume: { path: volume } };
    const { daemon } = await start({
      target: { type: 'dir', path: target },
      sources: { ...sources, database: { host: 'local', command: stackDumpCommand(stack) } },
    });
    const run = async (d: Daemon) =>
      finished(d, 'backups', String((await call(d, 'POST', '/backups')).body['id']));
    expect(await run(daemon)).toMatchObject({ status: 'success' });
    let metrics = (await call(daemon, 'GET', '/metrics')).body;
    expect(sample(metrics, 'deis_backup_last_status', 'source="all"')).toBe(1);
    expect(sample(metrics, 'deis_backup_success_total', `source="bucket:${wal}"`)).toBe(1);
    const lastSuccess = sample(metrics, 'deis_backup_last_success_timestamp_seconds', 'source="all"');
    expect(lastSuccess).toBeGreaterThan(Date.now() / 1000 - 60);
    expect(sample(metrics, 'deis_backup_restore_points')).toBe(1);

    putForeignObject(stack, spoiled, 'odd/foreign');
    expect(await run(daemon)).toMatchObject({ status: 'partial' });
    metrics = (await call(daemon, 'GET', '/metrics')).body;
    expect(sample(metrics, 'deis_backup_last_status', 'source="all"')).toBe(0.5);
    expect(sample(metrics, 'deis_backup_partial_failure_total', `source="bucket:${spoiled}"`)).toBe(1);
    expect(sample(metrics, 'deis_backup_last_success_timestamp_seconds', 'source="all"')).toBe(lastSuccess);
    await daemon.stop();

    const { daemon: failing } = await start({
      target: { type: 'dir', path: target },
      sources: { ...sources, database: { host: 'local', command: 'exit 7' } },
    });
    // A restart rebuilds the last success from the target before any run.
    metrics = (await call(failing, 'GET', '/metrics')).body;
    expect(sample(metrics, 'deis_backup_last_success_timestamp_seconds', 'source="all"')).toBeCloseTo(
      lastSuccess ?? 0,
      0,
    );
    expect(sample(metrics, 'deis_backup_last_status', 'source="all"')).toBe(0.5);
    expect(await run(failing)).toMatchObject({ status: 'failed' });
    metrics = (await call(failing, 'GET', '/metrics')).body;
    expect(sample(metrics, 'deis_backup_last_status', 'source="all"')).toBe(0);
    expect(sample(metrics, 'deis_backup_failure_total', 'source="database"')).toBe(1);
    expect(sample(metrics, 'deis_backup_restore_points')).toBe(2);
    expect(sample(metrics, 'deis_backup_target_up')).toBe(1);
    // promtool reads the live exposition on stdin (a sync child must not call back into this process).
    // prom-client's own nodejs_active_*_total gauges break promtool's naming lint; everything else
    // on the page, ours and the other process metrics, must pass it.
    const linted = metrics
      .split('\n')
      .filter((line) => !/^(# (HELP|TYPE) )?nodejs_active_(handles|requests|resources)_total/.test(line))
      .join('\n');
    execFileSync('promtool', ['check', 'metrics'], { input: linted });
    await failing.stop();

    // The partial bucket taken out of the config: after a restart it keeps no status (so no
    // DeisBackupPartial alert) and no last success, in the metrics and in /readyz.
    const { daemon: narrowed } = await start({
      target: { type: 'dir', path: target },
      sources: { buckets: { names: [wal] }, volume: { path: volume }, database: { enabled: false } },
    });
    metrics = (await call(narrowed, 'GET', '/metrics')).body;
    expect(metrics).not.toContain(`source="bucket:${spoiled}"`);
    // The failed run left no manifest, but its record in the target: the restart still shows it,
    // for "all" and for each source it failed (none is committed without the others).
    expect(sample(metrics, 'deis_backup_last_status', 'source="all"')).toBe(0);
    expect(sample(metrics, 'deis_backup_last_status', `source="bucket:${wal}"`)).toBe(0);
    expect(
      sample(metrics, 'deis_backup_last_success_timestamp_seconds', `source="bucket:${wal}"`),
    ).toBeGreaterThan(0);
    const readiness = (await call(narrowed, 'GET', '/readyz')).body;
    expect(Object.keys(readiness['sources'] as object).sort()).toEqual([`bucket:${wal}`, 'volume']);
  });

  it('cancels a running restore on DELETE', async () => {
    const { daemon } = await start({
      sources: {
        buckets: { enabled: false },
        volume: { path: volume },
        database: { host: 'local', command: stackDumpCommand(stack) },
      },
      restore: { databaseCommand: 'sleep 30; cat > /dev/null' },
    });
    expect(
      await finished(daemon, 'backups', String((await call(daemon, 'POST', '/backups')).body['id'])),
    ).toMatchObject({
      status: 'success',
    });
    const accepted = await call(daemon, 'POST', '/restores', { snapshot: 'latest', only: ['database'] });
    expect(accepted.status).toBe(202);
    const id = String(accepted.body['id']);
    await until('the database step', async () => {
      const { body } = await call(daemon, 'GET', `/restores/${id}`);
      const steps = (body['progress'] as { steps?: Record<string, unknown> } | undefined)?.steps ?? {};
      return 'database' in steps ? true : undefined;
    });
    expect((await call(daemon, 'DELETE', `/restores/${id}`, undefined, null)).status).toBe(401);
    const cancelled = await call(daemon, 'DELETE', `/restores/${id}`);
    expect(cancelled).toEqual({ status: 202, body: { id, status: 'cancelling' } });
    // The step that was running says it ended with the restore.
    expect(await finished(daemon, 'restores', id)).toMatchObject({
      status: 'aborted',
      progress: { steps: { database: { status: 'aborted' } } },
    });
  });

  it('counts a dry-run restore as an attempt, never as a successful or failed restore', async () => {
    const { daemon } = await start({
      sources: { buckets: { enabled: false }, volume: { path: volume }, database: { enabled: false } },
    });
    const backup = String((await call(daemon, 'POST', '/backups')).body['id']);
    expect(await finished(daemon, 'backups', backup)).toMatchObject({ status: 'success' });
    const plan = await call(daemon, 'POST', '/restores', {
      snapshot: 'latest',
      only: ['volume'],
      dryRun: true,
    });
    expect(await finished(daemon, 'restores', String(plan.body['id']))).toMatchObject({
      status: 'success',
      result: { dryRun: true },
    });
    const missing = await call(daemon, 'POST', '/restores', {
      snapshot: '20200101T000000Z-dead',
      dryRun: true,
    });
    expect(await finished(daemon, 'restores', String(missing.body['id']))).toMatchObject({
      status: 'failed',
    });
    // Its words are the request's, not only the CLI's.
    const noBucket = await call(daemon, 'POST', '/restores', {
      snapshot: 'latest',
      buckets: { registry: 'registry2' },
      dryRun: true,
    });
    const point = ((await finished(daemon, 'backups', backup))['result'] as { id: string }).id;
    expect(await finished(daemon, 'restores', String(noBucket.body['id']))).toMatchObject({
      status: 'failed',
      error: `--bucket registry=… ("buckets" over HTTP): restore point ${point} has no bucket registry; it holds no buckets`,
    });
    const metrics = String((await call(daemon, 'GET', '/metrics')).body);
    expect(sample(metrics, 'deis_backup_restore_attempt_total')).toBe(3);
    expect(sample(metrics, 'deis_backup_restore_success_total')).toBe(0);
    expect(sample(metrics, 'deis_backup_restore_failure_total')).toBe(0);
    // The README's metric table says the same.
    expect(readmeParagraph('`deis_backup_restore_success_total`')).toMatch(
      /`deis_backup_restore_success_total` +\| counter +\| Restores that ended `success`; dry runs are not counted\./,
    );
  });

  it('says in one line when its port is taken', async () => {
    const blocker = net.createServer();
    blocker.listen(0, '127.0.0.1');
    await once(blocker, 'listening');
    const { port } = blocker.address() as net.AddressInfo;
    try {
      const file = writeConfig({
        target: { type: 'dir', path: tempDir('target') },
        http: { host: '127.0.0.1', port },
      });
      const run = await cli(['daemon', '--config', file]);
      expect(run.code).toBe(2);
      // The README's exit codes say the same.
      const exits = readmeParagraph('`daemon` exits');
      expect(exits).toMatch(
        /`2` on a config error, including an `http\.host`\/`http\.port` it cannot listen on/,
      );
      expect(exits).not.toMatch(/`1` when it cannot start \(for example, the port is taken\)/);
      expect(run.err).toBe(
        `deis-backup: http: cannot listen on 127.0.0.1:${port} (EADDRINUSE); free the port or change http.port`,
      );
      // A host name that resolves to nothing, and an address that is not this machine's.
      for (const [host, code] of [
        ['nonexistent.invalid', 'ENOTFOUND'],
        ['10.254.254.254', 'EADDRNOTAVAIL'],
      ]) {
        const elsewhere = writeConfig({
          target: { type: 'dir', path: tempDir('target') },
          http: { host, port },
        });
        const refused = await cli(['daemon', '--config', elsewhere]);
        expect(refused.code, refused.err).toBe(2);
        expect(refused.err).toBe(
          `deis-backup: http: cannot listen on ${host}:${port} (${code}); set http.host to an address of this machine, or 0.0.0.0 for all`,
        );
      }
    } finally {
      blocker.close();
    }
  });

  it('posts a failed run to the webhook', async () => {
    const hook = await webhookReceiver();
    const { received } = hook;
    try {
      const { daemon } = await start({
        sources: {
          buckets: { enabled: false },
          volume: { path: volume },
          database: { host: 'local', command: 'echo broken >&2; exit 3' },
        },
        webhook: { url: hook.url },
      });
      const id = String((await call(daemon, 'POST', '/backups')).body['id']);
      expect(await finished(daemon, 'backups', id)).toMatchObject({ status: 'failed' });
      await until('the webhook', () => Promise.resolve(received.length > 0 ? true : undefined));
      expect(received[0]).toMatchObject({
        source: 'deis-backup',
        event: 'backup.failed',
        id,
        snapshot: null,
        sources: [
          {
            id: 'database',
            status: 'failed',
            errors: [expect.stringContaining('exited 3: broken') as unknown],
          },
        ],
      });
    } finally {
      hook.close();
    }
  });

  it('logs why a restore failed, since its result lives only in the daemon', async () => {
    const { daemon } = await start({
      sources: {
        buckets: { enabled: false },
        volume: { path: volume },
        database: { host: 'local', command: stackDumpCommand(stack) },
      },
      restore: { databaseCommand: 'cat > /dev/null; echo refused >&2; exit 4', deisVersion: 'v1.13.4' },
    });
    const backup = String((await call(daemon, 'POST', '/backups')).body['id']);
    expect(await finished(daemon, 'backups', backup)).toMatchObject({ status: 'success' });
    const id = String(
      (await call(daemon, 'POST', '/restores', { snapshot: 'latest', only: ['database'] })).body['id'],
    );
    expect(await finished(daemon, 'restores', id)).toMatchObject({ status: 'failed' });
    const line = logs
      .map((l) => JSON.parse(l) as { msg?: string; runId?: string; level?: number; errors?: string[] })
      .find((l) => l.msg === 'restore finished' && l.runId === id);
    expect(line).toMatchObject({
      level: 50,
      errors: ['database: load command locally exited 4: refused; check restore.databaseCommand'],
    });
  });

  it('reports a drill and a verify that could not run: metrics, the recorded outcome and the webhook', async () => {
    const hook = await webhookReceiver();
    const { received } = hook;
    try {
      const target = tempDir('target');
      const { daemon } = await start({
        target: { type: 'dir', path: target },
        webhook: { url: hook.url },
      });
      // No restore point yet: the drill has nothing to restore.
      const drill = String((await call(daemon, 'POST', '/drills')).body['id']);
      expect(await finished(daemon, 'drills', drill)).toMatchObject({ status: 'failed' });
      await until('the drill webhook', () => Promise.resolve(received.length > 0 ? true : undefined));
      expect(received[0]).toMatchObject({
        event: 'drill.failed',
        id: drill,
        summary: expect.stringMatching(/^no restore point in dir:/) as unknown,
      });
      const recorded = await new Repository(new DirTarget(target)).readStatus('drill', { signal });
      expect(recorded).toMatchObject({ ok: false, lastSuccessAt: null, summary: received[0]?.['summary'] });
      expect(
        logs.some((l) => l.includes('"msg":"restore drill failed"') && l.includes('no restore point')),
      ).toBe(true);
      // The target gone from under the daemon: the verify cannot list it.
      await rm(target, { recursive: true });
      await writeFile(target, 'not a directory');
      const verify = String((await call(daemon, 'POST', '/verifications')).body['id']);
      expect(await finished(daemon, 'verifications', verify)).toMatchObject({ status: 'failed' });
      await until('the verify webhook', () => Promise.resolve(received.length > 1 ? true : undefined));
      // Its lock file goes into the target too, so it stops there.
      expect(received[1]).toMatchObject({
        event: 'verify.failed',
        id: verify,
        summary: expect.stringMatching(/^list locks\/ in dir:\S+: ENOTDIR: not a directory/) as unknown,
      });
      const listed = await call(daemon, 'GET', '/snapshots');
      expect(listed.status).toBe(502);
      expect(listed.body['error']).toMatch(/^list snapshots\/ in dir:\S+: ENOTDIR: not a directory/);
      const metrics = String((await call(daemon, 'GET', '/metrics')).body);
      expect(sample(metrics, 'deis_backup_verify_success', 'read_data="false"')).toBe(0);
      expect(sample(metrics, 'deis_backup_restore_test_success')).toBe(0);
    } finally {
      hook.close();
    }
  });

  it('fails a backup that loses the cluster lock: metrics, webhook and a log line with the reason', async () => {
    const hook = await webhookReceiver();
    const { received } = hook;
    const key = `/deis-backup-test/${unique('lost')}/lock`;
    const etcdKey = `${stack.etcdEndpoint}/v2/keys${key}`;
    try {
      const { daemon, config } = await start({
        sources: {
          buckets: { enabled: false },
          volume: { path: volume },
          // Long enough for the lock, refreshed every second, to be found taken over mid-run.
          database: { host: 'local', command: `sleep 8; ${stackDumpCommand(stack)}` },
        },
        webhook: { url: hook.url },
        lock: { key, ttlSeconds: 3 },
      });
      const id = String((await call(daemon, 'POST', '/backups')).body['id']);
      await until('the lock to be taken', async () =>
        (await fetch(etcdKey, { signal })).status === 200 ? true : undefined,
      );
      // Another holder overwrites the key, as a takeover after a missed refresh would.
      const intruder = JSON.stringify({
        holder: 'host-gone-4242-0000',
        operation: 'restore',
        host: 'host-gone',
        pid: 4242,
        since: new Date().toISOString(),
        expiresAt: new Date(Date.now() + 60_000).toISOString(),
      });
      const put = await fetch(etcdKey, {
        method: 'PUT',
        body: new URLSearchParams({ value: intruder }),
        signal,
      });
      expect(put.status).toBe(200);

      expect(await finished(daemon, 'backups', id)).toMatchObject({ status: 'failed' });
      const reason = new RegExp(
        `^lost the cluster lock at etcd ${key}: the key now holds restore by host-gone`,
      );
      const failed = logs
        .map((line) => JSON.parse(line) as { msg: string; runId?: string; error?: string })
        .find((line) => line.runId === id && line.msg === 'backup failed');
      expect(failed?.error).toMatch(reason);
      const metrics = String((await call(daemon, 'GET', '/metrics')).body);
      expect(sample(metrics, 'deis_backup_last_status', 'source="all"')).toBe(0);
      expect(sample(metrics, 'deis_backup_failure_total', 'source="all"')).toBe(1);
      // Each source of the run fails with it, though both read to the end or were reading.
      for (const source of ['volume', 'database']) {
        expect(sample(metrics, 'deis_backup_failure_total', `source="${source}"`), source).toBe(1);
        expect(sample(metrics, 'deis_backup_last_status', `source="${source}"`), source).toBe(0);
      }
      await until('the webhook', () => Promise.resolve(received.length > 0 ? true : undefined));
      expect(received[0]).toMatchObject({ event: 'backup.failed', id });
      expect(received[0]?.['error']).toMatch(reason);
      const repository = new Repository(
        new DirTarget(config.target.type === 'dir' ? config.target.path : ''),
      );
      expect(await repository.listSnapshots({ signal })).toEqual([]);
      await fetch(etcdKey, { method: 'DELETE', signal });
    } finally {
      hook.close();
    }
  });

  it('counts a backup of some sources that fails before reading them for those sources only', async () => {
    const target = join(tempDir('broken-target'), 'target');
    await writeFile(target, 'not a directory');
    const { daemon } = await start({
      sources: {
        buckets: { names: [wal, registry] },
        volume: { path: volume },
        database: { host: 'local', command: stackDumpCommand(stack) },
      },
      target: { type: 'dir', path: target },
    });
    const id = String((await call(daemon, 'POST', '/backups', { only: ['buckets', 'database'] })).body['id']);
    expect(await finished(daemon, 'backups', id)).toMatchObject({ status: 'failed' });
    const metrics = String((await call(daemon, 'GET', '/metrics')).body);
    for (const source of [`bucket:${wal}`, `bucket:${registry}`, 'database']) {
      expect(sample(metrics, 'deis_backup_attempt_total', `source="${source}"`), source).toBe(1);
      expect(sample(metrics, 'deis_backup_failure_total', `source="${source}"`), source).toBe(1);
      expect(sample(metrics, 'deis_backup_last_status', `source="${source}"`), source).toBe(0);
    }
    // Neither a source it was not asked for nor the whole backup.
    for (const source of ['volume', 'all'])
      expect(sample(metrics, 'deis_backup_attempt_total', `source="${source}"`), source).toBeUndefined();
  });

  it('turns /readyz 503 when the target stops and 200 when it returns', async () => {
    const port = 24700 + Math.floor(Math.random() * 200);
    const proxy = await switchableProxy(port, Number(new URL(stack.rgwEndpoint).port));
    try {
      const { daemon } = await start({
        sources: { buckets: { enabled: false }, volume: { path: volume }, database: { enabled: false } },
        target: stackS3TargetConfig(stack, `http://127.0.0.1:${port}`, unique('ready')),
      });
      expect((await call(daemon, 'GET', '/readyz')).body).toMatchObject({
        ready: false,
        reason: 'no successful restore point yet',
        targetUp: true,
      });
      expect(
        await finished(daemon, 'backups', String((await call(daemon, 'POST', '/backups')).body['id'])),
      ).toMatchObject({ status: 'success' });
      const ready = await call(daemon, 'GET', '/readyz');
      expect(ready.status).toBe(200);
      expect(ready.body).toMatchObject({ ready: true, targetUp: true, sources: { volume: {} } });
      await proxy.close();
      // /readyz may answer from a listing a few seconds old: the change shows within the cache time.
      const down = await until('readyz to turn 503', async () => {
        const answer = await call(daemon, 'GET', '/readyz');
        return answer.status === 503 ? answer : undefined;
      });
      expect(String(down.body['reason'])).toMatch(
        /^target s3:\/\/deis-backups\/ready_\w+ unreachable: .*(ECONNREFUSED|ECONNRESET)/,
      );
      expect(sample((await call(daemon, 'GET', '/metrics')).body, 'deis_backup_target_up')).toBe(0);
      await proxy.open();
      await until('readyz to turn 200', async () =>
        (await call(daemon, 'GET', '/readyz')).status === 200 ? true : undefined,
      );
    } finally {
      await proxy.close();
    }
  });

  it('restores over HTTP like the CLI, with progress visible while it runs', async () => {
    const target = tempDir('target');
    const { daemon } = await start({
      target: { type: 'dir', path: target },
      restore: { deisVersion: 'v1.13.4' },
    });
    expect(
      await finished(daemon, 'backups', String((await call(daemon, 'POST', '/backups')).body['id'])),
    ).toMatchObject({ status: 'success' });
    const newWal = unique('hwal');
    const newRegistry = unique('hreg');
    const into = join(tempDir('restored'), 'store');
    const accepted = await call(daemon, 'POST', '/restores', {
      snapshot: 'latest',
      buckets: { [wal]: newWal, [registry]: newRegistry },
      volumeTo: into,
      yes: true,
    });
    expect(accepted.status).toBe(202);
    const id = String(accepted.body['id']);
    const seen: unknown[] = [];
    const result = await until('the restore', async () => {
      const { body } = await call(daemon, 'GET', `/restores/${id}`);
      if (body['status'] === 'running' && body['progress']) seen.push(body['progress']);
      return body['status'] === 'running' ? undefined : body;
    });
    expect(result).toMatchObject({ status: 'success', result: { status: 'success' } });
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.at(-1)).toMatchObject({ steps: { preflight: { status: 'success' } } });
    const gateway = gatewayClient(stack);
    for (const [from, to] of [
      [wal, newWal],
      [registry, newRegistry],
    ] as const) {
      expect(await bucketContents(gateway, to)).toEqual(await bucketContents(gateway, from));
    }
    gateway.close();
    expect((await call(daemon, 'GET', '/restores/restore-nope')).status).toBe(404);
    expect((await call(daemon, 'DELETE', `/restores/${id}`)).status).toBe(409);

    // The finishing step alone: no data step, and for this Deis version nothing to republish.
    const finish = await call(daemon, 'POST', '/restores', { snapshot: 'latest', only: ['finish'] });
    expect(finish.status).toBe(202);
    expect(await finished(daemon, 'restores', String(finish.body['id']))).toMatchObject({
      status: 'success',
      result: {
        status: 'success',
        steps: [],
        republish: 'none',
        next: [
          expect.stringMatching(
            /^Deis v1\.13\.4 republishes .*: nothing to run, unless deis-controller started before the database was restored, which published an empty platform: then restart it \(deisctl restart controller\)$/,
          ),
          expect.any(String),
        ],
      },
    });
  });

  it('names its own request, not the CLI, for running the finishing step alone', async () => {
    // No controller host is known (the stack's etcd has no /deis/controller/host): nothing runs.
    const { daemon } = await start({
      sources: { buckets: { enabled: false }, volume: { path: volume }, database: { enabled: false } },
      restore: { deisVersion: 'v1.10.1' },
    });
    const backup = await finished(
      daemon,
      'backups',
      String((await call(daemon, 'POST', '/backups')).body['id']),
    );
    const snapshot = String((backup['result'] as Record<string, unknown>)['id']);
    const finish = await call(daemon, 'POST', '/restores', { snapshot, only: ['finish'] });
    const result = (await finished(daemon, 'restores', String(finish.body['id'])))['result'] as RestoreReport;
    expect(result.status).toBe('failed');
    expect(result.next[0]).toContain(
      `no controller host is known (restore.controllerHost, /deis/controller/host): once deis-controller runs, send POST /restores {"snapshot":"${snapshot}","only":["finish"]}, or feed this to`,
    );
  });

  it('starts and stops cleanly when SIGTERM comes while it starts, with runAtStart', async () => {
    const shutdown = new AbortController();
    shutdown.abort(new BackupError('ERR_ABORTED', 'interrupted'));
    const { daemon } = await start({ schedule: { cron: '0 3 * * *', runAtStart: true } }, shutdown);
    expect(daemon.operations.current()).toBeUndefined();
    await daemon.stop();
    expect(logs.at(-1)).toContain('"msg":"daemon stopped"');
  });

  it('reports a backup committed when a shutdown stops its retention: the point stands, retention stopped', async () => {
    const shutdown = new AbortController();
    const { daemon, config } = await start(
      { sources: { buckets: { enabled: false }, volume: { path: volume }, database: { enabled: false } } },
      shutdown,
    );
    // SIGTERM right after the manifest is written, before retention has read anything.
    onLog = (line) => {
      if (line.includes('"msg":"restore point committed"')) {
        shutdown.abort(new BackupError('ERR_ABORTED', 'interrupted'));
      }
    };
    let op;
    try {
      const id = String((await call(daemon, 'POST', '/backups')).body['id']);
      op = await finished(daemon, 'backups', id);
    } finally {
      onLog = undefined;
    }
    const repository = new Repository(new DirTarget(config.target.type === 'dir' ? config.target.path : ''));
    const [committed, ...others] = await repository.listSnapshots({ signal });
    expect(others).toEqual([]);
    expect(op).toMatchObject({
      status: 'success',
      result: { id: committed?.id, retention: { error: 'stopped: interrupted' } },
    });
    const lines = logs.map((line) => JSON.parse(line) as { msg: string; runId?: string; error?: string });
    expect(lines.find((line) => line.runId === op['id'] && line.msg === 'retention failed')?.error).toBe(
      'stopped: interrupted',
    );
    expect(lines.some((line) => line.runId === op['id'] && line.msg.startsWith('backup aborted'))).toBe(
      false,
    );
  });

  it('aborts a running backup on SIGTERM: no new restore point, the old ones intact, a bounded exit', async () => {
    const target = tempDir('target');
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      sources: {
        buckets: { enabled: false },
        volume: { path: volume },
        database: { host: 'local', command: `sleep 20; ${stackDumpCommand(stack)}` },
      },
      target: { type: 'dir', path: target },
      http: { host: '127.0.0.1', port: 24690, token: TOKEN },
    });
    const repository = new Repository(new DirTarget(target));
    expect((await cli(['backup', '--config', file, '--only', 'volume'])).code).toBe(0);
    const before = await repository.listSnapshots({ signal });
    const child = spawn(
      'node',
      [join(import.meta.dirname, '..', '..', 'dist', 'bin.js'), 'daemon', '--config', file],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    await until('the daemon', () => Promise.resolve(output.includes('listening') ? true : undefined));
    const accepted = await fetch('http://127.0.0.1:24690/backups', {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    expect(accepted.status).toBe(202);
    await new Promise((r) => setTimeout(r, 1000));
    const t0 = Date.now();
    child.kill('SIGTERM');
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(code).toBe(0);
    expect(output).toContain('backup aborted: no restore point written');
    const after = await repository.listSnapshots({ signal });
    expect(after.map((m) => m.id)).toEqual(before.map((m) => m.id));
  });
});
