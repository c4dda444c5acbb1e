// A target in a local directory (the default): each key is a file; a put writes a temporary file
// and renames it into place, so a key holds a whole object or nothing.
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, opendir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BackupError } from '../errors.js';
import { checkKey, type ObjectInfo, type Target } from './target.js';

const PARTIAL = '.partial-';

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
      await mkdir(dirname(file), { recursive: true });
      await pipeline(body, createWriteStream(temp), { signal: opts.signal });
      const handle = await open(temp, 'r');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
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
    if ((await this.stat(key, opts)) === undefined) {
      throw new BackupError('ERR_NOT_FOUND', `${key} not found in ${this.name}`);
    }
    return createReadStream(file, { signal: opts.signal });
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
      } else if (entry.isFile() && key.startsWith(prefix) && !entry.name.includes(PARTIAL)) {
        const info = await stat(full).catch(() => undefined);
        if (info) yield { key, size: info.size };
      }
    }
  }

  private path(key: string): string {
    return join(this.root, ...checkKey(key).split('/'));
  }
}
