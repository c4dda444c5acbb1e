// Restore preflight: reads the manifest, every index and artifact it will use, checks them against
// their records and the destination, and plans each step. It writes nothing.
import { BackupError, describeError } from '../errors.js';
import { DigestMap } from '../repository/digest-map.js';
import { isTagFile, readTagged, RegistryImages, type SmallFile } from '../repository/registry-check.js';
import { checkWalE } from '../repository/wal-e.js';
import type { ArtifactRecord, Manifest, SourceRecord } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import type { RestoreDeps, RestoreRequest } from '../restore.js';
import { DEFAULT_STEPS, type RestoreStep } from '../wiring.js';
import { gatewayError } from '../sources/bucket.js';
import type { SshTarget } from '../ssh.js';
import { isSentinel, planBucket, type BucketPlan } from './buckets.js';
import { EntryList } from './entry-list.js';
import { appOf } from './finish.js';
import { storeNotMounted } from '../store-mount.js';
import { inspectArchive, planVolume, type VolumePlan } from './volume.js';

/** Everything a restore needs once the preflight has passed. */
export interface Prepared {
  manifest: Manifest;
  /** The steps this restore runs: those asked for, or by default buckets and volume as held. */
  only: readonly RestoreStep[];
  buckets: { record: SourceRecord; plan: BucketPlan }[];
  volume?: { record: SourceRecord; plan: VolumePlan };
  database?: { record: SourceRecord; where: { command: string; ssh?: SshTarget | undefined } };
  hazards: string[];
  /** The apps whose registry repositories the chosen buckets hold (for the scale advice). */
  apps: Set<string>;
  /**
   * Set when WAL-E data goes into the database's own bucket: that bucket, and the database's
   * `/deis/database/initId` when it is in etcd (the database initialised in this cluster already).
   */
  databaseBucket?: { name: string; initId?: string | undefined };
}

/** Checks everything the restore will read and plans each step; throws when anything is wrong. */
export async function preflight(
  deps: RestoreDeps,
  request: RestoreRequest,
  opts: { signal: AbortSignal },
): Promise<Prepared> {
  const { repository, config } = deps;
  const manifest = await repository.readManifest(request.snapshot, opts);
  const hazards: string[] = [];
  if (manifest.status === 'partial') {
    const missing = manifest.sources.reduce((n, s) => n + s.counts.failed, 0);
    hazards.push(
      `restore point ${manifest.id} is partial: ${missing} item(s) were not captured at backup time`,
    );
  }
  // Named steps must all be in the restore point; the default takes what it holds of the two.
  const holds = (step: RestoreStep): boolean =>
    step === 'finish' || manifest.sources.some((s) => s.kind === (step === 'buckets' ? 'bucket' : step));
  const only = request.only ?? DEFAULT_STEPS.filter(holds);
  if (only.length === 0) {
    throw new BackupError(
      'ERR_NOT_FOUND',
      `restore point ${manifest.id} holds no buckets and no volume; restore its database with --only database ("only" over HTTP)`,
    );
  }
  const wanted = new Set(only);
  const bucketRecords = manifest.sources.filter((s) => s.kind === 'bucket' && wanted.has('buckets'));
  for (const name of request.bucketMap.keys()) {
    if (!manifest.sources.some((s) => s.bucket === name)) {
      throw new BackupError(
        'ERR_USAGE',
        `--bucket ${name}=… ("buckets" over HTTP): restore point ${manifest.id} has no bucket ${name}; ${bucketsOf(manifest)}`,
      );
    }
  }
  // Two buckets into one would mix their objects (the second's keeping the first's as conflicts).
  const into = new Map<string, string>();
  for (const record of bucketRecords) {
    const source = record.bucket ?? '';
    const destination = request.bucketMap.get(source) ?? source;
    const other = into.get(destination);
    if (other !== undefined) {
      throw new BackupError(
        'ERR_USAGE',
        `buckets ${other} and ${source} would both be restored into ${destination}; map each to a bucket of its own (--bucket SOURCE=DESTINATION, "buckets" over HTTP)`,
      );
    }
    into.set(destination, source);
  }
  const missingStep = (kind: string) =>
    new BackupError(
      'ERR_NOT_FOUND',
      `restore point ${manifest.id} holds no ${kind}; choose the steps it has with --only ("only" over HTTP)`,
    );
  for (const step of only) if (!holds(step)) throw missingStep(step === 'buckets' ? 'bucket' : step);
  // The volume's destination, and whether it is the store without CephFS: asked before any index
  // or archive is read, since reading the volume's archive alone can take a while.
  const volumeHost = config.sources.volume.host;
  const volumeDest = wanted.has('volume')
    ? {
        path: request.volumeTo ?? config.sources.volume.path,
        ssh: volumeHost === undefined || volumeHost === 'local' ? undefined : deps.sshTarget(volumeHost),
      }
    : undefined;
  if (volumeDest) {
    const unmounted = await storeNotMounted(volumeDest, {
      signal: opts.signal,
      quietMs: config.sources.volume.timeoutMs,
    });
    if (unmounted !== undefined) {
      if (!request.yes && !request.dryRun)
        throw new BackupError(
          'ERR_USAGE',
          `${unmounted}, or pass --yes ("yes": true over HTTP) to restore there all the same`,
        );
      hazards.push(unmounted);
    }
  }

  // Every body the buckets need is present in the target with its size, before anything is written.
  const entriesByBucket = new Map<SourceRecord, EntryList>();
  const withSentinels = new Set<SourceRecord>();
  const apps = new Set<string>();
  if (bucketRecords.length > 0) {
    const stored = await DigestMap.blobSizesIn(repository.target, opts);
    for (const record of bucketRecords) {
      const artifact = record.artifacts[0];
      if (!artifact)
        throw new BackupError(
          'ERR_INTEGRITY',
          `restore point ${manifest.id}: bucket ${record.bucket ?? '?'} has no index`,
        );
      const entries = new EntryList();
      const images = new RegistryImages();
      const tags: SmallFile[] = [];
      const missing: string[] = [];
      let missingCount = 0;
      try {
        for await (const entry of repository.readIndex(artifact, opts)) {
          if (stored.get(entry.blob) !== entry.size && missingCount++ < 3)
            missing.push(`${record.bucket ?? ''}/${entry.key} (${entry.blob})`);
          if (isSentinel(entry.key)) withSentinels.add(record);
          images.add(entry.key, entry.blob);
          if (isTagFile(entry.key, entry.size)) tags.push({ key: entry.key, blob: entry.blob });
          const app = appOf(entry.key);
          if (app !== undefined) apps.add(app);
          entries.push(entry);
        }
      } catch (err) {
        throw indexError(err, manifest, artifact, repository);
      }
      if (missingCount > 0) throw incomplete(manifest.id, missing, repository.target.name, missingCount);
      entriesByBucket.set(record, entries);
      // A copy WAL-E cannot restore from as it is: a hole in the WAL after the oldest base backup, say,
      // as when an empty database's first backup became LATEST (deis/deis#4421).
      const walE = withSentinels.has(record) ? checkWalE(entries).errors : [];
      if (walE.length > 0) {
        hazards.push(
          `bucket ${record.bucket ?? ''} fails the WAL-E check: ${walE[0] ?? ''}${walE.length > 1 ? ` (and ${walE.length - 1} more)` : ''}; a database restoring from it may come up without its data (deis-backup verify ${manifest.id} lists them)`,
        );
      }
      // An image caught mid-push, or a tag naming an image not copied: restored, the registry
      // serves neither, and so no release naming them.
      await readTagged(images, repository.target, tags, opts);
      const pushing = images.findings();
      if (pushing.length > 0) {
        hazards.push(
          `bucket ${record.bucket ?? ''}: ${pushing[0] ?? ''}${pushing.length > 1 ? ` (and ${pushing.length - 1} more; deis-backup verify --read-data ${manifest.id} lists them)` : ''}`,
        );
      }
    }
  }

  // The finishing step alone still names the apps to scale, from the registry's index.
  if (wanted.has('finish') && !wanted.has('buckets')) {
    for (const record of manifest.sources.filter((s) => s.kind === 'bucket')) {
      const artifact = record.artifacts[0];
      if (!artifact) continue;
      try {
        for await (const entry of repository.readIndex(artifact, opts)) {
          const app = appOf(entry.key);
          if (app !== undefined) apps.add(app);
        }
      } catch (err) {
        throw indexError(err, manifest, artifact, repository);
      }
    }
  }

  const prepared: Prepared = { manifest, only, buckets: [], hazards, apps };
  if (bucketRecords.length > 0) {
    const databaseBucket = await checkDatabase(deps, request, bucketRecords, withSentinels, hazards, opts);
    if (databaseBucket) prepared.databaseBucket = databaseBucket;
    // Loaded into a running deis-database, the dump would go at its next start: it restores from the
    // bucket then (initId removed), and while it runs it archives its own WAL into that bucket.
    // Refused before the database step looks for its host or reads the dump.
    if (databaseBucket && wanted.has('database')) {
      throw new BackupError(
        'ERR_USAGE',
        `restore: the database step and WAL-E data for ${databaseBucket.name} in one run would load the dump into deis-database, which restores from ${databaseBucket.name} at its next start and drops what the dump loaded; restore the buckets (deis-database restores itself from them), or the database step alone`,
      );
    }
  }
  if (volumeDest) {
    const record = manifest.sources.find((s) => s.kind === 'volume');
    const artifact = record?.artifacts[0];
    if (record && artifact) {
      const entries = await inspectArchive(repository, artifact, opts).catch(
        rethrowMissing(manifest.id, artifact.key, repository),
      );
      const plan = await planVolume(entries, artifact, volumeDest, {
        signal: opts.signal,
        overwrite: request.overwrite,
        timeoutMs: config.sources.volume.timeoutMs,
      });
      if (plan.counts.conflict > 0) {
        hazards.push(
          `${plan.counts.conflict} volume entr(ies) in ${volumeDest.path} differ from the restore point and stay as they are (${plan.conflicts.slice(0, 5).join(', ')}); pass --overwrite to replace them`,
        );
      }
      prepared.volume = { record, plan };
    }
  }
  if (wanted.has('database')) {
    const record = manifest.sources.find((s) => s.kind === 'database');
    const artifact = record?.artifacts[0];
    if (record && artifact) {
      await repository
        .verifyArtifact(artifact, opts)
        .catch(rethrowMissing(manifest.id, artifact.key, repository));
      const host = config.sources.database.host ?? (await deps.etcd.get('/deis/database/host', opts));
      if (host === undefined) {
        throw new BackupError(
          'ERR_CONFIG',
          'database: no host to load the dump on: set sources.database.host (or "local"), or start deis-database so /deis/database/host is in etcd',
        );
      }
      prepared.database = {
        record,
        where: {
          command: config.restore.databaseCommand,
          ssh: host === 'local' ? undefined : deps.sshTarget(host),
        },
      };
    }
  }
  if (bucketRecords.length > 0) {
    const gateway = await deps.gateway();
    // WAL-E's bucket goes first: the registry can wait, the database cannot.
    const ordered = [...bucketRecords].sort(
      (a, b) => Number(withSentinels.has(b)) - Number(withSentinels.has(a)),
    );
    for (const record of ordered) {
      const source = record.bucket ?? '';
      const destination = request.bucketMap.get(source) ?? source;
      let plan: BucketPlan;
      try {
        plan = await planBucket(
          gateway.client,
          {
            source,
            destination,
            entries: entriesByBucket.get(record) ?? new EntryList(),
            overwrite: request.overwrite,
            listVersion: gateway.listVersion,
            blobs: repository.target,
          },
          opts,
        );
      } catch (err) {
        throw gatewayError(err, destination, gateway.endpoint);
      }
      hazards.push(...plan.hazards);
      prepared.buckets.push({ record, plan });
    }
  }
  return prepared;
}

/** The buckets a restore point holds, for a message about one it does not. */
function bucketsOf(manifest: Manifest): string {
  const buckets = manifest.sources.flatMap((s) => (s.bucket ? [s.bucket] : []));
  return buckets.length === 0 ? 'it holds no buckets' : `its buckets: ${buckets.join(', ')}`;
}

/** What a bucket index that cannot be read means for the restore: a missing or a damaged restore point. */
function indexError(
  err: unknown,
  manifest: Manifest,
  artifact: ArtifactRecord,
  repository: Repository,
): unknown {
  if (err instanceof BackupError && err.code === 'ERR_NOT_FOUND')
    return incomplete(manifest.id, [artifact.key], repository.target.name);
  if (err instanceof BackupError && err.code === 'ERR_INTEGRITY') {
    return new BackupError(
      'ERR_INTEGRITY',
      `restore point ${manifest.id} is damaged: bucket index ${err.message}; nothing was restored; choose another restore point (deis-backup snapshots) and check this one with deis-backup verify`,
      { cause: err },
    );
  }
  return err;
}

/**
 * A database that boots while its db_wal is half restored initialises empty, and its first base
 * backup becomes LATEST for good (deis/deis#4421). So restoring WAL-E data into the database's own
 * bucket is refused while /deis/database/host says the database runs, unless --yes. A database that
 * has initialised in this cluster (`/deis/database/initId` set, Deis 1.5 and later) keeps its own
 * data at its next start, restored bucket or not: the key is returned, for the restore to remove.
 * Undefined when no WAL-E data goes into the database's bucket.
 */
async function checkDatabase(
  deps: RestoreDeps,
  request: RestoreRequest,
  records: readonly SourceRecord[],
  withSentinels: ReadonlySet<SourceRecord>,
  hazards: string[],
  opts: { signal: AbortSignal },
): Promise<Prepared['databaseBucket']> {
  let unchecked = false;
  const lookup = async (key: string): Promise<string | undefined> => {
    try {
      return await deps.etcd.get(key, opts);
    } catch (err) {
      if (request.yes || request.dryRun) {
        if (!unchecked) hazards.push(`could not check whether deis-database runs (${describeError(err)})`);
        unchecked = true;
        return undefined;
      }
      throw new BackupError(
        'ERR_ETCD',
        `cannot tell whether deis-database is running (${describeError(err)}); if it is stopped, pass --yes`,
      );
    }
  };
  const walDestinations = records
    .filter((r) => withSentinels.has(r))
    .map((r) => request.bucketMap.get(r.bucket ?? '') ?? r.bucket ?? '');
  if (walDestinations.length === 0) return undefined;
  const databaseBucket = (await lookup('/deis/database/bucketName')) ?? 'db_wal';
  if (!walDestinations.includes(databaseBucket)) return undefined;
  const initId = await lookup(INIT_ID_KEY);
  if (initId !== undefined) {
    hazards.push(
      `${INIT_ID_KEY} is set: deis-database has initialised in this cluster and would keep its own data at its next start instead of restoring ${databaseBucket}; the restore removes the key once ${databaseBucket} is restored`,
    );
  }
  const found = { name: databaseBucket, initId };
  const alive = await lookup('/deis/database/host');
  if (alive === undefined) return found;
  if (!request.yes && !request.dryRun) {
    throw new BackupError(
      'ERR_USAGE',
      `deis-database looks alive (/deis/database/host = ${alive} in etcd): a database that starts while ${databaseBucket} is half restored initialises empty and pushes a backup that wins; stop it (deisctl stop database) or pass --yes`,
    );
  }
  hazards.push(
    `deis-database looks alive (/deis/database/host = ${alive} in etcd); stop it before restoring ${databaseBucket}`,
  );
  return found;
}

/** Where Deis 1.5 and later keep the id of the database's data directory (database/bin/boot). */
export const INIT_ID_KEY = '/deis/database/initId';

function incomplete(
  id: string,
  missing: readonly string[],
  where: string,
  count = missing.length,
): BackupError {
  return new BackupError(
    'ERR_INTEGRITY',
    `restore point ${id} is incomplete: ${count} item(s) missing or of the wrong size in ${where} (first: ${missing.slice(0, 3).join(', ')}); nothing was restored; choose another restore point`,
  );
}

function rethrowMissing(id: string, key: string, repository: Repository): (err: unknown) => never {
  return (err) => {
    if (err instanceof BackupError && err.code === 'ERR_NOT_FOUND')
      throw incomplete(id, [key], repository.target.name);
    throw err;
  };
}
