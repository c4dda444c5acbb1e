// Whether a volume restore into the Deis store path would reach CephFS, and a backup of it read
// CephFS. deis-store-volume mounts CephFS at /var/lib/deis/store on every host; files restored there
// before it has mounted go to the host's own disk, and the mount then hides them (and 18–100 GB of
// logs may fill that disk); a backup before it has mounted copies the host's own folder instead.
import { posix } from 'node:path';
import { asRoot, runCollecting, shellQuote } from './command.js';
import { BackupError } from './errors.js';
import { errorLine } from './sources/source.js';
import type { SshTarget } from './ssh.js';

/** Where deis-store-volume mounts CephFS on a Deis v1 host. */
export const STORE_MOUNT = '/var/lib/deis/store';

/** The file system types of a CephFS mount: the kernel client's, and ceph-fuse's. */
const CEPH_TYPES = new Set(['ceph', 'fuse.ceph-fuse']);

/**
 * The type of the file system `path` lives on, from the text of /proc/mounts (in the order the
 * mounts were made): that of the last mount at or above it, since a later mount on the path or a
 * parent hides what was mounted there before.
 */
export function fileSystemAt(mounts: string, path: string): string | undefined {
  let found: string | undefined;
  for (const line of mounts.split('\n')) {
    const [, rawPoint, type] = line.split(' ');
    if (rawPoint === undefined || type === undefined) continue;
    // The kernel writes a space, tab, newline or backslash in a mount point as an octal escape.
    const point = rawPoint.replace(/\\([0-7]{3})/g, (_, octal: string) =>
      String.fromCharCode(parseInt(octal, 8)),
    );
    if (point === '/' || path === point || path.startsWith(`${point}/`)) found = type;
  }
  return found;
}

/**
 * For a destination at or under STORE_MOUNT whose file system is not CephFS, or one under it that
 * leads out of it through a symlink, the line that says so (with where it is and what to do);
 * undefined otherwise. On the destination's host, as root since the restore writes as root,
 * resolves the path's symlinks with GNU `readlink -m` (so `--volume-to /srv/x` linked to the store
 * counts as the store, and a path that does not exist yet resolves too; without GNU readlink, the
 * path as given counts) and reads /proc/mounts.
 */
export async function storeNotMounted(
  dest: { path: string; ssh?: SshTarget | undefined },
  opts: { signal: AbortSignal; quietMs?: number },
  purpose: 'restore' | 'backup' = 'restore',
): Promise<string | undefined> {
  // `/var/lib/deis//store/` and `/var/lib/deis/x/../store` name the store too.
  const given = posix.normalize(dest.path).replace(/(.)\/+$/, '$1');
  const on = dest.ssh ? ` on ${dest.ssh.host}` : '';
  // NUL after the resolved path, which may hold a newline.
  const script = `readlink -mz -- "$1" 2>/dev/null || printf '%s\\0' "$1"; exec cat /proc/mounts`;
  const { stdout, code, stderr } = await runCollecting(
    `${asRoot(dest.ssh)}sh -c ${shellQuote(script)} sh ${shellQuote(given)}`,
    dest,
    {
      signal: opts.signal,
      cLocale: true,
      // readlink -m reads each part of the path: on a hung mount it waits with it.
      quiet:
        opts.quietMs === undefined
          ? undefined
          : {
              ms: opts.quietMs,
              error: () => hungMount(dest.path + on, opts.quietMs ?? 0, 'checking the mount of'),
            },
    },
  );
  const end = stdout.indexOf(0);
  if (code !== 0 || end < 0) {
    // Elsewhere nothing hangs on the answer: the restore's own commands report a host that fails.
    if (!inStore(given)) return undefined;
    throw new BackupError(
      'ERR_SOURCE',
      `volume: cannot read /proc/mounts for ${dest.path}${on}: ${errorLine(stderr)}`,
    );
  }
  const resolved = stdout.subarray(0, end).toString('utf8') || given;
  if (!inStore(resolved)) {
    if (!inStore(given)) return undefined;
    return purpose === 'restore'
      ? `volume: ${dest.path}${on} leads through a symlink to ${resolved}, outside ${STORE_MOUNT}: restored there, the files would not be in the store; restore into a folder of the store itself`
      : `volume: ${dest.path}${on} leads through a symlink to ${resolved}, outside ${STORE_MOUNT}: the copy would not be of the store; set sources.volume.path to a folder of the store itself`;
  }
  const type = fileSystemAt(stdout.subarray(end + 1).toString('utf8'), resolved) ?? 'unknown';
  if (CEPH_TYPES.has(type)) return undefined;
  const shown = resolved === given ? dest.path : `${dest.path} (${resolved})`;
  const why =
    purpose === 'restore'
      ? 'restored there, the files would not be in the store (and CephFS mounted later would hide them)'
      : "deis-store-volume has not mounted it, so the copy would hold the host's own folder, not the store";
  return `volume: ${shown}${on} is on ${type}, not CephFS: ${why}; start deis-store-volume (deisctl start store-volume) and wait until /proc/mounts shows ceph on ${STORE_MOUNT}`;
}

/** True for STORE_MOUNT and every path under it. */
export function inStore(path: string): boolean {
  return path === STORE_MOUNT || path.startsWith(`${STORE_MOUNT}/`);
}

/**
 * The error of a command on `where` (a path, and " on <host>") that sent nothing for `ms` while
 * `doing` something with it: its mount has stopped answering, as a hung CephFS does.
 */
export function hungMount(where: string, ms: number, doing: string): BackupError {
  return new BackupError(
    'ERR_SOURCE',
    `volume: ${doing} ${where} gave nothing for ${ms / 1000} s; check that its mount answers (a hung CephFS blocks every call on it), then restore again, or raise sources.volume.timeoutMs`,
  );
}
