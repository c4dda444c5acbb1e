// The daemon: a cron schedule of backups, restores on request, all one at a time, an HTTP API with
// health, readiness and Prometheus metrics, and a shutdown that commits nothing half done.
import { createTask, type ScheduledTask } from 'node-cron';
import { Registry } from 'prom-client';
import { runBackup, TOOL, type BackupResult } from './backup.js';
import type { Config } from './config.js';
import { BackupError, describeError, isAbort } from './errors.js';
import { buildServer, type Readiness } from './http/server.js';
import type { Logger } from './log.js';
import { ALL, Metrics } from './metrics.js';
import { Operations, type OperationView } from './operations.js';
import { restoreSnapshot, type RestoreRequest } from './restore.js';
import type { Reporter } from './restore/report.js';
import { runDrill } from './drill.js';
import { drillSummary } from './format.js';
import {
  applyRetention,
  LockBusyError,
  recordCheck,
  underLock,
  type CheckStatus,
  type RetentionOutcome,
} from './jobs.js';
import { verifySnapshots, type VerifyReport } from './repository/verify.js';
import {
  createClusterEtcd,
  createClusterLock,
  createRepository,
  createRestoreGateway,
  createSources,
  sshTarget,
} from './wiring.js';

/** A running daemon. */
export interface Daemon {
  /** Where the HTTP API listens, e.g. http://127.0.0.1:9480. */
  url: string;
  metrics: Metrics;
  operations: Operations;
  /**
   * Stops scheduling, waits (bounded) for the running operation, closes the server. Abort the
   * `shutdown` signal first to abort that operation instead of letting it finish.
   */
  stop(): Promise<void>;
}

/** How long a target listing answers /readyz before the target is asked again. */
const READY_CACHE_MS = 5_000;

/** How long a shutdown waits for the running operation to wind down. */
const SHUTDOWN_WAIT_MS = 30_000;

/** Starts the daemon; it runs until stop() or until `shutdown` aborts (then call stop()). */
export async function startDaemon(
  config: Config,
  opts: { log: Logger; shutdown: AbortSignal },
): Promise<Daemon> {
  const { log, shutdown } = opts;
  const repository = await createRepository(config);
  const etcd = createClusterEtcd(config);
  const metrics = new Metrics(new Registry(), TOOL.split(' ')[1] ?? 'unknown');
  const operations = new Operations(shutdown);
  const lock = createClusterLock(config, etcd, repository.target);

  const task: ScheduledTask = createTask(
    config.schedule.cron,
    () => {
      const outcome = startBackup('schedule', undefined);
      if ('busy' in outcome)
        log.warn({ running: outcome.busy.id }, 'scheduled backup skipped: another operation is running');
    },
    {
      timezone: config.schedule.timezone,
      noOverlap: true,
      maxRandomDelay: config.schedule.jitterSeconds * 1000,
      name: 'deis-backup',
    },
  );
  const intervalSeconds = cronInterval(task);
  metrics.setExpectedInterval(intervalSeconds);
  const checks = [
    config.verify.enabled && schedule('verify', config.verify.cron, () => startVerify('schedule')),
    config.drill.enabled && schedule('drill', config.drill.cron, () => startDrill('schedule')),
  ].filter((t): t is ScheduledTask => t !== false);
  if (config.drill.enabled) metrics.setDrillInterval(cronInterval(checks.at(-1) ?? task));

  /** A cron task for a check; a check that finds another operation running is skipped, with a log line. */
  function schedule(
    name: string,
    cron: string,
    start: () => { started: OperationView } | { busy: OperationView },
  ): ScheduledTask {
    return createTask(
      cron,
      () => {
        const outcome = start();
        if ('busy' in outcome)
          log.warn({ running: outcome.busy.id }, `scheduled ${name} skipped: another operation is running`);
      },
      { timezone: config.schedule.timezone, noOverlap: true, name: `deis-backup-${name}` },
    );
  }

  /**
   * Lists restore points; doubles as the target's health check. The first successful listing sets
   * the last-success figures, so a target that was down at start still gets them when it returns.
   */
  let rebuilt = false;
  let lastScan: { at: number; error: string | undefined } = { at: 0, error: 'not checked yet' };
  const scan = async (signal: AbortSignal) => {
    try {
      const { snapshots } = await repository.scan({ signal });
      metrics.setTargetUp(true);
      metrics.setRestorePoints(snapshots.length);
      if (!rebuilt) {
        metrics.rebuild(snapshots);
        await restoreCheckMetrics(signal);
      }
      rebuilt = true;
      lastScan = { at: Date.now(), error: undefined };
      return snapshots;
    } catch (err) {
      metrics.setTargetUp(false);
      lastScan = { at: Date.now(), error: describeError(err) };
      throw err;
    }
  };
  await scan(AbortSignal.any([shutdown, AbortSignal.timeout(30_000)])).catch((err: unknown) => {
    log.warn({ error: describeError(err), target: repository.target.name }, 'target unreachable at start');
  });

  /** Sets the verify and drill figures from what the target recorded, so a restart keeps them. */
  async function restoreCheckMetrics(signal: AbortSignal): Promise<void> {
    const verify = (await repository.readStatus('verify', { signal })) as CheckStatus | undefined;
    if (verify?.lastSuccessAt)
      metrics.verifyFinished(true, config.verify.readData, new Date(verify.lastSuccessAt));
    if (verify && !verify.ok)
      metrics.verifyFinished(false, config.verify.readData, new Date(verify.finishedAt));
    const drill = (await repository.readStatus('drill', { signal })) as CheckStatus | undefined;
    if (drill?.lastSuccessAt) metrics.drillFinished(true, new Date(drill.lastSuccessAt));
    if (drill && !drill.ok) metrics.drillFinished(false, new Date(drill.finishedAt));
  }

  function startBackup(
    trigger: string,
    only: RestoreRequest['only'] | undefined,
  ): { started: OperationView } | { busy: OperationView } {
    return operations.start('backup', trigger, async (signal, _progress, id) => {
      const runLog = log.child({ runId: id, trigger });
      const started = Date.now();
      let result: BackupResult;
      let retention: RetentionOutcome | undefined;
      try {
        const ran = await locked('backup', runLog, signal, async (signal) => {
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
              ? await applyRetention(config, repository, { now: new Date(), signal, log: runLog })
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
        );
        runLog.error({ error: describeError(err) }, 'backup failed');
        await notify(config, log, { event: 'backup.failed', id, error: describeError(err) });
        throw err;
      }
      metrics.backupFinished(result, (Date.now() - started) / 1000, new Date());
      if (retention)
        metrics.retentionApplied(retention.forget?.drop.length ?? 0, retention.prune?.freedBytes ?? 0);
      if (result.status === 'aborted') {
        runLog.warn('backup aborted: no restore point written');
        return { status: 'aborted', result };
      }
      await scan(signal).catch(() => undefined);
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
    work: (signal: AbortSignal) => Promise<T>,
  ): Promise<T | { skipped: string }> {
    try {
      return await underLock(
        { lock, log: runLog, waitSeconds: config.lock.waitSeconds },
        operation,
        { signal },
        async (signal) => {
          metrics.setLockHeld(operation, true);
          try {
            return await work(signal);
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

  /** Verifies every restore point (metadata, or every byte with verify.readData) and records it. */
  function startVerify(trigger: string): { started: OperationView } | { busy: OperationView } {
    return operations.start('verify', trigger, async (signal, _progress, id) => {
      const runLog = log.child({ runId: id, trigger });
      const readData = config.verify.readData;
      const ran = await locked('verify', runLog, signal, (signal) =>
        verifySnapshots(repository, 'all', { readData, signal, log: runLog }),
      ).catch((err: unknown) => {
        if (!(signal.aborted || isAbort(err))) {
          metrics.verifyFinished(false, readData, new Date());
          runLog.error({ error: describeError(err) }, 'verify failed');
        }
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
      const gateway = createRestoreGateway(config, etcd, { signal });
      let ran;
      try {
        ran = await locked('drill', runLog, signal, (signal) =>
          runDrill(
            {
              config,
              repository,
              etcd,
              gateway: gateway.get,
              sshTarget: (host) => sshTarget(config, host),
              reporter: silentReporter,
              log: runLog,
            },
            { bucketSuffix: config.drill.bucketSuffix, directory: config.drill.directory, signal },
          ),
        );
      } catch (err) {
        if (!(signal.aborted || isAbort(err))) {
          metrics.drillFinished(false, new Date());
          runLog.error({ error: describeError(err) }, 'restore drill failed');
        }
        throw err;
      } finally {
        gateway.close();
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
      const gateway = createRestoreGateway(config, etcd, { signal });
      try {
        const restore = (signal: AbortSignal) =>
          restoreSnapshot(
            {
              config,
              repository,
              etcd,
              gateway: gateway.get,
              sshTarget: (host) => sshTarget(config, host),
              reporter,
              log: runLog,
            },
            request,
            { signal },
          );
        // A dry run only reads; a real restore must not race a forget or prune of what it reads.
        const report = request.dryRun
          ? await restore(signal)
          : await locked('restore', runLog, signal, restore);
        if ('skipped' in report) return { status: 'skipped', result: { reason: report.skipped } };
        metrics.restoreFinished(report.status);
        runLog.info({ status: report.status, snapshot: report.snapshot }, 'restore finished');
        return { status: report.status, result: report };
      } catch (err) {
        // An abort is not a failure: what was restored stays, and the same restore again skips it.
        if (signal.aborted || isAbort(err)) {
          metrics.restoreFinished('aborted');
          runLog.warn(
            { error: describeError(err) },
            'restore aborted: what was restored stays; the same restore again skips it and finishes',
          );
          throw err;
        }
        metrics.restoreFinished('failed');
        runLog.error({ error: describeError(err) }, 'restore failed');
        throw err;
      } finally {
        gateway.close();
        metrics.setInProgress('restore', false);
      }
    });
  }

  const readiness = async (signal: AbortSignal): Promise<Readiness> => {
    // Probes may come every few seconds: a listing younger than READY_CACHE_MS answers for the target.
    if (Date.now() - lastScan.at > READY_CACHE_MS) await scan(signal).catch(() => undefined);
    const targetError = lastScan.error;
    const last = metrics.lastSuccessOf(ALL);
    const maxAgeSeconds = 2 * intervalSeconds;
    const age = Date.now() / 1000 - last;
    const iso = (seconds: number) => (seconds > 0 ? new Date(seconds * 1000).toISOString() : null);
    const reason =
      targetError !== undefined
        ? `target ${repository.target.name} unreachable: ${targetError}`
        : last === 0
          ? 'no successful restore point yet'
          : age > maxAgeSeconds
            ? `last successful restore point is ${Math.round(age)} s old, more than twice the schedule interval (${maxAgeSeconds} s)`
            : undefined;
    const sources: Readiness['sources'] = {};
    for (const [source, at] of metrics.lastSuccesses())
      if (source !== ALL) sources[source] = { lastSuccess: iso(at) };
    return {
      ready: reason === undefined,
      ...(reason ? { reason } : {}),
      targetUp: targetError === undefined,
      lastSuccess: iso(last),
      maxAgeSeconds,
      sources,
    };
  };

  const server = buildServer({
    operations,
    metrics,
    token: config.http.token,
    log: log.child({ component: 'http' }),
    snapshots: scan,
    readiness,
    startBackup,
    startRestore,
    startVerify,
    startDrill,
  });
  await server.listen({ host: config.http.host, port: config.http.port });
  const address = server.server.address();
  const url =
    typeof address === 'object' && address
      ? `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`
      : '';
  // Keep target_up current between runs, for the TargetDown alert.
  // Also pick up verify and drill outcomes recorded by a CLI run.
  const probe = setInterval(() => {
    const signal = AbortSignal.timeout(30_000);
    void scan(signal)
      .then(() => restoreCheckMetrics(signal))
      .catch(() => undefined);
  }, 60_000);
  probe.unref();
  await task.start();
  for (const check of checks) await check.start();
  log.info(
    {
      url,
      schedule: config.schedule.cron,
      timezone: config.schedule.timezone,
      next: task.getNextRun()?.toISOString(),
    },
    'daemon started',
  );
  if (config.schedule.runAtStart) startBackup('start', undefined);

  let stopping: Promise<void> | undefined;
  return {
    url,
    metrics,
    operations,
    stop() {
      stopping ??= (async () => {
        await task.destroy();
        for (const check of checks) await check.destroy();
        clearInterval(probe);
        const idle = await operations.idle(SHUTDOWN_WAIT_MS);
        if (!idle)
          log.error(
            'the running operation did not stop in time; exiting anyway (nothing was committed after the abort)',
          );
        await server.close();
        log.info('daemon stopped');
      })();
      return stopping;
    },
  };
}

/** Seconds between the next two runs of a cron task (a day when it cannot tell). */
function cronInterval(task: ScheduledTask): number {
  const [first, second] = task.getNextRuns(2);
  return first && second ? (second.getTime() - first.getTime()) / 1000 : 86_400;
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
