// While a backup runs, /metrics and /healthz stay responsive under concurrent load (autocannon):
// no errors, no non-2xx answers, p50/p99 printed, and the backup still commits.
import autocannon, { type Result } from 'autocannon';
import { afterAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { startDaemon, type Daemon } from '../../src/daemon.js';
import { createLogger } from '../../src/log.js';
import { Repository } from '../../src/repository/repository.js';
import { DirTarget } from '../../src/targets/dir.js';
import { seedVolume } from '../fixtures/deis-sample.js';
import { stackDumpCommand } from '../fixtures/stack.js';
import { describeWithStack, tempDir, until, writeConfig } from './helpers.js';

const TOKEN = 'load-token-0123456789abcdef';
/**
 * The issue suggests 30 s per route; both routes are loaded at the same time for 15 s instead, which
 * keeps CI time down while still making them compete with each other and with the running backup.
 */
const LOAD_SECONDS = 15;
const CONNECTIONS = 10;

describeWithStack('load while a backup runs', (stack) => {
  const running: Daemon[] = [];
  afterAll(async () => {
    for (const daemon of running.splice(0)) await daemon.stop();
  });

  it('answers /metrics and /healthz without errors, and the backup still commits', async () => {
    const volume = tempDir('volume');
    await seedVolume(volume);
    const target = tempDir('target');
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      sources: {
        buckets: { enabled: false },
        volume: { path: volume },
        // The dump starts only after the load window, so the backup spans all of it.
        database: { host: 'local', command: `sleep ${LOAD_SECONDS + 10}; ${stackDumpCommand(stack)}` },
      },
      target: { type: 'dir', path: target },
      http: { host: '127.0.0.1', port: 0, token: TOKEN },
    });
    const daemon = await startDaemon(loadConfig({ file, env: {} }), {
      log: createLogger({ level: 'info' }, { write: () => undefined }),
      shutdown: new AbortController().signal,
    });
    running.push(daemon);

    const accepted = await fetch(`${daemon.url}/backups`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    expect(accepted.status).toBe(202);
    const { id } = (await accepted.json()) as { id: string };
    expect(daemon.operations.current()?.id).toBe(id);

    const load = (path: string): Promise<Result> =>
      autocannon({ url: `${daemon.url}${path}`, connections: CONNECTIONS, duration: LOAD_SECONDS });
    const [metrics, healthz] = await Promise.all([load('/metrics'), load('/healthz')]);
    // Still running: every request above was answered while the backup was in progress.
    expect(daemon.operations.current()?.id).toBe(id);

    for (const [path, result] of [
      ['/metrics', metrics],
      ['/healthz', healthz],
    ] as const) {
      console.log(
        `load ${path}: ${CONNECTIONS} connections for ${LOAD_SECONDS} s during a backup: ` +
          `${Math.round(result.requests.average)} req/s, ${result.requests.total} requests, ` +
          `p50 ${result.latency.p50} ms, p99 ${result.latency.p99} ms, max ${result.latency.max} ms, ` +
          `${result.errors} errors, ${result.timeouts} timeouts, ${result.non2xx} non-2xx`,
      );
      expect(result.errors, path).toBe(0);
      expect(result.timeouts, path).toBe(0);
      expect(result.non2xx, path).toBe(0);
      expect(result['2xx'], path).toBeGreaterThan(0);
      expect(result.requests.total, path).toBeGreaterThan(LOAD_SECONDS * 10);
    }

    const done = await until(
      `backup ${id}`,
      async () => {
        const view = (await (await fetch(`${daemon.url}/backups/${id}`)).json()) as { status: string };
        return view.status === 'running' ? undefined : view;
      },
      90_000,
    );
    expect(done).toMatchObject({ status: 'success' });
    const committed = await new Repository(new DirTarget(target)).listSnapshots({
      signal: AbortSignal.timeout(30_000),
    });
    expect(committed).toHaveLength(1);
  }, 180_000);
});
