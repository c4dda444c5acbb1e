// Bad input of every kind — config files and secret variables, command lines, HTTP requests — gets
// one clear line, the documented exit code or status, no stack trace and no secret.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { startDaemon, type Daemon } from '../../src/daemon.js';
import { createLogger } from '../../src/log.js';
import { cli, describeWithStack, runBin, tempDir, writeConfig } from './helpers.js';

/** Values that must never be printed, whatever goes wrong around them. */
const SECRET = 'bad-input-secret-value-0123';
const TOKEN = 'bad-input-token-0123456789abcdef';
const SECRETS = [SECRET, TOKEN];

/** Fails unless `text` is one line with no stack trace, no error class dump and no secret. */
function expectOneCleanLine(text: string, extraSecrets: readonly string[] = []): void {
  expect(text, 'exactly one line').not.toContain('\n');
  expect(text.trim(), 'not empty').not.toBe('');
  expect(text, 'no stack frame').not.toMatch(/^\s+at /m);
  expect(text, 'no error class dump').not.toMatch(/\b\w*Error:/);
  for (const secret of [...SECRETS, ...extraSecrets]) expect(text, 'no secret').not.toContain(secret);
}

const secretsDir = tempDir('bad-secrets');
const unreadable = join(secretsDir, 'a-directory');
mkdirSync(unreadable);
const secretFile = join(secretsDir, 'secret');
writeFileSync(secretFile, `${SECRET}\n`);
const emptyFile = join(secretsDir, 'empty');
writeFileSync(emptyFile, '');

/** A valid S3 target whose keys are the test secret, for cases that must not print them. */
const s3Target = {
  type: 's3',
  endpoint: 'http://127.0.0.1:7480',
  bucket: 'backups',
  accessKey: SECRET,
  secretKey: SECRET,
};

/** A config case: what the file holds (an object, or raw text), the environment, the one problem. */
interface ConfigCase {
  name: string;
  config: unknown;
  env?: NodeJS.ProcessEnv;
  problem: string | RegExp;
}

const configCases: ConfigCase[] = [
  {
    name: 'a number where a path belongs',
    config: { sources: { volume: { path: 5 } } },
    problem: 'sources.volume.path: must be a string, not a number',
  },
  {
    name: 'a string where a port belongs',
    config: { http: { port: '9480' } },
    problem: 'http.port: must be a number, not a string',
  },
  {
    name: 'a string where a boolean belongs',
    config: { sources: { buckets: { enabled: 'yes' } } },
    problem: 'sources.buckets.enabled: must be true or false, not a string',
  },
  {
    name: 'a number where a secret belongs',
    config: { gateway: { secretKey: 12345678901234 } },
    problem: 'gateway.secretKey: must be a string, not a number',
  },
  {
    name: 'an unknown top-level key',
    config: { schedules: { cron: '0 3 * * *' } },
    problem: 'unknown key(s) "schedules"; remove them or check the spelling against config.example.json',
  },
  {
    name: 'a misspelt secret key, whose value is not shown',
    config: { gateway: { secretkey: SECRET } },
    problem:
      'gateway: unknown key(s) "secretkey"; remove them or check the spelling against config.example.json',
  },
  {
    name: 'an unknown key two levels down',
    config: { sources: { database: { password: SECRET } } },
    problem:
      'sources.database: unknown key(s) "password"; remove them or check the spelling against config.example.json',
  },
  {
    name: 'an S3 target without its secret key',
    config: { target: { ...s3Target, secretKey: undefined } },
    problem: 'target.secretKey: is required; add it (see config.example.json)',
  },
  {
    name: 'an S3 target with an empty access key',
    config: { target: { ...s3Target, accessKey: '' } },
    problem: 'target.accessKey: must not be empty',
  },
  {
    name: 'a target of an unknown type',
    config: { target: { type: 'ftp', path: '/x' } },
    problem: 'target.type: must have type "s3" or "dir"',
  },
  {
    name: 'a schedule.cron minute out of range',
    config: { schedule: { cron: '61 * * * *' } },
    problem:
      'schedule.cron: "61 * * * *" is not a cron expression that ever fires (minute 61 is not in 0-59); write e.g. "0 3 * * *" for 03:00 daily',
  },
  {
    name: 'a verify.cron that is not cron',
    config: { verify: { cron: 'nightly' } },
    problem:
      'verify.cron: "nightly" is not a cron expression that ever fires (expected 5 or 6 fields but got 1); write e.g. "0 3 * * *" for 03:00 daily',
  },
  {
    name: 'a drill.cron for 31 February',
    config: { drill: { cron: '0 5 31 2 *' } },
    problem:
      'drill.cron: "0 5 31 2 *" is not a cron expression that ever fires (31 2 is an impossible day of month for the given month); write e.g. "0 3 * * *" for 03:00 daily',
  },
  {
    name: 'a schedule.cron hour that is not a number',
    config: { schedule: { cron: '0 3am * * *' } },
    problem:
      'schedule.cron: "0 3am * * *" is not a cron expression that ever fires (hour "3am" is not a number in 0-23, a range, a list or a step); write e.g. "0 3 * * *" for 03:00 daily',
  },
  {
    name: 'a time zone that does not exist',
    config: { schedule: { timezone: 'Mars/Olympus_Mons' } },
    problem: 'schedule.timezone: is not an IANA time zone; use a name such as "UTC" or "Europe/Berlin"',
  },
  {
    name: 'a bucket listed twice',
    config: { sources: { buckets: { names: ['db_wal', 'db_wal'] } } },
    problem: 'sources.buckets.names: names a bucket twice',
  },
  {
    name: 'a webhook URL with a password in it',
    config: { webhook: { url: 'https://hook:HOOKPASSWORD@hooks.example.com/deis' } },
    problem:
      'webhook.url: must not hold a user name or password (messages and logs show the URL); leave them out',
  },
  {
    name: 'an etcd endpoint with a user in it',
    config: { etcd: { endpoints: ['http://root@10.21.1.44:4001'] } },
    problem:
      'etcd.endpoints.0: must not hold a user name or password (messages and logs show the URL); leave them out',
  },
  {
    name: 'a timeout past what Node timers take',
    config: { etcd: { timeoutMs: 4294967296 } },
    problem: 'etcd.timeoutMs: must be at most 2147483647 (about 24 days)',
  },
  {
    name: 'a gateway key with a line break pasted in',
    config: { gateway: { accessKey: 'DEIS\nGATEWAY', secretKey: 'x' } },
    problem: 'gateway.accessKey: must not hold control characters (a line break pasted with it?)',
  },
  {
    name: 'an http.host with a port',
    config: { http: { host: '0.0.0.0:9480' } },
    problem:
      'http.host: must be an address of this machine (0.0.0.0 for all, 127.0.0.1, ::) or a host name, without a scheme or a port (that is http.port)',
  },
  {
    name: 'an etcd endpoint without a scheme',
    config: { etcd: { endpoints: ['10.21.1.44:4001'] } },
    problem: 'etcd.endpoints.0: must be an http(s) URL such as "http://10.21.1.44:4001"',
  },
  {
    name: 'a gateway endpoint without a scheme',
    config: { gateway: { endpoint: 'deis-store-gateway:8888' } },
    problem: /^gateway\.endpoint: must be an http\(s\) URL such as "http:\/\/10\.21\.1\.44:8888"/,
  },
  {
    name: 'a webhook that is not http',
    config: { webhook: { url: 'ftp://hooks.example.com/x' } },
    problem: 'webhook.url: must be an http(s) URL such as "https://hooks.example.com/deis-backup"',
  },
  {
    name: 'an S3 endpoint without a scheme',
    config: { target: { ...s3Target, endpoint: 's3.amazonaws.com' } },
    problem: 'target.endpoint: must be an http(s) URL such as "https://s3.eu-west-1.amazonaws.com"',
  },
  {
    name: 'a *_FILE secret that cannot be read',
    config: { target: s3Target },
    env: { DEIS_BACKUP_TARGET_SECRET_KEY_FILE: unreadable },
    problem: `DEIS_BACKUP_TARGET_SECRET_KEY_FILE: cannot read ${unreadable} (EISDIR); point it at a readable file holding the secret`,
  },
  {
    name: 'a token file that does not exist',
    config: {},
    env: { DEIS_BACKUP_HTTP_TOKEN_FILE: join(secretsDir, 'missing') },
    problem: `DEIS_BACKUP_HTTP_TOKEN_FILE: cannot read ${join(secretsDir, 'missing')} (ENOENT); point it at a readable file holding the secret`,
  },
  {
    name: 'a token from the environment that is too short',
    config: {},
    env: { DEIS_BACKUP_HTTP_TOKEN: 'short' },
    problem: 'environment variable DEIS_BACKUP_HTTP_TOKEN (for http.token): must be at least 16 characters',
  },
  {
    name: 'an empty secret file',
    config: {},
    env: { DEIS_BACKUP_GATEWAY_SECRET_KEY_FILE: emptyFile },
    problem:
      'environment variable DEIS_BACKUP_GATEWAY_SECRET_KEY_FILE (for gateway.secretKey): must not be empty',
  },
  {
    name: 'a secret set both directly and as a file',
    config: {},
    env: { DEIS_BACKUP_GATEWAY_SECRET_KEY: SECRET, DEIS_BACKUP_GATEWAY_SECRET_KEY_FILE: secretFile },
    problem: 'DEIS_BACKUP_GATEWAY_SECRET_KEY and DEIS_BACKUP_GATEWAY_SECRET_KEY_FILE are both set: keep one',
  },
  {
    name: 'a retention policy that keeps nothing',
    config: { retention: {} },
    problem:
      'retention: set at least one of keepLast, keepHourly, keepDaily, keepWeekly, keepMonthly, keepYearly, keepWithin: a policy that keeps nothing is refused',
  },
  {
    name: 'a keepWithin that is not a duration',
    config: { retention: { keepWithin: '3 fortnights' } },
    problem: 'retention.keepWithin: must be a duration such as "30d", "2w", "6m", "1y" or "1y6m"',
  },
  {
    name: 'keepLast 0',
    config: { retention: { keepLast: 0 } },
    problem: 'retention.keepLast: must be at least 1 (leave the rule out to not use it)',
  },
  {
    name: 'a lock TTL of one second',
    config: { lock: { ttlSeconds: 1 } },
    problem: 'lock.ttlSeconds: must be at least 3',
  },
  {
    name: 'a drill bucket suffix without the dash',
    config: { drill: { bucketSuffix: 'drill' } },
    problem: 'drill.bucketSuffix: must be "-" and up to 20 of a-z, 0-9, "-", e.g. "-drill"',
  },
  {
    name: 'an HTTP token too short to be one, which is not shown',
    config: { http: { token: 'short-secret' } },
    problem: 'http.token: must be at least 16 characters',
  },
  {
    name: 'an unknown log level',
    config: { log: { level: 'loud' } },
    problem: /^log\.level: must be one of "trace", "debug", /,
  },
  {
    name: 'a target endpoint whose port is out of range',
    config: { target: { ...s3Target, endpoint: 'http://minio:99999' } },
    problem:
      'target.endpoint: is not a valid URL (check the host name, an IPv6 address\'s [brackets] and the port, 1-65535); use one such as "https://s3.eu-west-1.amazonaws.com"',
  },
  {
    name: 'a target endpoint with an unclosed IPv6 bracket',
    config: { target: { ...s3Target, endpoint: 'http://[::1' } },
    problem: /^target\.endpoint: is not a valid URL \(/,
  },
  {
    name: 'an etcd endpoint that is not a URL',
    config: { etcd: { endpoints: ['http://10.21.1.44:4001x'] } },
    problem: /^etcd\.endpoints\.0: is not a valid URL \(.*"http:\/\/10\.21\.1\.44:4001"$/,
  },
  {
    name: 'a gateway endpoint that is not a URL',
    config: { gateway: { endpoint: 'http://deis store:8888' } },
    problem: /^gateway\.endpoint: is not a valid URL \(/,
  },
  {
    name: 'a webhook url that is not a URL',
    config: { webhook: { url: 'https://hooks.example.com:0x50/deis' } },
    problem: /^webhook\.url: is not a valid URL \(/,
  },
  {
    name: 'signature version 3',
    config: { gateway: { signatureVersion: 'v3' } },
    problem: 'gateway.signatureVersion: must be "v2" (Deis v1, Ceph hammer) or "v4"',
  },
];

/** Whole-file problems: the message names the file and what to do, not a schema path. */
const fileCases: { name: string; text: string | undefined; message: (file: string) => string | RegExp }[] = [
  {
    name: 'invalid JSON',
    text: `{"target": {"type": "dir", "path": "/x",}, "secret": "${SECRET}"`,
    message: (f) =>
      `deis-backup: config ${f}: not valid JSON (line 1, column 41: expected a property name in double quotes); fix the syntax`,
  },
  {
    // Node 20's JSON.parse message quoted the nine characters after the quote: "bad-input".
    name: 'a secret in single quotes, of which no character is shown',
    text: `{"target": {"type": "s3",\n  "secretKey": '${SECRET}'}}`,
    message: (f) =>
      `deis-backup: config ${f}: not valid JSON (line 2, column 16: expected a value (strings take double quotes, not single)); fix the syntax`,
  },
  {
    name: 'a JSON array at the top level',
    text: '[{"target": {"type": "dir", "path": "/x"}}]',
    message: (f) => `deis-backup: config ${f}: must hold a JSON object at the top level`,
  },
  {
    name: 'a JSON string at the top level',
    text: '"/etc/deis-backup/config.json"',
    message: (f) => `deis-backup: config ${f}: must hold a JSON object at the top level`,
  },
  {
    name: 'a file that does not exist',
    text: undefined,
    message: (f) =>
      `deis-backup: config ${f}: not found; pass --config FILE or copy config.example.json to /etc/deis-backup/config.json`,
  },
];

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Writes a config case (the lock key is left to the defaults: none of these gets that far). */
function configFile(config: unknown): string {
  const file = join(tempDir('bad-config'), 'config.json');
  writeFileSync(file, JSON.stringify(config));
  return file;
}

describe('bad config', () => {
  it.each(configCases)('$name: exit 2 and one line', async ({ config, env = {}, problem }) => {
    const file = configFile(config);
    const run = await cli(['config', 'check', '--config', file], env);
    expect(run.code).toBe(2);
    expect(run.out).toBe('');
    expectOneCleanLine(run.err);
    const prefix = `deis-backup: config ${file}: `;
    expect(run.err.startsWith(prefix), run.err).toBe(true);
    const line = run.err.slice(prefix.length);
    if (typeof problem === 'string') expect(line).toBe(problem);
    else expect(line).toMatch(problem);
  });

  it.each(fileCases)('$name: exit 2 and one line', async ({ text, message }) => {
    const file = join(tempDir('bad-config'), 'config.json');
    if (text !== undefined) writeFileSync(file, text);
    const run = await cli(['config', 'check', '--config', file]);
    expect(run.code).toBe(2);
    expectOneCleanLine(run.err);
    const expected = message(file);
    if (typeof expected === 'string') expect(run.err).toBe(expected);
    else expect(run.err).toMatch(expected);
  });

  it('lists several problems one per line, still without a trace or a secret', async () => {
    const file = configFile({
      target: { ...s3Target, bucket: 'Not_A_Bucket' },
      lock: { ttlSeconds: 1 },
      http: { token: 'short-secret' },
    });
    const run = await cli(['config', 'check', '--config', file]);
    expect(run.code).toBe(2);
    expect(run.err.split('\n')).toEqual([
      `deis-backup: config ${file}: 3 problem(s)`,
      expect.stringMatching(/^ {2}- target\.bucket: must be a DNS-style bucket name/) as unknown,
      '  - lock.ttlSeconds: must be at least 3',
      '  - http.token: must be at least 16 characters',
    ]);
    expect(run.err).not.toContain('short-secret');
    expect(run.err).not.toContain(SECRET);
  });

  // The real executable: nothing but the one line reaches stderr, and stdout stays empty.
  it.each([
    { args: ['config', 'check'], config: `{"gateway": {"secretKey": "${SECRET}",}}`, env: {} },
    {
      args: ['backup'],
      config: JSON.stringify({ gateway: { secretkey: SECRET } }),
      env: {},
    },
    {
      args: ['daemon'],
      config: '{}',
      env: { DEIS_BACKUP_HTTP_TOKEN: TOKEN, DEIS_BACKUP_HTTP_TOKEN_FILE: secretFile },
    },
    { args: ['snapshots'], config: JSON.stringify({ http: { token: 'short-secret' } }), env: {} },
    // Every command, not only config check, stops at the config: it used to die in new URL().
    {
      args: ['backup'],
      config: JSON.stringify({ target: { ...s3Target, endpoint: 'http://minio:99999' } }),
      env: {},
    },
    {
      args: ['restore', 'latest'],
      config: JSON.stringify({ target: s3Target }),
      env: { DEIS_BACKUP_TARGET_ACCESS_KEY_FILE: unreadable },
    },
  ])('node dist/bin.js $args: exit 2, one line on stderr', async ({ args, config, env }) => {
    const file = join(tempDir('bad-config'), 'config.json');
    writeFileSync(file, config);
    const run = await runBin([...args, '--config', file], env);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr.endsWith('\n')).toBe(true);
    expectOneCleanLine(run.stderr.slice(0, -1), ['short-secret']);
    expect(run.stderr).toMatch(new RegExp(`^deis-backup: config ${escape(file)}: `));
  });
});

describeWithStack('every source disabled', (stack) => {
  const off = { enabled: false };
  const file = writeConfig({
    etcd: { endpoints: [stack.etcdEndpoint] },
    sources: { buckets: off, volume: { ...off, path: tempDir('off-volume') }, database: off },
    target: { type: 'dir', path: tempDir('off-target') },
    http: { host: '127.0.0.1', port: 0 },
  });
  const refused =
    'sources: every source has enabled false, so a backup would store nothing; set sources.buckets.enabled, sources.volume.enabled or sources.database.enabled to true';

  it('refuses a backup of nothing and a daemon whose schedule would take one, exit 2 and one line', async () => {
    const backup = await runBin(['backup', '--config', file]);
    expect(backup).toEqual({
      code: 2,
      stdout: '',
      stderr: `deis-backup: ${refused}, or name the sources with --only\n`,
    });
    const daemon = await runBin(['daemon', '--config', file]);
    expect(daemon).toEqual({ code: 2, stdout: '', stderr: `deis-backup: ${refused}\n` });
  });

  it('runs every other command, and a backup of the sources --only names', async () => {
    // A config for restoring into a new cluster may have every source off.
    const named = await runBin(['backup', '--only', 'volume', '--config', file]);
    expect(named.code, named.stderr).toBe(0);
    for (const args of [['snapshots'], ['verify', 'latest'], ['config', 'check']]) {
      const run = await runBin([...args, '--config', file]);
      expect(run.code, `${args.join(' ')}: ${run.stderr}`).toBe(0);
    }
    const plan = await runBin(['restore', 'latest', '--only', 'volume', '--dry-run', '--config', file]);
    expect(plan.code, plan.stderr).toBe(0);
    // A bucket the restore point does not hold, in one that holds none.
    const bucket = await runBin([
      'restore',
      'latest',
      '--bucket',
      'db_wal=db_wal_x',
      '--dry-run',
      '--config',
      file,
    ]);
    expect([bucket.code, bucket.stdout]).toEqual([2, '']);
    // After the restore's progress events (JSON lines, since stderr is no terminal here).
    expect(bucket.stderr.trimEnd().split('\n').at(-1)).toBe(
      `deis-backup: --bucket db_wal=… ("buckets" over HTTP): restore point ${named.stdout.trim()} has no bucket db_wal; it holds no buckets`,
    );
  });
});

describeWithStack('bad command lines', (stack) => {
  const file = writeConfig({
    etcd: { endpoints: [stack.etcdEndpoint] },
    sources: {
      buckets: { enabled: false },
      volume: { path: tempDir('volume') },
      database: { enabled: false },
    },
    target: { type: 'dir', path: tempDir('target') },
  });
  const missing = '20200101T000000Z-dead';
  const notFound = `restore point ${missing} not found in dir:`;

  it.each([
    {
      args: ['frobnicate'],
      code: 2,
      line: 'deis-backup: unknown command "frobnicate"; see deis-backup --help',
    },
    {
      args: ['config', 'frob'],
      code: 2,
      line: 'deis-backup: config: unknown subcommand "frob"; use deis-backup config check',
    },
    {
      args: ['config'],
      code: 2,
      line: 'deis-backup: config: name a subcommand; use deis-backup config check',
    },
    {
      args: ['snapshots', 'extra'],
      code: 2,
      line: 'deis-backup: snapshots: unexpected argument "extra"; see deis-backup --help',
    },
    {
      args: ['restore', 'latest', 'extra'],
      code: 2,
      line: 'deis-backup: restore: unexpected argument "extra"; see deis-backup --help',
    },
    {
      args: ['snapshots', '--frob'],
      code: 2,
      line: "deis-backup: Unknown option '--frob'; see deis-backup --help",
    },
    {
      args: ['backup', '--json=yes'],
      code: 2,
      line: "deis-backup: Option '--json' does not take an argument; see deis-backup --help",
    },
    {
      args: ['restore'],
      code: 2,
      line: 'deis-backup: restore: name a restore point id or "latest"; list them with deis-backup snapshots',
    },
    {
      args: ['restore', missing, '--yes'],
      code: 1,
      line: new RegExp(`^deis-backup: ${notFound}.*; list them with deis-backup snapshots$`),
    },
    {
      args: ['verify', missing],
      code: 1,
      line: new RegExp(`^deis-backup: ${notFound}.*; list them with deis-backup snapshots$`),
    },
    {
      args: ['verify', 'latest', '--all'],
      code: 2,
      line: 'deis-backup: verify: name one restore point id, "latest", or pass --all; list them with deis-backup snapshots',
    },
    {
      args: ['verify'],
      code: 2,
      line: 'deis-backup: verify: name one restore point id, "latest", or pass --all; list them with deis-backup snapshots',
    },
    {
      args: ['drill', missing],
      code: 1,
      line: new RegExp(`^deis-backup: ${notFound}.*; list them with deis-backup snapshots$`),
    },
    {
      args: ['backup', '--only', 'volume,teleport'],
      code: 2,
      line: 'deis-backup: --only: unknown source "teleport"; use a comma-separated list of buckets, volume, database',
    },
    // An empty list used to take a backup of nothing and commit it as a success.
    {
      args: ['backup', '--only', ''],
      code: 2,
      line: 'deis-backup: --only: name at least one source; use a comma-separated list of buckets, volume, database, or leave --only out',
    },
    {
      args: ['backup', '--only', ' , '],
      code: 2,
      line: 'deis-backup: --only: name at least one source; use a comma-separated list of buckets, volume, database, or leave --only out',
    },
    {
      args: ['restore', 'latest', '--only', ''],
      code: 2,
      line: 'deis-backup: --only: name at least one step; use a comma-separated list of buckets, volume, database, finish, or leave --only out',
    },
    {
      args: ['restore', 'latest', '--only', 'teleport'],
      code: 2,
      line: 'deis-backup: --only: unknown step "teleport"; use a comma-separated list of buckets, volume, database, finish',
    },
    {
      args: ['backup', '--only', 'finish'],
      code: 2,
      line: 'deis-backup: --only: unknown source "finish"; use a comma-separated list of buckets, volume, database',
    },
    {
      args: ['restore', 'latest', '--bucket', 'db_wal'],
      code: 2,
      line: 'deis-backup: --bucket db_wal: write it as SOURCE=DESTINATION, e.g. --bucket db_wal=db_wal_restored',
    },
    {
      args: ['restore', 'latest', '--bucket', 'DB_WAL=restored'],
      code: 2,
      line: 'deis-backup: --bucket DB_WAL=restored: "DB_WAL" is not a bucket name (lower-case letters, digits, ".", "_" and "-", starting with a letter or digit, 2 to 63 characters)',
    },
    {
      args: ['restore', 'latest', '--bucket', 'db_wal='],
      code: 2,
      line: 'deis-backup: --bucket db_wal=: a bucket name is empty (lower-case letters, digits, ".", "_" and "-", starting with a letter or digit, 2 to 63 characters)',
    },
    {
      args: ['restore', 'latest', '--bucket', `db_wal=${'w'.repeat(64)}`],
      code: 2,
      line: `deis-backup: --bucket db_wal=${'w'.repeat(64)}: "${'w'.repeat(64)}" is not a bucket name (lower-case letters, digits, ".", "_" and "-", starting with a letter or digit, 2 to 63 characters)`,
    },
    {
      args: ['restore', 'latest', '--bucket', 'db_wal=a=b'],
      code: 2,
      line: 'deis-backup: --bucket db_wal=a=b: write it as SOURCE=DESTINATION, e.g. --bucket db_wal=db_wal_restored',
    },
    {
      args: ['restore', 'latest', '--bucket', 'db_wal=a_wal', '--bucket', 'db_wal=b_wal'],
      code: 2,
      line: 'deis-backup: --bucket db_wal=…: given twice; map each bucket once',
    },
    {
      args: ['backup', '--dry-run', '--only', 'volume'],
      code: 2,
      line: 'deis-backup: backup: --dry-run is not an option of backup; see deis-backup --help',
    },
    {
      args: ['snapshots', '--prune'],
      code: 2,
      line: 'deis-backup: snapshots: --prune is not an option of snapshots; see deis-backup --help',
    },
    {
      args: ['drill', '--all'],
      code: 2,
      line: 'deis-backup: drill: --all is not an option of drill; see deis-backup --help',
    },
    {
      args: ['daemon', '--json'],
      code: 2,
      line: 'deis-backup: daemon: --json is not an option of daemon; see deis-backup --help',
    },
    {
      args: ['restore', 'latest', '--only', 'volume', '--bucket', 'db_wal=db_wal_restored'],
      code: 2,
      line: 'deis-backup: --bucket: the restore has no buckets step; add buckets to --only',
    },
    {
      args: ['restore', 'latest', '--only', 'finish', '--volume-to', '/tmp/store'],
      code: 2,
      line: 'deis-backup: --volume-to: the restore has no volume step; add volume to --only',
    },
    {
      args: ['restore', 'latest', '--volume-to', 'relative/store'],
      code: 2,
      line: 'deis-backup: --volume-to relative/store: must be an absolute path',
    },
  ])('$args: exit $code and one line', async ({ args, code, line }) => {
    const run = await cli([...args, '--config', file]);
    expect(run.code).toBe(code);
    expectOneCleanLine(run.err);
    if (typeof line === 'string') expect(run.err).toBe(line);
    else expect(run.err).toMatch(line);
    if (code === 1) expect(run.err).toContain(missing);
  });

  it.each([
    {
      args: ['backup', '--config'],
      line: "deis-backup: Option '--config <value>' argument missing; see deis-backup --help",
    },
    // node:util's own message here runs to three lines; only the first sentence is kept.
    {
      args: ['backup', '--config', '--json'],
      line: "deis-backup: Option '--config' argument is ambiguous; see deis-backup --help",
    },
    {
      args: ['restore', '--config', file],
      line: 'deis-backup: restore: name a restore point id or "latest"; list them with deis-backup snapshots',
    },
  ])('node dist/bin.js $args: exit 2, one line on stderr', async ({ args, line }) => {
    const run = await runBin(args);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toBe(`${line}\n`);
  });
});

describeWithStack('bad HTTP requests', (stack) => {
  let daemon: Daemon;
  const logs: string[] = [];
  const shutdown = new AbortController();

  beforeAll(async () => {
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      sources: {
        buckets: { enabled: false },
        volume: { path: tempDir('volume') },
        database: { enabled: false },
      },
      target: { type: 'dir', path: tempDir('target') },
      http: { host: '127.0.0.1', port: 0, token: TOKEN },
    });
    daemon = await startDaemon(loadConfig({ file, env: {} }), {
      log: createLogger({ level: 'debug' }, { write: (line: string) => logs.push(line) }),
      shutdown: shutdown.signal,
    });
  });
  afterAll(async () => {
    shutdown.abort();
    await daemon.stop();
    for (const line of logs) for (const secret of SECRETS) expect(line).not.toContain(secret);
  });

  const json = { 'content-type': 'application/json' };
  const auth = { authorization: `Bearer ${TOKEN}` };
  const cases: {
    name: string;
    method: string;
    path: string;
    headers?: Record<string, string>;
    body?: string;
    status: number;
    error: string | RegExp;
  }[] = [
    {
      name: 'a body that is not JSON',
      method: 'POST',
      path: '/backups',
      headers: json,
      body: '{"only": [volume]}',
      status: 400,
      error: 'body is not valid JSON; send a JSON object, such as {}',
    },
    {
      // The message for a malformed body is fixed text: it never quotes the body.
      name: 'a body with a secret in single quotes',
      method: 'POST',
      path: '/backups',
      headers: json,
      body: `{"only": ['${TOKEN}']}`,
      status: 400,
      error: 'body is not valid JSON; send a JSON object, such as {}',
    },
    {
      name: 'an empty JSON body',
      method: 'POST',
      path: '/backups',
      headers: json,
      body: '',
      status: 400,
      error: 'body is empty though Content-Type says JSON; send {}, or no Content-Type',
    },
    {
      name: 'a string where a list belongs',
      method: 'POST',
      path: '/backups',
      headers: json,
      body: '{"only": "volume"}',
      status: 400,
      error: 'body.only: must be a list, not a string',
    },
    {
      name: 'an empty list of steps',
      method: 'POST',
      path: '/backups',
      headers: json,
      body: '{"only": []}',
      status: 400,
      error: 'body.only: must list at least 1',
    },
    {
      name: 'an unknown step',
      method: 'POST',
      path: '/backups',
      headers: json,
      body: '{"only": ["teleport"]}',
      status: 400,
      error: 'body.only.0: must be one of "buckets", "volume", "database"',
    },
    {
      name: 'an unknown field',
      method: 'POST',
      path: '/backups',
      headers: json,
      body: `{"token": "${TOKEN}"}`,
      status: 400,
      error: 'body: unknown key(s) "token"',
    },
    {
      name: 'an array body',
      method: 'POST',
      path: '/backups',
      headers: json,
      body: '[]',
      status: 400,
      error: 'body: must be an object, not a list',
    },
    {
      name: 'a JSON null body',
      method: 'POST',
      path: '/drills',
      headers: json,
      body: 'null',
      status: 400,
      error: 'body: must be an object, not null',
    },
    {
      name: 'a restore without a snapshot',
      method: 'POST',
      path: '/restores',
      headers: json,
      body: '{}',
      status: 400,
      error: 'body.snapshot: is required',
    },
    {
      name: 'a snapshot that is no id',
      method: 'POST',
      path: '/restores',
      headers: json,
      body: '{"snapshot": "../../x", "dryRun": true}',
      status: 400,
      error:
        'body.snapshot: must be "latest" or a restore point id such as 20261206T030000Z-1a2b (GET /snapshots lists them)',
    },
    {
      name: 'a numeric snapshot',
      method: 'POST',
      path: '/restores',
      headers: json,
      body: '{"snapshot": 20200101}',
      status: 400,
      error: 'body.snapshot: must be a string, not a number',
    },
    {
      name: 'a relative volumeTo',
      method: 'POST',
      path: '/restores',
      headers: json,
      body: '{"snapshot": "latest", "volumeTo": "store"}',
      status: 400,
      error: 'body.volumeTo: must be an absolute path',
    },
    {
      name: 'a string where a boolean belongs',
      method: 'POST',
      path: '/restores',
      headers: json,
      body: '{"snapshot": "latest", "dryRun": "yes"}',
      status: 400,
      error: 'body.dryRun: must be true or false, not a string',
    },
    {
      name: 'an unknown restore field',
      method: 'POST',
      path: '/restores',
      headers: json,
      body: '{"snapshot": "latest", "force": true}',
      status: 400,
      error: 'body: unknown key(s) "force"',
    },
    {
      name: 'a verification with a body',
      method: 'POST',
      path: '/verifications',
      headers: json,
      body: '{"all": true}',
      status: 400,
      error: 'body: unknown key(s) "all"',
    },
    {
      name: 'a drill with a body',
      method: 'POST',
      path: '/drills',
      headers: json,
      body: '{"snapshot": "latest"}',
      status: 400,
      error: 'body: unknown key(s) "snapshot"',
    },
    {
      name: 'a body over 64 KiB',
      method: 'POST',
      path: '/restores',
      headers: json,
      body: JSON.stringify({ snapshot: 'latest', pad: 'x'.repeat(70 * 1024) }),
      status: 413,
      error: 'request body is larger than 64 KiB',
    },
    {
      name: 'a form body (curl -d without a content type)',
      method: 'POST',
      path: '/backups',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'only=volume',
      status: 415,
      error:
        'content-type application/x-www-form-urlencoded is not accepted; send JSON with Content-Type: application/json',
    },
    {
      name: 'a text/plain body',
      method: 'POST',
      path: '/restores',
      headers: { 'content-type': 'text/plain' },
      body: '{"snapshot": "latest"}',
      status: 415,
      error: 'content-type text/plain is not accepted; send JSON with Content-Type: application/json',
    },
    {
      name: 'an unknown backup',
      method: 'GET',
      path: '/backups/backup-nope',
      status: 404,
      error: 'no backup backup-nope',
    },
    {
      name: 'an unknown restore',
      method: 'GET',
      path: '/restores/restore-nope',
      status: 404,
      error: 'no restore restore-nope',
    },
    {
      name: 'an unknown verification',
      method: 'GET',
      path: '/verifications/verify-nope',
      status: 404,
      error: 'no verify verify-nope',
    },
    {
      name: 'an unknown drill',
      method: 'GET',
      path: '/drills/drill-nope',
      status: 404,
      error: 'no drill drill-nope',
    },
    {
      name: 'cancelling an unknown restore',
      method: 'DELETE',
      path: '/restores/restore-nope',
      status: 404,
      error: 'no restore restore-nope',
    },
    { name: 'an unknown route', method: 'GET', path: '/backup', status: 404, error: 'no route GET /backup' },
    {
      name: 'the wrong method',
      method: 'PUT',
      path: '/backups',
      status: 405,
      error: '/backups does not take PUT; it takes POST',
    },
    {
      name: 'POST to a read-only route',
      method: 'POST',
      path: '/healthz',
      status: 405,
      error: '/healthz does not take POST; it takes GET, HEAD',
    },
    {
      name: 'a path no route has',
      method: 'GET',
      path: '/backup',
      status: 404,
      error: 'no route GET /backup',
    },
  ];

  it.each(cases)(
    '$name: $status with one-line {error}',
    async ({ method, path, headers = {}, body, status, error }) => {
      const res = await fetch(`${daemon.url}${path}`, {
        method,
        headers: { ...auth, ...headers },
        ...(body === undefined ? {} : { body }),
      });
      const text = await res.text();
      expect(res.status, text).toBe(status);
      expect(res.headers.get('content-type')).toMatch(/^application\/json/);
      const parsed = JSON.parse(text) as Record<string, unknown>;
      expect(Object.keys(parsed)).toEqual(['error']);
      const message = String(parsed['error']);
      expectOneCleanLine(message);
      if (typeof error === 'string') expect(message).toBe(error);
      else expect(message).toMatch(error);
      // Nothing was started by a refused request.
      expect(daemon.operations.current()).toBeUndefined();
    },
  );

  it('accepts a restore of an unknown id, then fails it with one line naming the id', async () => {
    const res = await fetch(`${daemon.url}/restores`, {
      method: 'POST',
      headers: { ...auth, ...json },
      body: JSON.stringify({ snapshot: '20200101T000000Z-dead', dryRun: true }),
    });
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as { id: string };
    let view: Record<string, unknown> = {};
    for (let i = 0; i < 100; i++) {
      view = (await (await fetch(`${daemon.url}/restores/${id}`)).json()) as Record<string, unknown>;
      if (view['status'] !== 'running') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(view['status']).toBe('failed');
    const message = String(view['error']);
    expectOneCleanLine(message);
    expect(message).toMatch(
      /^restore point 20200101T000000Z-dead not found in dir:\S+; list them with deis-backup snapshots$/,
    );
  });
});
