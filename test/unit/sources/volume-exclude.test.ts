// sources.volume.exclude: the patterns' rules, and how the walk here matches them. That GNU find and
// tar on a volume host leave out the same entries is tested in volume-host-tar.test.ts.
import { describe, expect, it } from 'vitest';
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
  const matcher = (patterns: string[]) => {
    const excluded = excludeMatcher(patterns);
    if (!excluded) throw new Error('no matcher');
    return (path: string | Buffer) => excluded(typeof path === 'string' ? Buffer.from(path) : path);
  };

  it('matches whole paths, with * inside one name only', () => {
    const excluded = matcher(['logs/*.log', 'data/old', 'x.y', 'a*b*c', '*']);
    for (const path of [
      'logs/a.log',
      'logs/.hidden.log',
      'logs/.log',
      'data/old',
      'x.y',
      'abc',
      'a-b-c',
      'top',
    ])
      expect(excluded(path), path).toBe(true);
    for (const path of ['logs/a.log.1', 'logs/sub/b.log', 'data/old2', 'a/x.y', 'a/b/c', 'logs/x.lo'])
      expect(excluded(path), path).toBe(false);
    expect(excludeMatcher([])).toBeUndefined();
  });

  it('takes regular expression characters literally', () => {
    const excluded = matcher(['logs/x+y(1){2}.log', 'logs/$^|.log']);
    expect(excluded('logs/x+y(1){2}.log')).toBe(true);
    expect(excluded('logs/$^|.log')).toBe(true);
    expect(excluded('logs/xxy(1){2}.log')).toBe(false);
    expect(excluded('logs/x+y(1){2}xlog')).toBe(false);
  });

  it('compares bytes, as tar and find do in the C locale: names that are not UTF-8, newlines, ü', () => {
    const excluded = matcher(['logs/*.log', 'ü*']);
    expect(
      excluded(Buffer.concat([Buffer.from('logs/'), Buffer.from([0xff, 0xfe]), Buffer.from('.log')])),
    ).toBe(true);
    expect(excluded('logs/new\nline.log')).toBe(true);
    expect(excluded('ü-ß')).toBe(true);
    expect(excluded(Buffer.from([0xc3]))).toBe(false);
  });

  it('answers at once for many stars against a long name that does not match', () => {
    // A regular expression of [^/]* runs backtracks for as long as the universe on this pair.
    const excluded = matcher(['*a*a*a*a*a*a*a*a*a*a*b', 'logs/*-*-*-*-*.log']);
    expect(excluded('a'.repeat(250))).toBe(false);
    expect(excluded(`logs/${'-'.repeat(240)}.lo`)).toBe(false);
    expect(excluded(`${'a'.repeat(250)}b`)).toBe(true);
  });
});
