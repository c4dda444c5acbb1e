// A target in a local directory (the default): each key is a file; a put writes a temporary file
// and renames it into place, so a key holds a whole object or nothing.
import { createReadStream } from 'node:fs';
import { mkdir, open, opendir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BackupError } from '../errors.js';
import { checkKey, type ObjectInfo, type Target } from './target.js';

const PARTIAL = '.partial-';
const READ_CHUNK_MIN = 64 * 1024;
const READ_CHUNK_MAX = 1024 * 1024;
/** A temporary nothing has written to for this long belongs to a killed put (see walk). */
const STALE_PARTIAL_MS = 60 * 60 * 1000;

/** Directory-backed Target. */
export class DirTarget implements Target {
  readonly name: string;
  private readonly root: string;

  constructor(root: string) {
    this.root = root;
    this.name = `dir:${root}`;
  }

  async put(key: string, body: Readable, opts: { signal: AbortSignal; size?: number }): Promise<void> {
    const file = this.path(key);
    const temp = `${file}${PARTIAL}${randomBytes(6).toString('hex')}`;
    try {
      const handle = await openNew(temp);
      // flush: the stream fsyncs the descriptor it wrote before closing it, so the data is durable
      // before the rename without opening the file a second time.
      await pipeline(body, handle.createWriteStream({ flush: true }), { signal: opts.signal });
      await rename(temp, file);
      // The rename is only durable once the directory entry is on disk too.
      const parent = await open(dirname(file), 'r');
      try {
        await parent.sync();
      } finally {
        await parent.close();
      }
    } catch (err) {
      body.destroy();
      await rm(temp, { force: true });
      if (opts.signal.aborted) throw opts.signal.reason;
      throw new BackupError('ERR_TARGET', `put ${key} to ${this.name}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  async get(key: string, opts: { signal: AbortSignal }): Promise<Readable> {
    const file = this.path(key);
    const info = await this.stat(key, opts);
    if (info === undefined) {
      throw new BackupError('ERR_NOT_FOUND', `${key} not found in ${this.name}`);
    }
    // Reads of up to 1 MiB: a 64 KiB default costs 16 times the reads (each a trip through the
    // thread pool) on large bodies; small bodies get a buffer of their own size.
    const highWaterMark = Math.min(READ_CHUNK_MAX, Math.max(READ_CHUNK_MIN, info.size + 1));
    return createReadStream(file, { signal: opts.signal, highWaterMark });
  }

  async stat(key: string, _opts: { signal: AbortSignal }): Promise<ObjectInfo | undefined> {
    try {
      const info = await stat(this.path(key));
      return info.isFile() ? { key, size: info.size } : undefined;
    } catch (err) {
      if (
        (err as NodeJS.ErrnoException).code === 'ENOENT' ||
        (err as NodeJS.ErrnoException).code === 'ENOTDIR'
      ) {
        return undefined;
      }
      throw new BackupError('ERR_TARGET', `stat ${key} in ${this.name}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  async *list(prefix: string, opts: { signal: AbortSignal }): AsyncIterable<ObjectInfo> {
    // Walk from the deepest directory the prefix names, then filter on the full prefix.
    const slash = prefix.lastIndexOf('/');
    const start = slash < 0 ? this.root : join(this.root, prefix.slice(0, slash));
    yield* this.walk(start, prefix, opts.signal);
  }

  async remove(key: string, _opts: { signal: AbortSignal }): Promise<void> {
    await rm(this.path(key), { force: true });
  }

  private async *walk(dir: string, prefix: string, signal: AbortSignal): AsyncIterable<ObjectInfo> {
    let handle;
    try {
      handle = await opendir(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw new BackupError('ERR_TARGET', `list ${prefix} in ${this.name}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    for await (const entry of handle) {
      signal.throwIfAborted();
      const full = join(dir, entry.name);
      const key = relative(this.root, full).split(sep).join('/');
      if (entry.isDirectory()) {
        if (key.startsWith(prefix) || prefix.startsWith(`${key}/`)) yield* this.walk(full, prefix, signal);
      } else if (entry.isFile() && key.startsWith(prefix)) {
        const info = await stat(full).catch(() => undefined);
        // A temporary is a put in progress and not an object, unless nothing has written to it for
        // STALE_PARTIAL_MS: then a kill -9 left it, and it is listed so that prune can remove it.
        if (info && (!entry.name.includes(PARTIAL) || Date.now() - info.mtimeMs > STALE_PARTIAL_MS))
          yield { key, size: info.size };
      }
    }
  }

  private path(key: string): string {
    return join(this.root, ...checkKey(key).split('/'));
  }
}

/**
 * Creates a new file for writing, and its parent directories when missing. Opening first and
 * creating directories only on ENOENT saves a mkdir per put: most puts go to an existing directory.
 */
async function openNew(file: string): Promise<FileHandle> {
  try {
    return await open(file, 'wx');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await mkdir(dirname(file), { recursive: true });
  return open(file, 'wx');
}
