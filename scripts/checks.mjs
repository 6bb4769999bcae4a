#!/usr/bin/env node
// The static checks of `npm test`, two at a time (this machine's cores): the README is current,
// types, the API report, the layering rules, ESLint and Prettier. Each check's output is printed
// when it fails; each prints its name and time; the script fails when any check fails, after all have run.
// ESLint and Prettier keep caches under node_modules/.cache, so a second run checks only what
// changed (a clean clone, as in CI, checks everything).
import { spawn } from 'node:child_process';
import { cpus } from 'node:os';

const bin = (name) => `node_modules/.bin/${name}`;
const CHECKS = [
  [
    'types',
    bin('tsc'),
    ['-p', 'tsconfig.json', '--noEmit', '--incremental', '--tsBuildInfoFile', 'node_modules/.cache/tsc.tsbuildinfo'],
  ],
  ['lint', bin('eslint'), ['--cache', '--cache-location', 'node_modules/.cache/eslint/', '.']],
  ['format', bin('prettier'), ['--check', '--cache', '--log-level', 'warn', '.']],
  ['api report', process.execPath, ['scripts/api-report.mjs', '--check']],
  [
    'layers',
    bin('depcruise'),
    ['--config', '.dependency-cruiser.cjs', '--output-type', 'err', 'bin', 'src', 'kernels', 'bench'],
  ],
  ['readme', process.execPath, ['scripts/build-readme.mjs', '--check']],
];

function run([name, cmd, args]) {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('error', (e) => resolve({ name, ok: false, out: String(e), s: 0 }));
    child.on('close', (code) => resolve({ name, ok: code === 0, out, s: (performance.now() - t0) / 1000 }));
  });
}

const width = Math.max(1, Math.min(2, cpus().length));
const queue = [...CHECKS];
const results = [];
await Promise.all(
  Array.from({ length: width }, async () => {
    for (let c = queue.shift(); c; c = queue.shift()) {
      const r = await run(c);
      results.push(r);
      process.stdout.write(`${r.ok ? 'ok  ' : 'FAIL'} ${r.name} (${r.s.toFixed(1)} s)\n`);
      if (!r.ok && r.out.trim()) process.stdout.write(`${r.out.trim()}\n`);
    }
  }),
);
const failed = results.filter((r) => !r.ok).map((r) => r.name);
if (failed.length) {
  process.stderr.write(`static checks failed: ${failed.join(', ')}\n`);
  process.exit(1);
}
