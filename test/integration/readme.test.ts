// The README's curl walkthrough of the daemon's HTTP API (the block marked `tested: daemon-curl`),
// run with bash against a daemon started in-process on the real stack, so the docs cannot drift.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { startDaemon } from '../../src/daemon.js';
import { createLogger } from '../../src/log.js';
import { Repository } from '../../src/repository/repository.js';
import { DirTarget } from '../../src/targets/dir.js';
import { seedVolume } from '../fixtures/deis-sample.js';
import { stackDumpCommand, stackSsh } from '../fixtures/stack.js';
import { describeWithStack, tempDir, unique, writeConfig } from './helpers.js';

const MARKER = '<!-- tested: daemon-curl -->';
const TOKEN = `readme-${unique('token')}`;

/** The fenced block right after the marker comment, without its fences. */
function taggedBlock(markdown: string): string {
  const lines = markdown.split('\n');
  const at = lines.indexOf(MARKER);
  if (at < 0) throw new Error(`README.md has no line ${MARKER}`);
  if (lines[at + 1] !== '```sh') throw new Error(`the line after ${MARKER} must open a \`\`\`sh block`);
  const end = lines.indexOf('```', at + 2);
  if (end < 0) throw new Error(`the block after ${MARKER} is not closed`);
  return lines.slice(at + 2, end).join('\n');
}

describeWithStack('README', (stack) => {
  it('runs the curl walkthrough of the HTTP API against a live daemon', async () => {
    const block = taggedBlock(readFileSync(join(import.meta.dirname, '..', '..', 'README.md'), 'utf8'));
    // Only the two documented variables come from outside, and nothing needs jq.
    const outside = new Set(block.match(/\$\{?[A-Z][A-Z0-9_]*/g)?.map((v) => v.replace(/^\$\{?/, '')));
    expect([...outside].sort()).toEqual(['DEIS_BACKUP_TOKEN', 'DEIS_BACKUP_URL']);
    expect(block).not.toMatch(/\bjq\b/);

    const volume = tempDir('volume');
    await seedVolume(volume);
    const target = tempDir('target');
    const file = writeConfig({
      etcd: { endpoints: [stack.etcdEndpoint] },
      ssh: stackSsh(stack),
      sources: {
        buckets: { enabled: false },
        volume: { path: volume },
        database: { host: 'local', command: stackDumpCommand(stack) },
      },
      target: { type: 'dir', path: target },
      http: { host: '127.0.0.1', port: 0, token: TOKEN },
    });
    const shutdown = new AbortController();
    const logs: string[] = [];
    const daemon = await startDaemon(loadConfig({ file, env: {} }), {
      log: createLogger({ level: 'info' }, { write: (line: string) => logs.push(line) }),
      shutdown: shutdown.signal,
    });
    try {
      // Async on purpose: a sync child would block the event loop this daemon's server runs on.
      const { stdout } = await promisify(execFile)('bash', ['-euo', 'pipefail', '-c', block], {
        env: { PATH: process.env['PATH'], DEIS_BACKUP_URL: daemon.url, DEIS_BACKUP_TOKEN: TOKEN },
        timeout: 100_000,
      });
      const [snapshot] = await new Repository(new DirTarget(target)).listSnapshots({
        signal: AbortSignal.timeout(30_000),
      });
      expect(snapshot).toBeDefined();
      expect(stdout).toContain('{"status":"ok"}');
      expect(stdout).toMatch(/^backup backup-\d{8}T\d{6}-[0-9a-f]{6}: success$/m);
      expect(stdout).toContain(`"status":"success","id":"${snapshot?.id ?? '?'}"`);
      expect(stdout).toMatch(/^\{"ready":true,/m);
      expect(stdout).toMatch(/^deis_backup_last_success_timestamp_seconds\{source="all"\} \d+/m);
      expect(stdout).toContain(`[{"id":"${snapshot?.id ?? '?'}"`);
      expect(stdout).toMatch(/^restore restore-\d{8}T\d{6}-[0-9a-f]{6}: success$/m);
      expect(stdout).toContain(`"snapshot":"${snapshot?.id ?? '?'}","dryRun":true`);
      expect(logs.join('\n')).not.toContain(TOKEN);
    } finally {
      shutdown.abort();
      await daemon.stop();
    }
  });
});
