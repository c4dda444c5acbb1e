#!/usr/bin/env -S node --initial-old-space-size=64
// The `deis-backup` executable: wires process signals and streams to the CLI. A first SIGINT or
// SIGTERM aborts the run cleanly (no restore point is committed); a second one exits at once.
// --initial-old-space-size=64 (also in the Dockerfile's ENTRYPOINT): with V8's default, a heap of
// about 8 MB and the socket buffers of bucket bodies awaiting collection kept crossing V8's limit,
// and a first backup of 1,900 registry objects ran about 100 full mark-compacts (user CPU 4.4 s
// against 3.0 s with the flag, wall time 6.9 against 6.1 s); peak RSS stays the same.
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
