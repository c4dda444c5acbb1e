// The commands that only look: snapshots and config check.
import { shownCommand } from '../command.js';
import { resolveBucketNames, resolveDatabaseHost, resolveGateway } from '../cluster.js';
import { loadConfig, redactedView, type Config } from '../config.js';
import { BackupError, describeError } from '../errors.js';
import { formatSnapshots, snapshotSummary } from '../format.js';
import { createClusterEtcd, createRepository } from '../wiring.js';
import { EXIT, type Io } from './common.js';
export async function snapshotsCommand(
  config: Config,
  json: boolean,
  io: Io,
  signal: AbortSignal,
): Promise<number> {
  const { snapshots: manifests, unreadable } = await (await createRepository(config)).scan({ signal });
  for (const bad of unreadable) io.err(`warning: restore point ${bad.id} is not usable: ${bad.error}`);
  if (json) {
    io.out(JSON.stringify(manifests.map(snapshotSummary), null, 2));
  } else {
    for (const line of formatSnapshots(manifests)) io.out(line);
  }
  return EXIT.success;
}

/** What config check resolves from the cluster, by its key in `resolved`. */
const CHECKED: Record<string, string> = {
  gateway: 'the gateway',
  buckets: 'the bucket names',
  databaseHost: 'the database host',
};

export async function configCheckCommand(
  file: string,
  env: NodeJS.ProcessEnv,
  io: Io,
  signal: AbortSignal,
): Promise<number> {
  const config = loadConfig({ file, env });
  const etcd = createClusterEtcd(config);
  const problems: string[] = [];
  const cluster: Record<string, unknown> = {};
  // Once etcd has not answered, what else would be read there is named once rather than failed again.
  let etcdDown = false;
  const unchecked: string[] = [];
  const attempt = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
    if (etcdDown) {
      unchecked.push(CHECKED[what] ?? what);
      return;
    }
    try {
      cluster[what] = await fn();
    } catch (err) {
      problems.push(describeError(err));
      etcdDown = err instanceof BackupError && err.code === 'ERR_ETCD';
    }
  };
  if (config.sources.buckets.enabled) {
    await attempt('gateway', () => resolveGateway(config, etcd, { signal }));
    await attempt('buckets', () => resolveBucketNames(config, etcd, { signal }));
  }
  if (config.sources.database.enabled)
    await attempt('databaseHost', () => resolveDatabaseHost(config, etcd, { signal }));
  if (unchecked.length > 0) problems.push(`${unchecked.join(' and ')}: not checked, as etcd did not answer`);
  const view = { file, config: redactedView(config), resolved: redactedView(cluster) };
  // A password written into a command line is shown as *** too.
  const shown = view.config as {
    sources: { database: { command: string } };
    restore: { databaseCommand: string; controllerCommand: string };
  };
  shown.sources.database.command = shownCommand(shown.sources.database.command);
  shown.restore.databaseCommand = shownCommand(shown.restore.databaseCommand);
  shown.restore.controllerCommand = shownCommand(shown.restore.controllerCommand);
  io.out(JSON.stringify(view, null, 2));
  if (problems.length > 0) {
    io.err(`deis-backup: config ${file}: ${problems.length} problem(s)`);
    for (const p of problems) io.err(`  - ${p}`);
    return EXIT.usage;
  }
  io.err(`config ${file}: ok`);
  return EXIT.success;
}
