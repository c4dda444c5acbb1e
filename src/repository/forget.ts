// Forget: apply the retention policy to the committed restore points and remove the ones it drops,
// manifest first. Blobs they shared stay until prune. Manifests that cannot be read are never touched.
import type { Logger } from '../log.js';
import type { Repository } from './repository.js';
import { applyRetention, describePolicy, type RetentionPolicy } from './retention.js';

/** One restore point in a forget decision. */
export interface ForgetEntry {
  id: string;
  startedAt: string;
  status: 'success' | 'partial';
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

/** Applies the policy; removes the dropped restore points unless dryRun. */
export async function forget(
  repository: Repository,
  policy: RetentionPolicy,
  opts: { now: Date; timezone: string; dryRun: boolean; signal: AbortSignal; log: Logger },
): Promise<ForgetReport> {
  const { snapshots, uncommitted } = await repository.scan({ signal: opts.signal });
  const decision = applyRetention(snapshots, policy, { now: opts.now, timezone: opts.timezone });
  const entry = (m: (typeof snapshots)[number]): ForgetEntry => ({
    id: m.id,
    startedAt: m.startedAt,
    status: m.status,
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
  if (opts.dryRun) return report;
  for (const dropped of decision.drop) {
    opts.signal.throwIfAborted();
    report.freedBytes += await repository.removeSnapshot(dropped.id, { signal: opts.signal });
    opts.log.info(
      { snapshot: dropped.id, reasons: decision.reasons.get(dropped.id) },
      'restore point forgotten',
    );
  }
  return report;
}
