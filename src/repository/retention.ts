// The forget decision: which snapshots a retention policy keeps, and why, restic-style. Pure: no I/O and no
// clock; `now` and the timezone of the calendar buckets are parameters. In brief: rules combine with "or",
// hourly..yearly keep the newest snapshot of each of the N latest local calendar buckets, keepWithin counts
// back from `now`, partial snapshots count like any other, and the newest success is always kept (details
// on applyRetention).
import { type Duration, formatDuration, parseDuration } from '../duration.js';
import { BackupError } from '../errors.js';
import { compareText } from '../compare.js';

/** Keep rules, combined with "or": a snapshot is kept when any rule keeps it. Counts are whole numbers ≥ 1. */
export interface RetentionPolicy {
  /** The N newest snapshots. */
  keepLast?: number;
  /** The newest snapshot of each of the N most recent local calendar hours that have one. */
  keepHourly?: number;
  /** The same per local calendar day. */
  keepDaily?: number;
  /** The same per ISO week (Monday to Sunday, numbered in its ISO week-year). */
  keepWeekly?: number;
  /** The same per calendar month. */
  keepMonthly?: number;
  /** The same per calendar year. */
  keepYearly?: number;
  /** Every snapshot started at or after `now` minus this duration (so also any in the future). */
  keepWithin?: Duration;
}

/** The outcome of applyRetention. Every input snapshot is in exactly one of `keep` and `drop`. */
export interface RetentionDecision<T> {
  /** Snapshots to keep, in input order. */
  keep: T[];
  /** Snapshots to forget, in input order. */
  drop: T[];
  /** By snapshot id, for kept and dropped ones: every rule that keeps it, or why it is dropped. */
  reasons: ReadonlyMap<string, readonly string[]>;
}

/** The retention section as the config holds it (already validated); other keys are ignored. */
export interface RetentionConfig {
  readonly keepLast?: number;
  readonly keepHourly?: number;
  readonly keepDaily?: number;
  readonly keepWeekly?: number;
  readonly keepMonthly?: number;
  readonly keepYearly?: number;
  readonly keepWithin?: string;
}

/** The rules that keep a number of snapshots, in the order the decision applies them. */
export const COUNT_RULES = [
  'keepLast',
  'keepHourly',
  'keepDaily',
  'keepWeekly',
  'keepMonthly',
  'keepYearly',
] as const;
const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

/** Calendar buckets, keyed on the local wall-clock time encoded as a UTC epoch (see wallClock). */
const BUCKET_RULES = [
  ['keepHourly', 'hourly', (wall: number) => new Date(wall).toISOString().slice(0, 13)],
  ['keepDaily', 'daily', (wall: number) => new Date(wall).toISOString().slice(0, 10)],
  ['keepWeekly', 'weekly', isoWeek],
  ['keepMonthly', 'monthly', (wall: number) => new Date(wall).toISOString().slice(0, 7)],
  ['keepYearly', 'yearly', (wall: number) => new Date(wall).toISOString().slice(0, 4)],
] as const;

/**
 * Decides which snapshots a policy keeps. Semantics (restic's `forget`, with the differences noted):
 * - Snapshots are ranked newest first by startedAt, ties by id (the reverse of Repository.scan's order).
 * - keepLast N keeps the N newest ("last 1" is the newest).
 * - keepHourly/Daily/Weekly/Monthly/Yearly N walk newest first, bucket by local calendar hour, day, ISO
 *   week, month or year in `timezone`, and keep the newest snapshot of each of the N most recent buckets
 *   that hold one. Across DST, the skipped local hour is no bucket and the repeated one is a single bucket.
 * - keepWithin D keeps every snapshot started at or after `now` − D (restic counts from the newest
 *   snapshot instead). Years, months and days are calendar units in `timezone`, keeping the wall-clock
 *   time (31 March − 1m is 28/29 February; 1d across a DST change is 23 or 25 hours); hours are elapsed
 *   hours. Snapshots in the future (clock skew) are therefore kept.
 * - Partial snapshots are counted by every rule like successful ones: they are usable restore points.
 * - With `scopeOf`, the policy applies to each scope on its own (restic groups by paths the same way):
 *   a backup of only the database neither counts against nor displaces restore points of everything.
 * - Safety: the newest successful snapshot is always kept ("newest successful restore point" when no
 *   rule keeps it); with no successful one the newest snapshot is, so a non-empty list is never emptied.
 *   The snapshot `keep` names (the one a backup just committed) is kept too ("this run" when no rule
 *   keeps it): one started later by a clock that ran ahead must not push it out.
 * Reasons name the rule and its bucket: "last 2", "hourly 2026-11-24T13", "daily 2026-11-24",
 * "weekly 2026-W48", "monthly 2026-11", "yearly 2026", "within 30d". A dropped snapshot gets
 * "matches no keep rule", and a dropped partial one also "partial: a newer success exists" when so.
 * Throws BackupError ERR_CONFIG for a policy without a rule (keeping nothing is refused) or with a count
 * that is not a whole number ≥ 1, and ERR_INTEGRITY for a startedAt that is not a timestamp.
 */
export function applyRetention<T extends { id: string; startedAt: string; status: 'success' | 'partial' }>(
  snapshots: readonly T[],
  policy: RetentionPolicy,
  opts: { now: Date; timezone: string; scopeOf?: (snapshot: T) => string; keep?: string },
): RetentionDecision<T> {
  checkPolicy(policy);
  const { scopeOf } = opts;
  if (scopeOf === undefined) return decide(snapshots, policy, opts);
  const scopes = new Map<string, T[]>();
  for (const s of snapshots) {
    const scope = scopeOf(s);
    const group = scopes.get(scope);
    if (group) group.push(s);
    else scopes.set(scope, [s]);
  }
  const reasons = new Map<string, readonly string[]>();
  const kept = new Set<string>();
  for (const group of scopes.values()) {
    const decision = decide(group, policy, opts);
    for (const s of decision.keep) kept.add(s.id);
    for (const [id, why] of decision.reasons) reasons.set(id, why);
  }
  return {
    keep: snapshots.filter((s) => kept.has(s.id)),
    drop: snapshots.filter((s) => !kept.has(s.id)),
    reasons,
  };
}

function decide<T extends { id: string; startedAt: string; status: 'success' | 'partial' }>(
  snapshots: readonly T[],
  policy: RetentionPolicy,
  opts: { now: Date; timezone: string; keep?: string },
): RetentionDecision<T> {
  const wall = wallClock(opts.timezone);
  const started = new Map(snapshots.map((s) => [s, startedAt(s)]));
  const time = (s: T): number => started.get(s) ?? 0;
  const newestFirst = [...snapshots].sort((a, b) => time(b) - time(a) || compareText(b.id, a.id));
  const reasons = new Map<string, string[]>();
  const keep = (s: T, reason: string): void => {
    reasons.set(s.id, [...(reasons.get(s.id) ?? []), reason]);
  };

  newestFirst.slice(0, policy.keepLast ?? 0).forEach((s, i) => {
    keep(s, `last ${i + 1}`);
  });
  for (const [rule, label, bucketOf] of BUCKET_RULES) {
    const seen = new Set<string>();
    for (const s of newestFirst) {
      if (seen.size >= (policy[rule] ?? 0)) break;
      const bucket = bucketOf(wall(time(s)));
      if (seen.has(bucket)) continue;
      seen.add(bucket);
      keep(s, `${label} ${bucket}`);
    }
  }
  if (policy.keepWithin) {
    const start = withinStart(opts.now.getTime(), policy.keepWithin, wall);
    const reason = `within ${formatDuration(policy.keepWithin)}`;
    for (const s of newestFirst) if (time(s) >= start) keep(s, reason);
  }
  const newestSuccess = newestFirst.find((s) => s.status === 'success');
  const anchor = newestSuccess ?? newestFirst[0];
  if (anchor && !reasons.has(anchor.id)) {
    keep(anchor, newestSuccess ? 'newest successful restore point' : 'newest restore point (none succeeded)');
  }
  const own = opts.keep === undefined ? undefined : snapshots.find((s) => s.id === opts.keep);
  if (own && !reasons.has(own.id)) keep(own, 'this run');

  const kept = new Set(reasons.keys());
  let successSeen = false;
  for (const s of newestFirst) {
    if (!kept.has(s.id)) {
      const superseded = s.status === 'partial' && successSeen;
      reasons.set(s.id, ['matches no keep rule', ...(superseded ? ['partial: a newer success exists'] : [])]);
    }
    successSeen ||= s.status === 'success';
  }
  return {
    keep: snapshots.filter((s) => kept.has(s.id)),
    drop: snapshots.filter((s) => !kept.has(s.id)),
    reasons,
  };
}

/** The policy for logs and the CLI, rules in config order: "keepLast 7, keepDaily 14, keepWithin 30d". */
export function describePolicy(policy: RetentionPolicy): string {
  const parts = COUNT_RULES.flatMap((rule) => {
    const count = policy[rule];
    return count === undefined ? [] : [`${rule} ${count}`];
  });
  if (policy.keepWithin) parts.push(`keepWithin ${formatDuration(policy.keepWithin)}`);
  return parts.join(', ') || 'no keep rule';
}

/** The policy of the config's retention section; throws ERR_CONFIG if keepWithin is not a duration. */
export function policyFromConfig(retention: RetentionConfig): RetentionPolicy {
  const policy: RetentionPolicy = {};
  for (const rule of COUNT_RULES) if (retention[rule] !== undefined) policy[rule] = retention[rule];
  if (retention.keepWithin !== undefined) {
    const duration = parseDuration(retention.keepWithin);
    if (!duration) {
      throw new BackupError(
        'ERR_CONFIG',
        `retention.keepWithin: "${retention.keepWithin}" is not a duration`,
      );
    }
    policy.keepWithin = duration;
  }
  return policy;
}

function checkPolicy(policy: RetentionPolicy): void {
  for (const rule of COUNT_RULES) {
    const count = policy[rule];
    if (count !== undefined && !(Number.isInteger(count) && count >= 1)) {
      throw new BackupError('ERR_CONFIG', `retention ${rule} is ${count}; it must be a whole number ≥ 1`);
    }
  }
  if (COUNT_RULES.every((rule) => policy[rule] === undefined) && !policy.keepWithin) {
    throw new BackupError(
      'ERR_CONFIG',
      `retention policy has no keep rule: keeping nothing is refused; set one of ${COUNT_RULES.join(', ')}, keepWithin`,
    );
  }
}

function startedAt(snapshot: { id: string; startedAt: string }): number {
  const time = Date.parse(snapshot.startedAt);
  if (Number.isNaN(time)) {
    throw new BackupError('ERR_INTEGRITY', `snapshot ${snapshot.id} has startedAt "${snapshot.startedAt}"`);
  }
  return time;
}

/**
 * Maps an instant to its wall-clock time in `timezone`, encoded as the UTC epoch of that wall-clock time:
 * the getUTC* fields of the result are the local fields, and result − instant is the UTC offset.
 */
function wallClock(timezone: string): (instant: number) => number {
  // UTC is the identity; skipping Intl saves the 12–20 ms its first DateTimeFormat costs a run.
  if (timezone === 'UTC' || timezone === 'Etc/UTC') return (instant) => instant;
  const format = new Intl.DateTimeFormat('en-US', {
    timeZone: timezone,
    hourCycle: 'h23',
    year: 'numeric',
    month: 'numeric',
    day: 'numeric',
    hour: 'numeric',
    minute: 'numeric',
    second: 'numeric',
  });
  return (instant) => {
    const parts = format.formatToParts(instant);
    const field = (type: Intl.DateTimeFormatPartTypes): number =>
      Number(parts.find((p) => p.type === type)?.value);
    const seconds = Date.UTC(field('year'), field('month') - 1, field('day'), field('hour'), field('minute'));
    return seconds + field('second') * 1000 + (((instant % 1000) + 1000) % 1000);
  };
}

/** The instant at which `wall` reads this wall-clock time; a time in a DST gap lands after the gap. */
function fromWall(wallTime: number, wall: (instant: number) => number): number {
  const guess = wallTime - (wall(wallTime) - wallTime);
  return wallTime - (wall(guess) - guess);
}

function withinStart(now: number, d: Duration, wall: (instant: number) => number): number {
  const local = new Date(wall(now));
  const year = local.getUTCFullYear();
  const month = local.getUTCMonth() - d.years * 12 - d.months;
  // A day that the target month lacks clamps to its last day before the days are subtracted.
  const day = Math.min(local.getUTCDate(), new Date(Date.UTC(year, month + 1, 0)).getUTCDate()) - d.days;
  const shifted = Date.UTC(year, month, day) + (local.getTime() % DAY_MS);
  const start = fromWall(shifted, wall) - d.hours * HOUR_MS;
  // Back past what a Date holds (±273,790 years) is NaN, which no time is at or after: keep them all.
  return Number.isNaN(start) ? -Infinity : start;
}

/** "2026-W53": the ISO week-year and week of a wall-clock time, by the Thursday of its week. */
function isoWeek(wall: number): string {
  const date = new Date(wall);
  const mondayBased = (date.getUTCDay() + 6) % 7;
  const thursday = Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate() - mondayBased + 3);
  const year = new Date(thursday).getUTCFullYear();
  const week = 1 + Math.floor((thursday - Date.UTC(year, 0, 1)) / (7 * DAY_MS));
  return `${year}-W${String(week).padStart(2, '0')}`;
}
