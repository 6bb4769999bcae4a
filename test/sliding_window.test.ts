import { describe, expect, it } from 'vitest';
import {
  planSlidingWindow,
  planSlidingWindowDecode,
  slidingWindowAttention,
  slidingWindowReference,
} from '../kernels/sliding_window/index.js';
import { compare, describeComparison, passes, Rng, TOLERANCE } from '../src/testing.js';
import { useGpu } from './helpers/gpu.js';

const gpu = useGpu();

describe('sliding window (entry over the dense kernel)', () => {
  it('T500-Hq4-Hkv2-D64-f32-W32-S4-sinklogit equals the reference', async () => {
    const rng = new Rng(3);
    const [T, Hq, Hkv, D] = [500, 4, 2, 64];
    const q = rng.normals(T * Hq * D);
    const k = rng.normals(T * Hkv * D);
    const v = rng.normals(T * Hkv * D);
    const sink = rng.normals(Hq, 2);
    const ref = slidingWindowReference(q, k, v, { Tq: T, Hq, Hkv, D, window: 32, sinks: 4, sinkLogits: sink });
    const o = gpu.nanTensor([T, Hq, D]);
    const lse = gpu.nanTensor([T, Hq]);
    await slidingWindowAttention(
      gpu.dev,
      {
        q: gpu.tensor(q, [T, Hq, D]),
        k: gpu.tensor(k, [T, Hkv, D]),
        v: gpu.tensor(v, [T, Hkv, D]),
        o,
        lse,
        sinkLogits: gpu.tensor(sink, [Hq]),
      },
      { window: 32, sinks: 4, sinkLogit: true },
    );
    const co = compare(await gpu.read(o), ref.o);
    const cl = compare(await gpu.read(lse), ref.lse);
    expect(passes(co, TOLERANCE.f32), describeComparison(co)).toBe(true);
    expect(passes(cl, TOLERANCE.f32), describeComparison(cl)).toBe(true);
  });

  it('decode over windows larger and smaller than the sequence', async () => {
    const rng = new Rng(4);
    const [Hq, Hkv, D] = [2, 1, 32];
    const kvLens = [700, 20];
    const total = 720;
    const q = rng.normals(2 * Hq * D);
    const k = rng.normals(total * Hkv * D);
    const v = rng.normals(total * Hkv * D);
    const plan = await planSlidingWindowDecode(gpu.dev, { Hq, Hkv, D, window: 100, sinks: 2, kvLens, kvChunk: 64 });
    const o = gpu.nanTensor([2, Hq, D]);
    const lse = gpu.nanTensor([2, Hq]);
    await gpu.dev.scoped('test', async () => {
      const enc = gpu.dev.device.createCommandEncoder();
      plan.run(enc, {
        q: gpu.tensor(q, [2, Hq, D]),
        k: gpu.tensor(k, [total, Hkv, D]),
        v: gpu.tensor(v, [total, Hkv, D]),
        o,
        lse,
      });
      await gpu.dev.submitAndWait([enc.finish()]);
    });
    plan.dispose();
    const refO = new Float64Array(2 * Hq * D);
    const refL = new Float64Array(2 * Hq);
    let off = 0;
    kvLens.forEach((len, n) => {
      const r = slidingWindowReference(
        q.subarray(n * Hq * D, (n + 1) * Hq * D),
        k.subarray(off * Hkv * D, (off + len) * Hkv * D),
        v.subarray(off * Hkv * D, (off + len) * Hkv * D),
        { Tq: 1, Tk: len, Hq, Hkv, D, window: 100, sinks: 2 },
      );
      refO.set(r.o, n * Hq * D);
      refL.set(r.lse, n * Hq);
      off += len;
    });
    expect(passes(compare(await gpu.read(o), refO), TOLERANCE.f32)).toBe(true);
    expect(passes(compare(await gpu.read(lse), refL), TOLERANCE.f32)).toBe(true);
  });

  it('rejects a missing or negative window', async () => {
    await expect(planSlidingWindow(gpu.dev, { Tq: 8, Hq: 2, Hkv: 1, D: 16, window: -1 })).rejects.toMatchObject({
      code: 'E_ARG',
      argument: 'window',
    });
    await expect(planSlidingWindow(gpu.dev, { Tq: 8, Hq: 2, Hkv: 1, D: 16, window: 0 })).rejects.toMatchObject({
      code: 'E_ARG',
      argument: 'window',
    });
    await expect(
      planSlidingWindowDecode(gpu.dev, { Hq: 2, Hkv: 1, D: 16, window: 1.5, kvLens: [3] }),
    ).rejects.toMatchObject({ argument: 'window' });
  });
});
