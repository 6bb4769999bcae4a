import { defineConfig } from 'vitest/config';
import { BrowserFirstSequencer } from './test/setup/sequencer.js';

// The test tiers (docs/development.md): `npm test` runs the core tier, every test not tagged
// `extended`; `npm run test:extended` runs the tagged ones; CI runs both, and both again on
// llvmpipe (`npm run test:compat`, tier `full`). TESSERA_TEST_TIER = core (default) | extended | full.
const TIERS = { core: ['!extended'], extended: ['extended'], full: undefined } as const;
const tier = (process.env.TESSERA_TEST_TIER || 'core') as keyof typeof TIERS;
if (!(tier in TIERS)) throw new Error(`TESSERA_TEST_TIER=${tier}: expected core, extended or full`);

export default defineConfig({
  test: {
    // Two workers (this machine's cores) shared by both projects: the browser files run beside the
    // Node files instead of after them.
    fileParallelism: true,
    maxWorkers: 2,
    pool: 'forks',
    sequence: { sequencer: BrowserFirstSequencer },
    tags: [
      {
        name: 'extended',
        description:
          'Outside `npm test`, in `npm run test:extended` (CI runs both): wider matrices, sweeps, long loops, demos at full size.',
      },
    ],
    tagsFilter: TIERS[tier] ? [...TIERS[tier]] : undefined,
    projects: [
      {
        extends: true,
        test: {
          name: 'node',
          include: ['test/**/*.test.ts'],
          exclude: ['test/browser/**', 'node_modules/**'],
          // An unhandled promise rejection fails the test it surfaced in (issue 12, class 1).
          setupFiles: ['test/setup/unhandled.ts', 'test/setup/compile-report.ts'],
          // Each worker runs its files without module isolation: the GPU device of
          // test/helpers/gpu.ts and its pipeline cache are shared by every file of a worker, so a
          // kernel compiles once per worker (a pipeline costs up to seconds on SwiftShader, and a
          // device compiles inline in Node, see RequestDeviceOptions.compile, so a compiling worker
          // holds one core). Test files therefore must not leave global state behind (env, globals, mocks).
          isolate: false,
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
      {
        extends: true,
        // The browser end-to-end tests (`npm run test:browser`): build bench/browser with Vite,
        // serve it on 127.0.0.1 and drive Debian's chromium through playwright-core. Each file
        // builds its pages into a temp folder, serves them on an ephemeral port and launches its
        // own chromium, which brings its own SwiftShader: `npm run test:compat` leaves them out.
        test: {
          name: 'browser',
          include: ['test/browser/**/*.test.ts'],
          testTimeout: 900_000,
          hookTimeout: 300_000,
        },
      },
    ],
  },
});
