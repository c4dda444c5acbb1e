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
  // The keys the config leaves out, read at once: one round trip to etcd instead of four.
  const read = (key: string, wanted: boolean): Promise<string | undefined> =>
    wanted ? etcd.get(`${GATEWAY}/${key}`, opts) : Promise.resolve(undefined);
  const settled = await Promise.allSettled([
    read('host', gw.endpoint === undefined),
    read('port', gw.endpoint === undefined),
    read('accessKey', gw.accessKey === undefined),
    read('secretKey', gw.secretKey === undefined),
  ]);
  // The first failure in key order, whichever answer came first.
  const [host, port, accessValue, secretValue] = settled.map((result) => {
    if (result.status === 'rejected') throw result.reason;
    return result.value;
  });
  const need = (key: string, value: string | undefined, fix: string): string => {
    if (value === undefined || value === '') {
      throw new BackupError('ERR_CONFIG', `gateway: ${GATEWAY}/${key} is not in etcd; ${fix}`);
    }
    return value;
  };
  const startGateway = 'set gateway.endpoint in the config, or start deis-store-gateway';
  let endpoint = gw.endpoint;
  if (endpoint === undefined) {
    const name = need('host', host, startGateway);
    const number = need('port', port, startGateway);
    // An IPv6 address goes in brackets in a URL.
    const hostPart = name.includes(':') && !name.startsWith('[') ? `[${name}]` : name;
    endpoint = `${number === '443' ? 'https' : 'http'}://${hostPart}:${number}`;
    // Values from etcd are not checked by the config: a wrong one must not surface as "Invalid URL".
    const bad =
      !/^\d{1,5}$/.test(number) || Number(number) > 65535
        ? 'port'
        : !URL.canParse(endpoint)
          ? 'host'
          : undefined;
    if (bad !== undefined) {
      const value = bad === 'port' ? number : name;
      throw new BackupError(
        'ERR_CONFIG',
        `gateway: ${GATEWAY}/${bad} in etcd is ${JSON.stringify(value)}, not a ${bad === 'port' ? 'port number' : 'host name or address'}; fix it in etcd, or set gateway.endpoint in the config`,
      );
    }
  }
  const accessKey =
    gw.accessKey ??
    new Secret(need('accessKey', accessValue, 'set gateway.accessKey or DEIS_BACKUP_GATEWAY_ACCESS_KEY'));
  const secretKey =
    gw.secretKey ??
    new Secret(need('secretKey', secretValue, 'set gateway.secretKey or DEIS_BACKUP_GATEWAY_SECRET_KEY'));
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
