// sources.volume.exclude: the patterns' rules, and one meaning for the walk here and for GNU find and
// tar on a volume host, checked by running the host's command on a tree of awkward names.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { remoteTarCommand } from '../../../src/sources/volume.js';
import { excludeMatcher, excludeProblem } from '../../../src/sources/volume-exclude.js';

describe('excludeProblem', () => {
  it('takes relative paths with * and names the rule a bad one breaks', () => {
    for (const good of ['logs/deis-store-metadata.log', 'logs/*.log', '*', 'a b/ü*x', 'x+y(1){2}$^|.log'])
      expect(excludeProblem(good), good).toBeUndefined();
    const path = /^must be a path under sources\.volume\.path without a leading or trailing "\/"/;
    for (const bad of ['', '/logs', 'logs/', 'logs//a', './logs', 'logs/../etc', '.', '..'])
      expect(excludeProblem(bad), bad).toMatch(path);
    for (const bad of ['logs/?.log', 'logs/[ab].log', 'logs\\a']) {
      expect(excludeProblem(bad), bad).toMatch(/^may use "\*" as its only wildcard/);
    }
    expect(excludeProblem('logs/a\n.log')).toBe('must not hold control characters');
  });
});

describe('excludeMatcher', () => {
  it('matches whole paths, with * inside one name only', () => {
    const excluded = excludeMatcher(['logs/*.log', 'data/old', 'x.y']);
    if (!excluded) throw new Error('no matcher');
    expect(['logs/a.log', 'logs/.hidden.log', 'logs/.log', 'data/old', 'x.y'].filter(excluded)).toHaveLength(
      5,
    );
    expect(
      ['logs/a.log.1', 'logs/sub/b.log', 'logs', 'data/old2', 'data', 'xzy', 'a/x.y'].some(excluded),
    ).toBe(false);
    expect(excludeMatcher([])).toBeUndefined();
  });
});

describe('the same entries left out here and by GNU find and tar on a volume host', () => {
  const tree = mkdtempSync(join(tmpdir(), 'exclude-'));
  afterAll(() => {
    rmSync(tree, { recursive: true, force: true });
  });
  const files = [
    'logs/a.log',
    'logs/a.log.1',
    'logs/.hidden.log',
    'logs/deis-store-metadata.log',
    'logs/x+y(1){2}.log',
    'logs/$^|.log',
    'logs/space name.log',
    'logs/ü.log',
    'logs/star*.log',
    'logs/sub/b.log',
    'data/keep.txt',
    'data/old/inside.txt',
    'data/old2',
    'deep/a/old/x',
    'deep/a/keep',
  ];
  for (const file of files) {
    mkdirSync(join(tree, file, '..'), { recursive: true });
    writeFileSync(join(tree, file), `${file}\n`);
  }
  execFileSync('mkfifo', [join(tree, 'logs', 'pipe.log'), join(tree, 'data', 'old', 'pipe')]);

  /** What the walk here archives: every entry but FIFOs, not entering what the patterns name. */
  const walked = (patterns: string[]): string[] => {
    const excluded = excludeMatcher(patterns);
    const out: string[] = [];
    const walk = (rel: string) => {
      for (const name of readdirSync(join(tree, rel)).sort()) {
        const path = rel ? `${rel}/${name}` : name;
        if (excluded?.(path)) continue;
        const stats = statSync(join(tree, path));
        if (stats.isFIFO()) continue;
        out.push(path);
        if (stats.isDirectory()) walk(path);
      }
    };
    walk('');
    return out.sort();
  };

  /** What the volume host's command archives, and what it says on stderr. */
  const archivedOnHost = (patterns: string[]): { names: string[]; stderr: string } => {
    const archive = join(tree, '..', `${tree.split('/').pop() ?? ''}.tar.gz`);
    const stderrFile = `${archive}.err`;
    execFileSync(
      'sh',
      ['-c', `${remoteTarCommand('', tree, patterns)} > "$1" 2> "$2"`, 'sh', archive, stderrFile],
      {
        env: { ...process.env, LC_ALL: 'C' },
      },
    );
    const listed = execFileSync('tar', ['-tzf', archive], { encoding: 'utf8' });
    const names = listed
      .split('\n')
      .map((line) => line.replace(/^\.\/?/, '').replace(/\/$/, ''))
      .filter((name) => name !== '');
    const stderr = execFileSync('cat', [stderrFile], { encoding: 'utf8' });
    rmSync(archive);
    rmSync(stderrFile);
    return { names: names.sort(), stderr };
  };

  const cases: [string[], string[]][] = [
    [[], []],
    [
      ['logs/*.log'],
      [
        'logs/a.log',
        'logs/.hidden.log',
        'logs/deis-store-metadata.log',
        'logs/x+y(1){2}.log',
        'logs/$^|.log',
        'logs/space name.log',
        'logs/ü.log',
        'logs/star*.log',
      ],
    ],
    [
      ['logs/x+y(1){2}.log', 'logs/$^|.log', 'data/old'],
      ['logs/x+y(1){2}.log', 'logs/$^|.log', 'data/old'],
    ],
    [['*/old'], ['data/old']],
    [
      ['deep/*/old', 'logs/sub', 'logs/a.log'],
      ['deep/a/old', 'logs/sub', 'logs/a.log'],
    ],
    [['l*s'], ['logs']],
    [['logs/star*.log', '*.txt'], ['logs/star*.log']],
  ];

  it.each(cases)('leaves out what %j names, here and on a host', (patterns, gone) => {
    const everything = walked([]);
    const kept = walked(patterns);
    // The patterns leave out what the case says, and everything below it.
    for (const name of gone) {
      expect(everything).toContain(name);
      expect(kept).not.toContain(name);
    }
    expect(kept.every((name) => everything.includes(name))).toBe(true);
    expect(kept.length < everything.length).toBe(gone.length > 0);
    const host = archivedOnHost(patterns);
    expect(host.names).toEqual(kept);
    // A FIFO is reported as skipped only where nothing leaves it out already.
    const skipped = host.stderr.split('\n').filter((line) => line !== '');
    const fifos = ['logs/pipe.log', 'data/old/pipe'].filter((fifo) => {
      const excluded = excludeMatcher(patterns);
      return !fifo.split('/').some((_, i, parts) => excluded?.(parts.slice(0, i + 1).join('/')));
    });
    expect(skipped.sort()).toEqual(
      fifos.map((f) => `./${f}: not a file, directory or symlink; skipped`).sort(),
    );
  });
});
