// Resume: a backup killed with SIGKILL half way leaves bodies in the target; the next run reuses
// them (hashing them back from the target) and reads and stores only what was missing.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { IndexEntry } from '../../src/repository/manifest.js';
import { artifactKey, bucketIndexName } from '../../src/repository/layout.js';
import { Repository } from '../../src/repository/repository.js';
import type { S3Client } from '../../src/s3/client.js';
import { DirTarget } from '../../src/targets/dir.js';
import { bytes } from '../fixtures/deis-sample.js';
import {
  bucketContents,
  cli,
  describeWithStack,
  gatewayClient,
  tempDir,
  unique,
  until,
  writeConfig,
} from './helpers.js';

const signal = AbortSignal.timeout(600_000);
const OBJECTS = 150;
const SIZE = 96 * 1024;

/** Complete blob files in a dir target (a killed put leaves only a `.partial-` temporary). */
async function storedBlobs(root: string): Promise<string[]> {
  const out: string[] = [];
  const folders = await readdir(join(root, 'blobs')).catch(() => []);
  for (const folder of folders) {
    for (const name of await readdir(join(root, 'blobs', folder)))
      if (!name.includes('.partial-')) out.push(`blobs/${folder}/${name}`);
  }
  return out;
}

describeWithStack('resume after an interrupted backup', (stack) => {
  const bucket = unique('resume');
  let gateway: S3Client;

  beforeAll(async () => {
    gateway = gatewayClient(stack);
    await gateway.createBucket(bucket, { signal });
    for (let i = 0; i < OBJECTS; i++) {
      const body = bytes(`resume-${i}`, SIZE);
      await gateway.putObject(bucket, `registry/images/${String(i).padStart(4, '0')}/layer`, body, {
        signal,
        size: body.length,
        contentType: 'application/octet-stream',
        metadata: { seq: String(i) },
      });
    }
  });
  afterAll(() => {
    gateway.close();
  });

  it('reuses the bodies a killed run stored and reads only the rest', async () => {
    const target = tempDir('resume-target');
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      sources: {
        buckets: { names: [bucket], concurrency: 1 },
        volume: { enabled: false },
        database: { enabled: false },
      },
      target: { type: 'dir', path: target },
      // The killed run's cluster lock outlives it until its TTL; the next run waits that out.
      lock: { key: `/deis-backup-test/${unique('lock')}`, ttlSeconds: 3, waitSeconds: 30 },
    });
    const child = spawn(
      'node',
      [join(import.meta.dirname, '..', '..', 'dist', 'bin.js'), 'backup', '--config', file],
      {
        stdio: 'ignore',
      },
    );
    await until('a third of the bodies stored', async () =>
      (await storedBlobs(target)).length >= OBJECTS / 3 ? true : undefined,
    );
    child.kill('SIGKILL');
    await once(child, 'exit');
    const left = await storedBlobs(target);
    // The kill must land half way for this test to mean anything.
    expect(left.length).toBeLessThan(OBJECTS);
    const repository = new Repository(new DirTarget(target));
    const scanned = await repository.scan({ signal });
    expect(scanned.snapshots).toEqual([]);
    expect(scanned.uncommitted).toHaveLength(1);

    const run = await cli(['backup', '--config', file, '--json']);
    expect(run.code, run.err).toBe(0);
    const result = JSON.parse(run.out) as {
      id: string;
      sources: {
        counts: { objects: number; bytesRead: number; bytesStored: number; resumed: number };
        artifacts: { size: number }[];
      }[];
    };
    const [source] = result.sources;
    const missing = OBJECTS - left.length;
    expect(source?.counts.objects).toBe(OBJECTS);
    expect(source?.counts.resumed).toBe(left.length);
    expect(source?.counts.bytesRead).toBe(missing * SIZE);
    // What was stored: the missing bodies and the index, nothing twice.
    expect(source?.counts.bytesStored).toBe(missing * SIZE + (source?.artifacts[0]?.size ?? NaN));

    // The restore point is whole: every object with its metadata, every body hashed right.
    const manifest = await repository.readManifest(result.id, { signal });
    const artifact = manifest.sources[0]?.artifacts[0];
    if (!artifact) throw new Error('no index');
    const entries: IndexEntry[] = [];
    for await (const entry of repository.readIndex(artifact, { signal })) entries.push(entry);
    const original = await bucketContents(gateway, bucket);
    expect(entries).toHaveLength(OBJECTS);
    for (const entry of entries) {
      const want = original.get(entry.key);
      expect({ size: entry.size, sha256: entry.sha256, metadata: entry.metadata }).toEqual({
        size: want?.size,
        sha256: want?.sha256,
        metadata: want?.metadata,
      });
      expect(await repository.hashStored(entry.blob, { signal })).toEqual({
        size: SIZE,
        sha256: want?.sha256,
      });
    }
  });

  it('syncs the bodies it reuses before the index that names them, when it stores no body itself', async () => {
    // The interrupted run stored every body with deferred sync and never synced them; the next run
    // reuses them all, so none of its own puts is deferred.
    const target = tempDir('resume-sync');
    const writer = new Repository(new DirTarget(target)).begin(new Date(Date.now() - 60_000));
    await writer.start({ tool: 'test' }, { signal });
    for await (const object of gateway.listObjects(bucket, { signal, listVersion: 1 })) {
      const got = await gateway.getObject(bucket, object.key, { signal });
      if (!got) throw new Error(`${object.key} vanished`);
      await writer.putBlob({ bucket, key: object.key, size: object.size, etag: object.etag }, got.body, {
        signal,
      });
    }
    // The real `sync`, behind a script that notes which restore point files exist at each call.
    const bin = tempDir('sync-bin');
    const calls = join(bin, 'calls');
    await writeFile(
      join(bin, 'sync'),
      `#!/bin/sh\n{ echo "sync $*"; cd '${target}' && find snapshots -type f; } >> '${calls}'\nexec /usr/bin/sync "$@"\n`,
    );
    await chmod(join(bin, 'sync'), 0o755);
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      sources: {
        buckets: { names: [bucket], concurrency: 4 },
        volume: { enabled: false },
        database: { enabled: false },
      },
      target: { type: 'dir', path: target },
    });
    const path = process.env['PATH'];
    process.env['PATH'] = `${bin}:${path ?? ''}`;
    const run = await cli(['backup', '--config', file, '--json']).finally(() => {
      process.env['PATH'] = path;
    });
    expect(run.code, run.err).toBe(0);
    const result = JSON.parse(run.out) as { id: string; sources: { counts: { resumed?: number } }[] };
    expect(result.sources[0]?.counts.resumed).toBe(OBJECTS);
    const index = artifactKey(result.id, bucketIndexName(bucket));
    // Each call: its command line, then the files under snapshots/ at that moment.
    const seen = (await readFile(calls, 'utf8').catch(() => ''))
      .split(/^(?=sync )/m)
      .filter((call) => call.startsWith(`sync -f ${target}\n`))
      .map((call) => call.split('\n').slice(1));
    // The sync that guards the index runs once its body is written, under a temporary name.
    const beforeIndex = seen.filter(
      (files) => files.some((f) => f.startsWith(`${index}.partial-`)) && !files.includes(index),
    );
    expect(beforeIndex.length).toBeGreaterThan(0);
  });

  // A directory target syncs bodies once before the index, not one by one: after a crash of the
  // machine, a body of an interrupted run may hold other bytes under its full size. Only runs
  // started since the last boot are trusted.
  it.each([
    ['since this boot', true],
    ['before a reboot', false],
  ])(
    'reuses the bodies of an interrupted run only when it started since this boot (%s)',
    async (_, sameBoot) => {
      const target = tempDir('resume-boot');
      const repository = new Repository(new DirTarget(target));
      const writer = repository.begin(new Date(Date.now() - 60_000));
      await writer.start({ tool: 'test' }, { signal });
      const stored: string[] = [];
      for await (const object of gateway.listObjects(bucket, { signal, listVersion: 1 })) {
        if (stored.length === 10) break;
        const got = await gateway.getObject(bucket, object.key, { signal });
        if (!got) throw new Error(`${object.key} vanished`);
        await writer.putBlob({ bucket, key: object.key, size: object.size, etag: object.etag }, got.body, {
          signal,
        });
        stored.push(object.key);
      }
      if (!sameBoot) {
        const marker = join(target, 'snapshots', writer.id, 'run.json');
        const text = await readFile(marker, 'utf8');
        expect(text).toContain(
          `"boot": "${(await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim()}"`,
        );
        await writeFile(marker, text.replace(/"boot": "[^"]*"/, '"boot": "another-boot"'));
      }
      const file = writeConfig({
        etcd: { endpoints: [stack.etcdEndpoint] },
        sources: {
          buckets: { names: [bucket], concurrency: 4 },
          volume: { enabled: false },
          database: { enabled: false },
        },
        target: { type: 'dir', path: target },
      });
      const run = await cli(['backup', '--config', file, '--json']);
      expect(run.code, run.err).toBe(0);
      const [source] = (
        JSON.parse(run.out) as { sources: { counts: { resumed?: number; bytesRead: number } }[] }
      ).sources;
      expect(source?.counts.resumed ?? 0).toBe(sameBoot ? stored.length : 0);
      expect(source?.counts.bytesRead).toBe((OBJECTS - (sameBoot ? stored.length : 0)) * SIZE);
    },
  );
});
