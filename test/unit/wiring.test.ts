// Which runs and restore points count as "all" in the daemon's metrics.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import type { SourceRecord } from '../../src/repository/manifest.js';
import { sourceRecord } from '../fixtures/records.js';
import { tempDir } from '../temp-dirs.js';
import { coversAll, holdsAll, isConfiguredSource } from '../../src/wiring.js';

function config(sources: unknown) {
  const file = join(tempDir('deis-backup-wiring-'), 'config.json');
  writeFileSync(file, JSON.stringify({ sources }));
  return loadConfig({ file, env: {} });
}

function records(...ids: string[]): { sources: SourceRecord[] } {
  return { sources: ids.map(sourceRecord) };
}

describe('coversAll and holdsAll', () => {
  it('count a run or restore point as "all" only when it has every enabled source', () => {
    const every = config({});
    expect(coversAll(every, undefined)).toBe(true);
    expect(coversAll(every, ['buckets', 'volume', 'database'])).toBe(true);
    expect(coversAll(every, ['database'])).toBe(false);
    expect(holdsAll(every, records('bucket:db_wal', 'bucket:registry', 'volume', 'database'))).toBe(true);
    expect(holdsAll(every, records('database'))).toBe(false);
    const noVolume = config({ volume: { enabled: false } });
    expect(coversAll(noVolume, ['buckets', 'database'])).toBe(true);
    expect(holdsAll(noVolume, records('bucket:db_wal', 'database'))).toBe(true);
    expect(holdsAll(noVolume, records('bucket:db_wal'))).toBe(false);
  });
});

describe('isConfiguredSource', () => {
  it('takes a source whose kind is enabled and, where names are listed, a listed bucket', () => {
    const every = config({});
    for (const id of ['bucket:db_wal', 'bucket:anything', 'volume', 'database'])
      expect(isConfiguredSource(every, id)).toBe(true);
    const listed = config({ buckets: { names: ['db_wal'] }, database: { enabled: false } });
    expect(isConfiguredSource(listed, 'bucket:db_wal')).toBe(true);
    expect(isConfiguredSource(listed, 'bucket:registry')).toBe(false);
    expect(isConfiguredSource(listed, 'database')).toBe(false);
    expect(isConfiguredSource(listed, 'volume')).toBe(true);
    expect(isConfiguredSource(config({ buckets: { enabled: false } }), 'bucket:db_wal')).toBe(false);
    expect(isConfiguredSource(every, 'teleport')).toBe(false);
  });
});
