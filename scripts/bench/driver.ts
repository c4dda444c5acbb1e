// Benchmark driver (npm run bench): deis-backup against rclone, s3cmd, GNU tar and pg_dumpall | gzip
// on the real test stack. Each measurement runs 3 times; medians go to bench/results.md and stdout.
// Scale: BENCH_SCALE=small (default) or full. Scratch space: BENCH_DIR (default /tmp/deis-backup-bench).
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { S3Client } from '../../src/s3/client.js';
import { gatewayOptions, loadStack, stackDumpCommand, stackSsh } from '../../test/fixtures/stack.js';
import {
  BIG_BUCKET,
  BIG_OBJECT,
  BUCKETS,
  REGISTRY_BUCKET,
  TINY_BUCKET,
  SCALES,
  WAL_BUCKET,
  ensureBuckets,
  dropDatabase,
  ensureDatabase,
  ensureExact,
  ensureVolume,
  planIncrement,
  planTiny,
  putAll,
  removeIncrements,
} from './dataset.js';

const REPS = 3;
/**
 * Pairs of runs of the works whose ratio sits nearest the goal: the first backup of the buckets and
 * the 1 GiB object. Even, so that each side runs first as often as the other (round 13 found the
 * second run of a pair the faster, for either tool). Three runs did not settle a 5-10 % difference.
 */
const PAIRS = 6;
/** Pairs of runs of the restore of the buckets (about a minute a pair), each side first in two. */
const RESTORE_PAIRS = 4;
/** Pairs of runs of the 50,000 tiny objects (over a minute a run), each side first in two. */
const TINY_PAIRS = 4;
const CONCURRENCY = 4;
const MB = 1_000_000;
const RSS_GOAL_MIB = 150 * (MB / (1024 * 1024));

const scaleName = process.env['BENCH_SCALE'] ?? 'small';
if (scaleName !== 'small' && scaleName !== 'full') throw new Error('BENCH_SCALE must be small or full');
const scale = SCALES[scaleName];
const root = process.env['BENCH_DIR'] ?? '/tmp/deis-backup-bench';
const work = join(root, 'work');
// BENCH_ONLY=extras runs only the one-big-object and many-tiny-objects works and prints their table,
// BENCH_ONLY=tuning only the first backup of the buckets at each concurrency and S3 part size (see
// tuning); either leaves bench/results.md alone. Unset, every work runs and the results are written.
const only = process.env['BENCH_ONLY'];
if (only !== undefined && only !== 'extras' && only !== 'tuning') {
  throw new Error('BENCH_ONLY must be extras, tuning or unset');
}
const stack = loadStack();
if (!stack) throw new Error('the test stack is not running; start it with npm run stack:start');
const log = (line: string): void => {
  process.stderr.write(`bench: ${line}\n`);
};

// rclone reads AWS_CA_BUNDLE even for plain http and fails on this machine's value: drop it.
// NODE_EXTRA_CA_CERTS (set here to the 220 KB system bundle) makes Node 20 parse every certificate
// at start, before any JavaScript runs: 35-40 ms of each run, which the image and the fleet unit do
// not pay. It is dropped too, and the start-up rows measure it with the machine's value.
const machineEnv: NodeJS.ProcessEnv = { ...process.env };
delete machineEnv['AWS_CA_BUNDLE'];
const baseEnv: NodeJS.ProcessEnv = { ...machineEnv };
delete baseEnv['NODE_EXTRA_CA_CERTS'];
const rcloneEnv: NodeJS.ProcessEnv = {
  ...baseEnv,
  RCLONE_CONFIG_GW_TYPE: 's3',
  RCLONE_CONFIG_GW_PROVIDER: 'Ceph',
  RCLONE_CONFIG_GW_ENDPOINT: stack.rgwEndpoint,
  RCLONE_CONFIG_GW_ACCESS_KEY_ID: stack.gatewayAccessKey,
  RCLONE_CONFIG_GW_SECRET_ACCESS_KEY: stack.gatewaySecretKey,
  RCLONE_CONFIG_GW_FORCE_PATH_STYLE: 'true',
  RCLONE_CONFIG_GW_ENV_AUTH: 'false',
  // The stack's S3 target bucket, with its own keys (BENCH_ONLY=tuning writes there).
  RCLONE_CONFIG_TGT_TYPE: 's3',
  RCLONE_CONFIG_TGT_PROVIDER: 'Ceph',
  RCLONE_CONFIG_TGT_ENDPOINT: stack.rgwEndpoint,
  RCLONE_CONFIG_TGT_ACCESS_KEY_ID: stack.targetAccessKey,
  RCLONE_CONFIG_TGT_SECRET_ACCESS_KEY: stack.targetSecretKey,
  RCLONE_CONFIG_TGT_FORCE_PATH_STYLE: 'true',
  RCLONE_CONFIG_TGT_ENV_AUTH: 'false',
};
const rgwHost = stack.rgwEndpoint.replace(/^https?:\/\//, '');
const s3cmdArgs = [
  '-c',
  '/dev/null',
  '--no-ssl',
  `--host=${rgwHost}`,
  `--host-bucket=${rgwHost}`,
  '--signature-v2',
  `--access_key=${stack.gatewayAccessKey}`,
  `--secret_key=${stack.gatewaySecretKey}`,
  '--no-progress',
];

interface RunResult {
  seconds: number;
  rssMiB: number;
  /** The run's own CPU seconds, user + system, from time(1). */
  cpu: number;
  /** The machine over the run: the share of its CPU time idle, and in iowait, from /proc/stat. */
  idle: number;
  iowait: number;
  stdout: string;
}

/** The machine's CPU time so far, in ticks: [all, idle, iowait] (/proc/stat). */
function cpuTicks(): [number, number, number] {
  const fields = (readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '').trim().split(/\s+/).slice(1, 9);
  const n = fields.map(Number);
  return [n.reduce((a, b) => a + b, 0), n[3] ?? 0, n[4] ?? 0];
}

/** MemFree, Cached and Dirty in MiB, for the log: the page cache's state before a run. */
function memState(): string {
  const info = readFileSync('/proc/meminfo', 'utf8');
  const mib = (name: string): string =>
    (Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(info)?.[1] ?? Number.NaN) / 1024).toFixed(0);
  return `free ${mib('MemFree')} MiB, cached ${mib('Cached')} MiB, dirty ${mib('Dirty')} MiB`;
}

/** One run's CPU and the machine's idle and iowait, for the log. */
function cpuNote(run: RunResult): string {
  return `cpu ${run.cpu.toFixed(2)} s, idle ${(run.idle * 100).toFixed(0)}%, iowait ${(run.iowait * 100).toFixed(0)}%`;
}

/**
 * Runs argv under /usr/bin/time -f '%e %M'; wall time from hrtime, peak RSS from time. Every run
 * starts with nothing dirty in the page cache: rclone, s3cmd and tar leave their copies unwritten,
 * and the kernel (or our run's own sync of the target's file system) would otherwise write them
 * back on the next run's clock.
 */
async function timed(argv: readonly string[], env: NodeJS.ProcessEnv = baseEnv): Promise<RunResult> {
  const timeFile = join(work, 'time.out');
  spawnSync('sync', { stdio: 'ignore' });
  const ticks = cpuTicks();
  const started = process.hrtime.bigint();
  const child = spawn('/usr/bin/time', ['-f', '%e %M %U %S', '-o', timeFile, ...argv], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const after = cpuTicks();
  const all = after[0] - ticks[0] || 1;
  if (code !== 0) {
    throw new Error(
      `${argv.join(' ')} exited ${String(code)}\n${stderr.slice(-4000)}\n${stdout.slice(-2000)}`,
    );
  }
  const [, rss, user, sys] = (await readFile(timeFile, 'utf8')).trim().split('\n').at(-1)?.split(' ') ?? [];
  return {
    seconds,
    rssMiB: Number(rss) / 1024,
    cpu: Number(user) + Number(sys),
    idle: (after[1] - ticks[1]) / all,
    iowait: (after[2] - ticks[2]) / all,
    stdout,
  };
}

function sh(script: string): string[] {
  return ['bash', '-o', 'pipefail', '-c', script];
}

function output(cmd: string, args: readonly string[]): string {
  const res = spawnSync(cmd, args, { encoding: 'utf8', env: baseEnv });
  return `${res.stdout}${res.stderr}`.trim();
}

/** The middle value; for an even count, the mean of the two middle ones. */
const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  if (s.length % 2 === 1) return s[mid] ?? Number.NaN;
  return ((s[mid - 1] ?? Number.NaN) + (s[mid] ?? Number.NaN)) / 2;
};

/** Runs a pair of works, ours first on even repetitions and theirs first on odd ones. */
async function alternately<A, B>(
  r: number,
  ours: () => Promise<A>,
  theirs: () => Promise<B>,
): Promise<[A, B]> {
  if (r % 2 === 0) {
    const a = await ours();
    return [a, await theirs()];
  }
  const b = await theirs();
  return [await ours(), b];
}

interface Row {
  work: string;
  theirName: string;
  ours: number[];
  theirs: number[];
  rss: number[];
  /** Bytes the work moves (for MB/s). */
  bytes: number;
  /** Ratio goal (ours/theirs), or undefined when only reported. */
  goal: number | undefined;
}

const rows: Row[] = [];

/** Node's flags in the shebang of dist/bin.js, if any: the installed command runs with them. */
const NODE_FLAGS = (readFileSync('dist/bin.js', 'utf8').split('\n', 1)[0] ?? '')
  .split(' ')
  .filter((word) => word.startsWith('--'));

function node(args: readonly string[]): string[] {
  return ['node', ...NODE_FLAGS, 'dist/bin.js', ...args];
}

interface ConfigInput {
  /** The directory target (unless s3 is given). */
  target: string;
  volume?: string;
  buckets?: readonly string[];
  /** `sources.buckets.concurrency` (default CONCURRENCY). */
  concurrency?: number;
  /** An S3 target on the stack's target bucket, under prefix, instead of the directory. */
  s3?: { prefix: string; partSizeMiB: number };
}

async function writeConfig(name: string, input: ConfigInput): Promise<string> {
  if (input.s3 === undefined) await mkdir(input.target, { recursive: true });
  const config = {
    etcd: { endpoints: [stack?.etcdEndpoint] },
    ssh: stack ? stackSsh(stack) : undefined,
    sources: {
      buckets: { names: [...(input.buckets ?? BUCKETS)], concurrency: input.concurrency ?? CONCURRENCY },
      volume: { path: input.volume ?? '/nonexistent', host: 'local' },
      database: { host: 'local', command: stack ? stackDumpCommand(stack) : '' },
    },
    target: input.s3
      ? {
          type: 's3',
          endpoint: stack?.rgwEndpoint,
          bucket: stack?.targetBucket,
          prefix: input.s3.prefix,
          accessKey: stack?.targetAccessKey,
          secretKey: stack?.targetSecretKey,
          partSizeMiB: input.s3.partSizeMiB,
        }
      : { type: 'dir', path: input.target },
  };
  const file = join(work, `${name}.json`);
  await writeFile(file, `${JSON.stringify(config, null, 2)}\n`);
  return file;
}

/** The retention a config without one gets (`retention.keepLast` 7): forget drops one per run past it. */
const DEFAULT_KEEP_LAST = 7;
const RETENTION_FORGETS = 1;

/** Fails unless the run forgot one restore point and then pruned. */
function expectRetention(stdout: string): void {
  const result = JSON.parse(stdout) as { retention?: { forget?: { drop?: unknown[] }; prune?: unknown } };
  const dropped = result.retention?.forget?.drop?.length;
  if (dropped !== RETENTION_FORGETS || result.retention?.prune === undefined) {
    throw new Error(
      `nightly at the retention limit: forgot ${String(dropped)}, pruned: ${String(result.retention?.prune !== undefined)}`,
    );
  }
}

function expectSuccess(stdout: string, what: string): void {
  const result = JSON.parse(stdout) as { status?: string };
  if (result.status !== 'success') throw new Error(`${what}: status ${String(result.status)}\n${stdout}`);
}

/** A timed `backup --only buckets` of ours with the config; fails the bench unless it succeeded. */
async function backupBuckets(config: string, what: string): Promise<RunResult> {
  const run = await timed(node(['backup', '--config', config, '--only', 'buckets', '--json']));
  expectSuccess(run.stdout, what);
  return run;
}

/** Files and bytes under dir (a synced copy of the buckets). */
async function dirStats(dir: string): Promise<{ objects: number; bytes: number }> {
  let objects = 0;
  let bytes = 0;
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    objects++;
    bytes += (await stat(join(entry.parentPath, entry.name))).size;
  }
  return { objects, bytes };
}

async function bucketStats(
  client: S3Client,
  buckets: readonly string[],
): Promise<{ objects: number; bytes: number }> {
  let objects = 0;
  let bytes = 0;
  for (const bucket of buckets) {
    for await (const o of client.listObjects(bucket, {
      signal: AbortSignal.timeout(600_000),
      listVersion: 1,
    })) {
      objects++;
      bytes += o.size;
    }
  }
  return { objects, bytes };
}

/** Fails the bench when a tool's copy does not hold what it should (a fast wrong answer is no answer). */
function check(
  what: string,
  got: { objects: number; bytes: number },
  want: { objects: number; bytes: number },
): void {
  if (got.objects !== want.objects || got.bytes !== want.bytes)
    throw new Error(
      `${what}: ${got.objects} objects / ${got.bytes} bytes, expected ${want.objects} / ${want.bytes}`,
    );
}

/** Removes a bucket of the gateway, or with remote 'tgt' a path in the stack's target bucket. */
async function purge(path: string, remote: 'gw' | 'tgt' = 'gw'): Promise<void> {
  spawnSync('rclone', ['purge', `${remote}:${path}`], { env: rcloneEnv, stdio: 'ignore' });
  await Promise.resolve();
}

/**
 * Frees the space of deleted objects now: radosgw leaves their data to its garbage collector, which
 * waits hours by default, and the memstore OSD would fill up with the purged copies.
 */
function collectGarbage(): void {
  const conf = join(stack?.dir ?? '', 'ceph.conf');
  spawnSync('radosgw-admin', ['-c', conf, '-n', 'client.admin', 'gc', 'process', '--include-all'], {
    stdio: 'ignore',
    timeout: 300_000,
  });
}

/** Seconds `rclone lsf -R` takes to list both benchmark buckets: the bare listing a nightly is held to. */
async function rcloneListing(): Promise<number> {
  let seconds = 0;
  for (const bucket of BUCKETS)
    seconds += (await timed(['rclone', 'lsf', '-R', `gw:${bucket}`], rcloneEnv)).seconds;
  return seconds;
}

/**
 * Seconds `sync -f` takes to put a copy rclone has just written on stable storage. rclone never
 * syncs, and `timed` syncs before each run untimed, so without this its writes to disk are free;
 * ours are not (a backup's blobs are synced before its manifest is written).
 */
function flushSeconds(dir: string): number {
  const started = process.hrtime.bigint();
  const done = spawnSync('sync', ['-f', dir], { stdio: 'ignore' });
  if (done.status !== 0) throw new Error(`sync -f ${dir} exited ${String(done.status)}`);
  return Number(process.hrtime.bigint() - started) / 1e9;
}

/** An informational copy of row, compared with rclone's time plus the sync of its copy. */
function durableRow(row: Row): Row {
  return { ...row, theirName: 'rclone sync, then `sync -f`', ours: [], theirs: [], rss: [], goal: undefined };
}

function rcloneSync(from: string, to: string): string[] {
  return ['rclone', 'sync', from, to, '--transfers', String(CONCURRENCY)];
}

/**
 * The two edge cases of the issue, each against rclone at the same concurrency: a bucket holding one
 * 1 GiB object (first backup) and a bucket holding 50,000 objects of 200 B–2 KiB (first backup, and
 * the nothing-changed nightly against a bare listing). The buckets are written once and reused.
 */
async function extraWorks(gateway: S3Client): Promise<void> {
  // Each bucket is written right before its own works, never during or just before another's:
  // radosgw keeps working for a while after taking 50,000 objects, which slowed the next work.
  let started = Date.now();
  const big = await ensureExact(gateway, BIG_BUCKET, [BIG_OBJECT], log, 1);
  log(`${BIG_BUCKET} ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);

  // One 1 GiB object: fresh directories every repetition, removed at once (the memstore is RAM).
  // This work moves most from run to run, and whichever side runs first after the bucket is
  // written, or after the machine idles, is slowest: one warm-up pair is run and not counted, then
  // PAIRS pairs with the side that goes first alternating.
  const bigRow: Row = {
    work: 'first backup, one 1 GiB object',
    theirName: 'rclone sync',
    ours: [],
    theirs: [],
    rss: [],
    bytes: big.bytes,
    goal: 1.0,
  };
  const bigDurable = durableRow(bigRow);
  const bigOurs = async (r: number): Promise<RunResult> => {
    const target = join(work, `ours-big-${r}`);
    const config = await writeConfig(`big-${r}`, { target, buckets: [BIG_BUCKET] });
    const ours = await backupBuckets(config, 'big-object backup');
    await rm(target, { recursive: true, force: true });
    return ours;
  };
  const bigTheirs = async (r: number): Promise<RunResult & { durable: number }> => {
    const copy = join(work, `rclone-big-${r}`);
    const run = await timed(rcloneSync(`gw:${BIG_BUCKET}`, copy), rcloneEnv);
    const durable = run.seconds + flushSeconds(copy);
    check('rclone copy', await dirStats(copy), big);
    await rm(copy, { recursive: true, force: true });
    return { ...run, durable };
  };
  const [warmOurs, warmTheirs] = await alternately(
    0,
    () => bigOurs(-1),
    () => bigTheirs(-1),
  );
  log(
    `1 GiB object warm-up (not counted): ours ${warmOurs.seconds.toFixed(2)} s, rclone ${warmTheirs.seconds.toFixed(2)} s`,
  );
  // Shown on its own row: a nightly from cron is such a first run.
  const bigWarmUp: Row = {
    ...bigRow,
    work: 'first backup, one 1 GiB object: the warm-up pair alone (one run each, ours first)',
    ours: [warmOurs.seconds],
    theirs: [warmTheirs.seconds],
    rss: [warmOurs.rssMiB],
    goal: undefined,
  };
  for (let r = 0; r < PAIRS; r++) {
    log(`1 GiB object ${r + 1}/${PAIRS}, before: ${memState()}`);
    const [ours, theirs] = await alternately(
      r,
      () => bigOurs(r),
      () => bigTheirs(r),
    );
    log(`1 GiB object ${r + 1}/${PAIRS}: ours ${cpuNote(ours)}; rclone ${cpuNote(theirs)}`);
    for (const row of [bigRow, bigDurable]) {
      row.ours.push(ours.seconds);
      row.rss.push(ours.rssMiB);
    }
    bigRow.theirs.push(theirs.seconds);
    bigDurable.theirs.push(theirs.durable);
    log(
      `1 GiB object ${r + 1}/${PAIRS} (${r % 2 === 0 ? 'ours' : 'rclone'} first): ours ${ours.seconds.toFixed(2)} s, rclone ${theirs.seconds.toFixed(2)} s (${theirs.durable.toFixed(2)} s with its sync)`,
    );
  }
  rows.push(bigRow, bigDurable, bigWarmUp);

  // 50,000 tiny objects: first backup, then the nothing-changed nightly onto the last copy.
  started = Date.now();
  const tiny = await ensureExact(gateway, TINY_BUCKET, planTiny(), log, 16);
  log(`${TINY_BUCKET} ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  const tinyFirst: Row = {
    work: `first backup, ${tiny.objects} tiny objects`,
    theirName: 'rclone sync',
    ours: [],
    theirs: [],
    rss: [],
    bytes: tiny.bytes,
    goal: 1.0,
  };
  let tinyTarget = '';
  for (let r = 0; r < TINY_PAIRS; r++) {
    const target = join(work, `ours-tiny-${r}`);
    const config = await writeConfig(`tiny-${r}`, { target, buckets: [TINY_BUCKET] });
    const copy = join(work, `rclone-tiny-${r}`);
    const [ours, theirs] = await alternately(
      r,
      () => backupBuckets(config, 'tiny-object backup'),
      () => timed(rcloneSync(`gw:${TINY_BUCKET}`, copy), rcloneEnv),
    );
    tinyFirst.ours.push(ours.seconds);
    tinyFirst.rss.push(ours.rssMiB);
    tinyFirst.theirs.push(theirs.seconds);
    check('rclone copy', await dirStats(copy), tiny);
    await rm(copy, { recursive: true, force: true });
    if (r < TINY_PAIRS - 1) await rm(target, { recursive: true, force: true });
    else tinyTarget = target;
    log(
      `${tiny.objects} tiny objects ${r + 1}/${TINY_PAIRS} (${r % 2 === 0 ? 'ours' : 'rclone'} first): ours ${ours.seconds.toFixed(2)} s, rclone ${theirs.seconds.toFixed(2)} s`,
    );
  }
  rows.push(tinyFirst);
  const tinyStill: Row = {
    work: `nightly, nothing changed, ${tiny.objects} tiny objects`,
    theirName: 'rclone lsf -R',
    ours: [],
    theirs: [],
    rss: [],
    bytes: tiny.bytes,
    goal: 1.2,
  };
  const tinyConfig = await writeConfig('tiny-nightly', { target: tinyTarget, buckets: [TINY_BUCKET] });
  for (let r = 0; r < REPS; r++) {
    const ours = await backupBuckets(tinyConfig, 'tiny-object nightly');
    tinyStill.ours.push(ours.seconds);
    tinyStill.rss.push(ours.rssMiB);
    const theirs = await timed(['rclone', 'lsf', '-R', `gw:${TINY_BUCKET}`], rcloneEnv);
    tinyStill.theirs.push(theirs.seconds);
    log(
      `${tiny.objects} tiny objects unchanged ${r + 1}/${REPS}: ours ${ours.seconds.toFixed(2)} s, rclone lsf ${theirs.seconds.toFixed(2)} s`,
    );
  }
  rows.push(tinyStill);
  await rm(tinyTarget, { recursive: true, force: true });
}

/** The settings BENCH_ONLY=tuning tries. */
const TUNING_CONCURRENCIES = [1, 2, 4, 8, 16];
const TUNING_PART_SIZES_MIB = [5, 16, 64];

/**
 * BENCH_ONLY=tuning: the first backup of the buckets at each `sources.buckets.concurrency` into a
 * directory, then at each `target.partSizeMiB` into an S3 target (the stack's target bucket, on
 * the same gateway as the buckets, so both sides share its 2 cores), REPS rounds with the order of
 * the settings rotating from round to round. Prints a table; bench/results.md is left alone.
 */
async function tuning(data: { objects: number; bytes: number }): Promise<void> {
  if (!stack) return;
  const lines = [
    `First backup of the buckets (${data.objects} objects, ${(data.bytes / MB).toFixed(0)} MB), ${REPS} runs per value:`,
    '',
    '| setting | value | median s | MB/s | runs s | peak RSS MiB |',
    '| --- | ---: | ---: | ---: | --- | ---: |',
  ];
  const sweep = async (
    setting: string,
    values: readonly number[],
    run: (value: number, r: number) => Promise<RunResult>,
  ): Promise<void> => {
    const runs = new Map(values.map((v) => [v, { seconds: [] as number[], rss: [] as number[] }]));
    for (let r = 0; r < REPS; r++) {
      for (let i = 0; i < values.length; i++) {
        const value = values[(i + r) % values.length] ?? Number.NaN;
        const result = await run(value, r);
        runs.get(value)?.seconds.push(result.seconds);
        runs.get(value)?.rss.push(result.rssMiB);
        log(`tuning ${setting} ${value} (${r + 1}/${REPS}): ${result.seconds.toFixed(2)} s`);
      }
    }
    for (const [value, { seconds, rss }] of runs) {
      const mid = median(seconds);
      lines.push(
        `| ${setting} | ${value} | ${fmt(mid)} | ${fmt(data.bytes / MB / mid, 1)} | ${seconds.map((x) => fmt(x)).join(' / ')} | ${fmt(Math.max(...rss), 0)} |`,
      );
    }
  };
  await sweep('`sources.buckets.concurrency`, directory target', TUNING_CONCURRENCIES, async (value, r) => {
    const target = join(work, `tuning-c${value}-${r}`);
    const result = await backupBuckets(
      await writeConfig(`tuning-c${value}-${r}`, { target, concurrency: value }),
      'tuning backup',
    );
    await rm(target, { recursive: true, force: true });
    return result;
  });
  await sweep('`target.partSizeMiB`, S3 target', TUNING_PART_SIZES_MIB, async (value, r) => {
    const prefix = `bench-tuning-p${value}-${r}`;
    const config = await writeConfig(`tuning-p${value}-${r}`, {
      target: work,
      s3: { prefix, partSizeMiB: value },
    });
    const result = await backupBuckets(config, 'tuning backup to S3');
    await purge(`${stack.targetBucket}/${prefix}`, 'tgt');
    collectGarbage();
    return result;
  });
  process.stdout.write(`${lines.join('\n')}\n`);
}

async function main(): Promise<void> {
  if (!stack) return;
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  const gateway = new S3Client({ ...gatewayOptions(stack), maxSockets: 8 });
  if (only === 'extras') {
    await extraWorks(gateway);
    gateway.close();
    await report();
    await rm(work, { recursive: true, force: true });
    return;
  }
  const genStart = Date.now();
  const data = await ensureBuckets(gateway, scale, log);
  if (only === 'tuning') {
    gateway.close();
    await tuning(data);
    await rm(work, { recursive: true, force: true });
    return;
  }
  const volumeDir = join(root, `volume-${scale.name}`);
  const volumeBytes = await ensureVolume(root, scale, log);
  ensureDatabase({ host: stack.pgHost, port: stack.pgPort, user: stack.pgUser }, scale, log);
  log(
    `data ready in ${((Date.now() - genStart) / 1000).toFixed(1)} s: ${data.objects} objects, ${(data.bytes / MB).toFixed(1)} MB`,
  );

  // 0. The floor every CLI run pays: node startup plus loading deis-backup (no work at all).
  const startup: Row = {
    work: 'CLI startup only (`--help`)',
    theirName: '`node -e 0`',
    ours: [],
    theirs: [],
    rss: [],
    bytes: Number.NaN,
    goal: undefined,
  };
  for (let r = 0; r < REPS; r++) {
    const ours = await timed(node(['--help']));
    startup.ours.push(ours.seconds);
    startup.rss.push(ours.rssMiB);
    startup.theirs.push((await timed(['node', '-e', '0'])).seconds);
  }
  rows.push(startup);
  const extraCa = machineEnv['NODE_EXTRA_CA_CERTS'];
  if (extraCa !== undefined) {
    const withCa: Row = {
      ...startup,
      work: `${startup.work}, with this machine's NODE_EXTRA_CA_CERTS`,
      ours: [],
      theirs: [],
      rss: [],
    };
    for (let r = 0; r < REPS; r++) {
      const ours = await timed(node(['--help']), machineEnv);
      withCa.ours.push(ours.seconds);
      withCa.rss.push(ours.rssMiB);
      withCa.theirs.push((await timed(['node', '-e', '0'], machineEnv)).seconds);
    }
    rows.push(withCa);
  }

  // 1. First backup of the buckets: fresh directories every repetition.
  const first: Row = {
    work: 'first backup, buckets',
    theirName: 'rclone sync',
    ours: [],
    theirs: [],
    rss: [],
    bytes: data.bytes,
    goal: 1.0,
  };
  const firstS3cmd: Row = {
    ...first,
    theirName: 's3cmd sync',
    ours: [],
    theirs: [],
    rss: [],
    goal: undefined,
  };
  const firstDurable = durableRow(first);
  let oursTarget = '';
  let rcloneCopy = '';
  // Pairs with rclone, alternating which goes first; s3cmd (informational, 16 s a run) after the
  // first REPS pairs only, compared with ours of the same pairs.
  for (let r = 0; r < PAIRS; r++) {
    const target = join(work, `ours-first-${r}`);
    const config = await writeConfig(`first-${r}`, { target });
    const copy = join(work, `rclone-first-${r}`);
    const [ours, theirs] = await alternately(
      r,
      () => backupBuckets(config, 'first backup'),
      async () => {
        let seconds = 0;
        for (const bucket of BUCKETS)
          seconds += (await timed(rcloneSync(`gw:${bucket}`, join(copy, bucket)), rcloneEnv)).seconds;
        return { seconds, durable: seconds + flushSeconds(copy) };
      },
    );
    for (const row of [first, firstDurable]) {
      row.ours.push(ours.seconds);
      row.rss.push(ours.rssMiB);
    }
    first.theirs.push(theirs.seconds);
    firstDurable.theirs.push(theirs.durable);
    check('rclone copy', await dirStats(copy), data);
    let s3cmdLine = '';
    if (r < REPS) {
      const s3copy = join(work, `s3cmd-first-${r}`);
      let t = 0;
      for (const bucket of BUCKETS) {
        await mkdir(join(s3copy, bucket), { recursive: true });
        t += (await timed(['s3cmd', ...s3cmdArgs, 'sync', `s3://${bucket}/`, `${join(s3copy, bucket)}/`]))
          .seconds;
      }
      firstS3cmd.ours.push(ours.seconds);
      firstS3cmd.rss.push(ours.rssMiB);
      firstS3cmd.theirs.push(t);
      check('s3cmd copy', await dirStats(s3copy), data);
      await rm(s3copy, { recursive: true, force: true });
      s3cmdLine = `, s3cmd ${t.toFixed(2)} s`;
    }
    if (r < PAIRS - 1) {
      await rm(target, { recursive: true, force: true });
      await rm(copy, { recursive: true, force: true });
    } else {
      oursTarget = target;
      rcloneCopy = copy;
    }
    log(
      `first backup ${r + 1}/${PAIRS} (${r % 2 === 0 ? 'ours' : 'rclone'} first): ours ${ours.seconds.toFixed(2)} s, rclone ${theirs.seconds.toFixed(2)} s${s3cmdLine}`,
    );
  }
  rows.push(first, firstDurable, firstS3cmd);
  const nightlyConfig = await writeConfig('nightly', { target: oursTarget });

  // 2. Nightly backup with nothing changed vs a bare listing.
  const still: Row = {
    work: 'nightly, nothing changed',
    theirName: 'rclone lsf -R',
    ours: [],
    theirs: [],
    rss: [],
    bytes: data.bytes,
    goal: 1.2,
  };
  const stillS3cmd: Row = { ...still, theirName: 's3cmd ls -r', ours: [], theirs: [], rss: [] };
  for (let r = 0; r < REPS; r++) {
    const ours = await backupBuckets(nightlyConfig, 'nightly backup');
    still.ours.push(ours.seconds);
    still.rss.push(ours.rssMiB);
    stillS3cmd.ours.push(ours.seconds);
    stillS3cmd.rss.push(ours.rssMiB);
    still.theirs.push(await rcloneListing());
    let t = 0;
    for (const bucket of BUCKETS)
      t += (await timed(['s3cmd', ...s3cmdArgs, 'ls', '-r', `s3://${bucket}`])).seconds;
    stillS3cmd.theirs.push(t);
    log(
      `nightly unchanged ${r + 1}/${REPS}: ours ${ours.seconds.toFixed(2)} s, rclone lsf ${still.theirs.at(-1)?.toFixed(2) ?? ''} s, s3cmd ls ${t.toFixed(2)} s`,
    );
  }
  rows.push(still, stillS3cmd);

  // 3. Nightly with 5% new objects: both tools catch up onto their previous copies.
  const incr: Row = {
    work: 'nightly, 5% new objects',
    theirName: 'rclone sync',
    ours: [],
    theirs: [],
    rss: [],
    bytes: 0,
    goal: 1.0,
  };
  const added: number[] = [];
  for (let r = 0; r < REPS; r++) {
    const batch = planIncrement(scale, data.objects, r);
    await putAll(gateway, batch);
    added.push(batch.reduce((a, o) => a + o.size, 0));
    const ours = await backupBuckets(nightlyConfig, 'incremental backup');
    incr.ours.push(ours.seconds);
    incr.rss.push(ours.rssMiB);
    let t = 0;
    for (const bucket of BUCKETS)
      t += (await timed(rcloneSync(`gw:${bucket}`, join(rcloneCopy, bucket)), rcloneEnv)).seconds;
    incr.theirs.push(t);
    log(
      `nightly +${batch.length} objects ${r + 1}/${REPS}: ours ${ours.seconds.toFixed(2)} s, rclone ${t.toFixed(2)} s`,
    );
  }
  incr.bytes = median(added);
  incr.work = `nightly, 5% new objects (+${planIncrement(scale, data.objects, 0).length} objects)`;
  rows.push(incr);

  // 3b. The nothing-changed nightly in the steady state: the target holds as many restore points
  // as the default retention keeps, so each run also forgets the oldest one and prunes.
  const steady: Row = {
    ...still,
    work: `nightly, nothing changed, at the retention limit (forget ${RETENTION_FORGETS} + prune)`,
    ours: [],
    theirs: [],
    rss: [],
    bytes: data.bytes + added.reduce((a, b) => a + b, 0),
  };
  while ((await readdir(join(oursTarget, 'snapshots'))).length < DEFAULT_KEEP_LAST) {
    await backupBuckets(nightlyConfig, 'nightly filling the retention');
  }
  for (let r = 0; r < REPS; r++) {
    const ours = await backupBuckets(nightlyConfig, 'nightly at the retention limit');
    expectRetention(ours.stdout);
    steady.ours.push(ours.seconds);
    steady.rss.push(ours.rssMiB);
    steady.theirs.push(await rcloneListing());
    log(
      `nightly at the retention limit ${r + 1}/${REPS}: ours ${ours.seconds.toFixed(2)} s, rclone lsf ${steady.theirs.at(-1)?.toFixed(2) ?? ''} s`,
    );
  }
  rows.push(steady);

  // 4. Store-volume vs tar czf.
  const volume: Row = {
    work: 'volume',
    theirName: 'tar czf',
    ours: [],
    theirs: [],
    rss: [],
    bytes: volumeBytes,
    goal: 1.0,
  };
  for (let r = 0; r < REPS; r++) {
    const target = join(work, `ours-volume-${r}`);
    const config = await writeConfig(`volume-${r}`, { target, volume: volumeDir });
    const ours = await timed(node(['backup', '--config', config, '--only', 'volume', '--json']));
    expectSuccess(ours.stdout, 'volume backup');
    volume.ours.push(ours.seconds);
    volume.rss.push(ours.rssMiB);
    const tgz = join(work, `volume-${r}.tgz`);
    const tar = await timed(['tar', 'czf', tgz, '-C', volumeDir, '.']);
    volume.theirs.push(tar.seconds);
    await rm(target, { recursive: true, force: true });
    await rm(tgz, { force: true });
    log(`volume ${r + 1}/${REPS}: ours ${ours.seconds.toFixed(2)} s, tar ${tar.seconds.toFixed(2)} s`);
  }
  rows.push(volume);

  // 5. Database vs pg_dumpall | gzip.
  const dumpCommand = stackDumpCommand(stack);
  const dumpBytes = Number(output('bash', ['-o', 'pipefail', '-c', `${dumpCommand} | wc -c`]));
  const database: Row = {
    work: 'database',
    theirName: 'pg_dumpall \\| gzip',
    ours: [],
    theirs: [],
    rss: [],
    bytes: dumpBytes,
    goal: 1.05,
  };
  for (let r = 0; r < REPS; r++) {
    const target = join(work, `ours-db-${r}`);
    const config = await writeConfig(`db-${r}`, { target });
    const ours = await timed(node(['backup', '--config', config, '--only', 'database', '--json']));
    expectSuccess(ours.stdout, 'database backup');
    database.ours.push(ours.seconds);
    database.rss.push(ours.rssMiB);
    const gz = join(work, `db-${r}.sql.gz`);
    const theirs = await timed(sh(`${dumpCommand} | gzip > ${gz}`));
    database.theirs.push(theirs.seconds);
    await rm(target, { recursive: true, force: true });
    await rm(gz, { force: true });
    log(
      `database ${r + 1}/${REPS}: ours ${ours.seconds.toFixed(2)} s, pg_dumpall|gzip ${theirs.seconds.toFixed(2)} s`,
    );
  }
  rows.push(database);
  // The test suite dumps every database of this cluster: benchdb (300 MB at full scale) would
  // swamp it. Creating it again takes seconds.
  dropDatabase({ host: stack.pgHost, port: stack.pgPort, user: stack.pgUser });

  // 6. Restore of the buckets into fresh buckets (both copies now hold the base data plus the increments).
  let restoredBytes = 0;
  for (const bucket of BUCKETS) {
    for await (const o of gateway.listObjects(bucket, {
      signal: AbortSignal.timeout(600_000),
      listVersion: 1,
    }))
      restoredBytes += o.size;
  }
  const restore: Row = {
    work: 'restore, buckets',
    theirName: 'rclone sync',
    ours: [],
    theirs: [],
    rss: [],
    bytes: restoredBytes,
    goal: 1.0,
  };
  const fresh = (tool: string, bucket: string, r: number): string =>
    `${bucket === WAL_BUCKET ? 'bench-wal' : 'bench-reg'}-${tool}-${r}`;
  const want = await bucketStats(gateway, BUCKETS);
  // Each copy is checked and removed before the next restore starts: at full scale the memstore OSD
  // holds the data and one restored copy, not two.
  const checkAndPurge = async (tool: string, r: number): Promise<void> => {
    const copies = BUCKETS.map((b) => fresh(tool, b, r));
    check(`${tool} restore`, await bucketStats(gateway, copies), want);
    for (const bucket of copies) await purge(bucket);
    collectGarbage();
  };
  // Pairs, each side first in half: round 17 ran ours first in all three and got 0.99, 1.07, 0.89.
  for (let r = 0; r < RESTORE_PAIRS; r++) {
    for (const bucket of BUCKETS) {
      await purge(fresh('ours', bucket, r));
      await purge(fresh('rc', bucket, r));
    }
    collectGarbage();
    log(`restore ${r + 1}/${RESTORE_PAIRS}, before: ${memState()}`);
    const [ours, theirs] = await alternately(
      r,
      async () => {
        const run = await timed(
          node([
            'restore',
            'latest',
            '--config',
            nightlyConfig,
            '--only',
            'buckets',
            ...BUCKETS.flatMap((b) => ['--bucket', `${b}=${fresh('ours', b, r)}`]),
            '--yes',
            '--json',
          ]),
        );
        expectSuccess(run.stdout, 'restore');
        await checkAndPurge('ours', r);
        return run;
      },
      async () => {
        let seconds = 0;
        for (const bucket of BUCKETS)
          seconds += (
            await timed(rcloneSync(join(rcloneCopy, bucket), `gw:${fresh('rc', bucket, r)}`), rcloneEnv)
          ).seconds;
        await checkAndPurge('rc', r);
        return seconds;
      },
    );
    restore.ours.push(ours.seconds);
    restore.rss.push(ours.rssMiB);
    restore.theirs.push(theirs);
    log(
      `restore ${r + 1}/${RESTORE_PAIRS} (${r % 2 === 0 ? 'ours' : 'rclone'} first): ours ${ours.seconds.toFixed(2)} s (${cpuNote(ours)}), rclone ${theirs.toFixed(2)} s`,
    );
  }
  rows.push(restore);
  await removeIncrements(gateway);
  await extraWorks(gateway);
  gateway.close();

  await report();
  await rm(work, { recursive: true, force: true });
}

function fmt(n: number, digits = 2): string {
  return Number.isFinite(n) ? n.toFixed(digits) : '—';
}

async function report(): Promise<void> {
  const versions = {
    node: process.version,
    rclone: output('rclone', ['version']).split('\n')[0] ?? '',
    s3cmd: output('s3cmd', ['--version']),
    tar: output('tar', ['--version']).split('\n')[0] ?? '',
    gzip: output('gzip', ['--version']).split('\n')[0] ?? '',
    pg_dumpall: output('pg_dumpall', ['--version']),
  };
  const table = [
    '| work | theirs | ours s | theirs s | ours MB/s | theirs MB/s | ratio | our peak RSS MiB | goal | met? |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |',
  ];
  for (const row of rows) {
    const ours = median(row.ours);
    const theirs = median(row.theirs);
    const rss = Math.max(...row.rss);
    const ratio = ours / theirs;
    const ratioOk = row.goal === undefined || ratio <= row.goal;
    const rssOk = rss <= RSS_GOAL_MIB;
    const goal = `${row.goal === undefined ? 'none (informational)' : `ratio ≤ ${row.goal.toFixed(2)}`}, RSS ≤ 150 MB`;
    const problems = [ratioOk ? '' : 'ratio', rssOk ? '' : 'RSS'].filter(Boolean);
    table.push(
      `| ${row.work} | ${row.theirName} | ${fmt(ours)} | ${fmt(theirs)} | ${fmt(row.bytes / MB / ours, 1)} | ` +
        `${fmt(row.bytes / MB / theirs, 1)} | ${fmt(ratio)} | ${fmt(rss, 0)} | ${goal} | ` +
        `${problems.length === 0 ? 'yes' : `no (${problems.join(', ')})`} |`,
    );
  }
  const raw = rows.map(
    (r) =>
      `- ${r.work} vs ${r.theirName}: ours ${r.ours.map((x) => fmt(x)).join(' / ')} s; ` +
      `theirs ${r.theirs.map((x) => fmt(x)).join(' / ')} s; our RSS ${r.rss.map((x) => fmt(x, 0)).join(' / ')} MiB`,
  );
  const md = [
    '# deis-backup benchmark',
    '',
    `Produced by \`BENCH_SCALE=${scale.name} npm run bench\` (scripts/bench.sh, scripts/bench/driver.ts).`,
    '',
    `- date: ${new Date().toISOString()}`,
    `- machine: ${cpus().length} CPUs (nproc ${output('nproc', [])}), ${(totalmem() / 1024 ** 3).toFixed(1)} GiB memory, kernel ${output('uname', ['-r'])}`,
    `- versions: node ${versions.node}; ${versions.rclone}; ${versions.s3cmd}; ${versions.tar}; ${versions.gzip}; ${versions.pg_dumpall}`,
    `- scale: ${scale.name} — buckets ${WAL_BUCKET} + ${REGISTRY_BUCKET}; store-volume ${scale.volumeFiles} log files, ${(scale.volumeBytes / MB).toFixed(0)} MB; benchdb ${scale.dbRows} rows; plus ${BIG_BUCKET} (one 1 GiB object) and ${TINY_BUCKET} (50,000 objects of 200 B–2 KiB), the same at every scale`,
    `- stack: Ceph radosgw ${stack?.rgwEndpoint ?? ''} (memstore OSD), PostgreSQL 15 on ${stack?.pgPort ?? 0}; targets are local directories`,
    `- method: each work ${REPS} times, ours first, medians; the works nearest their goal in alternating pairs, each side first in half: the first backup of the buckets ${PAIRS} pairs (s3cmd in the first ${REPS}), the 1 GiB object one warm-up pair not counted and then ${PAIRS}, the restore of the buckets ${RESTORE_PAIRS}, the tiny objects' first backup ${TINY_PAIRS}; a median of an even count is the mean of the middle two; wall time from the driver, peak RSS of our process from \`/usr/bin/time -f '%e %M'\` (max over the runs); \`sync\` before every run, untimed, so that no run writes back another's copy;` +
      ` concurrency ${CONCURRENCY} for both us and rclone (\`--transfers ${CONCURRENCY}\`); bucket work sums both buckets (rclone and s3cmd run once per bucket).`,
    `- environment: every run, ours and theirs, without \`NODE_EXTRA_CA_CERTS\` and \`AWS_CA_BUNDLE\`${machineEnv['NODE_EXTRA_CA_CERTS'] === undefined ? '' : ` (this machine sets the first to ${machineEnv['NODE_EXTRA_CA_CERTS']}, which Node parses at every start; the image and the fleet unit set neither; the second start-up row keeps it)`}.`,
    '- MB/s: the bytes the work covers (all bucket data for a first backup, a no-change nightly and a restore; the new objects for the 5% nightly; the uncompressed volume; the uncompressed dump) / median seconds; 1 MB = 10^6 bytes.',
    "- durability: a first backup by us returns once its data is on stable storage (each blob is synced before the index that names it); rclone never syncs, and the untimed `sync` before each run writes its copy out for free. Rows 'rclone sync, then `sync -f`' add the time `sync -f` takes on rclone's copy right after it; they are informational, the goal rows stay the plain rclone time.",
    '- goals: ratio ours/theirs ≤ 1.0 vs rclone and GNU tar, ≤ 1.05 vs pg_dumpall | gzip, nothing-changed nightly ≤ 1.2 × a bare listing; our peak RSS ≤ 150 MB (143 MiB).',
    '',
    ...table,
    '',
    '## Raw runs',
    '',
    ...raw,
    '',
  ].join('\n');
  if (only !== undefined) {
    process.stdout.write(`${[...table, '', ...raw].join('\n')}\n`);
    return;
  }
  await mkdir('bench', { recursive: true });
  // The hand-written "## Before/after" notes (what each fix changed) survive a re-run.
  const previous = await readFile('bench/results.md', 'utf8').catch(() => '');
  const notes = /^## Before\/after[\s\S]*?(?=^## (?!Before\/after)|(?![\s\S]))/m.exec(previous)?.[0];
  await writeFile('bench/results.md', notes ? `${md}\n${notes.trimEnd()}\n` : md);
  process.stdout.write(`${table.join('\n')}\n`);
}

await main();
