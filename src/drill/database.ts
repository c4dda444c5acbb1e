// The drill's database check: the dump is not loaded anywhere, but read whole through its sha256
// check and gunzipped, and must end with pg_dumpall's completion line, as a complete dump does.
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { BackupError } from '../errors.js';
import type { ArtifactRecord } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import { endsComplete, TailKeeper } from '../sources/database.js';

/** A sink for bytes only counted and looked at on the way. */
function discard(): Writable {
  return new Writable({
    write(_chunk, _encoding, callback) {
      callback();
    },
  });
}

/** Bytes of the end of the SQL kept to look for the trailer: a few lines, whatever the dump's size. */
const TAIL = 512;

/**
 * Reads the dump artifact through its sha256 check, gunzips it and looks at its end. Resolves with
 * the SQL's size when the trailer is there; throws (naming the artifact) when it is not, when the
 * bytes do not match the manifest, or when they are not gzip.
 */
export async function checkDump(
  repository: Repository,
  artifact: ArtifactRecord,
  opts: { signal: AbortSignal },
): Promise<{ sqlBytes: number }> {
  const tail = new TailKeeper(TAIL);
  try {
    await pipeline(await repository.openVerified(artifact, opts), createGunzip(), tail, discard(), {
      signal: opts.signal,
    });
  } catch (err) {
    opts.signal.throwIfAborted();
    if ((err as { code?: string }).code?.startsWith('Z_') !== true) throw err;
    // Damaged bytes usually break the gzip before the sha256 check at the end can speak: the
    // mismatch with the manifest is the finding worth reporting, so read the whole artifact once more.
    await repository.verifyArtifact(artifact, opts);
    throw new BackupError('ERR_INTEGRITY', `${artifact.key}: not a readable gzip stream`, { cause: err });
  }
  if (!endsComplete(tail.text())) {
    throw new BackupError(
      'ERR_INTEGRITY',
      `${artifact.key}: the SQL (${tail.bytes} bytes) does not end with pg_dumpall's "-- PostgreSQL database cluster dump complete" line: the dump was cut short`,
    );
  }
  return { sqlBytes: tail.bytes };
}
