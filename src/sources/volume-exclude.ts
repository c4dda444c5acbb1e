// sources.volume.exclude: paths under the volume's root that its archive leaves out, with `*` for any
// run of characters inside one name. One meaning for the walk here and for GNU find and tar on a
// volume host (in the C locale), so both ways of reading a volume leave out the same entries: a
// pattern names a whole path, and an excluded directory takes everything below it.

/** An example for messages and docs. */
const EXAMPLE = '"logs/deis-store-metadata.log" or "logs/*.log"';

/** Why `pattern` cannot be an exclude pattern, or undefined when it can. */
export function excludeProblem(pattern: string): string | undefined {
  if (/[\x00-\x1f\x7f]/.test(pattern)) return 'must not hold control characters';
  // tar and find give ? [ ] and \ meanings that a name here could not share byte for byte.
  if (/[?[\]\\]/.test(pattern))
    return `may use "*" as its only wildcard (not ?, [ ] or \\), such as ${EXAMPLE}`;
  if (pattern.split('/').some((part) => part === '' || part === '.' || part === '..'))
    return `must be a path under sources.volume.path without a leading or trailing "/", "//", "." or "..", such as ${EXAMPLE}`;
  return undefined;
}

/**
 * Tests a path relative to the root, without "./" (`logs/app.log`), against the patterns; undefined
 * when there are none. A directory that matches is not entered, so nothing below it is tested.
 */
export function excludeMatcher(patterns: readonly string[]): ((path: string) => boolean) | undefined {
  if (patterns.length === 0) return undefined;
  const any = new RegExp(`^(?:${patterns.map((p) => wildcardsAs(p, '[^/]*', escapeJs)).join('|')})$`);
  return (path) => any.test(path);
}

/**
 * GNU tar options that leave the patterns out of an archive of `.`: names there start with "./",
 * `--anchored` matches from the start, `*` stops at "/", and tar's default `--recursion` takes what
 * is below a matched directory. Options after these are not affected: `--no-wildcards` and
 * `--no-anchored` reset them for a later `-X`.
 */
export function tarExcludeOptions(patterns: readonly string[]): string[] {
  if (patterns.length === 0) return [];
  return [
    '--anchored',
    '--wildcards',
    '--no-wildcards-match-slash',
    ...patterns.map((p) => `--exclude=./${p}`),
  ];
}

/**
 * A GNU find expression (POSIX extended regex, whole path) true for an entry a pattern names, for
 * `-prune`: find then neither reports nor enters what tar leaves out.
 */
export function findExcludeTests(patterns: readonly string[]): string[] {
  const tests = patterns.flatMap((p, i) => [
    ...(i > 0 ? ['-o'] : []),
    '-regex',
    `\\./${wildcardsAs(p, '[^/]*', escapeEre)}`,
  ]);
  return ['(', ...tests, ')'];
}

function wildcardsAs(pattern: string, star: string, escape: (text: string) => string): string {
  return pattern.split('*').map(escape).join(star);
}

function escapeJs(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Escapes the characters a POSIX extended regex gives a meaning (? [ ] \ never reach here). */
function escapeEre(text: string): string {
  return text.replace(/[.*+^${}()|]/g, '\\$&');
}
