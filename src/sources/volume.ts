// The store-volume (/var/lib/deis/store) as a .tar.gz that GNU `tar -xzpf --same-owner` restores:
// read locally with numeric owners, modes, mtimes, symlinks and empty directories, or produced by
// `tar cpzf` on a CoreOS host over SSH. A file that grows while read is cut at its stat size.
import { createReadStream, type Stats } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { pack as createPack, type Header, type Pack } from 'tar-stream';
import { BackupError } from '../errors.js';
import { chain } from '../streams.js';
import { emptyCounts, type SourceCounts, type SourceRecord } from '../repository/manifest.js';
import { runRemote, type SshTarget } from '../ssh.js';
import { errorLine, note, type Source, type SourceRunContext } from './source.js';

/** Artifact name of the volume archive. */
export const VOLUME_ARTIFACT = 'volume.tar.gz';

/** Where the volume is read: a local path, or a path on a host over SSH. */
export type VolumeLocation = { path: string; ssh?: undefined } | { path: string; ssh: SshTarget };

/** The store-volume source. */
export class VolumeSource implements Source {
  readonly id = 'volume';
  readonly kind = 'volume' as const;
  private readonly location: VolumeLocation;

  constructor(location: VolumeLocation) {
    this.location = location;
  }

  async backup(ctx: SourceRunContext): Promise<SourceRecord> {
    const counts = emptyCounts();
    const warnings: string[] = [];
    const errors: string[] = [];
    const { path, ssh } = this.location;
    const origin = ssh ? `ssh ${ssh.user}@${ssh.host}:${path}` : path;
    const stored = ssh
      ? await this.remote(ssh, ctx, warnings)
      : await this.local(ctx, counts, warnings, errors);
    counts.bytesStored = stored.size;
    counts.warnings = warnings.length;
    ctx.log.info({ origin, ...counts }, 'volume captured');
    return {
      id: this.id,
      kind: 'volume',
      status: counts.failed > 0 ? 'partial' : 'success',
      origin,
      counts,
      warnings,
      errors,
      artifacts: [{ name: VOLUME_ARTIFACT, ...stored }],
    };
  }

  private async local(ctx: SourceRunContext, counts: SourceCounts, warnings: string[], errors: string[]) {
    const root = this.location.path;
    let rootStats: Stats;
    try {
      rootStats = await lstat(root);
    } catch {
      throw new BackupError('ERR_SOURCE', `volume ${root}: not found; check sources.volume.path (the container must mount /var/lib/deis/store)`);
    }
    if (!rootStats.isDirectory()) throw new BackupError('ERR_SOURCE', `volume ${root}: not a directory; check sources.volume.path`);
    const pack = createPack();
    const storing = ctx.writer.putArtifact(VOLUME_ARTIFACT, chain(pack as unknown as Readable, createGzip()), { signal: ctx.signal });
    const walking = (async () => {
      await addEntry(pack, '.', rootStats, root, undefined);
      counts.objects++;
      await walk(pack, root, '.', { counts, warnings, errors, signal: ctx.signal });
      pack.finalize();
    })().catch((err: unknown) => {
      pack.destroy(err as Error);
      throw err;
    });
    const [walked, stored] = await Promise.allSettled([walking, storing]);
    if (walked.status === 'rejected') throw walked.reason;
    if (stored.status === 'rejected') throw stored.reason;
    return stored.value;
  }

  private async remote(ssh: SshTarget, ctx: SourceRunContext, warnings: string[]) {
    const path = this.location.path;
    const sudo = ssh.user === 'root' ? '' : 'sudo -n ';
    const command = `${sudo}tar -C ${shellQuote(path)} -cpzf - .`;
    const remote = await runRemote(ssh, command, { signal: ctx.signal });
    const stored = await ctx.writer.putArtifact(VOLUME_ARTIFACT, remote.stdout, { signal: ctx.signal });
    const { code, stderr } = await remote.finished;
    const lines = stderr.split('\n').filter((l) => l.trim() !== '');
    // GNU tar exits 1 when "some files differ" (a live log grew while read): the archive is complete.
    if (code === 0 || code === 1) {
      for (const line of lines) note(warnings, line);
      return stored;
    }
    await ctx.writer.discard(VOLUME_ARTIFACT, { signal: ctx.signal });
    throw new BackupError('ERR_SOURCE', `volume ${ssh.host}:${path}: tar exited ${String(code)}: ${errorLine(stderr)}`);
  }
}

interface WalkState {
  counts: SourceCounts;
  warnings: string[];
  errors: string[];
  signal: AbortSignal;
}

async function walk(pack: Pack, dir: string, name: string, state: WalkState): Promise<void> {
  const children = (await readdir(dir)).sort();
  for (const child of children) {
    state.signal.throwIfAborted();
    const full = join(dir, child);
    const entryName = `${name}/${child}`;
    let stats: Stats;
    try {
      stats = await lstat(full);
    } catch {
      note(state.warnings, `${entryName}: vanished before it was read`);
      continue;
    }
    if (!stats.isFile() && !stats.isDirectory() && !stats.isSymbolicLink()) {
      note(state.warnings, `${entryName}: not a file, directory or symlink; skipped`);
      continue;
    }
    try {
      const linkname = stats.isSymbolicLink() ? await readlink(full) : undefined;
      const warning = await addEntry(pack, entryName, stats, full, linkname);
      if (warning) note(state.warnings, `${entryName}: ${warning}`);
      state.counts.objects++;
      if (stats.isFile()) state.counts.bytesRead += stats.size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      // A file removed after lstat leaves no entry; a tar entry once started is always completed.
      note(state.warnings, `${entryName}: vanished before it was read`);
      continue;
    }
    if (stats.isDirectory()) await walk(pack, full, entryName, state);
  }
}

/** Writes one tar entry; resolves with a warning text when a file changed while it was read. */
async function addEntry(pack: Pack, name: string, stats: Stats, full: string, linkname: string | undefined): Promise<string | undefined> {
  const header: Header = {
    name: stats.isDirectory() ? `${name}/` : name,
    mode: stats.mode & 0o7777,
    mtime: stats.mtime,
    uid: stats.uid,
    gid: stats.gid,
    type: stats.isDirectory() ? 'directory' : stats.isSymbolicLink() ? 'symlink' : 'file',
    size: stats.isFile() ? stats.size : 0,
    // No names: owners restore by number, as `tar --numeric-owner` would, whatever the host's passwd says.
    uname: '',
    gname: '',
    devmajor: 0,
    devminor: 0,
    linkname: linkname ?? '',
  };
  if (!stats.isFile()) {
    await new Promise<void>((resolve, reject) => {
      pack.entry(header, (err) => (err ? reject(err) : resolve()));
    });
    return undefined;
  }
  // Open before writing the header so a vanished file never leaves a half entry behind.
  const body = stats.size > 0 ? await openAtMost(full, stats.size) : undefined;
  const padded = { bytes: 0 };
  await new Promise<void>((resolve, reject) => {
    const entry = pack.entry(header, (err) => (err ? reject(err) : resolve()));
    if (body) pipeline(Readable.from(fitToSize(body, stats.size, padded)), entry).catch(reject);
    else entry.end(Buffer.alloc(0));
  });
  if (padded.bytes > 0) return `file shrank by ${padded.bytes} bytes while read; padded with zeros`;
  const after = await lstat(full).catch(() => undefined);
  if (after && (after.size !== stats.size || after.mtimeMs !== stats.mtimeMs)) {
    return 'file changed as we read it; archived up to its size when the run saw it';
  }
  return undefined;
}

/** Opens a read stream of the first `size` bytes; rejects (ENOENT) if the file is gone. */
async function openAtMost(path: string, size: number): Promise<Readable> {
  const stream = createReadStream(path, { start: 0, end: size - 1 });
  await new Promise<void>((resolve, reject) => {
    stream.once('open', () => {
      resolve();
    });
    stream.once('error', reject);
  });
  return stream;
}

/** Yields exactly `size` bytes: the body cut at `size`, then zeros if it shrank (as GNU tar pads). */
async function* fitToSize(body: Readable, size: number, padded: { bytes: number }): AsyncGenerator<Buffer> {
  let remaining = size;
  for await (const chunk of body) {
    const buf = chunk as Buffer;
    if (remaining === 0) break;
    const part = buf.length > remaining ? buf.subarray(0, remaining) : buf;
    remaining -= part.length;
    yield part;
  }
  body.destroy();
  padded.bytes = remaining;
  const zeros = Buffer.alloc(Math.min(remaining, 1024 * 1024));
  while (remaining > 0) {
    const n = Math.min(remaining, zeros.length);
    remaining -= n;
    yield zeros.subarray(0, n);
  }
}

/** Single-quotes a value for a POSIX shell. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}
