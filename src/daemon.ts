// The daemon: a cron schedule of backups, restores on request, all one at a time, an HTTP API with
// health, readiness and Prometheus metrics, and a shutdown that commits nothing half done.
import type { ScheduledTask } from 'node-cron';
import { Registry } from 'prom-client';
import { VERSION } from './tool.js';
import type { Config } from './config.js';
import { longestCronGap } from './cron.js';
import { createRunners } from './daemon/runners.js';
import { scheduleTask } from './daemon/schedule.js';
import { SharedListing } from './daemon/shared-listing.js';
import { withDeadline } from './deadline.js';
import { describeError } from './errors.js';
import { buildServer, type Readiness } from './http/server.js';
import { readFailedBackup, type CheckStatus } from './jobs.js';
import type { Logger } from './log.js';
import { ALL, Metrics } from './metrics.js';
import { Operations, type OperationView } from './operations.js';
import {
  createClusterEtcd,
  createClusterLock,
  createRepository,
  holdsAll,
  isConfiguredSource,
  requireBackupSources,
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

/**
 * How long one listing of the target may take before the target counts as down. Readers wait less
 * (/readyz 10 s, /snapshots and the minute's probe 30 s) and leave it running: a slow listing of a
 * large repository is not an outage, a hung one is.
 */
const LISTING_LIMIT_MS = 120_000;

/** How long a shutdown waits for the running operation to wind down. */
const SHUTDOWN_WAIT_MS = 30_000;

/** Starts the daemon; it runs until stop() or until `shutdown` aborts (then call stop()). */
export async function startDaemon(
  config: Config,
  opts: { log: Logger; shutdown: AbortSignal },
): Promise<Daemon> {
  const { log, shutdown } = opts;
  // Its schedule backs up the enabled sources: with none, every run would store nothing.
  requireBackupSources(config, undefined);
  const repository = await createRepository(config);
  const etcd = createClusterEtcd(config);
  const metrics = new Metrics(new Registry(), VERSION);
  const operations = new Operations(shutdown);
  const lock = createClusterLock(config, etcd, repository.target);

  const task: ScheduledTask = schedule(
    'backup',
    config.schedule.cron,
    () => startBackup('schedule', undefined),
    config.schedule.jitterSeconds * 1000,
  );
  const intervalSeconds = longestCronGap(task);
  metrics.setExpectedInterval(intervalSeconds);
  const checks = [
    config.verify.enabled && schedule('verify', config.verify.cron, () => startVerify('schedule')),
    config.drill.enabled && schedule('drill', config.drill.cron, () => startDrill('schedule')),
  ].filter((t): t is ScheduledTask => t !== false);
  if (config.drill.enabled) metrics.setDrillInterval(longestCronGap(checks.at(-1) ?? task));

  /** A cron task for a check; a check that finds another operation running is skipped, with a log line. */
  function schedule(
    name: string,
    cron: string,
    start: () => { started: OperationView } | { busy: OperationView },
    jitterMs = 0,
  ): ScheduledTask {
    return scheduleTask(
      cron,
      () => {
        const outcome = start();
        if ('busy' in outcome)
          log.warn({ running: outcome.busy.id }, `scheduled ${name} skipped: another operation is running`);
      },
      {
        timezone: config.schedule.timezone,
        name: `deis-backup-${name}`,
        what: `scheduled ${name}`,
        jitterMs,
        log,
      },
    );
  }

  /**
   * Lists restore points; doubles as the target's health check. The first successful listing sets
   * the last-success figures, so a target that was down at start still gets them when it returns.
   */
  let rebuilt = false;
  let lastScan: { at: number; error: string | undefined } = { at: 0, error: 'not checked yet' };
  const listScan = async (signal: AbortSignal) => {
    try {
      const { snapshots } = await repository.scan({ signal });
      metrics.setTargetUp(true);
      metrics.setRestorePoints(snapshots.length);
      if (!rebuilt) {
        metrics.rebuild(
          snapshots,
          (manifest) => holdsAll(config, manifest),
          (source) => isConfiguredSource(config, source),
          await readFailedBackup(repository, { signal }),
        );
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
  // Readers share one listing, and a reader's own time limit does not end it (see SharedListing).
  // Ended by a shutdown, or by stop() (which a caller may use without aborting `shutdown`).
  const listingsEnd = new AbortController();
  if (shutdown.aborted) listingsEnd.abort(shutdown.reason);
  else
    shutdown.addEventListener(
      'abort',
      () => {
        listingsEnd.abort(shutdown.reason);
      },
      { once: true },
    );
  const listing = new SharedListing(listScan, { limitMs: LISTING_LIMIT_MS, stop: listingsEnd.signal });
  const scan = (signal: AbortSignal, opts: { fresh?: boolean } = {}) =>
    listing.get(signal, opts.fresh ? { startedAfter: Date.now() } : {});
  // The cron tasks above call these only once started, below.
  const { startBackup, startRestore, startVerify, startDrill } = createRunners({
    config,
    log,
    repository,
    etcd,
    metrics,
    operations,
    lock,
    scan,
  });
  const first = withDeadline(shutdown, 30_000);
  await scan(first.signal)
    .catch((err: unknown) => {
      // Past the wait, the listing goes on, and its outcome sets the target's figures.
      const still = first.signal.aborted && !shutdown.aborted;
      log.warn(
        { error: describeError(err), target: repository.target.name },
        still ? 'target still listing at start' : 'target unreachable at start',
      );
    })
    .finally(first.dispose);

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

  const readiness = async (signal: AbortSignal): Promise<Readiness> => {
    // Probes may come every few seconds: a listing younger than READY_CACHE_MS answers for the target.
    // Past the probe's own limit, the last listing's outcome does.
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
    targetName: repository.target.name,
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
  // A shutdown during the start (the scan above waits up to 30 s) leaves nothing to start.
  if (config.schedule.runAtStart && !shutdown.aborted) startBackup('start', undefined);

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
        listingsEnd.abort(new Error('daemon stopped'));
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
