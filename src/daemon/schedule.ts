// The daemon's cron tasks (backup, verify, drill): node-cron, with a slot that comes late still run.
import { createTask, type ScheduledTask } from 'node-cron';
import type { Logger } from '../log.js';

/**
 * How late a slot may be taken and still run. node-cron's own default is 1 s: an event loop busy
 * for two seconds at 03:00 (a paused VM, a throttled container) would skip that night's backup,
 * with only a console line. A slot is still never run once the next one has come.
 */
export const LATE_SLOT_TOLERANCE_MS = 10 * 60_000;

/** Settings of one scheduled task. */
export interface ScheduleOptions {
  timezone: string;
  /** For node-cron and the log, e.g. "deis-backup-verify". */
  name: string;
  /** What the log calls a run, e.g. "scheduled verify". */
  what: string;
  /** Each run waits a random 0 to this many ms first. */
  jitterMs?: number;
  log: Logger;
  /** Overrides LATE_SLOT_TOLERANCE_MS (tests). */
  lateToleranceMs?: number;
}

/**
 * A stopped cron task that calls `run` at each slot of `cron` in the time zone, never two at once.
 * A slot missed all the same (later than the tolerance, or past the next slot) is logged as a
 * warning through `log`.
 */
export function scheduleTask(cron: string, run: () => void, opts: ScheduleOptions): ScheduledTask {
  const task = createTask(cron, run, {
    timezone: opts.timezone,
    noOverlap: true,
    name: opts.name,
    ...(opts.jitterMs ? { maxRandomDelay: opts.jitterMs } : {}),
    missedExecutionTolerance: opts.lateToleranceMs ?? LATE_SLOT_TOLERANCE_MS,
  });
  task.on('execution:missed', (context) => {
    opts.log.warn(
      { slot: context.date.toISOString() },
      `${opts.what} missed: the process was busy or paused at its time`,
    );
  });
  return task;
}
