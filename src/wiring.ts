// The composition root shared by the CLI and the daemon: turns a Config into a repository and the
// selected sources, reading from etcd what the config leaves to the cluster.
import { resolveBucketNames, resolveDatabaseHost, resolveGateway, type GatewaySettings } from './cluster.js';
import type { Config } from './config.js';
import { createEtcd, type Etcd } from './etcd.js';
import { BackupError, describeError } from './errors.js';
import type { Manifest } from './repository/manifest.js';
import { Repository } from './repository/repository.js';
import { S3Client } from './s3/client.js';
import type { SshTarget } from './ssh.js';
import { BucketSource } from './sources/bucket.js';
import { Limiter } from './concurrency.js';
import { DatabaseSource } from './sources/database.js';
import type { Source } from './sources/source.js';
import { VolumeSource } from './sources/volume.js';
import type { UnavailableSource } from './backup.js';
import type { Logger } from './log.js';
import type { RestoreDeps } from './restore.js';
import type { Reporter } from './restore/report.js';
import { DirTarget } from './targets/dir.js';
import type { Target } from './targets/target.js';
import { EtcdLock } from './lock/etcd-lock.js';
import type { ClusterLock } from './lock/lock.js';
import { PairedLock } from './lock/paired-lock.js';
import { TargetLock } from './lock/target-lock.js';

/** The parts of a restore point a run can be limited to. */
export const SOURCE_KINDS = ['buckets', 'volume', 'database'] as const;
export type SourceKind = (typeof SOURCE_KINDS)[number];

/** The steps a restore can be limited to: the data, and the finishing step on its own. */
export const RESTORE_STEPS = [...SOURCE_KINDS, 'finish'] as const;
export type RestoreStep = (typeof RESTORE_STEPS)[number];
/** A restore's steps when none are named (of them, those the restore point holds). */
export const DEFAULT_STEPS: readonly RestoreStep[] = ['buckets', 'volume'];

/** Parses `--only buckets,volume` of a backup; throws ERR_USAGE on an unknown name. */
export function parseOnly(value: string | undefined): SourceKind[] | undefined {
  return parseList(value, SOURCE_KINDS, 'source');
}

/** Parses `--only` of a restore, which may also name `finish`; throws ERR_USAGE on an unknown name. */
export function parseRestoreOnly(value: string | undefined): RestoreStep[] | undefined {
  return parseList(value, RESTORE_STEPS, 'step');
}

function parseList<T extends string>(
  value: string | undefined,
  known: readonly T[],
  noun: string,
): T[] | undefined {
  if (value === undefined) return undefined;
  const names = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  for (const name of names) {
    if (!(known as readonly string[]).includes(name)) {
      throw new BackupError(
        'ERR_USAGE',
        `--only: unknown ${noun} "${name}"; use a comma-separated list of ${known.join(', ')}`,
      );
    }
  }
  // An empty list would run a backup of nothing, committed as a success, or a restore of nothing.
  if (names.length === 0) {
    throw new BackupError(
      'ERR_USAGE',
      `--only: name at least one ${noun}; use a comma-separated list of ${known.join(', ')}, or leave --only out`,
    );
  }
  return names as T[];
}

/**
 * Refuses a backup of nothing: one that names no sources with `only` needs an enabled source, or it
 * would commit an empty restore point as a success. Every other command may run with none enabled,
 * as a config for restoring into a new cluster may well have. `how` ends the fix (e.g. "or pass --only").
 */
export function requireBackupSources(
  config: Config,
  only: readonly SourceKind[] | undefined,
  how = '',
): void {
  if (only !== undefined || SOURCE_KINDS.some((kind) => config.sources[kind].enabled)) return;
  throw new BackupError(
    'ERR_CONFIG',
    `sources: every source has enabled false, so a backup would store nothing; set sources.buckets.enabled, sources.volume.enabled or sources.database.enabled to true${how}`,
  );
}

/** Builds the configured target; the S3 target's code is loaded only for one. */
export async function createTarget(config: Config): Promise<Target> {
  const t = config.target;
  if (t.type === 'dir') return new DirTarget(t.path);
  const { S3Target } = await import('./targets/s3.js');
  return new S3Target(t);
}

/** Builds the repository on the configured target. */
export async function createRepository(config: Config): Promise<Repository> {
  return new Repository(await createTarget(config));
}

/** Builds the etcd reader. */
export function createClusterEtcd(config: Config): Etcd {
  return createEtcd(config.etcd.endpoints, config.etcd.timeoutMs);
}

/**
 * The one-runner lock: in the cluster's etcd, or as lock objects in the target. The etcd lock is
 * also announced in the target (PairedLock), without the settling wait: the etcd key already keeps
 * etcd runners apart, and the file is there for runners that use the target backend. The file names
 * the etcd cluster and key, so that the next holder of that key removes one its last holder left.
 */
export function createClusterLock(config: Config, etcd: Etcd, target: Target): ClusterLock {
  const { backend, key, ttlSeconds } = config.lock;
  return backend === 'etcd'
    ? new PairedLock(
        new EtcdLock(etcd, { key, ttlSeconds }),
        new TargetLock(target, { ttlSeconds, settleMs: 0, pairedWith: () => etcdLockName(config, etcd) }),
      )
    : new TargetLock(target, { ttlSeconds });
}

/**
 * The etcd key a paired lock file names, by the id of the cluster that holds it: the daemon moved by
 * fleet to another host reaches the same cluster through another endpoint, and two clusters given
 * the same endpoint string (each its own 127.0.0.1) stay apart, as long as their ids differ (ones
 * bootstrapped alike without a discovery token or cluster token share one). etcd 0.4 sends no id:
 * its endpoints.
 */
function etcdLockName(config: Config, etcd: Etcd): string {
  const id = etcd.clusterId();
  const cluster = id === undefined ? [...config.etcd.endpoints].sort().join(',') : `cluster ${id}`;
  return `etcd ${cluster} ${config.lock.key}`;
}

/** SSH settings for a host. */
export function sshTarget(config: Config, host: string): SshTarget {
  return { host, ...config.ssh };
}

/** A client for the resolved gateway: a connection per object in flight, plus one per bucket's listing. */
function gatewayClient(config: Config, gateway: GatewaySettings, buckets = 0): S3Client {
  return new S3Client({
    endpoint: gateway.endpoint,
    accessKey: gateway.accessKey.reveal(),
    secretKey: gateway.secretKey.reveal(),
    signatureVersion: gateway.signatureVersion,
    region: gateway.region,
    maxSockets: config.sources.buckets.concurrency + buckets,
    timeoutMs: config.gateway.timeoutMs,
  });
}

/** Sources of one run and what must be released after it. */
export interface RunSources {
  sources: (Source | UnavailableSource)[];
  close(): void;
}

/** Whether a run of `only` (undefined: every enabled source) covers every enabled source. */
export function coversAll(config: Config, only: readonly SourceKind[] | undefined): boolean {
  return (
    only === undefined || SOURCE_KINDS.every((kind) => !config.sources[kind].enabled || only.includes(kind))
  );
}

/**
 * The source ids a backup of `only` (by default, of the enabled kinds) reads, as far as the config
 * names them: a bucket's only when `sources.buckets.names` lists it (the others are found by
 * listing the gateway).
 */
export function plannedSourceIds(config: Config, only: readonly SourceKind[] | undefined): string[] {
  const kinds = only ?? SOURCE_KINDS.filter((kind) => config.sources[kind].enabled);
  return kinds.flatMap((kind) =>
    kind === 'buckets' ? (config.sources.buckets.names ?? []).map((name) => `bucket:${name}`) : [kind],
  );
}

/** Whether a restore point holds every source kind the config enables. */
export function holdsAll(config: Config, manifest: Pick<Manifest, 'sources'>): boolean {
  return coversAll(
    config,
    manifest.sources.map((s): SourceKind => (s.kind === 'bucket' ? 'buckets' : s.kind)),
  );
}

/**
 * Whether a source id of a restore point (`bucket:<name>`, `volume`, `database`) is one the config
 * backs up: its kind is enabled and, when `sources.buckets.names` lists them, the bucket is listed.
 */
export function isConfiguredSource(config: Config, id: string): boolean {
  if (id.startsWith('bucket:')) {
    const { enabled, names } = config.sources.buckets;
    return enabled && (names === undefined || names.includes(id.slice('bucket:'.length)));
  }
  return (id === 'volume' || id === 'database') && config.sources[id].enabled;
}

/** Builds the selected (default: enabled) sources; a source whose settings cannot be resolved comes back unavailable. */
export async function createSources(
  config: Config,
  etcd: Etcd,
  only: readonly SourceKind[] | undefined,
  opts: { signal: AbortSignal },
): Promise<RunSources> {
  const wanted = (kind: SourceKind): boolean => (only ? only.includes(kind) : config.sources[kind].enabled);
  const sources: (Source | UnavailableSource)[] = [];
  const clients: S3Client[] = [];
  if (wanted('buckets')) {
    try {
      const gateway = await resolveGateway(config, etcd, opts);
      const names = await resolveBucketNames(config, etcd, opts);
      // The buckets run side by side: one bucket's last slow objects overlap the next one's first.
      const client = gatewayClient(config, gateway, names.length);
      clients.push(client);
      const transfers = new Limiter(config.sources.buckets.concurrency);
      for (const bucket of names) {
        sources.push(
          new BucketSource({
            bucket,
            client,
            listVersion: gateway.listVersion,
            concurrency: config.sources.buckets.concurrency,
            transfers,
          }),
        );
      }
    } catch (err) {
      sources.push({ id: 'buckets', kind: 'bucket', error: describeError(err) });
    }
  }
  if (wanted('volume')) {
    const { path, host, exclude, timeoutMs } = config.sources.volume;
    sources.push(
      new VolumeSource(
        host === undefined || host === 'local'
          ? { path, exclude, timeoutMs }
          : { path, exclude, timeoutMs, ssh: sshTarget(config, host) },
      ),
    );
  }
  if (wanted('database')) {
    try {
      const host = await resolveDatabaseHost(config, etcd, opts);
      const { command, timeoutMs } = config.sources.database;
      sources.push(
        new DatabaseSource(
          host === 'local' ? { command, timeoutMs } : { command, timeoutMs, ssh: sshTarget(config, host) },
        ),
      );
    } catch (err) {
      sources.push({ id: 'database', kind: 'database', error: describeError(err) });
    }
  }
  return {
    sources,
    close() {
      for (const client of clients) client.close();
    },
  };
}

/** The new cluster's gateway for a restore, resolved on first use; close() releases it. */
export function createRestoreGateway(
  config: Config,
  etcd: Etcd,
  opts: { signal: AbortSignal },
): { get: () => Promise<{ client: S3Client; listVersion: 1 | 2; endpoint: string }>; close(): void } {
  let made: Promise<{ client: S3Client; listVersion: 1 | 2; endpoint: string }> | undefined;
  return {
    get() {
      made ??= resolveGateway(config, etcd, opts).then((gateway) => ({
        client: gatewayClient(config, gateway),
        listVersion: gateway.listVersion,
        endpoint: gateway.endpoint,
      }));
      return made;
    },
    close() {
      void made?.then(
        (g) => {
          g.client.close();
        },
        () => undefined,
      );
    },
  };
}

/** What a restore or a drill needs besides the new cluster's gateway and SSH settings. */
export interface RestoreParts {
  config: Config;
  repository: Repository;
  etcd: Etcd;
  reporter: Reporter;
  log: Logger;
  finishCommand?: RestoreDeps['finishCommand'];
}

/**
 * Runs `work` with the dependencies of a restore or a drill: the new cluster's gateway is resolved
 * on first use and released afterwards, SSH hosts get the configured settings.
 */
export async function withRestoreDeps<T>(
  parts: RestoreParts,
  signal: AbortSignal,
  work: (deps: RestoreDeps) => Promise<T>,
): Promise<T> {
  const gateway = createRestoreGateway(parts.config, parts.etcd, { signal });
  try {
    return await work({
      ...parts,
      gateway: gateway.get,
      sshTarget: (host) => sshTarget(parts.config, host),
    });
  } finally {
    gateway.close();
  }
}
