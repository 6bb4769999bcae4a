import { defineConfig } from 'vitest/config';

// The browser end-to-end test (`npm run test:browser`): builds bench/browser with Vite, serves it
// on 127.0.0.1 and drives Debian's chromium through playwright-core. Kept out of `npm test`
// (vitest.config.ts excludes test/browser) because it needs a chromium binary.
export default defineConfig({
  test: {
    include: ['test/browser/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 900_000,
    hookTimeout: 300_000,
    pool: 'forks',
  },
});
