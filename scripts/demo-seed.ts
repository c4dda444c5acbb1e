// Fills the running test stack with sample Deis data for the demo and prints the config file to use.
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { S3Client } from '../src/s3/client.js';
import { seedDbWal, seedRegistry, seedVolume } from '../test/fixtures/deis-sample.js';
import { gatewayOptions, loadStack, stackDumpCommand, stackSsh } from '../test/fixtures/stack.js';

const dir = process.argv[2] ?? '/tmp/deis-backup-demo';
const stack = loadStack();
if (!stack) throw new Error('the test stack is not running; start it with npm run stack:start');

const gateway = new S3Client(gatewayOptions(stack));
await seedDbWal(gateway, 'db_wal');
await seedRegistry(gateway, 'registry');
gateway.close();

await rm(join(dir, 'store'), { recursive: true, force: true });
await seedVolume(join(dir, 'store'));
await mkdir(join(dir, 'backups'), { recursive: true });
const config = {
  etcd: { endpoints: [stack.etcdEndpoint] },
  ssh: stackSsh(stack),
  sources: {
    volume: { path: join(dir, 'store') },
    database: { command: stackDumpCommand(stack) },
  },
  target: { type: 'dir', path: join(dir, 'backups') },
};
const file = join(dir, 'config.json');
await writeFile(file, `${JSON.stringify(config, null, 2)}\n`);
process.stdout.write(`${file}\n`);
