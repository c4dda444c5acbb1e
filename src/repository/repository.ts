// Restore points in a target: write artifacts and bodies (hashed while streaming), commit with the
// manifest last, and list or read committed manifests. Keys without a manifest are not restore points.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { addAbortSignal, Readable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { createInterface } from 'node:readline';
import { BackupError, describeError, toError } from '../errors.js';
import type { PutOptions, Target } from '../targets/target.js';
import { chain } from '../streams.js';
import { HashingStream } from './hashing.js';
import {
  artifactKey,
  blobKey,
  isSnapshotId,
  manifestKey,
  newSnapshotId,
  runMarkerKey,
  SNAPSHOTS,
} from './layout.js';
import {
  isIndexEntry,
  parseManifest,
  type ArtifactRecord,
  type IndexEntry,
  type Manifest,
} from './manifest.js';
import { compareText } from '../compare.js';
import { mapConcurrently } from '../concurrency.js';

/** How many manifests a scan reads at once. */
const MANIFEST_READS = 8;

/** Stored bytes: key, size and sha256 as counted while they streamed to the target. */
export interface Stored {
  key: string;
  size: number;
  sha256: string;
}

/** The records kept under `status/`. */
export type StatusName = 'verify' | 'drill' | 'prune' | 'backup';

/** What asking for the newest (or every) restore point of an empty target throws. */
export class NoRestorePointError extends BackupError {
  constructor(target: Target) {
    super('ERR_NOT_FOUND', `no restore point in ${target.name}; run deis-backup backup first`);
  }
}

/** Restore points in one target. */
export class Repository {
  readonly target: Target;

  constructor(target: Target) {
    this.target = target;
  }

  /** Starts a new restore point; nothing is visible until `commit`. */
  begin(now: Date): SnapshotWriter {
    return new SnapshotWriter(this.target, newSnapshotId(now));
  }

  /** Every committed restore point, oldest first. Manifests that cannot be read are left out. */
  async listSnapshots(opts: { signal: AbortSignal }): Promise<Manifest[]> {
    return (await this.scan(opts)).snapshots;
  }

  /**
   * Every committed restore point, oldest first; the manifests that exist but cannot be read
   * (damaged, written by another format version, or naming another id): those are reported, never
   * used; the ids of folders without a manifest (interrupted or running runs), oldest first; and
   * those whose manifest was listed but then not found (`vanished`).
   */
  async scan(opts: { signal: AbortSignal }): Promise<{
    snapshots: Manifest[];
    unreadable: { id: string; error: string }[];
    uncommitted: string[];
    vanished: string[];
  }> {
    const folders = new Map<string, boolean>();
    for await (const key of this.target.listKeys(SNAPSHOTS, opts)) {
      const [id, name] = key.slice(SNAPSHOTS.length).split('/');
      if (id === undefined || !isSnapshotId(id)) continue;
      folders.set(id, (folders.get(id) ?? false) || name === 'manifest.json');
    }
    const ids = [...folders.keys()].sort();
    // Manifests are read a few at a time: each read is a few round trips to the target.
    const read = await mapConcurrently(
      ids.filter((i) => folders.get(i)),
      MANIFEST_READS,
      async (id) => {
        try {
          return { id, manifest: await this.readManifest(id, opts) };
        } catch (err) {
          // Gone since the listing: a forget (another process's retention) took it. Readers that
          // hold no lock, as the daemon's /snapshots, meet this; it is no restore point any more.
          // Under the lock it should not happen (a target that answered 404 for a moment):
          // retention then prunes in full, which looks again.
          if (err instanceof BackupError && err.code === 'ERR_NOT_FOUND') return { id, gone: true };
          if (!(err instanceof BackupError) || err.code !== 'ERR_INTEGRITY') throw err;
          return { id, error: err.message };
        }
      },
    );
    const snapshots: Manifest[] = [];
    const unreadable: { id: string; error: string }[] = [];
    const vanished: string[] = [];
    for (const item of read) {
      if (item.manifest) snapshots.push(item.manifest);
      else if (item.error !== undefined) unreadable.push({ id: item.id, error: item.error });
      else vanished.push(item.id);
    }
    // Ids sort by second; two runs within one second are ordered by when they started.
    snapshots.sort((a, b) => compareText(a.startedAt, b.startedAt) || compareText(a.id, b.id));
    return {
      snapshots,
      unreadable,
      uncommitted: ids.filter((i) => folders.get(i) === false),
      vanished,
    };
  }

  /**
   * Removes a restore point's manifest: it stops being one at once. The rest of its folder
   * (removeFolder) goes after; blobs are shared between restore points and left to prune.
   * Returns the bytes freed.
   */
  async removeManifest(id: string, opts: { signal: AbortSignal }): Promise<number> {
    const manifest = await this.target.stat(manifestKey(id), opts);
    await this.target.remove(manifestKey(id), opts);
    return manifest?.size ?? 0;
  }

  /** Removes every key of a snapshot folder; returns the bytes freed. */
  async removeFolder(id: string, opts: { signal: AbortSignal }): Promise<number> {
    let freed = 0;
    for await (const info of this.target.list(artifactKey(id, ''), opts)) {
      await this.target.remove(info.key, opts);
      freed += info.size;
    }
    return freed;
  }

  /**
   * Records the outcome of a check (verify, drill) or when prune last listed every blob, under
   * `status/<name>.json`, so a restarted daemon still knows. Not part of any restore point; prune
   * leaves it.
   */
  async writeStatus(name: StatusName, value: object, opts: { signal: AbortSignal }): Promise<void> {
    const text = Buffer.from(`${JSON.stringify(value, null, 2)}\n`);
    await this.target.put(`status/${name}.json`, Readable.from([text]), {
      signal: opts.signal,
      size: text.length,
    });
  }

  /** The recorded outcome of a check, or undefined when there is none or it cannot be read. */
  async readStatus(name: StatusName, opts: { signal: AbortSignal }): Promise<unknown> {
    try {
      return JSON.parse(await readAll(await this.target.get(`status/${name}.json`, opts))) as unknown;
    } catch (err) {
      if (err instanceof BackupError && err.code === 'ERR_NOT_FOUND') return undefined;
      if (err instanceof SyntaxError) return undefined;
      throw err;
    }
  }

  /**
   * Whether a run may reuse the bodies the interrupted runs `ids` stored. Always on a target whose
   * puts are durable when they return. On one that defers syncs (a directory) only when every one
   * of those runs wrote its marker since this machine last booted: after a crash, a body that was
   * never synced can hold other bytes under its full size, and must be read again.
   */
  async resumable(ids: readonly string[], opts: { signal: AbortSignal }): Promise<boolean> {
    if (ids.length === 0) return false;
    if (!this.target.defersSync) return true;
    const boot = await bootId();
    if (boot === undefined) return false;
    for (const id of ids) {
      const marker = await this.target
        .get(runMarkerKey(id), opts)
        .then(readAll)
        .catch(() => '');
      let parsed: unknown;
      try {
        parsed = JSON.parse(marker);
      } catch {
        return false;
      }
      if (typeof parsed !== 'object' || parsed === null || (parsed as { boot?: unknown }).boot !== boot)
        return false;
    }
    return true;
  }

  /** Reads a stored object to its end: its size and sha256, as a reader would see them. */
  async hashStored(key: string, opts: { signal: AbortSignal }): Promise<{ size: number; sha256: string }> {
    const hash = createHash('sha256');
    let size = 0;
    for await (const chunk of await this.target.get(key, opts)) {
      hash.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
    return { size, sha256: hash.digest('hex') };
  }

  /** The manifest of `id`, or of the newest restore point for "latest". Throws ERR_NOT_FOUND. */
  async readManifest(id: string, opts: { signal: AbortSignal; anyId?: boolean }): Promise<Manifest> {
    if (id === 'latest') {
      const all = await this.listSnapshots(opts);
      const newest = all.at(-1);
      if (!newest) throw new NoRestorePointError(this.target);
      return newest;
    }
    if (!isSnapshotId(id)) {
      throw new BackupError(
        'ERR_NOT_FOUND',
        `restore point ${JSON.stringify(id)} is not an id; list them with deis-backup snapshots`,
      );
    }
    const key = manifestKey(id);
    let text: string;
    try {
      text = await readAll(await this.target.get(key, opts));
    } catch (err) {
      if (err instanceof BackupError && err.code === 'ERR_NOT_FOUND') {
        throw new BackupError(
          'ERR_NOT_FOUND',
          `restore point ${id} not found in ${this.target.name}; list them with deis-backup snapshots`,
        );
      }
      throw err;
    }
    const manifest = parseManifest(text, key);
    // Another folder's manifest: what it references is not what this folder holds. Only verify,
    // which reports it as damage, reads it as it is (anyId).
    if (!opts.anyId && manifest.id !== id) {
      throw new BackupError(
        'ERR_INTEGRITY',
        `manifest ${key} names restore point ${JSON.stringify(manifest.id)}, not ${id}: damaged or moved; deis-backup verify ${id} shows it`,
      );
    }
    return manifest;
  }

  /**
   * Opens an artifact for reading through a sha256 check: the returned stream fails at its end
   * (ERR_INTEGRITY) when the bytes differ from the manifest's record.
   */
  async openVerified(artifact: ArtifactRecord, opts: { signal: AbortSignal }): Promise<Readable> {
    const body = await this.target.get(artifact.key, opts);
    const check = new VerifyingStream(artifact, this.target.name);
    return chain(body, check);
  }

  /** Reads an artifact to its end and checks its sha256; throws ERR_INTEGRITY on a mismatch. */
  async verifyArtifact(artifact: ArtifactRecord, opts: { signal: AbortSignal }): Promise<void> {
    const stream = await this.openVerified(artifact, opts);
    // Only the hash matters: drain the bytes and let the check at the end speak.
    stream.resume();
    await finished(stream);
  }

  /**
   * Streams the entries of a bucket index artifact, verifying its sha256 once read to the end. A
   * damaged index (gzip that does not inflate, a line that is not JSON, a sha256 mismatch) throws
   * ERR_INTEGRITY naming it; the target's own errors pass through.
   */
  async *readIndex(artifact: ArtifactRecord, opts: { signal: AbortSignal }): AsyncIterable<IndexEntry> {
    const hashing = new HashingStream();
    const gunzip = createGunzip();
    const body = await this.target.get(artifact.key, opts);
    const piping = pipeline(body, hashing, gunzip, { signal: opts.signal }).catch((err: unknown) => {
      gunzip.destroy(err as Error);
    });
    try {
      for await (const line of createInterface({ input: gunzip, crlfDelay: Infinity })) {
        if (line === '') continue;
        const entry: unknown = JSON.parse(line);
        // Checked before use: garbled data can inflate to JSON of another shape.
        if (!isIndexEntry(entry)) throw new NotAnEntry();
        yield entry;
      }
      await piping;
    } catch (err) {
      // zlib's errors carry a Z_* code (Z_DATA_ERROR for garbled data, Z_BUF_ERROR for a cut end).
      const code = (err as { code?: unknown }).code;
      const damage =
        err instanceof NotAnEntry
          ? 'a line is not an index entry'
          : err instanceof SyntaxError
            ? 'a line is not JSON'
            : typeof code === 'string' && code.startsWith('Z_')
              ? describeError(err)
              : undefined;
      if (damage !== undefined) {
        throw new BackupError(
          'ERR_INTEGRITY',
          `${artifact.key} in ${this.target.name} is damaged (${damage})`,
          {
            cause: err,
          },
        );
      }
      throw err;
    } finally {
      // A consumer that stops early, or a line that failed, must not leave the body open.
      gunzip.destroy();
    }
    const sha256 = hashing.digest();
    if (sha256 !== artifact.sha256) {
      throw new BackupError(
        'ERR_INTEGRITY',
        `${artifact.key} in ${this.target.name}: sha256 ${sha256} does not match the manifest`,
      );
    }
  }
}

/** How long a failed or aborted commit may take to remove a manifest the target took anyway. */
const COMMIT_UNDO_TIMEOUT_MS = 30_000;

/** Writes one restore point. Artifacts first; `commit` writes the manifest last. */
export class SnapshotWriter {
  readonly id: string;
  private readonly target: Target;

  constructor(target: Target, id: string) {
    this.target = target;
    this.id = id;
  }

  /**
   * Marks the run as started (who and when), before anything else is stored: a folder with this
   * marker and no manifest tells the next run that blobs of an interrupted run may be reused.
   */
  async start(details: Record<string, unknown>, opts: { signal: AbortSignal }): Promise<void> {
    const boot = await bootId();
    const text = Buffer.from(`${JSON.stringify({ id: this.id, ...details, boot }, null, 2)}\n`);
    await this.store(runMarkerKey(this.id), Readable.from([text]), {
      signal: opts.signal,
      size: text.length,
    });
  }

  /** Stores a named artifact of this restore point (e.g. "volume.tar.gz"). */
  async putArtifact(
    name: string,
    body: Readable,
    opts: { signal: AbortSignal; size?: number },
  ): Promise<Stored> {
    return this.store(artifactKey(this.id, name), body, opts);
  }

  /**
   * Stores a bucket object's body under its identity key. `size` is what the gateway announced:
   * a body of any other length fails, so a truncated read is never stored as the object.
   * `release` takes back the body's chunks the target is done with (see PutOptions).
   */
  async putBlob(
    identity: { bucket: string; key: string; size: number; etag: string },
    body: Readable,
    opts: { signal: AbortSignal; release?: ((chunk: Buffer) => void) | undefined },
  ): Promise<Stored> {
    // Bodies are synced once, before the bucket's index appears (a plain put), not one by one.
    const stored = await this.store(blobKey(identity), body, {
      signal: opts.signal,
      size: identity.size,
      deferSync: true,
      ...(opts.release && { release: opts.release }),
    });
    if (stored.size !== identity.size) {
      await this.target.remove(stored.key, opts);
      throw new BackupError(
        'ERR_SOURCE',
        `${identity.bucket}/${identity.key}: read ${stored.size} of ${identity.size} bytes`,
      );
    }
    return stored;
  }

  /**
   * Takes a blob an interrupted run stored (with deferred sync, maybe never synced) into this
   * restore point: it is made durable with this run's own blobs, before the index that names it.
   */
  async adoptBlob(key: string, opts: { signal: AbortSignal }): Promise<void> {
    await this.target.adopt(key, opts);
  }

  /** Removes an artifact a failed source left behind (best effort: the run has already failed). */
  async discard(name: string, opts: { signal: AbortSignal }): Promise<void> {
    await this.target.remove(artifactKey(this.id, name), opts).catch(() => undefined);
  }

  /**
   * Makes the restore point visible: writes its manifest, the last write of a run. A commit that
   * fails or is aborted leaves no manifest, or says that one may stand.
   */
  async commit(manifest: Manifest, opts: { signal: AbortSignal }): Promise<Stored> {
    const key = manifestKey(this.id);
    const text = Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`);
    // An aborted run reports that it wrote no restore point: none may appear.
    opts.signal.throwIfAborted();
    try {
      return await this.store(key, Readable.from([text]), { signal: opts.signal, size: text.length });
    } catch (err) {
      // The target may have taken the manifest whole although the put failed: S3 takes an object
      // once its body is in, whether its answer comes back or not, and a directory renames it into
      // place before syncing the folder. The run reports failure, so the key (its own) goes.
      try {
        await this.target.remove(key, { signal: AbortSignal.timeout(COMMIT_UNDO_TIMEOUT_MS) });
      } catch (undo) {
        const what = opts.signal.aborted
          ? 'interrupted while writing the manifest of'
          : `writing the manifest failed (${describeError(err)}) for`;
        // A manifest left in place would list the run as a restore point.
        throw new BackupError(
          'ERR_TARGET',
          `${what} ${this.id}, which could not then be removed (${describeError(undo)}): ${this.id} may be listed as a restore point although this run reports none; check with deis-backup snapshots, and remove ${key} from ${this.target.name} if it should not stand`,
          { cause: undo },
        );
      }
      throw err;
    }
  }

  private async store(key: string, body: Readable, opts: PutOptions): Promise<Stored> {
    // The target hands each chunk to the hash as it takes it: no stream in between.
    const hash = createHash('sha256');
    let size = 0;
    const observe = (chunk: Buffer): void => {
      size += chunk.length;
      hash.update(chunk);
    };
    // A failing body (a gateway that cut it off) is the cause worth reporting; the target's error
    // then only echoes it. A body that stalls is ended by an abort.
    // But a target that failed on its own (an ERR_TARGET whose cause is not the body's error) ends
    // the body it was reading, and the body then reports that as its own cut ("aborted").
    let bodyError: unknown;
    // Left on: an error after the put settled must not go unhandled.
    body.on('error', (err: unknown) => {
      bodyError ??= err;
    });
    addAbortSignal(opts.signal, body);
    try {
      await this.target.put(key, body, { ...opts, observe });
    } catch (err) {
      const targetsOwn = err instanceof BackupError && err.code === 'ERR_TARGET' && err.cause !== bodyError;
      if (
        bodyError !== undefined &&
        !targetsOwn &&
        !opts.signal.aborted &&
        (bodyError as { code?: string }).code !== 'ERR_STREAM_PREMATURE_CLOSE'
      ) {
        throw toError(bodyError);
      }
      throw err;
    }
    return { key, size, sha256: hash.digest('hex') };
  }
}

/** Pass-through that fails at the end when the bytes do not match an artifact's size and sha256. */
class VerifyingStream extends HashingStream {
  private readonly artifact: ArtifactRecord;
  private readonly where: string;
  constructor(artifact: ArtifactRecord, where: string) {
    super();
    this.artifact = artifact;
    this.where = where;
  }
  override _flush(callback: (error?: Error | null) => void): void {
    const sha256 = this.digest();
    if (sha256 !== this.artifact.sha256 || this.bytes !== this.artifact.size) {
      callback(
        new BackupError(
          'ERR_INTEGRITY',
          `${this.artifact.key} in ${this.where} does not match the manifest (sha256 ${sha256.slice(0, 12)}…, ${this.bytes} bytes; expected ${this.artifact.sha256.slice(0, 12)}…, ${this.artifact.size} bytes): damaged or tampered`,
        ),
      );
      return;
    }
    callback();
  }
}

/** This machine's boot id (the kernel's, also inside a container); undefined where there is none. */
export async function bootId(): Promise<string | undefined> {
  try {
    return (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim() || undefined;
  } catch {
    return undefined;
  }
}

async function readAll(stream: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** A line of a bucket index that is JSON but not an IndexEntry. */
class NotAnEntry extends Error {}
