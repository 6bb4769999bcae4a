#!/usr/bin/env node
// WGSL files are the single source of every shader. This script turns each `X.wgsl` under
// `shaders/`, `kernels/` and `bench/` (the roofline probes) into a sibling module `X.wgsl.ts`
// (git-ignored) that exports the text as a string, so Node, bundlers and the browser load
// shaders the same way: as a module, never through a file-system read. It runs before build,
// test, bench and the CLI, and only rewrites a module whose text changed.
import { readdirSync, readFileSync, writeFileSync, existsSync, statSync } from 'node:fs';
import { join, dirname, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
let written = 0;
function walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) {
      walk(p);
      continue;
    }
    if (!name.endsWith('.wgsl')) continue;
    const src = readFileSync(p, 'utf8');
    const out =
      `// Generated from ${relative(root, p)} by scripts/embed-wgsl.mjs. Do not edit.\n` +
      `const source: string = ${JSON.stringify(src)};\nexport default source;\n`;
    const target = p + '.ts';
    if (!existsSync(target) || readFileSync(target, 'utf8') !== out) {
      writeFileSync(target, out);
      written++;
    }
  }
}
for (const d of ['shaders', 'kernels', 'bench']) if (existsSync(join(root, d))) walk(join(root, d));
if (process.argv.includes('--verbose')) console.error(`embed-wgsl: ${written} module(s) written`);
