// The verify and drill gauges (the newest outcome wins, whichever way it arrives) and the retention counters.
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { Metrics } from '../../src/metrics.js';
import { FORMAT_VERSION, type Manifest } from '../../src/repository/manifest.js';
import { sourceRecord } from '../fixtures/records.js';

async function value(
  metrics: Metrics,
  name: string,
  labels: Record<string, string> = {},
): Promise<number | undefined> {
  const metric = (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === name);
  const values = (metric?.values ?? []) as { value: number; labels: Record<string, string | number> }[];
  return values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))?.value;
}

function manifest(finishedAt: string, ids: string[]): Manifest {
  return {
    formatVersion: FORMAT_VERSION,
    id: finishedAt,
    tool: 'test',
    startedAt: finishedAt,
    finishedAt,
    status: 'success',
    sources: ids.map(sourceRecord),
  };
}

const LAST_SUCCESS = 'deis_backup_last_success_timestamp_seconds';
const EVERYTHING = ['bucket:db_wal', 'bucket:registry', 'volume', 'database'];

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

  it('counts a run of only some sources for them, not for "all"', async () => {
    const metrics = new Metrics(new Registry(), 'test');
    const at = new Date('2026-12-04T03:00:00Z');
    metrics.backupFinished(
      {
        status: 'success',
        id: 'a',
        startedAt: at.toISOString(),
        finishedAt: at.toISOString(),
        sources: EVERYTHING.map(sourceRecord),
      },
      1,
      at,
    );
    const later = new Date('2026-12-04T10:00:00Z');
    metrics.backupFinished(
      {
        status: 'success',
        id: 'b',
        startedAt: later.toISOString(),
        finishedAt: later.toISOString(),
        sources: [sourceRecord('database')],
      },
      1,
      later,
      false,
    );
    expect(await value(metrics, LAST_SUCCESS, { source: 'all' })).toBe(at.getTime() / 1000);
    expect(await value(metrics, LAST_SUCCESS, { source: 'database' })).toBe(later.getTime() / 1000);
    expect(await value(metrics, 'deis_backup_attempt_total', { source: 'all' })).toBe(1);
    expect(metrics.lastSuccessOf('all')).toBe(at.getTime() / 1000);
  });

  it('keeps the status of a run this daemon saw when the restore points are read back later', async () => {
    const metrics = new Metrics(new Registry(), 'test');
    // The target was down at start: the first run failed, and the first listing comes after it.
    const now = '2026-12-02T03:00:00.000Z';
    metrics.backupFinished(
      { status: 'failed', startedAt: now, finishedAt: now, sources: [] },
      1,
      new Date(now),
    );
    metrics.rebuild(
      [manifest('2026-12-01T03:00:00.000Z', EVERYTHING)],
      () => true,
      () => true,
    );
    expect(await value(metrics, 'deis_backup_last_status', { source: 'all' })).toBe(0);
    // A source no run has reported yet still takes its status from the newest restore point.
    expect(await value(metrics, 'deis_backup_last_status', { source: 'volume' })).toBe(1);
    expect(await value(metrics, LAST_SUCCESS, { source: 'all' })).toBe(
      Date.parse('2026-12-01T03:00:00Z') / 1000,
    );
  });

  it('rebuilds "all" from the restore points that hold everything', async () => {
    const metrics = new Metrics(new Registry(), 'test');
    const whole = manifest('2026-12-04T03:00:00.000Z', EVERYTHING);
    const databaseOnly = manifest('2026-12-04T10:00:00.000Z', ['database']);
    metrics.rebuild(
      [whole, databaseOnly],
      (m) => m.sources.length === EVERYTHING.length,
      () => true,
    );
    expect(await value(metrics, LAST_SUCCESS, { source: 'all' })).toBe(Date.parse(whole.finishedAt) / 1000);
    expect(await value(metrics, LAST_SUCCESS, { source: 'database' })).toBe(
      Date.parse(databaseOnly.finishedAt) / 1000,
    );
    expect(await value(metrics, LAST_SUCCESS, { source: 'volume' })).toBe(
      Date.parse(whole.finishedAt) / 1000,
    );
  });

  it('gives no figures of its own to a source the config no longer backs up', async () => {
    const metrics = new Metrics(new Registry(), 'test');
    const newest = manifest('2026-12-04T03:00:00.000Z', [...EVERYTHING, 'bucket:retired']);
    newest.sources = newest.sources.map((s) => (s.id === 'bucket:retired' ? { ...s, status: 'partial' } : s));
    metrics.rebuild(
      [manifest('2026-12-03T03:00:00.000Z', [...EVERYTHING, 'bucket:retired']), newest],
      () => true,
      (source) => source !== 'bucket:retired',
    );
    // A partial status kept for it would hold DeisBackupPartial on for good.
    expect(await value(metrics, 'deis_backup_last_status', { source: 'bucket:retired' })).toBeUndefined();
    expect(await value(metrics, LAST_SUCCESS, { source: 'bucket:retired' })).toBeUndefined();
    expect([...metrics.lastSuccesses().keys()]).not.toContain('bucket:retired');
    expect(await value(metrics, 'deis_backup_last_status', { source: 'bucket:registry' })).toBe(1);
  });

  it('counts what retention removed, the uploads it aborted and its failures', async () => {
    const metrics = new Metrics(new Registry(), 'test');
    expect(await value(metrics, 'deis_backup_retention_failures_total')).toBe(0);
    const report = {
      dryRun: false,
      scope: 'all' as const,
      snapshots: 1,
      removedBlobs: 2,
      removedKeys: 1,
      interrupted: [],
      freedBytes: 300,
      abortedUploads: 3,
    };
    metrics.retentionApplied({ prune: report });
    // A prune that stopped at a denied delete: what it removed before still counts.
    metrics.retentionApplied({
      prune: { ...report, freedBytes: 20, abortedUploads: undefined, removeError: 'AccessDenied' },
      error: 'prune: AccessDenied',
    });
    expect(await value(metrics, 'deis_backup_pruned_bytes_total')).toBe(320);
    expect(await value(metrics, 'deis_backup_pruned_uploads_total')).toBe(3);
    expect(await value(metrics, 'deis_backup_retention_failures_total')).toBe(1);
  });
});
