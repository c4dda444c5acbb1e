#!/usr/bin/env node
// The `deis-backup` executable: wires process signals and streams to the CLI. A first SIGINT or
// SIGTERM aborts the run cleanly (no restore point is committed); a second one exits at once.
// No V8 flags here: any flag costs about 20 ms at start (Node then compiles its built-in modules
// without their code cache). A first backup ran about 165 full mark-compacts on V8's default heap
// only while pino, fastify or another large module was loaded (the heap it left sat just where
// V8 starts marking at once); the commands load neither, and ran about 50. The daemon does load
// them: the image's ENTRYPOINT starts Node with heap flags of its own (see the Dockerfile).
import { main } from './cli.js';
import { BackupError } from './errors.js';

const controller = new AbortController();
let signals = 0;
const onSignal = (): void => {
  signals++;
  if (signals > 1) process.exit(130);
  controller.abort(new BackupError('ERR_ABORTED', 'interrupted'));
};
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

const code = await main(
  process.argv.slice(2),
  process.env,
  {
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
    progress: process.stderr,
    log: process.stdout,
  },
  controller.signal,
);
process.exitCode = code;
// Whatever still holds the event loop (a socket the abort did not close), shutdown stays bounded.
setTimeout(() => process.exit(code), 5000).unref();
