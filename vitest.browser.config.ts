import { defineConfig } from 'vitest/config';

// The browser end-to-end tests (`npm run test:browser`, and the browser stage of `npm test`): build
// bench/browser with Vite, serve it on 127.0.0.1 and drive Debian's chromium through playwright-core.
// vitest.config.ts excludes test/browser, so the Node stage and this one each run their own files.
// The two files run side by side (each builds its own pages into a temp folder and serves them on
// an ephemeral port, each launches its own chromium): 37-38 s here instead of 46 s one after another.
export default defineConfig({
  test: {
    include: ['test/browser/**/*.test.ts'],
    fileParallelism: true,
    maxWorkers: 2,
    testTimeout: 900_000,
    hookTimeout: 300_000,
    pool: 'forks',
  },
});
