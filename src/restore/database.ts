// Loads the dump into the database through a configurable psql command (by default inside the
// deis-database container), on its host over SSH or here. The dump's sha256 is checked as it streams.
import { createGunzip } from 'node:zlib';
import { runCommand, whereText } from '../command.js';
import { BackupError, describeError, toError } from '../errors.js';
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
): Promise<{ bytes: number }> {
  const running = await runCommand(where.command, where, opts);
  // Nothing useful comes out, but over SSH the channel only closes once its output is read.
  running.stdout.resume();
  const sql = chain(await repository.openVerified(artifact, opts), createGunzip());
  let bytes = 0;
  let streamError: unknown;
  try {
    for await (const chunk of sql) {
      bytes += (chunk as Buffer).length;
      if (!running.stdin.write(chunk)) await new Promise((resolve) => running.stdin.once('drain', resolve));
    }
  } catch (err) {
    streamError = err;
  }
  running.stdin.end();
  const { code, stderr } = await running.finished.catch((err: unknown) => ({
    code: null,
    stderr: describeError(err),
  }));
  if (streamError !== undefined) throw toError(streamError);
  if (code !== 0) {
    throw new BackupError(
      'ERR_TARGET',
      `database: load command ${whereText(where.ssh)} exited ${String(code)}: ${errorLine(stderr)}; check restore.databaseCommand`,
    );
  }
  return { bytes };
}
