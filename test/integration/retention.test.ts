// Retention against the real stack: forget + prune on a target with many restore points removes
// exactly what the dropped points alone referenced, and every kept point still restores whole.
import { copyFile, mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { forget } from '../../src/repository/forget.js';
import { FULL_PRUNE_EVERY_MS, fullPruneDue, prune } from '../../src/repository/prune.js';
import { Repository } from '../../src/repository/repository.js';
import { silentLogger } from '../../src/logger.js';
import type { S3Client } from '../../src/s3/client.js';
import { DirTarget } from '../../src/targets/dir.js';
import { BackupError } from '../../src/errors.js';
import { craftedRestorePoint } from '../fixtures/crafted.js';
import { bytes } from '../fixtures/deis-sample.js';
import { stackDumpCommand } from '../fixtures/stack.js';
import {
  bucketContents,
  cli,
  describeTree,
  describeWithStack,
  gatewayClient,
  tempDir,
  unique,
  writeConfig,
} from './helpers.js';

const signal = AbortSignal.timeout(600_000);
const GENERATIONS = 6;

/** Every key in the target with its size. */
async function targetKeys(repository: Repository): Promise<Map<string, number>> {
  const keys = new Map<string, number>();
  for (const prefix of ['snapshots/', 'blobs/'])
    for await (const info of repository.target.list(prefix, { signal })) keys.set(info.key, info.size);
  return keys;
}

/** The keys a restore point needs: its folder's referenced artifacts, marker, manifest, and blobs. */
async function referencedKeys(repository: Repository, id: string): Promise<Set<string>> {
  const manifest = await repository.readManifest(id, { signal });
  const keys = new Set([`snapshots/${id}/manifest.json`, `snapshots/${id}/run.json`]);
  for (const source of manifest.sources)
    for (const artifact of source.artifacts) {
      keys.add(artifact.key);
      if (source.kind === 'bucket')
        for await (const entry of repository.readIndex(artifact, { signal })) keys.add(entry.blob);
    }
  return keys;
}

describeWithStack('retention', (stack) => {
  const bucket = unique('keep');
  let gateway: S3Client;

  beforeAll(async () => {
    gateway = gatewayClient(stack);
    await gateway.createBucket(bucket, { signal });
  });
  afterAll(() => {
    gateway.close();
  });

  /** Puts one object with metadata. */
  async function put(key: string, body: Buffer): Promise<void> {
    await gateway.putObject(bucket, key, body, {
      signal,
      size: body.length,
      contentType: 'application/octet-stream',
      metadata: { generation: key },
    });
  }

  it('forget --prune removes exactly what only dropped points referenced; kept points restore', async () => {
    const volume = tempDir('keep-volume');
    const target = tempDir('keep-target');
    const config = (retention: Record<string, unknown>) =>
      writeConfig({
        etcd: { endpoints: [stack.etcdEndpoint] },
        sources: {
          buckets: { names: [bucket] },
          volume: { path: volume },
          database: { enabled: false },
        },
        target: { type: 'dir', path: target },
        retention,
      });
    const keepAll = config({ keepLast: 100 });
    const generations: {
      id: string;
      contents: Awaited<ReturnType<typeof bucketContents>>;
      tree: Record<string, string>;
    }[] = [];
    // Each generation adds an object, rewrites a shared one, deletes an older one and grows a log.
    for (let g = 0; g < GENERATIONS; g++) {
      await put(`gen-${g}/layer`, bytes(`layer-${g}`, 40_000 + g));
      await put('shared/changing', bytes(`changing-${g}`, 20_000));
      await put('shared/constant', bytes('constant', 30_000));
      if (g >= 2) await gateway.deleteObject(bucket, `gen-${g - 2}/layer`, { signal });
      await writeFile(join(volume, 'deis.log'), `line ${g}\n`.repeat(100 * (g + 1)));
      const run = await cli(['backup', '--config', keepAll]);
      expect(run.code, run.err).toBe(0);
      generations.push({
        id: run.out.trim(),
        contents: await bucketContents(gateway, bucket),
        tree: await describeTree(volume),
      });
    }
    const repository = new Repository(new DirTarget(target));
    // An interrupted run's folder and body: prune removes them too.
    await repository.target.put(
      'snapshots/20200101T000000Z-dead/run.json',
      Readable.from([Buffer.from('{}')]),
      { signal },
    );
    await repository.target.put(`blobs/ff/${'f'.repeat(64)}`, Readable.from([Buffer.from('orphan')]), {
      signal,
    });

    const policy = config({ keepLast: 2, keepWithin: '1y' });
    // Everything is younger than a year: keepWithin keeps all, so only keepLast alone drops.
    const nothing = await cli(['forget', '--config', policy, '--dry-run', '--json']);
    expect(nothing.code, nothing.err).toBe(0);
    expect((JSON.parse(nothing.out) as { forget: { drop: unknown[] } }).forget.drop).toEqual([]);

    const lastTwo = config({ keepLast: 2 });
    const before = await targetKeys(repository);
    const dry = await cli(['forget', '--config', lastTwo, '--dry-run', '--prune']);
    expect(dry.code, dry.err).toBe(0);
    expect(dry.out).toContain('would drop');
    const dryJson = await cli(['forget', '--config', lastTwo, '--dry-run', '--prune', '--json']);
    expect(dryJson.code, dryJson.err).toBe(0);
    expect(await targetKeys(repository)).toEqual(before);

    const kept = generations.slice(-2);
    const expected = new Set<string>();
    for (const { id } of kept) for (const key of await referencedKeys(repository, id)) expected.add(key);

    const run = await cli(['forget', '--config', lastTwo, '--prune', '--json']);
    expect(run.code, run.err).toBe(0);
    const report = JSON.parse(run.out) as {
      forget: { keep: { id: string; reasons: string[] }[]; drop: { id: string }[]; freedBytes: number };
      prune: { removedBlobs: number; freedBytes: number; interrupted: string[] };
    };
    expect(report.forget.keep.map((e) => e.id)).toEqual(kept.map((k) => k.id));
    expect(report.forget.keep[1]?.reasons).toContain('last 1');
    expect(report.forget.drop.map((e) => e.id)).toEqual(generations.slice(0, -2).map((k) => k.id));
    expect(report.prune.interrupted).toEqual(['20200101T000000Z-dead']);
    // The dry run counted what the real one then did: the points it would drop as already gone.
    const { dryRun, ...wouldPrune } = (JSON.parse(dryJson.out) as { prune: Record<string, unknown> }).prune;
    const { dryRun: realDryRun, ...pruned } = report.prune as unknown as Record<string, unknown>;
    expect([dryRun, realDryRun]).toEqual([true, false]);
    expect(wouldPrune).toEqual(pruned);
    expect(report.prune.removedBlobs).toBeGreaterThan(0);

    const after = await targetKeys(repository);
    expect(new Set(after.keys())).toEqual(expected);
    const sum = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
    expect(report.forget.freedBytes + report.prune.freedBytes).toBe(sum(before) - sum(after));

    // Every kept restore point restores byte for byte: objects with their metadata, and the volume.
    for (const { id, contents, tree } of kept) {
      const into = unique('kept');
      const volumeTo = tempDir('kept-volume');
      const restored = await cli([
        'restore',
        id,
        '--config',
        lastTwo,
        '--only',
        'buckets,volume',
        '--bucket',
        `${bucket}=${into}`,
        '--volume-to',
        volumeTo,
        '--yes',
      ]);
      expect(restored.code, restored.err + restored.out).toBe(0);
      expect(await bucketContents(gateway, into)).toEqual(contents);
      expect(await describeTree(volumeTo)).toEqual(tree);
    }
  });

  it('applies the policy after each backup and never drops the newest success', async () => {
    const target = tempDir('auto-target');
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      sources: { buckets: { names: [bucket] }, volume: { enabled: false }, database: { enabled: false } },
      target: { type: 'dir', path: target },
      retention: { keepLast: 2 },
    });
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      await put(`auto-${i}`, bytes(`auto-${i}`, 1000));
      const run = await cli(['backup', '--config', file]);
      expect(run.code, run.err).toBe(0);
      ids.push(run.out.trim());
      if (i === 2) expect(run.err).toContain(`dropped ${ids[0] ?? ''}`);
    }
    const repository = new Repository(new DirTarget(target));
    expect((await repository.listSnapshots({ signal })).map((m) => m.id)).toEqual(ids.slice(1));
    // A failed run applies nothing: the two restore points stay.
    const failing = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      sources: {
        buckets: { names: [unique('missing')] },
        volume: { enabled: false },
        database: { enabled: false },
      },
      target: { type: 'dir', path: target },
      retention: { keepLast: 1 },
    });
    expect((await cli(['backup', '--config', failing])).code).toBe(1);
    expect((await repository.listSnapshots({ signal })).map((m) => m.id)).toEqual(ids.slice(1));
    // A forget between the listing and the read of a manifest (another process's retention, which
    // the daemon's /snapshots does not lock out) leaves that point out, not the whole listing.
    const forgotten = `snapshots/${ids[1] ?? ''}/manifest.json`;
    class ForgetsWhileRead extends DirTarget {
      override async get(key: string, opts: { signal: AbortSignal }) {
        if (key === forgotten) await this.remove(key, opts);
        return super.get(key, opts);
      }
    }
    const racing = await new Repository(new ForgetsWhileRead(target)).scan({ signal });
    expect(racing.snapshots.map((m) => m.id)).toEqual(ids.slice(2));
    expect(racing.unreadable).toEqual([]);
  });

  it('keeps restore points of everything when backups of only the database follow them', async () => {
    const target = tempDir('scope-target');
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      sources: {
        buckets: { names: [bucket] },
        volume: { enabled: false },
        database: { host: 'local', command: stackDumpCommand(stack) },
      },
      target: { type: 'dir', path: target },
      retention: { keepLast: 2 },
    });
    const backup = async (only?: string): Promise<string> => {
      const run = await cli(['backup', '--config', file, ...(only ? ['--only', only] : [])]);
      expect(run.code, run.err).toBe(0);
      return run.out.trim();
    };
    await put('scope-0', bytes('scope-0', 1000));
    const full = [await backup(), await backup()];
    const databaseOnly = [await backup('database'), await backup('database'), await backup('database')];
    const repository = new Repository(new DirTarget(target));
    // Each scope keeps its own two newest: three database-only runs drop one of theirs, no full one.
    expect((await repository.listSnapshots({ signal })).map((m) => m.id)).toEqual([
      ...full,
      ...databaseOnly.slice(1),
    ]);
    const dryRun = await cli(['forget', '--config', file, '--dry-run']);
    expect(dryRun.code, dryRun.err).toBe(0);
    expect(dryRun.out).toContain(`keep       ${full[1] ?? ''}`);
    expect(dryRun.out).toContain(`last 1  [bucket:${bucket} + database]`);
    expect(dryRun.out).toContain('last 1  [database]');
    // Every blob of the full restore points is still there, and the next full run builds on the
    // newest one that holds the bucket, not on the newest restore point.
    for (const id of full)
      for (const key of await referencedKeys(repository, id))
        expect((await repository.target.stat(key, { signal }))?.key).toBe(key);
    const next = await cli(['backup', '--config', file, '--json']);
    expect(next.code, next.err).toBe(0);
    const report = JSON.parse(next.out) as {
      sources: { id: string; counts: { unchanged: number; bytesRead: number } }[];
    };
    const counts = report.sources.find((s) => s.id === `bucket:${bucket}`)?.counts;
    expect(counts?.bytesRead).toBe(0);
    expect(counts?.unchanged).toBeGreaterThan(0);
  });

  it('after a backup, prunes only what the forgotten points held, and every key weekly or after a kill', async () => {
    const own = unique('sweep');
    await gateway.createBucket(own, { signal });
    const putOwn = (key: string) =>
      gateway.putObject(own, key, bytes(key, 3000), {
        signal,
        size: 3000,
        contentType: 'text/plain',
        metadata: {},
      });
    const target = tempDir('sweep-target');
    const keeping = (keepLast: number) =>
      writeConfig({
        etcd: { endpoints: [stack.etcdEndpoint] },
        sources: { buckets: { names: [own] }, volume: { enabled: false }, database: { enabled: false } },
        target: { type: 'dir', path: target },
        retention: { keepLast },
      });
    const file = keeping(1);
    const repository = new Repository(new DirTarget(target));
    const backup = async () => {
      const run = await cli(['backup', '--config', file, '--json']);
      expect(run.code, run.err).toBe(0);
      return JSON.parse(run.out) as {
        id: string;
        retention: { prune?: { scope: string; removedBlobs: number } };
      };
    };
    const blobs = async () =>
      [...(await targetKeys(repository)).keys()].filter((k) => k.startsWith('blobs/')).sort();
    const needed = async (id: string) =>
      [...(await referencedKeys(repository, id))].filter((k) => k.startsWith('blobs/')).sort();
    const leftover = 'blobs/00/left-by-a-killed-put';
    // The kept restore point restores byte for byte what the bucket held when it was taken.
    const restoresWhole = async (id: string) => {
      const into = unique('swept');
      const restored = await cli([
        'restore',
        id,
        '--config',
        file,
        '--only',
        'buckets',
        '--bucket',
        `${own}=${into}`,
        '--yes',
      ]);
      expect(restored.code, restored.err + restored.out).toBe(0);
      expect(await bucketContents(gateway, into)).toEqual(await bucketContents(gateway, own));
    };

    await putOwn('a');
    await putOwn('b');
    expect((await backup()).retention.prune).toBeUndefined();
    // No full prune on record yet: the first drop lists every key, and records when.
    await gateway.deleteObject(own, 'a', { signal });
    await putOwn('c');
    let run = await backup();
    expect(run.retention.prune).toMatchObject({ scope: 'all', removedBlobs: 1 });
    expect(await blobs()).toEqual(await needed(run.id));

    // Within the week: only the forgotten point's own blobs go; a leftover nobody names stays.
    await repository.target.put(leftover, Readable.from([Buffer.from('x')]), { signal, size: 1 });
    await gateway.deleteObject(own, 'b', { signal });
    await putOwn('d');
    run = await backup();
    expect(run.retention.prune).toEqual(expect.objectContaining({ scope: 'forgotten', removedBlobs: 1 }));
    expect(await blobs()).toEqual([...(await needed(run.id)), leftover].sort());
    await restoresWhole(run.id);
    run = await backup();
    expect(run.retention.prune).toEqual(expect.objectContaining({ scope: 'forgotten', removedBlobs: 0 }));

    // A week after the last full prune, the next one lists every key again.
    const weekAgo = new Date(Date.now() - 8 * 24 * 3600 * 1000).toISOString();
    await writeFile(join(target, 'status', 'prune.json'), JSON.stringify({ lastFullAt: weekAgo }));
    run = await backup();
    expect(run.retention.prune).toMatchObject({ scope: 'all', removedBlobs: 1 });
    expect(await blobs()).toEqual(await needed(run.id));
    const fresh = (await repository.readStatus('prune', { signal })) as { lastFullAt: string };
    expect(Date.parse(fresh.lastFullAt)).toBeGreaterThan(Date.parse(weekAgo));

    // Killed between the manifests and the folders (here: a sweep that throws), the forgotten points
    // are gone as restore points and their folders are interrupted runs: the next backup prunes in full.
    const keepThree = keeping(3);
    const before = run.id;
    const later: string[] = [];
    for (const key of ['e', 'f']) {
      await putOwn(key);
      const made = await cli(['backup', '--config', keepThree]);
      expect(made.code, made.err).toBe(0);
      later.push(made.out.trim());
    }
    const [second, third] = later;
    const killed = forget(
      repository,
      { keepLast: 1 },
      {
        now: new Date(),
        timezone: 'UTC',
        dryRun: false,
        signal,
        log: silentLogger,
        afterManifests: async (dropped) => {
          expect(dropped.map((m) => m.id).sort()).toEqual([before, second].sort());
          const scan = await repository.scan({ signal });
          expect(scan.snapshots.map((m) => m.id)).toEqual([third]);
          expect(scan.uncommitted.sort()).toEqual([before, second].sort());
          throw new Error('killed');
        },
      },
    );
    await expect(killed).rejects.toThrow('killed');
    await putOwn('g');
    run = await backup();
    expect(run.retention.prune).toMatchObject({ scope: 'all' });
    expect((await repository.scan({ signal })).uncommitted).toEqual([]);
    expect(await blobs()).toEqual(await needed(run.id));
    await restoresWhole(run.id);
  });
});

describe('full prune clock', () => {
  it('is due with no record, a damaged one, one a week old or one ahead of the clock', async () => {
    const root = tempDir('prune-clock');
    const repository = new Repository(new DirTarget(root));
    const now = new Date('2026-12-04T12:00:00Z');
    const due = () => fullPruneDue(repository, now, { signal });
    const record = async (text: string) => {
      await mkdir(join(root, 'status'), { recursive: true });
      await writeFile(join(root, 'status', 'prune.json'), text);
    };
    expect(await due()).toBe(true);
    await record('{"lastFullAt": "not a time"}');
    expect(await due()).toBe(true);
    await record('not json');
    expect(await due()).toBe(true);
    await record(JSON.stringify({ lastFullAt: new Date(now.getTime() - FULL_PRUNE_EVERY_MS + 60_000) }));
    expect(await due()).toBe(false);
    await record(JSON.stringify({ lastFullAt: new Date(now.getTime() - FULL_PRUNE_EVERY_MS) }));
    expect(await due()).toBe(true);
    await record(JSON.stringify({ lastFullAt: new Date(now.getTime() + 60_000) }));
    expect(await due()).toBe(true);
  });
});

describe('prune refusing a restore point it cannot be sure of', () => {
  const prunes = (repository: Repository) =>
    prune(repository, { dryRun: false, lockedAt: new Date(), signal, log: silentLogger });
  /** Every file under root, relative. */
  const files = async (root: string) =>
    (await readdir(root, { recursive: true, withFileTypes: true }))
      .filter((e) => e.isFile())
      .map((e) => join(e.parentPath, e.name).slice(root.length + 1))
      .sort();

  it('refuses a manifest that names another restore point, removing nothing', async () => {
    const root = tempDir('prune-misnamed');
    const id = await craftedRestorePoint(root, [], { signal });
    const other = '20200101T000000Z-beef';
    await mkdir(join(root, 'snapshots', other));
    await copyFile(
      join(root, 'snapshots', id, 'manifest.json'),
      join(root, 'snapshots', other, 'manifest.json'),
    );
    const before = await files(root);
    await expect(prunes(new Repository(new DirTarget(root)))).rejects.toThrow(
      `prune: restore point ${other} cannot be read (manifest snapshots/${other}/manifest.json names restore point "${id}", not ${other}: damaged or moved; deis-backup verify ${other} shows it); nothing removed.`,
    );
    expect(await files(root)).toEqual(before);
  });

  it('leaves a manifest still listed after its forget to that forget, as a store whose listings lag shows it', async () => {
    const root = tempDir('prune-lagging');
    const id = await craftedRestorePoint(root, [], { signal });
    const manifest = `snapshots/${id}/manifest.json`;
    // Forget removed the manifest; the listing still shows it, and reading it finds nothing.
    const lagging = new (class extends DirTarget {
      override async get(key: string, opts: { signal: AbortSignal }): Promise<Readable> {
        if (key === manifest) throw new BackupError('ERR_NOT_FOUND', `${key} not found`);
        return super.get(key, opts);
      }
    })(root);
    const repository = new Repository(lagging);
    await expect(prunes(repository)).rejects.toThrow(`prune: ${manifest} appeared, or could not be found`);
    const report = await prune(repository, {
      dryRun: false,
      lockedAt: new Date(),
      forgotten: new Set([id]),
      signal,
      log: silentLogger,
    });
    expect(report).toMatchObject({ snapshots: 0, removedKeys: 0 });
  });

  it('refuses when a manifest read as missing is there when it lists the folders, removing nothing', async () => {
    const root = tempDir('prune-flaky');
    const id = await craftedRestorePoint(root, [], { signal });
    const manifest = `snapshots/${id}/manifest.json`;
    // A target that answers "not found" once for a key it holds, as a lagging replica can.
    let missed = false;
    const flaky = new (class extends DirTarget {
      override async get(key: string, opts: { signal: AbortSignal }): Promise<Readable> {
        if (key === manifest && !missed) {
          missed = true;
          throw new BackupError('ERR_NOT_FOUND', `${key} not found`);
        }
        return super.get(key, opts);
      }
    })(root);
    const before = await files(root);
    await expect(prunes(new Repository(flaky))).rejects.toThrow(
      `prune: ${manifest} appeared, or could not be found, while prune read the restore points; nothing removed.`,
    );
    expect(missed).toBe(true);
    expect(await files(root)).toEqual(before);
    // Read again, it stands, and nothing of it is removed.
    expect(await prunes(new Repository(flaky))).toMatchObject({
      snapshots: 1,
      removedKeys: 0,
      removedBlobs: 0,
    });
    expect(await files(root)).toEqual([...before, 'status/prune.json'].sort());
  });
});
