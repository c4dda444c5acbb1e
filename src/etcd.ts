// Minimal etcd v2 client (what Deis v1 and deisctl use): reads keys, and creates, refreshes and removes
// a lock key by compare-and-swap. Endpoints are tried in order; only the v2 API of etcd 0.4 and later.
import http from 'node:http';
import https from 'node:https';
import { BackupError } from './errors.js';

/** etcd answers are small; anything larger is not one. */
const MAX_ANSWER = 1024 * 1024;

/** Keep-alive connections, reused across a run's reads and lock refreshes (idle ones do not hold the process open). */
const agents = { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true }) };

/** One HTTP exchange's answer: status, body text, and the cluster the answering member belongs to. */
interface Reply {
  status: number;
  text: string;
  /** X-Etcd-Cluster-Id (etcd 2.0 and later; etcd 0.4 sends none). */
  clusterId: string | undefined;
}

/**
 * One HTTP exchange. node:http rather than fetch: loading undici and its first request cost about
 * 30 ms of every CLI run. Rejects with the socket's error (with its errno `code`).
 */
function send(
  url: string,
  method: string,
  form: URLSearchParams | undefined,
  signal: AbortSignal,
): Promise<Reply> {
  const target = new URL(url);
  const secure = target.protocol === 'https:';
  const body = form?.toString();
  const headers: Record<string, string | number> =
    body === undefined
      ? {}
      : { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) };
  return new Promise((resolve, reject) => {
    const req = (secure ? https : http).request(
      target,
      { method, headers, signal, agent: secure ? agents.https : agents.http },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          text += chunk;
          if (text.length > MAX_ANSWER) req.destroy(new Error('answer too large'));
        });
        res.on('end', () => {
          const id = res.headers['x-etcd-cluster-id'];
          resolve({
            status: res.statusCode ?? 0,
            text,
            clusterId: typeof id === 'string' && id !== '' ? id : undefined,
          });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** A key as etcd v2 returns it. */
export interface EtcdNode {
  /** The key's value; '' for a directory. */
  value: string;
  /** True when the path is a directory, not a key. */
  dir?: true;
  /** When the key's TTL runs out, by the etcd server's clock (ISO 8601); undefined for a key without TTL. */
  expiration?: string;
}

/** Reads single keys from an etcd v2 cluster and keeps lock keys there. */
export interface Etcd {
  /** The key's value, or undefined when the key (or its directory) does not exist. */
  get(path: string, opts: { signal: AbortSignal }): Promise<string | undefined>;
  /** The key's value and expiration (a directory has `dir` and no value), or undefined when it does not exist. */
  getNode(path: string, opts: { signal: AbortSignal }): Promise<EtcdNode | undefined>;
  /**
   * Creates the key with a TTL only if it does not exist (`prevExist=false`): true when created,
   * false when the key exists already. A retry on the next endpoint after a lost answer may find its
   * own value: callers compare the current value when this returns false.
   */
  create(path: string, value: string, opts: { ttlSeconds: number; signal: AbortSignal }): Promise<boolean>;
  /**
   * Restarts the key's TTL if it still holds value (`prevValue` compare-and-swap, value re-sent; works
   * on etcd 0.4 and 2.x, which lack `refresh=true`). False when the key is gone or holds another value.
   */
  refresh(path: string, value: string, opts: { ttlSeconds: number; signal: AbortSignal }): Promise<boolean>;
  /**
   * Deletes the key only if it holds value (compare-and-delete), so another holder's key is never
   * removed. True when deleted; false when the key is gone or holds another value.
   */
  remove(path: string, value: string, opts: { signal: AbortSignal }): Promise<boolean>;
  /**
   * The id of the cluster that last answered (X-Etcd-Cluster-Id): the same from every member, and
   * whichever endpoint reached it. Undefined before the first answer, and from etcd 0.4.
   */
  clusterId(): string | undefined;
}

/** What one answer from etcd says, after the endpoints that could not answer. */
type Answer = { status: number; body: EtcdAnswer };
interface EtcdAnswer {
  errorCode?: number;
  message?: string;
  node?: { value?: string; dir?: boolean; expiration?: string };
}

/** etcd v2 error codes a compare or create answers with when the key is not as expected. */
const KEY_NOT_FOUND = 100;
const COMPARE_FAILED = 101;
const NODE_EXISTS = 105;
/** A key's operation on a directory. */
const NOT_A_FILE = 102;

/** Creates an etcd v2 client over HTTP. Tries each endpoint in turn until one answers. */
export function createEtcd(endpoints: readonly string[], timeoutMs: number): Etcd {
  let clusterId: string | undefined;
  /**
   * Sends one request to the first endpoint that answers with a status `accept` allows; throws one
   * ERR_ETCD line naming every endpoint that did not.
   */
  const request = async (
    what: string,
    path: string,
    init: { method: 'GET' | 'PUT' | 'DELETE'; form?: URLSearchParams; query?: URLSearchParams },
    accept: (status: number, body: EtcdAnswer) => boolean,
    signal: AbortSignal,
  ): Promise<Answer> => {
    const failures: string[] = [];
    for (const endpoint of endpoints) {
      const query = init.query ? `?${init.query.toString()}` : '';
      const url = `${endpoint.replace(/\/$/, '')}/v2/keys${path}${query}`;
      const timeout = AbortSignal.timeout(timeoutMs);
      let res: Reply;
      try {
        res = await send(url, init.method, init.form, AbortSignal.any([signal, timeout]));
      } catch (err) {
        signal.throwIfAborted();
        const code = timeout.aborted
          ? `no answer within ${timeoutMs / 1000} s`
          : ((err as NodeJS.ErrnoException).code ?? (err as Error).message);
        failures.push(`${endpoint} (${code})`);
        continue;
      }
      let body: EtcdAnswer | undefined;
      try {
        body = JSON.parse(res.text) as EtcdAnswer;
      } catch {
        // Not an etcd answer: handled below by status.
      }
      // etcd answers every request, a missing key included, in JSON: a 404 in other words comes from
      // something else on that port (an S3 gateway, a proxy), which says nothing about the key.
      if (body === undefined) {
        failures.push(`${endpoint} (HTTP ${res.status}, not an etcd answer)`);
        continue;
      }
      if (accept(res.status, body)) {
        clusterId = res.clusterId;
        return { status: res.status, body };
      }
      failures.push(`${endpoint} (HTTP ${res.status}${body.message ? `: ${body.message}` : ''})`);
    }
    throw new BackupError(
      'ERR_ETCD',
      `etcd: cannot ${what} ${path} ${what === 'read' ? 'from' : 'at'} ${failures.join(', ')}; check etcd.endpoints (Deis v1 serves the v2 API on port 4001)`,
    );
  };

  const getNode = async (path: string, signal: AbortSignal): Promise<EtcdNode | undefined> => {
    const { status, body } = await request(
      'read',
      path,
      { method: 'GET' },
      (s, b) => (s === 404 && b.errorCode === KEY_NOT_FOUND) || (s >= 200 && s < 300),
      signal,
    );
    if (status === 404 || body.node === undefined) return undefined;
    if (body.node.dir) return { value: '', dir: true };
    if (body.node.value === undefined) return undefined;
    return {
      value: body.node.value,
      ...(body.node.expiration === undefined ? {} : { expiration: body.node.expiration }),
    };
  };

  /** A compare failure: the key is missing (404, 100), a directory now (403, 102) or differs (412, 101/105). */
  const mismatch = (status: number, body: EtcdAnswer): boolean =>
    (status === 404 && body.errorCode === KEY_NOT_FOUND) ||
    (status === 403 && body.errorCode === NOT_A_FILE) ||
    (status === 412 && (body.errorCode === COMPARE_FAILED || body.errorCode === NODE_EXISTS));
  const ok = (status: number): boolean => status >= 200 && status < 300;

  return {
    async get(path, opts) {
      const node = await getNode(path, opts.signal);
      return node?.dir ? undefined : node?.value;
    },

    async getNode(path, opts) {
      return getNode(path, opts.signal);
    },

    async create(path, value, opts) {
      const form = new URLSearchParams({ value, ttl: String(opts.ttlSeconds), prevExist: 'false' });
      const { status } = await request(
        'create',
        path,
        { method: 'PUT', form },
        (s, b) => ok(s) || (s === 412 && b.errorCode === NODE_EXISTS),
        opts.signal,
      );
      return ok(status);
    },

    async refresh(path, value, opts) {
      const form = new URLSearchParams({ value, ttl: String(opts.ttlSeconds), prevValue: value });
      const { status } = await request(
        'refresh',
        path,
        { method: 'PUT', form },
        (s, b) => ok(s) || mismatch(s, b),
        opts.signal,
      );
      return ok(status);
    },

    async remove(path, value, opts) {
      const query = new URLSearchParams({ prevValue: value });
      const { status } = await request(
        'remove',
        path,
        { method: 'DELETE', query },
        (s, b) => ok(s) || mismatch(s, b),
        opts.signal,
      );
      return ok(status);
    },

    clusterId() {
      return clusterId;
    },
  };
}
