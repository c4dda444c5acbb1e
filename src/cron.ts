// Checks that a cron expression and time zone can drive a schedule, cheaply for the common shapes:
// node-cron is loaded only for an expression the plain check does not settle.
import { createRequire } from 'node:module';
import type { ScheduledTask } from 'node-cron';

/** True when zone is an IANA time zone this runtime knows. */
export function isTimeZone(zone: string): boolean {
  // ECMA-402 requires "UTC" everywhere; the first DateTimeFormat costs about 20 ms (ICU set-up),
  // which the default time zone need not pay on every start.
  if (zone === 'UTC') return true;
  try {
    new Intl.DateTimeFormat('en', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

/** Why a cron expression cannot drive the schedule (invalid, or never fires), or undefined. */
export function cronProblem(cron: string, timezone: string): string | undefined {
  if (plainCronFires(cron)) return undefined;
  // node-cron costs about 25 ms to load and 7 ms to check: only expressions the plain check above
  // does not settle pay for it. Loaded synchronously (its CommonJS build) because the config checks
  // are synchronous.
  const { validateDetailed, createTask } = createRequire(import.meta.url)(
    'node-cron',
  ) as typeof import('node-cron');
  const detail = validateDetailed(cron);
  if (!detail.valid) {
    const why = detail.errors.map(fieldProblem).join('; ');
    return `"${cron}" is not a cron expression that ever fires (${why || 'invalid'}); write e.g. "0 3 * * *" for 03:00 daily`;
  }
  if (!isTimeZone(timezone)) return undefined;
  const task = createTask(cron, () => undefined, { timezone });
  const next = task.getNextRuns(1)[0];
  void task.destroy();
  return next ? undefined : `"${cron}" never fires; write e.g. "0 3 * * *" for 03:00 daily`;
}

/** How far ahead longestCronGap looks: a week and a day, so a weekly pattern shows whole. */
const GAP_SPAN_MS = 8 * 86_400_000;
/** The most runs it asks for (about 0.3 ms each): 17 hours of a schedule every minute. */
const GAP_MAX_RUNS = 1024;

/**
 * The longest time between two consecutive runs of a cron task over its next 8 days (at least 16
 * runs, at most 1,024), in seconds; a day when it runs fewer than twice. That is what "twice the
 * schedule interval" must allow: the next two runs alone would give a weekday schedule
 * ("0 3 * * 1-5") one day, and call every weekend stale.
 */
export function longestCronGap(task: Pick<ScheduledTask, 'getNextRuns'>): number {
  let count = 16;
  let runs = task.getNextRuns(count);
  const span = (): number => (runs.at(-1)?.getTime() ?? 0) - (runs[0]?.getTime() ?? 0);
  while (runs.length === count && count < GAP_MAX_RUNS && span() < GAP_SPAN_MS) {
    count = Math.min(count * 4, GAP_MAX_RUNS);
    runs = task.getNextRuns(count);
  }
  let longest = 0;
  for (let i = 1; i < runs.length; i++) {
    const [before, after] = [runs[i - 1], runs[i]];
    if (before && after) longest = Math.max(longest, after.getTime() - before.getTime());
  }
  return longest > 0 ? longest / 1000 : 86_400;
}

/** node-cron's fields: our name for each, and the range of its numbers (day of week 7 is Sunday too). */
const CRON_FIELDS: Record<string, { name: string; range: string }> = {
  second: { name: 'second', range: '0-59' },
  minute: { name: 'minute', range: '0-59' },
  hour: { name: 'hour', range: '0-23' },
  dayOfMonth: { name: 'day of month', range: '1-31' },
  month: { name: 'month', range: '1-12' },
  dayOfWeek: { name: 'day of week', range: '0-7' },
};

/** One of node-cron's findings, its "61 is a invalid expression for minute" as "minute 61 is not in 0-59". */
function fieldProblem(e: { field: string; value?: string; message: string }): string {
  const field = CRON_FIELDS[e.field];
  // Its other findings ("31 2 is an impossible day of month …") read well as they are.
  if (field === undefined || e.value === undefined || !e.message.includes('invalid expression')) {
    return e.message;
  }
  return /^\d+$/.test(e.value)
    ? `${field.name} ${e.value} is not in ${field.range}`
    : `${field.name} "${e.value}" is not a number in ${field.range}, a range, a list or a step`;
}

/** Inclusive ranges of the five cron fields: minute, hour, day of month, month, day of week. */
const CRON_RANGES = [
  [0, 59],
  [0, 23],
  [1, 31],
  [1, 12],
  [0, 6],
] as const;

/**
 * True for the common shape that is valid and fires in any time zone: five fields, each `*` or one
 * in-range number, a day of month that every month named has (no day-and-month pair like 30 2), and
 * no weekday next to a day or month. Anything else (lists, ranges, steps, names, seconds) returns false and goes to node-cron.
 */
function plainCronFires(cron: string): boolean {
  const fields = cron.trim().split(/\s+/);
  if (fields.length !== CRON_RANGES.length) return false;
  const values: (number | undefined)[] = [];
  for (const [i, field] of fields.entries()) {
    if (field === '*') {
      values.push(undefined);
      continue;
    }
    if (!/^(0|[1-9][0-9]?)$/.test(field)) return false;
    const value = Number(field);
    const [lo, hi] = CRON_RANGES[i] ?? [0, -1];
    if (value < lo || value > hi) return false;
    values.push(value);
  }
  const [, , day, month, weekday] = values;
  // A weekday together with a day or month is rare enough to leave to node-cron's search.
  if (weekday !== undefined && (day !== undefined || month !== undefined)) return false;
  return day === undefined || month === undefined || day <= 28;
}
