// The shipped Prometheus alerting rules: promtool accepts them and their unit tests pass. Needs
// promtool (Debian package prometheus); fails instead of skipping when the stack is required.
import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');
const installed = spawnSync('promtool', ['--version'], { stdio: 'ignore' }).error === undefined;
const required = process.env['DEIS_BACKUP_STACK_REQUIRED'] === '1' || process.env['CI'] === 'true';

/** promtool's output for a successful run; anything else (or a missing promtool) throws. */
function promtool(...args: string[]): string {
  if (!installed) {
    throw new Error('promtool is not installed (required here): run scripts/stack/install.sh as root');
  }
  try {
    return execFileSync('promtool', args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    // promtool prints what failed (the rule, the unexpected alerts) on stdout: show it.
    const { stdout, stderr } = err as { stdout?: string; stderr?: string };
    throw new Error(`promtool ${args.join(' ')} failed:\n${stdout ?? ''}${stderr ?? ''}`, { cause: err });
  }
}

describe.skipIf(!installed && !required)('prometheus rules', () => {
  it('deploy/prometheus/alerts.yml passes promtool check rules', () => {
    const out = promtool('check', 'rules', 'deploy/prometheus/alerts.yml');
    expect(out).toContain('SUCCESS: 9 rules found');
  });

  it('the alerts fire, and stay quiet, as deploy/prometheus/alerts.test.yml expects', () => {
    const out = promtool('test', 'rules', 'deploy/prometheus/alerts.test.yml');
    expect(out).toContain('SUCCESS');
  });
});
