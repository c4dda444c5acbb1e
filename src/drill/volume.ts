// The drill's volume check: walk the volume archive (through its sha256 check) and compare each entry
// with what the restore extracted into the scratch directory: type, mode, owner, size, mtime, symlink
// target and file content; then list what the directory holds beyond the archive.
import { createHash } from 'node:crypto';
import { createReadStream, type Stats } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import type { Readable } from 'node:stream';
import { describeError } from '../errors.js';
import type { ArtifactRecord } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import { checkEntry, type ArchiveEntry } from '../restore/volume.js';
import { tarGzEntries } from '../tar-entries.js';
import { ProblemList } from './pool.js';

/** What comparing the volume found. */
export interface VolumeComparison {
  entries: number;
  bytes: number;
  problems: ProblemList;
}

/**
 * Compares the directory `root` with the archive entry by entry, streaming: one entry's body and
 * one file are read at a time. Problems name the path under `root`; a damaged or unreadable archive
 * is thrown (ERR_INTEGRITY from the repository), as is an abort.
 */
export async function compareVolume(
  repository: Repository,
  artifact: ArtifactRecord,
  root: string,
  opts: { signal: AbortSignal },
): Promise<VolumeComparison> {
  const problems = new ProblemList();
  const result = { entries: 0, bytes: 0, problems };
  const archived = new Set<string>();
  for await (const item of tarGzEntries(await repository.openVerified(artifact, opts))) {
    opts.signal.throwIfAborted();
    const entry = checkEntry(item.header);
    result.entries++;
    archived.add(entry.path);
    const full = entry.path === '' ? root : join(root, entry.path);
    let wanted: Promise<string | undefined>;
    if (entry.type === 'file') {
      result.bytes += entry.size;
      wanted = sha256Of(item);
    } else {
      item.resume();
      wanted = Promise.resolve(undefined);
    }
    const present = comparePath(full, entry, root).catch((err: unknown) => ({
      lines: [`cannot be read: ${describeError(err)}`],
      sha256: undefined,
    }));
    const [sha256, differences] = await Promise.all([wanted, present]);
    if (sha256 !== undefined && differences.sha256 !== undefined && sha256 !== differences.sha256)
      differences.lines.push('sha256 differs');
    if (differences.lines.length > 0) problems.add(`${full}: ${differences.lines.join(', ')}`);
  }
  for await (const path of walk(root, '')) {
    if (!archived.has(path)) problems.add(`${join(root, path)}: not in the archive`);
  }
  return result;
}

/** What differs at one path, and the sha256 of the file there (for a regular file). */
async function comparePath(
  full: string,
  entry: ArchiveEntry,
  root: string,
): Promise<{ lines: string[]; sha256?: string }> {
  let st: Stats;
  try {
    st = await lstat(full);
  } catch (err) {
    return { lines: [(err as { code?: string }).code === 'ENOENT' ? 'missing' : describeError(err)] };
  }
  const lines: string[] = [];
  const differs = (what: string, got: string | number, want: string | number): void => {
    if (got !== want) lines.push(`${what} ${got} differs from ${want}`);
  };
  const type = st.isSymbolicLink()
    ? 'symlink'
    : st.isDirectory()
      ? 'directory'
      : st.isFile()
        ? 'file'
        : st.isFIFO()
          ? 'fifo'
          : 'special file';
  // A hard link's entry is a regular file sharing the inode of the entry it names.
  differs('type', type, entry.type === 'link' ? 'file' : entry.type);
  if (lines.length > 0) return { lines };
  differs('uid', st.uid, entry.uid);
  differs('gid', st.gid, entry.gid);
  // A symlink's own mode is always 777 on Linux and not restorable: only its target counts.
  if (entry.type !== 'symlink') differs('mode', (st.mode & 0o7777).toString(8), entry.mode.toString(8));
  if (entry.type !== 'link') differs('mtime', Math.floor(st.mtimeMs / 1000), entry.mtime);
  switch (entry.type) {
    case 'file':
      differs('size', st.size, entry.size);
      return { lines, sha256: await sha256Of(createReadStream(full)) };
    case 'symlink':
      differs('symlink target', await readlink(full), entry.linkname);
      return { lines };
    case 'link': {
      const target = join(root, posix.normalize(entry.linkname).replace(/^\.\//, ''));
      const other = await lstat(target).catch(() => undefined);
      if (other?.ino !== st.ino) lines.push(`is not a hard link to ${target}`);
      return { lines };
    }
    case 'directory':
    case 'fifo':
      return { lines };
  }
}

/** Reads a stream to its end and returns the sha256 of its bytes. */
async function sha256Of(stream: Readable): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of stream) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Every path under `dir` relative to the root, without following symlinks. */
async function* walk(dir: string, rel: string): AsyncIterable<string> {
  for (const item of await readdir(dir, { withFileTypes: true })) {
    const path = rel === '' ? item.name : `${rel}/${item.name}`;
    yield path;
    if (item.isDirectory()) yield* walk(join(dir, item.name), path);
  }
}
