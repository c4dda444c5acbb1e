// Loads the dump into the database through a configurable psql command (by default inside the
// deis-database container), on its host over SSH or here. The dump's sha256 is checked as it streams,
// and a line appended after it has psql print a marker, which proves psql read the dump to its end.
import { randomBytes } from 'node:crypto';
import { Transform } from 'node:stream';
import { finished } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { feedCommand, startFeeding, whereText } from '../command.js';
import { BackupError } from '../errors.js';
import type { ArtifactRecord } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import type { SshTarget } from '../ssh.js';
import { errorLine } from '../sources/source.js';
import { chain } from '../streams.js';

/**
 * An error psql reports and goes on after (without ON_ERROR_STOP it exits 0): `ERROR:  …`, with
 * `psql:<stdin>:<line>: ` before it in some versions.
 */
const PSQL_ERROR = /^(?:psql:[^:]*:\d+: )?ERROR: {2}(.*)$/;
/**
 * Errors a complete load into a fresh cluster also gives: pg_dumpall creates every role (postgres
 * is always there) and each database, which a new deis-database has already made. The rest of the
 * dump loads all the same.
 */
const EXPECTED_ERROR = /^(?:role|database) "[^"]+" already exists$/;

/**
 * Streams the dump (gunzipped) into `command`; throws when it exits non-zero or the dump is damaged.
 * Returns the errors of statements psql reported and went on after (a table already there, a row
 * that clashes): the dump was then loaded only in part.
 */
export async function loadDump(
  repository: Repository,
  artifact: ArtifactRecord,
  where: { command: string; ssh?: SshTarget | undefined },
  opts: { signal: AbortSignal },
): Promise<string[]> {
  const dump = await repository.openVerified(artifact, opts);
  const marker = new EndMarker();
  const running = await startFeeding(where.command, where, dump, opts);
  running.stdout.on('data', (chunk: Buffer) => {
    marker.scan(chunk);
  });
  // Over SSH the output may still be arriving when the exit status does. Listened for from the
  // start: an ssh2 channel that has closed does not answer a late `finished` at all.
  const output = finished(running.stdout, { writable: false }).catch(() => undefined);
  const sql = chain(dump, createGunzip(), marker.appender());
  const { code, stderr, complete } = await feedCommand(running, sql);
  await output;
  if (code !== 0) {
    throw new BackupError(
      'ERR_TARGET',
      `database: load command ${whereText(where.ssh)} exited ${String(code)}: ${errorLine(stderr)}; check restore.databaseCommand`,
    );
  }
  // Exit 0 with the dump unread (docker exec without -i gives psql no stdin): nothing was loaded,
  // and the dump's sha256 was never checked to its end.
  if (!complete) {
    throw new BackupError(
      'ERR_TARGET',
      `database: load command ${whereText(where.ssh)} exited before reading the whole dump; check restore.databaseCommand: it must read the dump on stdin (docker exec -i, not docker exec)`,
    );
  }
  // Fed to its end, yet the marker never came back: a pipe or sshd's channel window took a small
  // dump that nothing read (docker exec without -i again), or the output does not reach us.
  if (!marker.seen) {
    throw new BackupError(
      'ERR_TARGET',
      `database: load command ${whereText(where.ssh)} exited without reaching the end of the dump (psql did not print the line appended to it); check restore.databaseCommand: psql must read the dump on stdin (docker exec -i, not docker exec) and print to stdout`,
    );
  }
  const failed = stderr
    .split('\n')
    .map((line) => PSQL_ERROR.exec(line.trim())?.[1])
    .filter((error): error is string => error !== undefined && !EXPECTED_ERROR.test(error));
  if (failed.length === 0) return [];
  const more = failed.length > 1 ? ` and ${failed.length - 1} more` : '';
  return [
    `database: statements of the dump failed in the load command ${whereText(where.ssh)}, which went on (${failed[0] ?? ''}${more}); load the dump into a cluster that does not hold its tables yet`,
  ];
}

/**
 * The proof that psql reached the end of the dump: an `\echo` of a random token appended to the SQL,
 * looked for in the command's output. psql prints it even with -q, and only once it has run every
 * statement before it; bytes a pipe or an SSH channel took unread never get that far.
 */
export class EndMarker {
  /** Random unless given, so no dump prints it by chance. */
  readonly token: string;

  /** The end of the output so far, as long as the token less one byte, for a token cut between chunks. */
  private tail = '';
  seen = false;

  constructor(token = `deis-backup-end-of-dump-${randomBytes(8).toString('hex')}`) {
    this.token = token;
  }

  /** A pass-through that adds the `\echo` line after the last byte of the SQL. */
  appender(): Transform {
    // A newline first: a dump whose last line has none would otherwise take the line as its own.
    const line = Buffer.from(`\n\\echo ${this.token}\n`);
    return new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        callback(null, chunk);
      },
      flush(callback) {
        callback(null, line);
      },
    });
  }

  /** Looks at the next chunk of the command's output. */
  scan(chunk: Buffer): void {
    if (this.seen) return;
    // latin1 maps each byte to one character, so a chunk cut inside a UTF-8 sequence cannot hide
    // the (ASCII) token, and the kept tail is bounded by its length.
    const text = this.tail + chunk.toString('latin1');
    this.seen = text.includes(this.token);
    this.tail = text.slice(-(this.token.length - 1));
  }
}
