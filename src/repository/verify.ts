// Verifies restore points without restoring them: manifests, artifact and blob presence and sizes,
// optionally every stored byte against its sha256, and WAL-E continuity of the database bucket.
import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { BackupError, describeError, isAbort } from '../errors.js';
import { forEachLimited } from '../concurrency.js';
import type { Logger } from '../log.js';
import { checkKey } from '../targets/target.js';
import { DigestMap, hexPrefix, isBlobKey } from './digest-map.js';
import { isSnapshotId, SNAPSHOTS } from './layout.js';
import type { ArtifactRecord, IndexEntry, Manifest, SourceRecord } from './manifest.js';
import { NoRestorePointError, type Repository } from './repository.js';
import { isTagFile, readTagged, RegistryImages, type SmallFile } from './registry-check.js';
import { checkWalE, isWalEKey, type WalEKey } from './wal-e.js';

/** How to verify. */
export interface VerifyOptions {
  /** Re-read every artifact and blob and check its sha256, not only its presence and size. */
  readData: boolean;
  signal: AbortSignal;
  log: Logger;
  /** Blobs read at once with readData; default 8. */
  concurrency?: number;
}

/** The verdict on one restore point. Warnings never make it damaged. */
export interface SnapshotVerification {
  id: string;
  status: 'ok' | 'damaged';
  /** Artifacts and index entries checked. */
  checkedObjects: number;
  /** Bytes whose sha256 was checked for this restore point (a blob shared with another one is read once per call but counted in each); 0 without readData. */
  checkedBytes: number;
  /** At most MAX_FINDINGS, the last one counting the rest. */
  errors: string[];
  warnings: string[];
  /** The bucket holding WAL-E data (the first one, if several do). */
  walE?: { bucket: string; baseBackups: number; segments: number };
}

/** The verdict on every selected restore point. */
export interface VerifyReport {
  /** damaged when any restore point is damaged or unreadable. */
  status: 'ok' | 'damaged';
  snapshots: SnapshotVerification[];
  /** Manifests that exist but cannot be read (damaged JSON, another format version). */
  unreadable: { id: string; error: string }[];
}

/** Errors and warnings kept per restore point; a deleted blobs/ folder should not print a million lines. */
export const MAX_FINDINGS = 100;
const SHA256 = /^[0-9a-f]{64}$/;

/**
 * Verifies the selected restore points ('latest' allowed among ids). Reads only: a verify never writes
 * to the target. Throws ERR_NOT_FOUND for an id that does not exist, and when the target cannot answer;
 * damage is reported, not thrown.
 */
export async function verifySnapshots(
  repository: Repository,
  selection: { ids: readonly string[] } | 'all',
  opts: VerifyOptions,
): Promise<VerifyReport> {
  const { signal, log } = opts;
  const concurrency = Math.max(1, opts.concurrency ?? 8);
  setMaxListeners(16 + 4 * concurrency, signal);
  const ids = await selectIds(repository, selection, signal);
  log.info({ snapshots: ids.length, readData: opts.readData }, 'verify started');
  const context: Context = {
    repository,
    opts,
    concurrency,
    hashes: DigestMap.forBlobs(),
    hashErrors: new Map(),
    registryBodies: new Map(),
  };
  const report: VerifyReport = { status: 'ok', snapshots: [], unreadable: [] };
  for (const id of ids) {
    signal.throwIfAborted();
    let manifest: Manifest;
    try {
      manifest = await repository.readManifest(id, { signal, anyId: true });
    } catch (err) {
      // Listed a moment ago: a concurrent forget removed it, which is not damage.
      if (selection === 'all' && err instanceof BackupError && err.code === 'ERR_NOT_FOUND') continue;
      if (!(err instanceof BackupError) || err.code !== 'ERR_INTEGRITY') throw err;
      report.unreadable.push({ id, error: err.message });
      log.warn({ snapshot: id, error: err.message }, 'manifest unreadable');
      continue;
    }
    const verdict = await verifyOne(context, id, manifest);
    // A damaged restore point is the verify's finding, not its failure: warn, not error.
    log[verdict.status === 'ok' ? 'info' : 'warn'](
      {
        snapshot: id,
        status: verdict.status,
        checkedObjects: verdict.checkedObjects,
        checkedBytes: verdict.checkedBytes,
        errors: verdict.errors.length,
        warnings: verdict.warnings.length,
      },
      'restore point verified',
    );
    report.snapshots.push(verdict);
  }
  if (report.unreadable.length > 0 || report.snapshots.some((s) => s.status === 'damaged')) {
    report.status = 'damaged';
  }
  log.info({ status: report.status, snapshots: ids.length }, 'verify finished');
  return report;
}

interface Context {
  repository: Repository;
  opts: VerifyOptions;
  concurrency: number;
  /** Every blob under blobs/ with its size, listed once per call. */
  blobs?: Promise<DigestMap>;
  /**
   * Each blob read, once per call even when several restore points share it: the first 52 bits of
   * its sha256 (an exact number), or -1 when it could not be read.
   */
  hashes: DigestMap;
  /** Why each blob that could not be read failed. */
  hashErrors: Map<string, string>;
  /** The bodies of the registry's tag and tagged images' ancestry files read so far, by blob. */
  registryBodies: Map<string, string>;
}

/** Folder ids to verify, deduplicated, in order. */
async function selectIds(
  repository: Repository,
  selection: { ids: readonly string[] } | 'all',
  signal: AbortSignal,
): Promise<string[]> {
  if (selection !== 'all') {
    const ids: string[] = [];
    for (const id of selection.ids) {
      ids.push(id === 'latest' ? (await repository.readManifest(id, { signal })).id : id);
    }
    return [...new Set(ids)];
  }
  // Not Repository.scan: it keeps a manifest's own id but drops its folder, and a verify must see
  // a manifest whose id differs from the folder it sits in. Unreadable ones surface in readManifest.
  const ids = new Set<string>();
  for await (const info of repository.target.list(SNAPSHOTS, { signal })) {
    const [id, name] = info.key.slice(SNAPSHOTS.length).split('/');
    if (id !== undefined && name === 'manifest.json' && isSnapshotId(id)) ids.add(id);
  }
  // An empty target (or a mistyped one) is not "0 restore point(s) sound".
  if (ids.size === 0) throw new NoRestorePointError(repository.target);
  return [...ids].sort();
}

/** Checks one restore point: its manifest's shape, then every artifact it names. */
async function verifyOne(context: Context, id: string, manifest: Manifest): Promise<SnapshotVerification> {
  const { repository, opts } = context;
  const signal = opts.signal;
  const verdict: SnapshotVerification = {
    id,
    status: 'ok',
    checkedObjects: 0,
    checkedBytes: 0,
    errors: [],
    warnings: [],
  };
  const error = (message: string) => verdict.errors.push(`snapshot ${id}: ${message}`);
  const warn = (message: string) => verdict.warnings.push(`snapshot ${id}: ${message}`);
  const status: unknown = manifest.status;
  if (manifest.id !== id) error(`manifest names id ${JSON.stringify(manifest.id)}`);
  if (status !== 'success' && status !== 'partial') error(`manifest has status ${JSON.stringify(status)}`);
  // The manifest is JSON from the target: every field is checked before it is trusted.
  for (const source of manifest.sources as (Partial<SourceRecord> | null)[]) {
    if (typeof source !== 'object' || source === null) {
      error(`source record ${JSON.stringify(source)} is not an object`);
      continue;
    }
    const name = source.id ?? '(source without id)';
    const sourceStatus: unknown = source.status;
    if (!['bucket', 'volume', 'database'].includes(source.kind ?? '')) {
      error(`source ${name} has kind ${JSON.stringify(source.kind)}`);
      continue;
    }
    if (sourceStatus !== 'success' && sourceStatus !== 'partial') {
      if (sourceStatus === 'failed') warn(`source ${name} is marked failed; nothing of it was checked`);
      else error(`source ${name} has status ${JSON.stringify(sourceStatus)}`);
      continue;
    }
    if (sourceStatus === 'partial')
      warn(`source ${name} is partial (${source.errors?.length ?? 0} errors at backup)`);
    const artifacts = Array.isArray(source.artifacts) ? source.artifacts : [];
    if (artifacts.length === 0) error(`source ${name} has no artifact`);
    if (source.kind === 'bucket' && typeof source.bucket !== 'string')
      error(`source ${name} names no bucket`);
    for (const artifact of artifacts) {
      const problem = artifactProblem(id, artifact);
      if (problem) {
        error(`source ${name}: artifact ${problem}`);
        continue;
      }
      signal.throwIfAborted();
      const what = `artifact ${artifact.key} of ${name}`;
      verdict.checkedObjects++;
      const info = await repository.target.stat(artifact.key, { signal });
      if (!info) error(`${what} missing`);
      else if (info.size !== artifact.size)
        error(`${what}: size ${info.size} in target, ${artifact.size} in manifest`);
      else if (source.kind === 'bucket' && typeof source.bucket === 'string') {
        // readIndex hashes the whole index anyway, so it is checked here with or without readData.
        await verifyBucket(context, verdict, source.bucket, artifact, error);
      } else if (opts.readData) {
        const failure = await attempt(signal, () => repository.verifyArtifact(artifact, { signal }));
        if (failure) error(`${what}${failure}`);
        else verdict.checkedBytes += artifact.size;
      }
    }
  }
  verdict.errors = capped(verdict.errors);
  verdict.warnings = capped(verdict.warnings);
  verdict.status = verdict.errors.length > 0 ? 'damaged' : 'ok';
  return verdict;
}

/**
 * Checks a bucket index, then each entry's blob as the entries stream past (at most `concurrency`
 * blobs read at once), then the WAL-E layout if the bucket holds one. The index is hashed whole
 * first: a damaged index yields its own finding, not one per garbled entry.
 */
async function verifyBucket(
  context: Context,
  verdict: SnapshotVerification,
  bucket: string,
  artifact: ArtifactRecord,
  error: (message: string) => void,
): Promise<void> {
  const { repository, opts } = context;
  const signal = opts.signal;
  const damaged = await attempt(signal, () => repository.verifyArtifact(artifact, { signal }));
  if (damaged) {
    error(`index ${artifact.key} of bucket ${bucket}${damaged}; its objects were not checked`);
    return;
  }
  if (opts.readData) verdict.checkedBytes += artifact.size;
  context.blobs ??= DigestMap.blobSizesIn(repository.target, { signal });
  const stored = await context.blobs;
  // Only what the WAL-E check reads, and only for WAL-E's keys; the registry's image files likewise.
  const walEKeys: WalEKey[] = [];
  const images = new RegistryImages();
  // Tags' bodies name their images. A verify that reads the data keeps them while it hashes every
  // body (a few bytes each), and reads again only a tag whose blob was hashed for another key; one
  // that does not reads just the tags' files. Then the tagged images' ancestry files are read, for
  // parents the bucket lacks. Bodies are kept by blob, so restore points that share one read it once.
  const tags: SmallFile[] = [];
  const check = async (entry: IndexEntry): Promise<void> => {
    verdict.checkedObjects++;
    if (!wellFormed(entry)) {
      error(
        `index ${artifact.key} of bucket ${bucket}: malformed entry ${JSON.stringify(entry).slice(0, 200)}`,
      );
      return;
    }
    if (isWalEKey(entry.key)) walEKeys.push({ key: entry.key, size: entry.size });
    images.add(entry.key, entry.blob);
    const tag = isTagFile(entry.key, entry.size);
    const what = `blob ${entry.blob} of ${bucket}/${entry.key}`;
    const size = stored.get(entry.blob);
    if (size === undefined) error(`${what} missing`);
    else if (size !== entry.size) error(`${what}: size ${size} in target, ${entry.size} in index`);
    else if (!opts.readData) {
      if (tag) tags.push({ key: entry.key, blob: entry.blob });
    } else {
      let prefix = context.hashes.get(entry.blob);
      if (prefix === undefined) {
        const result = await hashBlob(repository, entry.blob, signal, tag);
        prefix = 'error' in result ? -1 : hexPrefix(result.sha256);
        if ('error' in result) context.hashErrors.set(entry.blob, result.error);
        else if (result.body !== undefined)
          context.registryBodies.set(entry.blob, result.body.toString('utf8'));
        context.hashes.set(entry.blob, prefix);
      }
      if (prefix === -1) error(`${what}${context.hashErrors.get(entry.blob) ?? ' unreadable'}`);
      else if (prefix !== hexPrefix(entry.sha256)) error(`${what}: sha256 mismatch (damaged or tampered)`);
      else {
        verdict.checkedBytes += entry.size;
        if (tag) {
          const body = context.registryBodies.get(entry.blob);
          if (body === undefined) tags.push({ key: entry.key, blob: entry.blob });
          else images.addTag(entry.key, body);
        }
      }
    }
  };
  const unreadable = await attempt(signal, () =>
    forEachLimited(repository.readIndex(artifact, { signal }), context.concurrency, check),
  );
  // Hashed whole a moment ago: it changed or went away since.
  if (unreadable) error(`index ${artifact.key} of bucket ${bucket}${unreadable} on its second read`);

  await readTagged(images, repository.target, tags, { signal, cache: context.registryBodies });
  for (const message of images.findings())
    verdict.warnings.push(`snapshot ${verdict.id}: bucket ${bucket}: registry: ${message}`);
  if (walEKeys.length > 0) {
    const walE = checkWalE(walEKeys);
    for (const message of walE.errors) error(`bucket ${bucket}: WAL-E: ${message}`);
    for (const message of walE.warnings)
      verdict.warnings.push(`snapshot ${verdict.id}: bucket ${bucket}: WAL-E: ${message}`);
    verdict.walE ??= { bucket, baseBackups: walE.baseBackups, segments: walE.segments };
  }
}

/** Runs a read; undefined when it succeeded, else the finding's tail (": sha256 mismatch …"). Aborts throw. */
async function attempt(signal: AbortSignal, read: () => Promise<void>): Promise<string | undefined> {
  try {
    await read();
    return undefined;
  } catch (err) {
    if (signal.aborted || isAbort(err)) throw err;
    return err instanceof BackupError && err.code === 'ERR_INTEGRITY'
      ? ': sha256 mismatch (damaged or tampered)'
      : ` unreadable: ${describeError(err)}`;
  }
}

/** True when an index entry has what a check needs: key, blob key, size and sha256. */
function wellFormed(entry: Partial<IndexEntry> | null): entry is IndexEntry {
  return (
    typeof entry === 'object' &&
    entry !== null &&
    typeof entry.key === 'string' &&
    isBlobKey(entry.blob ?? '') &&
    Number.isSafeInteger(entry.size) &&
    (entry.size ?? -1) >= 0 &&
    SHA256.test(entry.sha256 ?? '')
  );
}

/** Why an artifact record cannot be checked ("<key>: <why>"), or undefined when it is well-formed. */
function artifactProblem(id: string, record: ArtifactRecord): string | undefined {
  const artifact = record as Partial<ArtifactRecord> | null;
  if (typeof artifact !== 'object' || artifact === null)
    return `${JSON.stringify(artifact)} is not an object`;
  const key = artifact.key;
  if (typeof key !== 'string') return `${JSON.stringify(key)} has no key`;
  const where = JSON.stringify(key);
  try {
    checkKey(key);
  } catch {
    return `${where} has an invalid key`;
  }
  if (!key.startsWith(`${SNAPSHOTS}${id}/`) && !isBlobKey(key)) {
    return `${where} is neither under ${SNAPSHOTS}${id}/ nor a blob`;
  }
  if (!Number.isSafeInteger(artifact.size) || (artifact.size ?? -1) < 0)
    return `${where} has an invalid size`;
  if (!SHA256.test(String(artifact.sha256))) return `${where} has an invalid sha256`;
  return undefined;
}

/**
 * sha256 of a stored blob (with its bytes when `keep`: a tag file of a few bytes), or the tail of a
 * finding (" unreadable: …"); only an abort throws.
 */
async function hashBlob(
  repository: Repository,
  key: string,
  signal: AbortSignal,
  keep = false,
): Promise<{ sha256: string; body?: Buffer } | { error: string }> {
  const hash = createHash('sha256');
  const kept: Buffer[] = [];
  const failure = await attempt(signal, async () => {
    // A loop, not a pipeline: on 50,000 small blobs the pipeline's own objects were most of the heap.
    for await (const chunk of await repository.target.get(key, { signal })) {
      signal.throwIfAborted();
      hash.update(chunk as Buffer);
      if (keep) kept.push(chunk as Buffer);
    }
  });
  if (failure !== undefined) return { error: failure };
  return keep ? { sha256: hash.digest('hex'), body: Buffer.concat(kept) } : { sha256: hash.digest('hex') };
}

/** At most MAX_FINDINGS lines, the last one counting what was left out. */
function capped(list: string[]): string[] {
  if (list.length <= MAX_FINDINGS) return list;
  return [...list.slice(0, MAX_FINDINGS - 1), `${list.length - MAX_FINDINGS + 1} more findings left out`];
}
