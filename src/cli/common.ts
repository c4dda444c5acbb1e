// What every CLI command shares: exit codes, where output goes, and the cluster lock for a command.
import type { DestinationStream } from 'pino';
import type { Config } from '../config.js';
import type { Etcd } from '../etcd.js';
import { underLock, type LockDeps } from '../jobs.js';
import { silentLogger, type Logger } from '../logger.js';
import type { Repository } from '../repository/repository.js';
import { createClusterEtcd, createClusterLock, createRepository } from '../wiring.js';

/** Exit codes of every command. */
export const EXIT = { success: 0, failed: 1, usage: 2, partial: 3 } as const;

/** The exit code of a backup or restore outcome: anything not success or partial is a failure. */
export function exitFor(status: string): number {
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

/** What a command that works on the restore points needs. */
export interface CommandContext {
  log: Logger;
  repository: Repository;
  etcd: Etcd;
  /** Runs `work` under the cluster lock (see underLock); a wait for another holder is said on stderr. */
  locked: <T>(
    operation: string,
    signal: AbortSignal,
    work: (signal: AbortSignal, lockedAt: Date) => Promise<T>,
  ) => Promise<T>;
}

/** The pino logger --verbose asks for; pino is loaded only then. */
async function verboseLogger(level: string): Promise<Logger> {
  const { createLogger } = await import('../log.js');
  return createLogger({ level });
}

/** The logger (silent unless --verbose), repository, etcd and cluster lock of one command. */
export async function commandContext(config: Config, verbose: boolean, io: Io): Promise<CommandContext> {
  const log = verbose ? await verboseLogger(config.log.level) : silentLogger;
  const repository = await createRepository(config);
  const etcd = createClusterEtcd(config);
  const deps: LockDeps = {
    lock: createClusterLock(config, etcd, repository.target),
    log,
    waitSeconds: config.lock.waitSeconds,
    onWait: (holder) => {
      io.err(`waiting up to ${config.lock.waitSeconds} s for the cluster lock: ${holder}`);
    },
  };
  return {
    log,
    repository,
    etcd,
    locked: (operation, signal, work) => underLock(deps, operation, { signal }, work),
  };
}
