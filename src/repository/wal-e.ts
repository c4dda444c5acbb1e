// Pure check of a WAL-E 005 copy (the db_wal bucket) from its keys alone: complete base backups with
// every tar partition, and WAL segments without holes from the oldest complete base backup onwards.

/** A key of the bucket copy and its size in bytes. */
export interface WalEKey {
  key: string;
  size: number;
}

/** What the check found. Warnings do not make the copy unusable; errors do. */
export interface WalECheck {
  /** Base backups with a stop sentinel (WAL-E's "complete" ones). */
  baseBackups: number;
  /** WAL segment files (`wal_005/<24 hex>.lzo`), every timeline. */
  segments: number;
  errors: string[];
  warnings: string[];
}

const BASE = 'basebackups_005/';
const WAL = 'wal_005/';
/** WAL-E's names (wal_e/storage/base.py): `<TLI8><LOG8><SEG8>` in upper-case hex; offsets in decimal. */
const SENTINEL =
  /^basebackups_005\/(base_([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})_\d{8})_backup_stop_sentinel\.json$/;
const IN_BASE = /^basebackups_005\/(base_([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})_\d{8})\/(.*)$/;
const PARTITION = /^tar_partitions\/part_(\d{8})\.tar\.lzo$/;
const SEGMENT = /^wal_005\/([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.lzo$/;
const HISTORY = /^wal_005\/([0-9A-F]{8})\.history\.lzo$/;
/** Segments per log id from PostgreSQL 9.3 on (16 MiB segments): SEG runs 00..FF, then LOG+1. */
const SEGMENTS_PER_LOG = 0x100;

/** True for keys WAL-E writes (`basebackups_005/…`, `wal_005/…`). */
export function isWalEKey(key: string): boolean {
  return key.startsWith(BASE) || key.startsWith(WAL);
}

/**
 * The base backup (`base_<TLI><LOG><SEG>_<offset>`) a key belongs to: its stop sentinel or a file
 * under `basebackups_005/<name>/`. Undefined for any other key.
 */
export function baseBackupOf(key: string): string | undefined {
  return (SENTINEL.exec(key) ?? IN_BASE.exec(key))?.[1];
}

interface BaseBackup {
  name: string;
  tli: number;
  /** Start segment as log * 0x100 + seg. */
  start: number;
  sentinel: boolean;
  partitions: number[];
}

/**
 * Checks a WAL-E copy given its keys. Not applicable (no findings) when no key is WAL-E's.
 *
 * - Every base backup with a stop sentinel has `tar_partitions/part_00000000.tar.lzo` and consecutive
 *   part numbers up to its highest; one without a sentinel is a warning (WAL-E ignores it).
 * - WAL continuity rule: positions are ordered by (log, seg); a position counts as present when a
 *   segment exists there on any timeline at or above the oldest complete base backup's timeline. Every
 *   position from that base backup's start segment up to the newest segment present (or the newest
 *   base backup's start, if later) must be present. Each hole is one error naming the missing segments
 *   on the timeline of the segment before it. `.backup.lzo` and `.history.lzo` files do not count.
 * - A newer timeline without its `wal_005/<TLI>.history.lzo` is a warning; an empty (0-byte)
 *   partition or segment is an error, since an lzop file always has a header.
 */
export function checkWalE(keys: Iterable<WalEKey>): WalECheck {
  const result: WalECheck = { baseBackups: 0, segments: 0, errors: [], warnings: [] };
  const bases = new Map<string, BaseBackup>();
  const base = (name: string, tli: string, log: string, seg: string): BaseBackup => {
    let found = bases.get(name);
    if (!found) {
      found = { name, tli: hex(tli), start: position(log, seg), sentinel: false, partitions: [] };
      bases.set(name, found);
    }
    return found;
  };
  /** Segment position → timelines it is present on. */
  const wal = new Map<number, number[]>();
  const histories = new Set<number>();
  let any = false;
  for (const { key, size } of keys) {
    if (!isWalEKey(key)) continue;
    any = true;
    let m: RegExpExecArray | null;
    if ((m = SENTINEL.exec(key))) {
      base(m[1] ?? '', m[2] ?? '', m[3] ?? '', m[4] ?? '').sentinel = true;
    } else if ((m = IN_BASE.exec(key))) {
      const found = base(m[1] ?? '', m[2] ?? '', m[3] ?? '', m[4] ?? '');
      const part = PARTITION.exec(m[5] ?? '');
      if (part) {
        found.partitions.push(Number(part[1]));
        if (size === 0) result.errors.push(`tar partition ${key} is empty (0 bytes)`);
      }
    } else if ((m = SEGMENT.exec(key))) {
      const seg = hex(m[3] ?? '');
      if (seg >= SEGMENTS_PER_LOG) {
        result.warnings.push(`${key} is not a PostgreSQL 9.3+ segment name; ignored`);
        continue;
      }
      result.segments++;
      const at = position(m[2] ?? '', m[3] ?? '');
      wal.set(at, [...(wal.get(at) ?? []), hex(m[1] ?? '')]);
      if (size === 0) result.errors.push(`WAL segment ${key} is empty (0 bytes)`);
    } else if ((m = HISTORY.exec(key))) {
      histories.add(hex(m[1] ?? ''));
    }
  }
  if (!any) return result;

  const complete: BaseBackup[] = [];
  for (const b of [...bases.values()].sort((x, y) => x.start - y.start || x.tli - y.tli)) {
    if (!b.sentinel) {
      result.warnings.push(`${BASE}${b.name}: incomplete (no sentinel); WAL-E ignores it`);
      continue;
    }
    complete.push(b);
    const parts = [...new Set(b.partitions)].sort((x, y) => x - y);
    const partKey = (n: number) =>
      `${BASE}${b.name}/tar_partitions/part_${String(n).padStart(8, '0')}.tar.lzo`;
    if (parts.length === 0) {
      result.errors.push(
        `base backup ${b.name} has a stop sentinel but no tar partition (missing ${partKey(0)})`,
      );
    }
    for (const [first, last] of holes(parts, 0, parts.at(-1) ?? -1)) {
      const count = last - first + 1;
      result.errors.push(
        count === 1
          ? `base backup ${b.name}: missing tar partition ${partKey(first)}`
          : `base backup ${b.name}: missing tar partitions ${partKey(first)}..${partKey(last)} (${count} partitions)`,
      );
    }
  }
  result.baseBackups = complete.length;
  const oldest = complete[0];
  if (!oldest) {
    result.errors.push('no complete base backup: the database cannot be restored from this copy');
    return result;
  }

  // Positions present on the oldest base backup's timeline or a later one, with the highest such timeline.
  const present = new Map<number, number>();
  for (const [at, tlis] of wal) {
    const newest = Math.max(...tlis);
    if (at >= oldest.start && newest >= oldest.tli) present.set(at, newest);
  }
  const positions = [...present.keys()].sort((x, y) => x - y);
  const newestBase = complete.reduce((x, y) => (y.start > x.start ? y : x));
  const end = Math.max(positions.at(-1) ?? -1, newestBase.start);
  for (const [first, last] of holes(positions, oldest.start, end)) {
    // The hole is named on the timeline of the segment before it: that is where the sequence stopped.
    const tli = present.get(first - 1) ?? oldest.tli;
    const after = first === oldest.start ? `start of ${oldest.name}` : `after ${segmentName(tli, first - 1)}`;
    const next = present.get(last + 1);
    const before =
      next === undefined ? `needed by ${newestBase.name}` : `before ${segmentName(next, last + 1)}`;
    const count = last - first + 1;
    result.errors.push(
      count === 1
        ? `missing WAL ${WAL}${segmentName(tli, first)}.lzo (${after}, ${before})`
        : `missing WAL ${WAL}${segmentName(tli, first)}.lzo..${WAL}${segmentName(tli, last)}.lzo (${count} segments, ${after}, ${before})`,
    );
  }

  const timelines = new Set([...present.values(), ...complete.map((b) => b.tli)]);
  for (const tli of [...timelines].sort((x, y) => x - y)) {
    if (tli > oldest.tli && !histories.has(tli)) {
      result.warnings.push(`timeline ${hex8(tli)} has no ${WAL}${hex8(tli)}.history.lzo`);
    }
  }
  return result;
}

/** Inclusive ranges of [from, to] missing from sorted, distinct numbers; O(numbers), whatever the range. */
function holes(sorted: readonly number[], from: number, to: number): [number, number][] {
  const out: [number, number][] = [];
  let expected = from;
  for (const n of sorted) {
    if (n < expected) continue;
    if (n > to) break;
    if (n > expected) out.push([expected, n - 1]);
    expected = n + 1;
  }
  if (expected <= to) out.push([expected, to]);
  return out;
}

function position(log: string, seg: string): number {
  return hex(log) * SEGMENTS_PER_LOG + hex(seg);
}

/** `<TLI8><LOG8><SEG8>` of a timeline and position. */
function segmentName(tli: number, at: number): string {
  return `${hex8(tli)}${hex8(Math.floor(at / SEGMENTS_PER_LOG))}${hex8(at % SEGMENTS_PER_LOG)}`;
}

function hex(text: string): number {
  return Number.parseInt(text, 16);
}

function hex8(n: number): string {
  return n.toString(16).toUpperCase().padStart(8, '0');
}
