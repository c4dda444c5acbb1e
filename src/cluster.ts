// What the Deis cluster itself knows, read from etcd where the config leaves it out: the gateway's
// address and keys (/deis/store/gateway/*), the bucket names and the database host.
import type { Config } from './config.js';
import type { Etcd } from './etcd.js';
import { BackupError } from './errors.js';
import { Secret } from './secret.js';

/** The gateway a run talks to; `from` says where each value came from, for `config check`. */
export interface GatewaySettings {
  endpoint: string;
  accessKey: Secret;
  secretKey: Secret;
  signatureVersion: 'v2' | 'v4';
  region: string;
  listVersion: 1 | 2;
  from: Record<'endpoint' | 'accessKey' | 'secretKey', 'config' | 'etcd'>;
}

const GATEWAY = '/deis/store/gateway';

/** Resolves the gateway settings, reading etcd only for what the config leaves out. */
export async function resolveGateway(
  config: Config,
  etcd: Etcd,
  opts: { signal: AbortSignal },
): Promise<GatewaySettings> {
  const gw = config.gateway;
  const need = async (key: string, fix: string): Promise<string> => {
    const value = await etcd.get(`${GATEWAY}/${key}`, opts);
    if (value === undefined || value === '') {
      throw new BackupError('ERR_CONFIG', `gateway: ${GATEWAY}/${key} is not in etcd; ${fix}`);
    }
    return value;
  };
  let endpoint = gw.endpoint;
  if (endpoint === undefined) {
    const host = await need('host', 'set gateway.endpoint in the config, or start deis-store-gateway');
    const port = await need('port', 'set gateway.endpoint in the config, or start deis-store-gateway');
    endpoint = `${port === '443' ? 'https' : 'http'}://${host}:${port}`;
  }
  const accessKey =
    gw.accessKey ??
    new Secret(await need('accessKey', 'set gateway.accessKey or DEIS_BACKUP_GATEWAY_ACCESS_KEY'));
  const secretKey =
    gw.secretKey ??
    new Secret(await need('secretKey', 'set gateway.secretKey or DEIS_BACKUP_GATEWAY_SECRET_KEY'));
  return {
    endpoint,
    accessKey,
    secretKey,
    signatureVersion: gw.signatureVersion,
    region: gw.region,
    listVersion: gw.listVersion,
    from: {
      endpoint: gw.endpoint === undefined ? 'etcd' : 'config',
      accessKey: gw.accessKey === undefined ? 'etcd' : 'config',
      secretKey: gw.secretKey === undefined ? 'etcd' : 'config',
    },
  };
}

/** The buckets to back up: the config's list, else /deis/database/bucketName and /deis/registry/bucketName. */
export async function resolveBucketNames(
  config: Config,
  etcd: Etcd,
  opts: { signal: AbortSignal },
): Promise<string[]> {
  if (config.sources.buckets.names) return [...config.sources.buckets.names];
  const database = (await etcd.get('/deis/database/bucketName', opts)) ?? 'db_wal';
  const registry = (await etcd.get('/deis/registry/bucketName', opts)) ?? 'registry';
  return [...new Set([database, registry])];
}

/** Where pg_dumpall runs: "local", or a host reached over SSH (config, else /deis/database/host). */
export async function resolveDatabaseHost(
  config: Config,
  etcd: Etcd,
  opts: { signal: AbortSignal },
): Promise<string> {
  if (config.sources.database.host !== undefined) return config.sources.database.host;
  const host = await etcd.get('/deis/database/host', opts);
  if (host === undefined || host === '') {
    throw new BackupError(
      'ERR_CONFIG',
      'sources.database.host: not set and /deis/database/host is not in etcd; set it to the database host or to "local"',
    );
  }
  return host;
}
