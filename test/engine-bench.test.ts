/**
 * bench/suites/engine.ts: the suite's JSON carries the keys, taken from the engine's
 * result (timings are never asserted; a short engine run provides real counts).
 */
import { describe, expect, it } from 'vitest';
import { engineBenchJson } from '../bench/suites/engine.js';
import { main } from '../examples/engine/main.js';
import { useGpu } from './helpers/gpu.js';

// The worker's shared device (its pipeline cache holds the engine's pipelines when an earlier file
// of the worker, e.g. test/examples.test.ts, compiled them); the engine wraps it with wrapDevice,
// which finds the worker's TesseraDevice, and restores the methods it instruments.
const gpu = useGpu();

// a benchmark's own test: the extended tier (the engine itself is tested in npm test by
// test/examples.test.ts and test/engine-doc.test.ts)
describe('bench engine', { tags: ['extended'] }, () => {
  it("writes the issue's keys from a short engine run, with the baseline measured in the same run", async () => {
    const r = await main({
      small: true,
      device: gpu.dev.device,
      config: { steps: 2 },
      baseline: true,
      skipMirror: true,
    });
    const j = engineBenchJson(r);
    for (const k of [
      'adapter',
      'layers',
      'batch',
      'steps',
      'kvDtype',
      'hostUsPerStep',
      'gpuMsPerStep',
      'buffersCreatedPerStep',
      'bindGroupsCreatedPerStep',
      'submitsPerStep',
      'readbacks',
      'relRms',
      'baseline',
    ]) {
      expect(j, k).toHaveProperty(k);
    }
    expect(j).toMatchObject({
      layers: 3,
      batch: 4,
      steps: 2,
      kvDtype: 'f32',
      submitsPerStep: 1,
      buffersCreatedPerStep: 0,
      readbacks: 0,
    });
    expect(Number.isFinite(j.hostUsPerStep.median) && Number.isFinite(j.hostUsPerStep.p90)).toBe(true);
    expect(Number.isFinite(j.gpuMsPerStep.median)).toBe(true);
    expect(j.baseline.buffersCreatedPerStep).toBeGreaterThan(0); // today's way allocates per step
    expect(Number.isFinite(j.baseline.hostUsPerStep.median)).toBe(true);
    expect(j.details.targets.buffers0).toBe(true);
  });
});
