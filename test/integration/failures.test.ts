// A run that cannot capture a source fails with one clear line, exit 1, and leaves no restore point;
// object-level trouble is partial (exit 3) or counted as vanished; no secret ever reaches the output.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { runBackup } from '../../src/backup.js';
import { loadDump } from '../../src/restore/database.js';
import { createLogger } from '../../src/log.js';
import { Repository } from '../../src/repository/repository.js';
import { S3Client, type ListedObject } from '../../src/s3/client.js';
import { BucketSource } from '../../src/sources/bucket.js';
import { DirTarget } from '../../src/targets/dir.js';
import { seedOddKeys } from '../fixtures/deis-sample.js';
import { recordingProxy } from '../fixtures/recording-proxy.js';
import { gatewayOptions, stackDumpCommand, stackSsh } from '../fixtures/stack.js';
import {
  BIN,
  bucketContents,
  cli,
  describeWithStack,
  gatewayClient,
  psql,
  tempDir,
  unique,
  until,
  writeConfig,
} from './helpers.js';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, readdir, readFile, rm, symlink } from 'node:fs/promises';

const signal = AbortSignal.timeout(300_000);

/** The config shape these tests write and patch. */
interface TestConfig {
  etcd: { endpoints: string[] };
  ssh: Record<string, unknown>;
  sources: {
    buckets: { names: string[] };
    volume: { path: string; host?: string };
    database: { host: string; command: string; timeoutMs?: number };
  };
  target: unknown;
  gateway?: Record<string, unknown>;
  restore?: Record<string, unknown>;
  lock?: Record<string, unknown>;
}
const silent = createLogger({ level: 'silent' });

describeWithStack('failed and partial runs', (stack) => {
  const bucket = unique('fail');
  const volume = tempDir('volume');
  let gateway: S3Client;

  const config = (target: unknown, patch: (c: TestConfig) => void = () => undefined) => {
    const c: TestConfig = {
      etcd: { endpoints: [stack.etcdEndpoint] },
      ssh: stackSsh(stack),
      sources: {
        buckets: { names: [bucket] },
        volume: { path: volume },
        database: { host: 'local', command: stackDumpCommand(stack) },
      },
      target,
    };
    patch(c);
    return writeConfig(c);
  };
  /** Restore points and leftover files in a dir target. */
  const snapshotIds = async (dir: string) =>
    (await new Repository(new DirTarget(dir)).listSnapshots({ signal })).map((m) => m.id);

  beforeAll(async () => {
    gateway = gatewayClient(stack);
    await gateway.createBucket(bucket, { signal });
    await seedOddKeys(gateway, bucket);
  });
  afterAll(() => {
    gateway.close();
  });

  it('fails on a failing dump command, keeps older restore points, and leaves no dump behind', async () => {
    const dir = tempDir('target');
    expect((await cli(['backup', '--config', config({ type: 'dir', path: dir })])).code).toBe(0);
    const before = await snapshotIds(dir);
    const run = await cli([
      'backup',
      '--config',
      config({ type: 'dir', path: dir }, (c) => {
        c.sources.database.command = `pg_dumpall -h ${stack.pgHost} -p 1 -U ${stack.pgUser}`;
      }),
    ]);
    expect(run.code).toBe(1);
    expect(run.err).toMatch(
      /^database +failed\n  error: database: dump command locally exited 1: pg_dumpall: error: connection to server at "127\.0\.0\.1", port 1 failed: .*; check sources\.database\.command and that deis-database runs$/m,
    );
    expect(run.err).toMatch(/backup failed: no restore point written$/);
    expect(run.out).toBe('');
    expect(await snapshotIds(dir)).toEqual(before);
    const runDirs = await readdir(`${dir}/snapshots`);
    for (const id of runDirs.filter((d) => !before.includes(d))) {
      expect(await readdir(`${dir}/snapshots/${id}`)).not.toContain('database.sql.gz');
    }
    // Recorded for a restarted daemon's metrics: it leaves no manifest to read back.
    interface Recorded {
      allFailedAt: string;
      sourcesFailedAt: Record<string, string>;
      summary: string;
    }
    const recorded = async () => JSON.parse(await readFile(`${dir}/status/backup.json`, 'utf8')) as Recorded;
    const whole = await recorded();
    expect(whole.summary).toMatch(/^database: database: dump command locally exited 1: /);
    expect(Date.parse(whole.allFailedAt)).toBeGreaterThan(Date.now() - 120_000);
    expect(whole.sourcesFailedAt).toEqual({
      [`bucket:${bucket}`]: whole.allFailedAt,
      volume: whole.allFailedAt,
      database: whole.allFailedAt,
    });
    // A later failure of the database alone adds its own time and keeps the whole run's.
    const only = await cli([
      'backup',
      '--only',
      'database',
      '--config',
      config({ type: 'dir', path: dir }, (c) => {
        c.sources.database.command = 'exit 3';
      }),
    ]);
    expect(only.code).toBe(1);
    const after = await recorded();
    expect(after.allFailedAt).toBe(whole.allFailedAt);
    expect(Date.parse(after.sourcesFailedAt['database'] ?? '')).toBeGreaterThan(
      Date.parse(whole.allFailedAt),
    );
    expect(after.sourcesFailedAt['volume']).toBe(whole.allFailedAt);
  });

  it('fails a backup of /var/lib/deis/store while CephFS is not mounted there, here and over SSH', async () => {
    // This machine has no CephFS: the store path is on its own disk, as on a host whose
    // deis-store-volume has not mounted yet. Copied, it would stand as a restore point of the store.
    const made = ['/var/lib/deis', '/var/lib/deis/store'].find((dir) => !existsSync(dir));
    await mkdir('/var/lib/deis/store', { recursive: true });
    try {
      for (const host of [undefined, stack.sshHost]) {
        const dir = tempDir('target');
        const run = await cli([
          'backup',
          '--config',
          config({ type: 'dir', path: dir }, (c) => {
            c.sources.volume = { path: '/var/lib/deis/store', ...(host ? { host } : {}) };
          }),
        ]);
        expect(run.code).toBe(1);
        expect(run.err).toMatch(
          new RegExp(
            `^volume +failed\n  error: volume: /var/lib/deis/store${host ? ` on ${host}` : ''} is on [\\w./-]+, not CephFS: deis-store-volume has not mounted it, so the copy would hold the host's own folder, not the store; start deis-store-volume \\(deisctl start store-volume\\) and wait until /proc/mounts shows ceph on /var/lib/deis/store$`,
            'm',
          ),
        );
        expect(await snapshotIds(dir)).toEqual([]);
      }
    } finally {
      if (made !== undefined) await rm(made, { recursive: true, force: true });
    }
  });

  it('tells a volume root that is not there from one that cannot be read', async () => {
    const base = tempDir('roots');
    // A folder whose path runs through a symlink loop: lstat fails with ELOOP, not ENOENT.
    await symlink(join(base, 'loop'), join(base, 'loop'));
    for (const [path, said] of [
      [
        join(base, 'missing'),
        'not found; check sources.volume.path (the container must mount /var/lib/deis/store)',
      ],
      [join(base, 'loop', 'store'), 'cannot be read (ELOOP); check the mount of the store volume'],
    ] as const) {
      const run = await cli([
        'backup',
        '--only',
        'volume',
        '--config',
        config({ type: 'dir', path: tempDir('target') }, (c) => {
          c.sources.volume = { path };
        }),
      ]);
      expect(run.code).toBe(1);
      expect(run.err).toContain(`  error: volume ${path}: ${said}\n`);
    }
  });

  it('stops a dump over SSH on SIGINT: aborted, no restore point, the cluster lock released', async () => {
    const target = tempDir('target');
    const lockKey = `/deis/backup/${unique('sigint')}`;
    const file = config({ type: 'dir', path: target }, (c) => {
      c.sources.database = { host: stack.sshHost, command: `sleep 8; ${stackDumpCommand(stack)}` };
      c.lock = { key: lockKey };
    });
    const child = spawn('node', [BIN, 'backup', '--config', file, '--only', 'database'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    // Listened for at once: a run that failed early must not leave this waiting for an exit it missed.
    const exited = once(child, 'exit') as Promise<[number | null]>;
    let err = '';
    child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
    child.stdout.resume();
    // The lock taken and the command started on the host: the dump is on its quiet first seconds.
    await until('the backup to take the lock', async () =>
      (await fetch(`${stack.etcdEndpoint}/v2/keys${lockKey}`)).ok ? true : undefined,
    );
    await new Promise((r) => setTimeout(r, 1500));
    child.kill('SIGINT');
    const [code] = await exited;
    expect(code, err).toBe(1);
    expect(err.trim().split('\n').at(-1)).toBe('backup aborted: no restore point written');
    expect(await snapshotIds(target)).toEqual([]);
    expect((await fetch(`${stack.etcdEndpoint}/v2/keys${lockKey}`)).status).toBe(404);
  });

  it('stops a dump that sends nothing for sources.database.timeoutMs, and not one that is slow but sending', async () => {
    const dir = tempDir('target');
    const started = Date.now();
    const hung = await cli([
      'backup',
      '--only',
      'database',
      '--config',
      config({ type: 'dir', path: dir }, (c) => {
        c.sources.database = { host: 'local', command: 'echo "-- header"; sleep 600', timeoutMs: 1000 };
      }),
    ]);
    expect(hung.code).toBe(1);
    expect(hung.err).toBe(
      'database  failed\n  error: database: dump command locally sent nothing for 1 s and was cut off; check that deis-database answers (docker exec can hang) and that no pg_dumpall is left running there, or raise sources.database.timeoutMs\nbackup failed: no restore point written',
    );
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(await snapshotIds(dir)).toEqual([]);
    // A line every 0.4 s for 3 s keeps a dump of 1 s's patience going.
    const slow = await cli([
      'backup',
      '--only',
      'database',
      '--config',
      config({ type: 'dir', path: dir }, (c) => {
        c.sources.database = {
          host: 'local',
          command: `for i in 1 2 3 4 5 6 7 8; do echo "-- waiting $i"; sleep 0.4; done; ${stackDumpCommand(stack)}`,
          timeoutMs: 1000,
        };
      }),
    ]);
    expect(slow.code, slow.err).toBe(0);
    expect(await snapshotIds(dir)).toHaveLength(1);
  });

  it('fails on a dump that exits 0 but was cut short', async () => {
    const dir = tempDir('target');
    const pgDumpall = `pg_dumpall -h ${stack.pgHost} -p ${stack.pgPort} -U ${stack.pgUser}`;
    // Cut anywhere, and cut right after the last database's own completion line (pg_dump's), before
    // pg_dumpall's closing lines.
    for (const command of [
      `${pgDumpall} | head -c 2000`,
      // Its last three lines go: "--", the cluster's line, "--" (and the blank line after).
      `${pgDumpall} | sed '/^-- PostgreSQL database cluster dump complete$/,$d' | head -n -1`,
    ]) {
      const run = await cli([
        'backup',
        '--only',
        'database',
        '--config',
        config({ type: 'dir', path: dir }, (c) => {
          c.sources.database.command = command;
        }),
      ]);
      expect(run.code, command).toBe(1);
      expect(run.err).toContain(
        'database: dump command locally output ended before pg_dumpall\'s "dump complete" line (truncated)',
      );
    }
    expect(await snapshotIds(dir)).toEqual([]);
  });

  it('fails on a wrong gateway key without printing any key', async () => {
    const dir = tempDir('target');
    const run = await cli([
      'backup',
      '--config',
      config({ type: 'dir', path: dir }, (c) => {
        c.gateway = {
          endpoint: stack.rgwEndpoint,
          accessKey: stack.gatewayAccessKey,
          secretKey: 'wrong-secret-key-0123456789',
        };
      }),
    ]);
    expect(run.code).toBe(1);
    expect(run.err).toContain(
      `bucket:${bucket}  failed\n  error: bucket ${bucket}: gateway ${stack.rgwEndpoint} refused the keys (SignatureDoesNotMatch); check gateway.accessKey and gateway.secretKey, or /deis/store/gateway/accessKey and secretKey in etcd`,
    );
    expect(run.err + run.out).not.toContain('wrong-secret-key');
    expect(run.err + run.out).not.toContain(stack.gatewayAccessKey);
    expect(await snapshotIds(dir)).toEqual([]);
  });

  it('fails on an unreachable gateway and names where it looked', async () => {
    const dir = tempDir('target');
    const run = await cli([
      'backup',
      '--only',
      'buckets',
      '--config',
      config({ type: 'dir', path: dir }, (c) => {
        c.gateway = { endpoint: 'http://127.0.0.1:1' };
      }),
    ]);
    expect(run.code).toBe(1);
    expect(run.err).toContain(
      `bucket ${bucket}: cannot reach gateway http://127.0.0.1:1 (ECONNREFUSED); check gateway.endpoint or /deis/store/gateway/host and port in etcd`,
    );
  });

  it('names a gateway host or port in etcd that makes no address', async () => {
    const keys = `${stack.etcdEndpoint}/v2/keys/deis/store/gateway`;
    const read = async (name: string): Promise<string> =>
      ((await (await fetch(`${keys}/${name}`)).json()) as { node: { value: string } }).node.value;
    const write = async (name: string, value: string): Promise<void> => {
      const put = await fetch(`${keys}/${name}`, { method: 'PUT', body: new URLSearchParams({ value }) });
      expect(put.status).toBe(200);
    };
    const saved = { host: await read('host'), port: await read('port') };
    try {
      for (const [name, value, what] of [
        ['port', '74 80', 'port number'],
        ['host', 'gateway host', 'host name or address'],
      ] as const) {
        await write('host', saved.host);
        await write('port', saved.port);
        await write(name, value);
        const run = await cli([
          'backup',
          '--only',
          'buckets',
          '--config',
          config({ type: 'dir', path: tempDir('target') }, (c) => {
            c.gateway = {};
          }),
        ]);
        expect(run.code, run.err).toBe(1);
        expect(run.err).toContain(
          `gateway: /deis/store/gateway/${name} in etcd is "${value}", not a ${what}; fix it in etcd, or set gateway.endpoint in the config`,
        );
        expect(run.err).not.toContain('Invalid URL');
      }
    } finally {
      await write('host', saved.host);
      await write('port', saved.port);
    }
  });

  it('fails on an unreachable target with one line and exit 1', async () => {
    const run = await cli([
      'backup',
      '--config',
      config({
        type: 's3',
        endpoint: 'http://127.0.0.1:1',
        bucket: 'deis-backups',
        accessKey: 'AKIAEXAMPLE',
        secretKey: 'target-secret-not-shown',
      }),
    ]);
    expect(run.code).toBe(1);
    expect(run.err).toBe(
      'deis-backup: list locks/ in s3://deis-backups: ECONNREFUSED; check target.endpoint',
    );
    expect(run.out).toBe('');
  });

  it('fails on target keys the target refuses, and a missing target bucket', async () => {
    const refused = await cli([
      'backup',
      '--config',
      config({
        type: 's3',
        endpoint: stack.rgwEndpoint,
        bucket: stack.targetBucket,
        accessKey: stack.targetAccessKey,
        secretKey: 'nope-nope-nope',
      }),
    ]);
    expect(refused.code).toBe(1);
    expect(refused.err).toBe(
      `deis-backup: list locks/ in s3://${stack.targetBucket}: SignatureDoesNotMatch; check target.accessKey and target.secretKey`,
    );
    const missing = await cli([
      'backup',
      '--config',
      config({
        type: 's3',
        endpoint: stack.rgwEndpoint,
        bucket: 'no-such-bucket-here',
        accessKey: stack.targetAccessKey,
        secretKey: stack.targetSecretKey,
      }),
    ]);
    expect(missing.code).toBe(1);
    expect(missing.err).toBe(
      'deis-backup: list locks/ in s3://no-such-bucket-here: NoSuchBucket; create bucket no-such-bucket-here or fix target.bucket',
    );
  });

  it('counts an object deleted between listing and reading as vanished, not a failure', async () => {
    const victim = 'odd/empty';
    // A real deletion on the real gateway, made right after the listing named the object.
    class DeletingClient extends S3Client {
      override async *listObjects(
        b: string,
        opts: Parameters<S3Client['listObjects']>[1],
      ): AsyncIterable<ListedObject> {
        for await (const item of super.listObjects(b, opts)) {
          if (item.key === victim) await this.deleteObject(b, victim, { signal });
          yield item;
        }
      }
    }
    const client = new DeletingClient(gatewayOptions(stack));
    const repository = new Repository(new DirTarget(tempDir('target')));
    const result = await runBackup(
      { repository, log: silent },
      [new BucketSource({ bucket, client, listVersion: 1, concurrency: 2 })],
      { signal },
    );
    client.close();
    expect(result.status).toBe('success');
    expect(result.sources[0]?.counts.vanished).toBe(1);
    expect(result.sources[0]?.counts.failed).toBe(0);
    await gateway.putObject(bucket, victim, Buffer.alloc(0), {
      signal,
      size: 0,
      contentType: 'application/x-empty',
    });
  });

  it('sends requests a loaded gateway refused or reset again, and reports an object it kept refusing as partial', async () => {
    const proxy = await recordingProxy(stack.rgwEndpoint);
    try {
      const file = (dir: string) =>
        config({ type: 'dir', path: dir }, (c) => {
          c.gateway = {
            endpoint: proxy.url,
            accessKey: stack.gatewayAccessKey,
            secretKey: stack.gatewaySecretKey,
          };
        });
      const backup = (dir: string) => cli(['backup', '--only', 'buckets', '--config', file(dir), '--json']);
      // The listing's first attempt and every object's first GET fail, alternately 503 and reset.
      const seen = new Set<string>();
      let faults = 0;
      proxy.fault = ({ method, path }) => {
        if (method !== 'GET' || seen.has(path)) return undefined;
        seen.add(path);
        return faults++ % 2 === 0 ? 503 : 'reset';
      };
      const dir = tempDir('target');
      const run = await backup(dir);
      expect(run.code, run.err).toBe(0);
      const [manifest] = await new Repository(new DirTarget(dir)).listSnapshots({ signal });
      expect(manifest?.status).toBe('success');
      const keys = [...(await bucketContents(gateway, bucket)).keys()];
      expect(manifest?.sources[0]?.counts).toMatchObject({ objects: keys.length, failed: 0 });
      expect(faults).toBe(keys.length + 1);

      // One object refused on every attempt: the rest is committed, the run is partial (exit 3).
      proxy.fault = ({ method, path }) => (method === 'GET' && path.includes('/odd/plus') ? 503 : undefined);
      const partial = await backup(tempDir('target'));
      expect(partial.code).toBe(3);
      const result = JSON.parse(partial.out) as { sources: { status: string; errors: string[] }[] };
      expect(result.sources[0]?.status).toBe('partial');
      expect(result.sources[0]?.errors).toEqual([
        expect.stringMatching(/^odd\/plus\+sign\+\.txt: .*503.*\(4 attempts\)/) as unknown,
      ]);
    } finally {
      proxy.fault = undefined;
      await proxy.close();
    }
  });

  it('starts no load command when the dump cannot be opened, so none is left waiting on its input', async () => {
    // The target lost the dump after the preflight: opening it fails before any command runs.
    const repository = new Repository(new DirTarget(tempDir('target')));
    const started = join(tempDir('marker'), 'started');
    const artifact = {
      name: 'database.sql.gz',
      key: 'snapshots/gone/database.sql.gz',
      size: 10,
      sha256: '0'.repeat(64),
    };
    await expect(
      loadDump(repository, artifact, { command: `echo > ${started}; cat > /dev/null` }, { signal }),
    ).rejects.toThrow(/snapshots\/gone\/database\.sql\.gz/);
    // Time enough for a shell that had been started to write its marker.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(existsSync(started)).toBe(false);
  });

  it('fails a restore whose load command dies while the dump is still streaming, without hanging', async () => {
    const db = unique('bigdump');
    psql(stack, stack.pgPort, `create database ${db}`);
    try {
      // Far more than a pipe buffer, so the dump is still being written when the command exits.
      psql(
        stack,
        stack.pgPort,
        `create table filler as select g, md5(g::text) as h from generate_series(1, 100000) g`,
        db,
      );
      const dir = tempDir('target');
      const file = config({ type: 'dir', path: dir }, (c) => {
        c.restore = { databaseCommand: 'head -c 1000 > /dev/null; echo gave up >&2; exit 5' };
      });
      expect((await cli(['backup', '--only', 'database', '--config', file])).code).toBe(0);
      const started = Date.now();
      const run = await cli(['restore', 'latest', '--only', 'database', '--config', file, '--json']);
      expect(Date.now() - started).toBeLessThan(30_000);
      expect(run.code).toBe(1);
      const report = JSON.parse(run.out) as { steps: { step: string; status: string; errors: string[] }[] };
      expect(report.steps[0]).toMatchObject({
        step: 'database',
        status: 'failed',
        errors: ['database: load command locally exited 5: gave up; check restore.databaseCommand'],
      });
    } finally {
      psql(stack, stack.pgPort, `drop database ${db} with (force)`);
    }
  });

  it('fails a restore whose load command exits 0 without reading the whole dump, here and over SSH', async () => {
    const db = unique('unread');
    psql(stack, stack.pgPort, `create database ${db}`);
    try {
      // About 16 MB, far more than a pipe buffer and sshd's 2 MiB channel window: what fits in them
      // is taken without being read, and cannot be told from a dump that was read.
      psql(
        stack,
        stack.pgPort,
        `create table filler as select g, md5(g::text) as h, repeat('x', 40) as pad from generate_series(1, 200000) g`,
        db,
      );
      const dir = tempDir('target');
      const unread = (host: string) =>
        config({ type: 'dir', path: dir }, (c) => {
          c.sources.database.host = host;
          c.restore = { databaseCommand: 'head -c 1000 > /dev/null' };
        });
      expect((await cli(['backup', '--only', 'database', '--config', unread('local')])).code).toBe(0);
      for (const [host, where] of [
        ['local', 'locally'],
        [stack.sshHost, `on ${stack.sshHost}`],
      ] as const) {
        const run = await cli([
          'restore',
          'latest',
          '--only',
          'database',
          '--config',
          unread(host),
          '--json',
        ]);
        expect(run.code, `${host}: ${run.out}`).toBe(1);
        const report = JSON.parse(run.out) as { steps: { step: string; status: string; errors: string[] }[] };
        expect(report.steps[0]).toMatchObject({
          step: 'database',
          status: 'failed',
          errors: [
            `database: load command ${where} exited before reading the whole dump; check restore.databaseCommand: it must read the dump on stdin (docker exec -i, not docker exec)`,
          ],
        });
      }
    } finally {
      psql(stack, stack.pgPort, `drop database ${db} with (force)`);
    }
  });

  it('fails a restore whose psql got none of a small dump that sshd took unread', async () => {
    const db = unique('tiny');
    psql(stack, stack.pgPort, `create database ${db}`);
    try {
      psql(stack, stack.pgPort, `create table t as select g from generate_series(1, 10) g`, db);
      // A dump of a few KiB: sshd's 2 MiB channel window takes it whole whether or not anything reads
      // it. psql with its stdin elsewhere is what `docker exec` without -i runs.
      const file = config({ type: 'dir', path: tempDir('target') }, (c) => {
        c.sources.database = {
          host: stack.sshHost,
          command: `pg_dump -h ${stack.pgHost} -p ${stack.pgPort} -U ${stack.pgUser} -d ${db}`,
        };
        c.restore = {
          databaseCommand: `psql -X -q -h ${stack.pgHost} -p ${stack.pgScratchPort} -U ${stack.pgUser} -d postgres < /dev/null`,
        };
      });
      const backup = await cli(['backup', '--only', 'database', '--config', file, '--json']);
      expect(backup.code, backup.out).toBe(0);
      const stored = JSON.parse(backup.out) as { sources: { artifacts: { size: number }[] }[] };
      expect(stored.sources[0]?.artifacts[0]?.size).toBeLessThan(64 * 1024);
      const run = await cli(['restore', 'latest', '--only', 'database', '--config', file, '--json']);
      expect(run.code, run.out).toBe(1);
      const report = JSON.parse(run.out) as { steps: { step: string; status: string; errors: string[] }[] };
      expect(report.steps[0]).toMatchObject({
        step: 'database',
        status: 'failed',
        errors: [
          `database: load command on ${stack.sshHost} exited without reaching the end of the dump (psql did not print the line appended to it); check restore.databaseCommand: psql must read the dump on stdin (docker exec -i, not docker exec) and print to stdout`,
        ],
      });
    } finally {
      psql(stack, stack.pgPort, `drop database ${db} with (force)`);
    }
  });

  it('refuses a bad config with every problem and exit 2', async () => {
    const run = await cli([
      'backup',
      '--config',
      writeConfig({ sources: { buckets: { concurrency: 'lots' } }, target: { type: 'ftp' } }),
    ]);
    expect(run.code).toBe(2);
    expect(run.err.split('\n')).toEqual([
      expect.stringMatching(/^deis-backup: config .*config\.json: 2 problem\(s\)$/),
      '  - sources.buckets.concurrency: must be a number, not a string',
      '  - target.type: must have type "s3" or "dir"',
    ]);
  });
});
