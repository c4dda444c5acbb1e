// Loads the dump into the database through a configurable psql command (by default inside the
// deis-database container), on its host over SSH or here. The dump's sha256 is checked as it streams.
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
  const running = await startFeeding(where.command, where, dump, opts);
  const sql = chain(dump, createGunzip());
  const { code, stderr, complete } = await feedCommand(running, sql);
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
