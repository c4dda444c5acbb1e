// The commands that look after the restore points: forget, prune, verify and drill.
import type { Config } from '../config.js';
import { drillSummary, formatDrill, formatForget, formatPrune, formatVerify } from '../format.js';
import { recordCheck } from '../jobs.js';
import { forget } from '../repository/forget.js';
import { prune, pruneFailure, type PruneReport } from '../repository/prune.js';
import { policyFromConfig } from '../repository/retention.js';
import { verifySnapshots } from '../repository/verify.js';
import { createReporter } from '../restore/report.js';
import { withRestoreDeps } from '../wiring.js';
import { commandContext, EXIT, exitFor, type Io } from './common.js';
export async function forgetCommand(
  config: Config,
  values: { json: boolean; 'dry-run': boolean; prune: boolean; verbose: boolean },
  io: Io,
  signal: AbortSignal,
): Promise<number> {
  const { log, repository, locked } = await commandContext(config, values.verbose, io);
  const dryRun = values['dry-run'];
  return locked('forget', signal, async (signal, lockedAt) => {
    const decided = await forget(repository, policyFromConfig(config.retention), {
      now: new Date(),
      timezone: config.schedule.timezone,
      dryRun,
      signal,
      log,
    });
    // A dry forget removed nothing: the dry prune after it must count the points it would drop as gone.
    // Dry: counted as gone, as the real forget would leave them. Real: gone already, though a store
    // whose listings lag may still list their keys, which prune would otherwise refuse as unread.
    const forgotten = new Set(decided.drop.map((entry) => entry.id));
    const pruned = values.prune
      ? await prune(repository, { dryRun, lockedAt, forgotten, signal, log })
      : undefined;
    if (values.json) io.out(JSON.stringify({ forget: decided, prune: pruned }, null, 2));
    else {
      for (const line of formatForget(decided)) io.out(line);
      if (pruned) io.out(formatPrune(pruned));
    }
    return pruned ? pruneExit(pruned, io) : EXIT.success;
  });
}

export async function pruneCommand(
  config: Config,
  values: { json: boolean; 'dry-run': boolean; verbose: boolean },
  io: Io,
  signal: AbortSignal,
): Promise<number> {
  const { log, repository, locked } = await commandContext(config, values.verbose, io);
  return locked('prune', signal, async (signal, lockedAt) => {
    const report = await prune(repository, { dryRun: values['dry-run'], lockedAt, signal, log });
    io.out(values.json ? JSON.stringify(report, null, 2) : formatPrune(report));
    return pruneExit(report, io);
  });
}

/**
 * A prune that could not remove a key, or list or drop every unfinished upload, has failed, but its
 * report (what it did remove) was printed first: the error follows as its own line.
 */
function pruneExit(report: PruneReport, io: Io): number {
  const failure = pruneFailure(report);
  if (failure === undefined) return EXIT.success;
  io.err(`deis-backup: prune: ${failure}`);
  return EXIT.failed;
}

export async function verifyCommand(
  config: Config,
  snapshot: string | undefined,
  values: { json: boolean; 'read-data': boolean; verbose: boolean },
  io: Io,
  signal: AbortSignal,
): Promise<number> {
  const { log, repository, locked } = await commandContext(config, values.verbose, io);
  return locked('verify', signal, async (signal) => {
    const report = await verifySnapshots(repository, snapshot === undefined ? 'all' : { ids: [snapshot] }, {
      readData: values['read-data'],
      signal,
      log,
    });
    if (values.json) io.out(JSON.stringify(report, null, 2));
    else for (const line of formatVerify(report)) io.out(line);
    return report.status === 'ok' ? EXIT.success : EXIT.failed;
  });
}

export async function drillCommand(
  config: Config,
  snapshot: string | undefined,
  values: { json: boolean; verbose: boolean },
  io: Io,
  signal: AbortSignal,
): Promise<number> {
  const { log, repository, etcd, locked } = await commandContext(config, values.verbose, io);
  return locked('drill', signal, (signal) =>
    withRestoreDeps(
      { config, repository, etcd, reporter: createReporter(io.progress ?? { write: () => undefined }), log },
      signal,
      async (deps) => {
        // Loaded only by the drill: the archive reader (tar-stream) need not load on every start.
        const { runDrill } = await import('../drill.js');
        const report = await runDrill(deps, {
          ...(snapshot === undefined ? {} : { snapshot }),
          bucketSuffix: config.drill.bucketSuffix,
          directory: config.drill.directory,
          signal,
        });
        const summary = drillSummary(report);
        await recordCheck(
          repository,
          'drill',
          { ok: report.status === 'success', at: new Date(), summary },
          { signal },
        );
        if (values.json) io.out(JSON.stringify(report, null, 2));
        else for (const line of formatDrill(report)) io.out(line);
        return exitFor(report.status);
      },
    ),
  );
}
