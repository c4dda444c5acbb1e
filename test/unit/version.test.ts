// `deis-backup --version`, and the version the manifests and metrics carry.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { main } from '../../src/cli.js';
import { TOOL, VERSION } from '../../src/tool.js';

async function run(argv: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(
    argv,
    {},
    { out: (l) => out.push(l), err: (l) => err.push(l) },
    new AbortController().signal,
  );
  return { code, out, err };
}

describe('version', () => {
  it('is the version of package.json', () => {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      version: string;
    };
    expect(VERSION).toBe(pkg.version);
    expect(TOOL).toBe(`deis-backup ${pkg.version}`);
  });

  it('is printed by --version, with exit 0 and no config read', async () => {
    expect(await run(['--version'])).toEqual({ code: 0, out: [TOOL], err: [] });
    expect(await run(['--version', '--config', '/nonexistent/config.json'])).toEqual({
      code: 0,
      out: [TOOL],
      err: [],
    });
  });

  it('is not a command option: with a command it is refused', async () => {
    const { code, out, err } = await run(['snapshots', '--version']);
    expect(code).toBe(2);
    expect(out).toEqual([]);
    expect(err).toEqual([
      'deis-backup: snapshots: --version is not an option of snapshots; see deis-backup --help',
    ]);
  });

  it('is listed by --help', async () => {
    const { code, out } = await run(['--help']);
    expect(code).toBe(0);
    expect(out.join('\n')).toContain('deis-backup --version');
  });
});
