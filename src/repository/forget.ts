// Forget: apply the retention policy to the committed restore points and remove the ones it drops,
// manifests first. Blobs they shared stay until prune. Manifests that cannot be read are never touched.
import type { Logger } from '../log.js';
import { scopeOf, type Manifest } from './manifest.js';
import type { Repository } from './repository.js';
import { applyRetention, describePolicy, type RetentionPolicy } from './retention.js';

/** One restore point in a forget decision. */
export interface ForgetEntry {
  id: string;
  startedAt: string;
  status: 'success' | 'partial';
  /** What it holds (scopeOf): the policy applies to each scope on its own. */
  scope: string;
  reasons: readonly string[];
}

/** The decision and what it removed. */
export interface ForgetReport {
  dryRun: boolean;
  policy: string;
  keep: ForgetEntry[];
  drop: ForgetEntry[];
  /** Bytes of the dropped folders (their blobs are counted by prune). */
  freedBytes: number;
  /** Folders of interrupted runs: data only prune removes. */
  interrupted: string[];
}

/** What a restore point scan found (Repository.scan). */
export type Scan = Awaited<ReturnType<Repository['scan']>>;

/**
 * Applies the policy; removes the dropped restore points unless dryRun: every dropped manifest
 * first, so each stops being a restore point at once, then `afterManifests` (the routine prune),
 * then the rest of their folders. Killed in between, a folder without its manifest is an
 * interrupted run to the next scan, and the next retention prunes in full. `scan` is one the
 * caller made under the same lock.
 */
export async function forget(
  repository: Repository,
  policy: RetentionPolicy,
  opts: {
    now: Date;
    timezone: string;
    dryRun: boolean;
    signal: AbortSignal;
    log: Logger;
    scan?: Scan;
    /** A restore point to keep whatever the policy says: the one the backup just committed. */
    keep?: string;
    afterManifests?: (dropped: Manifest[], kept: Manifest[]) => Promise<void>;
  },
): Promise<ForgetReport> {
  const { snapshots, uncommitted } = opts.scan ?? (await repository.scan({ signal: opts.signal }));
  const decision = applyRetention(snapshots, policy, {
    now: opts.now,
    timezone: opts.timezone,
    scopeOf,
    ...(opts.keep === undefined ? {} : { keep: opts.keep }),
  });
  const entry = (m: (typeof snapshots)[number]): ForgetEntry => ({
    id: m.id,
    startedAt: m.startedAt,
    status: m.status,
    scope: scopeOf(m),
    reasons: decision.reasons.get(m.id) ?? [],
  });
  const report: ForgetReport = {
    dryRun: opts.dryRun,
    policy: describePolicy(policy),
    keep: decision.keep.map(entry),
    drop: decision.drop.map(entry),
    freedBytes: 0,
    interrupted: uncommitted,
  };
  if (opts.dryRun || decision.drop.length === 0) return report;
  for (const dropped of decision.drop) {
    opts.signal.throwIfAborted();
    report.freedBytes += await repository.removeManifest(dropped.id, { signal: opts.signal });
    opts.log.info(
      { snapshot: dropped.id, reasons: decision.reasons.get(dropped.id) },
      'restore point forgotten',
    );
  }
  await opts.afterManifests?.(decision.drop, decision.keep);
  for (const dropped of decision.drop) {
    opts.signal.throwIfAborted();
    report.freedBytes += await repository.removeFolder(dropped.id, { signal: opts.signal });
  }
  return report;
}
