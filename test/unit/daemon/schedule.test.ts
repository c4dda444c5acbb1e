// The daemon's cron tasks run a slot that comes late, as after a busy event loop or a paused VM.
import { describe, expect, it } from 'vitest';
import { scheduleTask } from '../../../src/daemon/schedule.js';
import type { Logger } from '../../../src/log.js';
import { silentLogger } from '../../../src/logger.js';

/** Keeps the event loop busy until `until` (ms since the epoch), as a stalled process would be. */
function busyUntil(until: number): void {
  while (Date.now() < until) {
    // spin
  }
}

/** Runs a task every 5 s, stalls the loop until 2 s past its next slot, and reports what happened. */
async function stalledSlot(lateToleranceMs?: number): Promise<{ ran: number; missed: string[] }> {
  let ran = 0;
  const missed: string[] = [];
  const log: Logger = {
    ...silentLogger,
    warn: (...args: unknown[]) => {
      missed.push(String(args.at(-1)));
    },
  };
  const task = scheduleTask(
    '*/5 * * * * *',
    () => {
      ran++;
    },
    {
      timezone: 'UTC',
      name: 'test',
      what: 'scheduled test',
      log,
      ...(lateToleranceMs === undefined ? {} : { lateToleranceMs }),
    },
  );
  try {
    await task.start();
    const slot = task.getNextRun()?.getTime() ?? 0;
    busyUntil(slot + 2000);
    // The late slot runs (or is missed) once the loop is free; the next one is 3 s away.
    await new Promise((resolve) => setTimeout(resolve, 300));
    return { ran, missed };
  } finally {
    await task.destroy();
  }
}

describe('scheduled tasks', () => {
  it('run a slot that came 2 s late', async () => {
    expect(await stalledSlot()).toEqual({ ran: 1, missed: [] });
  }, 15_000);

  it("log a slot they missed, here with node-cron's own 1 s tolerance", async () => {
    expect(await stalledSlot(1000)).toEqual({
      ran: 0,
      missed: ['scheduled test missed: the process was busy or paused at its time'],
    });
  }, 15_000);
});
