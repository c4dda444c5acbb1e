// cronProblem's fast path for plain expressions must agree with node-cron, which settles the rest.
import { createTask, validateDetailed } from 'node-cron';
import { describe, expect, it } from 'vitest';
import { cronProblem, longestCronGap } from '../../src/cron.js';

function nodeCronFires(cron: string, timezone: string): boolean {
  if (!validateDetailed(cron).valid) return false;
  const task = createTask(cron, () => undefined, { timezone });
  const next = task.getNextRuns(1)[0];
  void task.destroy();
  return next !== undefined;
}

describe('cronProblem', () => {
  const plain = [
    '0 3 * * *',
    '30 4 * * *',
    '0 5 * * 0',
    '59 23 * * 6',
    '0 0 1 1 *',
    '0 0 28 2 *',
    '0 0 31 * *',
    '15 2 * 12 *',
    '7 * * * *',
    '* * * * *',
    '  0   3 * * *  ',
  ];
  for (const cron of plain) {
    for (const zone of ['UTC', 'Europe/Berlin', 'Pacific/Kiritimati']) {
      it(`accepts "${cron}" in ${zone}, as node-cron does`, () => {
        expect(nodeCronFires(cron, zone)).toBe(true);
        expect(cronProblem(cron, zone)).toBeUndefined();
      });
    }
  }

  it('leaves lists, ranges, steps and names to node-cron and accepts what it accepts', () => {
    for (const cron of [
      '*/15 * * * *',
      '0 3 * * 1-5',
      '0 3 1,15 * *',
      '0 3 * JAN *',
      '0 3 15 6 1',
      '0 0 29 2 *',
    ]) {
      expect(nodeCronFires(cron, 'UTC')).toBe(true);
      expect(cronProblem(cron, 'UTC')).toBeUndefined();
    }
  });

  it('rejects what node-cron rejects, naming the expression', () => {
    for (const cron of [
      '60 3 * * *',
      '0 24 * * *',
      '0 3 0 * *',
      '0 3 * 13 *',
      '0 3 * * 8',
      'nonsense',
      '03 3 * * * * *',
    ]) {
      expect(nodeCronFires(cron, 'UTC')).toBe(false);
      expect(cronProblem(cron, 'UTC')).toContain(`"${cron}"`);
    }
  });

  it('reports a day that the named month never has', () => {
    expect(cronProblem('0 0 31 2 *', 'UTC')).toMatch(/never fires|not a cron expression/);
  });
});

describe('longestCronGap', () => {
  const cases: [string, string, number][] = [
    ['0 3 * * *', 'UTC', 86_400],
    ['*/10 * * * * *', 'UTC', 10],
    // Friday 03:00 to Monday 03:00: a weekend is not stale.
    ['0 3 * * 1-5', 'UTC', 3 * 86_400],
    ['0 9-17 * * *', 'UTC', 16 * 3600],
    // 48 runs a day: Friday 23:30 to Monday 00:00, whatever day it is now.
    ['*/30 * * * 1-5', 'UTC', 48 * 3600 + 1800],
    ['0 5 * * 0', 'UTC', 7 * 86_400],
    // 15th to the 1st of a 31-day month.
    ['0 3 1,15 * *', 'UTC', 17 * 86_400],
  ];
  for (const [cron, zone, seconds] of cases) {
    it(`gives "${cron}" in ${zone} ${seconds} s`, () => {
      const task = createTask(cron, () => undefined, { timezone: zone });
      try {
        expect(longestCronGap(task)).toBe(seconds);
      } finally {
        void task.destroy();
      }
    });
  }

  it('gives a day for a schedule that runs once or never', () => {
    expect(longestCronGap({ getNextRuns: () => [new Date()] })).toBe(86_400);
    expect(longestCronGap({ getNextRuns: () => [] })).toBe(86_400);
  });
});
