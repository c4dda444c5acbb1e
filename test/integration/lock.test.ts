// The one-runner cluster lock on the stack's real etcd (v2 API) and on real targets (a directory and
// radosgw S3): exclusion, expiry of a crashed holder, refresh of a live one, waiting, and losing it.
import { execFile } from 'node:child_process';
import { hostname } from 'node:os';
import { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, it } from 'vitest';
import { BackupError } from '../../src/errors.js';
import { createEtcd, type Etcd } from '../../src/etcd.js';
import { EtcdLock } from '../../src/lock/etcd-lock.js';
import {
  acquireLock,
  describeHolder,
  type ClusterLock,
  type HeldLock,
  type LockHolder,
} from '../../src/lock/lock.js';
import { LOCKS, TargetLock } from '../../src/lock/target-lock.js';
import { DirTarget } from '../../src/targets/dir.js';
import { loadConfig } from '../../src/config.js';
import { createClusterEtcd, createClusterLock, createRepository } from '../../src/wiring.js';
import type { PutOptions, Target } from '../../src/targets/target.js';
import { stackS3Target } from '../fixtures/s3-target.js';
import { startFaultProxy } from '../fixtures/fault-proxy.js';
import type { Stack } from '../fixtures/stack.js';
import { describeWithStack, tempDir, unique, writeConfig } from './helpers.js';

const TTL = 3;
const signal = AbortSignal.timeout(300_000);

/** One lock namespace of a backend, fresh for each test. */
interface Backend {
  lock: ClusterLock;
  /** Writes a holder's record as a crashed process left it: nobody refreshes it. */
  plant: (holder: LockHolder) => Promise<void>;
  /** Deletes every lock record, as an operator clearing a lock would. */
  clear: () => Promise<void>;
}

/** The etcd directories this file made, removed after it: etcd v2 keeps a directory its keys left. */
const etcdDirs: string[] = [];

const FORM = { 'content-type': 'application/x-www-form-urlencoded' };

function etcdKey(): string {
  const dir = `/deis-backup-test/${unique('lock')}`;
  etcdDirs.push(dir);
  return `${dir}/lock`;
}

function etcdBackend(stack: Stack): Backend {
  const etcd = createEtcd([stack.etcdEndpoint], 5000);
  const key = etcdKey();
  return {
    lock: new EtcdLock(etcd, { key, ttlSeconds: TTL }),
    async plant(holder) {
      if (!(await etcd.create(key, JSON.stringify(holder), { ttlSeconds: TTL, signal }))) {
        throw new Error(`${key} exists`);
      }
    },
    async clear() {
      await etcdRequest(stack, key, 'DELETE');
    },
  };
}

function targetBackend(target: Target): Backend {
  return {
    lock: new TargetLock(target, { ttlSeconds: TTL }),
    async plant(holder) {
      const body = Buffer.from(JSON.stringify(holder));
      await target.put(`${LOCKS}${holder.holder}.json`, Readable.from([body]), { signal, size: body.length });
    },
    async clear() {
      for (const key of await lockFiles(target)) await target.remove(key, { signal });
    },
  };
}

async function lockFiles(target: Target): Promise<string[]> {
  const keys: string[] = [];
  for await (const info of target.list(LOCKS, { signal })) keys.push(info.key);
  return keys.sort();
}

/** A raw etcd v2 request, for what the client under test must not be used for. */
async function etcdRequest(stack: Stack, key: string, method: 'PUT' | 'DELETE', value?: string) {
  const res = await fetch(`${stack.etcdEndpoint}/v2/keys${key}`, {
    method,
    ...(value === undefined ? {} : { body: new URLSearchParams({ value }) }),
    signal,
  });
  return { status: res.status, body: (await res.json()) as { node?: { value?: string } } };
}

/** A record as a holder on another host that has since died would have written it. */
function crashedHolder(): LockHolder {
  const now = new Date();
  return {
    holder: `host-gone-4242-${Date.now().toString(16)}`,
    operation: 'backup',
    host: 'host-gone',
    pid: 4242,
    since: now.toISOString(),
    expiresAt: new Date(now.getTime() + TTL * 1000).toISOString(),
  };
}

function held(result: { held: HeldLock } | { busy: LockHolder | undefined }): HeldLock {
  if (!('held' in result))
    throw new Error(`expected the lock, but it is held by ${describeHolder(result.busy)}`);
  return result.held;
}

function busy(result: { held: HeldLock } | { busy: LockHolder | undefined }): LockHolder | undefined {
  if ('held' in result) throw new Error(`expected busy, but got the lock as ${result.held.holder.holder}`);
  return result.busy;
}

/** The reason `lost` aborts with, or a failure when it does not within ms. */
async function whenLost(lock: HeldLock, ms: number): Promise<unknown> {
  if (lock.lost.aborted) return lock.lost.reason;
  return Promise.race([
    new Promise((resolve) => {
      lock.lost.addEventListener('abort', () => {
        resolve(lock.lost.reason);
      });
    }),
    delay(ms, undefined, { ref: false }).then(() => {
      throw new Error(`the lock was not lost within ${ms} ms`);
    }),
  ]);
}

describeWithStack('cluster lock', (stack) => {
  afterAll(async () => {
    for (const dir of etcdDirs) {
      await fetch(`${stack.etcdEndpoint}/v2/keys${dir}?recursive=true`, { method: 'DELETE', signal });
    }
  });

  const backends: [string, () => Backend][] = [
    ['etcd', () => etcdBackend(stack)],
    ['target(dir)', () => targetBackend(new DirTarget(tempDir('lock')))],
    ['target(s3)', () => targetBackend(stackS3Target(stack, unique('lock')))],
  ];

  describe.concurrent.each(backends)('%s', (_name, make) => {
    it('refuses a second holder, naming the first, and can be taken again after release', async ({
      expect,
    }) => {
      const { lock } = make();
      const first = held(await lock.tryAcquire('backup', { signal }));
      expect(first.holder).toMatchObject({ operation: 'backup', host: hostname(), pid: process.pid });
      expect(first.holder.holder).toMatch(new RegExp(`^${hostname()}-${process.pid}-[0-9a-f]+$`));
      const other = busy(await lock.tryAcquire('restore', { signal }));
      expect(other?.holder).toBe(first.holder.holder);
      expect(describeHolder(other)).toMatch(
        new RegExp(`^backup by ${hostname()} pid ${process.pid} since ${first.holder.since}, expires \\S+$`),
      );
      await first.release();
      await first.release();
      const next = held(await lock.tryAcquire('restore', { signal }));
      expect(next.holder.holder).not.toBe(first.holder.holder);
      expect(first.lost.aborted).toBe(false);
      await next.release();
    });

    it('lets the lock of a crashed holder expire after the TTL', async ({ expect }) => {
      const { lock, plant } = make();
      const crashed = crashedHolder();
      await plant(crashed);
      expect(describeHolder(busy(await lock.tryAcquire('backup', { signal })))).toMatch(
        /^backup by host-gone pid 4242 since /,
      );
      const waits: (LockHolder | undefined)[] = [];
      const started = Date.now();
      const result = await acquireLock(lock, 'backup', {
        waitSeconds: TTL + 5,
        signal,
        onWait: (h) => waits.push(h),
      });
      expect(Date.now() - started).toBeGreaterThan(1000);
      expect(waits.map((h) => h?.holder)).toEqual([crashed.holder]);
      await held(result).release();
    });

    it('keeps a live holder past twice the TTL by refreshing it', async ({ expect }) => {
      const { lock } = make();
      const first = held(await lock.tryAcquire('backup', { signal }));
      const firstExpiry = first.holder.expiresAt;
      await delay(2 * TTL * 1000 + 500);
      expect(busy(await lock.tryAcquire('restore', { signal }))?.holder).toBe(first.holder.holder);
      expect(first.lost.aborted).toBe(false);
      expect(Date.parse(first.holder.expiresAt)).toBeGreaterThan(Date.parse(firstExpiry));
      await first.release();
    });

    it('waits for the holder to release when asked to, and gives up after waitSeconds', async ({
      expect,
    }) => {
      const { lock } = make();
      const first = held(await lock.tryAcquire('backup', { signal }));
      let started = Date.now();
      busy(await acquireLock(lock, 'restore', { waitSeconds: 0, signal }));
      expect(Date.now() - started).toBeLessThan(2000);
      started = Date.now();
      const gaveUp = await acquireLock(lock, 'restore', { waitSeconds: 2, signal });
      expect(busy(gaveUp)?.holder).toBe(first.holder.holder);
      expect(Date.now() - started).toBeGreaterThanOrEqual(1900);

      const waits: (LockHolder | undefined)[] = [];
      setTimeout(() => void first.release(), 1500);
      started = Date.now();
      const second = held(
        await acquireLock(lock, 'restore', { waitSeconds: 20, signal, onWait: (h) => waits.push(h) }),
      );
      expect(Date.now() - started).toBeGreaterThanOrEqual(1400);
      expect(waits.map((h) => h?.holder)).toEqual([first.holder.holder]);
      await second.release();
    });

    it('tells a holder whose record was removed that it lost the lock; its release spares the next holder', async ({
      expect,
    }) => {
      const { lock, clear } = make();
      const first = held(await lock.tryAcquire('backup', { signal }));
      await clear();
      const reason = await whenLost(first, TTL * 1000 + 2000);
      expect(reason).toBeInstanceOf(BackupError);
      expect(reason).toMatchObject({ code: 'ERR_LOCKED' });
      expect((reason as Error).message).toMatch(
        new RegExp(`^lost the cluster lock at ${escape(lock.where)}: `),
      );
      const second = held(await lock.tryAcquire('restore', { signal }));
      await first.release();
      expect(busy(await lock.tryAcquire('backup', { signal }))?.holder).toBe(second.holder.holder);
      expect(second.lost.aborted).toBe(false);
      await second.release();
    });

    it('gives the lock to exactly one of five racing runners', async ({ expect }) => {
      const { lock } = make();
      const results = await Promise.all(
        Array.from({ length: 5 }, (_, i) => lock.tryAcquire(`race-${i}`, { signal })),
      );
      const winners = results.filter((r) => 'held' in r);
      expect(winners).toHaveLength(1);
      const winner = held(winners[0] ?? { busy: undefined });
      for (const r of results) {
        if (!('held' in r) && r.busy !== undefined) expect(r.busy.holder).toBe(winner.holder.holder);
      }
      expect(busy(await lock.tryAcquire('late', { signal }))?.holder).toBe(winner.holder.holder);
      await winner.release();
      await held(await lock.tryAcquire('after', { signal })).release();
    });
  });

  describe.concurrent('etcd', () => {
    it('creates, refreshes and removes only by comparing values: a non-holder removes nothing', async ({
      expect,
    }) => {
      const etcd = createEtcd([stack.etcdEndpoint], 5000);
      const key = etcdKey();
      const ttl = { ttlSeconds: TTL, signal };
      expect(await etcd.create(key, 'ours', ttl)).toBe(true);
      expect(await etcd.create(key, 'theirs', ttl)).toBe(false);
      expect(await etcd.refresh(key, 'theirs', ttl)).toBe(false);
      expect(await etcd.remove(key, 'theirs', { signal })).toBe(false);
      expect(await etcd.get(key, { signal })).toBe('ours');
      const before = await etcd.getNode(key, { signal });
      await delay(1100);
      expect(await etcd.refresh(key, 'ours', ttl)).toBe(true);
      const after = await etcd.getNode(key, { signal });
      expect(after?.value).toBe('ours');
      expect(Date.parse(after?.expiration ?? '')).toBeGreaterThan(Date.parse(before?.expiration ?? ''));
      expect(await etcd.remove(key, 'ours', { signal })).toBe(true);
      expect(await etcd.get(key, { signal })).toBeUndefined();
      expect(await etcd.refresh(key, 'ours', ttl)).toBe(false);
      expect(await etcd.remove(key, 'ours', { signal })).toBe(false);
      expect(await etcd.create(key, 'again', { ttlSeconds: TTL, signal })).toBe(true);
      expect(await etcd.remove(key, 'again', { signal })).toBe(true);
    });

    it('fails over to the next endpoint, and names every endpoint in one line when none answers', async ({
      expect,
    }) => {
      const key = etcdKey();
      const failover = createEtcd(['http://127.0.0.1:24999', stack.etcdEndpoint], 2000);
      expect(await failover.create(key, 'v', { ttlSeconds: TTL, signal })).toBe(true);
      expect(await failover.refresh(key, 'v', { ttlSeconds: TTL, signal })).toBe(true);
      expect(await failover.remove(key, 'v', { signal })).toBe(true);
      const dead = createEtcd(['http://127.0.0.1:24999', 'http://127.0.0.1:24998'], 2000);
      const err = await dead.create(key, 'v', { ttlSeconds: TTL, signal }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BackupError);
      expect(err).toMatchObject({
        code: 'ERR_ETCD',
        message: `etcd: cannot create ${key} at http://127.0.0.1:24999 (ECONNREFUSED), http://127.0.0.1:24998 (ECONNREFUSED); check etcd.endpoints (Deis v1 serves the v2 API on port 4001)`,
      });
      await expect(dead.refresh(key, 'v', { ttlSeconds: TTL, signal })).rejects.toThrow(
        /^etcd: cannot refresh .* at http:\/\/127\.0\.0\.1:24999 \(ECONNREFUSED\)/,
      );
      await expect(dead.remove(key, 'v', { signal })).rejects.toThrow(/^etcd: cannot remove /);
      await expect(
        new EtcdLock(dead, { key, ttlSeconds: TTL }).tryAcquire('backup', { signal }),
      ).rejects.toThrow(/^etcd: cannot create /);
    });

    it('loses the lock when another value overwrites the key, and leaves that value alone', async ({
      expect,
    }) => {
      const key = etcdKey();
      const etcd = createEtcd([stack.etcdEndpoint], 5000);
      const lock = new EtcdLock(etcd, { key, ttlSeconds: TTL });
      const first = held(await lock.tryAcquire('backup', { signal }));
      const intruder = JSON.stringify({ ...crashedHolder(), operation: 'restore' });
      expect((await etcdRequest(stack, key, 'PUT', intruder)).status).toBe(200);
      const reason = await whenLost(first, TTL * 1000);
      expect((reason as Error).message).toMatch(
        new RegExp(`^lost the cluster lock at etcd ${key}: the key now holds restore by host-gone pid 4242 `),
      );
      await first.release();
      expect(await etcd.get(key, { signal })).toBe(intruder);
      // A value that is no LockHolder (a hand-made key) still blocks, from an unknown holder.
      await etcdRequest(stack, key, 'PUT', 'not json');
      expect(describeHolder(busy(await lock.tryAcquire('backup', { signal })))).toBe('an unknown holder');
      await etcdRequest(stack, key, 'DELETE');
    });

    it('refuses a lock.key that is an etcd directory, and names one that becomes one while held', async ({
      expect,
    }) => {
      const key = etcdKey();
      const etcd = createEtcd([stack.etcdEndpoint], 5000);
      const lock = new EtcdLock(etcd, { key, ttlSeconds: TTL });
      await fetch(`${stack.etcdEndpoint}/v2/keys${key}/inside`, {
        method: 'PUT',
        body: 'value=x',
        headers: FORM,
        signal,
      });
      await expect(lock.tryAcquire('backup', { signal })).rejects.toMatchObject({
        code: 'ERR_CONFIG',
        message: `lock.key ${key} is a directory in etcd; set lock.key to a key of its own, such as /deis/backup/lock`,
      });
      await fetch(`${stack.etcdEndpoint}/v2/keys${key}?recursive=true`, { method: 'DELETE', signal });
      const first = held(await lock.tryAcquire('backup', { signal }));
      await etcdRequest(stack, key, 'DELETE');
      await fetch(`${stack.etcdEndpoint}/v2/keys${key}?dir=true`, { method: 'PUT', signal });
      const reason = await whenLost(first, TTL * 1000);
      expect((reason as Error).message).toBe(
        `lost the cluster lock at etcd ${key}: the key is now a directory`,
      );
      await first.release();
    });

    it('rides out an etcd outage shorter than the TTL, and is lost once one outlasts it', async ({
      expect,
    }) => {
      const key = etcdKey();
      const live = createEtcd([stack.etcdEndpoint], 5000);
      const down = createEtcd(['http://127.0.0.1:24999'], 500);
      let outage = false;
      const flaky: Etcd = {
        get: (...a) => live.get(...a),
        getNode: (...a) => live.getNode(...a),
        create: (...a) => live.create(...a),
        refresh: (...a) => (outage ? down : live).refresh(...a),
        remove: (...a) => live.remove(...a),
        clusterId: () => live.clusterId(),
      };
      const first = held(
        await new EtcdLock(flaky, { key, ttlSeconds: TTL }).tryAcquire('backup', { signal }),
      );
      outage = true;
      await delay(1800);
      outage = false;
      await delay(2500);
      expect(first.lost.aborted).toBe(false);
      outage = true;
      const reason = await whenLost(first, TTL * 1000 + 1500);
      expect((reason as Error).message).toMatch(
        new RegExp(
          `^lost the cluster lock at etcd ${key}: not refreshed before it expired at \\S+ \\(last refresh error: etcd: cannot refresh ${key} at http://127.0.0.1:24999 \\(ECONNREFUSED\\)`,
        ),
      );
      await first.release();
      await etcdRequest(stack, key, 'DELETE');
    });

    it('never keeps the process alive: a runner that exits without releasing ends at once', async ({
      expect,
    }) => {
      const key = etcdKey();
      const modules = (name: string) => fileURLToPath(new URL(`../../src/${name}`, import.meta.url));
      const script = [
        `import { createEtcd } from ${JSON.stringify(modules('etcd.ts'))};`,
        `import { EtcdLock } from ${JSON.stringify(modules('lock/etcd-lock.ts'))};`,
        `const lock = new EtcdLock(createEtcd([${JSON.stringify(stack.etcdEndpoint)}], 5000), { key: ${JSON.stringify(key)}, ttlSeconds: 60 });`,
        `const r = await lock.tryAcquire('backup', { signal: AbortSignal.timeout(10000) });`,
        `console.log('held' in r ? 'held' : 'busy');`,
      ].join('\n');
      const started = Date.now();
      const { stdout } = await promisify(execFile)(
        process.execPath,
        ['--import', 'tsx', '--input-type=module', '-e', script],
        { timeout: 30_000 },
      );
      expect(stdout.trim()).toBe('held');
      expect(Date.now() - started).toBeLessThan(15_000);
      const left = await etcdRequest(stack, key, 'DELETE');
      expect(left.status).toBe(200);
    });
  });

  describe.concurrent('etcd and target runners on one target', () => {
    /**
     * The locks two configs give for one target: the daemon's, whose etcd.endpoints (or ETCD) makes
     * `auto` the etcd backend, and a one-off run's without etcd, whose `auto` is the target backend.
     */
    const runners = async () => {
      const target = { type: 'dir', path: tempDir('lock') };
      const key = etcdKey();
      const lockOf = async (file: string) => {
        const config = loadConfig({ file, env: {} });
        return createClusterLock(config, createClusterEtcd(config), (await createRepository(config)).target);
      };
      const daemonOn = (endpoints: string[]) =>
        lockOf(writeConfig({ etcd: { endpoints }, lock: { key, ttlSeconds: TTL }, target }));
      const daemon = await daemonOn([stack.etcdEndpoint]);
      // The daemon as fleet starts it on another host: its ETCD names another member of the cluster
      // (here a dead endpoint first, then the same server).
      const moved = await daemonOn(['http://127.0.0.1:24999', stack.etcdEndpoint]);
      const oneOff = await lockOf(writeConfig({ lock: { ttlSeconds: TTL }, target }));
      return { daemon, moved, oneOff, key, dir: new DirTarget(target.path) };
    };

    it('keeps a target-backend runner out while the etcd lock is held, and names its holder', async ({
      expect,
    }) => {
      const { daemon, oneOff, key, dir } = await runners();
      expect(daemon.where).toBe(`etcd ${key} (and ${dir.name}/${LOCKS})`);
      const first = held(await daemon.tryAcquire('backup', { signal }));
      const other = busy(await oneOff.tryAcquire('prune', { signal }));
      expect(other).toMatchObject({ operation: 'backup', host: hostname(), pid: process.pid });
      // Still held past the TTL: the file in the target is refreshed with the etcd key.
      await delay(TTL * 1000 + 500);
      expect(busy(await oneOff.tryAcquire('prune', { signal }))).toMatchObject({ operation: 'backup' });
      expect(first.lost.aborted).toBe(false);
      await first.release();
      expect(await lockFiles(dir)).toEqual([]);
      expect(await createEtcd([stack.etcdEndpoint], 5000).get(key, { signal })).toBeUndefined();
      await held(await oneOff.tryAcquire('prune', { signal })).release();
    });

    it('keeps an etcd-backend runner out while a target-backend runner holds the lock, leaving etcd free', async ({
      expect,
    }) => {
      const { daemon, oneOff, key } = await runners();
      const first = held(await oneOff.tryAcquire('prune', { signal }));
      expect(busy(await daemon.tryAcquire('backup', { signal }))?.holder).toBe(first.holder.holder);
      // The etcd key it took on the way was given back.
      expect(await createEtcd([stack.etcdEndpoint], 5000).get(key, { signal })).toBeUndefined();
      await first.release();
      const next = held(await daemon.tryAcquire('backup', { signal }));
      expect(busy(await daemon.tryAcquire('verify', { signal }))?.holder).toBe(next.holder.holder);
      await next.release();
    });

    it('takes over the file an earlier holder of the same etcd key left, which still keeps target runners out', async ({
      expect,
    }) => {
      const { daemon, moved, oneOff, key, dir } = await runners();
      const first = held(await daemon.tryAcquire('backup', { signal }));
      const [file] = await lockFiles(dir);
      if (file === undefined) throw new Error('no lock file');
      const left = JSON.parse(await readAll(await dir.get(file, { signal }))) as LockHolder;
      // Named by the cluster's id, as etcd sends it with every answer.
      const { headers } = await fetch(`${stack.etcdEndpoint}/v2/keys/`);
      const id = headers.get('x-etcd-cluster-id');
      expect(id).toMatch(/^[0-9a-f]+$/);
      expect(left.pairedWith).toBe(`etcd cluster ${String(id)} ${key}`);
      await first.release();
      // As a holder leaves it when the target is down at its release: the etcd key is gone, its file not.
      const leave = async (record: LockHolder) => {
        const body = Buffer.from(
          JSON.stringify({ ...record, expiresAt: new Date(Date.now() + 60_000).toISOString() }),
        );
        await dir.put(file, Readable.from([body]), { signal, size: body.length });
      };
      await leave(left);
      expect(busy(await oneOff.tryAcquire('prune', { signal }))?.holder).toBe(left.holder);
      const next = held(await daemon.tryAcquire('backup', { signal }));
      // The left file is gone; the one there now is the new holder's.
      const now = await lockFiles(dir);
      expect(now).toHaveLength(1);
      expect(now).not.toContain(file);
      await next.release();
      // So it is for the daemon fleet moved to another host, which reaches the cluster by other endpoints.
      await leave(left);
      const afterMove = held(await moved.tryAcquire('backup', { signal }));
      const afterMoveFiles = await lockFiles(dir);
      expect(afterMoveFiles).toHaveLength(1);
      expect(afterMoveFiles).not.toContain(file);
      await afterMove.release();
      // The same key in another cluster, whose runner uses this target too, is a live lock to it.
      await leave({ ...left, pairedWith: `etcd cluster 0123456789abcdef ${key}` });
      expect(busy(await daemon.tryAcquire('backup', { signal }))?.holder).toBe(left.holder);
      // And so is one named by endpoints (etcd 0.4 sends no id, and earlier versions did not use it):
      // it waits out its TTL.
      await leave({ ...left, pairedWith: `etcd ${stack.etcdEndpoint} ${key}` });
      expect(busy(await daemon.tryAcquire('backup', { signal }))?.holder).toBe(left.holder);
      await dir.remove(file, { signal });
    });

    it("keeps one holder when a target runner's put lands after the etcd runner looked", async ({
      expect,
    }) => {
      const { daemon, dir } = await runners();
      // The target runner's put is slow to land: the etcd runner lists and takes the lock meanwhile.
      let land: () => void = () => undefined;
      const landing = new Promise<void>((resolve) => {
        land = resolve;
      });
      const slow = new (class extends DirTarget {
        override async put(key: string, body: Readable, opts: PutOptions): Promise<void> {
          await landing;
          await super.put(key, body, opts);
        }
      })(dir.name.slice('dir:'.length));
      const taking = new TargetLock(slow, { ttlSeconds: TTL }).tryAcquire('prune', { signal });
      const first = held(await daemon.tryAcquire('backup', { signal }));
      land();
      // Its since is the earlier, but it gives way to the etcd runner's file once it sees it.
      expect(busy(await taking)).toMatchObject({ operation: 'backup' });
      await delay(TTL * 1000);
      expect(first.lost.aborted).toBe(false);
      await first.release();
      expect(await lockFiles(dir)).toEqual([]);
    });

    it('loses the etcd lock when its file in the target is removed', async ({ expect }) => {
      const { daemon, dir } = await runners();
      const first = held(await daemon.tryAcquire('backup', { signal }));
      for (const file of await lockFiles(dir)) await dir.remove(file, { signal });
      const reason = await whenLost(first, TTL * 1000 + 2000);
      expect((reason as Error).message).toMatch(
        new RegExp(`^lost the cluster lock at ${escape(`${dir.name}/${LOCKS}`)}: \\S+ was removed$`),
      );
      await first.release();
    });
  });

  describe.concurrent('an abort while taking the lock', () => {
    it('etcd: removes a key whose create landed but whose answer the abort cut off', async ({ expect }) => {
      const proxy = await startFaultProxy(Number(new URL(stack.etcdEndpoint).port));
      const direct = createEtcd([stack.etcdEndpoint], 5000);
      try {
        const key = etcdKey();
        const lock = new EtcdLock(createEtcd([`http://127.0.0.1:${proxy.port}`], 5000), {
          key,
          ttlSeconds: 60,
        });
        // etcd makes the key; the first byte of its answer is held.
        const stalled = proxy.stallAfter('down', 1, { oneConnection: true });
        const controller = new AbortController();
        const taking = lock.tryAcquire('backup', { signal: controller.signal });
        taking.catch(() => undefined);
        await stalled;
        expect(await direct.get(key, { signal })).toBeDefined();
        controller.abort(new Error('shutting down'));
        await expect(taking).rejects.toThrow('shutting down');
        // Not left to its 60 s TTL, where the next run would find it held by this process.
        expect(await direct.get(key, { signal })).toBeUndefined();
      } finally {
        await proxy.cut();
      }
    });

    it('target: removes a lock file whose put landed but whose answer the abort cut off', async ({
      expect,
    }) => {
      const root = tempDir('lock');
      const controller = new AbortController();
      // A directory whose put of a lock file lands, then waits for the abort as a lost answer would.
      let isLanded: () => void = () => undefined;
      const landed = new Promise<void>((resolve) => {
        isLanded = resolve;
      });
      const slow = new (class extends DirTarget {
        override async put(key: string, body: Readable, opts: PutOptions): Promise<void> {
          await super.put(key, body, { ...opts, signal });
          isLanded();
          await new Promise((_resolve, reject) => {
            opts.signal.addEventListener('abort', () => {
              reject(opts.signal.reason as Error);
            });
          });
        }
      })(root);
      const taking = new TargetLock(slow, { ttlSeconds: 60 }).tryAcquire('backup', {
        signal: controller.signal,
      });
      taking.catch(() => undefined);
      await landed;
      const dir = new DirTarget(root);
      expect(await lockFiles(dir)).toHaveLength(1);
      controller.abort(new Error('shutting down'));
      await expect(taking).rejects.toThrow('shutting down');
      expect(await lockFiles(dir)).toEqual([]);
    });
  });

  describe.concurrent('target', () => {
    it('removes expired lock files it finds and leaves only its own', async ({ expect }) => {
      const target = new DirTarget(tempDir('lock'));
      const { lock, plant } = targetBackend(target);
      const crashed = { ...crashedHolder(), expiresAt: new Date(Date.now() - 1000).toISOString() };
      await plant(crashed);
      const first = held(await lock.tryAcquire('backup', { signal }));
      expect(await lockFiles(target)).toEqual([`${LOCKS}${first.holder.holder}.json`]);
      await first.release();
      expect(await lockFiles(target)).toEqual([]);
    });
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

async function readAll(body: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
