// Two projects: unit (no network, pure logic) and integration (real radosgw, PostgreSQL, sshd, etcd).
import { defineConfig } from 'vitest/config';

/** Removes the temporary directories each test file made once it ends. */
const TEMP_DIRS = './test/remove-temp-dirs.ts';

export default defineConfig({
  test: {
    projects: [
      { test: { name: 'unit', include: ['test/unit/**/*.test.ts'], setupFiles: [TEMP_DIRS] } },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          setupFiles: [TEMP_DIRS],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          // Files share one radosgw and PostgreSQL; each uses its own buckets, prefixes and databases.
          fileParallelism: false,
        },
      },
    ],
  },
});
