// verify against real restore points: real buckets on radosgw and a real volume backed up into a fresh
// directory target per test, then damaged on disk the way a bad disk or an intruder would.
import { open, rm, truncate, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { runBackup } from '../../src/backup.js';
import { mapConcurrently } from '../../src/concurrency.js';
import { createLogger } from '../../src/log.js';
import type { IndexEntry, Manifest } from '../../src/repository/manifest.js';
import { Repository } from '../../src/repository/repository.js';
import { verifySnapshots, type VerifyReport } from '../../src/repository/verify.js';
import type { S3Client } from '../../src/s3/client.js';
import { BucketSource } from '../../src/sources/bucket.js';
import { VolumeSource } from '../../src/sources/volume.js';
import { isTagFile } from '../../src/repository/registry-check.js';
import { DirTarget } from '../../src/targets/dir.js';
import type { ObjectInfo, Target, UploadInfo } from '../../src/targets/target.js';
import { bytes, IMAGES, seedRegistry, seedVolume } from '../fixtures/deis-sample.js';
import { describeTree, describeWithStack, gatewayClient, tempDir, unique } from './helpers.js';

const signal = AbortSignal.timeout(600_000);
const log = createLogger({ level: 'silent' });

/** Wraps a target: counts reads per key and fails any write, so a verify provably writes nothing. */
class ReadOnlyTarget implements Target {
  readonly name: string;
  readonly defersSync: boolean;
  readonly leavesUploads: boolean;
  readonly gets = new Map<string, number>();
  private readonly inner: Target;
  constructor(inner: Target) {
    this.inner = inner;
    this.name = inner.name;
    this.defersSync = inner.defersSync;
    this.leavesUploads = inner.leavesUploads;
  }
  put(key: string): Promise<void> {
    return Promise.reject(new Error(`verify wrote ${key}`));
  }
  remove(key: string): Promise<void> {
    return Promise.reject(new Error(`verify removed ${key}`));
  }
  adopt(key: string): Promise<void> {
    return Promise.reject(new Error(`verify adopted ${key}`));
  }
  abortUpload(upload: UploadInfo): Promise<void> {
    return Promise.reject(new Error(`verify aborted the upload of ${upload.key}`));
  }
  listUploads(prefix: string, opts: { signal: AbortSignal }): AsyncIterable<UploadInfo> {
    return this.inner.listUploads(prefix, opts);
  }
  get(key: string, opts: { signal: AbortSignal }): Promise<Readable> {
    this.gets.set(key, (this.gets.get(key) ?? 0) + 1);
    return this.inner.get(key, opts);
  }
  stat(key: string, opts: { signal: AbortSignal }): Promise<ObjectInfo | undefined> {
    return this.inner.stat(key, opts);
  }
  list(prefix: string, opts: { signal: AbortSignal }): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix, opts);
  }
  listKeys(prefix: string, opts: { signal: AbortSignal }): AsyncIterable<string> {
    return this.inner.listKeys(prefix, opts);
  }
}

/** A WAL-E 005 copy on timeline 1: one base backup from segment 1 (two partitions) and the given segments. */
async function seedWalE(client: S3Client, bucket: string, segments: readonly number[]): Promise<void> {
  const base = 'basebackups_005/base_000000010000000000000001_00000040';
  const put = (key: string, body: Buffer) =>
    client.putObject(bucket, key, body, { signal, size: body.length });
  await client.createBucket(bucket, { signal });
  await put(`${base}/extended_version.txt`, Buffer.from('PostgreSQL 9.3.9 on x86_64-unknown-linux-gnu\n'));
  await put(`${base}/tar_partitions/part_00000000.tar.lzo`, bytes(`${bucket}-part0`, 20_000));
  await put(`${base}/tar_partitions/part_00000001.tar.lzo`, bytes(`${bucket}-part1`, 5_000));
  for (const seg of segments) {
    const name = `0000000100000000${seg.toString(16).toUpperCase().padStart(8, '0')}`;
    await put(`wal_005/${name}.lzo`, bytes(`${bucket}-${name}`, 3_000));
  }
  await put('wal_005/000000010000000000000001.00000028.backup.lzo', bytes(`${bucket}-backup`, 300));
  await put(
    `${base}_backup_stop_sentinel.json`,
    Buffer.from('{"wal_segment_backup_stop":"000000010000000000000001"}'),
  );
}

describeWithStack('verify', (stack) => {
  const walBucket = unique('wal');
  const registryBucket = unique('registry');
  const volume = tempDir('volume');
  let gateway: S3Client;

  beforeAll(async () => {
    gateway = gatewayClient(stack);
    await seedWalE(gateway, walBucket, [1, 2, 3, 4, 5]);
    await gateway.createBucket(registryBucket, { signal });
    await seedRegistry(gateway, registryBucket, { bigLayers: false });
    await seedVolume(volume);
  });
  afterAll(() => {
    gateway.close();
  });

  /** Backs the buckets (and the volume) up into a fresh directory target; returns it with the manifest. */
  async function backup(
    buckets: readonly string[] = [walBucket, registryBucket],
    dir = tempDir('target'),
  ): Promise<{ dir: string; manifest: Manifest; repository: Repository }> {
    const repository = new Repository(new DirTarget(dir));
    const client = gatewayClient(stack);
    try {
      const sources = [
        ...buckets.map((bucket) => new BucketSource({ bucket, client, listVersion: 1, concurrency: 4 })),
        new VolumeSource({ path: volume }),
      ];
      const result = await runBackup({ repository, log }, sources, { signal });
      expect(result.status).toBe('success');
      return { dir, manifest: await repository.readManifest(result.id ?? '', { signal }), repository };
    } finally {
      client.close();
    }
  }

  async function verify(dir: string, readData: boolean, selection: 'all' | { ids: string[] } = 'all') {
    const target = new ReadOnlyTarget(new DirTarget(dir));
    const report = await verifySnapshots(new Repository(target), selection, { readData, signal, log });
    return { report, target };
  }

  /** The index entries of a bucket in a restore point. */
  async function entriesOf(
    repository: Repository,
    manifest: Manifest,
    bucket: string,
  ): Promise<IndexEntry[]> {
    const artifact = manifest.sources.find((s) => s.bucket === bucket)?.artifacts[0];
    if (!artifact) throw new Error(`no index of ${bucket}`);
    const entries: IndexEntry[] = [];
    for await (const entry of repository.readIndex(artifact, { signal })) entries.push(entry);
    return entries;
  }

  const errorsOf = (report: VerifyReport): string[] => report.snapshots.flatMap((s) => s.errors);

  it('finds a clean restore point ok, with and without reading the data, and writes nothing', async () => {
    const { dir, manifest, repository } = await backup();
    const before = await describeTree(dir);
    const artifacts = manifest.sources.flatMap((s) => s.artifacts);
    const entries = [
      ...(await entriesOf(repository, manifest, walBucket)),
      ...(await entriesOf(repository, manifest, registryBucket)),
    ];

    const quick = await verify(dir, false);
    expect(quick.report).toEqual({
      status: 'ok',
      unreadable: [],
      snapshots: [
        {
          id: manifest.id,
          status: 'ok',
          checkedObjects: artifacts.length + entries.length,
          checkedBytes: 0,
          errors: [],
          warnings: [],
          walE: { bucket: walBucket, baseBackups: 1, segments: 5 },
        },
      ],
    });
    // Without readData only the indexes are read (their sha256 is checked on the way), and of the
    // blobs only the registry's tag files and the ancestry of the image they name.
    const tagged = `registry/images/${IMAGES.at(-1)?.id ?? ''}/ancestry`;
    const small = entries.filter((e) => isTagFile(e.key, e.size) || e.key === tagged);
    expect(small.filter((e) => /\/tag_v\d$/.test(e.key)).length).toBeGreaterThan(1);
    expect(new Set([...quick.target.gets.keys()].filter((k) => k.startsWith('blobs/')))).toEqual(
      new Set(small.map((e) => e.blob)),
    );

    const full = await verify(dir, true, { ids: ['latest'] });
    expect(full.report.status).toBe('ok');
    expect(full.report.snapshots[0]?.checkedBytes).toBe(
      artifacts.reduce((n, a) => n + a.size, 0) + entries.reduce((n, e) => n + e.size, 0),
    );
    expect(await describeTree(dir)).toEqual(before);
  });

  it('keeps the event loop turning while it reads thousands of small blobs', async () => {
    // Small blobs of a directory target are read with synchronous calls; a daemon's health and
    // metrics routes must still answer during a verify that reads them all.
    const bucket = unique('many');
    await gateway.createBucket(bucket, { signal });
    const keys = Array.from({ length: 4000 }, (_, i) => `registry/repositories/app${i}/tag_v1`);
    await mapConcurrently(keys, 16, (key) =>
      gateway.putObject(bucket, key, Buffer.from(`"${key}"`), { signal, size: key.length + 2 }),
    );
    const { dir } = await backup([bucket]);
    const delay = monitorEventLoopDelay({ resolution: 5 });
    delay.enable();
    const { report } = await verify(dir, true);
    delay.disable();
    expect(report.status).toBe('ok');
    expect(report.snapshots[0]?.checkedObjects).toBeGreaterThan(4000);
    expect(delay.max / 1e6).toBeLessThan(150);
  });

  it('reads a blob shared by two restore points once per verify', async () => {
    const { dir } = await backup();
    const { manifest: second, repository } = await backup(undefined, dir);
    const { report, target } = await verify(dir, true);
    expect(report.status).toBe('ok');
    expect(report.snapshots).toHaveLength(2);
    const entries = await entriesOf(repository, second, registryBucket);
    // Each is hashed once; the ancestry of the image the tags name is read once more, for the
    // registry check (and only once for both restore points).
    const tagged = `registry/images/${IMAGES.at(-1)?.id ?? ''}/ancestry`;
    expect(entries.map((e) => [e.key, target.gets.get(e.blob)])).toEqual(
      entries.map((e) => [e.key, e.key === tagged ? 2 : 1]),
    );
  });

  it('names a deleted blob', async () => {
    const { dir, manifest, repository } = await backup();
    const layer = (await entriesOf(repository, manifest, registryBucket)).find((e) =>
      e.key.endsWith('/layer'),
    );
    if (!layer) throw new Error('no layer');
    await rm(join(dir, layer.blob));
    const { report } = await verify(dir, false);
    expect(report.status).toBe('damaged');
    expect(errorsOf(report)).toEqual([
      `snapshot ${manifest.id}: blob ${layer.blob} of ${registryBucket}/${layer.key} missing`,
    ]);
  });

  it('names a truncated archive and a truncated index', async () => {
    const { dir, manifest } = await backup();
    const volumeArtifact = manifest.sources.find((s) => s.kind === 'volume')?.artifacts[0];
    const index = manifest.sources.find((s) => s.bucket === registryBucket)?.artifacts[0];
    if (!volumeArtifact || !index) throw new Error('no artifacts');
    await truncate(join(dir, volumeArtifact.key), 100);
    await truncate(join(dir, index.key), index.size - 1);
    const { report } = await verify(dir, false);
    expect(report.status).toBe('damaged');
    expect(errorsOf(report)).toEqual([
      `snapshot ${manifest.id}: artifact ${index.key} of bucket:${registryBucket}: size ${index.size - 1} in target, ${index.size} in manifest`,
      `snapshot ${manifest.id}: artifact ${volumeArtifact.key} of volume: size 100 in target, ${volumeArtifact.size} in manifest`,
    ]);
  });

  it('finds a flipped byte of the same size only when reading the data', async () => {
    const { dir, manifest, repository } = await backup();
    const entry = (await entriesOf(repository, manifest, registryBucket)).find((e) => e.size > 100);
    const volumeArtifact = manifest.sources.find((s) => s.kind === 'volume')?.artifacts[0];
    if (!entry || !volumeArtifact) throw new Error('nothing to damage');
    await flipByte(join(dir, entry.blob), 50);
    await flipByte(join(dir, volumeArtifact.key), 20);
    expect((await verify(dir, false)).report.status).toBe('ok');
    const { report } = await verify(dir, true);
    expect(report.status).toBe('damaged');
    expect(errorsOf(report)).toEqual([
      `snapshot ${manifest.id}: blob ${entry.blob} of ${registryBucket}/${entry.key}: sha256 mismatch (damaged or tampered)`,
      `snapshot ${manifest.id}: artifact ${volumeArtifact.key} of volume: sha256 mismatch (damaged or tampered)`,
    ]);
  });

  it('names a missing WAL segment of the database bucket', async () => {
    const gapBucket = unique('walgap');
    await seedWalE(gateway, gapBucket, [1, 2, 4]);
    const { dir, manifest } = await backup([gapBucket]);
    const { report } = await verify(dir, false, { ids: [manifest.id] });
    expect(report.status).toBe('damaged');
    expect(report.snapshots[0]?.walE).toEqual({ bucket: gapBucket, baseBackups: 1, segments: 3 });
    expect(errorsOf(report)).toEqual([
      `snapshot ${manifest.id}: bucket ${gapBucket}: WAL-E: missing WAL wal_005/000000010000000000000003.lzo (after 000000010000000000000002, before 000000010000000000000004)`,
    ]);
  });

  it('warns of registry images caught mid-push and tags naming absent images, and still finds the restore point sound', async () => {
    const pushing = unique('regpush');
    await gateway.createBucket(pushing, { signal });
    await seedRegistry(gateway, pushing, { bigLayers: false });
    const [, second, third] = IMAGES.map((image) => image.id);
    await gateway.putObject(pushing, `registry/images/${third ?? ''}/_inprogress`, Buffer.from('true'), {
      signal,
      size: 4,
    });
    await gateway.deleteObject(pushing, `registry/images/${second ?? ''}/layer`, { signal });
    // A tag copied after its image was pushed behind the copy: it names an image the bucket lacks.
    const absent = 'f'.repeat(64);
    await gateway.putObject(pushing, 'registry/repositories/library/late/tag_v9', Buffer.from(absent), {
      signal,
      size: 64,
    });
    const { dir, manifest } = await backup([pushing]);
    const images = [
      `snapshot ${manifest.id}: bucket ${pushing}: registry: image ${second ?? ''} lacks its layer: a release that names it cannot be pulled after a restore`,
      `snapshot ${manifest.id}: bucket ${pushing}: registry: image ${third ?? ''} was being pushed when the bucket was copied (registry/images/${third ?? ''}/_inprogress): restored, the registry will not serve it until its app is built again`,
    ];
    // With the data read or not, only the tag naming the absent image is named.
    for (const readData of [false, true]) {
      const { report } = await verify(dir, readData, { ids: [manifest.id] });
      expect(report.status).toBe('ok');
      expect(report.snapshots[0]?.warnings).toEqual([
        ...images,
        `snapshot ${manifest.id}: bucket ${pushing}: registry: tag library/late:v9 names image ${absent}, which the bucket lacks: after a restore that tag cannot be pulled (an image pushed while the bucket was copied can be missed, and its tag, copied later, not)`,
      ]);
    }
  });

  it('warns of tags whose image has a parent the bucket lacks, with or without --read-data', async () => {
    const orphaned = unique('regparent');
    await gateway.createBucket(orphaned, { signal });
    await seedRegistry(gateway, orphaned, { bigLayers: false });
    // The oldest image, a parent of the one every tag names, was not copied.
    const oldest = IMAGES[0]?.id ?? '';
    for (const file of ['json', 'layer', 'ancestry', '_checksum'])
      await gateway.deleteObject(orphaned, `registry/images/${oldest}/${file}`, { signal });
    const { dir, manifest } = await backup([orphaned]);
    const tip = IMAGES.at(-1)?.id ?? '';
    for (const readData of [false, true]) {
      const { report } = await verify(dir, readData, { ids: [manifest.id] });
      expect(report.status).toBe('ok');
      expect(report.snapshots[0]?.warnings).toEqual(
        ['myapp', 'www'].flatMap((app) =>
          ['git-1a2b3c4', 'v2', 'v3'].map(
            (tag) =>
              `snapshot ${manifest.id}: bucket ${orphaned}: registry: tag library/${app}:${tag} names image ${tip}, whose parent ${oldest} the bucket lacks: after a restore that tag cannot be pulled (an image pushed while the bucket was copied can be missed, and its tag, copied later, not)`,
          ),
        ),
      );
    }
  });

  it('finds a manifest copied into another folder unsound', async () => {
    const { dir, manifest } = await backup([registryBucket]);
    const copy = '20200101T000000Z-0c0c';
    await mkdir(join(dir, 'snapshots', copy));
    await writeFile(join(dir, 'snapshots', copy, 'manifest.json'), JSON.stringify(manifest));
    const { report } = await verify(dir, false, { ids: [copy] });
    expect(report.status).toBe('damaged');
    const index = manifest.sources[0]?.artifacts[0]?.key ?? '';
    expect(errorsOf(report)).toEqual([
      `snapshot ${copy}: manifest names id "${manifest.id}"`,
      `snapshot ${copy}: source bucket:${registryBucket}: artifact "${index}" is neither under snapshots/${copy}/ nor a blob`,
      `snapshot ${copy}: source volume: artifact "snapshots/${manifest.id}/volume.tar.gz" is neither under snapshots/${copy}/ nor a blob`,
    ]);
    // Every other reader (restore, drill, prune, snapshots) refuses it.
    await expect(new Repository(new DirTarget(dir)).readManifest(copy, { signal })).rejects.toThrow(
      `manifest snapshots/${copy}/manifest.json names restore point "${manifest.id}", not ${copy}: damaged or moved; deis-backup verify ${copy} shows it`,
    );
  });

  it('counts an unreadable manifest as damaged, and refuses an unknown id', async () => {
    const { dir, manifest } = await backup([registryBucket]);
    const broken = '20200101T000000Z-abcd';
    await mkdir(join(dir, 'snapshots', broken));
    await writeFile(join(dir, 'snapshots', broken, 'manifest.json'), '{"formatVersion": 1, "id": ');
    const { report } = await verify(dir, false);
    expect(report.status).toBe('damaged');
    expect(report.snapshots.map((s) => `${s.id}:${s.status}`)).toEqual([`${manifest.id}:ok`]);
    expect(report.unreadable).toEqual([
      { id: broken, error: `manifest snapshots/${broken}/manifest.json is not valid JSON` },
    ]);
    await expect(verify(dir, false, { ids: ['20200101T000000Z-ffff'] })).rejects.toMatchObject({
      code: 'ERR_NOT_FOUND',
    });
  });
});

/** Inverts one byte in place: same size, different content. */
async function flipByte(file: string, position: number): Promise<void> {
  const handle = await open(file, 'r+');
  try {
    const buffer = Buffer.alloc(1);
    await handle.read(buffer, 0, 1, position);
    buffer[0] = (buffer[0] ?? 0) ^ 0xff;
    await handle.write(buffer, 0, 1, position);
  } finally {
    await handle.close();
  }
}
