// restoreSnapshot: the Deis-ordered restore of one restore point. Preflight checks everything and
// writes nothing; then buckets (db_wal before registry, sentinels last), the volume, the database
// when asked, and the finishing steps. A dry run stops after the plan.
import { setMaxListeners } from 'node:events';
import type { Config } from './config.js';
import type { Etcd } from './etcd.js';
import { BackupError, describeError } from './errors.js';
import type { Logger } from './log.js';
import type { IndexEntry, Manifest, SourceRecord } from './repository/manifest.js';
import type { Repository } from './repository/repository.js';
import { applyBucket, isSentinel, planBucket, type BucketPlan } from './restore/buckets.js';
import { loadDump } from './restore/database.js';
import { appNames, needsRepublish, parseVersion, republishSnippet, scaleAdvice } from './restore/finish.js';
import { emptyStepCounts, type Reporter, type StepCounts, type StepName } from './restore/report.js';
import { applyVolume, inspectArchive, planVolume, type VolumePlan } from './restore/volume.js';
import { runCommand, whereText } from './command.js';
import type { S3Client } from './s3/client.js';
import { gatewayError } from './sources/bucket.js';
import { errorLine } from './sources/source.js';
import type { SshTarget } from './ssh.js';

/** What to restore and how. */
export interface RestoreRequest {
  /** A restore point id, or "latest". */
  snapshot: string;
  /** Steps to run; the database only when named. */
  only: readonly ('buckets' | 'volume' | 'database')[];
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
}

interface Prepared {
  manifest: Manifest;
  buckets: { record: SourceRecord; plan: BucketPlan }[];
  volume?: { record: SourceRecord; plan: VolumePlan };
  database?: { record: SourceRecord; where: { command: string; ssh?: SshTarget | undefined } };
  hazards: string[];
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
    const next = await finishAdvice(deps, prepared, request, opts, true);
    return {
      snapshot: prepared.manifest.id,
      dryRun: true,
      status: 'success',
      steps,
      hazards: prepared.hazards,
      next,
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
  const finishNext = stopped ? [] : await finishAdvice(deps, prepared, request, opts, false);
  // A failed re-save leaves etcd without keys, apps or domains: the restore is not complete.
  const finishFailed = finishNext.some((line) => line.startsWith(RESAVE_FAILED));
  const status = results.some((r) => r.status === 'failed' || r.status === 'skipped')
    ? 'failed'
    : finishFailed || results.some((r) => r.status === 'partial')
      ? 'partial'
      : 'success';
  return {
    snapshot: prepared.manifest.id,
    dryRun: false,
    status,
    steps: results,
    hazards: prepared.hazards,
    next: finishNext,
  };
}

async function preflight(
  deps: RestoreDeps,
  request: RestoreRequest,
  opts: { signal: AbortSignal },
): Promise<Prepared> {
  const { repository, config } = deps;
  const manifest = await repository.readManifest(request.snapshot, opts);
  const hazards: string[] = [];
  if (manifest.status === 'partial') {
    const missing = manifest.sources.reduce((n, s) => n + s.counts.failed, 0);
    hazards.push(
      `restore point ${manifest.id} is partial: ${missing} item(s) were not captured at backup time`,
    );
  }
  const wanted = new Set(request.only);
  const bucketRecords = manifest.sources.filter((s) => s.kind === 'bucket' && wanted.has('buckets'));
  for (const name of request.bucketMap.keys()) {
    if (!manifest.sources.some((s) => s.bucket === name)) {
      throw new BackupError(
        'ERR_USAGE',
        `--bucket ${name}=…: restore point ${manifest.id} has no bucket ${name}; its buckets: ${manifest.sources.flatMap((s) => (s.bucket ? [s.bucket] : [])).join(', ')}`,
      );
    }
  }
  const missingStep = (kind: string) =>
    new BackupError(
      'ERR_NOT_FOUND',
      `restore point ${manifest.id} holds no ${kind}; choose the steps it has with --only`,
    );
  if (wanted.has('volume') && !manifest.sources.some((s) => s.kind === 'volume')) throw missingStep('volume');
  if (wanted.has('database') && !manifest.sources.some((s) => s.kind === 'database'))
    throw missingStep('database');

  // Every body the buckets need is present in the target with its size, before anything is written.
  const entriesByBucket = new Map<SourceRecord, IndexEntry[]>();
  if (bucketRecords.length > 0) {
    const stored = new Map<string, number>();
    for await (const info of repository.target.list('blobs/', opts)) stored.set(info.key, info.size);
    for (const record of bucketRecords) {
      const artifact = record.artifacts[0];
      if (!artifact)
        throw new BackupError(
          'ERR_INTEGRITY',
          `restore point ${manifest.id}: bucket ${record.bucket ?? '?'} has no index`,
        );
      const entries: IndexEntry[] = [];
      try {
        for await (const entry of repository.readIndex(artifact, opts)) entries.push(entry);
      } catch (err) {
        if (err instanceof BackupError && err.code === 'ERR_NOT_FOUND')
          throw incomplete(manifest.id, [artifact.key], repository.target.name);
        throw err;
      }
      const missing = entries
        .filter((e) => stored.get(e.blob) !== e.size)
        .map((e) => `${record.bucket ?? ''}/${e.key} (${e.blob})`);
      if (missing.length > 0) throw incomplete(manifest.id, missing, repository.target.name);
      entriesByBucket.set(record, entries);
    }
  }

  const prepared: Prepared = { manifest, buckets: [], hazards };
  if (wanted.has('volume')) {
    const record = manifest.sources.find((s) => s.kind === 'volume');
    const artifact = record?.artifacts[0];
    if (record && artifact) {
      const entries = await inspectArchive(repository, artifact, opts).catch(
        rethrowMissing(manifest.id, artifact.key, repository),
      );
      const host = config.sources.volume.host;
      const dest = {
        path: request.volumeTo ?? config.sources.volume.path,
        ssh: host === undefined || host === 'local' ? undefined : deps.sshTarget(host),
      };
      const plan = await planVolume(entries, artifact, dest, {
        signal: opts.signal,
        overwrite: request.overwrite,
      });
      if (plan.counts.conflict > 0) {
        hazards.push(
          `${plan.counts.conflict} volume entr(ies) in ${dest.path} differ from the restore point and stay as they are (${plan.conflicts.slice(0, 5).join(', ')}); pass --overwrite to replace them`,
        );
      }
      prepared.volume = { record, plan };
    }
  }
  if (wanted.has('database')) {
    const record = manifest.sources.find((s) => s.kind === 'database');
    const artifact = record?.artifacts[0];
    if (record && artifact) {
      await repository
        .verifyArtifact(artifact, opts)
        .catch(rethrowMissing(manifest.id, artifact.key, repository));
      const host = config.sources.database.host ?? (await deps.etcd.get('/deis/database/host', opts));
      if (host === undefined) {
        throw new BackupError(
          'ERR_CONFIG',
          'database: no host to load the dump on: set sources.database.host (or "local"), or start deis-database so /deis/database/host is in etcd',
        );
      }
      prepared.database = {
        record,
        where: {
          command: config.restore.databaseCommand,
          ssh: host === 'local' ? undefined : deps.sshTarget(host),
        },
      };
    }
  }
  if (bucketRecords.length > 0) {
    await checkDatabaseAsleep(deps, request, bucketRecords, entriesByBucket, hazards, opts);
    const gateway = await deps.gateway();
    // WAL-E's bucket goes first: the registry can wait, the database cannot.
    const ordered = [...bucketRecords].sort(
      (a, b) => Number(hasSentinels(entriesByBucket.get(b))) - Number(hasSentinels(entriesByBucket.get(a))),
    );
    for (const record of ordered) {
      const source = record.bucket ?? '';
      const destination = request.bucketMap.get(source) ?? source;
      let plan: BucketPlan;
      try {
        plan = await planBucket(
          gateway.client,
          {
            source,
            destination,
            entries: entriesByBucket.get(record) ?? [],
            overwrite: request.overwrite,
            listVersion: gateway.listVersion,
          },
          opts,
        );
      } catch (err) {
        throw gatewayError(err, destination, gateway.endpoint);
      }
      hazards.push(...plan.hazards);
      prepared.buckets.push({ record, plan });
    }
  }
  return prepared;
}

/**
 * A database that boots while its db_wal is half restored initialises empty, and its first base
 * backup becomes LATEST for good (deis/deis#4421). So restoring WAL-E data into the database's own
 * bucket is refused while /deis/database/host says the database runs, unless --yes.
 */
async function checkDatabaseAsleep(
  deps: RestoreDeps,
  request: RestoreRequest,
  records: readonly SourceRecord[],
  entriesByBucket: ReadonlyMap<SourceRecord, IndexEntry[]>,
  hazards: string[],
  opts: { signal: AbortSignal },
): Promise<void> {
  const lookup = async (key: string): Promise<string | undefined> => {
    try {
      return await deps.etcd.get(key, opts);
    } catch (err) {
      if (request.yes || request.dryRun) {
        hazards.push(`could not check whether deis-database runs (${describeError(err)})`);
        return undefined;
      }
      throw new BackupError(
        'ERR_ETCD',
        `cannot tell whether deis-database is running (${describeError(err)}); if it is stopped, pass --yes`,
      );
    }
  };
  const walDestinations = records
    .filter((r) => hasSentinels(entriesByBucket.get(r)))
    .map((r) => request.bucketMap.get(r.bucket ?? '') ?? r.bucket ?? '');
  if (walDestinations.length === 0) return;
  const databaseBucket = (await lookup('/deis/database/bucketName')) ?? 'db_wal';
  if (!walDestinations.includes(databaseBucket)) return;
  const alive = await lookup('/deis/database/host');
  if (alive === undefined) return;
  if (!request.yes && !request.dryRun) {
    throw new BackupError(
      'ERR_USAGE',
      `deis-database looks alive (/deis/database/host = ${alive} in etcd): a database that starts while ${databaseBucket} is half restored initialises empty and pushes a backup that wins; stop it (deisctl stop database) or pass --yes`,
    );
  }
  hazards.push(
    `deis-database looks alive (/deis/database/host = ${alive} in etcd); stop it before restoring ${databaseBucket}`,
  );
}

function hasSentinels(entries: readonly IndexEntry[] | undefined): boolean {
  return (entries ?? []).some((e) => isSentinel(e.key));
}

function incomplete(id: string, missing: readonly string[], where: string): BackupError {
  return new BackupError(
    'ERR_INTEGRITY',
    `restore point ${id} is incomplete: ${missing.length} item(s) missing or of the wrong size in ${where} (first: ${missing.slice(0, 3).join(', ')}); nothing was restored; choose another restore point`,
  );
}

function rethrowMissing(id: string, key: string, repository: Repository): (err: unknown) => never {
  return (err) => {
    if (err instanceof BackupError && err.code === 'ERR_NOT_FOUND')
      throw incomplete(id, [key], repository.target.name);
    throw err;
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
    steps.push({
      step: 'volume',
      status: 'planned',
      detail: dest.ssh ? `${dest.ssh.host}:${dest.path}` : dest.path,
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
      detail: `${prepared.database.where.command} ${whereText(prepared.database.where.ssh)}`,
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
      const gateway = await deps.gateway();
      const counts = emptyStepCounts();
      const errors: string[] = [];
      const buckets: NonNullable<StepReport['buckets']> = [];
      const progress = {
        objects: 0,
        bytes: 0,
        totalObjects: step.counts.objects,
        totalBytes: step.counts.transferBytes,
      };
      for (const { plan } of prepared.buckets) {
        const outcome = await applyBucket(gateway.client, deps.repository.target, plan, {
          signal: opts.signal,
          concurrency: deps.config.sources.buckets.concurrency,
          listVersion: gateway.listVersion,
          reporter: deps.reporter,
          progress,
        });
        addCounts(counts, outcome.counts);
        errors.push(...outcome.errors);
        buckets.push({
          source: plan.source,
          destination: plan.destination,
          createBucket: plan.createBucket,
          counts: outcome.counts,
        });
        if (plan.latestSentinel !== undefined && outcome.latestSentinel !== plan.latestSentinel) {
          errors.push(
            `${plan.destination}: WAL-E's LATEST is now ${outcome.latestSentinel ?? 'nothing'}, not ${plan.latestSentinel} as at backup time; remove the newer base backup or restore into a fresh bucket before the database starts`,
          );
          counts.failed++;
        }
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
      });
      return { ...step, status: 'success' };
    }
    case 'database': {
      const database = prepared.database;
      const artifact = database?.record.artifacts[0];
      if (!database || !artifact) return { ...step, status: 'skipped' };
      await loadDump(deps.repository, artifact, database.where, opts);
      return { ...step, status: 'success' };
    }
    case 'finish':
      return { ...step, status: 'success' };
  }
}

/**
 * The finishing step: republish controller state for Deis before 1.11 (run now when the controller
 * is up and this is not a dry run, else explained), and the scale-down-and-up advice.
 */
const RESAVE_FAILED = 're-saving in deis-controller';

async function finishAdvice(
  deps: RestoreDeps,
  prepared: Prepared,
  request: RestoreRequest,
  opts: { signal: AbortSignal },
  planOnly: boolean,
): Promise<string[]> {
  if (!request.only.includes('buckets') && !request.only.includes('database')) return [];
  const next: string[] = [];
  const { config, etcd } = deps;
  const versionText =
    config.restore.deisVersion ?? (await etcd.get('/deis/platform/version', opts).catch(() => undefined));
  const version = versionText === undefined ? undefined : parseVersion(versionText);
  if (!version) {
    next.push(
      'Deis version unknown (/deis/platform/version is not in etcd): for Deis before 1.11, re-save keys, apps and domains in deis-controller (set restore.deisVersion to have it done)',
    );
  } else if (!needsRepublish(version)) {
    next.push(
      `Deis ${versionText ?? ''} republishes keys, apps and domains to etcd when the controller starts: nothing to run`,
    );
  } else {
    const host =
      config.restore.controllerHost ?? (await etcd.get('/deis/controller/host', opts).catch(() => undefined));
    const command = config.restore.controllerCommand.replaceAll(
      '{etcd}',
      `${host ?? '$COREOS_PRIVATE_IPV4'}:4001`,
    );
    if (host === undefined || planOnly) {
      next.push(
        `Deis ${versionText ?? ''} does not republish to etcd by itself: once deis-controller runs, feed this to \`${command}\`${host ? ` on ${host}` : ''}: ${republishSnippet(version).trim().replaceAll('\n', '; ')}`,
      );
    } else {
      deps.reporter.started('finish', `republish on ${host}`);
      const running = await runCommand(command, { ssh: deps.sshTarget(host) }, opts);
      running.stdin.end(republishSnippet(version));
      running.stdout.resume();
      // A lost SSH connection is a failed re-save like any other: reported, not thrown.
      const { code, stderr } = await running.finished.catch((err: unknown) => ({
        code: null,
        stderr: describeError(err),
      }));
      const ok = code === 0;
      deps.reporter.finished(
        'finish',
        ok ? 'success' : 'failed',
        ok ? 'controller re-saved keys, apps and domains' : errorLine(stderr),
      );
      next.push(
        ok
          ? `re-saved keys, apps and domains in deis-controller on ${host}`
          : `${RESAVE_FAILED} on ${host} failed (${errorLine(stderr)}): run it again once the controller is up`,
      );
    }
  }
  const registry = prepared.buckets.find(({ plan }) =>
    plan.items.some((i) => i.entry.key.startsWith('registry/repositories/')),
  );
  next.push(scaleAdvice(appNames((registry?.plan.items ?? []).map((i) => i.entry.key))));
  return next;
}
