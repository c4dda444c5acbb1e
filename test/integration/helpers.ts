// Shared helpers for tests against the real stack: stack lookup that fails (never skips) when the
// stack is required, fresh bucket names, gateway snapshots, tree comparison, and an in-process CLI.
import { createHash, randomBytes } from 'node:crypto';
import { execFile, execFileSync, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { lstat, readdir, readFile, readlink, rm } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe } from 'vitest';
import { main } from '../../src/cli.js';
import { S3Client } from '../../src/s3/client.js';
import { gatewayOptions, loadStack, runPsql, type Stack } from '../fixtures/stack.js';
import { tempDir as makeTempDir } from '../temp-dirs.js';

/**
 * The running stack. When it is required (npm test, CI) and missing, this throws so the suite fails;
 * otherwise the caller skips with `describe.skipIf(!stack)`.
 */
export function stackOrSkip(): Stack | undefined {
  const stack = loadStack();
  const required = process.env['DEIS_BACKUP_STACK_REQUIRED'] === '1' || process.env['CI'] === 'true';
  if (!stack && required) {
    throw new Error('the test stack is not running (required here): start it with npm run stack:start');
  }
  return stack;
}

/** A describe block that gets the running stack, or is skipped when it is not up and not required. */
export function describeWithStack(name: string, body: (stack: Stack) => void): void {
  const stack = stackOrSkip();
  describe.skipIf(!stack)(name, () => {
    if (stack) body(stack);
  });
}

/** A name no other test uses; valid as an S3 bucket name and a target prefix, with '_' like db_wal. */
export function unique(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
}

/** A gateway client with the Deis user's keys. */
export function gatewayClient(
  stack: Stack,
  signatureVersion: 'v2' | 'v4' = 'v2',
  secretKey = stack.gatewaySecretKey,
): S3Client {
  return new S3Client(gatewayOptions(stack, signatureVersion, secretKey));
}

/** What a bucket holds, by key: size, ETag, content-type, user metadata and the body's sha256. */
export async function bucketContents(
  client: S3Client,
  bucket: string,
): Promise<
  Map<
    string,
    { size: number; etag: string; contentType?: string; metadata: Record<string, string>; sha256: string }
  >
> {
  const signal = AbortSignal.timeout(120_000);
  const out = new Map<
    string,
    { size: number; etag: string; contentType?: string; metadata: Record<string, string>; sha256: string }
  >();
  for await (const item of client.listObjects(bucket, { signal, listVersion: 1 })) {
    const got = await client.getObject(bucket, item.key, { signal });
    if (!got) throw new Error(`${item.key} vanished`);
    const hash = createHash('sha256');
    for await (const chunk of got.body) hash.update(chunk as Buffer);
    out.set(item.key, {
      size: item.size,
      etag: item.etag,
      ...(got.head.contentType === undefined ? {} : { contentType: got.head.contentType }),
      metadata: got.head.metadata,
      sha256: hash.digest('hex'),
    });
  }
  return out;
}

/** A new empty temporary directory, removed when the test file ends. */
export function tempDir(prefix: string): string {
  return makeTempDir(`deis-backup-${prefix}-`);
}

/** Everything `ls -l` shows of a tree (type, mode, owner, mtime, size, content hash, link target), by path. */
export async function describeTree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  // The first name of each file with more than one, for its others: a hard link shows as `same-as`.
  const names = new Map<string, string>();
  const walk = async (dir: string, rel: string): Promise<void> => {
    for (const name of (await readdir(dir)).sort()) {
      const full = join(dir, name);
      const path = rel ? `${rel}/${name}` : name;
      const st = await lstat(full, { bigint: true });
      // Whole seconds from the exact time: floor(mtimeMs / 1000) can round up across a second.
      const common = `mode=${(st.mode & 0o7777n).toString(8)} uid=${st.uid} gid=${st.gid} mtime=${st.mtimeNs / 1_000_000_000n}`;
      if (st.isSymbolicLink()) out[path] = `link -> ${await readlink(full)} uid=${st.uid} gid=${st.gid}`;
      else if (st.isDirectory()) {
        out[path] = `dir ${common}`;
        await walk(full, path);
      } else {
        const sha = createHash('sha256')
          .update(await readFile(full))
          .digest('hex');
        const inode = `${st.dev}:${st.ino}`;
        const first = names.get(inode);
        if (st.nlink > 1n && first === undefined) names.set(inode, path);
        out[path] =
          `file ${common} size=${st.size} sha256=${sha}${first === undefined ? '' : ` same-as=${first}`}`;
      }
    }
  };
  await walk(root, '');
  return out;
}

/** Extracts a .tar.gz with GNU tar exactly as the Deis restore procedure does. */
export function gnuTarExtract(archive: string, into: string): void {
  execFileSync('tar', ['-C', into, '-xzpf', archive, '--same-owner']);
}

/** `deis-backup restore <id> --only volume --volume-to <into>` with the config `file`, in-process. */
export function restoreVolume(
  id: string,
  file: string,
  into: string,
  extra: string[] = [],
): Promise<{ code: number; out: string; err: string }> {
  return cli(['restore', id, '--config', file, '--only', 'volume', '--volume-to', into, ...extra]);
}

/** Runs `deis-backup` in-process; returns exit code and what it printed. */
export async function cli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(
    args,
    env,
    { out: (l) => out.push(l), err: (l) => err.push(l) },
    AbortSignal.timeout(300_000),
  );
  return { code, out: out.join('\n'), err: err.join('\n') };
}

/**
 * Writes a config object to a temporary file and returns its path. Unless the config sets `lock`,
 * it gets a cluster lock key of its own, so tests that kill a holder never block the next test.
 */
export function writeConfig(config: unknown): string {
  const file = join(tempDir('config'), 'config.json');
  const withLock =
    typeof config === 'object' && config !== null && !('lock' in config)
      ? { ...config, lock: { key: `/deis-backup-test/${unique('lock')}` } }
      : config;
  writeFileSync(file, JSON.stringify(withLock, null, 2));
  return file;
}

/** Runs SQL on a cluster of the stack with psql; returns stdout. */
export function psql(stack: Stack, port: number, sql: string, database = 'postgres'): string {
  return runPsql({ host: stack.pgHost, port, user: stack.pgUser }, sql, database);
}

/** pg_dumpall of a cluster of the stack, without the random per-dump `\\restrict` keys of PostgreSQL 15.14+. */
export function dumpAll(stack: Stack, port: number): string {
  return execFileSync('pg_dumpall', ['-h', stack.pgHost, '-p', String(port), '-U', stack.pgUser], {
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  })
    .split('\n')
    .filter((line) => !/^\\(un)?restrict /.test(line))
    .join('\n');
}

/** Empties the scratch cluster: every database but the built-in ones, every role but postgres. */
export function resetScratch(stack: Stack): void {
  const port = stack.pgScratchPort;
  for (const db of psql(
    stack,
    port,
    "select datname from pg_database where datname not in ('postgres','template0','template1')",
  )
    .split('\n')
    .filter(Boolean)) {
    psql(stack, port, `drop database "${db}" with (force)`);
  }
  for (const role of psql(
    stack,
    port,
    "select rolname from pg_roles where rolname <> 'postgres' and rolname not like 'pg\\_%'",
  )
    .split('\n')
    .filter(Boolean)) {
    psql(stack, port, `drop role "${role}"`);
  }
}

/** Loads a gzip'd SQL dump into the scratch cluster with `gunzip -c | psql`, as an operator would. */
export function loadDump(stack: Stack, file: string): void {
  const result = spawnSync(
    'sh',
    [
      '-c',
      `gunzip -c '${file}' | psql -X -q -v ON_ERROR_STOP=0 -h ${stack.pgHost} -p ${stack.pgScratchPort} -U ${stack.pgUser} -d postgres`,
    ],
    {
      encoding: 'utf8',
    },
  );
  if (result.status !== 0) throw new Error(`loading ${file} failed: ${result.stderr}`);
}

/**
 * Puts an object into a Deis bucket as the backup user (granted write on the bucket), so the Deis
 * user lists it but may not read it: a real per-object failure, as a broken object would be.
 */
export function putForeignObject(stack: Stack, bucket: string, key: string): void {
  const s3cmd = [
    '--no-ssl',
    '--host=127.0.0.1:7480',
    '--host-bucket=127.0.0.1:7480',
    '--signature-v2',
    '-c',
    '/dev/null',
  ];
  const deis = [`--access_key=${stack.gatewayAccessKey}`, `--secret_key=${stack.gatewaySecretKey}`];
  const backup = [`--access_key=${stack.targetAccessKey}`, `--secret_key=${stack.targetSecretKey}`];
  execFileSync('s3cmd', [...s3cmd, ...deis, 'setacl', `s3://${bucket}`, '--acl-grant=write:backup'], {
    stdio: 'ignore',
  });
  const file = join(tempDir('foreign'), 'body');
  writeFileSync(file, 'not yours\n');
  execFileSync('s3cmd', [...s3cmd, ...backup, 'put', file, `s3://${bucket}/${key}`], { stdio: 'ignore' });
}

/** Polls until `check` returns a value (not undefined) or the time is up. */
export async function until<T>(what: string, check: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** One sample of a Prometheus text exposition (`name{labels} value`), or undefined. */
export function sample(text: string, name: string, labels = ''): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `));
  return line === undefined ? undefined : Number(line.split(' ').pop());
}

/** The built executable (npm test builds it before the tests run). */
export const BIN = join(import.meta.dirname, '..', '..', 'dist', 'bin.js');

/** Runs the built executable with only PATH and `env`; returns its exit code, stdout and stderr. */
export async function runBin(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)('node', [BIN, ...args], {
      env: { PATH: process.env['PATH'], ...env },
      maxBuffer: 64 * 1024 * 1024,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** One request to a daemon's HTTP API: `body` sent as JSON, `token` as the bearer; JSON answers parsed. */
export async function callApi(
  url: string,
  method: string,
  path: string,
  opts: { body?: unknown; token?: string | undefined } = {},
): Promise<{ status: number; text: string; headers: Headers; body: Record<string, unknown> & string }> {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: {
      ...(opts.token === undefined ? {} : { authorization: `Bearer ${opts.token}` }),
      ...(opts.body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(opts.body === undefined ? {} : { body: JSON.stringify(opts.body) }),
  });
  const text = await res.text();
  return {
    status: res.status,
    text,
    headers: res.headers,
    body: (res.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text) as Record<
      string,
      unknown
    > &
      string,
  };
}

/** The README paragraph (text between blank lines) holding `text`, for tests that pin a claim to the code. */
export function readmeParagraph(text: string): string {
  const readme = readFileSync(join(import.meta.dirname, '..', '..', 'README.md'), 'utf8');
  const found = readme.split(/\n\s*\n/).find((p) => p.includes(text));
  if (found === undefined) throw new Error(`README has no paragraph with ${text}`);
  return found;
}

/** A free TCP port on 127.0.0.1 (free when asked: another process may take it before it is used). */
async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  server.close();
  return port;
}

/** An etcd of its own, as a new cluster's: the v2 API on 127.0.0.1, emptied when it stops. */
export interface ScratchEtcd {
  endpoint: string;
  get(key: string): Promise<string | undefined>;
  put(key: string, value: string): Promise<void>;
  stop(): Promise<void>;
}

/** Starts an etcd (the binary the stack runs) holding `keys`, for tests whose etcd keys the shared one must not get. */
export async function startScratchEtcd(keys: Record<string, string>): Promise<ScratchEtcd> {
  const [client, peer] = [await freePort(), await freePort()];
  const dir = tempDir('etcd');
  const child = spawn(
    'etcd',
    [
      '--name=scratch',
      '--enable-v2=true',
      `--data-dir=${dir}`,
      `--listen-client-urls=http://127.0.0.1:${client}`,
      `--advertise-client-urls=http://127.0.0.1:${client}`,
      `--listen-peer-urls=http://127.0.0.1:${peer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${peer}`,
      `--initial-cluster=scratch=http://127.0.0.1:${peer}`,
    ],
    { stdio: 'ignore' },
  );
  const endpoint = `http://127.0.0.1:${client}`;
  const url = (key: string) => `${endpoint}/v2/keys${key}`;
  const etcd: ScratchEtcd = {
    endpoint,
    async get(key) {
      const res = await fetch(url(key));
      return res.ok ? ((await res.json()) as { node: { value: string } }).node.value : undefined;
    },
    async put(key, value) {
      const res = await fetch(url(key), { method: 'PUT', body: new URLSearchParams({ value }) });
      if (!res.ok) throw new Error(`scratch etcd: PUT ${key}: ${res.status}`);
    },
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await once(child, 'exit');
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
  try {
    await until('the scratch etcd', () =>
      fetch(`${endpoint}/v2/keys/`).then(
        (res) => (res.ok ? true : undefined),
        () => undefined,
      ),
    );
    for (const [key, value] of Object.entries(keys)) await etcd.put(key, value);
  } catch (err) {
    await etcd.stop();
    throw err;
  }
  return etcd;
}
