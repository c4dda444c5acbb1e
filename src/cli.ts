// CLI entry: parses the arguments and runs one command (src/cli/: run, maintain, inspect). Exit
// codes: 0 success, 3 partial, 1 failed, 2 usage or config error. Expected errors print one line,
// never a stack trace or a secret.
import { parseArgs } from 'node:util';
import { ConfigError, DEFAULT_CONFIG_PATH, loadConfig, type Config } from './config.js';
import { BackupError, describeError } from './errors.js';
import { EXIT, type Io } from './cli/common.js';
import { TOOL } from './tool.js';

export { EXIT, type Io } from './cli/common.js';

const USAGE = `usage: deis-backup [--config FILE] [--verbose] <command>
       deis-backup --version

commands:
  daemon                                            run the scheduler and the HTTP API until SIGTERM
  backup [--only buckets,volume,database] [--json]   take one restore point; prints its id
  restore <id|latest> [--only buckets,volume,database,finish] [--bucket SRC=DEST ...]
          [--volume-to DIR] [--dry-run] [--overwrite] [--yes] [--json]
                                                    restore in Deis order (default: buckets, volume);
                                                    --only finish: republish to etcd, restore no data
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

/** Options every command takes. */
const GLOBAL_OPTIONS = ['config', 'verbose', 'help'];

/** The options of each command, besides the global ones. */
const OPTIONS: Record<string, readonly string[]> = {
  daemon: [],
  backup: ['only', 'json'],
  restore: ['only', 'bucket', 'volume-to', 'dry-run', 'overwrite', 'yes', 'json'],
  snapshots: ['json'],
  forget: ['dry-run', 'prune', 'json'],
  prune: ['dry-run', 'json'],
  verify: ['all', 'read-data', 'json'],
  drill: ['json'],
  config: [],
};

// Each command's module is loaded when it runs: a backup need not compile restore, verify or drill.
const run = () => import('./cli/run.js');
const maintain = () => import('./cli/maintain.js');
const inspect = () => import('./cli/inspect.js');

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
      tokens: true,
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
        version: { type: 'boolean', default: false },
      },
    });
  } catch (err) {
    // node:util's messages run to several sentences and lines; the first sentence says what is wrong.
    const first = ((err as Error).message.split('\n')[0] ?? '').replace(/\.( .*)?$/, '');
    io.err(`deis-backup: ${first}; see deis-backup --help`);
    return EXIT.usage;
  }
  const { values, positionals, tokens } = parsed;
  const [command, sub] = positionals;
  if (values.version && command === undefined && !values.help) {
    io.out(TOOL);
    return EXIT.success;
  }
  if (values.help || command === undefined || command === 'help') {
    (command === undefined && !values.help ? io.err : io.out)(USAGE);
    return command === undefined && !values.help ? EXIT.usage : EXIT.success;
  }
  // An option the command does not take is refused, not ignored: `backup --dry-run` must not back up.
  const takesOptions = OPTIONS[command];
  const foreign = tokens.find(
    (t) => t.kind === 'option' && !GLOBAL_OPTIONS.includes(t.name) && !takesOptions?.includes(t.name),
  );
  if (takesOptions && foreign?.kind === 'option') {
    io.err(
      `deis-backup: ${command}: ${foreign.rawName} is not an option of ${command}; see deis-backup --help`,
    );
    return EXIT.usage;
  }
  // Words the command does not take are refused rather than silently ignored.
  const takes = ['restore', 'verify', 'drill', 'config'].includes(command) ? 2 : 1;
  const extra = positionals[takes] ?? (takes === 1 ? sub : undefined);
  if (extra !== undefined) {
    io.err(`deis-backup: ${command}: unexpected argument "${extra}"; see deis-backup --help`);
    return EXIT.usage;
  }
  if (values.config === '') {
    io.err('deis-backup: --config: name the config file; see deis-backup --help');
    return EXIT.usage;
  }
  const configFile = values.config ?? env['DEIS_BACKUP_CONFIG'] ?? DEFAULT_CONFIG_PATH;
  try {
    switch (command) {
      case 'daemon':
        return await (await run()).daemonCommand(load(configFile, env), io, signal);
      case 'backup':
        return await (await run()).backupCommand(load(configFile, env), values, io, signal);
      case 'restore':
        if (sub === undefined)
          throw new BackupError(
            'ERR_USAGE',
            'restore: name a restore point id or "latest"; list them with deis-backup snapshots',
          );
        return await (await run()).restoreCommand(load(configFile, env), sub, values, io, signal);
      case 'snapshots':
        return await (await inspect()).snapshotsCommand(load(configFile, env), values.json, io, signal);
      case 'forget':
        return await (await maintain()).forgetCommand(load(configFile, env), values, io, signal);
      case 'prune':
        return await (await maintain()).pruneCommand(load(configFile, env), values, io, signal);
      case 'verify':
        if ((sub === undefined) === !values.all)
          throw new BackupError(
            'ERR_USAGE',
            'verify: name one restore point id, "latest", or pass --all; list them with deis-backup snapshots',
          );
        return await (await maintain()).verifyCommand(load(configFile, env), sub, values, io, signal);
      case 'drill':
        return await (await maintain()).drillCommand(load(configFile, env), sub, values, io, signal);
      case 'config':
        if (sub !== 'check')
          throw new BackupError(
            'ERR_USAGE',
            sub === undefined
              ? 'config: name a subcommand; use deis-backup config check'
              : `config: unknown subcommand "${sub}"; use deis-backup config check`,
          );
        return await (await inspect()).configCheckCommand(configFile, env, io, signal);
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
