// One runner in the cluster: two daemons on one etcd and one target, both scheduled every second.
// Their runs never overlap, the one without the lock says so, and after a kill -9 of the holder
// the other takes over once the lock's TTL has run out.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { Repository } from '../../src/repository/repository.js';
import { DirTarget } from '../../src/targets/dir.js';
import { seedVolume } from '../fixtures/deis-sample.js';
import { stackDumpCommand } from '../fixtures/stack.js';
import { describeWithStack, tempDir, unique, until, writeConfig } from './helpers.js';

const TTL = 3;

/** A daemon child process and the JSON log lines it printed. */
interface Runner {
  name: string;
  child: ChildProcess;
  lines: { msg: string; time: number }[];
}

function startDaemon(name: string, file: string): Runner {
  const child = spawn(
    'node',
    [join(import.meta.dirname, '..', '..', 'dist', 'bin.js'), 'daemon', '--config', file],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const runner: Runner = { name, child, lines: [] };
  let pending = '';
  child.stdout.on('data', (data: Buffer) => {
    pending += data.toString();
    const parts = pending.split('\n');
    pending = parts.pop() ?? '';
    for (const part of parts) {
      try {
        runner.lines.push(JSON.parse(part) as { msg: string; time: number });
      } catch {
        // not a log line
      }
    }
  });
  child.stderr.resume();
  return runner;
}

/** The runs of a daemon: [start, end] from "backup started" to its commit, failure or the kill. */
function runs(runner: Runner, killedAt = Infinity): [number, number][] {
  const out: [number, number][] = [];
  let start: number | undefined;
  for (const line of runner.lines) {
    if (line.msg === 'backup started') start = line.time;
    else if (
      start !== undefined &&
      /^(restore point committed|backup failed|backup aborted)/.test(line.msg)
    ) {
      out.push([start, line.time]);
      start = undefined;
    }
  }
  if (start !== undefined) out.push([start, killedAt]);
  return out;
}

describeWithStack('cluster lock', (stack) => {
  const runners: Runner[] = [];
  afterAll(() => {
    for (const r of runners) r.child.kill('SIGKILL');
  });

  it('never runs two backups at once; a killed holder is replaced after the TTL', async () => {
    const volume = tempDir('lock-volume');
    await seedVolume(volume);
    const target = tempDir('lock-target');
    const key = `/deis-backup-test/${unique('cluster')}/lock`;
    const config = (port: number) =>
      writeConfig({
        etcd: { endpoints: [stack.etcdEndpoint] },
        sources: {
          buckets: { enabled: false },
          volume: { path: volume },
          // Two seconds per run, so the other daemon's every-second schedule finds the lock taken.
          database: { host: 'local', command: `sleep 2; ${stackDumpCommand(stack)}` },
        },
        target: { type: 'dir', path: target },
        schedule: { cron: '* * * * * *' },
        verify: { enabled: false },
        lock: { key, ttlSeconds: TTL },
        http: { host: '127.0.0.1', port },
      });
    const a = startDaemon('a', config(24711));
    const b = startDaemon('b', config(24712));
    runners.push(a, b);

    // Let both compete until each has been turned away at least once and a few runs committed.
    const skipped = (r: Runner) =>
      r.lines.some((l) => l.msg === 'backup skipped: another deis-backup holds the cluster lock');
    const repository = new Repository(new DirTarget(target));
    await until(
      'runs and skips on both sides',
      async () =>
        (skipped(a) || skipped(b)) &&
        (await repository.listSnapshots({ signal: AbortSignal.timeout(5000) })).length >= 3
          ? true
          : undefined,
      60_000,
    );

    // Kill whichever holds the lock now, half way through its run.
    const holder = await until('a run in progress', () =>
      Promise.resolve(
        [a, b].find((r) => {
          const last = runs(r).at(-1);
          return last !== undefined && last[1] === Infinity;
        }),
      ),
    );
    const other = holder === a ? b : a;
    const killedAt = Date.now();
    holder.child.kill('SIGKILL');
    await once(holder.child, 'exit');

    const takeover = await until(
      'the other daemon to take over',
      () => Promise.resolve(runs(other).find(([start]) => start > killedAt)?.[0]),
      30_000,
    );
    // The dead holder's lock blocks until etcd expires it: at least the TTL less one refresh period.
    expect(takeover - killedAt).toBeGreaterThanOrEqual(((TTL * 2) / 3) * 1000 - 500);
    expect(takeover - killedAt).toBeLessThan((TTL + 5) * 1000);
    await until('the takeover run to commit', () =>
      Promise.resolve(
        runs(other).some(([start, end]) => start === takeover && end !== Infinity) ? true : undefined,
      ),
    );
    other.child.kill('SIGTERM');
    await once(other.child, 'exit');

    // Never two at once: every run of one daemon ends before the other's next one starts.
    const all = [
      ...runs(holder, killedAt).map((r) => ({ who: holder.name, r })),
      ...runs(other).map((r) => ({ who: other.name, r })),
    ].sort((x, y) => x.r[0] - y.r[0]);
    expect(all.length).toBeGreaterThanOrEqual(4);
    expect(new Set(all.map((x) => x.who))).toEqual(new Set(['a', 'b']));
    for (let i = 1; i < all.length; i++) {
      const previous = all[i - 1];
      const current = all[i];
      expect(current?.r[0], `${current?.who} started while ${previous?.who} ran`).toBeGreaterThanOrEqual(
        previous?.r[1] ?? Infinity,
      );
    }
  });
});
