// restoreSnapshot: the Deis-ordered restore of one restore point. Preflight checks everything and
// writes nothing; then buckets (db_wal before registry, sentinels last), the volume, the database
// when asked, and the finishing steps. A dry run stops after the plan.
import { setMaxListeners } from 'node:events';
import type { Config } from './config.js';
import type { Etcd } from './etcd.js';
import { describeError } from './errors.js';
import type { Logger } from './log.js';
import type { Repository } from './repository/repository.js';
import { applyBucket } from './restore/buckets.js';
import { loadDump } from './restore/database.js';
import {
  needsRepublish,
  parseVersion,
  republishedState,
  republishSnippet,
  snippetRaised,
  scaleAdvice,
} from './restore/finish.js';
import { emptyStepCounts, type Reporter, type StepCounts, type StepName } from './restore/report.js';
import { applyVolume } from './restore/volume.js';
import { INIT_ID_KEY, preflight, type Prepared } from './restore/preflight.js';
import { runCommand, shownCommand, whereText } from './command.js';
import type { S3Client } from './s3/client.js';
import { errorLine } from './sources/source.js';
import type { SshTarget } from './ssh.js';
import type { RestoreStep } from './wiring.js';

/** What to restore and how. */
export interface RestoreRequest {
  /** A restore point id, or "latest". */
  snapshot: string;
  /**
   * Steps to run; the database only when named, and `finish` alone to republish without restoring
   * data. Every step named must be in the restore point. Undefined: buckets and volume, those of
   * them the restore point holds.
   */
  only?: readonly RestoreStep[] | undefined;
  /** Source bucket → destination bucket. */
  bucketMap: ReadonlyMap<string, string>;
  /** Overrides the volume's destination path. */
  volumeTo?: string | undefined;
  dryRun: boolean;
  overwrite: boolean;
  /** Proceed although the database looks alive. */
  yes: boolean;
}

/** Everything a restore needs from outside. */
export interface RestoreDeps {
  config: Config;
  repository: Repository;
  etcd: Etcd;
  /** The new cluster's gateway, built lazily: only bucket restores need it. */
  gateway: () => Promise<{ client: S3Client; listVersion: 1 | 2; endpoint: string }>;
  sshTarget: (host: string) => SshTarget;
  reporter: Reporter;
  log: Logger;
  /**
   * What to do to run the finishing step alone, for the `next:` lines: the CLI command with the
   * config it was given, or the daemon's request. Default: `run deis-backup restore <id> --only finish`.
   */
  finishCommand?: (id: string) => string;
}

/** One step's plan or outcome. */
export interface StepReport {
  step: Exclude<StepName, 'preflight'>;
  status: 'planned' | 'success' | 'partial' | 'failed' | 'skipped';
  detail: string;
  counts: StepCounts;
  errors: string[];
  buckets?: {
    source: string;
    destination: string;
    createBucket: boolean;
    counts: StepCounts & { reorder: number };
    /** Unfinished uploads of its keys an earlier restore left, aborted (only when there were some). */
    abortedUploads?: number;
  }[];
}

/** The plan (dry run) or the result of a restore. */
export interface RestoreReport {
  snapshot: string;
  dryRun: boolean;
  status: 'success' | 'partial' | 'failed';
  steps: StepReport[];
  hazards: string[];
  /** What the operator still has to do. */
  next: string[];
  /**
   * What became of the republish to etcd in the finishing step: `done`, `failed`, `no host` (due,
   * but no controller host is known), `version unknown` (whether one is due is not known), or
   * `none` (not due, only advised, a dry run, or not reached).
   */
  republish: FinishOutcome['republish'];
}

/** Runs the restore (or, with dryRun, only its preflight and plan). Throws on a failed preflight. */
export async function restoreSnapshot(
  deps: RestoreDeps,
  request: RestoreRequest,
  opts: { signal: AbortSignal },
): Promise<RestoreReport> {
  // Each concurrent transfer listens on the run's signal (request, source stream, pipeline).
  setMaxListeners(16 + 4 * deps.config.sources.buckets.concurrency, opts.signal);
  const { reporter } = deps;
  reporter.started('preflight', request.snapshot);
  let prepared: Prepared;
  try {
    prepared = await preflight(deps, request, opts);
  } catch (err) {
    reporter.finished('preflight', 'failed', describeError(err));
    throw err;
  }
  reporter.finished('preflight', 'success', `restore point ${prepared.manifest.id}`);
  for (const hazard of prepared.hazards) reporter.warn(hazard);
  const steps = planReports(prepared);
  if (request.dryRun) {
    const { next } = await finishAdvice(deps, prepared, opts, true);
    return {
      snapshot: prepared.manifest.id,
      dryRun: true,
      status: 'success',
      steps,
      hazards: prepared.hazards,
      next,
      republish: 'none',
    };
  }
  const results: StepReport[] = [];
  let stopped = false;
  for (const step of steps) {
    if (stopped) {
      results.push({ ...step, status: 'skipped', detail: 'an earlier step failed' });
      continue;
    }
    reporter.started(step.step, step.detail);
    let result: StepReport;
    try {
      result = await runStep(deps, prepared, request, step, opts);
    } catch (err) {
      opts.signal.throwIfAborted();
      result = { ...step, status: 'failed', detail: describeError(err), errors: [describeError(err)] };
    }
    reporter.finished(step.step, result.status, result.detail);
    results.push(result);
    if (result.status === 'failed') stopped = true;
  }
  const bucketsDone = results.find((r) => r.step === 'buckets' && r.status !== 'failed');
  const database = bucketsDone
    ? await databaseBoot(deps, prepared, bucketsDone, opts)
    : { next: [], failed: false };
  const finish = stopped
    ? { next: [], republish: 'none' as const }
    : await finishAdvice(deps, prepared, opts, false);
  // A failed republish leaves etcd without keys, apps, domains or configs: the restore is not complete.
  const finishFailed = finish.republish === 'failed';
  // Asked for alone, a finishing step that failed, or could not run for want of a host, is the whole
  // restore failing.
  const finishAlone = results.length === 0;
  const unrun = finish.republish === 'no host' || finish.republish === 'version unknown';
  const status =
    results.some((r) => r.status === 'failed' || r.status === 'skipped') ||
    (finishAlone && (finishFailed || unrun))
      ? 'failed'
      : finishFailed || database.failed || results.some((r) => r.status === 'partial')
        ? 'partial'
        : 'success';
  return {
    snapshot: prepared.manifest.id,
    dryRun: false,
    status,
    steps: results,
    hazards: prepared.hazards,
    next: [...database.next, ...finish.next],
    republish: finish.republish,
  };
}

function planReports(prepared: Prepared): StepReport[] {
  const steps: StepReport[] = [];
  if (prepared.buckets.length > 0) {
    const counts = emptyStepCounts();
    for (const { plan } of prepared.buckets) addCounts(counts, plan.counts);
    steps.push({
      step: 'buckets',
      status: 'planned',
      detail: prepared.buckets
        .map(({ plan }) =>
          plan.source === plan.destination ? plan.source : `${plan.source}→${plan.destination}`,
        )
        .join(', '),
      counts,
      errors: [],
      buckets: prepared.buckets.map(({ plan }) => ({
        source: plan.source,
        destination: plan.destination,
        createBucket: plan.createBucket,
        counts: plan.counts,
      })),
    });
  }
  if (prepared.volume) {
    const dest = prepared.volume.plan.destination;
    const where = dest.ssh ? `${dest.ssh.host}:${dest.path}` : dest.path;
    // What the backup left out is not restored: say so where the step is named.
    const { excluded: left } = prepared.volume.record;
    const excluded = Array.isArray(left) ? left.map((p) => JSON.stringify(p)) : [];
    steps.push({
      step: 'volume',
      status: 'planned',
      detail:
        excluded.length > 0
          ? `${where}, without ${excluded.join(' ')} (left out by sources.volume.exclude when backed up)`
          : where,
      counts: prepared.volume.plan.counts,
      errors: [],
    });
  }
  if (prepared.database) {
    const artifact = prepared.database.record.artifacts[0];
    const counts = {
      ...emptyStepCounts(),
      objects: 1,
      bytes: artifact?.size ?? 0,
      create: 1,
      transferBytes: artifact?.size ?? 0,
    };
    steps.push({
      step: 'database',
      status: 'planned',
      detail: `${shownCommand(prepared.database.where.command)} ${whereText(prepared.database.where.ssh)}`,
      counts,
      errors: [],
    });
  }
  return steps;
}

function addCounts(into: StepCounts, from: StepCounts): void {
  for (const key of Object.keys(into) as (keyof StepCounts)[]) into[key] += from[key];
}

async function runStep(
  deps: RestoreDeps,
  prepared: Prepared,
  request: RestoreRequest,
  step: StepReport,
  opts: { signal: AbortSignal },
): Promise<StepReport> {
  switch (step.step) {
    case 'buckets': {
      const counts = emptyStepCounts();
      const errors: string[] = [];
      const buckets: NonNullable<StepReport['buckets']> = [];
      // A failure stops the step: the buckets restored before it stay in the report, as they are now.
      const stoppedBy = (err: unknown): StepReport => {
        opts.signal.throwIfAborted();
        const reason = describeError(err);
        return { ...step, status: 'failed', detail: reason, counts, errors: [...errors, reason], buckets };
      };
      let gateway;
      try {
        gateway = await deps.gateway();
      } catch (err) {
        return stoppedBy(err);
      }
      const progress = {
        objects: 0,
        bytes: 0,
        totalObjects: step.counts.objects,
        totalBytes: step.counts.transferBytes,
      };
      for (const { plan } of prepared.buckets) {
        let outcome;
        try {
          outcome = await applyBucket(gateway.client, deps.repository.target, plan, {
            signal: opts.signal,
            concurrency: deps.config.sources.buckets.concurrency,
            listVersion: gateway.listVersion,
            reporter: deps.reporter,
            progress,
          });
        } catch (err) {
          return stoppedBy(err);
        }
        errors.push(...outcome.errors);
        if (plan.latestSentinel !== undefined && outcome.latestSentinel !== outcome.expectedLatest) {
          errors.push(
            `${plan.destination}: WAL-E's LATEST is now ${outcome.latestSentinel ?? 'nothing'}, not ${outcome.expectedLatest ?? 'nothing'}${outcome.expectedLatest === plan.latestSentinel ? ' as at backup time' : ''}; remove the newer base backup or restore into a fresh bucket before the database starts`,
          );
          // Counted as the bucket's own failure: the database must not restore from it (databaseBoot).
          outcome.counts.failed++;
        }
        addCounts(counts, outcome.counts);
        buckets.push({
          source: plan.source,
          destination: plan.destination,
          createBucket: plan.createBucket,
          counts: outcome.counts,
          ...(outcome.abortedUploads > 0 ? { abortedUploads: outcome.abortedUploads } : {}),
        });
      }
      return { ...step, status: counts.failed > 0 ? 'partial' : 'success', counts, errors, buckets };
    }
    case 'volume': {
      const volume = prepared.volume;
      const artifact = volume?.record.artifacts[0];
      if (!volume || !artifact) return { ...step, status: 'skipped' };
      await applyVolume(deps.repository, artifact, volume.plan, {
        signal: opts.signal,
        overwrite: request.overwrite,
        timeoutMs: deps.config.sources.volume.timeoutMs,
      });
      return { ...step, status: 'success' };
    }
    case 'database': {
      const database = prepared.database;
      const artifact = database?.record.artifacts[0];
      if (!database || !artifact) return { ...step, status: 'skipped' };
      const failed = await loadDump(deps.repository, artifact, database.where, opts);
      return failed.length > 0
        ? { ...step, status: 'partial', errors: failed }
        : { ...step, status: 'success' };
    }
    case 'finish':
      return { ...step, status: 'success' };
  }
}

/** How each failed republish's line begins. */
const REPUBLISH_FAILED = 'republishing from deis-controller';
/** Where a Deis cluster keeps its version. */
const VERSION_KEY = '/deis/platform/version';

/**
 * The finishing step: republish controller state for Deis before 1.11 (run now when the controller
 * is up and this is not a dry run, else explained), and the scale-down-and-up advice.
 */
async function finishAdvice(
  deps: RestoreDeps,
  prepared: Prepared,
  opts: { signal: AbortSignal },
  planOnly: boolean,
): Promise<FinishOutcome> {
  const next: string[] = [];
  let republishing: FinishOutcome['republish'] = 'none';
  if (!prepared.only.some((step) => step === 'buckets' || step === 'database' || step === 'finish'))
    return { next, republish: republishing };
  const { config, etcd } = deps;
  let versionText = config.restore.deisVersion;
  // Why the version is unknown, if it turns out to be.
  let unknown = `${VERSION_KEY} is not in etcd`;
  if (versionText === undefined) {
    try {
      versionText = await etcd.get(VERSION_KEY, opts);
    } catch (err) {
      opts.signal.throwIfAborted();
      unknown = `etcd did not answer for ${VERSION_KEY}: ${describeError(err)}`;
    }
  }
  const version = versionText === undefined ? undefined : parseVersion(versionText);
  if (versionText !== undefined && !version) unknown = `${JSON.stringify(versionText)} is not a version`;
  if (!version) {
    republishing = 'version unknown';
    next.push(
      `Deis version unknown (${unknown}): for Deis before 1.11, publish keys, apps, domains, certificates and configs to etcd from deis-controller (set restore.deisVersion to have it done)`,
    );
  } else if (!needsRepublish(version)) {
    next.push(
      `Deis ${versionText ?? ''} republishes keys, apps, domains, certificates and configs to etcd when the controller starts: nothing to run, unless deis-controller started before the database was restored, which published an empty platform: then restart it (deisctl restart controller)`,
    );
  } else {
    // Why no host is known, if none is.
    let noHost = 'restore.controllerHost, /deis/controller/host';
    const host =
      config.restore.controllerHost ??
      (await etcd.get('/deis/controller/host', opts).catch((err: unknown) => {
        opts.signal.throwIfAborted();
        noHost = `restore.controllerHost; etcd did not answer for /deis/controller/host: ${describeError(err)}`;
        return undefined;
      }));
    // Without a host the printed command names the controller's own $HOST (its unit passes
    // -e HOST=$COREOS_PRIVATE_IPV4), which the shell inside the container expands: the host's
    // $COREOS_PRIVATE_IPV4 would sit unexpanded in the command's single quotes.
    const command = config.restore.controllerCommand.replaceAll('{etcd}', `${host ?? '$HOST'}:4001`);
    // What the lines below show of it; the command runs as written.
    const shown = shownCommand(command);
    const snippet = republishSnippet(version).trim().replaceAll('\n', '; ');
    const waiting = prepared.databaseBucket?.name;
    if (waiting !== undefined) {
      // The controller would publish what the database holds now: not yet what it restores from
      // the bucket at its next start (and, stopped as the preflight asks, it answers nothing).
      next.push(
        `Deis ${versionText ?? ''} does not republish to etcd by itself, and deis-database has yet to restore from ${waiting}: once its log says "database: restoring from backup..." and deis-controller runs, ${finishOnly(deps, prepared)}`,
      );
    } else if (host === undefined) {
      republishing = 'no host';
      next.push(
        `Deis ${versionText ?? ''} does not republish to etcd by itself, and no controller host is known (${noHost}): once deis-controller runs, ${finishOnly(deps, prepared)}, or feed this to \`${shown}\` on its host: ${snippet}`,
      );
    } else if (planOnly) {
      next.push(
        `Deis ${versionText ?? ''} does not republish to etcd by itself: the restore will feed this to \`${shown}\` on ${host}: ${snippet}`,
      );
    } else {
      deps.reporter.started('finish', `republish on ${host}`);
      const failure = await republish(command, deps.sshTarget(host), republishSnippet(version), opts);
      const published = republishedState(version);
      deps.reporter.finished(
        'finish',
        failure === undefined ? 'success' : 'failed',
        failure?.reason ?? `controller published ${published}`,
      );
      const again = finishOnly(deps, prepared);
      republishing = failure === undefined ? 'done' : 'failed';
      if (failure === undefined) next.push(`published ${published} to etcd from deis-controller on ${host}`);
      else if (failure.kind === 'connect')
        next.push(`${REPUBLISH_FAILED} on ${host} failed: ${failure.reason}; then ${again}`);
      else if (failure.kind === 'raised')
        next.push(
          `${REPUBLISH_FAILED} on ${host} failed (${failure.reason}): the snippet is chosen by the Deis version, so check that ${versionSource(config)} is the cluster's, then ${again}`,
        );
      else
        next.push(
          `${REPUBLISH_FAILED} on ${host} failed (${failure.reason}): once deis-controller runs (deisctl start platform), ${again}`,
        );
    }
  }
  next.push(scaleAdvice([...prepared.apps].sort()));
  return { next, republish: republishing };
}

/**
 * What to do about a deis-database that kept its own data. Its stop pushes a base backup of that data
 * (Deis 1.9 and later), which would be LATEST: the restore run again sends the restore point's
 * sentinels after it, and removes initId again.
 */
const KEPT_DATA_FIX = `stop deis-database (from Deis 1.9 that pushes a base backup of the data it kept), run this restore again with --only buckets (it puts the restore point's base backups back as the newest and removes ${INIT_ID_KEY} again; before Deis 1.5 remove the deis-database-data container instead), then start deis-database`;

/**
 * Once WAL-E data is back whole in the database's own bucket: removes `/deis/database/initId` if
 * the preflight found it (compare-and-delete, so a database that initialised again since keeps its
 * new id), so that deis-database restores from the bucket at its next start instead of keeping
 * its own data; and says what its log must show. `failed` when the key is still there. A bucket
 * with failures (objects, or a LATEST that is not the restore point's) keeps the key: restored
 * from it, the database would come up without what failed, or from another base backup.
 */
async function databaseBoot(
  deps: RestoreDeps,
  prepared: Prepared,
  buckets: StepReport,
  opts: { signal: AbortSignal },
): Promise<{ next: string[]; failed: boolean }> {
  const bucket = prepared.databaseBucket;
  const lines: string[] = [];
  if (!bucket) return { next: lines, failed: false };
  const counts = buckets.buckets?.find((b) => b.destination === bucket.name)?.counts;
  const kept = bucket.initId === undefined ? '' : `; ${INIT_ID_KEY} stays until then`;
  if (counts?.failed !== 0) {
    lines.push(
      `${bucket.name} was not restored whole (${counts === undefined ? 'not restored' : `${counts.failed} failed; see the errors`}): do not start deis-database until this restore runs again without failures, or it restores without what failed${kept}`,
    );
    return { next: lines, failed: false };
  }
  // Same-named WAL-E objects with other bytes (a database that pushed its own segments here): the
  // restore point's base backups would be replayed with another history's WAL.
  if (counts.conflict > 0) {
    lines.push(
      `${bucket.name} holds ${counts.conflict} object(s) that differ from the restore point and were kept: do not start deis-database until this restore runs again with --overwrite, or it restores the restore point's base backups with WAL that is not theirs${kept}`,
    );
    return { next: lines, failed: true };
  }
  let failure: string | undefined;
  if (bucket.initId !== undefined) {
    try {
      if (!(await deps.etcd.remove(INIT_ID_KEY, bucket.initId, opts)))
        failure = 'it changed since the preflight: deis-database initialised again';
    } catch (err) {
      opts.signal.throwIfAborted();
      failure = describeError(err);
    }
    lines.push(
      failure === undefined
        ? `removed ${INIT_ID_KEY}: deis-database had initialised in this cluster; at its next start it restores from ${bucket.name}`
        : `${INIT_ID_KEY} was not removed (${failure}): ${KEPT_DATA_FIX}`,
    );
  }
  lines.push(
    `when deis-database starts, its log (deisctl journal database) must say "database: restoring from backup..."; if it does not, it kept its own data: ${KEPT_DATA_FIX}, before its next base backup (every 3 h)`,
  );
  return { next: lines, failed: failure !== undefined };
}

/** The finishing step's `next:` lines, and what became of the republish. */
interface FinishOutcome {
  next: string[];
  /** `none` when none was due or it was only advised (a dry run, a version that needs none). */
  republish: 'none' | 'done' | 'failed' | 'no host' | 'version unknown';
}

/** Where the Deis version came from, for a message that asks to check it. */
function versionSource(config: Config): string {
  return config.restore.deisVersion === undefined
    ? '/deis/platform/version in etcd'
    : `restore.deisVersion (${config.restore.deisVersion})`;
}

/** What runs the finishing step again, without restoring any data a second time. */
function finishOnly(deps: RestoreDeps, prepared: Prepared): string {
  const id = prepared.manifest.id;
  return deps.finishCommand?.(id) ?? `run deis-backup restore ${id} --only finish`;
}

/**
 * Feeds the republish snippet to the controller's shell over SSH. Undefined when it worked, else the
 * reason in one line and its kind: `connect` when SSH could not reach the host at all, `exit` when
 * the command failed (deis-controller not running, etcd out of its reach), `raised` when the snippet
 * raised in a shell that ran. Never throws (but for an abort): a failed republish is reported, not
 * thrown, so the restore keeps its report.
 */
async function republish(
  command: string,
  ssh: SshTarget,
  snippet: string,
  opts: { signal: AbortSignal },
): Promise<{ reason: string; kind: 'connect' | 'exit' | 'raised' } | undefined> {
  let running: Awaited<ReturnType<typeof runCommand>>;
  try {
    running = await runCommand(command, { ssh }, opts);
  } catch (err) {
    opts.signal.throwIfAborted();
    // runRemote's message names the host and the fix (known_hosts, key, port).
    return { reason: describeError(err), kind: 'connect' };
  }
  running.stdin.end(snippet);
  running.stdout.resume();
  // A lost SSH connection is a failed republish like any other.
  const { code, stderr } = await running.finished.catch((err: unknown) => ({
    code: null,
    stderr: describeError(err),
  }));
  if (code !== 0) return { reason: errorLine(stderr), kind: 'exit' };
  // Django's shell exits 0 after a statement raised: the Traceback on stderr is the only sign.
  const raised = snippetRaised(stderr);
  return raised === undefined ? undefined : { reason: raised, kind: 'raised' };
}
