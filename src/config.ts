// One schema for the JSON config file plus secret overrides from the environment; parsed once at
// startup into a fully defaulted, deeply readonly Config. Cluster facts left out are found in etcd.
import { readFileSync } from 'node:fs';
import * as v from 'valibot';
import { BackupError } from './errors.js';
import { Secret } from './secret.js';
import { parseDuration } from './duration.js';
import { cronProblem, isTimeZone } from './cron.js';
import { type Problem, strictObject, validate } from './validation.js';

/** Where the config file is looked for when --config is not given. */
export const DEFAULT_CONFIG_PATH = '/etc/deis-backup/config.json';

/** The psql command of the Deis database container, reading SQL on stdin. */
export const DEFAULT_LOAD_COMMAND = 'docker exec -i deis-database sudo -u postgres psql -X -q -d postgres';

/** The controller's Django shell, reading the re-save snippet on stdin; {etcd} is host:4001. */
export const DEFAULT_CONTROLLER_COMMAND =
  "docker exec -i deis-controller /bin/sh -c 'cd /app && ETCD={etcd} ./manage.py shell'";

/** The pg_dumpall command of the Deis docs, run on the database host. */
export const DEFAULT_DUMP_COMMAND = 'docker exec deis-database sudo -u postgres pg_dumpall';

const text = (min = 1) => v.pipe(v.string(), v.minLength(min));
const secretField = v.pipe(v.string(), v.minLength(1, 'must not be empty'));
const url = (what: string) =>
  v.pipe(v.string(), v.regex(/^https?:\/\/[^/\s]+/, `must be an http(s) URL such as ${what}`));
const absolutePath = v.pipe(v.string(), v.startsWith('/', 'must be an absolute path'));
const whole = (min: number, max?: number, minMessage?: string, maxMessage?: string) =>
  max === undefined
    ? v.pipe(v.number(), v.integer(), v.minValue(min, minMessage))
    : v.pipe(v.number(), v.integer(), v.minValue(min, minMessage), v.maxValue(max, maxMessage));
const flag = (value: boolean) => v.optional(v.boolean(), value);
/** A section of the file: every key in it optional or defaulted, so a missing section is its defaults. */
const section = <const E extends v.ObjectEntries>(entries: E) =>
  v.optional(strictObject(entries), {} as v.InferInput<v.StrictObjectSchema<E, undefined>>);

const keepCount = v.optional(whole(1, undefined, 'must be at least 1 (leave the rule out to not use it)'));

/** The keep rules of a retention policy, in the order the decision applies them. */
export const KEEP_RULES = [
  'keepLast',
  'keepHourly',
  'keepDaily',
  'keepWeekly',
  'keepMonthly',
  'keepYearly',
  'keepWithin',
] as const;

/** A schedule section whose `cron` (in `timezone`, else UTC) must fire: the problem lands on `cron`. */
function firing<const E extends v.ObjectEntries>(entries: E) {
  const problem = (value: unknown) => {
    const { cron, timezone } = value as { cron: string; timezone?: string };
    return cronProblem(cron, timezone ?? 'UTC');
  };
  // Every schedule section has a `cron` key, which the generic entries cannot show the compiler.
  const cronPath = ['cron'] as never;
  return v.optional(
    v.pipe(
      strictObject(entries),
      v.forward(
        v.check(
          (value) => problem(value) === undefined,
          (issue) => problem(issue.input) ?? 'is not valid',
        ),
        cronPath,
      ),
    ),
    {} as v.InferInput<v.StrictObjectSchema<E, undefined>>,
  );
}

const schema = strictObject({
  etcd: section({
    endpoints: v.optional(
      v.pipe(v.array(url('"http://10.21.1.44:4001"')), v.minLength(1, 'list at least one etcd endpoint')),
      ['http://127.0.0.1:4001'],
    ),
    timeoutMs: v.optional(whole(1), 5000),
  }),
  gateway: section({
    endpoint: v.optional(
      url('"http://10.21.1.44:8888" (or leave it out to read /deis/store/gateway/host and port from etcd)'),
    ),
    accessKey: v.optional(secretField),
    secretKey: v.optional(secretField),
    signatureVersion: v.optional(
      v.picklist(['v2', 'v4'], 'must be "v2" (Deis v1, Ceph hammer) or "v4"'),
      'v2',
    ),
    region: v.optional(text(), 'us-east-1'),
    listVersion: v.optional(
      v.union([v.literal(1), v.literal(2)], 'must be 1 (ListObjects, what hammer speaks) or 2'),
      1,
    ),
  }),
  ssh: section({
    user: v.optional(text(), 'core'),
    port: v.optional(whole(1, 65535), 22),
    privateKeyFile: v.optional(text(), '/etc/deis-backup/id_ed25519'),
    knownHostsFile: v.optional(text(), '/etc/deis-backup/known_hosts'),
    timeoutMs: v.optional(whole(1), 20000),
  }),
  sources: section({
    buckets: section({
      enabled: flag(true),
      names: v.optional(
        v.pipe(
          v.array(v.pipe(v.string(), v.regex(/^[a-z0-9][a-z0-9._-]{1,62}$/, 'is not a bucket name'))),
          v.minLength(1, 'list at least one bucket, or set enabled to false'),
        ),
      ),
      concurrency: v.optional(whole(1, 64, undefined, 'must be at most 64'), 4),
    }),
    volume: section({
      enabled: flag(true),
      path: v.optional(absolutePath, '/var/lib/deis/store'),
      host: v.optional(text()),
    }),
    database: section({
      enabled: flag(true),
      host: v.optional(text()),
      command: v.optional(text(), DEFAULT_DUMP_COMMAND),
    }),
  }),
  target: v.optional(
    v.variant(
      'type',
      [
        strictObject({
          type: v.literal('s3'),
          endpoint: url('"https://s3.eu-west-1.amazonaws.com"'),
          region: v.optional(text(), 'us-east-1'),
          bucket: v.pipe(
            v.string(),
            v.regex(
              /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/,
              'must be a DNS-style bucket name (lowercase letters, digits, "-" and ".")',
            ),
          ),
          prefix: v.optional(
            v.pipe(
              v.string(),
              v.check((p) => !p.startsWith('/'), 'must not start with "/"'),
            ),
            '',
          ),
          accessKey: secretField,
          secretKey: secretField,
          partSizeMiB: v.optional(whole(5, 512), 16),
        }),
        strictObject({ type: v.literal('dir'), path: absolutePath }),
      ],
      'must have type "s3" or "dir"',
    ),
    { type: 'dir', path: '/var/lib/deis-backup' },
  ),
  restore: section({
    databaseCommand: v.optional(text(), DEFAULT_LOAD_COMMAND),
    deisVersion: v.optional(
      v.pipe(v.string(), v.regex(/^v?\d+\.\d+(\.\d+)?$/, 'must be a Deis version such as "v1.10.1"')),
    ),
    controllerHost: v.optional(text()),
    controllerCommand: v.optional(text(), DEFAULT_CONTROLLER_COMMAND),
  }),
  schedule: firing({
    cron: v.optional(text(), '0 3 * * *'),
    timezone: v.optional(
      v.pipe(
        v.string(),
        v.check(isTimeZone, 'is not an IANA time zone; use a name such as "UTC" or "Europe/Berlin"'),
      ),
      'UTC',
    ),
    runAtStart: flag(false),
    jitterSeconds: v.optional(whole(0, 3600), 0),
  }),
  webhook: section({
    url: v.optional(url('"https://hooks.example.com/deis-backup"')),
    timeoutMs: v.optional(whole(1), 5000),
  }),
  retention: v.optional(
    v.pipe(
      strictObject({
        keepLast: keepCount,
        keepHourly: keepCount,
        keepDaily: keepCount,
        keepWeekly: keepCount,
        keepMonthly: keepCount,
        keepYearly: keepCount,
        keepWithin: v.optional(
          v.pipe(
            v.string(),
            v.check(
              (value) => parseDuration(value) !== undefined,
              'must be a duration such as "30d", "2w", "6m", "1y" or "1y6m"',
            ),
          ),
        ),
        prune: flag(true),
      }),
      v.check(
        (value) => KEEP_RULES.some((rule) => value[rule] !== undefined),
        `set at least one of ${KEEP_RULES.join(', ')}: a policy that keeps nothing is refused`,
      ),
    ),
    { keepLast: 7 },
  ),
  verify: firing({
    enabled: flag(true),
    cron: v.optional(text(), '30 4 * * *'),
    readData: flag(false),
  }),
  drill: firing({
    enabled: flag(false),
    cron: v.optional(text(), '0 5 * * 0'),
    bucketSuffix: v.optional(
      v.pipe(
        v.string(),
        v.regex(/^-[a-z0-9-]{1,20}$/, 'must be "-" and up to 20 of a-z, 0-9, "-", e.g. "-drill"'),
      ),
      '-drill',
    ),
    directory: v.optional(absolutePath, '/var/lib/deis-backup-drill'),
  }),
  lock: section({
    backend: v.optional(
      v.picklist(
        ['auto', 'etcd', 'target'],
        'must be "etcd", "target" or "auto" (etcd when etcd.endpoints or ETCD is set)',
      ),
      'auto',
    ),
    key: v.optional(
      v.pipe(v.string(), v.regex(/^\/[^\s]+$/, 'must be an etcd key such as "/deis/backup/lock"')),
      '/deis/backup/lock',
    ),
    ttlSeconds: v.optional(whole(3, 3600, 'must be at least 3'), 60),
    waitSeconds: v.optional(whole(0, 86_400), 0),
  }),
  http: section({
    host: v.optional(text(), '0.0.0.0'),
    port: v.optional(whole(0, 65535), 9480),
    token: v.optional(v.pipe(v.string(), v.minLength(16, 'must be at least 16 characters'))),
  }),
  log: section({
    level: v.optional(v.picklist(['trace', 'debug', 'info', 'warn', 'error', 'fatal']), 'info'),
  }),
});

type Parsed = v.InferOutput<typeof schema>;
type DeepReadonly<T> = T extends Secret
  ? T
  : T extends readonly (infer U)[]
    ? readonly DeepReadonly<U>[]
    : T extends object
      ? { readonly [K in keyof T]: DeepReadonly<T[K]> }
      : T;
type WithSecrets<T> = {
  [K in keyof T]: K extends 'accessKey' | 'secretKey' | 'token'
    ? T[K] extends string
      ? Secret
      : T[K] extends string | undefined
        ? Secret | undefined
        : T[K]
    : T[K] extends object
      ? WithSecrets<T[K]>
      : T[K];
};

/** The resolved configuration: every default applied, credentials wrapped in Secret. */
export type Config = DeepReadonly<
  Omit<WithSecrets<Parsed>, 'target' | 'lock'> & { target: TargetConfig; lock: LockConfig }
>;
/** Where the one-runner lock lives, "auto" resolved at load time. */
export type LockConfig = Omit<Parsed['lock'], 'backend'> & { backend: 'etcd' | 'target' };
/** Where restore points are stored. */
export type TargetConfig =
  | (WithSecrets<Extract<Parsed['target'], { type: 's3' }>> & { type: 's3' })
  | Extract<Parsed['target'], { type: 'dir' }>;

/** Environment variables that override secrets; each also has a `<NAME>_FILE` form. */
export const SECRET_ENV = {
  DEIS_BACKUP_GATEWAY_ACCESS_KEY: ['gateway', 'accessKey'],
  DEIS_BACKUP_GATEWAY_SECRET_KEY: ['gateway', 'secretKey'],
  DEIS_BACKUP_TARGET_ACCESS_KEY: ['target', 'accessKey'],
  DEIS_BACKUP_TARGET_SECRET_KEY: ['target', 'secretKey'],
  DEIS_BACKUP_HTTP_TOKEN: ['http', 'token'],
} as const;

/** Reads the config file (if any) and the environment, validates, and returns the Config. */
export function loadConfig(opts: { file: string; env: NodeJS.ProcessEnv; required?: boolean }): Config {
  const raw = readConfigFile(opts.file, opts.required ?? true);
  const problems: string[] = [];
  for (const [name, path] of Object.entries(SECRET_ENV)) {
    const value = readSecretEnv(name, opts.env, problems);
    if (value === undefined) continue;
    const [section, field] = path;
    const existing = raw[section];
    // Target keys only mean something for an S3 target; a dir target has none to override.
    if (section === 'target' && (existing as { type?: unknown } | undefined)?.type !== 's3') continue;
    if (existing !== undefined && (typeof existing !== 'object' || existing === null)) continue;
    raw[section] = { ...existing, [field]: value };
  }
  // The Deis unit idiom passes the host's etcd as ETCD=host:4001; it stands in for etcd.endpoints.
  const etcdEnv = opts.env['ETCD'];
  const etcdSection = raw['etcd'] as { endpoints?: unknown } | undefined;
  if (etcdEnv !== undefined && etcdEnv !== '' && etcdSection?.endpoints === undefined) {
    const endpoint = /^https?:\/\//.test(etcdEnv) ? etcdEnv : `http://${etcdEnv}`;
    raw['etcd'] = { ...(typeof etcdSection === 'object' ? etcdSection : {}), endpoints: [endpoint] };
  }
  const result = validate(schema, raw);
  if (!result.ok) problems.push(...result.problems.map(describeProblem));
  if (problems.length > 0 || !result.ok) {
    throw new ConfigError(opts.file, problems);
  }
  const data = result.value;
  // "auto": the cluster's etcd holds the lock when the operator pointed us at one.
  const etcdGiven = (raw['etcd'] as { endpoints?: unknown } | undefined)?.endpoints !== undefined;
  const lock = {
    ...data.lock,
    backend: data.lock.backend === 'auto' ? (etcdGiven ? 'etcd' : 'target') : data.lock.backend,
  };
  return wrapSecrets({ ...data, lock }) as Config;
}

/** A config with problems; `problems` holds one line per problem, each naming the path and the fix. */
export class ConfigError extends BackupError {
  readonly file: string;
  readonly problems: readonly string[];
  constructor(file: string, problems: readonly string[]) {
    // One problem fits on one line; several get a count and one indented line each.
    super(
      'ERR_CONFIG',
      problems.length === 1
        ? `config ${file}: ${problems[0] ?? ''}`
        : `config ${file}: ${problems.length} problem(s)\n${problems.map((p) => `  - ${p}`).join('\n')}`,
    );
    this.file = file;
    this.problems = problems;
  }
}

function readConfigFile(file: string, required: boolean): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !required) return {};
    const why = code === 'ENOENT' ? 'not found' : `cannot be read (${code ?? 'error'})`;
    throw new BackupError(
      'ERR_CONFIG',
      `config ${file}: ${why}; pass --config FILE or copy config.example.json to ${DEFAULT_CONFIG_PATH}`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new BackupError(
      'ERR_CONFIG',
      `config ${file}: not valid JSON (${(err as Error).message}); fix the syntax`,
    );
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new BackupError('ERR_CONFIG', `config ${file}: must hold a JSON object at the top level`);
  }
  return parsed as Record<string, unknown>;
}

function readSecretEnv(name: string, env: NodeJS.ProcessEnv, problems: string[]): string | undefined {
  const direct = env[name];
  const file = env[`${name}_FILE`];
  if (direct !== undefined && file !== undefined) {
    problems.push(`${name} and ${name}_FILE are both set: keep one`);
    return undefined;
  }
  if (direct !== undefined) return direct;
  if (file === undefined) return undefined;
  try {
    return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    problems.push(
      `${name}_FILE: cannot read ${file} (${code}); point it at a readable file holding the secret`,
    );
    return undefined;
  }
}

function describeProblem(problem: Problem): string {
  const path = problem.path || '(top level)';
  switch (problem.kind) {
    case 'unknown':
      return `${problem.path === '' ? '' : `${path}: `}unknown key(s) ${problem.keys.map((k) => `"${k}"`).join(', ')}; remove them or check the spelling against config.example.json`;
    case 'missing':
      return `${path}: is required; add it (see config.example.json)`;
    case 'invalid':
      return `${path}: ${problem.message}`;
  }
}

function wrapSecrets(value: unknown, key?: string): unknown {
  if ((key === 'accessKey' || key === 'secretKey' || key === 'token') && typeof value === 'string')
    return new Secret(value);
  if (Array.isArray(value)) return value.map((v) => wrapSecrets(v));
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, wrapSecrets(v, k)]));
  }
  return value;
}

/** The config as printed by `config check`: secrets shown as **redacted**, set or not. */
export function redactedView(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value)) as unknown;
}
