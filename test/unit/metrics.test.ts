// The verify and drill gauges: the newest outcome wins, whichever way it arrives.
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { Metrics } from '../../src/metrics.js';

async function value(metrics: Metrics, name: string): Promise<number | undefined> {
  const metric = (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === name);
  return (metric?.values as { value: number }[] | undefined)?.[0]?.value;
}

describe('Metrics', () => {
  it('keeps a verify failure when an older success is read back from the target', async () => {
    const metrics = new Metrics(new Registry(), 'test');
    metrics.verifyFinished(true, true, new Date('2026-12-01T03:00:00Z'));
    metrics.verifyFinished(false, true, new Date('2026-12-02T03:00:00Z'));
    // The minute probe re-reads the status file, which still holds the older success.
    metrics.verifyFinished(true, true, new Date('2026-12-01T03:00:00Z'));
    expect(await value(metrics, 'deis_backup_verify_success')).toBe(0);
    expect(await value(metrics, 'deis_backup_verify_last_success_timestamp_seconds')).toBe(
      Date.parse('2026-12-01T03:00:00Z') / 1000,
    );
    metrics.verifyFinished(true, true, new Date('2026-12-03T03:00:00Z'));
    expect(await value(metrics, 'deis_backup_verify_success')).toBe(1);
    expect(await value(metrics, 'deis_backup_verify_last_success_timestamp_seconds')).toBe(
      Date.parse('2026-12-03T03:00:00Z') / 1000,
    );
  });

  it('keeps a drill failure when an older success is read back from the target', async () => {
    const metrics = new Metrics(new Registry(), 'test');
    metrics.drillFinished(false, new Date('2026-12-02T04:00:00Z'));
    metrics.drillFinished(true, new Date('2026-12-01T04:00:00Z'));
    expect(await value(metrics, 'deis_backup_restore_test_success')).toBe(0);
    expect(await value(metrics, 'deis_backup_restore_test_last_success_timestamp_seconds')).toBe(
      Date.parse('2026-12-01T04:00:00Z') / 1000,
    );
    // A later success read back (a CLI drill recorded it) clears the failure.
    metrics.drillFinished(true, new Date('2026-12-03T04:00:00Z'));
    expect(await value(metrics, 'deis_backup_restore_test_success')).toBe(1);
  });
});
