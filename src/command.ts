// Runs a shell command here or on a host over SSH, the same way for both: stdin in, stdout out,
// stderr kept for the error message, exit status at the end.
import { spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { describeError, toError } from './errors.js';
import { runRemote, StderrCollector, type RemoteCommand, type SshTarget } from './ssh.js';
import { Stoppable } from './streams.js';

export type { RemoteCommand as RunningCommand };

/**
 * Starts `command` with /bin/sh locally, or over SSH when `ssh` is given. With `cLocale`, every
 * program of the command line runs with LC_ALL=C, so its messages are the untranslated ones a caller
 * can match (GNU tar's warnings, say) whatever locale the host or this process has: here through
 * the environment, over SSH at the start of the command line itself, since sshd passes on only the
 * variables its AcceptEnv lists (a program run through sudo needs `asRoot`, see there).
 * `onStderrLine` sees every line of stderr as it comes; `finished` keeps only its end.
 */
export async function runCommand(
  command: string,
  where: { ssh?: SshTarget | undefined },
  opts: { signal: AbortSignal; cLocale?: boolean; onStderrLine?: (line: string) => void },
): Promise<RemoteCommand> {
  if (where.ssh) return runRemote(where.ssh, opts.cLocale ? `${C_LOCALE}${command}` : command, opts);
  // Its own process group, so an abort stops the whole pipeline, not only the shell.
  const child = spawn('/bin/sh', ['-c', command], {
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true,
    env: opts.cLocale ? { ...process.env, LC_ALL: 'C' } : process.env,
  });
  const onAbort = (): void => {
    if (child.pid !== undefined && child.exitCode === null) {
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        // Already gone.
      }
    }
  };
  opts.signal.addEventListener('abort', onAbort, { once: true });
  child.once('close', () => {
    opts.signal.removeEventListener('abort', onAbort);
  });
  const stderr = new StderrCollector(opts.onStderrLine);
  child.stderr.on('data', (chunk: Buffer) => {
    stderr.push(chunk);
  });
  // A command that exits without reading its input must not crash the writer with EPIPE.
  child.stdin.on('error', () => undefined);
  const finished = new Promise<{ code: number | null; signal: string | undefined; stderr: string }>(
    (resolve, reject) => {
      child.once('error', (err) => {
        if (opts.signal.aborted) reject(err);
        else resolve({ code: 127, signal: undefined, stderr: `${stderr.end()}\n${err.message}` });
      });
      child.once('close', (code, sig) => {
        if (opts.signal.aborted) reject(new Error('aborted'));
        else resolve({ code, signal: sig ?? undefined, stderr: stderr.end() });
      });
    },
  );
  finished.catch(() => undefined);
  return { stdout: child.stdout, stdin: child.stdin, finished };
}

/**
 * Sets the C locale for the rest of a command line in any Bourne-style shell (sh, dash, bash, zsh,
 * busybox): `export NAME=value` is not Bourne sh. LC_ALL=C outranks LANG and every LC_*, and with
 * it GNU gettext ignores LANGUAGE too; C.UTF-8 would not do, as gettext still honours LANGUAGE there.
 */
const C_LOCALE = 'LC_ALL=C; export LC_ALL; ';

/**
 * The start of a command that runs a program as root on the host, in the C locale: `sudo -n
 * LC_ALL=C ` over SSH for a user other than root, else nothing (`runCommand` with `cLocale` has set
 * the locale). sudo's env_reset keeps LC_ALL by default (it is in env_check); naming it on sudo's
 * command line makes a sudoers that forbids it refuse in words rather than drop it unseen.
 */
export function asRoot(ssh: SshTarget | undefined): string {
  return ssh && ssh.user !== 'root' ? 'sudo -n LC_ALL=C ' : '';
}

/**
 * A command line as records, messages and logs show it: the value of every assignment whose name
 * says it holds a secret (`PGPASSWORD=…`, `MYSQL_PWD=…`, `…TOKEN=…`, `…SECRET…=…`, `…KEY=…`) and
 * the password of a URL's user part are replaced with `***`. The command runs as written.
 */
export function shownCommand(command: string): string {
  return command
    .replace(
      /\b([A-Za-z_][A-Za-z0-9_]*(?:PASS|PWD|SECRET|TOKEN|KEY)[A-Za-z0-9_]*=)('[^']*'|"[^"]*"|[^\s;&|]+)/gi,
      '$1***',
    )
    .replace(/(:\/\/[^/\s:@]+:)[^/\s@]+@/g, '$1***@');
}

/** Where a command runs, for messages: "on <host>" or "locally". */
export function whereText(ssh: SshTarget | undefined): string {
  return ssh ? `on ${ssh.host}` : 'locally';
}

/**
 * Runs `command` with no input and reads its whole output (a listing, a mount table: small by
 * nature), then waits for it: its stdout, exit code and stderr's end. With `quiet`, a command that
 * sends nothing on stdout for `quiet.ms` (a listing blocked on a hung mount) is stopped, and the
 * call rejects with `quiet.error()` without waiting for its end: a process blocked on a mount may
 * not die until the mount answers.
 */
export async function runCollecting(
  command: string,
  where: { ssh?: SshTarget | undefined },
  opts: { signal: AbortSignal; cLocale?: boolean; quiet?: { ms: number; error: () => Error } | undefined },
): Promise<{ stdout: Buffer; code: number | null; stderr: string }> {
  const stop = new Stoppable(opts.signal);
  const running = await runCommand(command, where, { signal: stop.signal, cLocale: opts.cLocale });
  running.stdin.end();
  const chunks: Buffer[] = [];
  let bytes = 0;
  const collecting = (async () => {
    for await (const chunk of running.stdout) {
      chunks.push(chunk as Buffer);
      bytes += (chunk as Buffer).length;
    }
    return await running.finished;
  })();
  const limit = opts.quiet;
  if (limit === undefined) {
    const { code, stderr } = await collecting;
    return { stdout: Buffer.concat(chunks), code, stderr };
  }
  stop.watch(
    () => bytes,
    () => false,
    limit.ms,
  );
  const { code, stderr } = await stop.race(collecting, () =>
    stop.cutOff ? limit.error() : (stop.signal.reason as Error),
  );
  return { stdout: Buffer.concat(chunks), code, stderr };
}

/**
 * Starts `command` to be fed `body`. Its output flows, to a 'data' listener the caller adds or to
 * nowhere. The body is opened by the caller first: a command started before a failed open would wait
 * on its stdin for ever. If the command cannot start, the body is closed.
 */
export async function startFeeding(
  command: string,
  where: { ssh?: SshTarget | undefined },
  body: Readable,
  opts: { signal: AbortSignal; cLocale?: boolean },
): Promise<RemoteCommand> {
  const running = await runCommand(command, where, opts).catch((err: unknown) => {
    body.destroy();
    throw err;
  });
  // Nothing useful comes out, but over SSH the channel only closes once its output is read.
  running.stdout.resume();
  return running;
}

/**
 * Writes `body` into the command's stdin (with backpressure), ends it, and waits for the command.
 * A failing body is rethrown after the command has ended; the exit status is the caller's to judge.
 * `complete` is false when the command ended or closed its input before the body's end: it did not
 * read it all, whatever its exit status. What a pipe buffer (64 KiB) or sshd's channel window
 * (2 MiB) took before the command ended unread cannot be told from what it read.
 */
export async function feedCommand(
  running: RemoteCommand,
  body: AsyncIterable<unknown> & Readable,
): Promise<{ code: number | null; stderr: string; complete: boolean }> {
  let streamError: unknown;
  // Set from a callback, so an object: a plain local would stay narrowed to false.
  const command = { ended: false };
  const end = (): void => {
    command.ended = true;
  };
  void running.finished.then(end, end);
  let complete = false;
  try {
    for await (const chunk of body) {
      if (!running.stdin.write(chunk)) await writable(running.stdin);
      // A command that died (or was killed) reads no more: stop feeding, its exit status tells why.
      if (command.ended || running.stdin.destroyed || running.stdin.writableEnded) break;
    }
    // Only a loop that ran out of chunks read the body to its end (and through its checks).
    complete = body.readableEnded && !command.ended && !running.stdin.destroyed;
  } catch (err) {
    streamError = err;
    running.stdin.destroy();
  }
  running.stdin.end();
  const { code, stderr } = await running.finished.catch((err: unknown) => ({
    code: null,
    stderr: describeError(err),
  }));
  if (streamError !== undefined) throw toError(streamError);
  return { code, stderr, complete };
}

/** Resolves when the stream can take more data, or can never take any again. */
function writable(stream: Writable): Promise<void> {
  // A stream that has already failed or closed emits nothing more: waiting for it would hang.
  if (stream.destroyed || stream.writableFinished || !stream.writableNeedDrain) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      stream.off('drain', done);
      stream.off('close', done);
      stream.off('error', done);
      resolve();
    };
    stream.once('drain', done);
    stream.once('close', done);
    stream.once('error', done);
  });
}

/** Single-quotes a value for a POSIX shell. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}
