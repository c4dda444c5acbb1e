// runDrill: the scheduled proof that a restore point restores. Its buckets and volume are restored
// into scratch buckets (`<bucket><suffix>`) and a scratch directory, compared with the restore point,
// the dump's completion line is checked, and the scratch is always removed again.
import { readdir, rm } from 'node:fs/promises';
import { dirname, isAbsolute, join } from 'node:path';
import type { Config } from './config.js';
import { compareBucket, emptyBucket, removeBucket, type GatewayAccess } from './drill/buckets.js';
import { checkDump } from './drill/database.js';
import { ProblemList } from './drill/pool.js';
import { compareVolume } from './drill/volume.js';
import type { Etcd } from './etcd.js';
import { withDeadline } from './deadline.js';
import { BackupError, describeError } from './errors.js';
import type { Logger } from './log.js';
import { isSnapshotId } from './repository/layout.js';
import type { ArtifactRecord, Manifest } from './repository/manifest.js';
import { restoreSnapshot, type RestoreDeps, type RestoreReport } from './restore.js';

/** One part of a restore point that a drill checks. */
export type DrillStep = 'buckets' | 'volume' | 'database';

/** How one part fared: restored and identical, not (errors name each thing), or not in the restore point. */
export interface DrillCheck {
  step: DrillStep;
  status: 'success' | 'failed' | 'skipped';
  detail: string;
  /** One line per problem, naming the bucket/key, path or artifact; at most 50 and a count of the rest. */
  errors: string[];
}

/** The outcome of one drill. */
export interface DrillReport {
  /** The restore point drilled (its id, also when "latest" was asked for). */
  snapshot: string;
  /** "success" only when no check failed and the scratch was removed. */
  status: 'success' | 'failed';
  startedAt: string;
  finishedAt: string;
  /** Always buckets, volume and database, in that order. */
  checks: DrillCheck[];
  /** Scratch buckets, objects or directories that could not be removed; empty when clean. */
  cleanup: string[];
}

/** Where the drill restores to. */
interface Scratch {
  /** Restore point bucket → scratch bucket. */
  buckets: ReadonlyMap<string, string>;
  directory: string;
}

/** Removing the scratch gets its own deadline: it must also run after the drill's signal fired. */
const CLEANUP_TIMEOUT_MS = 10 * 60_000;
/**
 * How long removing the scratch goes on once the drill's signal fired. A daemon's shutdown waits
 * 30 s for the drill to end and release the cluster lock; the next drill empties what is left.
 */
const CLEANUP_AFTER_ABORT_MS = 20_000;
const CONTROLLER_HOST = '/deis/controller/host';

/**
 * Drills one restore point (default: the latest). Leftover scratch from a crashed drill is emptied
 * first. The database is never loaded: its dump is read through its sha256 check and must end with
 * pg_dumpall's completion line. Writes only to the scratch buckets and directory, and removes them
 * whatever happens (also on abort). Throws when the restore point cannot be read or a scratch name
 * is one of its buckets, and on abort; every other problem is in the report.
 */
export async function runDrill(
  deps: RestoreDeps,
  opts: {
    snapshot?: string;
    bucketSuffix: string;
    directory: string;
    signal: AbortSignal;
    /** How long the cleanup goes on after an abort (default CLEANUP_AFTER_ABORT_MS). */
    cleanupAfterAbortMs?: number;
  },
): Promise<DrillReport> {
  const startedAt = new Date().toISOString();
  if (!isAbsolute(opts.directory)) {
    throw new BackupError('ERR_CONFIG', `drill.directory ${opts.directory}: must be an absolute path`);
  }
  const manifest = await deps.repository.readManifest(opts.snapshot ?? 'latest', opts);
  const scratch = scratchFor(manifest, opts);
  const log = deps.log.child({ drill: manifest.id });
  log.info({ buckets: [...scratch.buckets.values()], directory: scratch.directory }, 'drill started');
  const drillDeps = isolated(deps);
  const held: { gateway?: GatewayAccess } = {};
  const checks: DrillCheck[] = [];
  let cleanup: string[] = [];
  try {
    checks.push(...(await restoreAndCompare(drillDeps, manifest, scratch, held, log, opts)));
    checks.push(await dumpCheck(deps, manifest, opts));
  } finally {
    const afterAbortMs = opts.cleanupAfterAbortMs ?? CLEANUP_AFTER_ABORT_MS;
    cleanup = await removeScratch(held.gateway, scratch, { abort: opts.signal, afterAbortMs });
    if (opts.signal.aborted && cleanup.length > 0) {
      log.warn({ left: cleanup }, 'drill aborted before its scratch was removed; the next drill empties it');
    }
  }
  const failed = cleanup.length > 0 || checks.some((c) => c.status === 'failed');
  const report: DrillReport = {
    snapshot: manifest.id,
    status: failed ? 'failed' : 'success',
    startedAt,
    finishedAt: new Date().toISOString(),
    checks,
    cleanup,
  };
  log.info({ status: report.status, cleanup: cleanup.length }, 'drill finished');
  return report;
}

/**
 * Removes every scratch directory under `directory`: those a killed drill of any restore point
 * left. Only entries named as restore point ids are touched, so a drill.directory pointed at the
 * wrong place loses nothing else.
 */
async function removeLeftovers(directory: string, log: Logger): Promise<void> {
  let names: string[];
  try {
    names = await readdir(directory);
  } catch {
    return; // None yet: the restore creates it.
  }
  for (const name of names.filter(isSnapshotId)) {
    await rm(join(directory, name), { recursive: true, force: true });
    log.warn({ directory: join(directory, name) }, 'leftover scratch directory removed');
  }
}

function scratchFor(manifest: Manifest, opts: { bucketSuffix: string; directory: string }): Scratch {
  const names = manifest.sources.flatMap((s) => (s.kind === 'bucket' && s.bucket ? [s.bucket] : []));
  const buckets = new Map(names.map((name) => [name, `${name}${opts.bucketSuffix}`]));
  for (const name of buckets.values()) {
    // Emptying a scratch bucket must never reach a bucket that holds platform data.
    if (names.includes(name)) {
      throw new BackupError(
        'ERR_CONFIG',
        `drill: scratch bucket ${name} is a bucket of restore point ${manifest.id}; choose another drill.bucketSuffix`,
      );
    }
  }
  return { buckets, directory: join(opts.directory, manifest.id) };
}

/**
 * The restore's dependencies with the live cluster out of reach: the volume is extracted here (the
 * scratch directory is on this machine, never on the volume's host), and no controller is known, so
 * the restore's finishing step only advises instead of republishing state from the live controller.
 */
function isolated(deps: RestoreDeps): RestoreDeps {
  const config: Config = {
    ...deps.config,
    sources: { ...deps.config.sources, volume: { ...deps.config.sources.volume, host: 'local' } },
    restore: { ...deps.config.restore, controllerHost: undefined },
  };
  const etcd: Etcd = {
    ...deps.etcd,
    get: (key, o) => (key === CONTROLLER_HOST ? Promise.resolve(undefined) : deps.etcd.get(key, o)),
  };
  return { ...deps, config, etcd };
}

async function restoreAndCompare(
  deps: RestoreDeps,
  manifest: Manifest,
  scratch: Scratch,
  held: { gateway?: GatewayAccess },
  log: Logger,
  opts: { signal: AbortSignal },
): Promise<DrillCheck[]> {
  const volume = manifest.sources.find((s) => s.kind === 'volume')?.artifacts[0];
  const hasBuckets = scratch.buckets.size > 0;
  const only = [...(hasBuckets ? (['buckets'] as const) : []), ...(volume ? (['volume'] as const) : [])];
  const absent = (step: DrillStep, what: string): DrillCheck => ({
    step,
    status: 'skipped',
    detail: `restore point ${manifest.id} holds no ${what}`,
    errors: [],
  });
  let report: RestoreReport;
  try {
    await removeLeftovers(dirname(scratch.directory), log);
    if (hasBuckets) {
      held.gateway = await deps.gateway();
      for (const bucket of scratch.buckets.values()) {
        const deleted = await emptyBucket(held.gateway, bucket, opts);
        if (deleted > 0) log.warn({ bucket, objects: deleted }, 'leftover scratch bucket emptied');
      }
    }
    // The database-liveness refusal stays armed (yes: false) but cannot fire: it guards only the
    // live WAL bucket (/deis/database/bucketName), never a scratch name. It still asks etcd for that
    // name when the restore point holds WAL-E base backups. Overwrite is moot on emptied scratch.
    report = await restoreSnapshot(
      deps,
      {
        snapshot: manifest.id,
        only,
        bucketMap: scratch.buckets,
        volumeTo: scratch.directory,
        dryRun: false,
        overwrite: false,
        yes: false,
      },
      opts,
    );
  } catch (err) {
    opts.signal.throwIfAborted();
    const failed = (step: DrillStep): DrillCheck => ({
      step,
      status: 'failed',
      detail: 'not restored',
      errors: [describeError(err)],
    });
    return [
      hasBuckets ? failed('buckets') : absent('buckets', 'bucket'),
      volume ? failed('volume') : absent('volume', 'volume archive'),
    ];
  }
  // A drill needs each restore step complete: a partial or failed one is the check's failure.
  const notRestored = (name: DrillStep): DrillCheck | undefined => {
    const step = report.steps.find((s) => s.step === name);
    if (step?.status === 'success') return undefined;
    if (step?.status === 'skipped') return { step: name, status: 'skipped', detail: step.detail, errors: [] };
    return {
      step: name,
      status: 'failed',
      detail: `restore ${step?.status ?? 'did not run'}`,
      errors: step && step.errors.length > 0 ? step.errors : [step?.detail ?? 'not restored'],
    };
  };
  const checks: DrillCheck[] = [];
  if (!hasBuckets || !held.gateway) checks.push(absent('buckets', 'bucket'));
  else
    checks.push(
      notRestored('buckets') ?? (await compareBuckets(deps, manifest, scratch, held.gateway, opts)),
    );
  if (!volume) checks.push(absent('volume', 'volume archive'));
  else checks.push(notRestored('volume') ?? (await volumeCheck(deps, volume, scratch.directory, opts)));
  return checks;
}

async function compareBuckets(
  deps: RestoreDeps,
  manifest: Manifest,
  scratch: Scratch,
  gateway: GatewayAccess,
  opts: { signal: AbortSignal },
): Promise<DrillCheck> {
  const problems = new ProblemList();
  let objects = 0;
  let bytes = 0;
  for (const record of manifest.sources) {
    const artifact = record.artifacts[0];
    const bucket = scratch.buckets.get(record.bucket ?? '');
    if (record.kind !== 'bucket' || !artifact || bucket === undefined) continue;
    try {
      const result = await compareBucket(gateway, bucket, deps.repository.readIndex(artifact, opts), {
        signal: opts.signal,
        problems,
      });
      objects += result.objects;
      bytes += result.bytes;
    } catch (err) {
      opts.signal.throwIfAborted();
      problems.add(`${bucket}: not compared: ${describeError(err)}`);
    }
  }
  const names = [...scratch.buckets.values()].join(', ');
  return verdict('buckets', problems, `${objects} object(s) (${mib(bytes)}) identical in ${names}`);
}

async function volumeCheck(
  deps: RestoreDeps,
  artifact: ArtifactRecord,
  directory: string,
  opts: { signal: AbortSignal },
): Promise<DrillCheck> {
  try {
    const result = await compareVolume(deps.repository, artifact, directory, opts);
    const identical = `${result.entries} entries (${mib(result.bytes)} of files) identical in ${directory}`;
    return verdict('volume', result.problems, identical);
  } catch (err) {
    opts.signal.throwIfAborted();
    return { step: 'volume', status: 'failed', detail: 'not compared', errors: [describeError(err)] };
  }
}

function verdict(step: DrillStep, problems: ProblemList, identical: string): DrillCheck {
  if (problems.count === 0) return { step, status: 'success', detail: identical, errors: [] };
  return { step, status: 'failed', detail: `${problems.count} difference(s)`, errors: problems.lines() };
}

async function dumpCheck(
  deps: RestoreDeps,
  manifest: Manifest,
  opts: { signal: AbortSignal },
): Promise<DrillCheck> {
  const artifact = manifest.sources.find((s) => s.kind === 'database')?.artifacts[0];
  if (!artifact) {
    return {
      step: 'database',
      status: 'skipped',
      detail: `restore point ${manifest.id} holds no database dump`,
      errors: [],
    };
  }
  try {
    const { sqlBytes } = await checkDump(deps.repository, artifact, opts);
    return {
      step: 'database',
      status: 'success',
      detail: `${artifact.key}: ${mib(sqlBytes)} of SQL ending with pg_dumpall's completion line (not loaded)`,
      errors: [],
    };
  } catch (err) {
    opts.signal.throwIfAborted();
    return { step: 'database', status: 'failed', detail: 'dump incomplete', errors: [describeError(err)] };
  }
}

/**
 * Removes the scratch buckets (when the gateway was reached) and directory; returns what stayed.
 * It stops after CLEANUP_TIMEOUT_MS, or `afterAbortMs` after `abort` fired (also when it fired before).
 */
async function removeScratch(
  gateway: GatewayAccess | undefined,
  scratch: Scratch,
  opts: { abort: AbortSignal; afterAbortMs: number },
): Promise<string[]> {
  const grace = deadlineAfter(opts.abort, opts.afterAbortMs);
  const limit = withDeadline(grace.signal, CLEANUP_TIMEOUT_MS);
  const signal = limit.signal;
  const left: string[] = [];
  try {
    if (gateway) {
      for (const bucket of scratch.buckets.values()) {
        try {
          await removeBucket(gateway, bucket, { signal });
        } catch (err) {
          left.push(
            signal.aborted ? `${bucket}: not removed: ${describeError(signal.reason)}` : describeError(err),
          );
        }
      }
    }
    try {
      await rm(scratch.directory, { recursive: true, force: true });
    } catch (err) {
      left.push(`${scratch.directory}: not removed: ${describeError(err)}`);
    }
  } finally {
    limit.dispose();
    grace.dispose();
  }
  return left;
}

/** A signal that fires `ms` after `abort` does; dispose() drops its listener and timer. */
function deadlineAfter(abort: AbortSignal, ms: number): { signal: AbortSignal; dispose: () => void } {
  const deadline = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const start = (): void => {
    const reason = new BackupError(
      'ERR_ABORTED',
      `cleanup stopped ${ms / 1000} s after the drill was aborted`,
    );
    timer = setTimeout(() => {
      deadline.abort(reason);
    }, ms);
  };
  if (abort.aborted) start();
  else abort.addEventListener('abort', start, { once: true });
  return {
    signal: deadline.signal,
    dispose: () => {
      abort.removeEventListener('abort', start);
      clearTimeout(timer);
    },
  };
}

function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}
