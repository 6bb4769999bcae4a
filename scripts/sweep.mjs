#!/usr/bin/env node
// `npm run test:sweep -- [--seed N] [--runs N] [--family a,b] [--size small|full] [--log FILE] [--config JSON]`
// Runs the property sweeps (test/sweep/full.spec.ts) through vitest with the options as SWEEP_* env.
import { spawnSync } from 'node:child_process';

const args = process.argv.slice(2);
const env = { ...process.env };
const names = {
  '--seed': 'SWEEP_SEED',
  '--runs': 'SWEEP_RUNS',
  '--family': 'SWEEP_FAMILY',
  '--size': 'SWEEP_SIZE',
  '--log': 'SWEEP_LOG',
  '--config': 'SWEEP_CONFIG',
};
for (let i = 0; i < args.length; i++) {
  const [flag, inline] = args[i].split('=', 2);
  const name = names[flag];
  if (!name) {
    console.error(`unknown option ${args[i]}; options: ${Object.keys(names).join(', ')}`);
    process.exit(2);
  }
  env[name] = inline ?? args[++i];
}
const r = spawnSync('npx', ['vitest', 'run', '-c', 'vitest.sweep.config.ts'], { stdio: 'inherit', env });
process.exit(r.status ?? 1);
