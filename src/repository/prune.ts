// Prune: remove what no restore point references (blobs of forgotten points, folders of interrupted
// runs, leftovers inside committed folders). The caller holds the cluster lock, so no run is writing:
// the lock, not a grace period, is what keeps a running backup's bodies safe.
import type { Logger } from '../log.js';
import { BackupError, describeError } from '../errors.js';
import { BLOBS, manifestKey, runMarkerKey, SNAPSHOTS } from './layout.js';
import type { Repository } from './repository.js';
import { mapConcurrently } from '../concurrency.js';

/** What prune removed (or, in a dry run, would remove). */
export interface PruneReport {
  dryRun: boolean;
  /** Restore points whose references were read. */
  snapshots: number;
  referencedBlobs: number;
  removedBlobs: number;
  /** Keys under snapshots/ removed: interrupted runs and unreferenced leftovers. */
  removedKeys: number;
  /** Ids of interrupted runs whose folders were removed. */
  interrupted: string[];
  freedBytes: number;
  keptBytes: number;
}

/** How many removals run at once. */
const CONCURRENCY = 8;

/**
 * Removes every stored key that no committed restore point references. Refuses (ERR_INTEGRITY)
 * while any manifest or index cannot be read: what such a point references is unknown, so
 * removing anything could break it.
 */
export async function prune(
  repository: Repository,
  opts: { dryRun: boolean; signal: AbortSignal; log: Logger },
): Promise<PruneReport> {
  const { signal, log } = opts;
  const target = repository.target;
  const { snapshots, unreadable, uncommitted } = await repository.scan({ signal });
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
  const indexesRead = new Set<string>();
  for (const manifest of snapshots) {
    referenced.add(manifestKey(manifest.id));
    referenced.add(runMarkerKey(manifest.id));
    for (const source of manifest.sources) {
      for (const artifact of source.artifacts) {
        referenced.add(artifact.key);
        if (source.kind !== 'bucket' || indexesRead.has(artifact.sha256)) continue;
        indexesRead.add(artifact.sha256);
        try {
          for await (const entry of repository.readIndex(artifact, { signal }))
            blobs.set(entry.blob, entry.size);
        } catch (err) {
          signal.throwIfAborted();
          throw new BackupError(
            'ERR_INTEGRITY',
            `prune: index ${artifact.key} of restore point ${manifest.id} cannot be read (${describeError(err)}); nothing removed`,
            { cause: err },
          );
        }
      }
    }
  }

  const report: PruneReport = {
    dryRun: opts.dryRun,
    snapshots: snapshots.length,
    referencedBlobs: blobs.size,
    removedBlobs: 0,
    removedKeys: 0,
    interrupted: uncommitted,
    freedBytes: 0,
    keptBytes: 0,
  };
  const doomed: { key: string; size: number | undefined; blob: boolean }[] = [];
  for await (const info of target.list(SNAPSHOTS, { signal })) {
    if (referenced.has(info.key)) report.keptBytes += info.size;
    else doomed.push({ ...info, blob: false });
  }
  for await (const key of target.listKeys(BLOBS, { signal })) {
    const size = blobs.get(key);
    if (size !== undefined) report.keptBytes += size;
    else doomed.push({ key, size: undefined, blob: true });
  }
  await mapConcurrently(doomed, CONCURRENCY, async (item) => {
    signal.throwIfAborted();
    const size = item.size ?? (await target.stat(item.key, { signal }))?.size ?? 0;
    if (!opts.dryRun) await target.remove(item.key, { signal });
    report.freedBytes += size;
    if (item.blob) report.removedBlobs++;
    else report.removedKeys++;
  });
  log.info(
    {
      dryRun: opts.dryRun,
      removedBlobs: report.removedBlobs,
      removedKeys: report.removedKeys,
      freedBytes: report.freedBytes,
      interrupted: uncommitted,
    },
    opts.dryRun ? 'prune planned' : 'prune finished',
  );
  return report;
}
