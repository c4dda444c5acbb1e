// The drill's bucket work on the gateway: empty a scratch bucket, compare a restored scratch bucket
// with the restore point's index (key set, size, content-type, user metadata, body sha256), remove it.
import { createHash } from 'node:crypto';
import { BackupError, describeError } from '../errors.js';
import type { IndexEntry } from '../repository/manifest.js';
import type { S3Client } from '../s3/client.js';
import { forEachLimited } from '../concurrency.js';
import { ProblemList } from './pool.js';
import { compareText } from '../compare.js';

/** Objects read or deleted at once. */
const CONCURRENCY = 4;
/** Keys deleted per listing batch: bounds memory for buckets of any size. */
const DELETE_BATCH = 1000;

/** How to reach the gateway. */
export interface GatewayAccess {
  client: S3Client;
  listVersion: 1 | 2;
}

/**
 * Deletes every object in `bucket` and keeps the bucket; a missing bucket has nothing to delete.
 * Throws the first failure (after the deletes in flight settle), naming bucket and key.
 */
export async function emptyBucket(
  gateway: GatewayAccess,
  bucket: string,
  opts: { signal: AbortSignal },
): Promise<number> {
  if (!(await gateway.client.bucketExists(bucket, opts))) return 0;
  let deleted = 0;
  // Deleting behind the listing is safe: the next page starts after the last key listed.
  let batch: string[] = [];
  const flush = async (): Promise<void> => {
    await forEachLimited(batch, CONCURRENCY, async (key) => {
      try {
        await gateway.client.deleteObject(bucket, key, opts);
      } catch (err) {
        opts.signal.throwIfAborted();
        throw new BackupError('ERR_GATEWAY', `${bucket}/${key}: not deleted: ${describeError(err)}`, {
          cause: err,
        });
      }
      deleted++;
    });
    batch = [];
  };
  for await (const item of gateway.client.listObjects(bucket, {
    signal: opts.signal,
    listVersion: gateway.listVersion,
  })) {
    batch.push(item.key);
    if (batch.length >= DELETE_BATCH) await flush();
  }
  await flush();
  return deleted;
}

/** Empties and deletes `bucket`; a missing bucket succeeds. Throws naming what stayed. */
export async function removeBucket(
  gateway: GatewayAccess,
  bucket: string,
  opts: { signal: AbortSignal },
): Promise<void> {
  try {
    await emptyBucket(gateway, bucket, opts);
  } catch (err) {
    opts.signal.throwIfAborted();
    if (err instanceof BackupError) throw err;
    throw new BackupError('ERR_GATEWAY', `${bucket}: not emptied: ${describeError(err)}`, { cause: err });
  }
  try {
    await gateway.client.deleteBucket(bucket, opts);
  } catch (err) {
    opts.signal.throwIfAborted();
    throw new BackupError('ERR_GATEWAY', `${bucket}: bucket not deleted: ${describeError(err)}`, {
      cause: err,
    });
  }
}

/** What comparing one bucket found. */
export interface BucketComparison {
  objects: number;
  bytes: number;
  problems: ProblemList;
}

/**
 * Compares the scratch bucket with the restore point's index entries: the same key set, and per
 * object the size, content-type, user metadata and the sha256 of the body (read back with GET, at
 * most 4 at a time, hashed as it streams). The entries are read once, in order; only the listing
 * (key and size) is held in memory. Problems are returned, never thrown; an abort is thrown.
 */
export async function compareBucket(
  gateway: GatewayAccess,
  bucket: string,
  entries: AsyncIterable<IndexEntry>,
  opts: { signal: AbortSignal; problems?: ProblemList },
): Promise<BucketComparison> {
  const problems = opts.problems ?? new ProblemList();
  const listed = new Map<string, number>();
  for await (const item of gateway.client.listObjects(bucket, {
    signal: opts.signal,
    listVersion: gateway.listVersion,
  })) {
    listed.set(item.key, item.size);
  }
  const result = { objects: 0, bytes: 0, problems };
  await forEachLimited(entries, CONCURRENCY, async (entry) => {
    result.objects++;
    result.bytes += entry.size;
    const size = listed.get(entry.key);
    listed.delete(entry.key);
    const where = `${bucket}/${entry.key}`;
    if (size === undefined) {
      problems.add(`${where}: missing`);
      return;
    }
    try {
      const differences = await compareObject(gateway.client, bucket, entry, size, opts);
      if (differences.length > 0) problems.add(`${where}: ${differences.join(', ')}`);
    } catch (err) {
      opts.signal.throwIfAborted();
      problems.add(`${where}: cannot be read back: ${describeError(err)}`);
    }
  });
  for (const key of listed.keys()) problems.add(`${bucket}/${key}: not in the restore point`);
  return result;
}

/** What differs between one restored object and its index entry; empty when identical. */
async function compareObject(
  client: S3Client,
  bucket: string,
  entry: IndexEntry,
  listedSize: number,
  opts: { signal: AbortSignal },
): Promise<string[]> {
  // The GET's headers are what a HEAD answers: one request gives the head and the body.
  const got = await client.getObject(bucket, entry.key, opts);
  if (!got) return ['missing (listed, but GET says it does not exist)'];
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of got.body) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  const differences: string[] = [];
  if (listedSize !== entry.size) differences.push(`size ${listedSize} differs from ${entry.size}`);
  else if (bytes !== entry.size) differences.push(`body of ${bytes} bytes differs from ${entry.size}`);
  // Without a recorded content-type the restore sent none and the gateway picked its default.
  if (entry.contentType !== undefined && got.head.contentType !== entry.contentType) {
    differences.push(
      `content-type ${JSON.stringify(got.head.contentType ?? null)} differs from ${JSON.stringify(entry.contentType)}`,
    );
  }
  if (canonical(got.head.metadata) !== canonical(entry.metadata)) {
    differences.push(`metadata ${canonical(got.head.metadata)} differs from ${canonical(entry.metadata)}`);
  }
  if (hash.digest('hex') !== entry.sha256) differences.push('sha256 differs');
  return differences;
}

/** User metadata as JSON with sorted, lowercased names (the gateway lowercases them). */
function canonical(metadata: Readonly<Record<string, string>>): string {
  return JSON.stringify(
    Object.entries(metadata)
      .map(([name, value]) => [name.toLowerCase(), value] as const)
      .sort(([a], [b]) => compareText(a, b)),
  );
}
