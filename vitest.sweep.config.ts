import { defineConfig } from 'vitest/config';

/** The full property sweep: `npm run test:sweep` (see test/sweep/full.spec.ts and scripts/sweep.mjs). */
export default defineConfig({
  test: {
    include: ['test/sweep/full.spec.ts'],
    fileParallelism: false,
    testTimeout: 24 * 3600_000,
    hookTimeout: 120_000,
    pool: 'forks',
  },
});
