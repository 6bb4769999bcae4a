import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/browser/**', 'node_modules/**'],
    // An unhandled promise rejection fails the test it surfaced in (issue 12, class 1).
    setupFiles: ['test/setup/unhandled.ts'],
    // One GPU device per file; files run one at a time so the software adapter's two cores are
    // not oversubscribed (SwiftShader already uses every core for one dispatch).
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
  },
});
