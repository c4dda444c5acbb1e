// The config file's schema: every key, its type, its default and the message a bad value gets.
// config.ts reads the file and the environment and validates them against it.
import { isIP } from 'node:net';
import * as v from 'valibot';
import { parseDuration } from './duration.js';
import { COUNT_RULES } from './repository/retention.js';
import { cronProblem, isTimeZone } from './cron.js';
import { strictObject } from './validation.js';
import { excludeProblem } from './sources/volume-exclude.js';

/** The psql command of the Deis database container, reading SQL on stdin. */
export const DEFAULT_LOAD_COMMAND = 'docker exec -i deis-database sudo -u postgres psql -X -q -d postgres';

/** The controller's Django shell, reading the republish snippet on stdin; {etcd} is host:4001. */
export const DEFAULT_CONTROLLER_COMMAND =
  "docker exec -i deis-controller /bin/sh -c 'cd /app && ETCD={etcd} ./manage.py shell'";

/** The pg_dumpall command of the Deis docs, run on the database host. */
export const DEFAULT_DUMP_COMMAND = 'docker exec deis-database sudo -u postgres pg_dumpall';

/** A bucket name Ceph's gateway accepts, with db_wal's `_`: the config, `--bucket` and the API take these. */
export const BUCKET_NAME = /^[a-z0-9][a-z0-9._-]{1,62}$/;

const text = (min = 1) => v.pipe(v.string(), v.minLength(min));
const secretField = v.pipe(
  v.string(),
  v.minLength(1, 'must not be empty'),
  // A line break pasted with a key would reach a request header, and fail there without a name.
  v.regex(/^[^\x00-\x1f\x7f]*$/, 'must not hold control characters (a line break pasted with it?)'),
);
/**
 * An http(s) URL that `new URL()` takes: the shape alone let "http://minio:99999" or "http://[::1"
 * through, and every command then died on it. One check, so a bad value gets one message.
 */
const url = (what: string) =>
  v.pipe(
    v.string(),
    v.check(
      (value) => /^https?:\/\/[^/\s]+/.test(value) && URL.canParse(value),
      (issue) =>
        /^https?:\/\/[^/\s]+/.test(issue.input)
          ? `is not a valid URL (check the host name, an IPv6 address's [brackets] and the port, 1-65535); use one such as ${what}`
          : `must be an http(s) URL such as ${what}`,
    ),
    // Messages and logs name the URLs they used: a password in one would be printed with it.
    v.check(
      (value) => !URL.canParse(value) || new URL(value).username + new URL(value).password === '',
      'must not hold a user name or password (messages and logs show the URL); leave them out',
    ),
  );
const absolutePath = v.pipe(v.string(), v.startsWith('/', 'must be an absolute path'));
const whole = (min: number, max?: number, minMessage?: string, maxMessage?: string) =>
  max === undefined
    ? v.pipe(v.number(), v.integer(), v.minValue(min, minMessage))
    : v.pipe(v.number(), v.integer(), v.minValue(min, minMessage), v.maxValue(max, maxMessage));
/** A timeout in milliseconds: Node's timers take at most 2^31 - 1. */
const timeout = () => whole(1, 2_147_483_647, undefined, 'must be at most 2147483647 (about 24 days)');
const flag = (value: boolean) => v.optional(v.boolean(), value);
/** A section of the file: every key in it optional or defaulted, so a missing section is its defaults. */
const section = <const E extends v.ObjectEntries>(entries: E) =>
  v.optional(strictObject(entries), {} as v.InferInput<v.StrictObjectSchema<E, undefined>>);

const keepCount = v.optional(whole(1, undefined, 'must be at least 1 (leave the rule out to not use it)'));

/** The keep rules of a retention policy, in the order the decision applies them. */
const KEEP_RULES = [...COUNT_RULES, 'keepWithin'] as const;

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

export const schema = strictObject({
  etcd: section({
    endpoints: v.optional(
      v.pipe(v.array(url('"http://10.21.1.44:4001"')), v.minLength(1, 'list at least one etcd endpoint')),
      ['http://127.0.0.1:4001'],
    ),
    timeoutMs: v.optional(timeout(), 5000),
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
    // Left out: the client's own default (DEFAULT_TIMEOUT_MS in s3/client.ts).
    timeoutMs: v.optional(timeout()),
  }),
  ssh: section({
    user: v.optional(text(), 'core'),
    port: v.optional(whole(1, 65535), 22),
    privateKeyFile: v.optional(text(), '/etc/deis-backup/id_ed25519'),
    knownHostsFile: v.optional(text(), '/etc/deis-backup/known_hosts'),
    timeoutMs: v.optional(timeout(), 20000),
  }),
  sources: v.optional(
    strictObject({
      buckets: section({
        enabled: flag(true),
        names: v.optional(
          v.pipe(
            v.array(v.pipe(v.string(), v.regex(BUCKET_NAME, 'is not a bucket name'))),
            v.minLength(1, 'list at least one bucket, or set enabled to false'),
            v.check((names) => new Set(names).size === names.length, 'names a bucket twice'),
          ),
        ),
        concurrency: v.optional(whole(1, 64, undefined, 'must be at most 64'), 4),
      }),
      volume: section({
        enabled: flag(true),
        path: v.optional(absolutePath, '/var/lib/deis/store'),
        host: v.optional(text()),
        exclude: v.optional(
          v.pipe(
            v.array(
              v.pipe(
                v.string(),
                v.check(
                  (pattern) => excludeProblem(pattern) === undefined,
                  (issue) => excludeProblem(issue.input) ?? 'is not valid',
                ),
              ),
            ),
            v.check((patterns) => new Set(patterns).size === patterns.length, 'names a pattern twice'),
          ),
          [],
        ),
        timeoutMs: v.optional(timeout(), 600_000),
      }),
      database: section({
        enabled: flag(true),
        host: v.optional(text()),
        command: v.optional(text(), DEFAULT_DUMP_COMMAND),
        timeoutMs: v.optional(timeout(), 600_000),
      }),
    }),
    {},
  ),
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
          partSizeMiB: v.optional(whole(5, 512), 5),
          timeoutMs: v.optional(timeout(), 120000),
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
    timeoutMs: v.optional(timeout(), 5000),
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
    host: v.optional(
      v.pipe(
        v.string(),
        // A name or an address, not a URL or host:port (the port is http.port).
        v.check(
          (value) => isIP(value) !== 0 || /^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(value),
          'must be an address of this machine (0.0.0.0 for all, 127.0.0.1, ::) or a host name, without a scheme or a port (that is http.port)',
        ),
      ),
      '0.0.0.0',
    ),
    port: v.optional(whole(0, 65535), 9480),
    token: v.optional(v.pipe(v.string(), v.minLength(16, 'must be at least 16 characters'))),
  }),
  log: section({
    level: v.optional(v.picklist(['trace', 'debug', 'info', 'warn', 'error', 'fatal']), 'info'),
  }),
});

/** The config as the schema returns it, before secrets are wrapped and the lock backend resolved. */
export type Parsed = v.InferOutput<typeof schema>;
