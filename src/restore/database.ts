// Loads the dump into the database through a configurable psql command (by default inside the
// deis-database container), on its host over SSH or here. The dump's sha256 is checked as it streams.
import { createGunzip } from 'node:zlib';
import { feedCommand, runCommand, whereText } from '../command.js';
import { BackupError } from '../errors.js';
import type { ArtifactRecord } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import type { SshTarget } from '../ssh.js';
import { errorLine } from '../sources/source.js';
import { chain } from '../streams.js';

/** Streams the dump (gunzipped) into `command`; throws when it exits non-zero or the dump is damaged. */
export async function loadDump(
  repository: Repository,
  artifact: ArtifactRecord,
  where: { command: string; ssh?: SshTarget | undefined },
  opts: { signal: AbortSignal },
): Promise<void> {
  const running = await runCommand(where.command, where, opts);
  // Nothing useful comes out, but over SSH the channel only closes once its output is read.
  running.stdout.resume();
  const sql = chain(await repository.openVerified(artifact, opts), createGunzip());
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
}
