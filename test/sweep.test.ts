/**
 * The fixed-seed subset of the property sweeps, in the `extended` tier (`npm run test:extended`,
 * which CI runs; not in `npm test`): 4 configurations per family with small sizes, a smoke test
 * that every sweep still runs and passes (the per-family tests hold the shapes, dtypes and ragged
 * sizes; the full sweep, `npm run test:sweep`, runs 500+ with larger bounds and any seed). A
 * failure prints the shrunk configuration as JSON and the command that replays it.
 */
import { describe, expect, it } from 'vitest';
import { useGpu } from './helpers/gpu.js';
import { SWEEPS } from './sweep/registry.js';
import { runSweep } from './sweep/run.js';

const gpu = useGpu();
export const SUBSET_RUNS = 4;
export const SUBSET_SEED = 20261124;

const SUBSET = `property sweeps, fixed-seed subset (${SUBSET_RUNS} configurations per family)`;

describe(SUBSET, { tags: ['extended'] }, () => {
  for (const sweep of SWEEPS) {
    it(
      sweep.family,
      async () => {
        const out = await runSweep(gpu.dev, sweep, { numRuns: SUBSET_RUNS, seed: SUBSET_SEED, size: 'small' });
        expect(out.failed, out.report).toBe(false);
        expect(out.runs).toBe(SUBSET_RUNS);
      },
      600_000,
    );
  }
});
