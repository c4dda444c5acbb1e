// Every Prometheus metric of the daemon, on an injected registry. Names follow what backup alerts
// usually key on (last success timestamp, last status, attempts and failures per source).
import { Counter, Gauge, Histogram, collectDefaultMetrics, type Registry } from 'prom-client';
import type { BackupResult } from './backup.js';
import type { RetentionOutcome } from './jobs.js';
import type { Manifest } from './repository/manifest.js';

/** The label value for a whole restore point, beside the per-source ones. */
export const ALL = 'all';

/** Status as a number: 1 success, 0.5 partial, 0 failed. */
const STATUS_VALUE = { success: 1, partial: 0.5, failed: 0 } as const;

/** The daemon's metrics and the updates it makes to them. */
export class Metrics {
  readonly registry: Registry;
  private readonly lastSuccess: Gauge<'source'>;
  private readonly lastStatus: Gauge<'source'>;
  /** Sources whose last status a run of this process set: a later rebuild leaves them alone. */
  private readonly statusFromRuns = new Set<string>();
  private readonly attempts: Counter<'source'>;
  private readonly successes: Counter<'source'>;
  private readonly failures: Counter<'source'>;
  private readonly partials: Counter<'source'>;
  private readonly duration: Histogram;
  private readonly readBytes: Counter<'source'>;
  private readonly storedBytes: Counter<'source'>;
  private readonly vanished: Counter<'source'>;
  private readonly restorePoints: Gauge;
  private readonly expectedInterval: Gauge;
  private readonly inProgress: Gauge<'operation'>;
  private readonly targetUp: Gauge;
  private readonly restoreAttempts: Counter;
  private readonly restoreSuccesses: Counter;
  private readonly restoreFailures: Counter;
  private readonly lastSuccessBySource = new Map<string, number>();
  private readonly verifyLastSuccess: Gauge;
  private readonly verifySuccess: Gauge<'read_data'>;
  private readonly drillLastSuccess: Gauge;
  private readonly drillSuccess: Gauge;
  /** When the outcomes behind the verify and drill gauges finished (ms since the epoch). */
  private readonly outcomeAt = { verify: { last: 0, success: 0 }, drill: { last: 0, success: 0 } };
  private readonly drillInterval: Gauge;
  private readonly lockHeld: Gauge<'operation'>;
  private readonly lockBusy: Counter<'operation'>;
  private readonly forgotten: Counter;
  private readonly prunedBytes: Counter;
  private readonly prunedUploads: Counter;
  private readonly retentionFailures: Counter;

  constructor(registry: Registry, version: string) {
    this.registry = registry;
    const registers = [registry];
    collectDefaultMetrics({ register: registry });
    const gauge = <L extends string>(name: string, help: string, labelNames: L[] = []) =>
      new Gauge<L>({ name, help, labelNames, registers });
    const counter = <L extends string>(name: string, help: string, labelNames: L[] = []) =>
      new Counter<L>({ name, help, labelNames, registers });
    this.lastSuccess = gauge(
      'deis_backup_last_success_timestamp_seconds',
      'Unix time of the last successful capture, per source and "all" for the restore point',
      ['source'],
    );
    this.lastStatus = gauge(
      'deis_backup_last_status',
      'Outcome of the last run: 1 success, 0.5 partial, 0 failed',
      ['source'],
    );
    this.attempts = counter(
      'deis_backup_attempt_total',
      'Backup runs that ended (aborted runs are not counted)',
      ['source'],
    );
    this.successes = counter('deis_backup_success_total', 'Backup runs that captured everything', ['source']);
    this.failures = counter(
      'deis_backup_failure_total',
      'Backup runs in which the source failed; for "all", runs that committed no restore point',
      ['source'],
    );
    this.partials = counter('deis_backup_partial_failure_total', 'Backup runs with objects not captured', [
      'source',
    ]);
    this.duration = new Histogram({
      name: 'deis_backup_duration_seconds',
      help: 'Duration of backup runs',
      buckets: [1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400],
      registers,
    });
    this.readBytes = counter('deis_backup_read_bytes_total', 'Bytes read from the cluster', ['source']);
    this.storedBytes = counter('deis_backup_stored_bytes_total', 'Bytes written to the target', ['source']);
    this.vanished = counter(
      'deis_backup_objects_vanished_total',
      'Objects deleted between listing and reading',
      ['source'],
    );
    this.restorePoints = gauge('deis_backup_restore_points', 'Restore points in the target');
    this.expectedInterval = gauge(
      'deis_backup_schedule_expected_interval_seconds',
      'Longest time between two scheduled backups over the next 8 days',
    );
    this.inProgress = gauge('deis_backup_in_progress', 'Operations running now', ['operation']);
    this.targetUp = gauge(
      'deis_backup_target_up',
      'Whether the target answered the last check (1) or not (0)',
    );
    this.restoreAttempts = counter(
      'deis_backup_restore_attempt_total',
      'Restores started, dry runs included',
    );
    this.restoreSuccesses = counter(
      'deis_backup_restore_success_total',
      'Restores that ended success (dry runs are not counted)',
    );
    this.restoreFailures = counter(
      'deis_backup_restore_failure_total',
      'Restores that failed or were partial (dry runs are not counted)',
    );
    this.verifyLastSuccess = gauge(
      'deis_backup_verify_last_success_timestamp_seconds',
      'Unix time of the last verify that found every restore point sound',
    );
    this.verifySuccess = gauge(
      'deis_backup_verify_success',
      'Outcome of the last verify: 1 sound, 0 damage found or the verify failed',
      ['read_data'],
    );
    this.drillLastSuccess = gauge(
      'deis_backup_restore_test_last_success_timestamp_seconds',
      'Unix time of the last restore drill that restored and matched the restore point',
    );
    this.drillSuccess = gauge(
      'deis_backup_restore_test_success',
      'Outcome of the last restore drill: 1 or 0',
    );
    this.drillInterval = gauge(
      'deis_backup_restore_test_expected_interval_seconds',
      'Longest time between two scheduled restore drills over the next 8 days (at least 16 runs); 0 when drills are off',
    );
    this.lockHeld = gauge('deis_backup_lock_held', 'Whether this daemon holds the cluster lock', [
      'operation',
    ]);
    this.lockBusy = counter(
      'deis_backup_lock_busy_total',
      'Operations skipped because another deis-backup held the cluster lock',
      ['operation'],
    );
    this.forgotten = counter('deis_backup_forgotten_total', 'Restore points removed by the retention policy');
    this.prunedBytes = counter('deis_backup_pruned_bytes_total', 'Bytes removed by prune');
    this.prunedUploads = counter(
      'deis_backup_pruned_uploads_total',
      'Unfinished multipart uploads of killed runs aborted by prune',
    );
    this.retentionFailures = counter(
      'deis_backup_retention_failures_total',
      'Retention runs after a backup that failed, in full or part way (the restore point stands)',
    );
    gauge('deis_backup_build_info', 'Build of the running daemon', ['version']).set({ version }, 1);
    this.inProgress.set({ operation: 'backup' }, 0);
    this.inProgress.set({ operation: 'restore' }, 0);
  }

  /**
   * Sets the last-success figures from the restore points in the target (at start, after a
   * restart). Only those `whole` says hold every configured source count for "all", and only the
   * sources `configured` names get figures of their own: a bucket taken out of the config must not
   * keep its old status (and a partial one its alert) forever. `failed`, the last failed backup the
   * target recorded, sets the status of what it failed where it is newer than the restore points.
   */
  rebuild(
    manifests: readonly Manifest[],
    whole: (manifest: Manifest) => boolean,
    configured: (source: string) => boolean,
    failed?: { allFailedAt?: string; sourcesFailedAt: Readonly<Record<string, string>> },
  ): void {
    this.restorePoints.set(manifests.length);
    let newestWhole: Manifest | undefined;
    for (const manifest of manifests) {
      const at = Date.parse(manifest.finishedAt) / 1000;
      const bump = (source: string, status: 'success' | 'partial' | 'failed'): void => {
        if (status === 'success') this.markSuccess(source, Math.max(at, this.lastSuccessOf(source)));
      };
      if (whole(manifest)) {
        bump(ALL, manifest.status);
        newestWhole = manifest;
      }
      for (const source of manifest.sources) if (configured(source.id)) bump(source.id, source.status);
    }
    // A run this process saw is newer than any restore point: a failed one left none to read back
    // (the target was down at start, say, and the first listing comes after that run).
    const setStatus = (source: string, status: 'success' | 'partial' | 'failed'): void => {
      if (!this.statusFromRuns.has(source)) this.lastStatus.set({ source }, STATUS_VALUE[status]);
    };
    if (newestWhole) setStatus(ALL, newestWhole.status);
    const newest = manifests.at(-1);
    for (const source of newest?.sources ?? [])
      if (configured(source.id)) setStatus(source.id, source.status);
    if (!failed) return;
    const after = (at: string, manifest: Manifest | undefined) =>
      manifest === undefined || Date.parse(at) > Date.parse(manifest.finishedAt);
    if (failed.allFailedAt !== undefined && after(failed.allFailedAt, newestWhole)) setStatus(ALL, 'failed');
    for (const [source, at] of Object.entries(failed.sourcesFailedAt)) {
      const holding = manifests.findLast((m) => m.sources.some((s) => s.id === source));
      if (configured(source) && after(at, holding)) setStatus(source, 'failed');
    }
  }

  /**
   * Records a finished (or aborted) backup run. A run of only some of the configured sources
   * (`whole` false: `"only"` in the request) counts for those sources, never for "all". `failedWith`
   * names the sources of a run that failed without a result (the target unreadable, the lock
   * lost), which fail with it.
   */
  backupFinished(
    result: BackupResult,
    seconds: number,
    at: Date,
    whole = true,
    failedWith: readonly string[] = [],
  ): void {
    if (result.status === 'aborted') return;
    this.duration.observe(seconds);
    const now = at.getTime() / 1000;
    const record = (source: string, status: 'success' | 'partial' | 'failed'): void => {
      this.attempts.inc({ source });
      this.lastStatus.set({ source }, STATUS_VALUE[status]);
      this.statusFromRuns.add(source);
      if (status === 'success') {
        this.successes.inc({ source });
        this.markSuccess(source, now);
      } else if (status === 'partial') this.partials.inc({ source });
      else this.failures.inc({ source });
    };
    if (whole) record(ALL, result.status);
    for (const source of failedWith) record(source, 'failed');
    for (const source of result.sources) {
      // A source is only "succeeded" when its restore point was committed.
      record(source.id, result.status === 'failed' && source.status !== 'failed' ? 'failed' : source.status);
      this.readBytes.inc({ source: source.id }, source.counts.bytesRead);
      this.storedBytes.inc({ source: source.id }, source.counts.bytesStored);
      this.vanished.inc({ source: source.id }, source.counts.vanished);
    }
  }

  /** Records a restore's outcome. */
  restoreFinished(status: 'success' | 'partial' | 'failed' | 'aborted'): void {
    if (status === 'success') this.restoreSuccesses.inc();
    else if (status !== 'aborted') this.restoreFailures.inc();
  }

  restoreStarted(): void {
    this.restoreAttempts.inc();
  }

  setInProgress(operation: 'backup' | 'restore', running: boolean): void {
    this.inProgress.set({ operation }, running ? 1 : 0);
  }

  setTargetUp(up: boolean): void {
    this.targetUp.set(up ? 1 : 0);
  }

  setRestorePoints(count: number): void {
    this.restorePoints.set(count);
  }

  setExpectedInterval(seconds: number): void {
    this.expectedInterval.set(seconds);
  }

  /**
   * Records a verify's outcome; `at` is when it finished. An outcome older than one already recorded
   * (the target's status file, re-read every minute, against a failure this daemon just saw) only
   * moves the last-success time, never the success flag.
   */
  verifyFinished(ok: boolean, readData: boolean, at: Date): void {
    this.recordOutcome(
      'verify',
      ok,
      at,
      (value) => {
        this.verifySuccess.set({ read_data: String(readData) }, value);
      },
      this.verifyLastSuccess,
    );
  }

  /** Records a restore drill's outcome; `at` is when it finished. Newest wins, as for verify. */
  drillFinished(ok: boolean, at: Date): void {
    this.recordOutcome(
      'drill',
      ok,
      at,
      (value) => {
        this.drillSuccess.set(value);
      },
      this.drillLastSuccess,
    );
  }

  /** Sets a check's success flag unless a newer outcome set it, and its last success if newer. */
  private recordOutcome(
    check: 'verify' | 'drill',
    ok: boolean,
    at: Date,
    setFlag: (value: number) => void,
    lastSuccess: Gauge,
  ): void {
    const seen = this.outcomeAt[check];
    const t = at.getTime();
    if (t >= seen.last) {
      seen.last = t;
      setFlag(ok ? 1 : 0);
    }
    if (ok && t > seen.success) {
      seen.success = t;
      lastSuccess.set(t / 1000);
    }
  }

  /** The seconds between two scheduled drills (only set when drills are on). */
  setDrillInterval(seconds: number): void {
    this.drillInterval.set(seconds);
  }

  /** Whether this daemon holds the cluster lock for `operation`. */
  setLockHeld(operation: string, held: boolean): void {
    this.lockHeld.set({ operation }, held ? 1 : 0);
  }

  /** An operation skipped because another runner held the lock. */
  lockWasBusy(operation: string): void {
    this.lockBusy.inc({ operation });
  }

  /** What retention removed, and whether it failed (what it removed before failing still counts). */
  retentionApplied(outcome: RetentionOutcome): void {
    this.forgotten.inc(outcome.forget?.drop.length ?? 0);
    this.prunedBytes.inc(outcome.prune?.freedBytes ?? 0);
    this.prunedUploads.inc(outcome.prune?.abortedUploads ?? 0);
    if (outcome.error !== undefined) this.retentionFailures.inc();
  }

  /** Unix time of the last success of a source ("all" for the restore point), 0 when never. */
  lastSuccessOf(source: string): number {
    return this.lastSuccessBySource.get(source) ?? 0;
  }

  /** Last success per source, for readiness detail. */
  lastSuccesses(): ReadonlyMap<string, number> {
    return this.lastSuccessBySource;
  }

  private markSuccess(source: string, at: number): void {
    this.lastSuccessBySource.set(source, at);
    this.lastSuccess.set({ source }, at);
  }
}
