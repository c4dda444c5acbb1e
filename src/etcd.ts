// Minimal etcd v2 key reader (what Deis v1 and deisctl use): GET /v2/keys/<path>, endpoints in order.
import { BackupError } from './errors.js';

/** Reads single keys from an etcd v2 cluster. */
export interface Etcd {
  /** The key's value, or undefined when the key (or its directory) does not exist. */
  get(path: string, opts: { signal: AbortSignal }): Promise<string | undefined>;
}

/** Creates an etcd v2 reader over HTTP. Tries each endpoint in turn until one answers. */
export function createEtcd(endpoints: readonly string[], timeoutMs: number): Etcd {
  return {
    async get(path, opts) {
      const failures: string[] = [];
      for (const endpoint of endpoints) {
        const url = `${endpoint.replace(/\/$/, '')}/v2/keys${path}`;
        let res: Response;
        try {
          res = await fetch(url, { signal: AbortSignal.any([opts.signal, AbortSignal.timeout(timeoutMs)]) });
        } catch (err) {
          opts.signal.throwIfAborted();
          const cause = (err as { cause?: { code?: string; message?: string } }).cause;
          failures.push(`${endpoint} (${cause?.code ?? cause?.message ?? (err as Error).message})`);
          continue;
        }
        if (res.status === 404) {
          await res.body?.cancel();
          return undefined;
        }
        if (!res.ok) {
          await res.body?.cancel();
          failures.push(`${endpoint} (HTTP ${res.status})`);
          continue;
        }
        const body = (await res.json()) as { node?: { value?: string; dir?: boolean } };
        return body.node?.dir ? undefined : body.node?.value;
      }
      throw new BackupError(
        'ERR_ETCD',
        `etcd: cannot read ${path} from ${failures.join(', ')}; check etcd.endpoints (Deis v1 serves the v2 API on port 4001)`,
      );
    },
  };
}
