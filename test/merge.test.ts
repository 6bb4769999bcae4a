import { describe, expect, it } from 'vitest';
import { merge, planMerge } from '../kernels/merge/index.js';
import { createMergeState, mergeLoopIterations, mergePartsPerSegment } from '../kernels/merge/merge.js';
import { mergeReference } from '../kernels/merge/reference.js';
import { TesseraError } from '../src/errors.js';
import { compare, passes, Rng, TOLERANCE } from '../src/testing.js';
import { roundTo } from '../src/tensor.js';
import { useGpu, type GpuFixture } from './helpers/gpu.js';

const gpu = useGpu();

/** Random partials (row 0: all empty; row 1: only the last has keys) merged on the GPU vs float64. */
async function checkMerge(
  g: GpuFixture,
  P: number,
  rows: number,
  D: number,
  dtype: 'f32' | 'f16' | 'bf16',
  loopLimit?: number,
): Promise<void> {
  const rng = new Rng(P * 1000 + rows);
  const oParts = rng.normals(P * rows * D);
  const lseParts = rng.normals(P * rows, 3);
  for (let p = 0; p < P; p++) lseParts[p * rows] = -Infinity;
  for (let p = 0; p < P - 1; p++) lseParts[p * rows + 1] = -Infinity;
  const ref = mergeReference(oParts, lseParts, P, rows, D);
  const o = g.nanTensor([rows, D], dtype);
  const lse = g.nanTensor([rows]);
  await merge(
    g.dev,
    { oParts: g.tensor(oParts, [P, rows, D]), lseParts: g.tensor(lseParts, [P, rows]), o, lse },
    { loopLimit },
  );
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
    for (const [limit, D] of [
      [65535, 64],
      [65535, 1024],
      [4096, 130],
      [1024, 1024],
    ] as const) {
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
    await merge(gpu.dev, {
      oParts: gpu.tensor(oParts, [4, 1, D]),
      lseParts: gpu.tensor(
        parts.map((p) => p.lse),
        [4, 1],
      ),
      o,
      lse,
    });
    expect(passes(compare(await gpu.read(o), full.o), TOLERANCE.f32)).toBe(true);
    expect((await gpu.read(lse))[0]).toBeCloseTo(full.lse, 5);
  });

  it('rejects bad input before encoding, naming the argument', async () => {
    await expect(planMerge(gpu.dev, { parts: 0, rows: 1, D: 4 })).rejects.toMatchObject({
      code: 'E_ARG',
      argument: 'parts',
    });
    await expect(planMerge(gpu.dev, { parts: 2, rows: 1, D: 5, outDtype: 'f16' })).rejects.toMatchObject({
      argument: 'D',
    });
    const plan = await planMerge(gpu.dev, { parts: 2, rows: 3, D: 4 });
    const enc = gpu.dev.device.createCommandEncoder();
    const good = {
      oParts: gpu.nanTensor([2, 3, 4]),
      lseParts: gpu.nanTensor([2, 3]),
      o: gpu.nanTensor([3, 4]),
      lse: gpu.nanTensor([3]),
    };
    expect(() => plan.run(enc, { ...good, lse: gpu.nanTensor([4]) })).toThrow(TesseraError);
    expect(() => plan.run(enc, { ...good, o: gpu.nanTensor([3, 4], 'f16') })).toThrow(/o\.dtype/);
    plan.dispose();
    expect(() => plan.run(enc, good)).toThrow(/disposed/);
    enc.finish();
  });
});

describe('merge plans with loopLimit 4096: in segments on any adapter', () => {
  for (const [P, rows, D, dtype] of [
    [3000, 3, 64, 'f32'],
    [2600, 5, 130, 'f16'],
    [1300, 2, 32, 'bf16'],
  ] as const) {
    it(`P${P}-rows${rows}-D${D}-${dtype} in ${Math.ceil(P / mergePartsPerSegment(4096, D))} segments`, async () => {
      const plan = await planMerge(gpu.dev, { parts: P, rows, D, outDtype: dtype, loopLimit: 4096 });
      expect(plan.segments).toBe(Math.ceil(P / mergePartsPerSegment(4096, D)));
      expect(plan.segments).toBeGreaterThan(1);
      plan.dispose();
      await checkMerge(gpu, P, rows, D, dtype, 4096);
    });
  }
});

/**
 * Precision: thousands of partials of a peaked distribution (one part holds almost all the mass,
 * the others each hold less than half an f32 step of it, with values biased away from zero), plus
 * a row of ordinary random partials. A plain f32 running sum drops every background share (rel
 * error of o and |lse error| ~1e-4 here); the compensated merge must stay within 1e-5 of float64.
 */
function peakedParts(P: number, rows: number, D: number): { oParts: Float64Array; lseParts: Float64Array } {
  const rng = new Rng(99);
  const oParts = rng.normals(P * rows * D);
  const lseParts = new Float64Array(P * rows);
  const peakAt = [0, Math.floor(P / 2), -1, P - 1];
  for (let r = 0; r < rows; r++) {
    const peak = peakAt[r % 4]!;
    for (let p = 0; p < P; p++) {
      if (peak < 0) lseParts[p * rows + r] = 3 * rng.normals(1)[0]!;
      else {
        // Background share exp(-17.5) = 2.5e-8 of the peak, 0.5 +- 0.1 on average.
        lseParts[p * rows + r] = p === peak ? 20 : 2.5 + 0.1 * rng.normals(1)[0]!;
        if (p !== peak)
          for (let d = 0; d < D; d++) oParts[(p * rows + r) * D + d] = 2 + 0.5 * oParts[(p * rows + r) * D + d]!;
      }
    }
  }
  return { oParts, lseParts };
}

async function checkPrecision(
  g: GpuFixture,
  P: number,
  rows: number,
  D: number,
  steps: number,
  loopLimit?: number,
): Promise<void> {
  const { oParts, lseParts } = peakedParts(P, rows, D);
  const ref = mergeReference(oParts, lseParts, P, rows, D);
  const o = g.nanTensor([rows, D]);
  const lse = g.nanTensor([rows]);
  if (steps === 1) {
    await merge(
      g.dev,
      { oParts: g.tensor(oParts, [P, rows, D]), lseParts: g.tensor(lseParts, [P, rows]), o, lse },
      { loopLimit },
    );
  } else {
    // The same parts merged in `steps` calls that carry a running state (as streaming does).
    const per = Math.ceil(P / steps);
    const plan = await planMerge(g.dev, { parts: per, rows, D });
    const states = [createMergeState(g.dev, rows, D), createMergeState(g.dev, rows, D)];
    const enc = g.dev.device.createCommandEncoder();
    for (let i = 0; i < steps; i++) {
      const oi = new Float64Array(per * rows * D);
      const li = new Float64Array(per * rows).fill(-Infinity);
      const n = Math.max(0, Math.min(per, P - i * per));
      oi.set(oParts.subarray(i * per * rows * D, (i * per + n) * rows * D));
      li.set(lseParts.subarray(i * per * rows, (i * per + n) * rows));
      plan.run(enc, {
        oParts: g.tensor(oi, [per, rows, D]),
        lseParts: g.tensor(li, [per, rows]),
        stateIn: i > 0 ? states[(i - 1) % 2] : undefined,
        stateOut: states[i % 2],
      });
    }
    plan.finish(enc, { state: states[(steps - 1) % 2]!, o, lse });
    g.dev.device.queue.submit([enc.finish()]);
    await g.dev.device.queue.onSubmittedWorkDone();
    plan.dispose();
    for (const s of states) for (const b of [s.o.buffer, s.s.buffer]) g.dev.destroyBuffer(b);
  }
  const oGot = await g.read(o);
  const lseGot = await g.read(lse);
  for (let r = 0; r < rows; r++) {
    const c = compare(oGot.subarray(r * D, (r + 1) * D), ref.o.subarray(r * D, (r + 1) * D));
    expect(c.relRms, `row ${r} o`).toBeLessThanOrEqual(1e-5);
    expect(Math.abs(lseGot[r]! - ref.lse[r]!), `row ${r} lse`).toBeLessThanOrEqual(1e-5);
  }
}

describe('merge precision (peaked, thousands of parts, vs float64)', () => {
  it('one dispatch of 3000 parts', async () => {
    await checkPrecision(gpu, 3000, 4, 64, 1);
  });
  it('3000 parts in 25 steps carrying the running state', async () => {
    await checkPrecision(gpu, 3000, 4, 64, 25);
  });
  it('state checks: stateOut must differ from stateIn, finish needs a state', async () => {
    const plan = await planMerge(gpu.dev, { parts: 2, rows: 3, D: 4 });
    const a = createMergeState(gpu.dev, 3, 4);
    const enc = gpu.dev.device.createCommandEncoder();
    const parts = { oParts: gpu.nanTensor([2, 3, 4]), lseParts: gpu.nanTensor([2, 3]) };
    expect(() => plan.run(enc, { ...parts, stateIn: a, stateOut: a })).toThrow(/stateOut/);
    expect(() => plan.run(enc, { ...parts, stateOut: { o: a.o, s: gpu.nanTensor([3, 3]) } })).toThrow(/stateOut\.s/);
    expect(() =>
      plan.finish(enc, { state: undefined as never, o: gpu.nanTensor([3, 4]), lse: gpu.nanTensor([3]) }),
    ).toThrow(TesseraError);
    enc.finish();
    plan.dispose();
    for (const b of [a.o.buffer, a.s.buffer]) gpu.dev.destroyBuffer(b);
  });
});

describe('merge precision in segments (plan loopLimit 4096)', () => {
  it('one plan of 3000 parts in segments', async () => {
    const plan = await planMerge(gpu.dev, { parts: 3000, rows: 4, D: 64, loopLimit: 4096 });
    expect(plan.segments).toBeGreaterThan(1);
    plan.dispose();
    await checkPrecision(gpu, 3000, 4, 64, 1, 4096);
  });
});
