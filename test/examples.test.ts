/**
 * The runnable examples (`examples/`), in their short forms, in a stable order: each `main()`
 * must give real numbers within tolerance (errors vs the float64 references, the needle found,
 * no readback inside the hybrid loop). TensorFlow.js's WebGPU backend is set up once for the
 * file, by the hybrid example's `setupTfjs()` (idempotent).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { useGpu } from './helpers/gpu.js';

const gpu = useGpu();

describe('examples (short forms)', () => {
  it('engine: 3-layer GQA transformer (full, window + sinks, Quest) on the paged pool, 1 submit and 0 buffers per step, matches its float64 mirror', async () => {
    const { main } = await import('../examples/engine/main.js');
    // on the worker's shared device (TESSERA_ADAPTER picks it): the engine wraps it with
    // wrapDevice, which finds the worker's TesseraDevice and its pipeline cache
    const r = await main({ small: true, device: gpu.dev.device });
    expect(r.adapter).toBeTruthy();
    expect(r.layerKinds).toEqual(['full', 'window', 'quest']);
    expect(r.batch).toBe(4);
    expect(new Set(r.prompts).size).toBe(4); // different prompt lengths
    expect(r.submitsPerStep).toBe(1);
    expect(r.buffersCreatedPerStep).toBe(0);
    expect(r.bindGroupsCreatedPerStep).toBe(0);
    expect(r.readbacks).toBe(0);
    expect(r.questSelections).toBeGreaterThan(0); // Quest really selected (sequences longer than its budget)
    expect(r.questMargin).toBeGreaterThan(1e-3); // no near-tie: GPU and mirror must pick the same pages
    expect(r.windowPagesReleased).toBeGreaterThan(0);
    expect(Number.isFinite(r.relRms)).toBe(true);
    expect(r.relRms).toBeLessThanOrEqual(1e-5);
  });

  // TF.js interop itself is in npm test (test/tfjs.test.ts); the hybrid stacks run in the extended tier
  it(
    'hybrid-tfjs: 3 GDN : 1 SWA stack on TensorFlow.js tensors, no readback in the loop, matches float64',
    { tags: ['extended'] },
    async () => {
      const { main } = await import('../examples/hybrid-tfjs/main.js');
      const r = await main({ small: true });
      expect(r.pattern).toBe('GDN GDN GDN SWA');
      expect(r.readbacksInLoop).toBe(0);
      expect(Number.isFinite(r.relRms)).toBe(true);
      expect(r.relRms).toBeLessThan(1e-4);
      expect(r.refMax).toBeGreaterThan(0.5); // a real signal, not zeros
    },
  );

  it('hybrid-tfjs with MoBA as the attention layer: no readback, matches float64', { tags: ['extended'] }, async () => {
    const { main } = await import('../examples/hybrid-tfjs/main.js');
    const r = await main({ small: true, mixer: 'moba' });
    expect(r.pattern).toBe('GDN GDN GDN MOBA');
    expect(r.readbacksInLoop).toBe(0);
    expect(r.minMargin!).toBeGreaterThan(1e-3); // the block choice is not a near-tie
    expect(r.relRms).toBeLessThan(1e-4);
  });

  it('needle-10m (100K tokens): the needle is found and sparse equals exact', async () => {
    const { main } = await import('../examples/needle-10m/main.js');
    const r = await main({ small: true });
    expect(r.tokens).toBe(100_000);
    expect(r.needleFound).toBe(true);
    expect(r.needlePageSelected).toBe(true);
    expect(r.kvBytesReadFraction).toBeLessThan(0.1);
    expect(r.maxAbsDiffSparseVsExact).toBeLessThan(1e-3);
  });

  // npm test's browser stage builds the same pages (test/browser); the extended tier builds the example
  it('browser: the page builds with Vite', { tags: ['extended'] }, async () => {
    const { main } = await import('../examples/browser/main.js');
    const out = mkdtempSync(join(tmpdir(), 'tessera-example-browser-'));
    try {
      const r = await main({ outDir: out });
      expect(r.files).toContain('index.html');
      expect(r.files.some((f) => f.endsWith('.js'))).toBe(true);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
