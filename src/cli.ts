// CLI entry: backup | snapshots | config check. Exit codes: 0 success, 3 partial, 1 failed, 2 usage
// or config error. Expected errors print one line, never a stack trace or a secret.
import { parseArgs } from 'node:util';
import { runBackup } from './backup.js';
import { resolveBucketNames, resolveDatabaseHost, resolveGateway } from './cluster.js';
import { ConfigError, DEFAULT_CONFIG_PATH, loadConfig, redactedView, type Config } from './config.js';
import { BackupError, describeError } from './errors.js';
import {
  drillSummary,
  formatDrill,
  formatForget,
  formatOutcome,
  formatPrune,
  formatRestore,
  formatRetention,
  formatSnapshots,
  formatSources,
  formatVerify,
  snapshotSummary,
} from './format.js';
import { applyRetention, recordCheck, underLock, type LockDeps } from './jobs.js';
import type { Etcd } from './etcd.js';
import type { Logger } from './log.js';
import { forget } from './repository/forget.js';
import { prune } from './repository/prune.js';
import type { Repository } from './repository/repository.js';
import { policyFromConfig } from './repository/retention.js';
import { verifySnapshots } from './repository/verify.js';
import { createReporter } from './restore/report.js';
import { createLogger } from './log.js';
import type { DestinationStream } from 'pino';
import {
  createClusterEtcd,
  createClusterLock,
  createRepository,
  createRestoreGateway,
  createSources,
  parseOnly,
  sshTarget,
} from './wiring.js';

const USAGE = `usage: deis-backup [--config FILE] [--verbose] <command>

commands:
  daemon                                            run the scheduler and the HTTP API until SIGTERM
  backup [--only buckets,volume,database] [--json]   take one restore point; prints its id
  restore <id|latest> [--only buckets,volume,database] [--bucket SRC=DEST ...]
          [--volume-to DIR] [--dry-run] [--overwrite] [--yes] [--json]
                                                    restore in Deis order (default: buckets, volume)
  snapshots [--json]                                list restore points
  forget [--dry-run] [--prune] [--json]             apply the retention policy (config "retention")
  prune [--dry-run] [--json]                        remove stored data no restore point references
  verify <id|latest|--all> [--read-data] [--json]   check restore points; --read-data re-hashes every byte
  drill [id] [--json]                               restore into scratch buckets and a scratch directory,
                                                    compare, clean up (default: latest)
  config check                                      validate and print the resolved config (secrets redacted)

--config defaults to $DEIS_BACKUP_CONFIG, then ${DEFAULT_CONFIG_PATH}.
backup, restore (not --dry-run), forget, prune, verify and drill hold the cluster lock (config "lock").
exit codes: 0 success, 3 partial, 1 failed or damaged, 2 usage or config error`;

/** Exit codes of every command. */
export const EXIT = { success: 0, failed: 1, usage: 2, partial: 3 } as const;

/** The exit code of a backup or restore outcome: anything not success or partial is a failure. */
function exitFor(status: string): number {
  return status === 'success' ? EXIT.success : status === 'partial' ? EXIT.partial : EXIT.failed;
}

/** Where the CLI writes: stdout for results, stderr for progress and errors. */
export interface Io {
  out: (line: string) => void;
  err: (line: string) => void;
  /** Where the daemon's JSON log lines go (stdout by default). */
  log?: DestinationStream;
  /** Where restore progress goes (stderr); a terminal gets a redrawn line, anything else JSON lines. */
  progress?: { write(text: string): void; isTTY?: boolean };
}

/** Runs the CLI with argv (without node and script) and returns the exit code. */
export async function main(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  io: Io,
  signal: AbortSignal,
): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: {
        config: { type: 'string' },
        verbose: { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
        only: { type: 'string' },
        bucket: { type: 'string', multiple: true },
        'volume-to': { type: 'string' },
        'dry-run': { type: 'boolean', default: false },
        overwrite: { type: 'boolean', default: false },
        yes: { type: 'boolean', default: false },
        prune: { type: 'boolean', default: false },
        all: { type: 'boolean', default: false },
        'read-data': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    // node:util's messages run to several sentences and lines; the first sentence says what is wrong.
    const first = ((err as Error).message.split('\n')[0] ?? '').replace(/\.( .*)?$/, '');
    io.err(`deis-backup: ${first}; see deis-backup --help`);
    return EXIT.usage;
  }
  const { values, positionals } = parsed;
  const [command, sub] = positionals;
  if (values.help || command === undefined || command === 'help') {
    (command === undefined && !values.help ? io.err : io.out)(USAGE);
    return command === undefined && !values.help ? EXIT.usage : EXIT.success;
  }
  // Words the command does not take are refused rather than silently ignored.
  const takes = ['restore', 'verify', 'drill', 'config'].includes(command) ? 2 : 1;
  const extra = positionals[takes] ?? (takes === 1 ? sub : undefined);
  if (extra !== undefined) {
    io.err(`deis-backup: ${command}: unexpected argument "${extra}"; see deis-backup --help`);
    return EXIT.usage;
  }
  const configFile = values.config ?? env['DEIS_BACKUP_CONFIG'] ?? DEFAULT_CONFIG_PATH;
  try {
    switch (command) {
      case 'daemon':
        return await daemonCommand(load(configFile, env), io, signal);
      case 'backup':
        return await backupCommand(load(configFile, env), values, io, signal);
      case 'restore':
        if (sub === undefined)
          throw new BackupError(
            'ERR_USAGE',
            'restore: name a restore point id or "latest"; list them with deis-backup snapshots',
          );
        return await restoreCommand(load(configFile, env), sub, values, io, signal);
      case 'snapshots':
        return await snapshotsCommand(load(configFile, env), values.json, io, signal);
      case 'forget':
        return await forgetCommand(load(configFile, env), values, io, signal);
      case 'prune':
        return await pruneCommand(load(configFile, env), values, io, signal);
      case 'verify':
        if ((sub === undefined) === !values.all)
          throw new BackupError(
            'ERR_USAGE',
            'verify: name one restore point id, "latest", or pass --all; list them with deis-backup snapshots',
          );
        return await verifyCommand(load(configFile, env), sub, values, io, signal);
      case 'drill':
        return await drillCommand(load(configFile, env), sub, values, io, signal);
      case 'config':
        if (sub !== 'check')
          throw new BackupError(
            'ERR_USAGE',
            sub === undefined
              ? 'config: name a subcommand; use deis-backup config check'
              : `config: unknown subcommand "${sub}"; use deis-backup config check`,
          );
        return await configCheckCommand(configFile, env, io, signal);
      default:
        throw new BackupError('ERR_USAGE', `unknown command "${command}"; see deis-backup --help`);
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      io.err(`deis-backup: ${err.message}`);
      return EXIT.usage;
    }
    if (err instanceof BackupError) {
      io.err(`deis-backup: ${err.message}`);
      return err.code === 'ERR_CONFIG' || err.code === 'ERR_USAGE' ? EXIT.usage : EXIT.failed;
    }
    if (signal.aborted) {
      io.err('deis-backup: interrupted');
      return EXIT.failed;
    }
    io.err(`deis-backup: unexpected error: ${describeError(err)}`);
    if (err instanceof Error && err.stack) io.err(err.stack);
    return EXIT.failed;
  }
}

function load(file: string, env: NodeJS.ProcessEnv): Config {
  return loadConfig({ file, env });
}

async function daemonCommand(config: Config, io: Io, signal: AbortSignal): Promise<number> {
  const log = createLogger({ level: config.log.level }, io.log);
  // Loaded here so the other commands start without fastify, prom-client and node-cron.
  const { startDaemon } = await import('./daemon.js');
  const daemon = await startDaemon(config, { log, shutdown: signal }).catch((err: unknown) => {
    const code = (err as { code?: string }).code;
    if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') {
      throw new BackupError(
        'ERR_CONFIG',
        `http: cannot listen on ${config.http.host}:${config.http.port} (${code}); free the port or change http.port`,
      );
    }
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

async function backupCommand(
  config: Config,
  values: { json: boolean; only?: string | undefined; verbose: boolean },
  io: Io,
  signal: AbortSignal,
): Promise<number> {
  const only = parseOnly(values.only);
  const log = createLogger({ level: values.verbose ? config.log.level : 'silent' });
  const repository = await createRepository(config);
  const etcd = createClusterEtcd(config);
  return underLock(lockDeps(config, etcd, repository, io, log), 'backup', { signal }, async (signal) => {
    const run = await createSources(config, etcd, only, { signal });
    let result;
    try {
      result = await runBackup({ repository, log }, run.sources, { signal });
    } finally {
      run.close();
    }
    const retention = result.id
      ? await applyRetention(config, repository, { now: new Date(), signal, log })
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

/** The cluster lock for a CLI command; a wait for another holder is said on stderr. */
function lockDeps(config: Config, etcd: Etcd, repository: Repository, io: Io, log: Logger): LockDeps {
  return {
    lock: createClusterLock(config, etcd, repository.target),
    log,
    waitSeconds: config.lock.waitSeconds,
    onWait: (holder) => {
      io.err(`waiting up to ${config.lock.waitSeconds} s for the cluster lock: ${holder}`);
    },
  };
}

async function forgetCommand(
  config: Config,
  values: { json: boolean; 'dry-run': boolean; prune: boolean; verbose: boolean },
  io: Io,
  signal: AbortSignal,
): Promise<number> {
  const log = createLogger({ level: values.verbose ? config.log.level : 'silent' });
  const repository = await createRepository(config);
  const dryRun = values['dry-run'];
  return underLock(
    lockDeps(config, createClusterEtcd(config), repository, io, log),
    'forget',
    { signal },
    async (signal) => {
      const decided = await forget(repository, policyFromConfig(config.retention), {
        now: new Date(),
        timezone: config.schedule.timezone,
        dryRun,
        signal,
        log,
      });
      const pruned = values.prune ? await prune(repository, { dryRun, signal, log }) : undefined;
      if (values.json) io.out(JSON.stringify({ forget: decided, prune: pruned }, null, 2));
      else {
        for (const line of formatForget(decided)) io.out(line);
        if (pruned) io.out(formatPrune(pruned));
      }
      return EXIT.success;
    },
  );
}

async function pruneCommand(
  config: Config,
  values: { json: boolean; 'dry-run': boolean; verbose: boolean },
  io: Io,
  signal: AbortSignal,
): Promise<number> {
  const log = createLogger({ level: values.verbose ? config.log.level : 'silent' });
  const repository = await createRepository(config);
  return underLock(
    lockDeps(config, createClusterEtcd(config), repository, io, log),
    'prune',
    { signal },
    async (signal) => {
      const report = await prune(repository, { dryRun: values['dry-run'], signal, log });
      io.out(values.json ? JSON.stringify(report, null, 2) : formatPrune(report));
      return EXIT.success;
    },
  );
}

async function verifyCommand(
  config: Config,
  snapshot: string | undefined,
  values: { json: boolean; 'read-data': boolean; verbose: boolean },
  io: Io,
  signal: AbortSignal,
): Promise<number> {
  const log = createLogger({ level: values.verbose ? config.log.level : 'silent' });
  const repository = await createRepository(config);
  return underLock(
    lockDeps(config, createClusterEtcd(config), repository, io, log),
    'verify',
    { signal },
    async (signal) => {
      const report = await verifySnapshots(repository, snapshot === undefined ? 'all' : { ids: [snapshot] }, {
        readData: values['read-data'],
        signal,
        log,
      });
      if (values.json) io.out(JSON.stringify(report, null, 2));
      else for (const line of formatVerify(report)) io.out(line);
      return report.status === 'ok' ? EXIT.success : EXIT.failed;
    },
  );
}

async function drillCommand(
  config: Config,
  snapshot: string | undefined,
  values: { json: boolean; verbose: boolean },
  io: Io,
  signal: AbortSignal,
): Promise<number> {
  const log = createLogger({ level: values.verbose ? config.log.level : 'silent' });
  const repository = await createRepository(config);
  const etcd = createClusterEtcd(config);
  return underLock(lockDeps(config, etcd, repository, io, log), 'drill', { signal }, async (signal) => {
    const gateway = createRestoreGateway(config, etcd, { signal });
    try {
      // Loaded only by the drill: the archive reader (tar-stream) need not load on every start.
      const { runDrill } = await import('./drill.js');
      const report = await runDrill(
        {
          config,
          repository,
          etcd,
          gateway: gateway.get,
          sshTarget: (host) => sshTarget(config, host),
          reporter: createReporter(io.progress ?? { write: () => undefined }),
          log,
        },
        {
          ...(snapshot === undefined ? {} : { snapshot }),
          bucketSuffix: config.drill.bucketSuffix,
          directory: config.drill.directory,
          signal,
        },
      );
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
    } finally {
      gateway.close();
    }
  });
}

async function restoreCommand(
  config: Config,
  snapshot: string,
  values: {
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
  const only = parseOnly(values.only) ?? ['buckets', 'volume'];
  const bucketMap = parseBucketMap(values.bucket ?? []);
  const volumeTo = values['volume-to'];
  if (volumeTo !== undefined && !volumeTo.startsWith('/')) {
    throw new BackupError('ERR_USAGE', `--volume-to ${volumeTo}: must be an absolute path`);
  }
  const etcd = createClusterEtcd(config);
  const log = createLogger({ level: values.verbose ? config.log.level : 'silent' });
  const repository = await createRepository(config);
  const restore = async (signal: AbortSignal): Promise<number> => {
    const gateway = createRestoreGateway(config, etcd, { signal });
    try {
      // Loaded only by a restore: the archive reader (tar-stream) need not load on every start.
      const { restoreSnapshot } = await import('./restore.js');
      const report = await restoreSnapshot(
        {
          config,
          repository,
          etcd,
          gateway: gateway.get,
          sshTarget: (host) => sshTarget(config, host),
          reporter: createReporter(io.progress ?? { write: () => undefined }),
          log,
        },
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
    } finally {
      gateway.close();
    }
  };
  // A dry run only reads; a real restore must not race a forget or prune of what it reads.
  if (values['dry-run']) return restore(signal);
  return underLock(lockDeps(config, etcd, repository, io, log), 'restore', { signal }, restore);
}

/** Parses repeated `--bucket SRC=DEST`. */
function parseBucketMap(values: readonly string[]): Map<string, string> {
  const map = new Map<string, string>();
  for (const value of values) {
    const match = /^([a-z0-9][a-z0-9._-]+)=([a-z0-9][a-z0-9._-]+)$/.exec(value);
    if (!match?.[1] || !match[2]) {
      throw new BackupError(
        'ERR_USAGE',
        `--bucket ${value}: write it as SOURCE=DESTINATION, e.g. --bucket db_wal=db_wal_restored`,
      );
    }
    map.set(match[1], match[2]);
  }
  return map;
}

async function snapshotsCommand(config: Config, json: boolean, io: Io, signal: AbortSignal): Promise<number> {
  const { snapshots: manifests, unreadable } = await (await createRepository(config)).scan({ signal });
  for (const bad of unreadable) io.err(`warning: restore point ${bad.id} is not usable: ${bad.error}`);
  if (json) {
    io.out(JSON.stringify(manifests.map(snapshotSummary), null, 2));
  } else {
    for (const line of formatSnapshots(manifests)) io.out(line);
  }
  return EXIT.success;
}

async function configCheckCommand(
  file: string,
  env: NodeJS.ProcessEnv,
  io: Io,
  signal: AbortSignal,
): Promise<number> {
  const config = loadConfig({ file, env });
  const etcd = createClusterEtcd(config);
  const problems: string[] = [];
  const cluster: Record<string, unknown> = {};
  const attempt = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
    try {
      cluster[what] = await fn();
    } catch (err) {
      problems.push(describeError(err));
    }
  };
  if (config.sources.buckets.enabled) {
    await attempt('gateway', () => resolveGateway(config, etcd, { signal }));
    await attempt('buckets', () => resolveBucketNames(config, etcd, { signal }));
  }
  if (config.sources.database.enabled)
    await attempt('databaseHost', () => resolveDatabaseHost(config, etcd, { signal }));
  const view = { file, config: redactedView(config), resolved: redactedView(cluster) };
  io.out(JSON.stringify(view, null, 2));
  if (problems.length > 0) {
    io.err(`deis-backup: config ${file}: ${problems.length} problem(s)`);
    for (const p of problems) io.err(`  - ${p}`);
    return EXIT.usage;
  }
  io.err(`config ${file}: ok`);
  return EXIT.success;
}
