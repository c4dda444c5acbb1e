// The human tables: the snapshots list keeps its last column aligned however many sources a
// restore point lists.
import { describe, expect, it } from 'vitest';
import { formatSnapshots } from '../../src/format.js';
import type { Manifest } from '../../src/repository/manifest.js';

/** As much of a manifest as the table reads. */
function manifest(id: string, sources: string[]): Manifest {
  return {
    id,
    finishedAt: '2026-12-06T03:00:07.123Z',
    status: 'success',
    sources: sources.map((source) => ({ id: source, counts: { bytesStored: 1024 } })),
  } as unknown as Manifest;
}

describe('formatSnapshots', () => {
  it('widens the SOURCES column to the longest list, so STORED stays one column', () => {
    const lines = formatSnapshots([
      manifest('20261205T030000Z-aaaa', ['volume']),
      manifest('20261206T030000Z-bbbb', ['bucket:db_wal', 'bucket:registry', 'volume', 'database']),
    ]);
    const column = (line: string | undefined) => line?.lastIndexOf('  ') ?? -1;
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/^ID +FINISHED +STATUS +SOURCES +STORED$/);
    expect(lines[2]).toContain('bucket:db_wal,bucket:registry,volume,database  4.0 KiB');
    expect(new Set(lines.map(column)).size).toBe(1);
  });
});
