// The Deis database as a gzip-compressed pg_dumpall, run on the database host over SSH (by default
// `docker exec deis-database sudo -u postgres pg_dumpall`) or locally. A dump counts only when the
// command exits 0 and the stream ends with pg_dumpall's completion line.
import type { TransformCallback } from 'node:stream';
import { BackupError, describeError } from '../errors.js';
import { ByteCounter, chain, createParallelGzip, watchQuiet } from '../streams.js';
import { emptyCounts, type SourceRecord } from '../repository/manifest.js';
import { runCommand, shownCommand, whereText } from '../command.js';
import type { SshTarget } from '../ssh.js';
import { errorLine, type Source, type SourceRunContext } from './source.js';

/** Artifact name of the dump. */
export const DATABASE_ARTIFACT = 'database.sql.gz';

/**
 * The last comment pg_dumpall (or pg_dump) writes; without it the dump was cut short. pg_dump since
 * 13.22, 14.19, 15.14, 16.10 and 17.6 ends with an `\unrestrict <key>` line after it.
 */
const COMPLETE = /-- PostgreSQL database (cluster )?dump complete\s*(--\s*)?(\\unrestrict \S+\s*)?$/;

/**
 * True when the end of a dump's SQL is pg_dumpall's (or pg_dump's) completion. With `cluster`
 * (the command runs pg_dumpall) only pg_dumpall's own line counts: it also writes pg_dump's line at
 * the end of each database, so a stream cut right after the last one would pass for whole.
 */
export function endsComplete(tail: string, cluster = false): boolean {
  const match = COMPLETE.exec(tail);
  return match !== null && (!cluster || match[1] !== undefined);
}

/** Where the dump command runs, and how long it may send nothing (`sources.database.timeoutMs`). */
export type DumpLocation = { command: string; timeoutMs: number } & (
  { ssh?: undefined } | { ssh: SshTarget }
);

/** The database source. */
export class DatabaseSource implements Source {
  readonly id = 'database';
  readonly kind = 'database' as const;
  private readonly location: DumpLocation;

  constructor(location: DumpLocation) {
    this.location = location;
  }

  async backup(ctx: SourceRunContext): Promise<SourceRecord> {
    const { command, ssh } = this.location;
    // Recorded in the manifest and shown over HTTP: a password written into the command is not.
    const shown = shownCommand(command);
    const origin = ssh ? `ssh ${ssh.user}@${ssh.host}: ${shown}` : `local: ${shown}`;
    const where = whereText(ssh);
    // A dump that sends nothing for timeoutMs (a hung docker exec) is cut off, so it cannot hold the
    // run and the cluster lock for ever. What it started may go on (over SSH, or what docker exec
    // started in the container) until it next writes: the line says to look for it.
    const quiet = new AbortController();
    const signal = AbortSignal.any([ctx.signal, quiet.signal]);
    const quietError = () =>
      new BackupError(
        'ERR_SOURCE',
        `database: dump command ${where} sent nothing for ${this.location.timeoutMs / 1000} s and was cut off; check that deis-database answers (docker exec can hang) and that no pg_dumpall is left running there, or raise sources.database.timeoutMs`,
      );
    const running = await runCommand(command, { ssh }, { signal });
    running.stdin.end();
    const tail = new TailKeeper(512);
    const stopWatching = watchQuiet(
      () => tail.bytes,
      () => running.stdout.readableLength > 0,
      this.location.timeoutMs,
      () => {
        quiet.abort();
      },
    );
    let stored;
    try {
      stored = await ctx.writer.putArtifact(
        DATABASE_ARTIFACT,
        chain(running.stdout, tail, createParallelGzip()),
        { signal },
      );
    } catch (err) {
      await running.finished.catch(() => undefined);
      if (quiet.signal.aborted) ctx.signal.throwIfAborted();
      throw quiet.signal.aborted ? quietError() : err;
    } finally {
      stopWatching();
    }
    const {
      code,
      signal: exitSignal,
      stderr,
    } = await running.finished.catch(async (err: unknown) => {
      // The SSH connection went away mid-dump (or the quiet dump was stopped): what was stored is cut.
      ctx.signal.throwIfAborted();
      await ctx.writer.discard(DATABASE_ARTIFACT, { signal: ctx.signal });
      if (quiet.signal.aborted) throw quietError();
      throw new BackupError('ERR_SOURCE', `database: dump command ${where}: ${describeError(err)}`, {
        cause: err,
      });
    });
    let problem: string | undefined;
    if (code !== 0)
      problem = `exited ${code === null ? `on signal ${exitSignal ?? 'unknown'}` : String(code)}: ${errorLine(stderr)}`;
    else if (!endsComplete(tail.text(), /\bpg_dumpall\b/.test(this.location.command)))
      problem = 'output ended before pg_dumpall\'s "dump complete" line (truncated)';
    if (problem !== undefined) {
      await ctx.writer.discard(DATABASE_ARTIFACT, { signal: ctx.signal });
      throw new BackupError(
        'ERR_SOURCE',
        `database: dump command ${where} ${problem}; check sources.database.command and that deis-database runs`,
      );
    }
    const counts = { ...emptyCounts(), objects: 1, bytesRead: tail.bytes, bytesStored: stored.size };
    ctx.log.info({ origin, ...counts }, 'database dumped');
    return {
      id: this.id,
      kind: 'database',
      status: 'success',
      origin,
      counts,
      warnings: [],
      errors: [],
      artifacts: [{ name: DATABASE_ARTIFACT, ...stored }],
    };
  }
}

/** Pass-through that counts bytes (ByteCounter) and keeps the last `size` bytes as text. */
export class TailKeeper extends ByteCounter {
  private last = Buffer.alloc(0);
  private readonly size: number;
  constructor(size: number) {
    super();
    this.size = size;
  }
  override _transform(chunk: Buffer, enc: BufferEncoding, callback: TransformCallback): void {
    this.last = Buffer.concat([this.last, chunk.subarray(-this.size)]).subarray(-this.size);
    super._transform(chunk, enc, callback);
  }
  text(): string {
    return this.last.toString('utf8');
  }
}
