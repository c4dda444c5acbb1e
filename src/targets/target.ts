// Where restore points live: a flat key space of immutable objects, keys '/'-separated, relative to
// the target's own prefix. Implementations classify not-found themselves.
import type { Readable } from 'node:stream';

/** What a stat or list tells about a stored object. */
export interface ObjectInfo {
  key: string;
  size: number;
}

/**
 * An upload a put began on the target and neither finished nor dropped: what a put killed midway
 * (SIGKILL, a crash, an abort that failed) leaves behind, holding storage no listing shows.
 */
export interface UploadInfo {
  /** The key the put was storing. */
  key: string;
  /** The target's id of the upload. */
  uploadId: string;
  /**
   * When the upload began, by this machine's clock. Never earlier than the true moment: the
   * target's own time is converted with the clock difference its answers show, rounded against us.
   */
  initiated: Date;
}

/** Options of a put. */
export interface PutOptions {
  signal: AbortSignal;
  /** The body's length when known in advance. */
  size?: number;
  /**
   * The put may return before its object is on stable storage; a put without deferSync makes every
   * deferred put that returned before its body ended durable before its own object appears. Meant for the many bodies a run stores before its
   * manifest. Until then a crash of the machine may lose the object, never a key stored before.
   */
  deferSync?: boolean;
  /**
   * The object matters only while its writer runs (a lock file): it need never be on stable
   * storage, and a crash may lose it. A directory writes it without any sync, and it does not count
   * among the deferred puts that a later plain put makes durable.
   */
  volatile?: boolean;
  /**
   * Called with each chunk of the body, in order, as the target takes it (the repository hashes
   * bodies this way: a pass-through stream in between cost about 13 % of a bucket backup's CPU).
   */
  observe?: (chunk: Buffer) => void;
  /**
   * May be called with a chunk of the body once the target is done with it (written, never read
   * again): the body's source then fills it again for a later body instead of allocating anew.
   */
  release?: (chunk: Buffer) => void;
}

/** Storage for restore points. */
export interface Target {
  /** For logs and messages, e.g. "s3://backups/prod" or "dir:/var/lib/deis-backup". Never holds credentials. */
  readonly name: string;
  /**
   * True when a put with deferSync can still be lost by a crash of this machine after it returned
   * (a directory); false when every put is durable once it returns (S3).
   */
  readonly defersSync: boolean;
  /**
   * True when a put killed midway can leave an unfinished upload that `list` does not show (S3
   * multipart uploads): `listUploads` finds them. False where it leaves files (a directory).
   */
  readonly leavesUploads: boolean;
  /**
   * Stores body under key, replacing any object there. The object appears whole or not at all.
   * Not retried: a stream cannot be rewound. The target consumes the stream. On an abort it
   * rejects with the signal's reason and stops its requests, but an object whose body was already
   * sent whole may still appear: a caller that must not leave it removes the key.
   */
  put(key: string, body: Readable, opts: PutOptions): Promise<void>;
  /** Opens the object for reading. Throws BackupError('ERR_NOT_FOUND') if key does not exist. */
  get(key: string, opts: { signal: AbortSignal }): Promise<Readable>;
  /** undefined means "does not exist"; existence checks throw only when the target cannot answer. */
  stat(key: string, opts: { signal: AbortSignal }): Promise<ObjectInfo | undefined>;
  /** Yields each object whose key starts with prefix exactly once, in no particular order. */
  list(prefix: string, opts: { signal: AbortSignal }): AsyncIterable<ObjectInfo>;
  /** The keys `list` yields, where that is cheaper than their sizes (a directory: no stat per file). */
  listKeys(prefix: string, opts: { signal: AbortSignal }): AsyncIterable<string>;
  /** Idempotent: removing a missing key succeeds. */
  remove(key: string, opts: { signal: AbortSignal }): Promise<void>;
  /**
   * Yields each unfinished upload whose key starts with prefix exactly once, in no particular order.
   * A put still in progress is listed too: telling the two apart is the caller's (the cluster lock,
   * and `initiated`). Yields nothing where leavesUploads is false.
   */
  listUploads(prefix: string, opts: { signal: AbortSignal }): AsyncIterable<UploadInfo>;
  /**
   * Drops an unfinished upload and the parts it holds. Idempotent: an upload already finished or
   * dropped succeeds. A put still sending to it fails.
   */
  abortUpload(upload: UploadInfo, opts: { signal: AbortSignal }): Promise<void>;
  /**
   * Takes over `key`, stored by an earlier run with deferSync and maybe never made durable, as if
   * this run had just put it with deferSync: the next put without deferSync makes it durable
   * before its own object appears. Where every put is durable once it returns, nothing to do.
   */
  adopt(key: string, opts: { signal: AbortSignal }): Promise<void>;
}

/** Rejects keys that could leave the target's root; returns the key. */
export function checkKey(key: string): string {
  if (
    key === '' ||
    key.startsWith('/') ||
    key.split('/').some((part) => part === '..' || part === '.' || part === '')
  ) {
    throw new Error(`invalid target key ${JSON.stringify(key)}`);
  }
  return key;
}
