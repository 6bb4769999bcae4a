import { describe, expect, it } from 'vitest';
import { moba, mobaVarlen, planMoba, planMobaDecode, planMobaVarlen } from '../kernels/moba/index.js';
import { mobaBlockMeansReference, mobaReference } from '../kernels/moba/reference.js';
import { mobaSelectLoopIterations, mobaSelectSegments } from '../kernels/moba/moba.js';
import { poolSegments } from '../kernels/moba/pool.js';
import { compare, describeComparison, passes, Rng, TOLERANCE } from '../src/testing.js';
import { roundTo, type FloatDType } from '../src/tensor.js';
import { useGpu } from './helpers/gpu.js';
import { tier } from './helpers/tier.js';

const gpu = useGpu();

/** Rows whose selected set differs from the reference's; near-ties (margin < tol) excused. */
function selectionMismatches(
  got: ArrayLike<number>,
  ref: ArrayLike<number>,
  K: number,
  margin: ArrayLike<number>,
  tol: number,
) {
  let bad = 0;
  const excused = new Set<number>();
  for (let r = 0; r < ref.length / K; r++) {
    const a = new Set<number>();
    const b = new Set<number>();
    for (let i = 0; i < K; i++) {
      if (got[r * K + i]! >= 0) a.add(got[r * K + i]!);
      if (ref[r * K + i]! >= 0) b.add(ref[r * K + i]!);
    }
    const same = a.size === b.size && [...a].every((x) => b.has(x));
    if (!same) {
      if (margin[r]! < tol) excused.add(r);
      else bad++;
    }
  }
  return { bad, excused };
}

interface Case {
  T: number;
  Hq: number;
  Hkv: number;
  D: number;
  B: number;
  k: number;
  dtype: FloatDType;
  Tq?: number;
  target?: 'cpu' | 'gpu';
  vOffset?: number;
  /** The plan's loopLimit option (the segmented paths on any adapter). */
  loopLimit?: number;
  /** In the `extended` test tier only (npm run test:extended): a size or dim beyond the core matrix. */
  extended?: boolean;
}

/** Runs a case against the float64 reference; returns the plan's dispatch counts and the selection. */
async function runCase(c: Case) {
  const { T, Hq, Hkv, D, B, k, dtype } = c;
  const Tq = c.Tq ?? T;
  const rng = new Rng(T * 7 + B * 3 + k + Hq);
  const q = roundTo(rng.normals(Tq * Hq * D), dtype);
  const kk = roundTo(rng.normals(T * Hkv * D), dtype);
  const v = roundTo(
    rng.normals(T * Hkv * D).map((x) => x + (c.vOffset ?? 0)),
    dtype,
  );
  const ref = mobaReference(q, kk, v, { Tq, Tk: T, Hq, Hkv, D, blockSize: B, topk: k });
  const o = gpu.nanTensor([Tq, Hq, D], dtype);
  const lse = gpu.nanTensor([Tq, Hq]);
  const selection = gpu.tensor(new Int32Array(Tq * Hq * k).fill(-7), [Tq, Hq, k], 'i32');
  const plan = await planMoba(gpu.dev, {
    Tq,
    Tk: T,
    Hq,
    Hkv,
    D,
    blockSize: B,
    topk: k,
    dtype,
    target: c.target,
    loopLimit: c.loopLimit,
  });
  const enc = gpu.dev.device.createCommandEncoder();
  plan.run(enc, {
    q: gpu.tensor(q, [Tq, Hq, D], dtype),
    k: gpu.tensor(kk, [T, Hkv, D], dtype),
    v: gpu.tensor(v, [T, Hkv, D], dtype),
    o,
    lse,
    selection,
  });
  await gpu.dev.submitAndWait([enc.finish()]);
  plan.dispose();
  expect(plan.loopIterations).toBeLessThanOrEqual(0.9 * Math.min(c.loopLimit ?? Infinity, gpu.dev.loopLimit));
  const sel = await gpu.read(selection);
  const { bad, excused } = selectionMismatches(sel, ref.selection, k, ref.margin, dtype === 'f32' ? 1e-4 : 1e-2);
  expect(bad, 'selection rows differing beyond near-ties').toBe(0);
  const oGot = await gpu.read(o);
  const lseGot = await gpu.read(lse);
  // rows excused for a near-tie flip are left out of the numeric comparison
  const keepO: number[] = [],
    refO: number[] = [],
    keepL: number[] = [],
    refL: number[] = [];
  const refOut = dtype === 'f32' ? ref.o : roundTo(ref.o, dtype);
  for (let r = 0; r < Tq * Hq; r++) {
    if (excused.has(r)) continue;
    for (let d = 0; d < D; d++) {
      keepO.push(oGot[r * D + d]!);
      refO.push(refOut[r * D + d]!);
    }
    keepL.push(lseGot[r]!);
    refL.push(ref.lse[r]!);
  }
  const co = compare(keepO, refO);
  expect(passes(co, TOLERANCE[dtype]), describeComparison(co)).toBe(true);
  const cl = compare(keepL, refL);
  expect(passes(cl, dtype === 'f32' ? TOLERANCE.f32 : TOLERANCE.f16), describeComparison(cl)).toBe(true);
  return { segments: plan.segments, selection: Int32Array.from(sel) };
}

describe('moba prefill vs float64 reference', () => {
  const cases: Case[] = [
    { T: 1, Hq: 2, Hkv: 1, D: 32, B: 16, k: 3, dtype: 'f32' },
    { T: 63, Hq: 2, Hkv: 2, D: 32, B: 16, k: 2, dtype: 'f32' },
    { T: 64, Hq: 4, Hkv: 2, D: 64, B: 16, k: 3, dtype: 'f32', extended: true },
    { T: 65, Hq: 4, Hkv: 1, D: 32, B: 8, k: 4, dtype: 'f16' },
    { T: 300, Hq: 2, Hkv: 1, D: 64, B: 64, k: 3, dtype: 'f32', extended: true },
    { T: 300, Hq: 4, Hkv: 2, D: 48, B: 32, k: 16, dtype: 'f16', extended: true },
    { T: 1000, Hq: 2, Hkv: 2, D: 32, B: 128, k: 2, dtype: 'f32', extended: true },
    { T: 200, Hq: 2, Hkv: 1, D: 32, B: 16, k: 1, dtype: 'f32' },
    { T: 300, Hq: 4, Hkv: 2, D: 32, B: 32, k: 3, dtype: 'f32', target: 'gpu', extended: true },
    { T: 65, Hq: 2, Hkv: 1, D: 32, B: 16, k: 3, dtype: 'f16', target: 'gpu' },
    { T: 130, Hq: 2, Hkv: 1, D: 32, B: 16, k: 4, dtype: 'f32', target: 'cpu' },
  ];
  for (const c of cases) {
    it(
      `T${c.T}-H${c.Hq}-Hkv${c.Hkv}-D${c.D}-B${c.B}-k${c.k}-${c.dtype}${c.target ? '-' + c.target : ''}`,
      tier(c.extended),
      async () => void (await runCase(c)),
    );
  }
  it('decode (Tq = 1, bottom-right) equals the reference', async () =>
    void (await runCase({ T: 301, Tq: 1, Hq: 4, Hkv: 2, D: 32, B: 32, k: 3, dtype: 'f32' })));
  it('decode (Tq = 3) equals the reference', async () =>
    void (await runCase({ T: 130, Tq: 3, Hq: 2, Hkv: 1, D: 32, B: 32, k: 2, dtype: 'f32' })));
});

describe('moba loop bounds (llvmpipe stops an invocation after 65,535 loop iterations)', () => {
  it('bound functions', () => {
    expect(mobaSelectLoopIterations(1024, 64, 3, false)).toBe(1 + 17 + 1024 * (16 + 2 + 3) + 1 + 3);
    const segs = mobaSelectSegments(1024, 150, 16, 3);
    expect(segs.length).toBeGreaterThan(1);
    expect(segs.map((g) => [g.carry, g.last])).toEqual(segs.map((_, i) => [i > 0, i === segs.length - 1]));
    segs.forEach((g, i) => i > 0 && expect(g.begin).toBe(segs[i - 1]!.end));
    for (const g of segs) expect(mobaSelectLoopIterations(g.end - g.begin, 16, 3, g.carry)).toBeLessThanOrEqual(921);
    expect(poolSegments(1024, 1000, 2100).map((g) => [g.begin, g.end, g.carry, g.last])).toEqual([
      [0, 919, false, false],
      [919, 1000, true, true],
    ]);
  });
  // Decode over 70,000 one-token blocks: unsegmented, the selection walks 70,000 candidates per
  // row (a loop whose trip count comes from data, past llvmpipe's cap on its own).
  it('decode selection over 70,000 blocks on the default device', async () => {
    expect(mobaSelectLoopIterations(70000, 16, 3, false)).toBeGreaterThan(65535);
    const r = await runCase({ T: 70000, Tq: 1, Hq: 2, Hkv: 1, D: 16, B: 1, k: 3, dtype: 'f32' });
    if (Number.isFinite(gpu.dev.loopLimit)) expect(r.segments.select).toBeGreaterThan(1);
  });
  // Decode over 3 blocks of 8,192 keys at D = 64: 215,105 loop iterations per row by the bound
  // (the head-dim loops included), so the attention is split wherever loops are capped.
  // (extended tier: D 64 pipelines of its own; the loopLimit block below splits attention in core)
  it('decode attention over 24,576 keys on the default device', tier(true), async () => {
    const r = await runCase({ T: 24576, Tq: 1, Hq: 2, Hkv: 1, D: 64, B: 8192, k: 3, dtype: 'f32', vOffset: 1 });
    if (Number.isFinite(gpu.dev.loopLimit)) expect(r.segments.attention).toBeGreaterThan(1);
  });
});

describe('moba plans with loopLimit 1024 (every split path, small sizes, on any adapter)', () => {
  const cases: [string, Case, (s: { pool: number; select: number; attention: number }) => void][] = [
    [
      'per-row attention in key ranges (f16)',
      { T: 1100, Hq: 2, Hkv: 1, D: 16, B: 500, k: 3, dtype: 'f16', target: 'gpu', extended: true },
      (s) => expect(s.attention).toBeGreaterThan(3),
    ],
    [
      'selection over 150 blocks in segments (cpu shape)',
      { T: 300, Hq: 2, Hkv: 1, D: 16, B: 2, k: 3, dtype: 'f32', target: 'cpu' },
      (s) => expect(s.select).toBeGreaterThan(1),
    ],
    [
      'pooling of 1000-token blocks in segments (decode)',
      { T: 2100, Tq: 1, Hq: 2, Hkv: 2, D: 16, B: 1000, k: 2, dtype: 'f32' },
      (s) => (expect(s.pool).toBe(2), expect(s.attention).toBeGreaterThan(1)),
    ],
    [
      'cpu shape, blocks in key ranges (bf16)',
      { T: 900, Hq: 1, Hkv: 1, D: 64, B: 420, k: 2, dtype: 'bf16', target: 'cpu' },
      (s) => expect(s.attention).toBeGreaterThan(1),
    ],
  ];
  for (const [name, c, expectSplit] of cases) {
    it(name, tier(c.extended), async () => {
      const r = await runCase({ ...c, loopLimit: 1024 });
      expectSplit(r.segments);
      // a segmented selection is the unsegmented one, exactly (same f32 scores, same order)
      if (r.segments.select > 1) expect(r.selection).toEqual((await runCase(c)).selection);
    });
  }
});

describe('moba decode over supplied block means, convenience call, bad input', () => {
  it('decode with blockMeans equals the reference fed the same means; lse optional', async () => {
    const Tk = 200,
      Hq = 4,
      Hkv = 2,
      D = 32,
      B = 32,
      k = 3;
    const rng = new Rng(99);
    const q = rng.normals(Hq * D);
    const kk = rng.normals(Tk * Hkv * D);
    const v = rng.normals(Tk * Hkv * D);
    // page means perturbed from the exact means, as a cache summary might be
    const means = mobaBlockMeansReference(kk, Tk, Hkv, D, B).map((x, i) => x + 0.3 * Math.sin(i));
    const meansF = roundTo(means, 'f32');
    const ref = mobaReference(q, kk, v, { Tq: 1, Tk, Hq, Hkv, D, blockSize: B, topk: k, blockMeans: meansF });
    const plan = await planMobaDecode(gpu.dev, { Tk, Hq, Hkv, D, blockSize: B, topk: k });
    const o = gpu.nanTensor([1, Hq, D]);
    const selection = gpu.tensor(new Int32Array(Hq * k), [1, Hq, k], 'i32');
    const enc = gpu.dev.device.createCommandEncoder();
    plan.run(enc, {
      q: gpu.tensor(q, [1, Hq, D]),
      k: gpu.tensor(kk, [Tk, Hkv, D]),
      v: gpu.tensor(v, [Tk, Hkv, D]),
      o,
      selection,
      blockMeans: gpu.tensor(meansF, [Math.ceil(Tk / B), Hkv, D]),
    });
    await gpu.dev.submitAndWait([enc.finish()]);
    plan.dispose();
    expect(Array.from(await gpu.read(selection))).toEqual(Array.from(ref.selection));
    const co = compare(await gpu.read(o), ref.o);
    expect(passes(co, TOLERANCE.f32), describeComparison(co)).toBe(true);
  });

  it('decode gates on f16 page means (the KV cache summary layout)', async () => {
    const Tk = 150,
      Hq = 2,
      Hkv = 1,
      D = 32,
      B = 16,
      k = 4;
    const rng = new Rng(123);
    const q = rng.normals(Hq * D),
      kk = rng.normals(Tk * Hkv * D),
      v = rng.normals(Tk * Hkv * D);
    const meansF16 = roundTo(mobaBlockMeansReference(kk, Tk, Hkv, D, B), 'f16');
    const ref = mobaReference(q, kk, v, { Tq: 1, Tk, Hq, Hkv, D, blockSize: B, topk: k, blockMeans: meansF16 });
    const plan = await planMobaDecode(gpu.dev, { Tk, Hq, Hkv, D, blockSize: B, topk: k, meansDtype: 'f16' });
    const o = gpu.nanTensor([1, Hq, D]);
    const selection = gpu.tensor(new Int32Array(Hq * k), [1, Hq, k], 'i32');
    const enc = gpu.dev.device.createCommandEncoder();
    plan.run(enc, {
      q: gpu.tensor(q, [1, Hq, D]),
      k: gpu.tensor(kk, [Tk, Hkv, D]),
      v: gpu.tensor(v, [Tk, Hkv, D]),
      o,
      selection,
      blockMeans: gpu.tensor(meansF16, [Math.ceil(Tk / B), Hkv, D], 'f16'),
    });
    await gpu.dev.submitAndWait([enc.finish()]);
    plan.dispose();
    expect(Array.from(await gpu.read(selection))).toEqual(Array.from(ref.selection));
    const co = compare(await gpu.read(o), ref.o);
    expect(passes(co, TOLERANCE.f32), describeComparison(co)).toBe(true);
  });

  it('topk >= number of blocks equals dense causal attention; convenience call', async () => {
    const T = 70,
      H = 2,
      D = 16;
    const rng = new Rng(5);
    const q = rng.normals(T * H * D),
      kk = rng.normals(T * H * D),
      v = rng.normals(T * H * D);
    const ref = mobaReference(q, kk, v, { Tq: T, Hq: H, Hkv: H, D, blockSize: 8, topk: 64 });
    // dense causal in float64
    const dense = new Float64Array(T * H * D);
    for (let t = 0; t < T; t++)
      for (let h = 0; h < H; h++) {
        const s: number[] = [];
        for (let j = 0; j <= t; j++) {
          let x = 0;
          for (let d = 0; d < D; d++) x += q[(t * H + h) * D + d]! * kk[(j * H + h) * D + d]!;
          s.push(x / 4);
        }
        const m = Math.max(...s);
        const p = s.map((x) => Math.exp(x - m));
        const z = p.reduce((a, b) => a + b, 0);
        for (let j = 0; j <= t; j++)
          for (let d = 0; d < D; d++) dense[(t * H + h) * D + d] += (p[j]! / z) * v[(j * H + h) * D + d]!;
      }
    expect(compare(ref.o, dense).maxAbs).toBeLessThan(1e-12);
    const o = gpu.nanTensor([T, H, D]);
    await moba(
      gpu.dev,
      { q: gpu.tensor(q, [T, H, D]), k: gpu.tensor(kk, [T, H, D]), v: gpu.tensor(v, [T, H, D]), o },
      { blockSize: 8, topk: 64 },
    );
    const co = compare(await gpu.read(o), dense);
    expect(passes(co, TOLERANCE.f32), describeComparison(co)).toBe(true);
  });

  it('rejects bad input with a TesseraError naming the argument', async () => {
    const base = { Tq: 8, Hq: 2, Hkv: 1, D: 16, blockSize: 4, topk: 2 };
    await expect(planMoba(gpu.dev, { ...base, topk: 0 })).rejects.toMatchObject({ code: 'E_ARG', argument: 'topk' });
    await expect(planMoba(gpu.dev, { ...base, topk: 65 })).rejects.toMatchObject({
      code: 'E_UNSUPPORTED',
      argument: 'topk',
    });
    await expect(planMoba(gpu.dev, { ...base, blockSize: 0 })).rejects.toMatchObject({
      code: 'E_ARG',
      argument: 'blockSize',
    });
    await expect(planMoba(gpu.dev, { ...base, blockSize: 2.5 })).rejects.toMatchObject({ argument: 'blockSize' });
    await expect(planMoba(gpu.dev, { ...base, Hq: 3, Hkv: 2 })).rejects.toMatchObject({ argument: 'Hq' });
    await expect(planMoba(gpu.dev, { ...base, D: 18 })).rejects.toMatchObject({ code: 'E_UNSUPPORTED', argument: 'D' });
    await expect(planMoba(gpu.dev, { ...base, D: 36, dtype: 'f16' })).rejects.toMatchObject({
      code: 'E_UNSUPPORTED',
      argument: 'D',
    });
    await expect(planMoba(gpu.dev, { ...base, meansDtype: 'bf16' as never })).rejects.toMatchObject({
      argument: 'meansDtype',
    });
    const plan = await planMoba(gpu.dev, base);
    const enc = gpu.dev.device.createCommandEncoder();
    const good = {
      q: gpu.nanTensor([8, 2, 16]),
      k: gpu.nanTensor([8, 1, 16]),
      v: gpu.nanTensor([8, 1, 16]),
      o: gpu.nanTensor([8, 2, 16]),
    };
    expect(() => plan.run(enc, { ...good, k: gpu.nanTensor([8, 2, 16]) })).toThrow(/k\.shape/);
    expect(() => plan.run(enc, { ...good, blockMeans: gpu.nanTensor([3, 1, 16]) })).toThrow(/blockMeans/);
    expect(() => plan.run(enc, { ...good, selection: gpu.nanTensor([8, 2, 2]) })).toThrow(/selection\.dtype/);
    plan.dispose();
    expect(() => plan.run(enc, good)).toThrow(/disposed/);
    enc.finish();
  });
});

describe('moba over a ragged batch (cuSeqlens)', () => {
  it('equals the reference run per sequence (with an empty sequence), f32 and f16', async () => {
    for (const dtype of ['f32', 'f16'] as const) {
      const cu = [0, 70, 70, 201, 205];
      const total = cu[cu.length - 1]!,
        Hq = 4,
        Hkv = 2,
        D = 32,
        B = 16,
        k = 3;
      const rng = new Rng(dtype === 'f32' ? 71 : 72);
      const q = roundTo(rng.normals(total * Hq * D), dtype),
        kk = roundTo(rng.normals(total * Hkv * D), dtype),
        v = roundTo(rng.normals(total * Hkv * D), dtype);
      const refO = new Float64Array(total * Hq * D);
      const refL = new Float64Array(total * Hq);
      for (let n = 0; n + 1 < cu.length; n++) {
        const a = cu[n]!,
          len = cu[n + 1]! - a;
        if (!len) continue;
        const r = mobaReference(
          q.subarray(a * Hq * D, (a + len) * Hq * D),
          kk.subarray(a * Hkv * D, (a + len) * Hkv * D),
          v.subarray(a * Hkv * D, (a + len) * Hkv * D),
          { Tq: len, Hq, Hkv, D, blockSize: B, topk: k },
        );
        refO.set(r.o, a * Hq * D);
        refL.set(r.lse, a * Hq);
      }
      const o = gpu.nanTensor([total, Hq, D], dtype);
      const lse = gpu.nanTensor([total, Hq]);
      await mobaVarlen(
        gpu.dev,
        {
          q: gpu.tensor(q, [total, Hq, D], dtype),
          k: gpu.tensor(kk, [total, Hkv, D], dtype),
          v: gpu.tensor(v, [total, Hkv, D], dtype),
          o,
          lse,
        },
        { cuSeqlens: cu, Hq, Hkv, D, blockSize: B, topk: k, dtype },
      );
      const co = compare(await gpu.read(o), dtype === 'f32' ? refO : roundTo(refO, dtype));
      expect(passes(co, TOLERANCE[dtype]), describeComparison(co)).toBe(true);
      const cl = compare(await gpu.read(lse), refL);
      expect(passes(cl, TOLERANCE.f16), describeComparison(cl)).toBe(true);
    }
    await expect(
      planMobaVarlen(gpu.dev, { cuSeqlens: [0, 5, 3], Hq: 2, Hkv: 1, D: 16, blockSize: 4, topk: 2 }),
    ).rejects.toMatchObject({ argument: 'cuSeqlens[2]' });
    await expect(
      planMobaVarlen(gpu.dev, { cuSeqlens: [1, 5], Hq: 2, Hkv: 1, D: 16, blockSize: 4, topk: 2 }),
    ).rejects.toMatchObject({ argument: 'cuSeqlens[0]' });
  });
});
