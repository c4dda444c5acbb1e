// Nobody gets in and nothing leaks: mutating routes need the token (compared in constant time),
// read-only routes, logs, outputs and stored metadata never hold a credential, changed SSH host keys
// stop a run, and crafted archives cannot write outside the restore root.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { startDaemon, type Daemon } from '../../src/daemon.js';
import { createLogger } from '../../src/log.js';
import { Repository } from '../../src/repository/repository.js';
import { chain } from '../../src/streams.js';
import { DirTarget } from '../../src/targets/dir.js';
import { createRepository } from '../../src/wiring.js';
import { seedRegistry, seedVolume } from '../fixtures/deis-sample.js';
import { stackDumpCommand, stackSsh } from '../fixtures/stack.js';
import {
  callApi,
  cli,
  describeWithStack,
  runBin,
  gatewayClient,
  tempDir,
  unique,
  until,
  writeConfig,
} from './helpers.js';
import { stackS3TargetConfig } from '../fixtures/s3-target.js';

/** Every timingSafeEqual call the server makes, as the byte lengths of its two operands. */
const compared = vi.hoisted(() => [] as [number, number][]);
vi.mock('node:crypto', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:crypto')>();
  return {
    ...actual,
    default: actual,
    timingSafeEqual: (a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView) => {
      compared.push([a.byteLength, b.byteLength]);
      return actual.timingSafeEqual(a, b);
    },
  };
});

const TOKEN = 'security-token-0123456789abcdef';
/** A token only ever passed through DEIS_BACKUP_HTTP_TOKEN_FILE. */
const FILE_TOKEN = 'security-file-token-fedcba9876543210';
/** A wrong gateway secret: a configured secret too, so it must not leak from the failure it causes. */
const WRONG_GATEWAY_SECRET = 'wronggatewaysecretkey0000000000000000000';
/** A wrong target access key, for a run the target refuses. */
const WRONG_TARGET_ACCESS = 'WRONGTARGETACCESS000';
const signal = AbortSignal.timeout(600_000);
/** A database password written into the dump and load commands, as an operator might. */
const DB_PASSWORD = 'dbpasswordwritteninthecommand';

describeWithStack('security', (stack) => {
  const secrets = [
    stack.gatewayAccessKey,
    stack.gatewaySecretKey,
    stack.targetAccessKey,
    stack.targetSecretKey,
    TOKEN,
    FILE_TOKEN,
    WRONG_GATEWAY_SECRET,
    WRONG_TARGET_ACCESS,
    DB_PASSWORD,
  ];
  /** Everything this file saw come out of deis-backup: output lines, log lines and HTTP bodies. */
  const seen: { where: string; text: string }[] = [];
  const logs: string[] = [];
  const running: Daemon[] = [];
  const registry = unique('secreg');
  const volume = tempDir('volume');
  const prefix = unique('security');
  const secretDir = tempDir('secrets');
  const write = (name: string, value: string) => {
    const file = join(secretDir, name);
    writeFileSync(file, `${value}\n`);
    return file;
  };
  /** The secrets as an operator passes them: some in the environment, some in *_FILE files. */
  const secretEnv: NodeJS.ProcessEnv = {
    DEIS_BACKUP_TARGET_ACCESS_KEY: stack.targetAccessKey,
    DEIS_BACKUP_TARGET_SECRET_KEY_FILE: write('target-secret', stack.targetSecretKey),
    DEIS_BACKUP_GATEWAY_ACCESS_KEY: stack.gatewayAccessKey,
    DEIS_BACKUP_GATEWAY_SECRET_KEY_FILE: write('gateway-secret', stack.gatewaySecretKey),
    DEIS_BACKUP_HTTP_TOKEN_FILE: write('token', FILE_TOKEN),
  };

  /** A config on the S3 target with the gateway keys in the file itself. */
  const s3Config = (patch: Record<string, unknown> = {}) =>
    writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      ssh: stackSsh(stack),
      gateway: { accessKey: stack.gatewayAccessKey, secretKey: stack.gatewaySecretKey },
      sources: {
        buckets: { names: [registry] },
        volume: { path: volume },
        database: { host: 'local', command: stackDumpCommand(stack) },
      },
      target: stackS3TargetConfig(stack, stack.rgwEndpoint, prefix),
      http: { host: '127.0.0.1', port: 0, token: TOKEN },
      log: { level: 'debug' },
      ...patch,
    });
  const start = async (file: string, env: NodeJS.ProcessEnv = {}) => {
    const config = loadConfig({ file, env });
    const daemon = await startDaemon(config, {
      log: createLogger({ level: 'debug' }, { write: (line: string) => logs.push(line) }),
      shutdown: new AbortController().signal,
    });
    running.push(daemon);
    return { daemon, config };
  };
  /** One request; its body is kept for the scan. */
  const call = async (
    daemon: Daemon,
    method: string,
    path: string,
    opts: { body?: unknown; token?: string } = {},
  ) => {
    const res = await callApi(daemon.url, method, path, opts);
    seen.push({ where: `${method} ${path} ${res.status}`, text: res.text });
    return res;
  };
  const finished = (daemon: Daemon, id: string) =>
    until(
      `backup ${id}`,
      async () => {
        const { text } = await call(daemon, 'GET', `/backups/${id}`);
        const view = JSON.parse(text) as { status: string };
        return view.status === 'running' ? undefined : view;
      },
      120_000,
    );
  const expectNoSecret = (where: string, text: string) => {
    for (const secret of secrets) expect(text, `${where} holds a secret`).not.toContain(secret);
  };
  /** Runs the real executable; every line it prints is kept for the scan. */
  const runScanned = async (args: string[], env: NodeJS.ProcessEnv = {}) => {
    const result = await runBin(args, env);
    seen.push({ where: `${args.join(' ')} (stdout)`, text: result.stdout });
    seen.push({ where: `${args.join(' ')} (stderr)`, text: result.stderr });
    return result;
  };

  beforeAll(async () => {
    const gateway = gatewayClient(stack);
    await gateway.createBucket(registry, { signal });
    await seedRegistry(gateway, registry);
    gateway.close();
    await seedVolume(volume);
  });
  afterAll(async () => {
    for (const daemon of running.splice(0)) await daemon.stop();
    // The file-wide scan: whatever any test here made deis-backup say.
    for (const { where, text } of seen) expectNoSecret(where, text);
    for (const line of logs) expectNoSecret('log line', line);
  });

  it('refuses every mutating route without the right bearer token, before reading the body', async () => {
    const { daemon } = await start(s3Config({ target: { type: 'dir', path: tempDir('target') } }));
    const routes: [string, string, unknown][] = [
      ['POST', '/backups', {}],
      ['POST', '/restores', { snapshot: 'latest', dryRun: true }],
      ['POST', '/verifications', {}],
      ['POST', '/drills', {}],
      ['DELETE', '/restores/restore-1', undefined],
      // Invalid bodies too: the token is checked first, so a stranger learns nothing about the schema.
      ['POST', '/restores', { nonsense: true }],
      ['POST', '/backups', { only: 'everything' }],
    ];
    const wrong = [
      undefined,
      '',
      'x',
      TOKEN.slice(0, -1),
      `${TOKEN}x`,
      TOKEN.toUpperCase(),
      `${TOKEN.slice(0, -1)}g`,
      FILE_TOKEN,
    ];
    for (const [method, path, body] of routes) {
      for (const token of wrong) {
        const res = await call(daemon, method, path, { body, ...(token === undefined ? {} : { token }) });
        expect(res.status, `${method} ${path} with ${String(token)}`).toBe(401);
        expect(JSON.parse(res.text)).toEqual({ error: 'missing or wrong bearer token' });
        expect(res.headers.get('www-authenticate')).toBe('Bearer');
      }
      // Another scheme carrying the right token is not a bearer token.
      const basic = await fetch(`${daemon.url}${path}`, {
        method,
        headers: { authorization: `Basic ${TOKEN}` },
      });
      expect(basic.status).toBe(401);
    }
    expect(daemon.operations.current()).toBeUndefined();
    expect(logs.some((l) => l.includes('request refused: bad or missing token'))).toBe(true);
  });

  it('compares tokens with timingSafeEqual over equal-length digests, whatever the given length', async () => {
    const { daemon } = await start(s3Config({ target: { type: 'dir', path: tempDir('target') } }));
    // timingSafeEqual throws on operands of unequal length; an implementation comparing the raw
    // strings would either throw (500) or leak the length by returning early.
    const tries = [
      'a',
      'short',
      TOKEN.slice(0, -1),
      `${TOKEN}-and-much-longer-than-the-real-one`,
      'y'.repeat(4096),
    ];
    for (const token of tries) {
      compared.length = 0;
      expect((await call(daemon, 'POST', '/verifications', { body: {}, token })).status).toBe(401);
      expect(compared).toEqual([[32, 32]]);
    }
    // The right token passes the same comparison: an invalid body then gets 400, so nothing starts.
    compared.length = 0;
    const accepted = await call(daemon, 'POST', '/verifications', { body: { x: 1 }, token: TOKEN });
    expect(accepted.status).toBe(400);
    expect(compared).toEqual([[32, 32]]);
  });

  it('keeps credentials out of read-only routes, stored metadata and logs after a success and a failure', async () => {
    const file = s3Config();
    const { daemon, config } = await start(file);
    const ok = JSON.parse((await call(daemon, 'POST', '/backups', { token: TOKEN })).text) as { id: string };
    const good = await finished(daemon, ok.id);
    expect(good).toMatchObject({ status: 'success' });
    await daemon.stop();

    // The same target, but a gateway secret the gateway refuses: the bucket source fails.
    const { daemon: failing } = await start(
      s3Config({
        gateway: { accessKey: stack.gatewayAccessKey, secretKey: WRONG_GATEWAY_SECRET },
        sources: {
          buckets: { names: [registry] },
          volume: { path: volume },
          database: { host: 'local', command: 'echo "pg_dumpall: connection refused" >&2; exit 3' },
        },
      }),
    );
    const bad = JSON.parse((await call(failing, 'POST', '/backups', { token: TOKEN })).text) as {
      id: string;
    };
    const failed = await finished(failing, bad.id);
    expect(failed).toMatchObject({ status: 'failed' });
    expect(JSON.stringify(failed)).toMatch(/SignatureDoesNotMatch|signature|403/i);

    for (const path of [
      '/healthz',
      '/readyz',
      '/metrics',
      '/snapshots',
      `/backups/${bad.id}`,
      '/backups/backup-none',
      '/restores/restore-none',
      '/verifications/verify-none',
      '/drills/drill-none',
      '/nowhere',
    ]) {
      const res = await call(failing, 'GET', path);
      expect(res.status).toBeLessThan(600);
      expectNoSecret(path, res.text);
    }
    expectNoSecret('the successful backup', JSON.stringify(good));

    // Every manifest, bucket index, run marker and status record in the target: no credential.
    const repository = await createRepository(config);
    const kinds = new Set<string>();
    for await (const item of repository.target.list('', { signal })) {
      if (item.key.startsWith('blobs/')) continue;
      const name = item.key.split('/').pop() ?? '';
      const kind =
        name === 'manifest.json' || name === 'run.json' ? name : name.endsWith('.jsonl.gz') ? 'index' : '';
      if (kind === '') continue;
      kinds.add(kind);
      let body: Readable = await repository.target.get(item.key, { signal });
      if (kind === 'index') body = chain(body, createGunzip());
      const chunks: Buffer[] = [];
      for await (const chunk of body) chunks.push(chunk as Buffer);
      expectNoSecret(item.key, Buffer.concat(chunks).toString('utf8'));
    }
    expect([...kinds].sort()).toEqual(['index', 'manifest.json', 'run.json']);
  });

  it('prints and logs no secret across backup, snapshots, restore, verify, forget, prune, config check and a daemon', async () => {
    // The file names no credential: each comes from the environment or a *_FILE.
    const base = {
      etcd: { endpoints: [stack.etcdEndpoint] },
      ssh: stackSsh(stack),
      sources: {
        buckets: { names: [registry] },
        volume: { path: volume },
        database: { host: 'local', command: `PGPASSWORD=${DB_PASSWORD} ${stackDumpCommand(stack)}` },
      },
      restore: {
        databaseCommand: `PGPASSWORD=${DB_PASSWORD} psql -X -q -h ${stack.pgHost} -p ${stack.pgScratchPort} -U ${stack.pgUser} -d postgres`,
      },
      target: { type: 's3', endpoint: stack.rgwEndpoint, bucket: stack.targetBucket, prefix: unique('scan') },
      http: { host: '127.0.0.1', port: 0 },
      log: { level: 'debug' },
    };
    const file = writeConfig(base);
    const commands = [
      ['backup', '--verbose'],
      ['backup', '--verbose', '--json'],
      ['snapshots'],
      ['snapshots', '--json'],
      ['restore', 'latest', '--dry-run', '--verbose', '--volume-to', join(tempDir('restored'), 'store')],
      ['restore', 'latest', '--dry-run', '--json', '--only', 'buckets,volume,database'],
      ['verify', '--all', '--read-data', '--verbose'],
      ['verify', 'latest', '--json'],
      ['forget', '--dry-run', '--prune', '--verbose'],
      ['prune', '--dry-run', '--json', '--verbose'],
      ['config', 'check'],
    ];
    for (const args of commands) {
      const run = await runScanned([...args, '--config', file], secretEnv);
      expect(run.code, `${args.join(' ')}: ${run.stderr}`).toBe(0);
    }
    // A failing run prints its errors: the gateway refuses a wrong secret, the target a wrong key.
    const failing = await runScanned(['backup', '--verbose', '--config', file], {
      ...secretEnv,
      DEIS_BACKUP_GATEWAY_SECRET_KEY_FILE: write('wrong-gateway-secret', WRONG_GATEWAY_SECRET),
    });
    expect(failing.code).toBe(1);
    const refused = await runScanned(['snapshots', '--config', file], {
      ...secretEnv,
      DEIS_BACKUP_TARGET_ACCESS_KEY: WRONG_TARGET_ACCESS,
    });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^deis-backup: .+\n$/);

    // The daemon with the token from DEIS_BACKUP_HTTP_TOKEN_FILE, logging at debug.
    const logsBefore = logs.length;
    const { daemon } = await start(file, secretEnv);
    const ok = JSON.parse((await call(daemon, 'POST', '/backups', { token: FILE_TOKEN })).text) as {
      id: string;
    };
    expect(await finished(daemon, ok.id)).toMatchObject({ status: 'success' });
    await daemon.stop();
    const { daemon: broken } = await start(file, {
      ...secretEnv,
      DEIS_BACKUP_GATEWAY_SECRET_KEY_FILE: write('wrong-gateway-secret-2', WRONG_GATEWAY_SECRET),
    });
    const bad = JSON.parse((await call(broken, 'POST', '/backups', { token: FILE_TOKEN })).text) as {
      id: string;
    };
    expect(await finished(broken, bad.id)).toMatchObject({ status: 'failed' });
    for (const path of ['/readyz', '/metrics', '/snapshots', `/backups/${bad.id}`])
      await call(broken, 'GET', path);
    await call(broken, 'POST', '/backups', { token: TOKEN.replace(/./g, 'z') });
    await broken.stop();

    const daemonLogs = logs.slice(logsBefore);
    // The debug level really was on: per-object lines are there to scan, not an empty log.
    expect(daemonLogs.some((l) => l.includes('"level":20'))).toBe(true);
    expect(daemonLogs.some((l) => l.includes('backup failed') || l.includes('"level":50'))).toBe(true);
    expect(seen.length).toBeGreaterThan(30);
    for (const { where, text } of seen) expectNoSecret(where, text);
    for (const line of logs) expectNoSecret('log line', line);
  });

  it('stops a run at an SSH host whose key changed or is not listed, naming the mismatch', async () => {
    const dir = tempDir('known');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'other')]);
    const changed = join(dir, 'changed');
    writeFileSync(
      changed,
      `[${stack.sshHost}]:${stack.sshPort} ${readFileSync(join(dir, 'other.pub'), 'utf8')}`,
    );
    const empty = join(dir, 'empty');
    writeFileSync(empty, '# no hosts yet\n');
    const target = tempDir('target');
    const where = `ssh ${stack.sshUser}@[${stack.sshHost}]:${stack.sshPort}`;
    const cases: [string, Record<string, unknown>, string][] = [
      [
        changed,
        {
          buckets: { enabled: false },
          volume: { path: volume, host: stack.sshHost },
          database: { enabled: false },
        },
        `${where}: host key does not match ${changed}; if the host was rebuilt, replace its line there`,
      ],
      [
        empty,
        {
          buckets: { enabled: false },
          volume: { enabled: false },
          database: { host: stack.sshHost, command: stackDumpCommand(stack) },
        },
        `${where}: host not listed in ${empty}; add its key with ssh-keyscan`,
      ],
    ];
    for (const [knownHostsFile, sources, message] of cases) {
      const file = writeConfig({
        etcd: { endpoints: [stack.etcdEndpoint] },
        ssh: { ...stackSsh(stack), knownHostsFile },
        sources,
        target: { type: 'dir', path: target },
      });
      const run = await cli(['backup', '--config', file]);
      seen.push({ where: 'ssh backup', text: run.out + run.err });
      expect(run.code, run.err).toBe(1);
      expect(run.err).toContain(message);
      expect(run.out).toBe('');
    }
    expect(await new Repository(new DirTarget(target)).listSnapshots({ signal })).toEqual([]);
  });
});
