import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/browser/**', 'node_modules/**'],
    // An unhandled promise rejection fails the test it surfaced in (issue 12, class 1).
    setupFiles: ['test/setup/unhandled.ts', 'test/setup/compile-report.ts'],
    // Files run one at a time so the software adapter's cores are not oversubscribed (SwiftShader
    // already uses every core for one dispatch), all in one worker without module isolation: the
    // GPU device of test/helpers/gpu.ts and its pipeline cache are shared by every file, so each
    // kernel compiles once per run (a dense pipeline costs seconds to compile on SwiftShader).
    // Test files therefore must not leave global state behind (env, globals, mocks).
    fileParallelism: false,
    isolate: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
  },
});
