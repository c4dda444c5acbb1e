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
 * when there are none. The path comes as bytes, as the directory listing gave them (a name need not
 * be UTF-8), and is compared byte for byte, as tar and find compare in the C locale. A directory that
 * matches is not entered, so nothing below it is tested.
 */
export function excludeMatcher(patterns: readonly string[]): ((path: Buffer) => boolean) | undefined {
  if (patterns.length === 0) return undefined;
  const compiled = patterns.map((p) => Buffer.from(p).toString('latin1').split('/'));
  return (path) => {
    const parts = path.toString('latin1').split('/');
    return compiled.some(
      (p) => p.length === parts.length && p.every((glob, i) => nameMatches(glob, parts[i] ?? '')),
    );
  };
}

/**
 * Whether one name matches a glob whose only wildcard is `*`: the usual scan that, on a mismatch,
 * lets the last `*` take one more character. Time is at most the product of the two lengths, where
 * a regular expression of `[^/]*` runs can take exponential time on a name that does not match.
 */
function nameMatches(glob: string, name: string): boolean {
  let g = 0;
  let n = 0;
  let star = -1;
  let starN = 0;
  while (n < name.length) {
    if (g < glob.length && glob[g] !== '*' && glob[g] === name[n]) {
      g++;
      n++;
    } else if (g < glob.length && glob[g] === '*') {
      star = g++;
      starN = n;
    } else if (star >= 0) {
      g = star + 1;
      n = ++starN;
    } else return false;
  }
  while (g < glob.length && glob[g] === '*') g++;
  return g === glob.length;
}

/**
 * GNU tar options that leave the patterns out of an archive of `.`: names there start with "./",
 * `--anchored` matches from the start, `*` stops at "/", and tar's default `--recursion` takes what
 * is below a matched directory. They apply to the exclusions that follow them: a later
 * `--no-wildcards` makes a later `-X` list literal again (`*` and "/" then mean nothing special).
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
    `\\./${p.split('*').map(escapeEre).join('[^/]*')}`,
  ]);
  return ['(', ...tests, ')'];
}

/** Escapes the characters a POSIX extended regex gives a meaning (? [ ] \ never reach here). */
function escapeEre(text: string): string {
  return text.replace(/[.*+^${}()|]/g, '\\$&');
}
