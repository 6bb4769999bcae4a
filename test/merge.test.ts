import { describe, expect, it } from 'vitest';
import { merge, planMerge } from '../kernels/merge/index.js';
import { mergeLoopIterations, mergePartsPerSegment } from '../kernels/merge/merge.js';
import { mergeReference } from '../kernels/merge/reference.js';
import { TesseraError } from '../src/errors.js';
import { compare, passes, Rng, TOLERANCE } from '../src/testing.js';
import { roundTo } from '../src/tensor.js';
import { useGpu, type GpuFixture } from './helpers/gpu.js';

const gpu = useGpu();

/** Random partials (row 0: all empty; row 1: only the last has keys) merged on the GPU vs float64. */
async function checkMerge(g: GpuFixture, P: number, rows: number, D: number, dtype: 'f32' | 'f16' | 'bf16'): Promise<void> {
  const rng = new Rng(P * 1000 + rows);
  const oParts = rng.normals(P * rows * D);
  const lseParts = rng.normals(P * rows, 3);
  for (let p = 0; p < P; p++) lseParts[p * rows] = -Infinity;
  for (let p = 0; p < P - 1; p++) lseParts[p * rows + 1] = -Infinity;
  const ref = mergeReference(oParts, lseParts, P, rows, D);
  const o = g.nanTensor([rows, D], dtype);
  const lse = g.nanTensor([rows]);
  await merge(g.dev, { oParts: g.tensor(oParts, [P, rows, D]), lseParts: g.tensor(lseParts, [P, rows]), o, lse });
  const oGot = await g.read(o);
  const lseGot = await g.read(lse);
  const refO = dtype === 'f32' ? ref.o : roundTo(ref.o, dtype);
  const co = compare(oGot, refO);
  expect(passes(co, TOLERANCE[dtype]), JSON.stringify(co)).toBe(true);
  const cl = compare(lseGot, ref.lse);
  expect(passes(cl, TOLERANCE.f32), JSON.stringify(cl)).toBe(true);
  expect(lseGot[0]).toBe(-Infinity);
  for (let d = 0; d < D; d++) expect(oGot[d]).toBe(0);
}

describe('merge', () => {
  for (const [P, rows, D, dtype] of [
    [2, 7, 64, 'f32'],
    [5, 33, 80, 'f32'],
    [8, 3, 128, 'f16'],
    [3, 10, 32, 'bf16'],
    [1, 4, 48, 'f32'],
    // 22,000 parts: one unsegmented invocation would loop 66,011 times (past llvmpipe's 65,535)
    [22000, 2, 64, 'f32'],
  ] as const) {
    it(`P${P}-rows${rows}-D${D}-${dtype} equals the float64 merge, with -inf partials`, async () => {
      await checkMerge(gpu, P, rows, D, dtype);
    });
  }

  it('loop bound: parts per segment keep an invocation within 90% of the cap', () => {
    expect(mergeLoopIterations(22000, 64)).toBeGreaterThan(65535);
    expect(mergePartsPerSegment(Infinity, 64)).toBe(Infinity);
    for (const [limit, D] of [[65535, 64], [65535, 1024], [4096, 130], [1024, 1024]] as const) {
      const c = mergePartsPerSegment(limit, D);
      expect(c).toBeGreaterThanOrEqual(1);
      expect(mergeLoopIterations(c, D)).toBeLessThanOrEqual(0.9 * limit);
      expect(mergeLoopIterations(c + 1, D)).toBeGreaterThan(0.9 * limit);
    }
  });

  it('merging the split of a softmax equals the whole', async () => {
    // Attention of one query over 40 keys, split into 4 partials of 10 keys each.
    const rng = new Rng(7);
    const D = 16;
    const n = 40;
    const s = rng.normals(n, 2);
    const v = rng.normals(n * D);
    const whole = (lo: number, hi: number) => {
      let m = -Infinity;
      for (let j = lo; j < hi; j++) m = Math.max(m, s[j]!);
      let z = 0;
      const o = new Float64Array(D);
      for (let j = lo; j < hi; j++) {
        const w = Math.exp(s[j]! - m);
        z += w;
        for (let d = 0; d < D; d++) o[d] += w * v[j * D + d]!;
      }
      return { o: o.map((x) => x / z), lse: m + Math.log(z) };
    };
    const parts = [0, 1, 2, 3].map((p) => whole(p * 10, p * 10 + 10));
    const full = whole(0, n);
    const o = gpu.nanTensor([1, D]);
    const lse = gpu.nanTensor([1]);
    const oParts = new Float64Array(4 * D);
    parts.forEach((p, i) => oParts.set(p.o, i * D));
    await merge(gpu.dev, { oParts: gpu.tensor(oParts, [4, 1, D]), lseParts: gpu.tensor(parts.map((p) => p.lse), [4, 1]), o, lse });
    expect(passes(compare(await gpu.read(o), full.o), TOLERANCE.f32)).toBe(true);
    expect((await gpu.read(lse))[0]).toBeCloseTo(full.lse, 5);
  });

  it('rejects bad input before encoding, naming the argument', async () => {
    await expect(planMerge(gpu.dev, { parts: 0, rows: 1, D: 4 })).rejects.toMatchObject({ code: 'E_ARG', argument: 'parts' });
    await expect(planMerge(gpu.dev, { parts: 2, rows: 1, D: 5, outDtype: 'f16' })).rejects.toMatchObject({ argument: 'D' });
    const plan = await planMerge(gpu.dev, { parts: 2, rows: 3, D: 4 });
    const enc = gpu.dev.device.createCommandEncoder();
    const good = { oParts: gpu.nanTensor([2, 3, 4]), lseParts: gpu.nanTensor([2, 3]), o: gpu.nanTensor([3, 4]), lse: gpu.nanTensor([3]) };
    expect(() => plan.run(enc, { ...good, lse: gpu.nanTensor([4]) })).toThrow(TesseraError);
    expect(() => plan.run(enc, { ...good, o: gpu.nanTensor([3, 4], 'f16') })).toThrow(/o\.dtype/);
    plan.dispose();
    expect(() => plan.run(enc, good)).toThrow(/disposed/);
    enc.finish();
  });
});

describe('merge in segments (loopLimit 4096)', () => {
  const small = useGpu({ loopLimit: 4096 });
  for (const [P, rows, D, dtype] of [
    [3000, 3, 64, 'f32'],
    [2600, 5, 130, 'f16'],
    [1300, 2, 32, 'bf16'],
  ] as const) {
    it(`P${P}-rows${rows}-D${D}-${dtype} in ${Math.ceil(P / mergePartsPerSegment(4096, D))} segments`, async () => {
      const plan = await planMerge(small.dev, { parts: P, rows, D, outDtype: dtype });
      expect(plan.segments).toBe(Math.ceil(P / mergePartsPerSegment(4096, D)));
      expect(plan.segments).toBeGreaterThan(1);
      plan.dispose();
      await checkMerge(small, P, rows, D, dtype);
    });
  }
});
