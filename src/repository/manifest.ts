// The restore point's manifest: the commit point of a run, written after every artifact it names.
import { BackupError } from '../errors.js';

/** Bumped on any change a reader of the previous version would misread (see docs/design.md). */
export const FORMAT_VERSION = 1;

/** A stored artifact: where it is, how long, and its sha256. */
export interface ArtifactRecord {
  /** Artifact name within the source, e.g. "volume.tar.gz". */
  name: string;
  /** Target key, relative to the target's prefix. */
  key: string;
  size: number;
  sha256: string;
}

/** How a source ended: all of it, some of it (listed in `errors`), or none of it. */
export type SourceStatus = 'success' | 'partial' | 'failed';

/** What a source read and stored during the run. */
export interface SourceCounts {
  /** Objects (buckets) or entries (volume) captured; 1 for a dump. */
  objects: number;
  /** Bytes read from the source (object bodies transferred; 0 for unchanged objects). */
  bytesRead: number;
  /** Bytes written to the target for this source, artifacts and object bodies together. */
  bytesStored: number;
  /** Objects taken over from the previous restore point without being read. */
  unchanged: number;
  /** Objects whose body an interrupted earlier run had stored, reused without a read (absent in manifests written before resume existed). */
  resumed?: number;
  /** Objects deleted between listing and reading (WAL-E prunes db_wal on its own). */
  vanished: number;
  /** Objects or entries that could not be captured. */
  failed: number;
  warnings: number;
}

/** One source of a restore point. */
export interface SourceRecord {
  /** "bucket:<name>", "volume" or "database". */
  id: string;
  kind: 'bucket' | 'volume' | 'database';
  status: SourceStatus;
  /** Where it was read from, e.g. "db_wal at http://10.21.1.44:8888" or "ssh core@host:/var/lib/deis/store". */
  origin: string;
  counts: SourceCounts;
  warnings: string[];
  errors: string[];
  artifacts: ArtifactRecord[];
  /** Bucket sources: the bucket's name in the cluster. */
  bucket?: string;
  /** Volume sources: the sources.volume.exclude patterns the archive left out, when there were any. */
  excluded?: string[];
}

/** A committed restore point. */
export interface Manifest {
  formatVersion: typeof FORMAT_VERSION;
  id: string;
  tool: string;
  startedAt: string;
  finishedAt: string;
  /** "partial" when any source is partial; a manifest is never written for a failed run. */
  status: 'success' | 'partial';
  sources: SourceRecord[];
}

/** One line of a bucket index (`bucket-<name>.jsonl.gz`): an object and where its body is stored. */
export interface IndexEntry {
  key: string;
  size: number;
  /** The gateway's ETag, quotes removed; `<md5>-<parts>` for multipart uploads. */
  etag: string;
  lastModified: string;
  contentType?: string;
  metadata: Record<string, string>;
  sha256: string;
  /** Target key of the body. */
  blob: string;
}

/** Zero counts. */
/** Whether a parsed index line has the fields every reader of an IndexEntry relies on. */
export function isIndexEntry(value: unknown): value is IndexEntry {
  if (typeof value !== 'object' || value === null) return false;
  const e = value as Record<string, unknown>;
  return (
    typeof e['key'] === 'string' &&
    Number.isSafeInteger(e['size']) &&
    (e['size'] as number) >= 0 &&
    typeof e['etag'] === 'string' &&
    typeof e['sha256'] === 'string' &&
    typeof e['blob'] === 'string' &&
    typeof e['metadata'] === 'object' &&
    e['metadata'] !== null
  );
}

/** What a restore point holds, as retention groups it: its source ids, sorted, joined by " + ". */
export function scopeOf(manifest: Pick<Manifest, 'sources'>): string {
  return manifest.sources
    .map((s) => s.id)
    .sort()
    .join(' + ');
}

export function emptyCounts(): SourceCounts {
  return {
    objects: 0,
    bytesRead: 0,
    bytesStored: 0,
    unchanged: 0,
    resumed: 0,
    vanished: 0,
    failed: 0,
    warnings: 0,
  };
}

/** Parses and checks a manifest's JSON text. */
export function parseManifest(text: string, key: string): Manifest {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new BackupError('ERR_INTEGRITY', `manifest ${key} is not valid JSON`);
  }
  const m = value as Partial<Manifest>;
  if (m.formatVersion !== FORMAT_VERSION) {
    throw new BackupError(
      'ERR_INTEGRITY',
      `manifest ${key} has format version ${String(m.formatVersion)}; this deis-backup reads version ${FORMAT_VERSION}`,
    );
  }
  if (typeof m.id !== 'string' || !Array.isArray(m.sources)) {
    throw new BackupError('ERR_INTEGRITY', `manifest ${key} lacks id or sources`);
  }
  return m as Manifest;
}
