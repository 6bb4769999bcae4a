/**
 * The full sweep (`npm run test:sweep`, vitest.sweep.config.ts): SWEEP_RUNS (default 500)
 * random configurations per family from SWEEP_SEED (default: a fresh seed, printed), families
 * from SWEEP_FAMILY (comma list, default all). SWEEP_CONFIG='<json>' replays one configuration
 * (with SWEEP_FAMILY naming its family). Progress goes to SWEEP_LOG when set.
 */
import { appendFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { useGpu } from '../helpers/gpu.js';
import { SWEEPS } from './registry.js';
import { runOne, runSweep } from './run.js';

const gpu = useGpu();
const env = process.env;
const runs = Number(env.SWEEP_RUNS ?? 500);
const seed = env.SWEEP_SEED !== undefined ? Number(env.SWEEP_SEED) : (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;
const only = env.SWEEP_FAMILY ? env.SWEEP_FAMILY.split(',').map((s) => s.trim()) : undefined;
const size = env.SWEEP_SIZE === 'small' ? 'small' : 'full';
const log = (line: string) => {
  if (env.SWEEP_LOG) appendFileSync(env.SWEEP_LOG, line + '\n');
};

describe(`sweep (seed ${seed}, ${runs} runs per family, ${size} sizes)`, () => {
  for (const sweep of SWEEPS) {
    if (only && !only.includes(sweep.family)) continue;
    if (env.SWEEP_CONFIG) {
      it(`${sweep.family}: replay ${env.SWEEP_CONFIG}`, async () => {
        const err = await runOne(gpu.dev, sweep, JSON.parse(env.SWEEP_CONFIG!));
        expect(err, 'replayed configuration').toBeNull();
      }, 600_000);
      continue;
    }
    it(
      `${sweep.family}`,
      async () => {
        let n = 0;
        log(`# ${new Date().toISOString()} ${sweep.family} seed ${seed} runs ${runs} size ${size}`);
        const out = await runSweep(gpu.dev, sweep, {
          numRuns: runs,
          seed,
          size,
          onConfig: (c, ms, ok) =>
            log(`${sweep.family} ${++n} ${ok ? 'ok' : 'FAIL'} ${ms.toFixed(0)}ms ${JSON.stringify(c)}`),
        });
        const line = `${sweep.family}: ${out.runs} configurations, seed ${seed}, ${(out.ms / 1000).toFixed(1)} s, ${out.failed ? 'FAILED' : 'all pass'}`;
        log(`# ${line}`);
        console.log(line);
        if (out.report) {
          log(out.report);
          console.log(out.report);
        }
        expect(out.failed, out.report).toBe(false);
      },
      24 * 3600_000,
    );
  }
});
