// Progress reporting: JSON lines for logs and pipes, a redrawn line on a terminal, rate and ETA.
import { describe, expect, it } from 'vitest';
import { createReporter } from '../../../src/restore/report.js';

function capture(isTTY: boolean) {
  const written: string[] = [];
  let clock = 1_000_000;
  const reporter = createReporter({ write: (text) => written.push(text), isTTY }, () => clock);
  return { reporter, written, advance: (ms: number) => (clock += ms) };
}

describe('createReporter', () => {
  it('writes JSON lines with rate and ETA when not on a terminal', () => {
    const { reporter, written, advance } = capture(false);
    reporter.started('buckets', 'db_wal');
    advance(2000);
    reporter.progress('buckets', { objects: 5, bytes: 4 * 1048576 }, { objects: 10, bytes: 8 * 1048576 });
    advance(2000);
    reporter.finished('buckets', 'success', 'db_wal');
    expect(written.map((l) => JSON.parse(l) as unknown)).toEqual([
      { event: 'step-started', step: 'buckets', detail: 'db_wal' },
      {
        event: 'progress',
        step: 'buckets',
        objects: 5,
        totalObjects: 10,
        bytes: 4194304,
        totalBytes: 8388608,
        bytesPerSecond: 2097152,
        etaSeconds: 2,
      },
      { event: 'step-finished', step: 'buckets', status: 'success', detail: 'db_wal', durationMs: 4000 },
    ]);
  });

  it('shows the first progress at once, then at most one line every two seconds, and always the last', () => {
    const { reporter, written, advance } = capture(false);
    reporter.started('volume', '/x');
    for (let i = 1; i <= 10; i++) {
      advance(100);
      reporter.progress('volume', { objects: i, bytes: i }, { objects: 10, bytes: 10 });
    }
    const shown = written
      .filter((l) => l.includes('"progress"'))
      .map((l) => (JSON.parse(l) as { objects: number }).objects);
    expect(shown).toEqual([1, 10]);
  });

  it('redraws one line on a terminal and ends it before the next message', () => {
    const { reporter, written, advance } = capture(true);
    reporter.started('buckets', 'registry');
    advance(1000);
    reporter.progress('buckets', { objects: 1, bytes: 1048576 }, { objects: 2, bytes: 2 * 1048576 });
    reporter.warn('something');
    expect(written).toEqual([
      'buckets: started registry\n',
      '\rbuckets: 1/2 objects, 1.0/2.0 MiB, 1.0 MiB/s, ETA 1 s   ',
      '\nwarning: something\n',
    ]);
  });
});
