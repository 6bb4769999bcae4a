import { describe, expect, it } from 'vitest';
import { nsaVarlen, planNsa, planNsaVarlen } from '../kernels/nsa/index.js';
import { nsaReference, type NsaVariant } from '../kernels/nsa/reference.js';
import { nsaSelectLoopIterations, nsaSelectSegments } from '../kernels/nsa/nsa.js';
import { compare, describeComparison, passes, Rng, TOLERANCE } from '../src/testing.js';
import { roundTo, type FloatDType } from '../src/tensor.js';
import { useGpu } from './helpers/gpu.js';
import { tier } from './helpers/tier.js';

const gpu = useGpu();

interface Case {
  T: number;
  Tk?: number;
  Hq: number;
  Hkv: number;
  D: number;
  bs: number;
  S: number;
  W: number;
  variant: NsaVariant;
  dtype: FloatDType;
  target?: 'cpu' | 'gpu';
  scale?: number;
  /** The plan's loopLimit option (the segmented paths on any adapter). */
  loopLimit?: number;
  /** In the `extended` test tier only (npm run test:extended): a size or dim beyond the core matrix. */
  extended?: boolean;
}

/** Runs a case against the float64 reference; returns the plan's dispatch counts and the selection. */
async function runCase(c: Case) {
  const { T, Hq, Hkv, D, bs, S, W, variant, dtype, scale } = c;
  const Tk = c.Tk ?? T;
  const rng = new Rng(T * 31 + bs * 7 + S + W + Hq + Tk);
  const sig = (x: number) => 1 / (1 + Math.exp(-x));
  const q = roundTo(rng.normals(T * Hq * D), dtype);
  const k = roundTo(rng.normals(Tk * Hkv * D), dtype);
  const v = roundTo(rng.normals(Tk * Hkv * D), dtype);
  const gCmp = roundTo(rng.normals(T * Hq).map(sig), 'f32');
  const gSlc = roundTo(rng.normals(T * Hq).map(sig), 'f32');
  const gSwa = roundTo(rng.normals(T * Hq).map(sig), 'f32');
  const ref = nsaReference(
    q,
    k,
    v,
    { gCmp, gSlc, gSwa: W > 0 ? gSwa : undefined },
    { T, Tk, Hq, Hkv, D, blockSize: bs, blockCount: S, window: W, variant, scale },
  );
  const o = gpu.nanTensor([T, Hq, D], dtype);
  const blockIndices = gpu.tensor(new Int32Array(T * Hkv * S).fill(-7), [T, Hkv, S], 'i32');
  const plan = await planNsa(gpu.dev, {
    Tq: T,
    Tk,
    Hq,
    Hkv,
    D,
    blockSize: bs,
    blockCount: S,
    window: W,
    variant,
    target: c.target,
    dtype,
    scale,
    loopLimit: c.loopLimit,
  });
  const enc = gpu.dev.device.createCommandEncoder();
  plan.run(enc, {
    q: gpu.tensor(q, [T, Hq, D], dtype),
    k: gpu.tensor(k, [Tk, Hkv, D], dtype),
    v: gpu.tensor(v, [Tk, Hkv, D], dtype),
    gCmp: gpu.tensor(gCmp, [T, Hq]),
    gSlc: gpu.tensor(gSlc, [T, Hq]),
    gSwa: W > 0 ? gpu.tensor(gSwa, [T, Hq]) : undefined,
    o,
    blockIndices,
  });
  await gpu.dev.submitAndWait([enc.finish()]);
  plan.dispose();
  expect(plan.loopIterations).toBeLessThanOrEqual(0.9 * Math.min(c.loopLimit ?? Infinity, gpu.dev.loopLimit));
  const sel = await gpu.read(blockIndices);
  const G = Hq / Hkv;
  const excusedRows = new Set<number>();
  let bad = 0;
  for (let r = 0; r < T * Hkv; r++) {
    const a = new Set<number>(),
      b = new Set<number>();
    for (let i = 0; i < S; i++) {
      if (sel[r * S + i]! >= 0) a.add(sel[r * S + i]!);
      if (ref.blockIndices[r * S + i]! >= 0) b.add(ref.blockIndices[r * S + i]!);
      expect(sel[r * S + i]).toBeGreaterThanOrEqual(-1);
    }
    if (a.size !== b.size || [...a].some((x) => !b.has(x))) {
      if (ref.margin[r]! < 1e-4) excusedRows.add(r);
      else bad++;
    }
  }
  expect(bad, 'selection rows differing beyond near-ties').toBe(0);
  const got = await gpu.read(o);
  const refO = dtype === 'f32' ? ref.o : roundTo(ref.o, dtype);
  const g: number[] = [],
    r: number[] = [];
  for (let row = 0; row < T * Hq; row++) {
    const kvRow = Math.floor(row / Hq) * Hkv + Math.floor((row % Hq) / G);
    if (excusedRows.has(kvRow)) continue;
    for (let d = 0; d < D; d++) {
      g.push(got[row * D + d]!);
      r.push(refO[row * D + d]!);
    }
  }
  const co = compare(g, r);
  expect(passes(co, TOLERANCE[dtype]), describeComparison(co)).toBe(true);
  return { segments: plan.segments, selection: Int32Array.from(sel), excused: excusedRows.size };
}

describe('nsa vs float64 reference', () => {
  const cases: Case[] = [
    { T: 1, Hq: 4, Hkv: 1, D: 32, bs: 8, S: 2, W: 4, variant: 'nsa', dtype: 'f32' },
    { T: 63, Hq: 4, Hkv: 2, D: 32, bs: 16, S: 2, W: 16, variant: 'nsa', dtype: 'f32' },
    { T: 64, Hq: 2, Hkv: 2, D: 32, bs: 16, S: 3, W: 100, variant: 'nsa', dtype: 'f32' },
    { T: 65, Hq: 8, Hkv: 2, D: 64, bs: 16, S: 2, W: 0, variant: 'nsa', dtype: 'f16' },
    { T: 300, Hq: 4, Hkv: 1, D: 32, bs: 32, S: 4, W: 64, variant: 'nsa', dtype: 'f32', extended: true },
    { T: 64, Hq: 4, Hkv: 2, D: 32, bs: 8, S: 4, W: 0, variant: 'fla', dtype: 'f32' },
    { T: 300, Hq: 8, Hkv: 2, D: 32, bs: 16, S: 6, W: 32, variant: 'fla', dtype: 'f16', extended: true },
    { T: 1000, Hq: 2, Hkv: 1, D: 16, bs: 64, S: 3, W: 128, variant: 'nsa', dtype: 'f32', extended: true },
    { T: 130, Hq: 4, Hkv: 2, D: 32, bs: 16, S: 3, W: 40, variant: 'nsa', dtype: 'f32', target: 'gpu' },
    { T: 100, Hq: 2, Hkv: 2, D: 32, bs: 16, S: 3, W: 40, variant: 'fla', dtype: 'f32', target: 'cpu' },
    { T: 1, Tk: 300, Hq: 8, Hkv: 2, D: 32, bs: 16, S: 4, W: 64, variant: 'nsa', dtype: 'f32' },
    { T: 3, Tk: 129, Hq: 4, Hkv: 1, D: 32, bs: 32, S: 3, W: 40, variant: 'fla', dtype: 'f32' },
  ];
  for (const c of cases) {
    const name = `T${c.T}${c.Tk ? '-Tk' + c.Tk : ''}-H${c.Hq}-Hkv${c.Hkv}-D${c.D}-bs${c.bs}-S${c.S}-W${c.W}-${c.variant}-${c.dtype}${c.target ? '-' + c.target : ''}`;
    it(name, tier(c.extended), async () => void (await runCase(c)));
  }
});

describe('nsa loop bounds (llvmpipe stops an invocation after 65,535 loop iterations)', () => {
  it('bound functions', () => {
    expect(nsaSelectLoopIterations(4000, 16, 16, 16, false)).toBe(1 + 4000 * (16 * 6 + 16 + 3) + 1 + 17);
    const segs = nsaSelectSegments(1024, 500, 2, 16, 4);
    expect(segs.length).toBeGreaterThan(1);
    expect(segs.map((g) => [g.carry, g.last])).toEqual(segs.map((_, i) => [i > 0, i === segs.length - 1]));
    segs.forEach((g, i) => i > 0 && expect(g.begin).toBe(segs[i - 1]!.end));
    for (const g of segs) expect(nsaSelectLoopIterations(g.end - g.begin, 2, 16, 4, g.carry)).toBeLessThanOrEqual(921);
    expect(() => nsaSelectSegments(1024, 10, 64, 256, 16)).toThrow(
      expect.objectContaining({ code: 'E_LIMIT', argument: 'Hq' }),
    );
  });
  // Decode over 32,000 keys in 4,000 blocks of 8 with a group of 16 query heads: unsegmented the
  // selection runs 4,000 x (at least 19) loop iterations whose trip counts come from data
  // (460,019 by the bound). A large scale makes the block scores peaked, so the float64
  // reference's selection is not a near-tie.
  it('decode selection over 4,000 blocks on the default device', async () => {
    const r = await runCase({
      T: 1,
      Tk: 32000,
      Hq: 16,
      Hkv: 1,
      D: 16,
      bs: 8,
      S: 16,
      W: 64,
      variant: 'nsa',
      dtype: 'f32',
      scale: 4,
    });
    expect(r.excused).toBe(0);
    if (Number.isFinite(gpu.dev.loopLimit)) expect(r.segments.select).toBeGreaterThan(1);
  });
});

// The core tier keeps the smallest split case (compression and selection in segments, cpu shape);
// the gpu shape's three splits and the cpu shape's selected-block split run in the extended tier.
describe('nsa plans with loopLimit 1024 (every split path, small sizes, on any adapter)', () => {
  const gpuSplits = 'gpu variant: compression, selection and window in segments; selections exactly unsegmented';
  it(gpuSplits, tier(true), async () => {
    const c: Case = { T: 500, Hq: 4, Hkv: 2, D: 16, bs: 1, S: 4, W: 600, variant: 'nsa', dtype: 'f32', target: 'gpu' };
    const r = await runCase({ ...c, loopLimit: 1024 });
    expect([r.segments.cmp, r.segments.select, r.segments.swa].every((n) => n > 1)).toBe(true);
    expect(r.selection).toEqual((await runCase(c)).selection);
  });
  it('cpu variant: selected blocks in segments (f16)', tier(true), async () => {
    const r = await runCase({
      T: 300,
      Hq: 4,
      Hkv: 1,
      D: 16,
      bs: 100,
      S: 16,
      W: 150,
      variant: 'fla',
      dtype: 'f16',
      target: 'cpu',
      loopLimit: 1024,
    });
    expect(r.segments.slc).toBeGreaterThan(1);
  });
  it('cpu variant: compression over 420 compressed keys in segments', async () => {
    const r = await runCase({
      T: 420,
      Hq: 2,
      Hkv: 1,
      D: 64,
      bs: 1,
      S: 2,
      W: 0,
      variant: 'nsa',
      dtype: 'f32',
      target: 'cpu',
      loopLimit: 1024,
    });
    expect(r.segments.cmp).toBeGreaterThan(1);
    expect(r.segments.select).toBeGreaterThan(1);
  });
});

describe('nsa bad input', () => {
  it('rejects bad options and tensors with a TesseraError naming the argument', async () => {
    const base = { Tq: 16, Hq: 2, Hkv: 1, D: 16, blockSize: 4, blockCount: 2, window: 4 };
    await expect(planNsa(gpu.dev, { ...base, blockCount: 0 })).rejects.toMatchObject({
      code: 'E_ARG',
      argument: 'blockCount',
    });
    await expect(planNsa(gpu.dev, { ...base, blockCount: 65 })).rejects.toMatchObject({
      code: 'E_UNSUPPORTED',
      argument: 'blockCount',
    });
    await expect(planNsa(gpu.dev, { ...base, window: -1 })).rejects.toMatchObject({
      code: 'E_ARG',
      argument: 'window',
    });
    await expect(planNsa(gpu.dev, { ...base, blockSize: 0 })).rejects.toMatchObject({
      code: 'E_ARG',
      argument: 'blockSize',
    });
    await expect(planNsa(gpu.dev, { ...base, blockSize: 8192 })).rejects.toMatchObject({
      code: 'E_UNSUPPORTED',
      argument: 'blockSize',
    });
    await expect(planNsa(gpu.dev, { ...base, variant: 'x' as never })).rejects.toMatchObject({ argument: 'variant' });
    const plan = await planNsa(gpu.dev, base);
    const enc = gpu.dev.device.createCommandEncoder();
    const good = {
      q: gpu.nanTensor([16, 2, 16]),
      k: gpu.nanTensor([16, 1, 16]),
      v: gpu.nanTensor([16, 1, 16]),
      gCmp: gpu.nanTensor([16, 2]),
      gSlc: gpu.nanTensor([16, 2]),
      gSwa: gpu.nanTensor([16, 2]),
      o: gpu.nanTensor([16, 2, 16]),
    };
    expect(() => plan.run(enc, { ...good, gCmp: gpu.nanTensor([16, 3]) })).toThrow(
      expect.objectContaining({ argument: 'gCmp.shape[1]' }),
    );
    expect(() => plan.run(enc, { ...good, gSlc: gpu.nanTensor([16]) })).toThrow(
      expect.objectContaining({ argument: 'gSlc.shape' }),
    );
    expect(() => plan.run(enc, { ...good, gSwa: undefined })).toThrow(expect.objectContaining({ argument: 'gSwa' }));
    expect(() => plan.run(enc, { ...good, blockIndices: gpu.nanTensor([16, 1, 3]) })).toThrow(/blockIndices/);
    plan.dispose();
    enc.finish();
  });
});

describe('nsa over a ragged batch (cuSeqlens)', () => {
  it('equals the reference run per sequence, with selections', async () => {
    const cu = [0, 50, 50, 131];
    const total = 131,
      Hq = 4,
      Hkv = 2,
      D = 32,
      bs = 16,
      S = 3,
      W = 20;
    const rng = new Rng(77);
    const sig = (x: number) => 1 / (1 + Math.exp(-x));
    const f32 = (a: Float64Array) => roundTo(a, 'f32');
    const q = f32(rng.normals(total * Hq * D)),
      k = f32(rng.normals(total * Hkv * D)),
      v = f32(rng.normals(total * Hkv * D));
    const gCmp = f32(rng.normals(total * Hq).map(sig)),
      gSlc = f32(rng.normals(total * Hq).map(sig)),
      gSwa = f32(rng.normals(total * Hq).map(sig));
    const refO = new Float64Array(total * Hq * D);
    const refSel = new Int32Array(total * Hkv * S);
    for (let n = 0; n + 1 < cu.length; n++) {
      const a = cu[n]!,
        len = cu[n + 1]! - a;
      if (!len) continue;
      const sl = (x: Float64Array, w: number) => x.subarray(a * w, (a + len) * w);
      const r = nsaReference(
        sl(q, Hq * D),
        sl(k, Hkv * D),
        sl(v, Hkv * D),
        { gCmp: sl(gCmp, Hq), gSlc: sl(gSlc, Hq), gSwa: sl(gSwa, Hq) },
        { T: len, Hq, Hkv, D, blockSize: bs, blockCount: S, window: W },
      );
      refO.set(r.o, a * Hq * D);
      refSel.set(r.blockIndices, a * Hkv * S);
    }
    const o = gpu.nanTensor([total, Hq, D]);
    const blockIndices = gpu.tensor(new Int32Array(total * Hkv * S), [total, Hkv, S], 'i32');
    await nsaVarlen(
      gpu.dev,
      {
        q: gpu.tensor(q, [total, Hq, D]),
        k: gpu.tensor(k, [total, Hkv, D]),
        v: gpu.tensor(v, [total, Hkv, D]),
        gCmp: gpu.tensor(gCmp, [total, Hq]),
        gSlc: gpu.tensor(gSlc, [total, Hq]),
        gSwa: gpu.tensor(gSwa, [total, Hq]),
        o,
        blockIndices,
      },
      { cuSeqlens: cu, Hq, Hkv, D, blockSize: bs, blockCount: S, window: W },
    );
    const co = compare(await gpu.read(o), refO);
    expect(passes(co, TOLERANCE.f32), describeComparison(co)).toBe(true);
    const sel = await gpu.read(blockIndices);
    for (let r = 0; r < total * Hkv; r++) {
      const a = new Set(Array.from(sel.subarray(r * S, r * S + S)).filter((x) => x >= 0));
      const b = new Set(Array.from(refSel.subarray(r * S, r * S + S)).filter((x) => x >= 0));
      expect([...a].sort()).toEqual([...b].sort());
    }
    await expect(
      planNsaVarlen(gpu.dev, { cuSeqlens: [0, 4, 2], Hq, Hkv, D, blockSize: bs, blockCount: S }),
    ).rejects.toMatchObject({ argument: 'cuSeqlens[2]' });
  });
});
