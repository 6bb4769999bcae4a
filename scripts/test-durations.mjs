#!/usr/bin/env node
// Writes test/setup/durations.json, the per-file durations (seconds) that order `vitest run`'s
// files (test/setup/sequencer.ts: longest first, so that two workers finish together), from
// vitest's own record of the last run (node_modules/.vite/vitest/*/results.json). Run it after a
// quiet `npm test` when files were added or their cost changed a lot:
//   npm test && node scripts/test-durations.mjs
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const base = 'node_modules/.vite/vitest';
const dirs = readdirSync(base);
const out = {};
for (const d of dirs) {
  let results;
  try {
    results = JSON.parse(readFileSync(join(base, d, 'results.json'), 'utf8')).results;
  } catch {
    continue;
  }
  for (const [key, r] of results) {
    const [project, file] = key.split(/:(.*)/s);
    if ((project === 'node' || project === 'browser') && r.duration > 0 && !r.failed)
      out[file] = Math.round(r.duration / 100) / 10;
  }
}
if (!Object.keys(out).length) {
  console.error(`no vitest results under ${base}: run npm test first`);
  process.exit(1);
}
const sorted = Object.fromEntries(Object.entries(out).sort(([a], [b]) => (a < b ? -1 : 1)));
writeFileSync('test/setup/durations.json', JSON.stringify(sorted, null, 2) + '\n');
console.log(`test/setup/durations.json: ${Object.keys(sorted).length} files`);
