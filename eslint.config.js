// Lint gate: typescript-eslint strict type-checked rules; floating promises matter in a daemon.
// Layer rules (STYLE.md, in the spirit of restic's depguard) as no-restricted-imports per folder:
// storage and transport know nothing of what is stored, the repository knows only the Target
// interface, sources know nothing of targets, and nothing imports the entry points.
import tseslint from 'typescript-eslint';

/** Imports only entry points may make: the CLI, the daemon and its HTTP API. */
const ENTRY = ['**/cli.js', '**/cli/*', '**/daemon.js', '**/daemon/*', '**/http/*'];
/** What orchestrates runs: only the entry points and each other use these. */
const RUNS = [
  '**/backup.js',
  '**/restore.js',
  '**/restore/*',
  '**/drill.js',
  '**/drill/*',
  '**/jobs.js',
  '**/wiring.js',
];

/** A no-restricted-imports rule naming the layer and why. */
const layer = (files, groups, why) => ({
  files,
  rules: { 'no-restricted-imports': ['error', { patterns: [{ group: groups, message: why }] }] },
});

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'eslint.config.js'] },
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
    },
  },
  layer(
    ['src/**/*.ts'],
    ENTRY,
    'only the entry points (bin.ts, cli, daemon) import the CLI, the daemon and the HTTP API',
  ),
  layer(
    ['src/targets/**/*.ts', 'src/s3/**/*.ts', 'src/lock/**/*.ts'],
    [...ENTRY, ...RUNS, '**/repository/*', '**/sources/*'],
    'storage, S3 and lock code knows nothing of restore points, sources or runs',
  ),
  layer(
    ['src/repository/**/*.ts'],
    [...ENTRY, ...RUNS, '**/sources/*', '**/lock/*', '**/targets/*', '!**/targets/target.js'],
    'the repository uses the Target interface only, never a concrete target, a source or a run',
  ),
  layer(
    ['src/sources/**/*.ts'],
    [...ENTRY, ...RUNS, '**/targets/*', '**/lock/*'],
    'sources write through the repository, never to a target, and know nothing of runs',
  ),
  // The entry points themselves, and the runs they compose.
  {
    files: ['src/cli.ts', 'src/cli/**/*.ts', 'src/daemon.ts', 'src/daemon/**/*.ts', 'src/bin.ts'],
    rules: { 'no-restricted-imports': 'off' },
  },
);
