// One backup run: capture every selected source into a new restore point, then commit its manifest.
// Any failed source means no manifest: the run is failed and never listed as a restore point.
import { hostname } from 'node:os';
import { BackupError, describeError, isAbort } from './errors.js';
import type { Logger } from './log.js';
import type { Manifest, SourceRecord } from './repository/manifest.js';
import { FORMAT_VERSION, emptyCounts } from './repository/manifest.js';
import type { Repository } from './repository/repository.js';
import type { Source } from './sources/source.js';
import { TOOL } from './tool.js';

/** A source that could not even be set up (e.g. etcd lacks its settings): it fails the run. */
export interface UnavailableSource {
  id: string;
  kind: SourceRecord['kind'];
  error: string;
}

/** How a run ended. */
export interface BackupResult {
  status: 'success' | 'partial' | 'failed' | 'aborted';
  /** Set when a restore point was committed. */
  id?: string;
  startedAt: string;
  finishedAt: string;
  sources: SourceRecord[];
}

/**
 * Runs every source, then commits the manifest if none failed. Never throws for a source failure;
 * throws when the target cannot be read or written, or when `signal` is aborted with a BackupError
 * (a lost cluster lock). Returns status 'aborted' for any other abort (shutdown, timeout).
 */
export async function runBackup(
  deps: { repository: Repository; log: Logger; now?: () => Date },
  sources: readonly (Source | UnavailableSource)[],
  opts: { signal: AbortSignal },
): Promise<BackupResult> {
  const now = deps.now ?? (() => new Date());
  const started = now();
  const log = deps.log;
  // The newest restore point is both the target's health check and the base for incremental buckets;
  // a folder without a manifest is an interrupted run whose stored bodies this run may reuse.
  const { snapshots, uncommitted } = await deps.repository.scan(opts);
  const previous = snapshots.at(-1);
  const resume = await deps.repository.resumable(uncommitted, opts);
  const writer = deps.repository.begin(started);
  const runLog = log.child({ snapshot: writer.id });
  await writer.start(
    { startedAt: started.toISOString(), tool: TOOL, host: hostname(), pid: process.pid },
    opts,
  );
  runLog.info(
    { sources: sources.map((s) => s.id), previous: previous?.id, interrupted: uncommitted, resume },
    'backup started',
  );
  // Buckets run side by side (they share the gateway's transfer slots), then the other sources in
  // order. Records keep the order of `sources`.
  const records: SourceRecord[] = [];
  const buckets = sources.filter((s) => s.kind === 'bucket');
  const rest = sources.filter((s) => s.kind !== 'bucket');
  const capture = async (source: Source | UnavailableSource): Promise<SourceRecord | 'aborted'> => {
    if (!('backup' in source)) {
      runLog.error({ source: source.id, error: source.error }, 'source failed');
      return failedRecord(source.id, source.kind, source.error);
    }
    const sourceLog = runLog.child({ source: source.id });
    try {
      return await source.backup({
        writer,
        repository: deps.repository,
        // The newest restore point that holds this source: one taken with --only may not.
        previous: snapshots.findLast((m) => m.sources.some((r) => r.id === source.id)),
        resume,
        signal: opts.signal,
        log: sourceLog,
      });
    } catch (err) {
      if (opts.signal.aborted || isAbort(err)) {
        runLog.warn({ source: source.id }, 'backup aborted');
        return 'aborted';
      }
      const message = describeError(err);
      sourceLog.error({ error: message }, 'source failed');
      return failedRecord(source.id, source.kind, message);
    }
  };
  const aborted = (): BackupResult => {
    // A signal aborted with an error of ours (the cluster lock was lost) fails the run, with that
    // error as its reason, as a verify or a restore fails; only a shutdown or a timeout aborts it.
    const reason: unknown = opts.signal.reason;
    if (reason instanceof BackupError && !isAbort(reason)) throw reason;
    return {
      status: 'aborted',
      startedAt: started.toISOString(),
      finishedAt: now().toISOString(),
      sources: records,
    };
  };
  opts.signal.throwIfAborted();
  for (const outcome of await Promise.all(buckets.map(capture))) {
    if (outcome !== 'aborted') records.push(outcome);
  }
  if (records.length < buckets.length) return aborted();
  for (const source of rest) {
    opts.signal.throwIfAborted();
    const outcome = await capture(source);
    if (outcome === 'aborted') return aborted();
    records.push(outcome);
  }
  records.sort((a, b) => sources.findIndex((s) => s.id === a.id) - sources.findIndex((s) => s.id === b.id));
  const finishedAt = now().toISOString();
  if (records.some((r) => r.status === 'failed')) {
    runLog.error('backup failed: no restore point written');
    return { status: 'failed', startedAt: started.toISOString(), finishedAt, sources: records };
  }
  const manifest: Manifest = {
    formatVersion: FORMAT_VERSION,
    id: writer.id,
    tool: TOOL,
    startedAt: started.toISOString(),
    finishedAt,
    status: records.some((r) => r.status === 'partial') ? 'partial' : 'success',
    sources: records,
  };
  opts.signal.throwIfAborted();
  await writer.commit(manifest, opts);
  runLog.info({ status: manifest.status }, 'restore point committed');
  return {
    status: manifest.status,
    id: writer.id,
    startedAt: manifest.startedAt,
    finishedAt,
    sources: records,
  };
}

function failedRecord(id: string, kind: SourceRecord['kind'], error: string): SourceRecord {
  return {
    id,
    kind,
    status: 'failed',
    origin: '',
    counts: emptyCounts(),
    warnings: [],
    errors: [error],
    artifacts: [],
  };
}
