// Restores bucket objects into the (new) cluster's gateway: plan against what the bucket already
// holds, then upload, checking every body against its sha256 before the object can exist. WAL-E's
// sentinels go last, oldest first, so LATEST names the same base backup it did at backup time; the
// sentinel of a base backup with an object that failed is withheld, so WAL-E never picks it.
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { setTimeout } from 'node:timers/promises';
import { forEachLimited } from '../concurrency.js';
import { BackupError, describeError } from '../errors.js';
import { DigestMap, hexPrefix } from '../repository/digest-map.js';
import { HashingStream } from '../repository/hashing.js';
import type { IndexEntry } from '../repository/manifest.js';
import { baseBackupOf } from '../repository/wal-e.js';
import type { Target } from '../targets/target.js';
import { isUnreachable, S3Error, type S3Client } from '../s3/client.js';
import { isUnreachableCode, readBytes } from '../s3/responses.js';
import { multipartEtag } from '../s3/parts.js';
import { chain } from '../streams.js';
import { emptyStepCounts, type Reporter, type StepCounts } from './report.js';
import { compareText } from '../compare.js';
import type { EntryList } from './entry-list.js';

const SENTINEL = '_backup_stop_sentinel.json';
/** Where WAL-E lists base backups (`basebackups_005/`): the sentinels it picks LATEST from. */
const BASE_BACKUPS = 'basebackups_';
const MIB = 1024 * 1024;
/**
 * Bodies up to this size are read whole: one PUT from a buffer, no stream pipeline per object (on
 * the 50,000-object restore the per-object stream machinery, not the bytes, was the cost).
 */
const WHOLE_BODY = 128 * 1024;

/** What happens to one object. `reorder` re-uploads an identical sentinel to keep WAL-E's order. */
export type ObjectAction = 'create' | 'skip' | 'overwrite' | 'conflict' | 'reorder';
const ACTIONS: readonly ObjectAction[] = ['create', 'skip', 'overwrite', 'conflict', 'reorder'];

/** The plan for one bucket. */
export interface BucketPlan {
  source: string;
  destination: string;
  createBucket: boolean;
  /** The restore point's objects; `action(i)` says what happens to entries.at(i). */
  entries: EntryList;
  actions: Uint8Array;
  /** Positions of the WAL-E sentinels in entries, in the order they are written (oldest first). */
  sentinels: number[];
  counts: StepCounts & { reorder: number };
  /** Dangers an operator must know before starting the platform. */
  hazards: string[];
  /** The sentinel WAL-E's LATEST must name after the restore (newest at backup time). */
  latestSentinel: string | undefined;
}

/** What the plan does with entries.at(index). */
export function actionOf(plan: BucketPlan, index: number): ObjectAction {
  return ACTIONS[plan.actions[index] ?? 0] ?? 'create';
}

/** True for a WAL-E base backup's stop sentinel. */
export function isSentinel(key: string): boolean {
  return key.endsWith(SENTINEL);
}

/**
 * Compares the restore point's objects with what the destination bucket holds. Writes nothing to
 * it; reads from `blobs` the bodies of multipart objects whose ETag alone does not settle it.
 */
export async function planBucket(
  client: S3Client,
  input: {
    source: string;
    destination: string;
    entries: EntryList;
    overwrite: boolean;
    listVersion: 1 | 2;
    blobs: Pick<Target, 'get'>;
  },
  opts: { signal: AbortSignal },
): Promise<BucketPlan> {
  const exists = await client.bucketExists(input.destination, opts);
  // What the destination holds, one version print per key; its sentinels with their LastModified as
  // well, to find those the restore point does not have and which one WAL-E's LATEST names now;
  // and its multipart objects' part counts: an earlier restore may have rebuilt them in other parts.
  const present = DigestMap.forKeys();
  const presentSentinels = new Map<string, string>();
  const presentParts = DigestMap.forKeys();
  if (exists) {
    for await (const item of client.listObjects(input.destination, {
      signal: opts.signal,
      listVersion: input.listVersion,
    })) {
      present.set(item.key, versionPrint(item));
      if (isSentinel(item.key) && item.key.startsWith(BASE_BACKUPS))
        presentSentinels.set(item.key, item.lastModified);
      const parts = partCount(item.etag);
      if (parts !== undefined) presentParts.set(item.key, parts);
    }
  }
  const rebuilt = await rebuiltBefore(input.entries, present, presentParts, input.blobs, opts);
  const counts = { ...emptyStepCounts(), reorder: 0 };
  const hazards: string[] = [];
  if (rebuilt.unread.count > 0) {
    hazards.push(
      `could not read ${rebuilt.unread.count} multipart body(ies) from the target to compare with ${input.destination}, so they count as differing (first: ${rebuilt.unread.first ?? ''})`,
    );
  }
  const decide = (entry: IndexEntry): ObjectAction => {
    const there = present.get(entry.key);
    if (there === undefined) return 'create';
    if (there === versionPrint(entry) || rebuilt.keys.has(entry.key)) return 'skip';
    return input.overwrite ? 'overwrite' : 'conflict';
  };
  const actions = new Uint8Array(input.entries.length);
  /** The first keys that differ, for the hazard. */
  const conflicts: string[] = [];
  const count = (entry: IndexEntry, action: ObjectAction): void => {
    if (action === 'conflict' && conflicts.length < 5) conflicts.push(entry.key);
    counts.objects++;
    counts.bytes += entry.size;
    if (action === 'reorder') counts.reorder++;
    else counts[action]++;
    if (action === 'create' || action === 'overwrite' || action === 'reorder')
      counts.transferBytes += entry.size;
  };
  const sentinels: { index: number; entry: IndexEntry }[] = [];
  let index = 0;
  for (const entry of input.entries) {
    if (isSentinel(entry.key)) sentinels.push({ index, entry });
    else {
      const action = decide(entry);
      actions[index] = ACTIONS.indexOf(action);
      count(entry, action);
    }
    index++;
  }
  // Sentinels, oldest first by their original LastModified: once one must be written, every newer
  // one is written after it too, or an older base backup would become WAL-E's LATEST.
  sentinels.sort((a, b) => compareText(a.entry.lastModified, b.entry.lastModified));
  // When LATEST names another sentinel than the restore point's newest, as after deis-database's
  // stop pushed a base backup of data it kept (Deis 1.9 and later), every sentinel is sent again.
  // (Not when the newest differs and stays: sending the older ones would make one of them LATEST.)
  const newest = sentinels.at(-1)?.entry;
  let writing =
    newest !== undefined && decide(newest) === 'skip' && latestOf(presentSentinels) !== newest.key;
  for (const { index: at, entry } of sentinels) {
    let action = decide(entry);
    if (action === 'create' || action === 'overwrite') writing = true;
    else if (action === 'skip' && writing) action = 'reorder';
    else if (action === 'conflict' && writing) {
      hazards.push(
        `${input.destination}/${entry.key} differs and stays (no --overwrite): WAL-E may not pick the base backup it picked at backup time`,
      );
    }
    actions[at] = ACTIONS.indexOf(action);
    count(entry, action);
  }
  for (const { entry } of sentinels) presentSentinels.delete(entry.key);
  const extra = [...presentSentinels.keys()];
  if (extra.length > 0) {
    hazards.push(
      `${input.destination} already holds ${extra.length} base backup(s) not in the restore point (${extra.map((k) => k.split('/').pop() ?? k).join(', ')}); the restore point's sentinels go after theirs, so that WAL-E's LATEST is the restore point's: remove them or restore into a fresh bucket to be rid of them`,
    );
  }
  if (counts.conflict > 0) {
    hazards.push(
      `${counts.conflict} object(s) in ${input.destination} differ from the restore point and stay as they are (${conflicts.join(', ')}${counts.conflict > conflicts.length ? ', …' : ''}); pass --overwrite to replace them`,
    );
  }
  return {
    source: input.source,
    destination: input.destination,
    createBucket: !exists,
    entries: input.entries,
    actions,
    sentinels: sentinels.map((s) => s.index),
    counts,
    hazards,
    latestSentinel: sentinels.at(-1)?.entry.key,
  };
}

/** The outcome of restoring one bucket. */
export interface BucketOutcome {
  counts: StepCounts & { reorder: number };
  errors: string[];
  /** The sentinel WAL-E would now pick as LATEST, when the bucket has any. */
  latestSentinel: string | undefined;
  /**
   * The sentinel LATEST should name: the plan's, or, when that one was withheld, the newest sentinel
   * that was not.
   */
  expectedLatest: string | undefined;
  /** Unfinished multipart uploads of the plan's keys, left by an earlier restore, now aborted. */
  abortedUploads: number;
}

/** A second and a little: two sentinels sent this far apart never share a whole-second Last-Modified. */
const SENTINEL_GAP_MS = 1050;

/** Carries out a plan: creates the bucket, uploads data, then sentinels in order. Never deletes. */
export async function applyBucket(
  client: S3Client,
  target: Target,
  plan: BucketPlan,
  opts: {
    signal: AbortSignal;
    concurrency: number;
    listVersion: 1 | 2;
    reporter: Reporter;
    progress: { objects: number; bytes: number; totalObjects: number; totalBytes: number };
  },
): Promise<BucketOutcome> {
  const counts = { ...emptyStepCounts(), reorder: 0 };
  const errors: string[] = [];
  if (plan.createBucket) await client.createBucket(plan.destination, opts);
  const progress = opts.progress;
  const tick = (bytes: number): void => {
    progress.objects++;
    progress.bytes += bytes;
    opts.reporter.progress('buckets', progress, {
      objects: progress.totalObjects,
      bytes: progress.totalBytes,
    });
  };
  // A gateway or target gone (refusing connections, not answering): no later object is tried.
  let stopped: BackupError | undefined;
  /** Base backups with an object that failed to restore → how many failed. */
  const failedBases = new Map<string, number>();
  /** Applies one entry: 'sent', 'kept' (skip or conflict), 'failed' (counted and named), or 'stopped' (an outage). */
  const run = async (index: number): Promise<'sent' | 'kept' | 'failed' | 'stopped'> => {
    const entry = plan.entries.at(index);
    const action = actionOf(plan, index);
    counts.objects++;
    counts.bytes += entry.size;
    if (action === 'skip' || action === 'conflict') {
      counts[action]++;
      tick(0);
      return 'kept';
    }
    try {
      await uploadObject(client, target, plan.destination, entry, opts.signal);
      if (action === 'reorder') counts.reorder++;
      else counts[action]++;
      counts.transferBytes += entry.size;
      tick(entry.size);
      return 'sent';
    } catch (err) {
      opts.signal.throwIfAborted();
      const stop = stopFor(err, plan.destination, client, target);
      if (stop !== undefined) {
        stopped ??= stop;
        return 'stopped';
      }
      counts.failed++;
      if (errors.length < 20) errors.push(`${plan.destination}/${entry.key}: ${describeError(err)}`);
      const base = baseBackupOf(entry.key);
      if (base !== undefined) failedBases.set(base, (failedBases.get(base) ?? 0) + 1);
    }
    tick(entry.size);
    return 'failed';
  };
  const sentinels = new Set(plan.sentinels);
  let next = 0;
  await Promise.all(
    Array.from({ length: opts.concurrency }, async () => {
      while (next < plan.entries.length && stopped === undefined) {
        const index = next++;
        if (!sentinels.has(index)) await run(index);
      }
    }),
  );
  if (stopped !== undefined) throw stopped;
  // One at a time and after all data: each sentinel's new LastModified must be later than the last.
  // An outage here stops the step as in the data phase: a sentinel left out is no success. (`run`
  // sets `stopped`, which the narrowing above cannot see: hence the function.)
  const outage = (): BackupError | undefined => stopped;
  let expectedLatest: string | undefined;
  // When the last sentinel sent was done. Ceph hammer lists Last-Modified in whole seconds, and
  // WAL-E breaks a tie by listing (name) order: there each sentinel goes a second after the one
  // before. A gateway that lists fractions (as the first sentinel sent shows) needs no wait.
  let sentAt: number | undefined;
  let gapMs: number | undefined;
  for (const index of plan.sentinels) {
    const entry = plan.entries.at(index);
    const base = baseBackupOf(entry.key);
    const failed = base === undefined ? 0 : (failedBases.get(base) ?? 0);
    const action = actionOf(plan, index);
    // A sentinel is what makes WAL-E trust a base backup: never for one with a part missing. (One
    // already in the bucket stays, as nothing is deleted.)
    if (failed > 0 && action !== 'skip' && action !== 'conflict') {
      counts.objects++;
      counts.bytes += entry.size;
      counts.failed++;
      errors.push(
        `${plan.destination}: base backup ${base ?? ''} is incomplete (${failed} of its object(s) failed to restore), so its stop sentinel was withheld and WAL-E will not restore it; fix the cause and restore again`,
      );
      tick(0);
      continue;
    }
    const wait = sentAt === undefined ? 0 : sentAt + (gapMs ?? 0) - Date.now();
    if (wait > 0 && action !== 'skip' && action !== 'conflict')
      await setTimeout(wait, undefined, { signal: opts.signal });
    const applied = await run(index);
    if (applied === 'sent') {
      sentAt = Date.now();
      gapMs ??= (await listsWholeSeconds(client, plan.destination, entry.key, opts)) ? SENTINEL_GAP_MS : 0;
    }
    const stop = outage();
    if (stop !== undefined) throw stop;
    // A sentinel that failed to go (counted and named) is not what LATEST should be: the check
    // after them would otherwise blame a newer base backup that is not there.
    if (applied !== 'failed') expectedLatest = entry.key;
  }
  let abortedUploads = 0;
  try {
    abortedUploads = await abortLeftUploads(client, plan, opts);
  } catch (err) {
    opts.signal.throwIfAborted();
    errors.push(
      `${plan.destination}: unfinished uploads an earlier restore may have left could not be listed or aborted (${describeError(err)}); their parts take space until they are aborted`,
    );
  }
  return {
    counts,
    errors,
    latestSentinel: await newestSentinel(client, plan.destination, opts),
    expectedLatest,
    abortedUploads,
  };
}

/**
 * Aborts the unfinished multipart uploads of keys the plan holds. A restore killed outright (kill
 * -9) neither completes nor aborts its uploads, and their parts would take space in the new
 * cluster's store for good. Run once the bucket's own uploads have all ended, under the cluster
 * lock: an upload of one of these keys left now is no other restore's, and the platform, stopped
 * while its buckets are restored, writes none. Returns how many.
 */
async function abortLeftUploads(
  client: S3Client,
  plan: BucketPlan,
  opts: { signal: AbortSignal },
): Promise<number> {
  // Built only once an upload is found (most restores find none): it parses every entry again.
  let keys: DigestMap | undefined;
  let aborted = 0;
  for await (const { page } of client.listUploads(plan.destination, { signal: opts.signal, prefix: '' })) {
    for (const upload of page.uploads) {
      if (keys === undefined) {
        keys = DigestMap.forKeys();
        for (const entry of plan.entries) keys.set(entry.key, 1);
      }
      if (keys.get(upload.key) === undefined) continue;
      await client.abortUpload(plan.destination, upload.key, upload.uploadId, opts);
      aborted++;
    }
  }
  return aborted;
}

/** A body that could not be read from the target while restoring it. */
class BlobReadError extends Error {
  constructor(blob: string, target: string, cause: unknown) {
    super(`read ${blob} from ${target}: ${describeError(cause)}`, { cause });
  }
}

/** The error that ends the whole restore, when err says the gateway or the target is gone. */
function stopFor(
  err: unknown,
  destination: string,
  client: S3Client,
  target: Target,
): BackupError | undefined {
  const again = 'and restore again: objects already there are skipped';
  // The target's own failures: a body that stopped coming, or a target that cannot be reached.
  const fromTarget =
    err instanceof BlobReadError || (err instanceof BackupError && err.code === 'ERR_TARGET')
      ? err.cause
      : undefined;
  if (fromTarget !== undefined) {
    const gone =
      isUnreachable(fromTarget) ||
      (fromTarget instanceof S3Error && fromTarget.s3Code === 'BodyStalled') ||
      isUnreachableCode((fromTarget as { code?: unknown }).code);
    if (!gone) return undefined;
    return new BackupError(
      'ERR_TARGET',
      `${destination}: target ${target.name} stopped the restore (${describeError(err)}); check the target ${again}`,
      { cause: err },
    );
  }
  if (!isUnreachable(err)) return undefined;
  return new BackupError(
    'ERR_GATEWAY',
    `${destination}: gateway ${client.endpoint.origin} stopped the restore (${err.message}); check the store's health (a full Ceph cluster blocks writes) ${again}`,
    { cause: err },
  );
}

/**
 * Whether the gateway lists `key`'s Last-Modified in whole seconds (Ceph hammer), going by the
 * listing of that one key: true also when it is not listed, to be safe.
 */
async function listsWholeSeconds(
  client: S3Client,
  bucket: string,
  key: string,
  opts: { signal: AbortSignal; listVersion: 1 | 2 },
): Promise<boolean> {
  const listing = { signal: opts.signal, listVersion: opts.listVersion, prefix: key };
  for await (const item of client.listObjects(bucket, listing)) {
    if (item.key === key) return isWholeSecond(item.lastModified);
  }
  return true;
}

/** True for an ISO time with no fraction of a second, or only zeros (`…:19.000Z`). */
export function isWholeSecond(time: string): boolean {
  return !/\.\d*[1-9]\d*Z$/.test(time);
}

/**
 * The sentinel WAL-E's LATEST names among `sentinels` (key → LastModified, in listing order): the
 * newest, a tie going to the later one listed, as in newestSentinel.
 */
function latestOf(sentinels: ReadonlyMap<string, string>): string | undefined {
  let latest: [string, string] | undefined;
  for (const sentinel of sentinels) if (!latest || sentinel[1] >= latest[1]) latest = sentinel;
  return latest?.[0];
}

/** The sentinel with the newest LastModified in the bucket: what WAL-E's LATEST resolves to. */
export async function newestSentinel(
  client: S3Client,
  bucket: string,
  opts: { signal: AbortSignal; listVersion: 1 | 2 },
): Promise<string | undefined> {
  let newest: { key: string; lastModified: string } | undefined;
  for await (const item of client.listObjects(bucket, {
    signal: opts.signal,
    listVersion: opts.listVersion,
    prefix: BASE_BACKUPS,
  })) {
    if (isSentinel(item.key) && (!newest || item.lastModified >= newest.lastModified)) newest = item;
  }
  return newest?.key;
}

/**
 * Uploads one object from its blob. A plain-MD5 ETag goes as a single PUT with Content-MD5, so the
 * gateway refuses a damaged body (the sha256 is compared after the PUT, as a second check); a
 * multipart ETag is rebuilt with the same part count (the same ETag when the part size is
 * recovered), and the sha256 is checked before the upload completes.
 */
async function uploadObject(
  client: S3Client,
  target: Target,
  bucket: string,
  entry: IndexEntry,
  signal: AbortSignal,
): Promise<void> {
  const blob = await target.get(entry.blob, { signal });
  // An error of the blob's own stream (the target failing mid-body) is the target's, not the gateway's.
  let blobFailure: unknown;
  blob.on('error', (err) => (blobFailure ??= err));
  const mismatch = (): Error =>
    new Error(
      `body ${entry.blob} does not match the sha256 in the manifest (damaged or tampered); not restored`,
    );
  const common = {
    signal,
    ...(entry.contentType === undefined ? {} : { contentType: entry.contentType }),
    metadata: entry.metadata,
  };
  const plainMd5 = /^[0-9a-f]{32}$/.test(entry.etag);
  const single = { ...common, size: entry.size, ...(plainMd5 ? { md5: entry.etag } : {}) };
  let body: Readable = blob;
  try {
    if ((plainMd5 || entry.size === 0) && entry.size <= WHOLE_BODY) {
      // Read whole and checked before the PUT, which then goes out with its headers in one write.
      const data = await readBytes(blob, entry.size + 1);
      if (data.length !== entry.size || sha256Hex(data) !== entry.sha256) throw mismatch();
      await client.putObject(bucket, entry.key, data, single);
      return;
    }
    const hashing = new HashingStream();
    body = chain(blob, hashing);
    if (plainMd5 || entry.size === 0) {
      await client.putObject(bucket, entry.key, body, single);
      if (hashing.digest() !== entry.sha256) throw mismatch();
    } else {
      await client.putObjectMultipart(bucket, entry.key, body, {
        ...common,
        partSize: partSizeFor(entry.size, partCount(entry.etag) ?? 1),
        size: entry.size,
        beforeComplete: () => {
          if (hashing.digest() !== entry.sha256) throw mismatch();
        },
      });
    }
  } catch (err) {
    body.destroy();
    if (err instanceof S3Error && err.s3Code === 'BadDigest') throw mismatch();
    if (blobFailure !== undefined) throw new BlobReadError(entry.blob, target.name, blobFailure);
    if (err instanceof S3Error && err.s3Code === 'BodyStalled')
      throw new BlobReadError(entry.blob, target.name, err);
    throw err;
  }
}

/**
 * The keys whose destination object is what uploadObject makes of the entry's body: a multipart
 * upload in parts of partSizeFor's size, whose ETag differs from the original's when the original
 * was cut in other parts. Reads those bodies from the target, a few at a time (rare: the same part
 * count, another version print), and compares the ETag they give, with the size, with `present`'s
 * print. A body that cannot be read leaves its object differing, and `unread` says why.
 */
async function rebuiltBefore(
  entries: EntryList,
  present: DigestMap,
  presentParts: DigestMap,
  blobs: Pick<Target, 'get'>,
  opts: { signal: AbortSignal },
): Promise<{ keys: Set<string>; unread: { count: number; first?: string } }> {
  const keys = new Set<string>();
  const unread: { count: number; first?: string } = { count: 0 };
  const candidates: IndexEntry[] = [];
  for (const entry of entries) {
    const parts = partCount(entry.etag);
    if (parts === undefined || presentParts.get(entry.key) !== parts) continue;
    if (present.get(entry.key) !== versionPrint(entry)) candidates.push(entry);
  }
  await forEachLimited(candidates, 4, async (entry) => {
    try {
      const body = await blobs.get(entry.blob, opts);
      const etag = await multipartEtag(body, partSizeFor(entry.size, partCount(entry.etag) ?? 1));
      if (present.get(entry.key) === versionPrint({ size: entry.size, etag })) keys.add(entry.key);
    } catch (err) {
      opts.signal.throwIfAborted();
      unread.count++;
      unread.first ??= `${entry.key} (blob ${entry.blob}): ${describeError(err)}`;
    }
  });
  return { keys, unread };
}

/** The part count of a multipart ETag (`<md5>-<parts>`); undefined for a plain md5. */
function partCount(etag: string): number | undefined {
  const match = /-(\d+)$/.exec(etag);
  return match ? Number(match[1]) : undefined;
}

/** One object version (size and ETag) as an exact number: the first 52 bits of their md5. */
function versionPrint(version: { size: number; etag: string }): number {
  return hexPrefix(createHash('md5').update(`${version.size}\0${version.etag}`).digest('hex'));
}

function sha256Hex(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * A part size that splits `size` bytes into `parts` parts, preferring the sizes clients use (the
 * registry's 5 MiB first) so the rebuilt object gets the original `<md5>-<parts>` ETag.
 */
export function partSizeFor(size: number, parts: number): number {
  for (const mib of [5, 8, 15, 16, 10, 25, 32, 50, 64, 100, 128, 256, 512]) {
    const part = mib * MIB;
    if (Math.max(1, Math.ceil(size / part)) === parts) return part;
  }
  return Math.max(5 * MIB, Math.ceil(size / Math.max(1, parts)));
}
