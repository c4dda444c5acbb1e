// The store-volume (/var/lib/deis/store) as a .tar.gz that GNU `tar -xzpf --same-owner` restores:
// read locally with numeric owners, modes, mtimes, symlinks and empty directories, or produced by
// `tar cpzf` on a CoreOS host over SSH. A file that grows while read is cut at its stat size.
import { constants, type BigIntStats } from 'node:fs';
import { lstat, open, readdir, readlink, type FileHandle } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { finished, PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as delay } from 'node:timers/promises';
import type { Header, Pack } from 'tar-stream';
import { BackupError, describeError } from '../errors.js';
import { ByteCounter, chain, createParallelGzip, Stoppable } from '../streams.js';
import { emptyCounts, type SourceCounts, type SourceRecord } from '../repository/manifest.js';
import { asRoot, runCommand, shellQuote } from '../command.js';
import { inStore, storeNotMounted } from '../store-mount.js';
import type { SshTarget } from '../ssh.js';
import { errorLine, Findings, type Source, type SourceRunContext } from './source.js';
import { excludeMatcher, findExcludeTests, tarExcludeOptions } from './volume-exclude.js';
import { MountCalls, strand, strandedSince } from './mount-calls.js';

/** Artifact name of the volume archive. */
export const VOLUME_ARTIFACT = 'volume.tar.gz';

/**
 * Where the volume is read: a local path, or a path on a host over SSH; `exclude` holds the
 * sources.volume.exclude patterns (volume-exclude.ts).
 */
export type VolumeLocation = ({ path: string; ssh?: undefined } | { path: string; ssh: SshTarget }) & {
  exclude?: readonly string[];
  /** How long the copy may take in nothing before it is cut off (`sources.volume.timeoutMs`). */
  timeoutMs?: number;
};

/** sources.volume.timeoutMs when none is given. */
export const VOLUME_TIMEOUT_MS = 600_000;

/**
 * What a copy has taken in so far, whether any of it waits on a slow reader (the target), whether
 * the source side has ended (the rest is the target's), and the put of the archive once started.
 */
interface Progress {
  bytes: () => number;
  waiting: () => boolean;
  ended: boolean;
  storing: Promise<unknown> | undefined;
}

/** How long a copy that was cut off waits for its put to give up before the artifact is discarded. */
const PUT_SETTLE_MS = 10_000;

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
    const findings = new Findings(counts);
    const { path, ssh } = this.location;
    const origin = ssh ? `ssh ${ssh.user}@${ssh.host}:${path}` : path;
    const stored = await this.capture(ctx, counts, findings);
    counts.bytesStored = stored.size;
    const excluded = this.location.exclude ?? [];
    ctx.log.info({ origin, ...counts, ...(excluded.length > 0 ? { excluded } : {}) }, 'volume captured');
    return {
      id: this.id,
      kind: 'volume',
      status: counts.failed > 0 ? 'partial' : 'success',
      origin,
      ...(excluded.length > 0 ? { excluded: [...excluded] } : {}),
      counts,
      warnings: findings.warnings,
      errors: findings.errors,
      artifacts: [{ name: VOLUME_ARTIFACT, ...stored }],
    };
  }

  /**
   * The volume's archive, stored; cut off when it takes in nothing for timeoutMs while none of it
   * waits on the target. A hung CephFS blocks the file-system call that reads it for good: the run,
   * the database after it and the cluster lock would wait with it. The blocked call is left behind
   * (it holds one of libuv's four threads until the mount answers), and no new copy of a local
   * volume starts until it has returned (mount-calls.ts).
   */
  private async capture(ctx: SourceRunContext, counts: SourceCounts, findings: Findings) {
    const { path, ssh } = this.location;
    const timeoutMs = this.location.timeoutMs ?? VOLUME_TIMEOUT_MS;
    const waitingSince = ssh ? undefined : strandedSince(path);
    if (waitingSince !== undefined) {
      throw new BackupError(
        'ERR_SOURCE',
        `volume ${path}: a copy stopped at ${waitingSince.toISOString()} still waits on the mount, so no new copy was started; check that the store volume's mount answers (ls in the container): the next backup reads it once it does`,
      );
    }
    const stop = new Stoppable(ctx.signal);
    const signal = stop.signal;
    const calls = new MountCalls(signal);
    const progress: Progress = { bytes: () => 0, waiting: () => false, ended: false, storing: undefined };
    stop.watch(
      () => progress.bytes(),
      // Once the source side has ended, only the target's work is left: not the mount's to cut off.
      () => progress.ended || progress.waiting(),
      timeoutMs,
    );
    const sub = { ...ctx, signal };
    const copying = (async () => {
      // The Deis store before deis-store-volume mounted CephFS there is the host's own folder: a copy
      // of it would stand as a restore point of an empty (or stale) store, and retention then drops
      // the good ones. Other paths (a copy of the store, tests) are not checked.
      if (inStore(posix.normalize(path))) {
        const unmounted = await storeNotMounted({ path, ssh }, { signal }, 'backup');
        if (unmounted !== undefined) throw new BackupError('ERR_SOURCE', unmounted);
      }
      return ssh
        ? await this.remote(ssh, sub, counts, findings, progress)
        : await this.local(sub, counts, findings, progress, calls);
    })();
    try {
      // The copy's end when it cannot end itself: a call blocked on the mount ignores any abort.
      return await stop.race(copying);
    } catch (err) {
      // Whatever stopped it (the watchdog, a cancel, a lost lock, a shutdown), a call still waiting
      // on the mount keeps the next copy of it from starting.
      if (!ssh) strand(path, calls, new Date());
      // A shutdown is the run's abort, not the volume's failure.
      ctx.signal.throwIfAborted();
      if (!stop.cutOff) throw err;
      // What was stored is cut: once the aborted put has given up, anything it left is removed.
      await Promise.race([
        progress.storing?.catch(() => undefined),
        delay(PUT_SETTLE_MS, undefined, { ref: false }),
      ]);
      await ctx.writer.discard(VOLUME_ARTIFACT, { signal: ctx.signal }).catch(() => undefined);
      throw new BackupError(
        'ERR_SOURCE',
        `volume ${ssh ? `${ssh.host}:` : ''}${path}: nothing read for ${timeoutMs / 1000} s, so the copy was cut off; check that the store volume's mount answers (${ssh ? 'ls on the host' : 'ls in the container'}; a hung CephFS blocks every read of it), or raise sources.volume.timeoutMs`,
      );
    }
  }

  private async local(
    ctx: SourceRunContext,
    counts: SourceCounts,
    findings: Findings,
    progress: Progress,
    calls: MountCalls,
  ) {
    const root = this.location.path;
    let rootStats: BigIntStats;
    try {
      rootStats = await calls.start(() => lstat(root, { bigint: true }));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // A crashed ceph-fuse (ENOTCONN), EIO or EACCES is the mount's or the host's, not the config's.
      throw new BackupError(
        'ERR_SOURCE',
        code === 'ENOENT' || code === 'ENOTDIR'
          ? `volume ${root}: not found; check sources.volume.path (the container must mount /var/lib/deis/store)`
          : `volume ${root}: cannot be read (${code ?? describeError(err)}); check the mount of the store volume`,
      );
    }
    if (!rootStats.isDirectory())
      throw new BackupError('ERR_SOURCE', `volume ${root}: not a directory; check sources.volume.path`);
    const tooLarge = ownerTooLarge(rootStats);
    if (tooLarge) throw new BackupError('ERR_SOURCE', `volume ${root}: ${tooLarge}`);
    // tar-stream is loaded only by runs that archive a volume (about 12 ms at start-up otherwise).
    const { pack: createPack } = await import('tar-stream');
    const pack = createPack();
    const counter = new ByteCounter();
    progress.bytes = () => counter.bytes;
    progress.waiting = () => counter.readableLength + counter.writableLength > 0;
    const storing = ctx.writer.putArtifact(
      VOLUME_ARTIFACT,
      chain(pack as unknown as Readable, counter, createParallelGzip()),
      { signal: ctx.signal },
    );
    progress.storing = storing;
    const walking = (async () => {
      // The root is a directory (checked above): no link target.
      await writeEntry(pack, await prepareEntry('.', rootStats, root, '', calls), calls);
      counts.objects++;
      await walk(pack, root, '.', {
        counts,
        findings,
        signal: ctx.signal,
        excluded: excludeMatcher(this.location.exclude ?? []),
        links: new Map(),
        calls,
      });
      // Files that vanish while read are a live volume's; the root itself going (an unmounted or
      // removed store) leaves a copy of part of it, which must not stand as a restore point.
      const after = await calls.start(() => lstat(root, { bigint: true })).catch(() => undefined);
      if (after?.ino !== rootStats.ino || after.dev !== rootStats.dev) {
        throw new BackupError(
          'ERR_SOURCE',
          `volume ${root}: removed or replaced while it was read, so the copy holds only part of it; find what unmounted or removed it, then back up again`,
        );
      }
      progress.ended = true;
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

  private async remote(
    ssh: SshTarget,
    ctx: SourceRunContext,
    counts: SourceCounts,
    findings: Findings,
    progress: Progress,
  ) {
    const path = this.location.path;
    const command = remoteTarCommand(asRoot(ssh), path, this.location.exclude);
    // Every line is judged as it comes: thousands of warnings outrun the end of stderr that is kept.
    let lines = 0;
    const others: string[] = [];
    const onStderrLine = (line: string): void => {
      if (line.trim() === '') return;
      lines++;
      findings.warn(line);
      if (!isRemoteWarning(line) && others.length < MAX_OTHER_LINES) others.push(line);
    };
    // In the C locale: the warnings below are matched in GNU tar's own words, which a host whose
    // locale has tar's translations would print in its language, failing a volume that is whole.
    // Stopped when the put fails: the host's tar would otherwise wait on a stdout nobody reads, and
    // keepalives keep its session up for good.
    const stop = new AbortController();
    const remote = await runCommand(
      command,
      { ssh },
      { signal: AbortSignal.any([ctx.signal, stop.signal]), cLocale: true, onStderrLine },
    );
    remote.stdin.end();
    // The host's archive is stored as it comes, and read on the way to count its entries and bytes
    // as a local volume counts them (which also shows it is a whole tar.gz).
    const toStore = new PassThrough();
    const toCount = new PassThrough();
    let received = 0;
    remote.stdout.on('data', (chunk: Buffer) => {
      received += chunk.length;
    });
    progress.bytes = () => received;
    progress.waiting = () =>
      remote.stdout.readableLength + toStore.readableLength + toStore.writableLength > 0;
    remote.stdout.once('end', () => {
      progress.ended = true;
    });
    remote.stdout.pipe(toStore);
    remote.stdout.pipe(toCount);
    // pipe() ends its destinations only on the source's end: a lost connection must reach both.
    finished(remote.stdout, { writable: false }, (err) => {
      if (!err) return;
      for (const tee of [toStore, toCount]) if (!tee.writableEnded) tee.destroy(err);
    });
    const counting = countArchive(toCount, counts);
    let stored;
    try {
      const putting = ctx.writer.putArtifact(VOLUME_ARTIFACT, toStore, { signal: ctx.signal });
      progress.storing = putting;
      stored = await putting;
    } catch (err) {
      toCount.destroy();
      stop.abort(err);
      await remote.finished.catch(() => undefined);
      throw err;
    }
    const read = await counting;
    const { code, stderr } = await remote.finished.catch(async (err: unknown) => {
      // The SSH connection went away mid-archive: what was stored is cut somewhere.
      ctx.signal.throwIfAborted();
      await ctx.writer.discard(VOLUME_ARTIFACT, { signal: ctx.signal });
      throw new BackupError('ERR_SOURCE', `volume ${ssh.host}:${path}: ${describeError(err)}`, {
        cause: err,
      });
    });
    // GNU tar exits 1 when "some files differ" (a live log grew while read): the archive is complete.
    // Exit 1 from anything else (sudo wanting a password, say) is a failure.
    if (code === 0 || (code === 1 && lines > 0 && others.length === 0)) {
      if (read === undefined) return stored;
      await ctx.writer.discard(VOLUME_ARTIFACT, { signal: ctx.signal });
      throw new BackupError(
        'ERR_SOURCE',
        `volume ${ssh.host}:${path}: the archive from the host does not read as a tar.gz (${read}); check that tar there is GNU tar`,
      );
    }
    await ctx.writer.discard(VOLUME_ARTIFACT, { signal: ctx.signal });
    if (others.length === 1 && others[0] === NO_DIRECTORY) {
      throw new BackupError(
        'ERR_SOURCE',
        `volume ${ssh.host}:${path}: not a directory on the host; check sources.volume.path`,
      );
    }
    throw new BackupError(
      'ERR_SOURCE',
      `volume ${ssh.host}:${path}: archiving on the host exited ${String(code)}: ${errorLine(others.length > 0 ? others.join('\n') : stderr)}`,
    );
  }
}

/**
 * Reads a .tar.gz to its end, adding each entry to `counts.objects` and each file's size to
 * `counts.bytesRead`. Resolves with why it could not be read, or undefined; never rejects, so an
 * archive cut by a lost connection is reported by the command's end, as before.
 */
export async function countArchive(archive: Readable, counts: SourceCounts): Promise<string | undefined> {
  // Loaded only by runs that archive a volume over SSH, as tar-stream is for a local one.
  const { tarGzEntries } = await import('../tar-entries.js');
  try {
    for await (const entry of tarGzEntries(archive)) {
      counts.objects++;
      if (entry.header.type === 'file' || entry.header.type === 'contiguous-file')
        counts.bytesRead += entry.header.size;
      entry.resume();
    }
    return undefined;
  } catch (err) {
    return describeError(err);
  }
}

/** Lines of stderr that are no warning kept for the error message. */
const MAX_OTHER_LINES = 20;

/**
 * The command that archives the volume on its host, as root (`root` is asRoot's prefix): GNU tar
 * of the whole directory, less the `exclude` patterns and the FIFOs and device nodes, which `find`
 * lists for tar to exclude (literal names, from the start) and reports on stderr in the words of
 * the local reader. find does not enter what the patterns leave out. A path holding a newline
 * cannot be one line of tar's exclude list: such an entry stays in the archive. find's own
 * complaints are dropped: on a live volume they are files removed between its listing and its look
 * at them, which tar reports in its own words, and any other line would fail the read.
 */
export function remoteTarCommand(root: string, path: string, exclude: readonly string[] = []): string {
  const words = (args: string[]) => args.map((arg) => ` ${shellQuote(arg)}`).join('');
  const prune =
    exclude.length > 0 ? ` -regextype posix-extended${words(findExcludeTests(exclude))} -prune -o` : '';
  const script = [
    `cd "$1" 2>/dev/null || { echo '${NO_DIRECTORY}' >&2; exit 2; }`,
    `find .${prune} \\( -type p -o -type b -o -type c \\) ! -path "*\n*" -fprintf /dev/fd/3 "%p${SKIPPED}\\n" -print 3>&2 2>/dev/null | tar${words(tarExcludeOptions(exclude))} --anchored --no-wildcards -X - -cpzf - .`,
  ].join('\n');
  return `${root}sh -c ${shellQuote(script)} sh ${shellQuote(path)}`;
}

/** What the remote command says when the volume's path is not a directory it can enter. */
const NO_DIRECTORY = 'deis-backup: no such directory';

/** How an entry that is no file, directory or symlink is reported, here and on a volume host. */
const SKIPPED = ': not a file, directory or symlink; skipped';

/** Whether a line of the remote command's stderr leaves the archive complete. */
function isRemoteWarning(line: string): boolean {
  return isTarWarning(line) || (line.startsWith('./') && line.endsWith(SKIPPED));
}

/**
 * Whether a line of GNU tar's stderr is a warning it exits 1 with while the archive stays complete.
 * The texts are GNU tar 1.34's (create.c) in the C locale, case included: "File removed" and "File
 * shrank" are capitalised, and one byte is "1 byte".
 */
export function isTarWarning(line: string): boolean {
  return TAR_WARNING.test(line);
}

const TAR_WARNING =
  /^tar: .*: (file changed as we read it|File shrank by \d+ bytes?; padding with zeros|File removed before we read it|socket ignored)$/;

interface WalkState {
  counts: SourceCounts;
  findings: Findings;
  signal: AbortSignal;
  /** Whether a path (its bytes, without "./") is left out; undefined when nothing is. */
  excluded: ((path: Buffer) => boolean) | undefined;
  /**
   * The entry name each file with more than one link was archived under, by device and inode: its
   * other names go in as hard links to it, as GNU tar writes them, and restore as one file again.
   */
  links: Map<string, string>;
  /** Every file-system call of the walk goes through these. */
  calls: MountCalls;
}

/** A file's identity on its host: the key of WalkState.links. */
function inodeOf(stats: BigIntStats): string {
  return `${String(stats.dev)}:${String(stats.ino)}`;
}

/** A tar entry ready to write: its header and, for a non-empty file, the file open to read. */
interface PreparedEntry {
  header: Header;
  body: FileHandle | undefined;
  full: string;
  stats: BigIntStats;
}

async function walk(pack: Pack, dir: string, name: string, state: WalkState): Promise<void> {
  let raw: Buffer[];
  try {
    raw = await state.calls.start(() => readdir(dir, { encoding: 'buffer' }));
  } catch (err) {
    // The root unreadable means nothing of the volume is read: no restore point, partial or not.
    if (name === '.') {
      throw new BackupError(
        'ERR_SOURCE',
        `volume ${dir}: cannot list it (${errnoCode(err)}); run deis-backup as a user who can read the whole volume (root in the image)`,
      );
    }
    state.findings.fail(`${name}/: cannot list (${errnoCode(err)})`);
    return;
  }
  // A name that is not UTF-8 cannot go into the archive as it is (tar-stream writes names as
  // UTF-8), and read as a string it names no file: fail the entry instead of losing it unseen.
  const children: string[] = [];
  // The parent's path as bytes (UTF-8: only such folders are entered), for the exclude patterns,
  // which are tested before the check below: an excluded name is left out whatever its bytes.
  const parent = name === '.' ? undefined : Buffer.from(`${name.slice(2)}/`);
  for (const bytes of raw) {
    if (state.excluded?.(parent ? Buffer.concat([parent, bytes]) : bytes)) continue;
    const child = bytes.toString('utf8');
    if (Buffer.from(child).equals(bytes)) children.push(child);
    else state.findings.fail(`${name}/${escapeBytes(bytes)}: name is not UTF-8; not archived`);
  }
  children.sort();
  for (const child of children) {
    state.signal.throwIfAborted();
    const full = join(dir, child);
    const entryName = `${name}/${child}`;
    let prepared: PreparedEntry;
    try {
      const stats = await state.calls.start(() => lstat(full, { bigint: true }));
      if (!stats.isFile() && !stats.isDirectory() && !stats.isSymbolicLink()) {
        state.findings.warn(`${entryName}${SKIPPED}`);
        continue;
      }
      const tooLarge = ownerTooLarge(stats);
      if (tooLarge) {
        state.findings.fail(`${entryName}: ${tooLarge}; not archived`);
        continue;
      }
      // A link target is bytes too: read as UTF-8 it would be changed without a word.
      let linkname = '';
      if (stats.isSymbolicLink()) {
        const target = await state.calls.start(() => readlink(full, { encoding: 'buffer' }));
        linkname = target.toString('utf8');
        if (!Buffer.from(linkname).equals(target)) {
          state.findings.fail(
            `${entryName}: symlink target ${escapeBytes(target)} is not UTF-8; not archived`,
          );
          continue;
        }
      }
      const first = stats.isFile() && stats.nlink > 1n ? state.links.get(inodeOf(stats)) : undefined;
      prepared =
        first === undefined
          ? await prepareEntry(entryName, stats, full, linkname, state.calls)
          : hardLinkEntry(entryName, stats, full, first);
    } catch (err) {
      // Nothing of this entry is in the archive yet, so skipping it keeps the archive whole.
      if (errnoCode(err) === 'ENOENT') state.findings.warn(`${entryName}: vanished before it was read`);
      else if (errnoCode(err) === 'ECHANGED')
        state.findings.warn(
          `${entryName}: replaced by a symlink, a directory or a FIFO while listed; skipped`,
        );
      else state.findings.fail(`${entryName}: cannot read (${errnoCode(err)})`);
      continue;
    }
    const warning = await writeEntry(pack, prepared, state.calls);
    if (warning) state.findings.warn(`${entryName}: ${warning}`);
    state.counts.objects++;
    if (prepared.header.type === 'file') {
      state.counts.bytesRead += Number(prepared.stats.size);
      if (prepared.stats.nlink > 1n) state.links.set(inodeOf(prepared.stats), entryName);
    }
    if (prepared.stats.isDirectory()) await walk(pack, full, entryName, state);
  }
}

/** A file name's bytes for a message: printable ASCII as is, every other byte as \xNN. */
function escapeBytes(bytes: Buffer): string {
  let text = '';
  for (const byte of bytes)
    text +=
      byte >= 0x20 && byte < 0x7f && byte !== 0x5c
        ? String.fromCharCode(byte)
        : `\\x${byte.toString(16).padStart(2, '0')}`;
  return text;
}

/** The largest uid or gid a ustar header holds: 6 octal digits. */
const MAX_TAR_ID = 0o777777;

/**
 * Why an entry's owner cannot be archived, or undefined. tar-stream writes an id above 6 octal
 * digits as 777777 (262143) without a word and has no base-256 form for it, so such an entry would
 * restore with another owner.
 */
function ownerTooLarge(stats: BigIntStats): string | undefined {
  if (stats.uid > MAX_TAR_ID || stats.gid > MAX_TAR_ID) {
    return `owner ${String(stats.uid)}:${String(stats.gid)} is above ${String(MAX_TAR_ID)}, the largest a tar header holds`;
  }
  return undefined;
}

function errnoCode(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
}

/**
 * Reads what an entry needs before its header is written (the caller has read any link target):
 * the open file. Stats come as bigints: a tar header holds whole seconds, and GNU tar cuts the
 * fraction off. Node's `mtime` Date rounds to the millisecond, so a file changed in the last half
 * millisecond of a second came back one second late (1 entry in 2,000), and `mtimeMs` can round
 * up across a second the same way.
 */
async function prepareEntry(
  name: string,
  listed: BigIntStats,
  full: string,
  linkname: string,
  calls: MountCalls,
): Promise<PreparedEntry> {
  // A file is described as opened: one put in its place since the listing is read as it is now.
  let stats = listed;
  let body: FileHandle | undefined;
  if (listed.isFile()) {
    const opened = await openRegular(full, calls);
    stats = opened.stats;
    if (stats.size > 0n) body = opened.handle;
    else await calls.watch(opened.handle.close());
  }
  return { header: headerOf(name, stats, linkname), body, full, stats };
}

/** A tar header describing `stats` as a directory, a symlink to `linkname`, or a regular file. */
function headerOf(name: string, stats: BigIntStats, linkname: string): Header {
  return {
    name: stats.isDirectory() ? `${name}/` : name,
    // With the file-type bits: tar-stream puts 0644 or 0755 in place of a mode of 0 (chmod 000),
    // and keeps only the low 12 bits when it encodes the header.
    mode: Number(stats.mode),
    mtime: new Date(Number(stats.mtimeNs / 1_000_000_000n) * 1000),
    uid: Number(stats.uid),
    gid: Number(stats.gid),
    type: stats.isDirectory() ? 'directory' : stats.isSymbolicLink() ? 'symlink' : 'file',
    size: stats.isFile() ? Number(stats.size) : 0,
    // No names: owners restore by number, as `tar --numeric-owner` would, whatever the host's passwd says.
    uname: '',
    gname: '',
    devmajor: 0,
    devminor: 0,
    linkname,
  };
}

/**
 * Another name of a file already archived as `first`: a hard link entry (no body), with the owner,
 * mode and time it has now, as GNU tar writes one.
 */
function hardLinkEntry(name: string, stats: BigIntStats, full: string, first: string): PreparedEntry {
  const header: Header = {
    ...headerOf(name, stats, ''),
    type: 'link',
    size: 0,
    linkname: first,
  };
  return { header, body: undefined, full, stats };
}

/**
 * Writes one tar entry, and closes its file; resolves with a warning text when a file changed while
 * it was read.
 */
async function writeEntry(pack: Pack, entry: PreparedEntry, calls: MountCalls): Promise<string | undefined> {
  const { header, body, stats } = entry;
  const padded = { bytes: 0 };
  try {
    await new Promise<void>((resolve, reject) => {
      const stream = pack.entry(header, (err) => {
        if (err) reject(err);
        else resolve();
      });
      if (body) {
        const reading = readToSize(body, Number(stats.size), calls, padded);
        // Bytes, not 16 buffers of READ_BYTES each: at most one read waits in the stream.
        pipeline(Readable.from(reading, { objectMode: false, highWaterMark: READ_BYTES }), stream).catch(
          reject,
        );
      } else if (header.type === 'file') stream.end(Buffer.alloc(0));
    });
  } finally {
    // After the reads: a FileHandle closes once the calls in flight on it have returned.
    if (body) await calls.watch(body.close()).catch(() => undefined);
  }
  if (header.type !== 'file') return undefined;
  if (padded.bytes > 0) return `file shrank by ${padded.bytes} bytes while read; padded with zeros`;
  const after = await calls.start(() => lstat(entry.full, { bigint: true })).catch(() => undefined);
  if (after && (after.size !== stats.size || after.mtimeNs !== stats.mtimeNs)) {
    return 'file changed as we read it; archived up to its size when the run saw it';
  }
  return undefined;
}

/**
 * Opens the regular file at `path` with its stats. Rejects with ENOENT if it is gone, and with code
 * `ECHANGED` if a symlink, a directory or a FIFO is there now (since it was listed): a symlink is
 * not followed, and opening does not wait on a FIFO.
 */
export async function openRegular(
  path: string,
  calls: MountCalls,
): Promise<{ handle: FileHandle; stats: BigIntStats }> {
  let handle: FileHandle;
  try {
    handle = await calls.start(() =>
      open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK),
    );
  } catch (err) {
    // O_NOFOLLOW on a symlink.
    throw errnoCode(err) === 'ELOOP' ? changed(path) : err;
  }
  try {
    const stats = await calls.start(() => handle.stat({ bigint: true }));
    if (!stats.isFile()) throw changed(path);
    return { handle, stats };
  } catch (err) {
    await calls.watch(handle.close());
    throw err;
  }
}

function changed(path: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${path}: replaced since it was listed`), { code: 'ECHANGED' });
}

/** How much one read of a file asks for. */
const READ_BYTES = 256 * 1024;

/**
 * Yields exactly `size` bytes of the file: read up to `size` (a file growing while read is cut
 * there), then zeros if it shrank, as GNU tar pads.
 */
export async function* readToSize(
  file: FileHandle,
  size: number,
  calls: MountCalls,
  padded: { bytes: number },
): AsyncGenerator<Buffer> {
  let remaining = size;
  while (remaining > 0) {
    const length = Math.min(READ_BYTES, remaining);
    const position = size - remaining;
    const { bytesRead, buffer } = await calls.start(() =>
      file.read(Buffer.allocUnsafe(length), 0, length, position),
    );
    if (bytesRead === 0) break;
    remaining -= bytesRead;
    yield buffer.subarray(0, bytesRead);
  }
  padded.bytes = remaining;
  const zeros = Buffer.alloc(Math.min(remaining, 1024 * 1024));
  while (remaining > 0) {
    const n = Math.min(remaining, zeros.length);
    remaining -= n;
    yield zeros.subarray(0, n);
  }
}
