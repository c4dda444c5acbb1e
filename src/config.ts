// One schema for the JSON config file plus secret overrides from the environment; parsed once at
// startup into a fully defaulted, deeply readonly Config. Cluster facts left out are found in etcd.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { z } from 'zod';
import { BackupError } from './errors.js';
import { Secret } from './secret.js';
import { parseDuration } from './duration.js';

/** Where the config file is looked for when --config is not given. */
export const DEFAULT_CONFIG_PATH = '/etc/deis-backup/config.json';

/** The psql command of the Deis database container, reading SQL on stdin. */
export const DEFAULT_LOAD_COMMAND = 'docker exec -i deis-database sudo -u postgres psql -X -q -d postgres';

/** The controller's Django shell, reading the re-save snippet on stdin; {etcd} is host:4001. */
export const DEFAULT_CONTROLLER_COMMAND =
  "docker exec -i deis-controller /bin/sh -c 'cd /app && ETCD={etcd} ./manage.py shell'";

/** The pg_dumpall command of the Deis docs, run on the database host. */
export const DEFAULT_DUMP_COMMAND = 'docker exec deis-database sudo -u postgres pg_dumpall';

const secretField = z.string().min(1, { error: 'must not be empty' });
const url = (what: string) =>
  z.string().refine((v) => /^https?:\/\/[^/\s]+/.test(v), {
    error: `must be an http(s) URL such as ${what}`,
  });

const keepCount = z.number().int().min(1, { error: 'must be at least 1 (leave the rule out to not use it)' });

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

function cronRefinement(value: { cron: string; timezone?: string }, ctx: z.core.$RefinementCtx): void {
  const problem = cronProblem(value.cron, value.timezone ?? 'UTC');
  if (problem) ctx.addIssue({ code: 'custom', path: ['cron'], message: problem });
}

const schema = z
  .object({
    etcd: z
      .object({
        endpoints: z
          .array(url('"http://10.21.1.44:4001"'))
          .min(1, { error: 'list at least one etcd endpoint' })
          .default(['http://127.0.0.1:4001']),
        timeoutMs: z.number().int().positive().default(5000),
      })
      .strict()
      .prefault({}),
    gateway: z
      .object({
        endpoint: url(
          '"http://10.21.1.44:8888" (or leave it out to read /deis/store/gateway/host and port from etcd)',
        ).optional(),
        accessKey: secretField.optional(),
        secretKey: secretField.optional(),
        signatureVersion: z
          .enum(['v2', 'v4'], { error: 'must be "v2" (Deis v1, Ceph hammer) or "v4"' })
          .default('v2'),
        region: z.string().min(1).default('us-east-1'),
        listVersion: z
          .union([z.literal(1), z.literal(2)], { error: 'must be 1 (ListObjects, what hammer speaks) or 2' })
          .default(1),
      })
      .strict()
      .prefault({}),
    ssh: z
      .object({
        user: z.string().min(1).default('core'),
        port: z.number().int().min(1).max(65535).default(22),
        privateKeyFile: z.string().min(1).default('/etc/deis-backup/id_ed25519'),
        knownHostsFile: z.string().min(1).default('/etc/deis-backup/known_hosts'),
        timeoutMs: z.number().int().positive().default(20000),
      })
      .strict()
      .prefault({}),
    sources: z
      .object({
        buckets: z
          .object({
            enabled: z.boolean().default(true),
            names: z
              .array(z.string().regex(/^[a-z0-9][a-z0-9._-]{1,62}$/, { error: 'is not a bucket name' }))
              .min(1, { error: 'list at least one bucket, or set enabled to false' })
              .optional(),
            concurrency: z.number().int().min(1).max(64, { error: 'must be at most 64' }).default(4),
          })
          .strict()
          .prefault({}),
        volume: z
          .object({
            enabled: z.boolean().default(true),
            path: z
              .string()
              .startsWith('/', { error: 'must be an absolute path' })
              .default('/var/lib/deis/store'),
            host: z.string().min(1).optional(),
          })
          .strict()
          .prefault({}),
        database: z
          .object({
            enabled: z.boolean().default(true),
            host: z.string().min(1).optional(),
            command: z.string().min(1).default(DEFAULT_DUMP_COMMAND),
          })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    target: z
      .discriminatedUnion(
        'type',
        [
          z
            .object({
              type: z.literal('s3'),
              endpoint: url('"https://s3.eu-west-1.amazonaws.com"'),
              region: z.string().min(1).default('us-east-1'),
              bucket: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, {
                error: 'must be a DNS-style bucket name (lowercase letters, digits, "-" and ".")',
              }),
              prefix: z
                .string()
                .default('')
                .refine((p) => !p.startsWith('/'), { error: 'must not start with "/"' }),
              accessKey: secretField,
              secretKey: secretField,
              partSizeMiB: z.number().int().min(5).max(512).default(16),
            })
            .strict(),
          z
            .object({
              type: z.literal('dir'),
              path: z.string().startsWith('/', { error: 'must be an absolute path' }),
            })
            .strict(),
        ],
        { error: 'must have type "s3" or "dir"' },
      )
      .default({ type: 'dir', path: '/var/lib/deis-backup' }),
    restore: z
      .object({
        databaseCommand: z.string().min(1).default(DEFAULT_LOAD_COMMAND),
        deisVersion: z
          .string()
          .regex(/^v?\d+\.\d+(\.\d+)?$/, { error: 'must be a Deis version such as "v1.10.1"' })
          .optional(),
        controllerHost: z.string().min(1).optional(),
        controllerCommand: z.string().min(1).default(DEFAULT_CONTROLLER_COMMAND),
      })
      .strict()
      .prefault({}),
    schedule: z
      .object({
        cron: z.string().min(1).default('0 3 * * *'),
        timezone: z
          .string()
          .refine(isTimeZone, {
            error: 'is not an IANA time zone; use a name such as "UTC" or "Europe/Berlin"',
          })
          .default('UTC'),
        runAtStart: z.boolean().default(false),
        jitterSeconds: z.number().int().min(0).max(3600).default(0),
      })
      .strict()
      .superRefine(cronRefinement)
      .prefault({}),
    webhook: z
      .object({
        url: url('"https://hooks.example.com/deis-backup"').optional(),
        timeoutMs: z.number().int().positive().default(5000),
      })
      .strict()
      .prefault({}),
    retention: z
      .object({
        keepLast: keepCount.optional(),
        keepHourly: keepCount.optional(),
        keepDaily: keepCount.optional(),
        keepWeekly: keepCount.optional(),
        keepMonthly: keepCount.optional(),
        keepYearly: keepCount.optional(),
        keepWithin: z
          .string()
          .refine((v) => parseDuration(v) !== undefined, {
            error: 'must be a duration such as "30d", "2w", "6m", "1y" or "1y6m"',
          })
          .optional(),
        prune: z.boolean().default(true),
      })
      .strict()
      .refine((value) => KEEP_RULES.some((rule) => value[rule] !== undefined), {
        error: `set at least one of ${KEEP_RULES.join(', ')}: a policy that keeps nothing is refused`,
      })
      .prefault({ keepLast: 7 }),
    verify: z
      .object({
        enabled: z.boolean().default(true),
        cron: z.string().min(1).default('30 4 * * *'),
        readData: z.boolean().default(false),
      })
      .strict()
      .superRefine(cronRefinement)
      .prefault({}),
    drill: z
      .object({
        enabled: z.boolean().default(false),
        cron: z.string().min(1).default('0 5 * * 0'),
        bucketSuffix: z
          .string()
          .regex(/^-[a-z0-9-]{1,20}$/, { error: 'must be "-" and up to 20 of a-z, 0-9, "-", e.g. "-drill"' })
          .default('-drill'),
        directory: z
          .string()
          .startsWith('/', { error: 'must be an absolute path' })
          .default('/var/lib/deis-backup-drill'),
      })
      .strict()
      .superRefine(cronRefinement)
      .prefault({}),
    lock: z
      .object({
        backend: z
          .enum(['auto', 'etcd', 'target'], {
            error: 'must be "etcd", "target" or "auto" (etcd when etcd.endpoints or ETCD is set)',
          })
          .default('auto'),
        key: z
          .string()
          .regex(/^\/[^\s]+$/, { error: 'must be an etcd key such as "/deis/backup/lock"' })
          .default('/deis/backup/lock'),
        ttlSeconds: z.number().int().min(3, { error: 'must be at least 3' }).max(3600).default(60),
        waitSeconds: z.number().int().min(0).max(86_400).default(0),
      })
      .strict()
      .prefault({}),
    http: z
      .object({
        host: z.string().min(1).default('0.0.0.0'),
        port: z.number().int().min(0).max(65535).default(9480),
        token: z.string().min(16, { error: 'must be at least 16 characters' }).optional(),
      })
      .strict()
      .prefault({}),
    log: z
      .object({ level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info') })
      .strict()
      .prefault({}),
  })
  .strict();

type Parsed = z.output<typeof schema>;
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
  const result = schema.safeParse(raw);
  if (!result.success) {
    for (const issue of result.error.issues) problems.push(formatIssue(issue));
  }
  if (problems.length > 0 || !result.success) {
    throw new ConfigError(opts.file, problems);
  }
  const data = result.data;
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

function formatIssue(issue: z.core.$ZodIssue): string {
  const path = issue.path.map(String).join('.') || '(top level)';
  if (issue.code === 'unrecognized_keys') {
    return `${path === '(top level)' ? '' : `${path}: `}unknown key(s) ${issue.keys.map((k) => `"${k}"`).join(', ')}; remove them or check the spelling against config.example.json`;
  }
  if (issue.code === 'invalid_type' && issue.message.endsWith('received undefined')) {
    return `${path}: is required; add it (see config.example.json)`;
  }
  return `${path}: ${issue.message}`;
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

function isTimeZone(zone: string): boolean {
  // ECMA-402 requires "UTC" everywhere; the first DateTimeFormat costs about 20 ms (ICU set-up),
  // which the default time zone need not pay on every start.
  if (zone === 'UTC') return true;
  try {
    new Intl.DateTimeFormat('en', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

/** Why a cron expression cannot drive the schedule (invalid, or never fires), or undefined. */
export function cronProblem(cron: string, timezone: string): string | undefined {
  if (plainCronFires(cron)) return undefined;
  // node-cron costs about 25 ms to load and 7 ms to check: only expressions the plain check above
  // does not settle pay for it. Loaded synchronously (its CommonJS build) because zod's refinements
  // are synchronous.
  const { validateDetailed, createTask } = createRequire(import.meta.url)(
    'node-cron',
  ) as typeof import('node-cron');
  const detail = validateDetailed(cron);
  if (!detail.valid) {
    const why = detail.errors.map((e) => `${e.field}: ${e.message}`).join('; ');
    return `"${cron}" is not a cron expression that ever fires (${why || 'invalid'}); write e.g. "0 3 * * *" for 03:00 daily`;
  }
  if (!isTimeZone(timezone)) return undefined;
  const task = createTask(cron, () => undefined, { timezone });
  const next = task.getNextRuns(1)[0];
  void task.destroy();
  return next ? undefined : `"${cron}" never fires; write e.g. "0 3 * * *" for 03:00 daily`;
}

/** Inclusive ranges of the five cron fields: minute, hour, day of month, month, day of week. */
const CRON_RANGES = [
  [0, 59],
  [0, 23],
  [1, 31],
  [1, 12],
  [0, 6],
] as const;

/**
 * True for the common shape that is valid and fires in any time zone: five fields, each `*` or one
 * in-range number, a day of month that every month named has (no day-and-month pair like 30 2), and
 * no weekday next to a day or month. Anything else (lists, ranges, steps, names, seconds) returns false and goes to node-cron.
 */
function plainCronFires(cron: string): boolean {
  const fields = cron.trim().split(/\s+/);
  if (fields.length !== CRON_RANGES.length) return false;
  const values: (number | undefined)[] = [];
  for (const [i, field] of fields.entries()) {
    if (field === '*') {
      values.push(undefined);
      continue;
    }
    if (!/^(0|[1-9][0-9]?)$/.test(field)) return false;
    const value = Number(field);
    const [lo, hi] = CRON_RANGES[i] ?? [0, -1];
    if (value < lo || value > hi) return false;
    values.push(value);
  }
  const [, , day, month, weekday] = values;
  // A weekday together with a day or month is rare enough to leave to node-cron's search.
  if (weekday !== undefined && (day !== undefined || month !== undefined)) return false;
  return day === undefined || month === undefined || day <= 28;
}
