import { defineConfig } from 'vitest/config';

// The test tiers (docs/testing.md): `npm test` runs the core tier, every test not tagged
// `extended`; `npm run test:extended` runs the tagged ones; CI runs both, and the whole suite again
// on llvmpipe (`npm run test:compat`, tier `full`). TESSERA_TEST_TIER = core (default) | extended | full.
const TIERS = { core: ['!extended'], extended: ['extended'], full: undefined } as const;
const tier = (process.env.TESSERA_TEST_TIER || 'core') as keyof typeof TIERS;
if (!(tier in TIERS)) throw new Error(`TESSERA_TEST_TIER=${tier}: expected core, extended or full`);

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/browser/**', 'node_modules/**'],
    // An unhandled promise rejection fails the test it surfaced in (issue 12, class 1).
    setupFiles: ['test/setup/unhandled.ts', 'test/setup/compile-report.ts'],
    // Two workers (this machine's cores), each running its files without module isolation: the GPU
    // device of test/helpers/gpu.ts and its pipeline cache are shared by every file of a worker, so
    // a kernel compiles once per worker (a pipeline costs up to seconds on SwiftShader, and a
    // device compiles inline in Node, see RequestDeviceOptions.compile, so a compiling worker holds
    // one core). Measured on this 2-core machine, quiet: 287 s with two workers, 432 s with one.
    // Test files therefore must not leave global state behind (env, globals, mocks).
    fileParallelism: true,
    maxWorkers: 2,
    isolate: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    tags: [
      {
        name: 'extended',
        description:
          'Outside `npm test`, in `npm run test:extended` (CI runs both): wider matrices, sweeps, long loops, demos at full size.',
      },
    ],
    tagsFilter: TIERS[tier] ? [...TIERS[tier]] : undefined,
  },
});
