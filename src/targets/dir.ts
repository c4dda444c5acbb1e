// A target in a local directory (the default): each key is a file; a put writes a temporary file
// and renames it into place, so a key holds a whole object or nothing.
//
// Durability: a plain put fsyncs the file before the rename and the directory after it. A put with
// deferSync (a run's many bucket bodies) does neither; before a plain put (the index, the manifest)
// renames its file into place, the whole file system is synced once (`sync -f`), so no index or
// manifest is durable before the bodies it names. A deferred put never replaces a key in place without a sync, so a crash can lose
// only keys the run itself added. A volatile put (a lock file) is renamed into place with no sync at
// all, and leaves the deferred puts alone: a crash that loses it frees the lock, as its TTL would.
import { spawn } from 'node:child_process';
import {
  closeSync,
  fstatSync,
  createReadStream,
  fsync,
  linkSync,
  mkdirSync,
  openSync,
  readSync,
  unlinkSync,
  writeSync,
  type Dirent,
} from 'node:fs';
import { mkdir, open, readdir, rename, rm, rmdir, stat, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join, sep } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { BackupError } from '../errors.js';
import { checkKey, type ObjectInfo, type PutOptions, type Target, type UploadInfo } from './target.js';

const PARTIAL = '.partial-';
const READ_CHUNK_MAX = 1024 * 1024;
/** How many folder listings a walk reads ahead of the one it is in. */
const FOLDERS_AHEAD = 8;
/**
 * Bodies up to this size are gathered and written with synchronous calls: one thread-pool trip per
 * put (its fsync, if any) instead of seven. On the 50,000-object benchmark the trips, not the bytes,
 * were the cost.
 */
const SMALL_BODY = 128 * 1024;
/**
 * Bytes of a body written between background flushes of its data (see writeBatched). The run's last
 * sync writes back whatever is left, with nothing else to overlap: on the benchmark's first backup
 * it took 620–830 ms at 32 MiB and 130–200 ms at 4 MiB.
 */
const SYNC_BEHIND = 4 * 1024 * 1024;
const fsyncFd = promisify(fsync);
/** Opens of a new file, each after making its folder, before a missing folder is an error. */
const FOLDER_ATTEMPTS = 3;
/** A temporary nothing has written to for this long belongs to a killed put (see isStale). */
const STALE_PARTIAL_MS = 60 * 60 * 1000;

/** Directory-backed Target. */
export class DirTarget implements Target {
  readonly name: string;
  readonly defersSync = true;
  /** A killed put leaves a temporary file, which `list` yields once stale. */
  readonly leavesUploads = false;
  private readonly root: string;
  /** Deferred puts have returned since the last file-system sync began. */
  private unsynced = false;
  /** The file-system sync in progress, if any. */
  private syncing: Promise<void> | undefined;
  /** Whether `sync -f` works here; until it is known to, deferred puts are plain puts. */
  private syncWorks: Promise<boolean> | undefined;
  /** Temporaries are named by this instance's tag and a counter (no random draw per put). */
  private readonly tag = `${process.pid.toString(36)}-${randomBytes(4).toString('hex')}`;
  private temps = 0;

  constructor(root: string) {
    this.root = root;
    this.name = `dir:${root}`;
  }

  async put(key: string, body: Readable, opts: PutOptions): Promise<void> {
    const file = this.path(key);
    const temp = this.temporary(file);
    try {
      const volatile = opts.volatile === true;
      const deferred = !volatile && opts.deferSync === true && (await this.canDefer());
      if (opts.size !== undefined && opts.size <= SMALL_BODY) {
        await writeSmall(temp, body, opts.size, !deferred && !volatile, opts.observe);
      } else {
        const handle = await openNew(temp);
        try {
          await writeBatched(handle, body, opts);
          if (!deferred && !volatile) await handle.sync();
        } finally {
          await handle.close();
        }
      }
      if (volatile) {
        // Replaced or added in place: a crash may lose it, and nothing else waits for it.
        await rename(temp, file);
        return;
      }
      // Deferred puts that returned before this one's body ended are synced before it appears:
      // an index streamed during a run's captures still lands after the bodies it names.
      if (!deferred) await this.syncDeferred();
      await this.place(temp, file, deferred);
    } catch (err) {
      body.destroy();
      await rm(temp, { force: true });
      throw this.failure(key, err, opts.signal);
    }
  }

  /**
   * Moves a written temporary to its key. A plain put fsyncs the file (before) and the directory
   * (after the rename). A deferred put links a new key without either, and replaces an existing
   * key only once its bytes are synced.
   */
  private async place(temp: string, file: string, deferred: boolean): Promise<void> {
    if (deferred && placeNew(temp, file)) {
      this.unsynced = true;
      return;
    }
    if (deferred) await fsyncPath(temp);
    await rename(temp, file);
    // The rename is only durable once the directory entry is on disk too.
    await fsyncPath(dirname(file));
  }

  /** None: see leavesUploads. */
  listUploads(_prefix: string, opts: { signal: AbortSignal }): AsyncIterable<UploadInfo> {
    return {
      [Symbol.asyncIterator]: () => ({
        next: () =>
          opts.signal.aborted
            ? Promise.reject(opts.signal.reason as Error)
            : Promise.resolve({ done: true, value: undefined }),
      }),
    };
  }

  /** There are no uploads to drop (listUploads yields none). */
  abortUpload(_upload: UploadInfo, _opts: { signal: AbortSignal }): Promise<void> {
    return Promise.resolve();
  }

  async adopt(_key: string, opts: { signal: AbortSignal }): Promise<void> {
    opts.signal.throwIfAborted();
    // Where `sync -f` fails, every put was a plain put and the earlier run's object was synced with it.
    if (await this.canDefer()) this.unsynced = true;
  }

  /** The error a failed put reports: the abort reason, or ERR_TARGET naming the key. */
  private failure(key: string, err: unknown, signal: AbortSignal): unknown {
    if (signal.aborted) return signal.reason;
    if (err instanceof BackupError) return err;
    return new BackupError('ERR_TARGET', `put ${key} to ${this.name}: ${(err as Error).message}`, {
      cause: err,
    });
  }

  private temporary(file: string): string {
    return `${file}${PARTIAL}${this.tag}-${(this.temps++).toString(36)}`;
  }

  /**
   * Makes every deferred put that has returned durable: one sync of the file system holding the
   * root. A sync already running may have started before some of them returned: it is waited
   * for, and another runs if any returned since it began.
   */
  private async syncDeferred(): Promise<void> {
    while (this.syncing !== undefined) await this.syncing.catch(() => undefined);
    if (!this.unsynced) return;
    this.unsynced = false;
    this.syncing = syncFileSystem(this.root).finally(() => {
      this.syncing = undefined;
    });
    try {
      await this.syncing;
    } catch (err) {
      this.unsynced = true;
      throw new BackupError('ERR_TARGET', `sync ${this.name}: ${(err as Error).message}`, { cause: err });
    }
  }

  private canDefer(): Promise<boolean> {
    this.syncWorks ??= syncFileSystem(this.root).then(
      () => true,
      () => false,
    );
    return this.syncWorks;
  }

  get(key: string, opts: { signal: AbortSignal }): Promise<Readable> {
    try {
      return Promise.resolve(this.openRead(key, opts.signal));
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  private openRead(key: string, signal: AbortSignal): Readable {
    signal.throwIfAborted();
    // The file is open before the stream is returned: a key removed after it was listed (a lock
    // released, a restore point forgotten) is ERR_NOT_FOUND here, not an ENOENT from a later read.
    // Synchronous calls: a file of at most SMALL_BODY bytes is then one open, fstat, read and close,
    // where a stream costs five trips through the thread pool (on the 50,000-object restore, 0.3 ms
    // of the main thread per object).
    let fd: number;
    try {
      fd = openSync(this.path(key), 'r');
    } catch (err) {
      throw this.readFailure(key, err);
    }
    let owned = true;
    try {
      const info = fstatSync(fd);
      if (!info.isFile()) throw this.notFound(key);
      if (info.size <= SMALL_BODY) return bodyOf(readWhole(fd, info.size));
      // Reads of up to 1 MiB: a 64 KiB default costs 16 times the reads (each a trip through the
      // thread pool) on large bodies.
      const highWaterMark = Math.min(READ_CHUNK_MAX, info.size + 1);
      const stream = createReadStream('', { fd, signal, highWaterMark });
      owned = false;
      return stream;
    } catch (err) {
      throw err instanceof BackupError ? err : this.readFailure(key, err);
    } finally {
      if (owned) closeSync(fd);
    }
  }

  private notFound(key: string): BackupError {
    return new BackupError('ERR_NOT_FOUND', `${key} not found in ${this.name}`);
  }

  /** ERR_NOT_FOUND for a key that is not there, else ERR_TARGET naming it. */
  private readFailure(key: string, err: unknown): BackupError {
    if (isMissing(err)) return this.notFound(key);
    return new BackupError('ERR_TARGET', `get ${key} from ${this.name}: ${(err as Error).message}`, {
      cause: err,
    });
  }

  async stat(key: string, _opts: { signal: AbortSignal }): Promise<ObjectInfo | undefined> {
    try {
      const info = await stat(this.path(key));
      return info.isFile() ? { key, size: info.size } : undefined;
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw new BackupError('ERR_TARGET', `stat ${key} in ${this.name}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  async *list(prefix: string, opts: { signal: AbortSignal }): AsyncIterable<ObjectInfo> {
    for await (const file of this.files(prefix, opts.signal)) {
      const info = await stat(file.path).catch(() => undefined);
      if (info && (!file.partial || isStale(info.mtimeMs))) yield { key: file.key, size: info.size };
    }
  }

  async *listKeys(prefix: string, opts: { signal: AbortSignal }): AsyncIterable<string> {
    for await (const file of this.files(prefix, opts.signal)) {
      if (!file.partial) {
        yield file.key;
        continue;
      }
      const info = await stat(file.path).catch(() => undefined);
      if (info && isStale(info.mtimeMs)) yield file.key;
    }
  }

  /** The files under the deepest directory the prefix names whose keys start with prefix. */
  private files(
    prefix: string,
    signal: AbortSignal,
  ): AsyncIterable<{ key: string; path: string; partial: boolean }> {
    const slash = prefix.lastIndexOf('/');
    const dirKey = slash < 0 ? '' : prefix.slice(0, slash);
    return this.walk(dirKey === '' ? this.root : this.path(dirKey), dirKey, prefix, signal);
  }

  async remove(key: string, _opts: { signal: AbortSignal }): Promise<void> {
    const file = this.path(key);
    await rm(file, { force: true });
    // The folders the key emptied go too: a forgotten restore point or a pruned blob fan-out
    // would otherwise leave a folder that every later scan reads. A put racing this recreates it.
    for (let dir = dirname(file); dir.length > this.root.length; dir = dirname(dir)) {
      try {
        await rmdir(dir);
      } catch {
        break;
      }
    }
  }

  /**
   * Each folder is read whole with one readdir (one thread-pool trip; opendir took three or more),
   * its files first, then its sub-folders, whose readdirs run up to FOLDERS_AHEAD ahead of the walk:
   * the blob fan-out is 256 folders. Keys are built on the way down, not by path.relative per file.
   */
  private async *walk(
    dir: string,
    dirKey: string,
    prefix: string,
    signal: AbortSignal,
    listing: Promise<Dirent[] | undefined> = this.readFolder(dir, prefix),
  ): AsyncIterable<{ key: string; path: string; partial: boolean }> {
    const entries = await listing;
    if (entries === undefined) return;
    const folders: { path: string; key: string }[] = [];
    for (const entry of entries) {
      signal.throwIfAborted();
      const path = `${dir}${sep}${entry.name}`;
      const key = dirKey === '' ? entry.name : `${dirKey}/${entry.name}`;
      if (entry.isDirectory()) {
        if (key.startsWith(prefix) || prefix.startsWith(`${key}/`)) folders.push({ path, key });
      } else if (entry.isFile() && key.startsWith(prefix)) {
        yield { key, path, partial: entry.name.includes(PARTIAL) };
      }
    }
    const listings: Promise<Dirent[] | undefined>[] = [];
    for (const [i, folder] of folders.entries()) {
      while (listings.length < Math.min(folders.length, i + FOLDERS_AHEAD)) {
        const ahead = this.readFolder((folders[listings.length] ?? folder).path, prefix);
        // A walk left early never awaits the readdirs ahead: their failures are not unhandled.
        ahead.catch(() => undefined);
        listings.push(ahead);
      }
      yield* this.walk(folder.path, folder.key, prefix, signal, listings[i]);
    }
  }

  /** The entries of a folder, or undefined when it does not exist. */
  private async readFolder(dir: string, prefix: string): Promise<Dirent[] | undefined> {
    try {
      return await readdir(dir, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new BackupError('ERR_TARGET', `list ${prefix} in ${this.name}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  private path(key: string): string {
    return join(this.root, ...checkKey(key).split('/'));
  }
}

/**
 * Copies body into a new file, gathering chunks up to 1 MiB per write: each write is a thread-pool
 * trip, and a network body arrives in chunks of 16–64 KiB (a write stream writes each one). On the
 * 1 GiB object that was 2.6 s instead of 3.1–4.0 s. One write is in flight while the next batch
 * gathers: awaiting each write before reading on stalled the socket for as long as the disk took.
 * Every SYNC_BEHIND bytes the file's data is flushed in the background, so that the sync a put
 * ends with (its own or the run's) finds little left to write instead of the whole body.
 */
async function writeBatched(
  handle: FileHandle,
  body: Readable,
  { signal, observe, release }: PutOptions,
): Promise<void> {
  let batch: Buffer[] = [];
  let batched = 0;
  let position = 0;
  let flushedTo = 0;
  // A write or flush that fails while the next batch gathers is thrown by the next flush or the end.
  let writing: Promise<void> = Promise.resolve();
  let syncing: Promise<void> = Promise.resolve();
  const write = async (chunks: Buffer[], at: number, end: number): Promise<void> => {
    await writeAll(handle, chunks, at);
    if (release) for (const chunk of chunks) release(chunk);
    if (end - flushedTo < SYNC_BEHIND) return;
    await syncing;
    flushedTo = end;
    syncing = handle.datasync();
    syncing.catch(() => undefined);
  };
  const flush = async (): Promise<void> => {
    await writing;
    writing = write(batch, position, position + batched);
    writing.catch(() => undefined);
    position += batched;
    batch = [];
    batched = 0;
  };
  for await (const chunk of body) {
    signal.throwIfAborted();
    observe?.(chunk as Buffer);
    batch.push(chunk as Buffer);
    batched += (chunk as Buffer).length;
    if (batched >= READ_CHUNK_MAX) await flush();
  }
  if (batched > 0) await flush();
  await writing;
  await syncing;
}

/** Writes chunks at position, finishing a short write (rare on a regular file) from where it stopped. */
async function writeAll(handle: FileHandle, chunks: Buffer[], position: number): Promise<void> {
  const { bytesWritten } = await handle.writev(chunks, position);
  let length = 0;
  for (const chunk of chunks) length += chunk.length;
  if (bytesWritten >= length) return;
  const rest = Buffer.concat(chunks).subarray(bytesWritten);
  let at = 0;
  while (at < rest.length) {
    at += (await handle.write(rest, at, rest.length - at, position + bytesWritten + at)).bytesWritten;
  }
}

/** Whether a file-system error says the key's file (or a folder on its path) is not there. */
function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** The `size` bytes of the open file `fd`, read with synchronous calls. */
function readWhole(fd: number, size: number): Buffer {
  const data = Buffer.allocUnsafe(size);
  let length = 0;
  for (let n = -1; n !== 0 && length < size; length += n) n = readSync(fd, data, length, size - length, null);
  if (length !== size) throw new Error(`${size} bytes expected, ${length} read`);
  return data;
}

/**
 * A stream of bytes already in memory. Lighter than Readable.from, which drives an iterator with a
 * promise per read: on a verify of 50,000 small blobs that garbage set the daemon's peak.
 */
function bodyOf(data: Buffer): Readable {
  const body = new Readable({ read: () => undefined });
  body.push(data);
  body.push(null);
  return body;
}

/**
 * A temporary is a put in progress and not an object, unless nothing has written to it for
 * STALE_PARTIAL_MS: then a kill -9 left it, and it is listed so that prune can remove it.
 */
function isStale(mtimeMs: number): boolean {
  return Date.now() - mtimeMs > STALE_PARTIAL_MS;
}

/**
 * Writes a body of announced size (at most SMALL_BODY) with synchronous calls; fsyncs it when
 * `durable`. A body longer than announced fails rather than grow without bound.
 */
async function writeSmall(
  temp: string,
  body: Readable,
  size: number,
  durable: boolean,
  observe: ((chunk: Buffer) => void) | undefined,
): Promise<void> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of body) {
    observe?.(chunk as Buffer);
    length += (chunk as Buffer).length;
    if (length > size) throw new Error(`body longer than its announced ${size} bytes`);
    chunks.push(chunk as Buffer);
  }
  const data = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, length);
  let fd: number | undefined;
  for (let attempt = 1; fd === undefined; attempt++) {
    try {
      fd = openSync(temp, 'wx');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt === FOLDER_ATTEMPTS) throw err;
      makeDirsSync(dirname(temp));
    }
  }
  try {
    for (let written = 0; written < data.length;) written += writeSync(fd, data, written);
    if (durable) await fsyncFd(fd);
  } finally {
    closeSync(fd);
  }
}

/** Why a hard link can fail on a file system that has none (some FUSE and SMB mounts). */
const NO_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EMLINK']);

/**
 * Links a written temporary to its key when the key is new, and drops the temporary; false (the
 * temporary kept) when the key exists, since replacing it must not happen before the bytes are
 * durable, and where the file system cannot link: the caller then syncs and renames.
 */
function placeNew(temp: string, file: string): boolean {
  try {
    linkSync(temp, file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? '';
    if (code === 'EEXIST' || NO_LINKS.has(code)) return false;
    throw err;
  }
  unlinkSync(temp);
  return true;
}

async function fsyncPath(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Flushes the whole file system holding `path` (syncfs(2), through coreutils `sync -f`). */
function syncFileSystem(path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('sync', ['-f', path], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve();
      else reject(new Error(stderr.trim().split('\n')[0] || `sync -f exited ${String(code)}`));
    });
  });
}

/**
 * Creates a new file for writing, and its parent directories when missing. Opening first and
 * creating directories only on ENOENT saves a mkdir per put: most puts go to an existing directory.
 * A folder that a remove emptied and took away between the mkdir and the open is made again.
 */
async function openNew(file: string): Promise<FileHandle> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await open(file, 'wx');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt === FOLDER_ATTEMPTS) throw err;
    }
    await makeDirs(dirname(file));
  }
}

/**
 * `mkdir -p` that ends. Node's recursive mkdir loops for ever, deaf to signals, where mkdir answers
 * ENOENT under a parent that exists (a target path under /proc, say); this one fails there instead.
 */
function makeDirsSync(path: string): void {
  try {
    mkdirSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    if (code !== 'ENOENT' || dirname(path) === path) throw err;
    makeDirsSync(dirname(path));
    try {
      mkdirSync(path);
    } catch (again) {
      if ((again as NodeJS.ErrnoException).code !== 'EEXIST') throw again;
    }
  }
}

/** The same as makeDirsSync, off the main thread. */
async function makeDirs(path: string): Promise<void> {
  try {
    await mkdir(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    if (code !== 'ENOENT' || dirname(path) === path) throw err;
    await makeDirs(dirname(path));
    await mkdir(path).catch((again: unknown) => {
      if ((again as NodeJS.ErrnoException).code !== 'EEXIST') throw again;
    });
  }
}
