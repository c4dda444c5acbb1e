// The Dockerfile's recipe, followed without a Docker engine. Its build stage runs step by step in a
// scratch directory (npm ci, the build, the prune to production dependencies); its runtime stage's
// files are copied as it copies them, and its ENTRYPOINT, CMD and HEALTHCHECK run from there against
// the stack. This shows that nothing at run time needs a development dependency, that Node takes the
// image's flags, that the daemon passes the image's health check and stops on SIGTERM, and that a
// backup taken by the image's command restores. Not reproduced: the base image and its apt-get
// packages (GNU tar, gzip, find, the ssh and psql clients), which this machine has as well.
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { cpSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { seedVolume } from '../fixtures/deis-sample.js';
import { stackDumpCommand } from '../fixtures/stack.js';
import { describeTree, describeWithStack, tempDir, until, writeConfig } from './helpers.js';

const ROOT = join(import.meta.dirname, '..', '..');
/** The image's working directory, which its ENTRYPOINT names. */
const APP = '/app';

/** One instruction of the Dockerfile, continuation lines joined and comments left out. */
interface Instruction {
  keyword: string;
  args: string;
}

/** The Dockerfile's stages, in order, each a list of its instructions after FROM. */
function stages(): Instruction[][] {
  const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
  const lines = text
    .split('\n')
    .filter((line) => !line.trimStart().startsWith('#'))
    .join('\n')
    .replaceAll('\\\n', ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '');
  const result: Instruction[][] = [];
  for (const line of lines) {
    const [keyword = '', ...rest] = line.split(/\s+/);
    const instruction = { keyword: keyword.toUpperCase(), args: rest.join(' ') };
    if (instruction.keyword === 'FROM') result.push([]);
    else result.at(-1)?.push(instruction);
  }
  return result;
}

/** What a stage's COPY names: its sources (in the context, or in another stage) and where they go. */
function copyArgs(args: string): { from: string | undefined; sources: string[]; dest: string } {
  const words = args.split(/\s+/);
  const from = words[0]?.startsWith('--from=') ? words.shift()?.slice('--from='.length) : undefined;
  const dest = words.pop() ?? '';
  return { from, sources: words, dest };
}

/** Copies like COPY: each source into dest, a directory's contents into a directory of that name. */
function copy(sources: string[], fromDir: string, dest: string, into: string): void {
  const target = join(into, dest);
  for (const source of sources) {
    const path = join(fromDir, source.startsWith(`${APP}/`) ? source.slice(APP.length + 1) : source);
    const name = source.replace(/\/$/, '').split('/').pop() ?? '';
    cpSync(path, dest.endsWith('/') && !source.endsWith('/') ? join(target, name) : target, {
      recursive: true,
    });
  }
}

/** The image's runtime directory, built as the Dockerfile builds it, and its run-time settings. */
function buildImage(): {
  app: string;
  env: Record<string, string>;
  entrypoint: string[];
  cmd: string[];
  health: string[];
} {
  const [build = [], runtime = []] = stages();
  const buildDir = tempDir('image-build');
  for (const { keyword, args } of build) {
    if (keyword === 'COPY') {
      const { sources, dest } = copyArgs(args);
      copy(sources, ROOT, dest, buildDir);
    } else if (keyword === 'RUN') {
      const run = spawnSync('/bin/sh', ['-c', args], { cwd: buildDir, encoding: 'utf8', timeout: 600_000 });
      expect(run.status, `RUN ${args}: ${run.stderr}`).toBe(0);
    } else expect(['WORKDIR'], `build stage: ${keyword} ${args}`).toContain(keyword);
  }
  const app = tempDir('image-app');
  const image = {
    app,
    env: {} as Record<string, string>,
    entrypoint: [] as string[],
    cmd: [] as string[],
    health: [] as string[],
  };
  for (const { keyword, args } of runtime) {
    if (keyword === 'COPY') {
      const { from, sources, dest } = copyArgs(args);
      expect(from === undefined || from === 'build', args).toBe(true);
      if (dest.endsWith('/')) mkdirSync(join(app, dest), { recursive: true });
      copy(sources, from === undefined ? ROOT : buildDir, dest, app);
    } else if (keyword === 'ENV') {
      for (const [, name = '', value = ''] of args.matchAll(/(\w+)=(\S+)/g)) image.env[name] = value;
    } else if (keyword === 'ENTRYPOINT') {
      image.entrypoint = (JSON.parse(args) as string[]).map((word) => word.replace(`${APP}/`, `${app}/`));
    } else if (keyword === 'CMD') {
      image.cmd = JSON.parse(args) as string[];
    } else if (keyword === 'HEALTHCHECK') {
      image.health = JSON.parse(args.slice(args.indexOf('CMD ') + 'CMD '.length)) as string[];
    } else
      expect(['RUN', 'WORKDIR', 'USER', 'EXPOSE'], `runtime stage: ${keyword} ${args}`).toContain(keyword);
  }
  return image;
}

/** Runs the image's ENTRYPOINT with `args` and `env` as `docker run` would, from the runtime directory. */
function runImage(
  image: ReturnType<typeof buildImage>,
  args: string[],
  env: Record<string, string> = {},
): { code: number | null; stdout: string; stderr: string } {
  const [command = '', ...flags] = image.entrypoint;
  const run = spawnSync(command, [...flags, ...args], {
    cwd: image.app,
    env: { PATH: process.env['PATH'], ...image.env, ...env },
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { code: run.status, stdout: run.stdout, stderr: run.stderr };
}

describeWithStack("the image's recipe, without Docker", (stack) => {
  it('builds with production dependencies only, backs up and restores, and its daemon passes the health check', async () => {
    const image = buildImage();
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
      dependencies: Record<string, string>;
      devDependencies: Record<string, string>;
    };
    for (const name of Object.keys(pkg.dependencies))
      expect(() => readFileSync(join(image.app, 'node_modules', name, 'package.json')), name).not.toThrow();
    for (const name of Object.keys(pkg.devDependencies))
      expect(() => readFileSync(join(image.app, 'node_modules', name, 'package.json')), name).toThrow();
    expect(image.entrypoint[0]).toBe('node');
    expect(image.cmd).toEqual(['daemon']);

    const volume = tempDir('image-volume');
    await seedVolume(volume);
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      sources: {
        buckets: { enabled: false },
        volume: { path: volume },
        database: { host: 'local', command: stackDumpCommand(stack) },
      },
      target: { type: 'dir', path: tempDir('image-target') },
      schedule: { cron: '0 3 * * *' },
      http: { host: '127.0.0.1' },
    });
    // The image reads its config where DEIS_BACKUP_CONFIG points, a mounted file in a container.
    const env = { DEIS_BACKUP_CONFIG: file };
    const backup = runImage(image, ['backup'], env);
    expect(backup.code, backup.stderr).toBe(0);
    const into = join(tempDir('image-restored'), 'store');
    const restore = runImage(
      image,
      ['restore', backup.stdout.trim(), '--only', 'volume', '--volume-to', into],
      env,
    );
    expect(restore.code, restore.stderr).toBe(0);
    expect(await describeTree(into)).toEqual(await describeTree(volume));

    const [command = '', ...flags] = image.entrypoint;
    const daemon = spawn(command, [...flags, ...image.cmd], {
      cwd: image.app,
      env: { PATH: process.env['PATH'], ...image.env, ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    daemon.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = once(daemon, 'exit') as Promise<[number | null]>;
    try {
      const [health = '', ...healthArgs] = image.health;
      await until('the health check to pass', () => {
        // A daemon that died (a port in use, a module missing) must not pass on another's answer.
        if (daemon.exitCode !== null) throw new Error(`the daemon exited ${daemon.exitCode}: ${stderr}`);
        const check = spawnSync(health, healthArgs, { encoding: 'utf8', timeout: 10_000 });
        return Promise.resolve(check.status === 0 ? true : undefined);
      });
      daemon.kill('SIGTERM');
      const [code] = await exited;
      expect(code, stderr).toBe(0);
    } finally {
      if (daemon.exitCode === null) daemon.kill('SIGKILL');
    }
  }, 600_000);
});
