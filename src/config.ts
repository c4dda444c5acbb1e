// The JSON config file plus secret overrides from the environment, validated against one schema
// (config-schema.ts) once at startup into a fully defaulted, deeply readonly Config. Cluster facts
// left out are found in etcd.
import { readFileSync } from 'node:fs';
import { BackupError } from './errors.js';
import { schema, type Parsed } from './config-schema.js';
import { findJsonSyntaxError } from './json-syntax.js';
import { Secret } from './secret.js';
import { type Problem, validate } from './validation.js';

export { DEFAULT_CONTROLLER_COMMAND, DEFAULT_DUMP_COMMAND, DEFAULT_LOAD_COMMAND } from './config-schema.js';

/** Where the config file is looked for when --config is not given. */
export const DEFAULT_CONFIG_PATH = '/etc/deis-backup/config.json';

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
  const raw = readConfigFile(opts.file, opts.required ?? true, opts.env['DEIS_BACKUP_CONFIG'] === opts.file);
  const problems: string[] = [];
  /** Config path → the environment variable that set it, to name in a problem with its value. */
  const fromEnv = new Map<string, string>();
  for (const [name, path] of Object.entries(SECRET_ENV)) {
    const value = readSecretEnv(name, opts.env, problems);
    if (value === undefined) continue;
    fromEnv.set(path.join('.'), opts.env[`${name}_FILE`] === undefined ? name : `${name}_FILE`);
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
  const etcdFromEnv = etcdEnv !== undefined && etcdEnv !== '' && etcdSection?.endpoints === undefined;
  if (etcdFromEnv) {
    const endpoint = /^https?:\/\//.test(etcdEnv) ? etcdEnv : `http://${etcdEnv}`;
    raw['etcd'] = { ...(typeof etcdSection === 'object' ? etcdSection : {}), endpoints: [endpoint] };
  }
  const result = validate(schema, raw);
  if (!result.ok) {
    // A bad ETCD is the environment's fault: name the variable, not the config path it filled.
    // So is a bad secret from DEIS_BACKUP_*: the file may not even have the key.
    const named = result.problems.map((p) => {
      const variable = p.kind === 'invalid' ? fromEnv.get(p.path) : undefined;
      if (variable !== undefined && p.kind === 'invalid')
        return `environment variable ${variable} (for ${p.path}): ${p.message}`;
      return etcdFromEnv && p.path === 'etcd.endpoints.0' && p.kind === 'invalid'
        ? `environment variable ETCD: ${p.message.replace(/; use one such as .*$/, '')}; set it to host:port, as in ETCD=10.21.1.44:4001`
        : describeProblem(p);
    });
    problems.push(...named);
  }
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

function readConfigFile(file: string, required: boolean, fromEnv: boolean): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !required) return {};
    const why = code === 'ENOENT' ? 'not found' : `cannot be read (${code ?? 'error'})`;
    throw new BackupError(
      'ERR_CONFIG',
      fromEnv
        ? `config ${file}: ${why}; DEIS_BACKUP_CONFIG names it: point the variable at the config file, or pass --config FILE`
        : `config ${file}: ${why}; pass --config FILE or copy config.example.json to ${DEFAULT_CONFIG_PATH}`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    // Never the parser's message: on Node 20 it quotes the text around the error, which may be a secret.
    const at = findJsonSyntaxError(text);
    const where = at === undefined ? 'a syntax error' : `line ${at.line}, column ${at.column}: ${at.reason}`;
    throw new BackupError('ERR_CONFIG', `config ${file}: not valid JSON (${where}); fix the syntax`);
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
