// Runs one command on a CoreOS host over SSH (ssh2), with key auth and a strict known_hosts check;
// stdout streams back, stderr is collected, and aborting the signal ends the connection.
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import type { ClientChannel } from 'ssh2';
import { BackupError, toError } from './errors.js';

/** Keepalives a host may leave unanswered before the connection is taken as lost (see runRemote). */
const KEEPALIVES_UNANSWERED = 3;

/** How to reach a host. */
export interface SshTarget {
  host: string;
  port: number;
  user: string;
  privateKeyFile: string;
  knownHostsFile: string;
  timeoutMs: number;
}

/** A command running on a remote or local host. The caller must consume `stdout`. */
export interface RemoteCommand {
  stdout: Readable;
  /** The command's standard input; end it to send EOF. */
  stdin: Writable;
  /** Resolves when the command ends: exit code (null if killed) and the last 64 KiB of stderr. */
  finished: Promise<{ code: number | null; signal: string | undefined; stderr: string }>;
}

/** How much of a command's stderr is kept: its end, where the reason for an exit is. */
const STDERR_KEPT = 64 * 1024;

/**
 * The last STDERR_KEPT characters of a command's stderr, from the start of a line: a line cut in
 * two would pass for a message of its own (a volume read with thousands of tar warnings kept one
 * that matched no warning, and the whole archive was thrown away).
 */
export function keepTail(stderr: string): string {
  if (stderr.length <= STDERR_KEPT) return stderr;
  const lineStart = stderr.indexOf('\n', stderr.length - STDERR_KEPT - 1) + 1;
  const kept = lineStart > 0 ? stderr.slice(lineStart) : '';
  // One line longer than all that is kept: its end, rather than nothing.
  return kept.trim() === '' ? stderr.slice(-STDERR_KEPT) : kept;
}

/**
 * A command's stderr as it comes: its end kept for messages (see keepTail), and every whole line
 * handed to `onLine`, so that a caller can judge all of them, not only those kept.
 */
export class StderrCollector {
  private kept = '';
  /** The line being received, up to STDERR_KEPT characters (a longer one is handed on in pieces). */
  private partial = '';
  private ended = false;
  private readonly decoder = new StringDecoder('utf8');
  private readonly onLine: ((line: string) => void) | undefined;

  constructor(onLine?: (line: string) => void) {
    this.onLine = onLine;
  }

  push(chunk: Buffer): void {
    this.take(this.decoder.write(chunk));
  }

  /** Ends the stream (a last line without a newline is handed on) and returns what was kept. */
  end(): string {
    if (!this.ended) {
      this.ended = true;
      this.take(this.decoder.end());
      if (this.partial !== '') this.onLine?.(this.partial);
      this.partial = '';
    }
    return this.kept;
  }

  private take(text: string): void {
    if (text === '') return;
    this.kept = keepTail(this.kept + text);
    if (!this.onLine) return;
    const lines = (this.partial + text).split('\n');
    this.partial = lines.pop() ?? '';
    for (const line of lines) this.onLine(line);
    if (this.partial.length > STDERR_KEPT) {
      this.onLine(this.partial);
      this.partial = '';
    }
  }
}

/** Where a host's key is listed in known_hosts, as OpenSSH names it: `host` or `[host]:port`. */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

/** The host keys known_hosts lists for a host (plain or hashed entries), as raw key blobs. */
export function knownHostKeys(knownHosts: string, host: string, port: number): Buffer[] {
  const name = knownHostsName(host, port);
  const keys: Buffer[] = [];
  for (const rawLine of knownHosts.split('\n')) {
    const line = rawLine.trim();
    if (line === '' || line.startsWith('#') || line.startsWith('@')) continue;
    const [hosts = '', , key = ''] = line.split(/\s+/);
    const matches = hosts.split(',').some((pattern) => {
      if (!pattern.startsWith('|1|')) return pattern === name;
      const [, , salt = '', hash = ''] = pattern.split('|');
      return createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64') === hash;
    });
    if (matches && key) keys.push(Buffer.from(key, 'base64'));
  }
  return keys;
}

/** Opens a connection, runs `command`, and streams its stdout; the connection closes when it ends. */
export async function runRemote(
  target: SshTarget,
  command: string,
  opts: { signal: AbortSignal; onStderrLine?: ((line: string) => void) | undefined },
): Promise<RemoteCommand> {
  opts.signal.throwIfAborted();
  const where = `ssh ${target.user}@${knownHostsName(target.host, target.port)}`;
  let privateKey: Buffer;
  let knownHosts: string;
  try {
    privateKey = readFileSync(target.privateKeyFile);
  } catch {
    throw new BackupError(
      'ERR_CONFIG',
      `${where}: cannot read ssh.privateKeyFile ${target.privateKeyFile}; point it at the private key of a user allowed on the host`,
    );
  }
  try {
    knownHosts = readFileSync(target.knownHostsFile, 'utf8');
  } catch {
    throw new BackupError(
      'ERR_CONFIG',
      `${where}: cannot read ssh.knownHostsFile ${target.knownHostsFile}; create it with ssh-keyscan -p ${target.port} ${target.host}`,
    );
  }
  // A host not listed is refused when it shows its key, not before: a wrong host or port is then
  // reported as one that cannot be reached, not as a key to add with ssh-keyscan.
  const known = knownHostKeys(knownHosts, target.host, target.port);
  // ssh2 costs about 40 ms to load: only runs that open a connection pay for it.
  const ssh2 = await import('ssh2');
  const { Client } = ssh2;
  // ssh2 is CommonJS: Node finds Client among its named exports, but utils only on the default one.
  const { utils } = ssh2.default;
  // ssh2's own words for a key it cannot use name neither the setting nor the fix.
  const first = utils.parseKey(privateKey);
  if (first instanceof Error || !first.isPrivateKey()) {
    throw new BackupError(
      'ERR_CONFIG',
      `${where}: ssh.privateKeyFile ${target.privateKeyFile} ${first instanceof Error && /passphrase|encrypted/i.test(first.message) ? 'is encrypted' : 'is not a private key ssh can use'}; point it at a private key without a passphrase (ssh-keygen -t ed25519 -N '')`,
    );
  }
  const conn = new Client();
  let hostKeyRejected: 'unlisted' | 'other key' | undefined;
  const onAbort = (): void => {
    conn.end();
  };
  opts.signal.addEventListener('abort', onAbort, { once: true });
  const channel = await new Promise<ClientChannel>((resolve, reject) => {
    conn.on('error', (err) => {
      reject(
        connectError(
          where,
          err,
          hostKeyRejected,
          target.knownHostsFile,
          `ssh-keyscan -p ${target.port} ${target.host}`,
        ),
      );
    });
    conn.on('close', () => {
      reject(
        opts.signal.aborted
          ? toError(opts.signal.reason)
          : new BackupError('ERR_SSH', `${where}: connection closed`),
      );
    });
    conn.on('ready', () => {
      conn.exec(command, (err, stream) => {
        if (err) reject(new BackupError('ERR_SSH', `${where}: cannot start command`, { cause: err }));
        else resolve(stream);
      });
    });
    conn.connect({
      host: target.host,
      port: target.port,
      username: target.user,
      privateKey,
      readyTimeout: target.timeoutMs,
      // A command that only sends (tar, pg_dumpall) would wait forever on a host that lost power:
      // nothing is sent its way, so TCP never notices. Keepalives every quarter of timeoutMs,
      // answered by the host's sshd even while the command's output waits, end the connection
      // once none has been answered for timeoutMs.
      keepaliveInterval: Math.max(250, Math.floor(target.timeoutMs / (KEEPALIVES_UNANSWERED + 1))),
      keepaliveCountMax: KEEPALIVES_UNANSWERED,
      hostVerifier: (key: Buffer) => {
        const ok = known.some((k) => k.equals(key));
        hostKeyRejected = ok ? undefined : known.length === 0 ? 'unlisted' : 'other key';
        return ok;
      },
    });
  }).catch((err: unknown) => {
    opts.signal.removeEventListener('abort', onAbort);
    conn.end();
    throw err;
  });
  const stderr = new StderrCollector(opts.onStderrLine);
  channel.stderr.on('data', (chunk: Buffer) => {
    stderr.push(chunk);
  });
  const finished = new Promise<{ code: number | null; signal: string | undefined; stderr: string }>(
    (resolve, reject) => {
      let exit: { code: number | null; signal: string | undefined } | undefined;
      channel.on('exit', (code: number | null, signal?: string) => {
        exit = { code, signal };
      });
      let lost: string | undefined;
      conn.on('error', (err: Error & { code?: string; level?: string }) => {
        lost ??=
          err.level === 'client-timeout'
            ? `no answer for ${target.timeoutMs / 1000} s`
            : (err.code ?? err.message);
      });
      // The channel's close, or else the connection's: ssh2 does not always close a channel whose
      // connection ended first (an abort while its output waited in a pipeline), and a promise left
      // pending there would hang the run that waits for it.
      let settled = false;
      const settle = (): void => {
        if (settled) return;
        settled = true;
        opts.signal.removeEventListener('abort', onAbort);
        conn.end();
        if (opts.signal.aborted) reject(toError(opts.signal.reason));
        // sshd always reports how a command ended (exit-status or exit-signal); without that report
        // the connection itself went away, and the output may be cut anywhere.
        else if (exit === undefined)
          reject(
            new BackupError(
              'ERR_SSH',
              `${where}: connection lost before the command finished (${lost ?? 'closed by the peer'}); its output is incomplete`,
            ),
          );
        else resolve({ code: exit.code, signal: exit.signal, stderr: stderr.end() });
      };
      channel.on('close', settle);
      conn.on('close', settle);
    },
  );
  // The channel's close is awaited through `finished`; a stdout consumer must not see an unhandled rejection.
  finished.catch(() => undefined);
  return { stdout: channel, stdin: channel, finished };
}

function connectError(
  where: string,
  err: Error & { level?: string; code?: string },
  hostKeyRejected: 'unlisted' | 'other key' | undefined,
  knownHostsFile: string,
  keyscan: string,
): BackupError {
  if (hostKeyRejected === 'unlisted') {
    return new BackupError(
      'ERR_SSH',
      `${where}: host not listed in ${knownHostsFile}; add its key with ${keyscan} >> ${knownHostsFile}`,
    );
  }
  if (hostKeyRejected === 'other key') {
    return new BackupError(
      'ERR_SSH',
      `${where}: host key does not match ${knownHostsFile}; if the host was rebuilt, replace its line there`,
    );
  }
  if (err.level === 'client-authentication') {
    return new BackupError(
      'ERR_SSH',
      `${where}: key authentication refused; add the public half of ssh.privateKeyFile to the user's authorized_keys`,
    );
  }
  if (err.level === 'client-timeout') {
    return new BackupError('ERR_SSH', `${where}: timed out connecting; check the host and ssh.port`);
  }
  return new BackupError(
    'ERR_SSH',
    `${where}: cannot connect (${err.code ?? err.message}); check the host and ssh.port`,
    { cause: err },
  );
}
