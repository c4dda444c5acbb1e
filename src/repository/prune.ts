// Prune: remove what no restore point references (blobs of forgotten points, folders of interrupted
// runs, leftovers inside committed folders, uploads a killed run left unfinished). The caller holds
// the cluster lock, so no run is writing: the lock, not a grace period, is what keeps a running
// backup's bodies safe. `sweep` is the routine one after forget: only the blobs of the points just
// forgotten.
import type { Logger } from '../log.js';
import { BackupError, describeError } from '../errors.js';
import { BLOBS, isSnapshotId, manifestKey, runMarkerKey, SNAPSHOTS } from './layout.js';
import type { ArtifactRecord, IndexEntry, Manifest } from './manifest.js';
import type { Repository } from './repository.js';
import { forEachLimited, mapConcurrently } from '../concurrency.js';
import type { Target } from '../targets/target.js';

/** What prune removed (or, in a dry run, would remove). */
export interface PruneReport {
  dryRun: boolean;
  /** `all`: every stored key was checked; `forgotten`: only the blobs of the points just forgotten (sweep). */
  scope: 'all' | 'forgotten';
  /** Restore points whose references were read. */
  snapshots: number;
  /** Blobs the restore points reference (scope `all` only). */
  referencedBlobs?: number;
  removedBlobs: number;
  /** Keys under snapshots/ removed: interrupted runs and unreferenced leftovers. */
  removedKeys: number;
  /** Ids of interrupted runs whose folders were removed. */
  interrupted: string[];
  freedBytes: number;
  /** Bytes the restore points reference (scope `all` only). */
  keptBytes?: number;
  /**
   * Unfinished uploads under snapshots/ and blobs/ dropped (in a dry run, that would be), all begun
   * before the cluster lock was taken (scope `all`, on a target whose puts leave such uploads: S3).
   * Their size is not known: that would take a ListParts per upload.
   */
  abortedUploads?: number;
  /** Unfinished uploads left because they began after the lock was taken: this run's own, if any (as abortedUploads). */
  recentUploads?: number;
  /**
   * Why the unfinished uploads could not all be listed or dropped (an outage, a policy that denies
   * it). The rest of the report stands; the prune has failed all the same.
   */
  uploadsError?: string;
  /**
   * Why a key could not be removed (an outage, a policy that denies deletes). Removal stops there;
   * the counts are what was removed before it, and the prune has failed.
   */
  removeError?: string;
}

/** Why the prune failed with its report whole (a removal or the uploads), or undefined when it did not. */
export function pruneFailure(report: PruneReport): string | undefined {
  return report.removeError ?? report.uploadsError;
}

/** How many removals run at once. */
const CONCURRENCY = 8;

/**
 * The longest the prune after each backup goes on sweeping without listing every stored key. A
 * sweep does not see what a killed put left (a temporary is only removable once an hour old).
 */
export const FULL_PRUNE_EVERY_MS = 7 * 24 * 60 * 60 * 1000;

/** Where prune looks for unfinished uploads: the two folders whose keys it removes. */
const UPLOAD_FOLDERS = [SNAPSHOTS, BLOBS];

/**
 * Removes every stored key that no committed restore point references, then drops the unfinished
 * uploads under snapshots/ and blobs/ begun before `lockedAt`. Refuses (ERR_INTEGRITY) while any
 * manifest or index cannot be read: what such a point references is unknown, so removing anything
 * could break it. A failure to remove a key or to list or drop the uploads does not throw: it is
 * the report's `removeError` or `uploadsError` (see pruneFailure), and the caller fails the prune
 * with the rest of the report in hand.
 */
export async function prune(
  repository: Repository,
  opts: {
    dryRun: boolean;
    /** When the caller took the cluster lock (the holder's `since`): uploads begun later are left. */
    lockedAt: Date;
    /**
     * Restore points a forget drops (dry) or just dropped: counted as gone, as the real forget leaves
     * them, and their folders left out, since forget, not prune, removes those (a store whose
     * listings lag may still list a manifest forget removed, which prune would refuse as unread).
     */
    forgotten?: ReadonlySet<string>;
    signal: AbortSignal;
    log: Logger;
  },
): Promise<PruneReport> {
  const { signal, log } = opts;
  const target = repository.target;
  const forgotten = opts.forgotten ?? new Set<string>();
  const scan = await repository.scan({ signal });
  const { unreadable, uncommitted } = scan;
  const snapshots = scan.snapshots.filter((manifest) => !forgotten.has(manifest.id));
  if (unreadable.length > 0) {
    const first = unreadable[0];
    throw new BackupError(
      'ERR_INTEGRITY',
      `prune: restore point ${first?.id ?? ''} cannot be read (${first?.error ?? ''}); nothing removed. Remove or repair it first (deis-backup verify --all lists the damage)`,
    );
  }
  const referenced = new Set<string>();
  // Referenced blobs with their sizes from the indexes: the blob folder is then listed by key
  // alone, and only what is removed is asked for its size (a stat per blob was most of the time).
  const blobs = new Map<string, number>();
  // Indexes with the same sha256 hold the same entries (a bucket that did not change between two
  // runs): one of them is read. Were another copy damaged, its restore point would reference the
  // same blobs all the same.
  for (const manifest of snapshots) {
    referenced.add(manifestKey(manifest.id));
    referenced.add(runMarkerKey(manifest.id));
    for (const source of manifest.sources) {
      for (const artifact of source.artifacts) referenced.add(artifact.key);
    }
  }
  for (const index of bucketIndexes(snapshots).values()) {
    for await (const entry of indexEntries(repository, index, signal)) blobs.set(entry.blob, entry.size);
  }

  const report: PruneReport = {
    dryRun: opts.dryRun,
    scope: 'all',
    snapshots: snapshots.length,
    referencedBlobs: blobs.size,
    removedBlobs: 0,
    removedKeys: 0,
    interrupted: uncommitted,
    freedBytes: 0,
  };
  let keptBytes = 0;
  const doomed: { key: string; size: number | undefined; blob: boolean }[] = [];
  const forgottenFolder = (key: string): boolean =>
    forgotten.has(key.slice(SNAPSHOTS.length).split('/')[0] ?? '');
  for await (const info of target.list(SNAPSHOTS, { signal })) {
    if (referenced.has(info.key)) keptBytes += info.size;
    else if (forgottenFolder(info.key)) continue;
    else if (isManifestKey(info.key)) {
      // A manifest the scan did not return (read as missing, or written since by a runner without
      // the lock) is a restore point whose references are unknown: removing its folder loses it.
      throw new BackupError(
        'ERR_INTEGRITY',
        `prune: ${info.key} appeared, or could not be found, while prune read the restore points; nothing removed. Run prune again; if this repeats, check that no other deis-backup writes to ${target.name} without the cluster lock`,
      );
    } else doomed.push({ ...info, blob: false });
  }
  for await (const key of target.listKeys(BLOBS, { signal })) {
    const size = blobs.get(key);
    if (size !== undefined) keptBytes += size;
    else doomed.push({ key, size: undefined, blob: true });
  }
  report.keptBytes = keptBytes;
  await removeAll(report, signal, doomed, async (item) => {
    const size = item.size ?? (await target.stat(item.key, { signal }))?.size ?? 0;
    if (!opts.dryRun) await target.remove(item.key, { signal });
    report.freedBytes += size;
    if (item.blob) report.removedBlobs++;
    else report.removedKeys++;
  });
  // A prune that could not remove everything is no full prune: the next retention runs one again.
  if (report.removeError === undefined) {
    if (target.leavesUploads) await pruneUploads(target, report, opts);
    if (!opts.dryRun) {
      await repository.writeStatus('prune', { lastFullAt: new Date().toISOString() }, { signal });
    }
  }
  const fields = {
    dryRun: opts.dryRun,
    removedBlobs: report.removedBlobs,
    removedKeys: report.removedKeys,
    freedBytes: report.freedBytes,
    interrupted: uncommitted,
    abortedUploads: report.abortedUploads,
    recentUploads: report.recentUploads,
    uploadsError: report.uploadsError,
  };
  if (report.removeError !== undefined)
    log.error({ ...fields, removeError: report.removeError }, 'prune failed');
  else log.info(fields, opts.dryRun ? 'prune planned' : 'prune finished');
  return report;
}

/**
 * Drops the unfinished uploads under snapshots/ and blobs/ that began before the lock was taken.
 * Every run writes under the cluster lock, so such an upload belongs to a run that has ended: one
 * killed midway, or whose own abort of it failed. An upload that began later is left and counted:
 * a backup prunes under the lock it wrote under, and its own puts have all settled by then, but an
 * upload begun since the lock can only be this process's. Times are compared on this machine's
 * clock; the target converts its own so that an upload never looks older than it is.
 */
async function pruneUploads(
  target: Target,
  report: PruneReport,
  opts: { dryRun: boolean; lockedAt: Date; signal: AbortSignal },
): Promise<void> {
  const { signal } = opts;
  let aborted = 0;
  let recent = 0;
  try {
    for (const folder of UPLOAD_FOLDERS) {
      await forEachLimited(target.listUploads(folder, { signal }), CONCURRENCY, async (upload) => {
        if (upload.initiated.getTime() >= opts.lockedAt.getTime()) {
          recent++;
          return;
        }
        if (!opts.dryRun) await target.abortUpload(upload, { signal });
        aborted++;
      });
    }
  } catch (err) {
    signal.throwIfAborted();
    report.uploadsError = describeError(err);
  } finally {
    report.abortedUploads = aborted;
    report.recentUploads = recent;
  }
}

/**
 * The routine prune after forget, run between the removal of the dropped points' manifests and of
 * the rest of their folders (forget's afterManifests): removes the blobs the dropped points'
 * indexes name and no kept point's index does. An index a kept point shares (same sha256) is not
 * read: nothing in it can go. The blob folder is not listed, so what a killed run or prune left
 * there waits for a full prune: applyRetention runs one after an interrupted run, after a sweep
 * that stopped at a failed removal, and at least every FULL_PRUNE_EVERY_MS.
 */
export async function sweep(
  repository: Repository,
  dropped: readonly Manifest[],
  kept: readonly Manifest[],
  opts: { signal: AbortSignal; log: Logger },
): Promise<PruneReport> {
  const { signal } = opts;
  const keptIndexes = bucketIndexes(kept);
  const doomed = new Map<string, number>();
  for (const [sha256, index] of bucketIndexes(dropped)) {
    if (keptIndexes.has(sha256)) continue;
    for await (const entry of indexEntries(repository, index, signal)) {
      // Like the full prune, which lists only blobs/ and snapshots/: an entry naming a key outside
      // blobs/ removes nothing (and the target refuses a key that climbs out of it).
      if (typeof entry.blob === 'string' && entry.blob.startsWith(BLOBS)) doomed.set(entry.blob, entry.size);
    }
  }
  if (doomed.size > 0) {
    for (const index of keptIndexes.values()) {
      for await (const entry of indexEntries(repository, index, signal)) doomed.delete(entry.blob);
    }
  }
  const report: PruneReport = {
    dryRun: false,
    scope: 'forgotten',
    snapshots: kept.length,
    removedBlobs: 0,
    removedKeys: 0,
    interrupted: [],
    freedBytes: 0,
  };
  await removeAll(report, signal, [...doomed], async ([key, size]) => {
    await repository.target.remove(key, { signal });
    report.freedBytes += size;
    report.removedBlobs++;
  });
  const fields = {
    removedBlobs: report.removedBlobs,
    freedBytes: report.freedBytes,
    forgotten: dropped.map((m) => m.id),
  };
  if (report.removeError === undefined) {
    opts.log.info(fields, 'prune of the forgotten restore points finished');
    return report;
  }
  opts.log.error(
    { ...fields, removeError: report.removeError },
    'prune of the forgotten restore points failed',
  );
  // The blobs it left are named by no index any more: only a full prune finds them. Best effort,
  // since the target may be down: the record of the last full prune is cleared to make one due.
  await repository.writeStatus('prune', { lastFullAt: null }, { signal }).catch(() => undefined);
  return report;
}

/**
 * Runs `remove` on each item, CONCURRENCY at a time, until one fails: that failure becomes the
 * report's removeError (what was removed before it stays counted), and no further item is started.
 */
async function removeAll<T>(
  report: PruneReport,
  signal: AbortSignal,
  items: readonly T[],
  remove: (item: T) => Promise<void>,
): Promise<void> {
  try {
    await mapConcurrently(items, CONCURRENCY, async (item) => {
      signal.throwIfAborted();
      await remove(item);
    });
  } catch (err) {
    signal.throwIfAborted();
    report.removeError = describeError(err);
  }
}

/** Whether the last full prune is older than FULL_PRUNE_EVERY_MS, or not on record. */
export async function fullPruneDue(
  repository: Repository,
  now: Date,
  opts: { signal: AbortSignal },
): Promise<boolean> {
  const status = (await repository.readStatus('prune', opts)) as { lastFullAt?: unknown } | undefined;
  const last = typeof status?.lastFullAt === 'string' ? Date.parse(status.lastFullAt) : Number.NaN;
  // A time ahead of now (a clock set back) is no proof of a recent full prune either.
  return Number.isNaN(last) || last > now.getTime() || now.getTime() - last >= FULL_PRUNE_EVERY_MS;
}

/** The bucket indexes of the restore points, one per sha256 (unchanged buckets share one). */
function bucketIndexes(
  manifests: readonly Manifest[],
): Map<string, { artifact: ArtifactRecord; snapshot: string }> {
  const indexes = new Map<string, { artifact: ArtifactRecord; snapshot: string }>();
  for (const manifest of manifests) {
    for (const source of manifest.sources) {
      if (source.kind !== 'bucket') continue;
      for (const artifact of source.artifacts) {
        if (!indexes.has(artifact.sha256)) indexes.set(artifact.sha256, { artifact, snapshot: manifest.id });
      }
    }
  }
  return indexes;
}

/** The entries of an index; ERR_INTEGRITY naming it when it cannot be read whole. */
async function* indexEntries(
  repository: Repository,
  index: { artifact: ArtifactRecord; snapshot: string },
  signal: AbortSignal,
): AsyncIterable<IndexEntry> {
  try {
    yield* repository.readIndex(index.artifact, { signal });
  } catch (err) {
    signal.throwIfAborted();
    throw new BackupError(
      'ERR_INTEGRITY',
      `prune: index ${index.artifact.key} of restore point ${index.snapshot} cannot be read (${describeError(err)}); nothing removed`,
      { cause: err },
    );
  }
}

/** True for `snapshots/<id>/manifest.json`: a key that makes its folder a restore point. */
function isManifestKey(key: string): boolean {
  const [id, name, ...rest] = key.slice(SNAPSHOTS.length).split('/');
  return rest.length === 0 && name === 'manifest.json' && id !== undefined && isSnapshotId(id);
}
