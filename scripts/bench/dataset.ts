// Deis-shaped benchmark data: two gateway buckets (a WAL-E bench_wal and a docker-registry v1
// bench-registry), a store-volume of log files and a PostgreSQL database, at a chosen scale.
// Generation is deterministic and skipped when a marker says the data is already there.
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { once } from 'node:events';
import type { S3Client } from '../../src/s3/client.js';
import { bytes, byteStream } from '../../test/fixtures/deis-sample.js';

export const WAL_BUCKET = 'bench_wal';
export const REGISTRY_BUCKET = 'bench-registry';
export const BUCKETS = [WAL_BUCKET, REGISTRY_BUCKET] as const;

const KiB = 1024;
const MiB = 1024 * KiB;
const PART = 5 * MiB;
const WAL_SEGMENT = 16 * MiB;
const LZOP_MAGIC = Buffer.from([0x89, 0x4c, 0x5a, 0x4f, 0x00, 0x0d, 0x0a, 0x1a, 0x0a]);

export type ScaleName = 'small' | 'full';

export interface Scale {
  name: ScaleName;
  images: number;
  /** Total bytes of registry layers (sizes are log-uniform in 1 KiB–50 MiB, then scaled to this). */
  layerBytes: number;
  apps: number;
  walSegments: number;
  baseBackups: number;
  basePartsPerBackup: number;
  basePartBytes: number;
  volumeBytes: number;
  volumeFiles: number;
  /** Rows of benchdb.events (about 135 bytes each in the dump). */
  dbRows: number;
}

export const SCALES: Record<ScaleName, Scale> = {
  small: {
    name: 'small',
    images: 40,
    layerBytes: 60 * MiB,
    apps: 15,
    walSegments: 4,
    baseBackups: 2,
    basePartsPerBackup: 1,
    basePartBytes: 8 * MiB,
    volumeBytes: 100 * MiB,
    volumeFiles: 10,
    dbRows: 220_000,
  },
  full: {
    name: 'full',
    images: 300,
    layerBytes: 1200 * MiB,
    apps: 100,
    walSegments: 48,
    baseBackups: 4,
    basePartsPerBackup: 2,
    basePartBytes: 64 * MiB,
    volumeBytes: 1024 * MiB,
    volumeFiles: 40,
    dbRows: 2_200_000,
  },
};

/** One object to write: a body of `size` deterministic bytes from `seed`, or a literal body. */
export interface PlannedObject {
  bucket: string;
  key: string;
  size: number;
  seed: string;
  body?: Buffer;
}

function hashUnit(seed: string): number {
  return createHash('sha256').update(seed).digest().readUInt32BE(0) / 0x1_0000_0000;
}

function imageId(seed: string): string {
  return createHash('sha256').update(`image:${seed}`).digest('hex');
}

/** Layer sizes for `count` images: log-uniform in [1 KiB, 50 MiB], scaled so the sum is `total`. */
function layerSizes(tag: string, count: number, total: number): number[] {
  const lo = Math.log(KiB);
  const hi = Math.log(50 * MiB);
  const raw = Array.from({ length: count }, (_, i) => Math.exp(lo + (hi - lo) * hashUnit(`${tag}:${i}`)));
  const sum = raw.reduce((a, b) => a + b, 0);
  return raw.map((s) => Math.round(Math.min(50 * MiB, Math.max(KiB, (s * total) / sum))));
}

function json(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value));
}

function imageObjects(id: string, parent: string | undefined, layer: number, n: number): PlannedObject[] {
  const prefix = `registry/images/${id}`;
  const lit = (key: string, body: Buffer): PlannedObject => ({
    bucket: REGISTRY_BUCKET,
    key: `${prefix}/${key}`,
    size: body.length,
    seed: '',
    body,
  });
  return [
    lit(
      'json',
      json({ id, parent, created: '2015-08-04T18:04:05Z', config: { Env: [`GIT_SHA=1a2b3c${n}`] } }),
    ),
    lit('ancestry', json(parent ? [id, parent] : [id])),
    { bucket: REGISTRY_BUCKET, key: `${prefix}/layer`, size: layer, seed: `layer:${id}` },
    lit('_checksum', json([`tarsum+sha256:${bytes(`sum:${id}`, 32).toString('hex')}`])),
  ];
}

function walSegmentName(n: number): string {
  return `0000000500000056${n.toString(16).toUpperCase().padStart(8, '0')}`;
}

function walObject(name: string): PlannedObject {
  return { bucket: WAL_BUCKET, key: `wal_005/${name}.lzo`, size: WAL_SEGMENT, seed: `wal:${name}` };
}

/** Every object of the base dataset at this scale. */
export function planBuckets(scale: Scale): PlannedObject[] {
  const objects: PlannedObject[] = [];
  const sizes = layerSizes(`base:${scale.name}`, scale.images, scale.layerBytes);
  const ids = sizes.map((_, i) => imageId(`${scale.name}:${i}`));
  for (const [i, size] of sizes.entries()) objects.push(...imageObjects(ids[i] ?? '', ids[i - 1], size, i));
  for (let a = 0; a < scale.apps; a++) {
    const repo = `registry/repositories/library/app${a}`;
    const head = ids[a % ids.length] ?? '';
    const lit = (key: string, body: Buffer): void => {
      objects.push({ bucket: REGISTRY_BUCKET, key: `${repo}/${key}`, size: body.length, seed: '', body });
    };
    lit('_index_images', json(ids.slice(0, (a % 5) + 1).map((id) => ({ id }))));
    for (const tag of ['git-1a2b3c4', 'v2', 'v3']) {
      lit(`tag_${tag}`, Buffer.from(head));
      lit(
        `tag${tag}_json`,
        json({ last_update: 1438711445 + a, docker_version: '1.5.0', arch: 'amd64', app: `app${a}` }),
      );
    }
  }
  for (let s = 0; s < scale.walSegments; s++) objects.push(walObject(walSegmentName(0x81 + s)));
  for (let b = 0; b < scale.baseBackups; b++) {
    const segment = walSegmentName(0x81 + b * Math.max(1, Math.floor(scale.walSegments / scale.baseBackups)));
    const base = `basebackups_005/base_${segment}_00000040`;
    const lit = (key: string, body: Buffer): void => {
      objects.push({ bucket: WAL_BUCKET, key, size: body.length, seed: '', body });
    };
    lit(`${base}/extended_version.txt`, Buffer.from('PostgreSQL 9.3.9 on x86_64-unknown-linux-gnu\n'));
    for (let p = 0; p < scale.basePartsPerBackup; p++) {
      objects.push({
        bucket: WAL_BUCKET,
        key: `${base}/tar_partitions/part_${String(p).padStart(8, '0')}.tar.lzo`,
        size: scale.basePartBytes,
        seed: `basepart:${base}:${p}`,
      });
    }
    lit(`wal_005/${segment}.00000028.backup.lzo`, Buffer.concat([LZOP_MAGIC, bytes(`bk:${segment}`, 300)]));
    lit(
      `${base}_backup_stop_sentinel.json`,
      json({
        wal_segment_backup_stop: segment,
        wal_segment_offset_backup_stop: '00000040',
        expanded_size_bytes: 35_000_000 + b,
        spec: { base_prefix: '/var/lib/postgresql/9.3/main', tablespaces: [] },
      }),
    );
  }
  objects.push({
    bucket: WAL_BUCKET,
    key: 'wal_005/00000005.history.lzo',
    size: 99,
    seed: '',
    body: Buffer.concat([LZOP_MAGIC, bytes('history', 90)]),
  });
  return objects;
}

/** About 5% new objects for nightly `round`: one WAL segment, new images, new tags; keys carry "incr-". */
export function planIncrement(scale: Scale, baseCount: number, round: number): PlannedObject[] {
  const want = Math.max(5, Math.round(baseCount * 0.05));
  const objects: PlannedObject[] = [walObject(`${walSegmentName(0x1000 + round)}.incr-${round}`)];
  const images = Math.floor((want - 1) / 4);
  const perImage = scale.layerBytes / scale.images;
  const sizes = layerSizes(`incr:${scale.name}:${round}`, images, perImage * images);
  for (const [i, size] of sizes.entries()) {
    const id = `incr-${round}-${imageId(`incr:${scale.name}:${round}:${i}`).slice(0, 56)}`;
    objects.push(...imageObjects(id, undefined, size, i));
  }
  while (objects.length < want) {
    const body = json({ last_update: 1438800000 + objects.length, round });
    objects.push({
      bucket: REGISTRY_BUCKET,
      key: `registry/repositories/library/incr-${round}/tag_v${objects.length}`,
      size: body.length,
      seed: '',
      body,
    });
  }
  return objects;
}

const signal = (): AbortSignal => AbortSignal.timeout(3_600_000);

async function putOne(client: S3Client, o: PlannedObject): Promise<void> {
  if (o.size > PART && o.body === undefined) {
    await client.putObjectMultipart(o.bucket, o.key, byteStream(o.seed, o.size), {
      signal: signal(),
      partSize: PART,
      contentType: 'application/octet-stream',
    });
  } else {
    const body = o.body ?? bytes(o.seed, o.size);
    await client.putObject(o.bucket, o.key, body, {
      signal: signal(),
      size: body.length,
      contentType: 'application/octet-stream',
    });
  }
}

/** Writes objects with `concurrency` uploads in flight. */
export async function putAll(
  client: S3Client,
  objects: readonly PlannedObject[],
  concurrency = 4,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < objects.length) {
      const o = objects[next++];
      if (o) await putOne(client, o);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

async function listKeys(client: S3Client, bucket: string): Promise<{ key: string; size: number }[]> {
  const out: { key: string; size: number }[] = [];
  for await (const o of client.listObjects(bucket, { signal: signal(), listVersion: 1 }))
    out.push({ key: o.key, size: o.size });
  return out;
}

async function deleteKeys(client: S3Client, bucket: string, keys: readonly string[]): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < keys.length) {
      const key = keys[next++];
      if (key !== undefined) await client.deleteObject(bucket, key, { signal: signal() });
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
}

const MARKER_KEY = 'bench/dataset-complete.json';

/**
 * Makes the buckets hold exactly the base dataset of this scale: regenerates it unless the marker
 * names this scale, and always removes the "incr-" objects earlier nightly rounds added.
 * Returns the object count and bytes (marker included).
 */
export async function ensureBuckets(
  client: S3Client,
  scale: Scale,
  log: (line: string) => void,
): Promise<{ objects: number; bytes: number }> {
  for (const bucket of BUCKETS) await client.createBucket(bucket, { signal: signal() });
  let marker: string | undefined;
  const res = await client.getObject(REGISTRY_BUCKET, MARKER_KEY, { signal: signal() });
  if (res) {
    const chunks: Buffer[] = [];
    for await (const chunk of res.body) chunks.push(chunk as Buffer);
    marker = Buffer.concat(chunks).toString('utf8');
  }
  const plan = planBuckets(scale);
  if (marker !== JSON.stringify({ scale: scale.name, objects: plan.length })) {
    log(`generating ${plan.length} bucket objects (${scale.name})`);
    for (const bucket of BUCKETS) {
      const keys = (await listKeys(client, bucket)).map((o) => o.key);
      await deleteKeys(client, bucket, keys);
    }
    await putAll(client, plan);
    const body = Buffer.from(JSON.stringify({ scale: scale.name, objects: plan.length }));
    await client.putObject(REGISTRY_BUCKET, MARKER_KEY, body, { signal: signal(), size: body.length });
  } else {
    log(`bucket data for ${scale.name} already present`);
  }
  let objects = 0;
  let total = 0;
  for (const bucket of BUCKETS) {
    const listed = await listKeys(client, bucket);
    const stale = listed.filter((o) => o.key.includes('incr-')).map((o) => o.key);
    await deleteKeys(client, bucket, stale);
    for (const o of listed) {
      if (o.key.includes('incr-')) continue;
      objects++;
      total += o.size;
    }
  }
  return { objects, bytes: total };
}

/** Removes the "incr-" objects the nightly rounds added, leaving the base dataset. */
export async function removeIncrements(client: S3Client): Promise<void> {
  for (const bucket of BUCKETS) {
    const stale = (await listKeys(client, bucket)).filter((o) => o.key.includes('incr-')).map((o) => o.key);
    await deleteKeys(client, bucket, stale);
  }
}

/** A small deterministic PRNG (mulberry32) for log lines. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PATHS = [
  '/',
  '/healthz',
  '/api/v1/items',
  '/static/app.js',
  '/login',
  '/api/v1/users/',
  '/img/logo.png',
];
const AGENTS = ['curl/7.43.0', 'Mozilla/5.0 (X11; Linux x86_64)', 'Go-http-client/1.1', 'kube-probe/1.0'];

/** Writes the store-volume (logs/*.log of router-style lines) unless its marker exists. */
export async function ensureVolume(root: string, scale: Scale, log: (line: string) => void): Promise<number> {
  const dir = join(root, `volume-${scale.name}`);
  const marker = join(root, `volume-${scale.name}.done`);
  const perFile = Math.floor(scale.volumeBytes / scale.volumeFiles);
  if (existsSync(marker)) {
    log(`volume for ${scale.name} already present`);
    return perFile * scale.volumeFiles;
  }
  log(`generating ${scale.volumeFiles} log files of ${(perFile / MiB).toFixed(0)} MiB in ${dir}`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(join(dir, 'logs'), { recursive: true });
  for (let f = 0; f < scale.volumeFiles; f++) {
    const app = f < 3 ? ['deis-router', 'deis-controller', 'deis-registry'][f] : `app${f}`;
    const rand = prng(f + 1);
    const out = createWriteStream(join(dir, 'logs', `${app ?? 'app'}.log`));
    let written = 0;
    let t = Date.UTC(2015, 7, 4, 18, 0, 0);
    while (written < perFile) {
      const lines: string[] = [];
      let size = 0;
      while (size < 256 * KiB && written + size < perFile) {
        t += Math.floor(rand() * 2000);
        const line =
          `${new Date(t).toISOString()} ${app ?? 'app'}[web.${1 + Math.floor(rand() * 4)}]: ` +
          `10.21.${Math.floor(rand() * 4)}.${Math.floor(rand() * 255)} - - ` +
          `"GET ${PATHS[Math.floor(rand() * PATHS.length)] ?? '/'}${Math.floor(rand() * 10000)} HTTP/1.1" ` +
          `${rand() < 0.95 ? 200 : 404} ${Math.floor(rand() * 50000)} "-" ` +
          `"${AGENTS[Math.floor(rand() * AGENTS.length)] ?? '-'}" rt=${(rand() * 0.5).toFixed(3)}\n`;
        lines.push(line);
        size += line.length;
      }
      const chunk = lines.join('');
      written += chunk.length;
      if (!out.write(chunk)) await once(out, 'drain');
    }
    out.end();
    await once(out, 'finish');
  }
  await writeFile(marker, `${new Date().toISOString()}\n`);
  return perFile * scale.volumeFiles;
}

export interface Pg {
  host: string;
  port: number;
  user: string;
}

function psql(pg: Pg, db: string, sql: string): string {
  const res = spawnSync(
    'psql',
    ['-h', pg.host, '-p', String(pg.port), '-U', pg.user, '-d', db, '-v', 'ON_ERROR_STOP=1', '-tAc', sql],
    { encoding: 'utf8' },
  );
  if (res.status !== 0) throw new Error(`psql failed: ${res.stderr}`);
  return res.stdout.trim();
}

/** Drops benchdb, if there is one. */
export function dropDatabase(pg: Pg): void {
  psql(pg, 'postgres', 'drop database if exists benchdb');
}

/** Creates benchdb (generate_series rows) unless its marker row names this scale. */
export function ensureDatabase(pg: Pg, scale: Scale, log: (line: string) => void): void {
  const exists = psql(pg, 'postgres', "select 1 from pg_database where datname = 'benchdb'") === '1';
  if (exists) {
    const have = psql(
      pg,
      'benchdb',
      "select coalesce((select scale from bench_marker limit 1), '') where to_regclass('bench_marker') is not null",
    );
    if (have === scale.name) {
      log(`benchdb for ${scale.name} already present`);
      return;
    }
    psql(pg, 'postgres', 'drop database benchdb');
  }
  log(`creating benchdb with ${scale.dbRows} rows`);
  psql(pg, 'postgres', 'create database benchdb');
  psql(
    pg,
    'benchdb',
    `create table events (id bigint primary key, app text not null, payload text not null, created timestamptz not null);
     insert into events
       select g, 'app' || (g % 50), md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text),
              timestamptz '2015-08-04 18:04:05+00' + g * interval '1 second'
       from generate_series(1, ${scale.dbRows}) g;
     create table bench_marker (scale text not null);
     insert into bench_marker values ('${scale.name}');`,
  );
}

/** The bucket holding one 1 GiB object (one large body: streaming and multipart, no per-object cost). */
export const BIG_BUCKET = 'bench-big';
export const BIG_OBJECT: PlannedObject = {
  bucket: BIG_BUCKET,
  key: 'registry/images/big/layer',
  size: 1024 * MiB,
  seed: 'big',
};
/** The bucket holding 50,000 objects of 200 B–2 KiB (per-object cost, index size in memory). */
export const TINY_BUCKET = 'bench-tiny';
export const TINY_OBJECTS = 50_000;

/** The tiny objects: keys spread over 500 "apps", sizes 200–2048 bytes, deterministic. */
export function planTiny(): PlannedObject[] {
  return Array.from({ length: TINY_OBJECTS }, (_, i) => {
    const size = 200 + Math.floor(hashUnit(`tiny:${i}`) * (2048 - 200 + 1));
    const key = `registry/repositories/app${String(i % 500).padStart(3, '0')}/tag_${String(i).padStart(6, '0')}_json`;
    return { bucket: TINY_BUCKET, key, size, seed: `tiny:${i}` };
  });
}

/**
 * Makes `bucket` hold exactly `plan`: a bucket whose listing already matches (keys and sizes) is
 * left alone, so re-runs are cheap; otherwise it is emptied and written with `concurrency` uploads.
 */
export async function ensureExact(
  client: S3Client,
  bucket: string,
  plan: readonly PlannedObject[],
  log: (line: string) => void,
  concurrency = 16,
): Promise<{ objects: number; bytes: number }> {
  await client.createBucket(bucket, { signal: signal() });
  const listed = await listKeys(client, bucket);
  const want = new Map(plan.map((o) => [o.key, o.size]));
  const same = listed.length === plan.length && listed.every((o) => want.get(o.key) === o.size);
  if (same) {
    log(`${bucket}: ${plan.length} objects already present`);
  } else {
    log(`${bucket}: writing ${plan.length} objects`);
    await deleteKeys(
      client,
      bucket,
      listed.map((o) => o.key),
    );
    await putAll(client, plan, concurrency);
  }
  return { objects: plan.length, bytes: plan.reduce((a, o) => a + o.size, 0) };
}
