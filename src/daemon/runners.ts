// What the daemon runs: backups, restores, verifies and drills, each one operation in the single
// slot and under the cluster lock, with its metrics, log lines and webhook events.
import { runBackup, type BackupResult } from '../backup.js';
import type { Config } from '../config.js';
import { runDrill } from '../drill.js';
import type { Etcd } from '../etcd.js';
import { BackupError, describeError, isAbort } from '../errors.js';
import { drillSummary } from '../format.js';
import {
  applyRetention,
  failedRunRecord,
  failedWithoutResult,
  LockBusyError,
  recordCheck,
  recordFailedBackup,
  underLock,
  type RetentionOutcome,
} from '../jobs.js';
import type { ClusterLock } from '../lock/lock.js';
import type { Logger } from '../log.js';
import { ALL, type Metrics } from '../metrics.js';
import type { Operations, OperationView } from '../operations.js';
import type { Manifest } from '../repository/manifest.js';
import { NoRestorePointError, type Repository } from '../repository/repository.js';
import { verifySnapshots, type VerifyReport } from '../repository/verify.js';
import { restoreSnapshot, type RestoreRequest } from '../restore.js';
import type { Reporter } from '../restore/report.js';
import { coversAll, createSources, plannedSourceIds, withRestoreDeps, type SourceKind } from '../wiring.js';

/** What the runners share with the daemon. */
export interface DaemonContext {
  config: Config;
  log: Logger;
  repository: Repository;
  etcd: Etcd;
  metrics: Metrics;
  operations: Operations;
  lock: ClusterLock;
  /**
   * Lists the restore points and refreshes the target's health figures; `fresh` takes no listing
   * that began before the call (one that could miss a restore point just committed).
   */
  scan: (signal: AbortSignal, opts?: { fresh?: boolean }) => Promise<Manifest[]>;
}

/** Starts an operation, or names the one that is running. */
export type Starter<A extends unknown[]> = (
  ...args: A
) => { started: OperationView } | { busy: OperationView };

/** The four operations the daemon starts, on schedule or on request. */
export interface Runners {
  startBackup: Starter<[trigger: string, only: readonly SourceKind[] | undefined]>;
  startRestore: Starter<[trigger: string, request: RestoreRequest]>;
  startVerify: Starter<[trigger: string]>;
  startDrill: Starter<[trigger: string]>;
}

/** Builds the runners over the daemon's shared parts. */
export function createRunners(ctx: DaemonContext): Runners {
  const { config, log, repository, etcd, metrics, operations, lock, scan } = ctx;

  function startBackup(
    trigger: string,
    only: readonly SourceKind[] | undefined,
  ): { started: OperationView } | { busy: OperationView } {
    return operations.start('backup', trigger, async (signal, _progress, id) => {
      const runLog = log.child({ runId: id, trigger });
      const started = Date.now();
      let result: BackupResult;
      let retention: RetentionOutcome | undefined;
      try {
        const ran = await locked('backup', runLog, signal, async (signal, lockedAt) => {
          metrics.setInProgress('backup', true);
          try {
            const run = await createSources(config, etcd, only, { signal });
            let result: BackupResult;
            try {
              result = await runBackup({ repository, log: runLog }, run.sources, { signal });
            } finally {
              run.close();
            }
            const retention = result.id
              ? await applyRetention(config, repository, {
                  now: new Date(),
                  lockedAt,
                  committed: result.id,
                  signal,
                  log: runLog,
                })
              : undefined;
            return { result, retention };
          } finally {
            metrics.setInProgress('backup', false);
          }
        });
        if ('skipped' in ran) return { status: 'skipped', result: { reason: ran.skipped } };
        ({ result, retention } = ran);
      } catch (err) {
        if (signal.aborted || isAbort(err)) {
          runLog.warn('backup aborted: no restore point written');
          throw err;
        }
        // The target could not even be listed, or the lock not taken: a failed run like any other.
        if (err instanceof BackupError && err.code === 'ERR_TARGET') metrics.setTargetUp(false);
        const now = new Date().toISOString();
        metrics.backupFinished(
          { status: 'failed', startedAt: now, finishedAt: now, sources: [] },
          (Date.now() - started) / 1000,
          new Date(),
          coversAll(config, only),
          plannedSourceIds(config, only),
        );
        runLog.error({ error: describeError(err) }, 'backup failed');
        await recordFailedBackup(
          repository,
          failedWithoutResult(err, coversAll(config, only), plannedSourceIds(config, only)),
          runLog,
        );
        await notify(config, log, { event: 'backup.failed', id, error: describeError(err) });
        throw err;
      }
      metrics.backupFinished(result, (Date.now() - started) / 1000, new Date(), coversAll(config, only));
      if (retention) metrics.retentionApplied(retention);
      if (result.status === 'aborted') {
        runLog.warn('backup aborted: no restore point written');
        return { status: 'aborted', result };
      }
      await scan(signal, { fresh: true }).catch(() => undefined);
      if (result.status === 'failed') {
        await recordFailedBackup(repository, failedRunRecord(result, coversAll(config, only)), runLog);
      }
      if (result.status !== 'success') {
        await notify(config, log, {
          event: `backup.${result.status}`,
          id,
          snapshot: result.id ?? null,
          sources: result.sources
            .filter((s) => s.status !== 'success')
            .map((s) => ({ id: s.id, status: s.status, errors: s.errors })),
        });
      }
      return { status: result.status, result: { ...result, retention } };
    });
  }

  /**
   * Runs `work` under the cluster lock, tracking it in the metrics. When another runner holds the
   * lock (after lock.waitSeconds), nothing runs: a warning names the holder and `skipped` says why.
   */
  async function locked<T>(
    operation: string,
    runLog: Logger,
    signal: AbortSignal,
    work: (signal: AbortSignal, lockedAt: Date) => Promise<T>,
  ): Promise<T | { skipped: string }> {
    try {
      return await underLock(
        { lock, log: runLog, waitSeconds: config.lock.waitSeconds },
        operation,
        { signal },
        async (signal, lockedAt) => {
          metrics.setLockHeld(operation, true);
          try {
            return await work(signal, lockedAt);
          } finally {
            metrics.setLockHeld(operation, false);
          }
        },
      );
    } catch (err) {
      if (!(err instanceof LockBusyError)) throw err;
      metrics.lockWasBusy(operation);
      runLog.warn(
        { operation, holder: err.holder, where: lock.where },
        `${operation} skipped: another deis-backup holds the cluster lock`,
      );
      return { skipped: err.message };
    }
  }

  /**
   * A verify or drill that could not run to its end (the target or the gateway down, a drill with no
   * restore point) failed as much as one that found damage: the metrics, the outcome recorded in the target
   * (else a restart would read the last success back) and the webhook say so.
   */
  async function checkThrew(
    name: 'verify' | 'drill',
    err: unknown,
    id: string,
    runLog: Logger,
  ): Promise<void> {
    const at = new Date();
    const summary = describeError(err);
    if (name === 'verify') metrics.verifyFinished(false, config.verify.readData, at);
    else metrics.drillFinished(false, at);
    runLog.error({ error: summary }, name === 'verify' ? 'verify failed' : 'restore drill failed');
    await recordCheck(
      repository,
      name,
      { ok: false, at, summary },
      { signal: AbortSignal.timeout(30_000) },
    ).catch((recordErr: unknown) => {
      runLog.warn({ error: describeError(recordErr) }, `${name} outcome not recorded in the target`);
    });
    await notify(config, log, { event: `${name}.failed`, id, summary });
  }

  /** Verifies every restore point (metadata, or every byte with verify.readData) and records it. */
  function startVerify(trigger: string): { started: OperationView } | { busy: OperationView } {
    return operations.start('verify', trigger, async (signal, _progress, id) => {
      const runLog = log.child({ runId: id, trigger });
      const readData = config.verify.readData;
      const ran = await locked('verify', runLog, signal, (signal) =>
        verifySnapshots(repository, 'all', { readData, signal, log: runLog }),
      ).catch(async (err: unknown) => {
        // Nothing to verify before the first backup: no damage for the metric and its critical alert
        // (DeisBackupNeverSucceeded says that no restore point exists). Once one was known, an empty
        // target lost them: that fails.
        if (err instanceof NoRestorePointError && metrics.lastSuccessOf(ALL) === 0) {
          runLog.info({ reason: err.message }, 'verify skipped: no restore point yet');
          return { skipped: err.message };
        }
        if (signal.aborted || isAbort(err)) runLog.warn({ error: describeError(err) }, 'verify aborted');
        else await checkThrew('verify', err, id, runLog);
        throw err;
      });
      if ('skipped' in ran) return { status: 'skipped', result: { reason: ran.skipped } };
      const ok = ran.status === 'ok';
      const at = new Date();
      metrics.verifyFinished(ok, readData, at);
      await recordCheck(repository, 'verify', { ok, at, summary: verifySummary(ran) }, { signal }).catch(
        (err: unknown) => {
          runLog.warn({ error: describeError(err) }, 'verify outcome not recorded in the target');
        },
      );
      if (ok)
        runLog.info({ snapshots: ran.snapshots.length, readData }, 'verify found every restore point sound');
      else {
        runLog.error({ summary: verifySummary(ran) }, 'verify found damage');
        await notify(config, log, { event: 'verify.damaged', id, summary: verifySummary(ran) });
      }
      return { status: ok ? 'success' : 'failed', result: ran };
    });
  }

  /** Restores the latest restore point into scratch buckets and a scratch directory, compares, cleans up. */
  function startDrill(trigger: string): { started: OperationView } | { busy: OperationView } {
    return operations.start('drill', trigger, async (signal, _progress, id) => {
      const runLog = log.child({ runId: id, trigger });
      let ran;
      try {
        ran = await locked('drill', runLog, signal, (signal) =>
          withRestoreDeps(
            { config, repository, etcd, reporter: silentReporter, log: runLog },
            signal,
            (deps) =>
              runDrill(deps, {
                bucketSuffix: config.drill.bucketSuffix,
                directory: config.drill.directory,
                signal,
              }),
          ),
        );
      } catch (err) {
        if (signal.aborted || isAbort(err))
          runLog.warn({ error: describeError(err) }, 'restore drill aborted');
        else await checkThrew('drill', err, id, runLog);
        throw err;
      }
      if ('skipped' in ran) return { status: 'skipped', result: { reason: ran.skipped } };
      const ok = ran.status === 'success';
      const at = new Date();
      metrics.drillFinished(ok, at);
      const summary = drillSummary(ran);
      await recordCheck(repository, 'drill', { ok, at, summary }, { signal }).catch((err: unknown) => {
        runLog.warn({ error: describeError(err) }, 'drill outcome not recorded in the target');
      });
      if (ok) runLog.info({ snapshot: ran.snapshot }, 'restore drill succeeded');
      else {
        runLog.error(
          { snapshot: ran.snapshot, checks: ran.checks, cleanup: ran.cleanup },
          'restore drill failed',
        );
        await notify(config, log, { event: 'drill.failed', id, summary });
      }
      return { status: ok ? 'success' : 'failed', result: ran };
    });
  }

  function startRestore(
    trigger: string,
    request: RestoreRequest,
  ): { started: OperationView } | { busy: OperationView } {
    return operations.start('restore', trigger, async (signal, progress, id) => {
      const runLog = log.child({ runId: id, trigger });
      metrics.restoreStarted();
      metrics.setInProgress('restore', true);
      const state: {
        steps: Record<string, { status: string; detail: string }>;
        progress?: unknown;
        warnings: string[];
      } = { steps: {}, warnings: [] };
      // Shown from the start (a restore waiting for the lock has no step yet), and a step still
      // running when the restore ends takes its end.
      progress({ ...state });
      const endRunning = (status: 'aborted' | 'failed'): void => {
        for (const step of Object.values(state.steps)) if (step.status === 'running') step.status = status;
        progress({ ...state });
      };
      const reporter: Reporter = {
        started(step, detail) {
          state.steps[step] = { status: 'running', detail };
          progress({ ...state });
        },
        finished(step, status, detail) {
          state.steps[step] = { status, detail };
          progress({ ...state });
        },
        progress(step, done, total) {
          state.progress = {
            step,
            objects: done.objects,
            bytes: done.bytes,
            totalObjects: total.objects,
            totalBytes: total.bytes,
          };
          progress({ ...state });
        },
        warn(message) {
          state.warnings.push(message);
          progress({ ...state });
        },
      };
      try {
        const restore = (signal: AbortSignal) =>
          withRestoreDeps(
            {
              config,
              repository,
              etcd,
              reporter,
              log: runLog,
              finishCommand: (snapshot) =>
                `send POST /restores ${JSON.stringify({ snapshot, only: ['finish'] })}`,
            },
            signal,
            (deps) => restoreSnapshot(deps, request, { signal }),
          );
        // A dry run only reads; a real restore must not race a forget or prune of what it reads.
        const report = request.dryRun
          ? await restore(signal)
          : await locked('restore', runLog, signal, restore);
        if ('skipped' in report) return { status: 'skipped', result: { reason: report.skipped } };
        // A dry run is an attempt, not a restore: it neither succeeds nor fails as one.
        if (!request.dryRun) metrics.restoreFinished(report.status);
        if (report.status === 'success')
          runLog.info({ status: report.status, snapshot: report.snapshot }, 'restore finished');
        else {
          // What went wrong, in the log too: the operation's result lives only in this process.
          const fields = {
            status: report.status,
            snapshot: report.snapshot,
            errors: report.steps.flatMap((step) => step.errors),
            next: report.next,
          };
          if (report.status === 'partial') runLog.warn(fields, 'restore finished');
          else runLog.error(fields, 'restore finished');
        }
        return { status: report.status, result: report };
      } catch (err) {
        // An abort is not a failure: what was restored stays, and the same restore again skips it.
        if (signal.aborted || isAbort(err)) {
          endRunning('aborted');
          metrics.restoreFinished('aborted');
          runLog.warn(
            { error: describeError(err) },
            'restore aborted: what was restored stays; the same restore again skips it and finishes',
          );
          throw err;
        }
        endRunning('failed');
        if (!request.dryRun) metrics.restoreFinished('failed');
        runLog.error({ error: describeError(err) }, 'restore failed');
        throw err;
      } finally {
        metrics.setInProgress('restore', false);
      }
    });
  }
  return { startBackup, startRestore, startVerify, startDrill };
}

/** One line on a verify's outcome, for logs, webhooks and the recorded status. */
function verifySummary(report: VerifyReport): string {
  const damaged = report.snapshots.filter((s) => s.status !== 'ok');
  if (report.status === 'ok') return `${report.snapshots.length} restore point(s) sound`;
  const first = damaged[0]?.errors[0] ?? report.unreadable[0]?.error ?? 'damage found';
  return `${damaged.length + report.unreadable.length} restore point(s) damaged; first: ${first}`;
}

/** Drills report through their result, not progress lines. */
const silentReporter: Reporter = {
  started: () => undefined,
  finished: () => undefined,
  progress: () => undefined,
  warn: () => undefined,
};

/** POSTs a JSON event to the configured webhook; failures are logged, never thrown. */
async function notify(config: Config, log: Logger, event: Record<string, unknown>): Promise<void> {
  const url = config.webhook.url;
  if (url === undefined) return;
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ source: 'deis-backup', at: new Date().toISOString(), ...event }),
      signal: AbortSignal.timeout(config.webhook.timeoutMs),
    });
    await res.body?.cancel();
    if (!res.ok) log.warn({ status: res.status }, 'webhook answered with an error');
  } catch (err) {
    log.warn({ error: describeError(err) }, 'webhook not delivered');
  }
}
