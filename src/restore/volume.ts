// Restores the store-volume archive: first read it whole to check its sha256 and refuse entries that
// could write outside the destination, then compare with what the destination holds, then extract
// with GNU tar (--same-owner), here or on a host over SSH. Identical entries cost nothing.
import { posix } from 'node:path';
import { asRoot, feedCommand, runCollecting, shellQuote, startFeeding } from '../command.js';
import { BackupError, describeError } from '../errors.js';
import type { ArtifactRecord } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import type { SshTarget } from '../ssh.js';
import { errorLine } from '../sources/source.js';
import { hungMount } from '../store-mount.js';
import { ByteCounter, chain, Stoppable } from '../streams.js';
import { tarGzEntries } from '../tar-entries.js';
import { emptyStepCounts, type StepCounts } from './report.js';

/** One archive entry, as far as deciding whether it is already in place goes. */
export interface ArchiveEntry {
  /** Path relative to the root, without "./"; "" is the root itself. */
  path: string;
  type: 'file' | 'directory' | 'symlink' | 'link' | 'fifo';
  size: number;
  mtime: number;
  mode: number;
  uid: number;
  gid: number;
  linkname: string;
}

/** Reads the whole archive through its sha256 check and returns its entries; refuses unsafe ones. */
export async function inspectArchive(
  repository: Repository,
  artifact: ArtifactRecord,
  opts: { signal: AbortSignal },
): Promise<ArchiveEntry[]> {
  const stream = tarGzEntries(await repository.openVerified(artifact, opts));
  const entries: ArchiveEntry[] = [];
  try {
    for await (const entry of stream) {
      entries.push(checkEntry(entry.header));
      entry.resume();
    }
  } catch (err) {
    if (err instanceof BackupError) throw err;
    throw new BackupError(
      'ERR_INTEGRITY',
      `volume archive ${artifact.key} cannot be read: ${describeError(err)}`,
      { cause: err },
    );
  }
  checkSymlinkParents(entries);
  return entries;
}

/**
 * Refuses entries whose path, or hard link target, runs through a symlink of the archive: each link
 * may point inside on its own, yet a chain such as `s -> .` then `s/up -> ..` leads out, which
 * checkEntry cannot see one header at a time. tar of a real directory never stores anything below a
 * symlink, so a genuine volume archive is never refused here.
 */
function checkSymlinkParents(entries: readonly ArchiveEntry[]): void {
  const symlinks = new Set(entries.filter((e) => e.type === 'symlink').map((e) => e.path));
  if (symlinks.size === 0) return;
  const throughLink = (path: string): string | undefined => {
    const parts = posix
      .normalize(path)
      .replace(/^\.\/?/, '')
      .split('/');
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join('/');
      if (symlinks.has(parent)) return parent;
    }
    return undefined;
  };
  for (const entry of entries) {
    const viaPath = throughLink(entry.path);
    const viaTarget = entry.type === 'link' ? throughLink(entry.linkname) : undefined;
    const link = viaPath ?? viaTarget;
    if (link !== undefined)
      throw new BackupError(
        'ERR_INTEGRITY',
        `volume archive entry ${JSON.stringify(entry.path)} rejected: ${viaPath === undefined ? `hard link to ${entry.linkname}` : 'it'} goes through the symlink ${JSON.stringify(link)}`,
      );
  }
}

/**
 * Validates one header: no absolute path, no "..", links stay inside; only files, directories,
 * links and FIFOs (which archives read over SSH held before they were skipped there too).
 */
export function checkEntry(header: {
  name: string;
  type?: string | null;
  size?: number;
  mtime?: Date;
  mode?: number;
  uid?: number;
  gid?: number;
  linkname?: string | null;
}): ArchiveEntry {
  const reject = (why: string): never => {
    throw new BackupError(
      'ERR_INTEGRITY',
      `volume archive entry ${JSON.stringify(header.name)} rejected: ${why}`,
    );
  };
  const name = header.name;
  if (name.startsWith('/')) reject('absolute path');
  const path = posix
    .normalize(name)
    .replace(/^\.\/?/, '')
    .replace(/\/$/, '');
  if (name.split('/').includes('..')) reject('".." in the path');
  const type = header.type ?? 'file';
  if (!RESTORED_TYPES.has(type)) reject(`entry type ${type} is not restored`);
  const linkname = header.linkname ?? '';
  if (type === 'symlink') {
    if (linkname.startsWith('/')) reject(`symlink to the absolute path ${linkname}`);
    const resolved = posix.normalize(posix.join(posix.dirname(path === '' ? '.' : path), linkname));
    if (resolved === '..' || resolved.startsWith('../'))
      reject(`symlink ${linkname} points outside the volume`);
  }
  if (type === 'link' && (linkname.startsWith('/') || linkname.split('/').includes('..'))) {
    reject(`hard link to ${linkname} outside the volume`);
  }
  return {
    path,
    type: type as ArchiveEntry['type'],
    size: header.size ?? 0,
    mtime: Math.floor((header.mtime?.getTime() ?? 0) / 1000),
    mode: (header.mode ?? 0) & 0o7777,
    uid: header.uid ?? 0,
    gid: header.gid ?? 0,
    linkname,
  };
}

const RESTORED_TYPES = new Set(['file', 'directory', 'symlink', 'link', 'fifo']);

/** What is at a path of the destination now. */
interface Present {
  type: string;
  size: number;
  mtime: number;
  mode: number;
  uid: number;
  gid: number;
  linkname: string;
}

/** Where the volume goes: a directory here, or on a host over SSH. */
export interface VolumeDestination {
  path: string;
  ssh?: SshTarget | undefined;
}

function sudo(dest: VolumeDestination): string {
  return asRoot(dest.ssh);
}

/** What the listing prints when the destination is there but no directory (a file, a dangling link). */
const NOT_A_DIRECTORY = 'deis-backup:not-a-directory';

/**
 * Lists the destination with GNU find (here or over SSH); empty when it does not exist, an error
 * when it is something other than a directory. Both
 * the check and the listing run as root (sudo over SSH as another user): a destination only root
 * may enter, as a volume's root often is, would otherwise look empty, and its differing entries
 * would be kept without a word.
 */
async function destinationState(
  dest: VolumeDestination,
  opts: { signal: AbortSignal; timeoutMs: number },
): Promise<Map<string, Present>> {
  // One shell under sudo, so a sudo that refuses fails the listing instead of passing for "not
  // there". find -H follows the path itself if it is a symlink to a directory, as tar -C does.
  const format = '%y\\0%s\\0%T@\\0%m\\0%U\\0%G\\0%l\\0%P\\0';
  const command = `${sudo(dest)}sh -c 'test -d "$1" && exec find -H "$1" -printf "$2"; test -e "$1" || test -L "$1" || exit 0; echo ${NOT_A_DIRECTORY} >&2; exit 3' sh ${shellQuote(dest.path)} '${format}'`;
  // GNU find's -printf %T@ prints a "." whatever LC_NUMERIC says; the C locale is for its messages.
  const where = `${dest.path}${dest.ssh ? ` on ${dest.ssh.host}` : ''}`;
  // find prints each entry as it goes: silent for timeoutMs, it waits on a hung mount.
  const { stdout, code, stderr } = await runCollecting(command, dest, {
    signal: opts.signal,
    cLocale: true,
    quiet: { ms: opts.timeoutMs, error: () => hungMount(where, opts.timeoutMs, 'listing') },
  });
  if (code === 3 && stderr.trim() === NOT_A_DIRECTORY) {
    throw new BackupError(
      'ERR_USAGE',
      `volume: ${where} exists and is not a directory; restore into a directory (--volume-to, "volumeTo" over HTTP), or move it away first`,
    );
  }
  if (code !== 0) {
    throw new BackupError('ERR_SOURCE', `volume: cannot list ${where}: ${errorLine(stderr)}`);
  }
  const fields = stdout.toString('utf8').split('\0');
  const present = new Map<string, Present>();
  for (let i = 0; i + 8 <= fields.length; i += 8) {
    const [type = '', size = '0', mtime = '0', mode = '0', uid = '0', gid = '0', linkname = '', path = ''] =
      fields.slice(i, i + 8);
    present.set(path, {
      type,
      size: Number(size),
      // Whole seconds as written, as GNU tar keeps them: a parsed `1700000000.9999999999` rounds up.
      mtime: Number(mtime.split('.')[0]),
      mode: parseInt(mode, 8),
      uid: Number(uid),
      gid: Number(gid),
      linkname,
    });
  }
  return present;
}

/** The volume step's plan. */
export interface VolumePlan {
  destination: VolumeDestination;
  counts: StepCounts;
  conflicts: string[];
  /** The archive's root entry when the destination directory itself must be created or changed. */
  root: ArchiveEntry | undefined;
}

/** Compares archive entries with the destination; writes nothing. */
export async function planVolume(
  entries: readonly ArchiveEntry[],
  artifact: ArtifactRecord,
  dest: VolumeDestination,
  opts: { signal: AbortSignal; overwrite: boolean; timeoutMs: number },
): Promise<VolumePlan> {
  const present = await destinationState(dest, opts);
  const counts = emptyStepCounts();
  const conflicts: string[] = [];
  let root: ArchiveEntry | undefined;
  for (const entry of entries) {
    counts.objects++;
    if (entry.type === 'file') counts.bytes += entry.size;
    const there = present.get(entry.path);
    if (!there) {
      counts.create++;
      if (entry.path === '') root = entry;
    } else if (same(entry, there)) counts.skip++;
    else if (opts.overwrite) {
      counts.overwrite++;
      if (entry.path === '') root = entry;
    } else {
      counts.conflict++;
      if (conflicts.length < 20) conflicts.push(entry.path === '' ? '.' : entry.path);
    }
  }
  if (counts.create + counts.overwrite > 0) counts.transferBytes = artifact.size;
  return { destination: dest, counts, conflicts, root };
}

function same(entry: ArchiveEntry, there: Present): boolean {
  const owner = there.uid === entry.uid && there.gid === entry.gid;
  switch (entry.type) {
    case 'file':
      return (
        there.type === 'f' &&
        there.size === entry.size &&
        there.mtime === entry.mtime &&
        there.mode === entry.mode &&
        owner
      );
    case 'directory':
      return there.type === 'd' && there.mode === entry.mode && owner;
    case 'symlink':
      return there.type === 'l' && there.linkname === entry.linkname;
    case 'link':
      return there.type === 'f';
    case 'fifo':
      return there.type === 'p' && there.mode === entry.mode && owner;
  }
}

/**
 * Extracts the archive into the destination, unless the plan has nothing to write. Cut off when tar
 * takes in nothing for `timeoutMs` while some of the archive waits for it: a hung CephFS blocks its
 * writes for good, and the restore would wait with it, holding the cluster lock.
 */
export async function applyVolume(
  repository: Repository,
  artifact: ArtifactRecord,
  plan: VolumePlan,
  opts: { signal: AbortSignal; overwrite: boolean; timeoutMs: number },
): Promise<void> {
  if (plan.counts.create + plan.counts.overwrite === 0) return;
  const dest = plan.destination;
  const path = shellQuote(dest.path);
  const keep = opts.overwrite ? '--overwrite' : '--skip-old-files';
  // tar needs the directory to exist, and then leaves an existing one's owner, mode and mtime
  // alone: the archive's root entry is applied by hand when the directory is new or to be replaced.
  const root = plan.root;
  const fixRoot = root
    ? ` && ${sudo(dest)}chown ${root.uid}:${root.gid} ${path} && ${sudo(dest)}chmod ${root.mode.toString(8)} ${path} && ${sudo(dest)}touch -d @${root.mtime} ${path}`
    : '';
  // Owners by number, as the plan compares them: a volume host's GNU tar writes its own user names,
  // which here may name other uids.
  const command = `${sudo(dest)}mkdir -p ${path} && ${sudo(dest)}tar -C ${path} -xzpf - --same-owner --numeric-owner ${keep}${fixRoot}`;
  const into = `${dest.path}${dest.ssh ? ` on ${dest.ssh.host}` : ''}`;
  const stop = new Stoppable(opts.signal);
  const signal = stop.signal;
  const counter = new ByteCounter();
  const archive = chain(await repository.openVerified(artifact, { signal }), counter);
  const running = await startFeeding(command, dest, archive, { signal, cLocale: true });
  // A tar that leaves what it was given unread is quiet, and so is one that has all of it and does
  // not end; a slow read of the target, with nothing waiting for tar, is not.
  const stdin = running.stdin;
  const allSent = (): boolean => stdin.writableFinished || stdin.destroyed;
  stop.watch(
    () => counter.bytes,
    () => stdin.writableLength === 0 && !allSent(),
    opts.timeoutMs,
  );
  // A tar blocked on the mount may not even die when killed: once stopped, its end is not waited for.
  const fed = await stop.race(feedCommand(running, archive), () => {
    const stalled = allSent()
      ? `did not end within ${opts.timeoutMs / 1000} s of taking the whole archive`
      : `took in nothing for ${opts.timeoutMs / 1000} s`;
    // Nothing more for a command that will not read it: feedCommand stops waiting to write.
    stdin.destroy();
    return stop.cutOff
      ? new BackupError(
          'ERR_TARGET',
          `volume: tar -x into ${into} ${stalled}, so the restore was cut off; check that the destination's mount answers (a hung CephFS blocks every write to it), then restore again, or raise sources.volume.timeoutMs`,
        )
      : (signal.reason as Error);
  });
  if (fed.code !== 0) {
    throw new BackupError(
      'ERR_TARGET',
      `volume: tar -x into ${into} exited ${String(fed.code)}: ${errorLine(fed.stderr)}`,
    );
  }
  // Exit 0 with the archive unread (a tar wrapper that did nothing, a tar that stopped early): what
  // is in the directory is unknown, and the archive's sha256 was not checked to its end. GNU tar
  // with -z reads the whole artifact: gzip -d reads its input to EOF (the end-of-archive zeros, 1024
  // bytes from tar-stream or a padded 10240-byte record from a host's tar, are inside the gzip
  // stream), so no unread byte is expected from a real GNU tar.
  if (!fed.complete) {
    throw new BackupError(
      'ERR_TARGET',
      `volume: tar -x into ${into} exited before reading the whole archive, so the volume may be only partly restored; check that tar there is GNU tar and reads the archive on stdin, then restore again`,
    );
  }
}
