// The WAL-E 005 copy check: base backups complete with every partition, WAL without holes.
import { describe, expect, it } from 'vitest';
import { baseBackupOf, checkWalE, isWalEKey, type WalEKey } from '../../src/repository/wal-e.js';

/** Keys of one complete base backup starting at `segment` (24 hex), with `parts` tar partitions. */
function baseBackup(segment: string, parts: readonly number[] = [0], sentinel = true): WalEKey[] {
  const dir = `basebackups_005/base_${segment}_00000040`;
  return [
    { key: `${dir}/extended_version.txt`, size: 45 },
    ...parts.map((n) => ({
      key: `${dir}/tar_partitions/part_${String(n).padStart(8, '0')}.tar.lzo`,
      size: 1000,
    })),
    ...(sentinel ? [{ key: `${dir}_backup_stop_sentinel.json`, size: 180 }] : []),
  ];
}

/** WAL segment keys on a timeline (8 hex) and log id (8 hex) for the given segment numbers. */
function segments(tli: string, log: string, segs: readonly number[]): WalEKey[] {
  return segs.map((seg) => ({
    key: `wal_005/${tli}${log}${seg.toString(16).toUpperCase().padStart(8, '0')}.lzo`,
    size: 4000,
  }));
}

const range = (from: number, to: number): number[] =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('checkWalE', () => {
  it('accepts a complete copy: two base backups, continuous WAL, backup and history files', () => {
    const keys = [
      ...baseBackup('000000010000000000000002', [0, 1, 2]),
      ...baseBackup('000000010000000000000009'),
      ...segments('00000001', '00000000', range(1, 12)),
      { key: 'wal_005/000000010000000000000002.00000028.backup.lzo', size: 300 },
      { key: 'unrelated/readme.txt', size: 10 },
    ];
    expect(checkWalE(keys)).toEqual({ baseBackups: 2, segments: 12, errors: [], warnings: [] });
  });

  it('reports a sentinel without partitions', () => {
    const result = checkWalE([
      ...baseBackup('000000010000000000000002', []),
      ...segments('00000001', '00000000', [2, 3]),
    ]);
    expect(result.errors).toEqual([
      'base backup base_000000010000000000000002_00000040 has a stop sentinel but no tar partition (missing basebackups_005/base_000000010000000000000002_00000040/tar_partitions/part_00000000.tar.lzo)',
    ]);
  });

  it('reports a hole in the partitions by name', () => {
    const result = checkWalE([
      ...baseBackup('000000010000000000000002', [0, 2]),
      ...segments('00000001', '00000000', [2]),
    ]);
    expect(result.errors).toEqual([
      'base backup base_000000010000000000000002_00000040: missing tar partition basebackups_005/base_000000010000000000000002_00000040/tar_partitions/part_00000001.tar.lzo',
    ]);
  });

  it('warns about a base backup without sentinel, which WAL-E ignores', () => {
    const result = checkWalE([
      ...baseBackup('000000010000000000000002'),
      ...baseBackup('000000010000000000000004', [0, 1], false),
      ...segments('00000001', '00000000', [2, 3, 4]),
    ]);
    expect(result.errors).toEqual([]);
    expect(result.baseBackups).toBe(1);
    expect(result.warnings).toEqual([
      'basebackups_005/base_000000010000000000000004_00000040: incomplete (no sentinel); WAL-E ignores it',
    ]);
  });

  it('names a missing WAL segment with its neighbours', () => {
    const result = checkWalE([
      ...baseBackup('000000010000000000000001'),
      ...segments('00000001', '00000000', [1, 2, 4]),
    ]);
    expect(result.errors).toEqual([
      'missing WAL wal_005/000000010000000000000003.lzo (after 000000010000000000000002, before 000000010000000000000004)',
    ]);
  });

  it('collapses a long gap into first..last with a count', () => {
    const result = checkWalE([
      ...baseBackup('000000010000000000000001'),
      ...segments('00000001', '00000000', [1, 2, 0x40]),
    ]);
    expect(result.errors).toEqual([
      'missing WAL wal_005/000000010000000000000003.lzo..wal_005/00000001000000000000003F.lzo (61 segments, after 000000010000000000000002, before 000000010000000000000040)',
    ]);
  });

  it('reports WAL missing at the start of the oldest base backup and up to the newest one', () => {
    const result = checkWalE([
      ...baseBackup('000000010000000000000001'),
      ...baseBackup('000000010000000000000006'),
      ...segments('00000001', '00000000', [2, 3, 4]),
    ]);
    expect(result.errors).toEqual([
      'missing WAL wal_005/000000010000000000000001.lzo (start of base_000000010000000000000001_00000040, before 000000010000000000000002)',
      'missing WAL wal_005/000000010000000000000005.lzo..wal_005/000000010000000000000006.lzo (2 segments, after 000000010000000000000004, needed by base_000000010000000000000006_00000040)',
    ]);
  });

  it('continues from segment FF of one log id to segment 00 of the next', () => {
    const result = checkWalE([
      ...baseBackup('0000000100000012000000FD'),
      ...segments('00000001', '00000012', [0xfd, 0xfe, 0xff]),
      ...segments('00000001', '00000013', [0, 1]),
    ]);
    expect(result).toEqual({ baseBackups: 1, segments: 5, errors: [], warnings: [] });
    const gap = checkWalE([
      ...baseBackup('0000000100000012000000FE'),
      ...segments('00000001', '00000012', [0xfe]),
      ...segments('00000001', '00000013', [1]),
    ]);
    expect(gap.errors).toEqual([
      'missing WAL wal_005/0000000100000012000000FF.lzo..wal_005/000000010000001300000000.lzo (2 segments, after 0000000100000012000000FE, before 000000010000001300000001)',
    ]);
  });

  it('follows a timeline switch: the sequence continues on the newer timeline', () => {
    const keys = [
      ...baseBackup('0000000B0000001200000038'),
      ...segments('0000000B', '00000012', range(0x38, 0x3b)),
      { key: 'wal_005/0000000C.history.lzo', size: 90 },
      ...segments('0000000C', '00000012', range(0x3b, 0x3e)),
      ...baseBackup('0000000C000000120000003D'),
    ];
    expect(checkWalE(keys)).toEqual({ baseBackups: 2, segments: 8, errors: [], warnings: [] });
    // A hole after the switch is named on the new timeline; a missing history file is a warning.
    const gap = checkWalE([
      ...baseBackup('0000000B0000001200000038'),
      ...segments('0000000B', '00000012', [0x38, 0x39]),
      ...segments('0000000C', '00000012', [0x3a, 0x3c]),
    ]);
    expect(gap.errors).toEqual([
      'missing WAL wal_005/0000000C000000120000003B.lzo (after 0000000C000000120000003A, before 0000000C000000120000003C)',
    ]);
    expect(gap.warnings).toEqual(['timeline 0000000C has no wal_005/0000000C.history.lzo']);
  });

  it('ignores segments on a timeline older than the base backup', () => {
    const result = checkWalE([
      ...baseBackup('000000020000000000000001'),
      ...segments('00000002', '00000000', [1]),
      ...segments('00000001', '00000000', [2]),
      ...segments('00000002', '00000000', [3]),
    ]);
    expect(result.errors).toEqual([
      'missing WAL wal_005/000000020000000000000002.lzo (after 000000020000000000000001, before 000000020000000000000003)',
    ]);
  });

  it('fails a copy with WAL-E keys but no complete base backup', () => {
    const result = checkWalE([
      ...baseBackup('000000010000000000000002', [0], false),
      ...segments('00000001', '00000000', [2]),
    ]);
    expect(result.errors).toEqual([
      'no complete base backup: the database cannot be restored from this copy',
    ]);
    expect(checkWalE(segments('00000001', '00000000', [1])).errors).toEqual([
      'no complete base backup: the database cannot be restored from this copy',
    ]);
  });

  it('reports empty partitions and segments', () => {
    const result = checkWalE([
      ...baseBackup('000000010000000000000001'),
      { key: 'wal_005/000000010000000000000001.lzo', size: 0 },
    ]);
    expect(result.errors).toEqual(['WAL segment wal_005/000000010000000000000001.lzo is empty (0 bytes)']);
  });

  it('finds nothing to say about a bucket without WAL-E keys', () => {
    const keys = [{ key: 'registry/images/abc/layer', size: 10 }];
    expect(checkWalE(keys)).toEqual({ baseBackups: 0, segments: 0, errors: [], warnings: [] });
    expect(checkWalE([])).toEqual({ baseBackups: 0, segments: 0, errors: [], warnings: [] });
    expect(isWalEKey('wal_005/00000001.history.lzo')).toBe(true);
    expect(isWalEKey('registry/wal_005')).toBe(false);
  });
});

describe('baseBackupOf', () => {
  it('names the base backup of its files and of its stop sentinel, and of nothing else', () => {
    const base = 'base_000000050000005600000084_00000040';
    expect(baseBackupOf(`basebackups_005/${base}/tar_partitions/part_00000000.tar.lzo`)).toBe(base);
    expect(baseBackupOf(`basebackups_005/${base}_backup_stop_sentinel.json`)).toBe(base);
    expect(baseBackupOf('wal_005/000000050000005600000084.lzo')).toBeUndefined();
    expect(baseBackupOf(`registry/basebackups_005/${base}/x`)).toBeUndefined();
  });
});
