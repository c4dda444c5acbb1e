// The commands that move platform state: daemon, backup and restore.
import { runBackup } from '../backup.js';
import type { Config } from '../config.js';
import { BUCKET_NAME } from '../config-schema.js';
import { BackupError, isAbort } from '../errors.js';
import { formatOutcome, formatRestore, formatRetention, formatSources } from '../format.js';
import { applyRetention, failedRunRecord, failedWithoutResult, recordFailedBackup } from '../jobs.js';
import { shellQuote } from '../command.js';
import { createReporter } from '../restore/report.js';
import {
  coversAll,
  createSources,
  DEFAULT_STEPS,
  parseOnly,
  parseRestoreOnly,
  plannedSourceIds,
  requireBackupSources,
  withRestoreDeps,
} from '../wiring.js';
import { commandContext, EXIT, exitFor, type Io } from './common.js';
export async function daemonCommand(config: Config, io: Io, signal: AbortSignal): Promise<number> {
  // Loaded here so the other commands start without pino, fastify, prom-client and node-cron.
  const { createLogger } = await import('../log.js');
  const log = createLogger({ level: config.log.level }, io.log);
  const { startDaemon } = await import('../daemon.js');
  const daemon = await startDaemon(config, { log, shutdown: signal }).catch((err: unknown) => {
    const code = (err as { code?: string }).code;
    const where = `http: cannot listen on ${config.http.host}:${config.http.port} (${code ?? ''})`;
    if (code === 'EADDRINUSE' || code === 'EACCES')
      throw new BackupError('ERR_CONFIG', `${where}; free the port or change http.port`);
    if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND' || code === 'EAI_AGAIN')
      throw new BackupError(
        'ERR_CONFIG',
        `${where}; set http.host to an address of this machine, or 0.0.0.0 for all`,
      );
    throw err;
  });
  io.err(`deis-backup daemon listening on ${daemon.url}`);
  await new Promise<void>((resolve) => {
    if (signal.aborted) resolve();
    else
      signal.addEventListener(
        'abort',
        () => {
          resolve();
        },
        { once: true },
      );
  });
  log.info('shutting down');
  await daemon.stop();
  return EXIT.success;
}

export async function backupCommand(
  config: Config,
  values: { json: boolean; only?: string | undefined; verbose: boolean },
  io: Io,
  signal: AbortSignal,
): Promise<number> {
  const only = parseOnly(values.only);
  requireBackupSources(config, only, ', or name the sources with --only');
  const { log, repository, etcd, locked } = await commandContext(config, values.verbose, io);
  return locked('backup', signal, async (signal, lockedAt) => {
    const run = await createSources(config, etcd, only, { signal });
    let result;
    try {
      result = await runBackup({ repository, log }, run.sources, { signal });
    } catch (err) {
      // The target unreadable, the manifest not written: failed too, with no result to show it.
      if (!signal.aborted && !isAbort(err))
        await recordFailedBackup(
          repository,
          failedWithoutResult(err, coversAll(config, only), plannedSourceIds(config, only)),
          log,
        );
      throw err;
    } finally {
      run.close();
    }
    // A failed run leaves no manifest: the record keeps it for a restarted daemon's metrics.
    if (result.status === 'failed')
      await recordFailedBackup(repository, failedRunRecord(result, coversAll(config, only)), log);
    const retention = result.id
      ? await applyRetention(config, repository, {
          now: new Date(),
          lockedAt,
          committed: result.id,
          signal,
          log,
        })
      : undefined;
    if (values.json) io.out(JSON.stringify({ ...result, retention }, null, 2));
    else {
      for (const line of formatSources(result.sources)) io.err(line);
      io.err(formatOutcome(result, repository.target.name));
      for (const line of retention ? formatRetention(retention) : []) io.err(line);
      if (result.id) io.out(result.id);
    }
    return exitFor(result.status);
  });
}

export async function restoreCommand(
  config: Config,
  snapshot: string,
  values: {
    config?: string | undefined;
    json: boolean;
    only?: string | undefined;
    bucket?: string[] | undefined;
    'volume-to'?: string | undefined;
    'dry-run': boolean;
    overwrite: boolean;
    yes: boolean;
    verbose: boolean;
  },
  io: Io,
  signal: AbortSignal,
): Promise<number> {
  const only = parseRestoreOnly(values.only);
  const steps = only ?? DEFAULT_STEPS;
  const bucketMap = parseBucketMap(values.bucket ?? []);
  const volumeTo = values['volume-to'];
  if (volumeTo !== undefined && !volumeTo.startsWith('/')) {
    throw new BackupError('ERR_USAGE', `--volume-to ${volumeTo}: must be an absolute path`);
  }
  // Settings for a step the run does not take would be ignored: refused instead.
  if (bucketMap.size > 0 && !steps.includes('buckets'))
    throw new BackupError('ERR_USAGE', '--bucket: the restore has no buckets step; add buckets to --only');
  if (volumeTo !== undefined && !steps.includes('volume'))
    throw new BackupError('ERR_USAGE', '--volume-to: the restore has no volume step; add volume to --only');
  const { log, repository, etcd, locked } = await commandContext(config, values.verbose, io);
  // The finishing step's own command names the config file this run was given, if any.
  const file = values.config;
  const cli =
    file === undefined
      ? 'deis-backup'
      : `deis-backup --config ${/^[\w./@%+=:,-]+$/.test(file) ? file : shellQuote(file)}`;
  const restore = (signal: AbortSignal): Promise<number> =>
    withRestoreDeps(
      {
        config,
        repository,
        etcd,
        reporter: createReporter(io.progress ?? { write: () => undefined }),
        log,
        finishCommand: (id) => `run ${cli} restore ${id} --only finish`,
      },
      signal,
      async (deps) => {
        // Loaded only by a restore: the archive reader (tar-stream) need not load on every start.
        const { restoreSnapshot } = await import('../restore.js');
        const report = await restoreSnapshot(
          deps,
          {
            snapshot,
            only,
            bucketMap,
            volumeTo,
            dryRun: values['dry-run'],
            overwrite: values.overwrite,
            yes: values.yes,
          },
          { signal },
        );
        if (values.json) io.out(JSON.stringify(report, null, 2));
        else for (const line of formatRestore(report)) io.out(line);
        return exitFor(report.status);
      },
    );
  // A dry run only reads; a real restore must not race a forget or prune of what it reads.
  if (values['dry-run']) return restore(signal);
  return locked('restore', signal, restore);
}

/** Parses repeated `--bucket SRC=DEST`. */
export function parseBucketMap(values: readonly string[]): Map<string, string> {
  const map = new Map<string, string>();
  for (const value of values) {
    const [source, destination, ...rest] = value.split('=');
    if (source === undefined || destination === undefined || rest.length > 0) {
      throw new BackupError(
        'ERR_USAGE',
        `--bucket ${value}: write it as SOURCE=DESTINATION, e.g. --bucket db_wal=db_wal_restored`,
      );
    }
    for (const name of [source, destination]) {
      if (!BUCKET_NAME.test(name)) {
        throw new BackupError(
          'ERR_USAGE',
          `--bucket ${value}: ${name === '' ? 'a bucket name is empty' : `"${name}" is not a bucket name`} (lower-case letters, digits, ".", "_" and "-", starting with a letter or digit, 2 to 63 characters)`,
        );
      }
    }
    if (map.has(source))
      throw new BackupError('ERR_USAGE', `--bucket ${source}=…: given twice; map each bucket once`);
    map.set(source, destination);
  }
  return map;
}
