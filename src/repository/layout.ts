// Key names inside a target (see docs/design.md for the whole layout).
import { createHash, randomBytes } from 'node:crypto';

/** Folder of every restore point. */
export const SNAPSHOTS = 'snapshots/';

/** Restore point ids sort by time: `20261125T130102Z-3f9a`. */
export function newSnapshotId(now: Date): string {
  const stamp = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '');
  return `${stamp}-${randomBytes(2).toString('hex')}`;
}

/** True for strings shaped like a snapshot id. */
export function isSnapshotId(value: string): boolean {
  return /^\d{8}T\d{6}Z-[0-9a-f]{4}$/.test(value);
}

/** Key of a restore point's artifact. */
export function artifactKey(snapshotId: string, name: string): string {
  return `${SNAPSHOTS}${snapshotId}/${name}`;
}

/** Key of a restore point's manifest, the commit point. */
export function manifestKey(snapshotId: string): string {
  return artifactKey(snapshotId, 'manifest.json');
}

/**
 * Key of the marker a run writes before anything else. A snapshot folder with a marker and no
 * manifest is an interrupted run: the next run reuses the blobs it stored, prune removes it.
 */
export function runMarkerKey(snapshotId: string): string {
  return artifactKey(snapshotId, 'run.json');
}

/** Folder of every bucket object body. */
export const BLOBS = 'blobs/';

/**
 * Key of a bucket object's body. Named by what identifies one version of the object on the gateway
 * (bucket, key, size, ETag), so an unchanged object maps to the body already stored.
 */
export function blobKey(identity: { bucket: string; key: string; size: number; etag: string }): string {
  const hash = createHash('sha256')
    .update([identity.bucket, identity.key, String(identity.size), identity.etag].join('\0'))
    .digest('hex');
  return `${BLOBS}${hash.slice(0, 2)}/${hash}`;
}

/** Artifact name of a bucket's index. */
export function bucketIndexName(bucket: string): string {
  return `bucket-${bucket}.jsonl.gz`;
}
