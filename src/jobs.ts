// Repository work that must never overlap anywhere in the cluster (backup, restore, forget, prune,
// verify, drill) runs under the cluster lock; a committed backup is followed by the retention policy.
import { BackupError, describeError } from './errors.js';
import type { Logger } from './log.js';
import { acquireLock, describeHolder, type ClusterLock } from './lock/lock.js';
import { forget, type ForgetReport } from './repository/forget.js';
import { fullPruneDue, prune, pruneFailure, sweep, type PruneReport } from './repository/prune.js';
import type { Repository } from './repository/repository.js';
import { policyFromConfig } from './repository/retention.js';
import type { BackupResult } from './backup.js';
import type { Config } from './config.js';

/** What `underLock` needs. */
export interface LockDeps {
  lock: ClusterLock;
  log: Logger;
  /** How long to wait for another holder before giving up; 0 tries once. */
  waitSeconds: number;
  /** Told once per attempt while waiting for another holder; the default logs it. */
  onWait?: (holder: string) => void;
}

/** Someone else holds the cluster lock; `holder` describes them. */
export class LockBusyError extends BackupError {
  readonly holder: string;
  constructor(operation: string, where: string, holder: string, waitSeconds: number) {
    super(
      'ERR_LOCKED',
      `${operation}: another deis-backup holds the cluster lock in ${where} (${holder}); ${
        waitSeconds > 0 ? `waited ${waitSeconds} s; ` : ''
      }try again later, or raise lock.waitSeconds to wait for it`,
    );
    this.holder = holder;
  }
}

/**
 * Runs `work` while holding the cluster lock. Throws LockBusyError when another runner holds it
 * after lock.waitSeconds. `work` gets a signal that also aborts when the lock is lost, and when the
 * lock was taken (by this machine's clock, no later than the store granted it): what a prune needs
 * to tell a dead run's unfinished uploads from this run's own.
 */
export async function underLock<T>(
  deps: LockDeps,
  operation: string,
  opts: { signal: AbortSignal },
  work: (signal: AbortSignal, lockedAt: Date) => Promise<T>,
): Promise<T> {
  let told = false;
  const got = await acquireLock(deps.lock, operation, {
    waitSeconds: deps.waitSeconds,
    signal: opts.signal,
    onWait: (holder) => {
      if (told) return;
      told = true;
      if (deps.onWait) deps.onWait(describeHolder(holder));
      else deps.log.info({ operation, holder: describeHolder(holder) }, 'waiting for the cluster lock');
    },
  }).catch((err: unknown) => {
    opts.signal.throwIfAborted();
    // The target's own error names the target and the fix; a lock in the target adds nothing to it.
    if (err instanceof BackupError && err.code === 'ERR_TARGET') throw err;
    throw new BackupError(
      err instanceof BackupError ? err.code : 'ERR_LOCKED',
      `${operation}: cannot take the cluster lock in ${deps.lock.where}: ${describeError(err)}`,
      { cause: err },
    );
  });
  if ('busy' in got) {
    throw new LockBusyError(operation, deps.lock.where, describeHolder(got.busy), deps.waitSeconds);
  }
  deps.log.debug({ operation, where: deps.lock.where }, 'cluster lock acquired');
  try {
    return await work(AbortSignal.any([opts.signal, got.held.lost]), new Date(got.held.holder.since));
  } finally {
    await got.held.release();
  }
}

/** What the retention policy did after a backup. */
export interface RetentionOutcome {
  forget?: ForgetReport;
  prune?: PruneReport;
  /** Why retention did not complete; the backup itself stands. */
  error?: string;
}

/**
 * Applies the configured retention after a committed backup (the caller holds the lock): forgets
 * what the policy drops, then prunes. Routinely only the blobs of the points just forgotten
 * (sweep); every stored key after an interrupted run, while a manifest cannot be read (which
 * prune then refuses) or was listed but then not found, or when the last full prune is older than FULL_PRUNE_EVERY_MS.
 * Never throws, not even when stopped (a shutdown, the lock lost): the restore point is committed
 * either way, and `error` says why retention did not complete.
 */
export async function applyRetention(
  config: Config,
  repository: Repository,
  opts: {
    now: Date;
    /** When the backup took the cluster lock: its own unfinished uploads, if any, began after it. */
    lockedAt: Date;
    /** The restore point the backup committed: kept whatever the policy says. */
    committed: string;
    signal: AbortSignal;
    log: Logger;
  },
): Promise<RetentionOutcome> {
  const outcome: RetentionOutcome = {};
  const { signal, log } = opts;
  try {
    const scan = await repository.scan({ signal });
    const pruning = config.retention.prune;
    // The record of the last full prune is read only once forget has dropped something.
    const mayPruneForgotten =
      pruning && scan.uncommitted.length === 0 && scan.unreadable.length === 0 && scan.vanished.length === 0;
    outcome.forget = await forget(repository, policyFromConfig(config.retention), {
      now: opts.now,
      timezone: config.schedule.timezone,
      dryRun: false,
      signal,
      log,
      scan,
      keep: opts.committed,
      afterManifests: mayPruneForgotten
        ? async (dropped, kept) => {
            if (await fullPruneDue(repository, opts.now, { signal })) return;
            outcome.prune = await sweep(repository, dropped, kept, { signal, log });
          }
        : undefined,
    });
    const leftToPrune = outcome.forget.drop.length > 0 || outcome.forget.interrupted.length > 0;
    if (pruning && outcome.prune === undefined && leftToPrune) {
      // What forget just removed may still be listed by a store whose listings lag: left to forget.
      const forgotten = new Set(outcome.forget.drop.map((entry) => entry.id));
      outcome.prune = await prune(repository, {
        dryRun: false,
        lockedAt: opts.lockedAt,
        forgotten,
        signal,
        log,
      });
    }
    // A prune that stopped at a removal or left unfinished uploads: its report stands beside the failure.
    const failure = outcome.prune && pruneFailure(outcome.prune);
    if (failure !== undefined) outcome.error = `prune: ${failure}`;
  } catch (err) {
    // Stopped by a shutdown or a lost lock: the restore point is committed all the same, and
    // the next retention finishes what this one left (forget and prune carry on from any point).
    outcome.error = signal.aborted ? `stopped: ${describeError(signal.reason)}` : describeError(err);
  }
  if (outcome.error !== undefined) log.error({ error: outcome.error }, 'retention failed');
  return outcome;
}

/** A backup that failed: it leaves no manifest, so the target keeps a record of it instead. */
export interface FailedRun {
  finishedAt: string;
  /** Whether the run was to take every configured source (then it counts for "all"). */
  whole: boolean;
  /** The sources that failed with it: every one it was to take, as no restore point was committed. */
  sources: string[];
  summary: string;
}

/**
 * The backups that failed, as kept in the target (status/backup.json): when the last one that was
 * to take every source failed, and when the last one that was to take each source did. A restarted
 * daemon's metrics would otherwise show the restore point before them as the last word.
 */
export interface FailedBackupStatus {
  /** When the last failed run that was to take every configured source ended. */
  allFailedAt?: string;
  /** By source id: when the last failed run that was to take it ended. */
  sourcesFailedAt: Record<string, string>;
  /** The last failure, in one line. */
  summary: string;
}

/**
 * Adds a failed backup to the record in the target, best effort: the target may be why it failed,
 * and then the record is lost with it (a restart then shows the restore point before it as the
 * last word). A failure of only some sources never clears what a whole run's failure recorded.
 */
export async function recordFailedBackup(repository: Repository, run: FailedRun, log: Logger): Promise<void> {
  const signal = AbortSignal.timeout(RECORD_TIMEOUT_MS);
  try {
    const previous = await readFailedBackup(repository, { signal });
    const record: FailedBackupStatus = {
      ...(run.whole
        ? { allFailedAt: run.finishedAt }
        : previous?.allFailedAt === undefined
          ? {}
          : { allFailedAt: previous.allFailedAt }),
      sourcesFailedAt: {
        ...previous?.sourcesFailedAt,
        ...Object.fromEntries(run.sources.map((id) => [id, run.finishedAt])),
      },
      summary: run.summary,
    };
    await repository.writeStatus('backup', record, { signal });
  } catch (err) {
    log.warn({ error: describeError(err) }, 'could not record the failed backup in the target');
  }
}

/** How long recording a failed backup may take: the target may be what failed. */
const RECORD_TIMEOUT_MS = 10_000;

/** The record of a run whose sources failed (a result with status `failed`). */
export function failedRunRecord(result: BackupResult, whole: boolean): FailedRun {
  return {
    finishedAt: result.finishedAt,
    whole,
    sources: result.sources.map((s) => s.id),
    summary: result.sources
      .filter((s) => s.status === 'failed')
      .map((s) => `${s.id}: ${s.errors[0] ?? 'failed'}`)
      .join('; '),
  };
}

/** The record of a run that failed without a result (the target unreadable, the lock lost). */
export function failedWithoutResult(err: unknown, whole: boolean, sources: string[]): FailedRun {
  return { finishedAt: new Date().toISOString(), whole, sources, summary: describeError(err) };
}

/** The recorded failed backups, or undefined when there is no record or it is not one. */
export async function readFailedBackup(
  repository: Repository,
  opts: { signal: AbortSignal },
): Promise<FailedBackupStatus | undefined> {
  const value = (await repository.readStatus('backup', opts)) as Record<string, unknown> | undefined;
  const isTime = (t: unknown): t is string => typeof t === 'string' && !Number.isNaN(Date.parse(t));
  const sources: unknown = value?.['sourcesFailedAt'];
  if (typeof sources !== 'object' || sources === null || Array.isArray(sources)) return undefined;
  const allFailedAt = value?.['allFailedAt'];
  if (allFailedAt !== undefined && !isTime(allFailedAt)) return undefined;
  const summary = value?.['summary'];
  return {
    ...(allFailedAt === undefined ? {} : { allFailedAt }),
    sourcesFailedAt: Object.fromEntries(
      Object.entries(sources).filter((entry): entry is [string, string] => isTime(entry[1])),
    ),
    summary: typeof summary === 'string' ? summary : '',
  };
}

/** A check's outcome as kept in the target (status/<name>.json). */
export interface CheckStatus {
  ok: boolean;
  finishedAt: string;
  /** When the check last succeeded, this run or an earlier one; null when never. */
  lastSuccessAt: string | null;
  summary: string;
}

/** Records a verify or drill outcome in the target, keeping the time of the last success. */
export async function recordCheck(
  repository: Repository,
  name: 'verify' | 'drill',
  outcome: { ok: boolean; at: Date; summary: string },
  opts: { signal: AbortSignal },
): Promise<CheckStatus> {
  const previous = (await repository.readStatus(name, opts)) as Partial<CheckStatus> | undefined;
  const status: CheckStatus = {
    ok: outcome.ok,
    finishedAt: outcome.at.toISOString(),
    lastSuccessAt: outcome.ok ? outcome.at.toISOString() : (previous?.lastSuccessAt ?? null),
    summary: outcome.summary,
  };
  await repository.writeStatus(name, status, opts);
  return status;
}
