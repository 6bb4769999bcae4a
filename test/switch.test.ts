import { describe, expect, it } from 'vitest';
import { planSparseSwitch, sparseSwitch } from '../src/stream/switch.js';
import { attentionReference } from '../kernels/dense/reference.js';
import { mobaReference } from '../kernels/moba/reference.js';
import { nsaReference } from '../kernels/nsa/reference.js';
import { compare, describeComparison, passes, Rng, TOLERANCE } from '../src/testing.js';
import { useGpu } from './helpers/gpu.js';

const gpu = useGpu();
const T = 96,
  Hq = 4,
  Hkv = 2,
  D = 32;

function inputs(seed: number) {
  const rng = new Rng(seed);
  return { q: rng.normals(T * Hq * D), k: rng.normals(T * Hkv * D), v: rng.normals(T * Hkv * D) };
}

describe('dense/sparse switch', () => {
  it('runs dense below the threshold', async () => {
    const x = inputs(1);
    const o = gpu.nanTensor([T, Hq, D]);
    const mode = await sparseSwitch(
      gpu.dev,
      { q: gpu.tensor(x.q, [T, Hq, D]), k: gpu.tensor(x.k, [T, Hkv, D]), v: gpu.tensor(x.v, [T, Hkv, D]), o },
      { Tq: T, Hq, Hkv, D, method: 'moba', threshold: 1000 },
    );
    expect(mode).toBe('dense');
    const ref = attentionReference(x.q, x.k, x.v, { Tq: T, Hq, Hkv, D, causal: true });
    const c = compare(await gpu.read(o), ref.o);
    expect(passes(c, TOLERANCE.f32), describeComparison(c)).toBe(true);
  });

  it('runs MoBA at or above the threshold', async () => {
    const x = inputs(2);
    const o = gpu.nanTensor([T, Hq, D]);
    const mode = await sparseSwitch(
      gpu.dev,
      { q: gpu.tensor(x.q, [T, Hq, D]), k: gpu.tensor(x.k, [T, Hkv, D]), v: gpu.tensor(x.v, [T, Hkv, D]), o },
      { Tq: T, Hq, Hkv, D, method: 'moba', threshold: T, moba: { blockSize: 16, topk: 2 } },
    );
    expect(mode).toBe('moba');
    const ref = mobaReference(x.q, x.k, x.v, { Tq: T, Hq, Hkv, D, blockSize: 16, topk: 2 });
    const c = compare(await gpu.read(o), ref.o);
    expect(passes(c, TOLERANCE.f32), describeComparison(c)).toBe(true);
  });

  it('runs the sliding window (dense kernel with a window) above the threshold', async () => {
    const x = inputs(3);
    const o = gpu.nanTensor([T, Hq, D]);
    const lse = gpu.nanTensor([T, Hq]);
    const mode = await sparseSwitch(
      gpu.dev,
      { q: gpu.tensor(x.q, [T, Hq, D]), k: gpu.tensor(x.k, [T, Hkv, D]), v: gpu.tensor(x.v, [T, Hkv, D]), o, lse },
      { Tq: T, Hq, Hkv, D, method: 'sliding_window', threshold: 0, window: 20, sinks: 2 },
    );
    expect(mode).toBe('sliding_window');
    const ref = attentionReference(x.q, x.k, x.v, { Tq: T, Hq, Hkv, D, causal: true, window: 20, sinks: 2 });
    const c = compare(await gpu.read(o), ref.o);
    expect(passes(c, TOLERANCE.f32), describeComparison(c)).toBe(true);
  });

  it('runs NSA above the threshold', async () => {
    const x = inputs(4);
    const rng = new Rng(5);
    const gCmp = rng.normals(T * Hq).map((z) => 1 / (1 + Math.exp(-z)));
    const gSlc = rng.normals(T * Hq).map((z) => 1 / (1 + Math.exp(-z)));
    const gSwa = rng.normals(T * Hq).map((z) => 1 / (1 + Math.exp(-z)));
    const o = gpu.nanTensor([T, Hq, D]);
    const f32 = (a: Float64Array) => Float64Array.from(new Float32Array(a));
    const plan = await planSparseSwitch(gpu.dev, {
      Tq: T,
      Hq,
      Hkv,
      D,
      method: 'nsa',
      threshold: 64,
      nsa: { blockSize: 16, blockCount: 3, window: 32 },
    });
    expect(plan.mode).toBe('nsa');
    const enc = gpu.dev.device.createCommandEncoder();
    plan.run(enc, {
      q: gpu.tensor(x.q, [T, Hq, D]),
      k: gpu.tensor(x.k, [T, Hkv, D]),
      v: gpu.tensor(x.v, [T, Hkv, D]),
      o,
      gCmp: gpu.tensor(gCmp, [T, Hq]),
      gSlc: gpu.tensor(gSlc, [T, Hq]),
      gSwa: gpu.tensor(gSwa, [T, Hq]),
    });
    await gpu.dev.submitAndWait([enc.finish()]);
    plan.dispose();
    const ref = nsaReference(
      x.q,
      x.k,
      x.v,
      { gCmp: f32(gCmp), gSlc: f32(gSlc), gSwa: f32(gSwa) },
      { T, Hq, Hkv, D, blockSize: 16, blockCount: 3, window: 32 },
    );
    const c = compare(await gpu.read(o), ref.o);
    expect(passes(c, TOLERANCE.f32), describeComparison(c)).toBe(true);
  });

  it('rejects bad options naming the argument', async () => {
    await expect(planSparseSwitch(gpu.dev, { Tq: T, Hq, Hkv, D, method: 'quest' as never })).rejects.toMatchObject({
      argument: 'method',
    });
    await expect(planSparseSwitch(gpu.dev, { Tq: T, Hq, Hkv, D, method: 'moba', threshold: -1 })).rejects.toMatchObject(
      {
        argument: 'threshold',
      },
    );
    await expect(planSparseSwitch(gpu.dev, { Tq: T, Hq, Hkv, D, method: 'dsa', threshold: 0 })).rejects.toMatchObject({
      argument: 'dsa',
    });
    await expect(
      planSparseSwitch(gpu.dev, { Tq: T, Hq, Hkv, D, method: 'sliding_window', threshold: 0, window: -3 }),
    ).rejects.toMatchObject({ argument: 'window' });
    await expect(
      planSparseSwitch(gpu.dev, { Tq: T, Hq, Hkv, D, method: 'moba', threshold: 0, moba: { topk: 0 } }),
    ).rejects.toMatchObject({ argument: 'topk' });
  });
});
