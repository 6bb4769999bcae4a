import { describe, expect, it } from 'vitest';
import { dsa, dsaVarlen, planDsa } from '../kernels/dsa/index.js';
import { dsaReference } from '../kernels/dsa/reference.js';
import { indexerLoopIterations, indexerSegments } from '../kernels/dsa/dsa.js';
import { attentionReference } from '../kernels/dense/reference.js';
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
  HI: number;
  DI: number;
  topk: number;
  dtype: FloatDType;
  rowChunk?: number;
  target?: 'cpu' | 'gpu';
  noIndices?: boolean;
  /** Index inputs other than random normals (e.g. scores with a clear top-k). */
  index?: (T: number, Tk: number) => { qI: Float64Array; kI: Float64Array; w: Float64Array };
  /** The plan's loopLimit option (the segmented paths on any adapter). */
  loopLimit?: number;
  /** In the `extended` test tier only (npm run test:extended): a size or dim beyond the core matrix. */
  extended?: boolean;
}

/** Runs a case against the float64 reference; returns the plan's dispatch counts and the selection. */
async function runCase(c: Case) {
  const { T, Hq, Hkv, D, HI, DI, topk, dtype } = c;
  const Tk = c.Tk ?? T;
  const rng = new Rng(T * 17 + topk + HI * 3 + Hq + Tk);
  const r = (n: number, s = 1) => roundTo(rng.normals(n, s), dtype);
  const q = r(T * Hq * D),
    k = r(Tk * Hkv * D),
    v = r(Tk * Hkv * D);
  let qI = r(T * HI * DI),
    kI = r(Tk * DI),
    w = r(T * HI, 0.5);
  if (c.index) ({ qI, kI, w } = c.index(T, Tk));
  const ref = dsaReference(q, k, v, { qI, kI, w }, { T, Tk, Hq, Hkv, D, HI, DI, topk });
  const S = Math.min(topk, Tk);
  const o = gpu.nanTensor([T, Hq, D], dtype);
  const lse = gpu.nanTensor([T, Hq]);
  const indices = gpu.tensor(new Int32Array(T * S).fill(-7), [T, S], 'i32');
  const plan = await planDsa(gpu.dev, {
    Tq: T,
    Tk,
    Hq,
    Hkv,
    D,
    HI,
    DI,
    topk,
    dtype,
    rowChunk: c.rowChunk,
    target: c.target,
    loopLimit: c.loopLimit,
  });
  const enc = gpu.dev.device.createCommandEncoder();
  plan.run(enc, {
    q: gpu.tensor(q, [T, Hq, D], dtype),
    k: gpu.tensor(k, [Tk, Hkv, D], dtype),
    v: gpu.tensor(v, [Tk, Hkv, D], dtype),
    qI: gpu.tensor(qI, [T, HI, DI], dtype),
    kI: gpu.tensor(kI, [Tk, DI], dtype),
    w: gpu.tensor(w, [T, HI], dtype),
    o,
    lse,
    indices: c.noIndices ? undefined : indices,
  });
  await gpu.dev.submitAndWait([enc.finish()]);
  plan.dispose();
  expect(plan.loopIterations).toBeLessThanOrEqual(0.9 * Math.min(c.loopLimit ?? Infinity, gpu.dev.loopLimit));
  const sel = c.noIndices ? ref.indices : await gpu.read(indices);
  const excused = new Set<number>();
  let bad = 0;
  for (let t = 0; t < T; t++) {
    const a = new Set<number>(),
      b = new Set<number>();
    for (let i = 0; i < S; i++) {
      if (sel[t * S + i]! >= 0) a.add(sel[t * S + i]!);
      if (ref.indices[t * S + i]! >= 0) b.add(ref.indices[t * S + i]!);
    }
    if (a.size !== b.size || [...a].some((x) => !b.has(x))) {
      if (ref.margin[t]! < 1e-3) excused.add(t);
      else bad++;
    }
  }
  expect(bad, 'selection rows differing beyond near-ties').toBe(0);
  const got = await gpu.read(o),
    lg = await gpu.read(lse);
  const refO = dtype === 'f32' ? ref.o : roundTo(ref.o, dtype);
  const go: number[] = [],
    ro: number[] = [],
    gl: number[] = [],
    rl: number[] = [];
  for (let row = 0; row < T * Hq; row++) {
    if (excused.has(Math.floor(row / Hq))) continue;
    for (let d = 0; d < D; d++) {
      go.push(got[row * D + d]!);
      ro.push(refO[row * D + d]!);
    }
    gl.push(lg[row]!);
    rl.push(ref.lse[row]!);
  }
  const co = compare(go, ro);
  expect(passes(co, TOLERANCE[dtype]), describeComparison(co)).toBe(true);
  const cl = compare(gl, rl);
  expect(passes(cl, TOLERANCE.f32), describeComparison(cl)).toBe(true);
  return { segments: plan.segments, selection: Int32Array.from(sel), excused: excused.size };
}

/** Index scores I[t, s] = s (one index head; dims past the first are 0): the top-k is the newest k tokens, no near-ties. */
const rampIndex = (DI: number) => (T: number, Tk: number) => ({
  qI: Float64Array.from({ length: T * DI }, (_, i) => (i % DI === 0 ? 1 : 0)),
  kI: Float64Array.from({ length: Tk * DI }, (_, i) => (i % DI === 0 ? i / DI : 0)),
  w: new Float64Array(T).fill(1),
});

describe('dsa vs float64 reference', () => {
  const cases: Case[] = [
    { T: 1, Hq: 4, Hkv: 1, D: 32, HI: 4, DI: 16, topk: 8, dtype: 'f32' },
    { T: 63, Hq: 4, Hkv: 1, D: 32, HI: 4, DI: 16, topk: 16, dtype: 'f32' },
    { T: 64, Hq: 2, Hkv: 2, D: 64, HI: 2, DI: 32, topk: 5, dtype: 'f32', extended: true },
    { T: 65, Hq: 8, Hkv: 2, D: 32, HI: 8, DI: 16, topk: 32, dtype: 'f16' },
    { T: 300, Hq: 4, Hkv: 1, D: 32, HI: 4, DI: 32, topk: 64, dtype: 'f32', rowChunk: 77 },
    { T: 300, Hq: 2, Hkv: 1, D: 16, HI: 2, DI: 16, topk: 40, dtype: 'f32', target: 'gpu' },
    { T: 400, Hq: 2, Hkv: 1, D: 16, HI: 2, DI: 8, topk: 96, dtype: 'f32', extended: true },
    { T: 200, Hq: 4, Hkv: 1, D: 32, HI: 2, DI: 16, topk: 48, dtype: 'f32', noIndices: true, rowChunk: 50 },
    { T: 1, Tk: 300, Hq: 4, Hkv: 1, D: 32, HI: 2, DI: 16, topk: 40, dtype: 'f32' },
    { T: 5, Tk: 130, Hq: 2, Hkv: 1, D: 32, HI: 2, DI: 16, topk: 128, dtype: 'f32', noIndices: true },
  ];
  for (const c of cases) {
    const name = `T${c.T}${c.Tk ? '-Tk' + c.Tk : ''}-H${c.Hq}-Hkv${c.Hkv}-D${c.D}-HI${c.HI}-DI${c.DI}-k${c.topk}-${c.dtype}${c.rowChunk ? '-chunk' + c.rowChunk : ''}${c.target ? '-' + c.target : ''}${c.noIndices ? '-noidx' : ''}`;
    it(name, tier(c.extended), async () => void (await runCase(c)));
  }

  // DeepSeek-V3.2's DSA over MLA latents: one KV head, q/k latents of 576 (512 + 64 rope), values
  // the 512-dim latents; the indexer's top-k picks tokens (ramp scores: no near-ties), the core
  // attends them as token lists (rows past the top-k) or all causal keys (the first rows). In the
  // extended tier: pipelines of head dims no other test uses.
  for (const target of ['cpu', 'gpu'] as const) {
    const name = `MLA latents (Hq 4, Hkv 1, Dqk 576, Dv 512): top-k over the latents equals the reference (${target})`;
    it(name, tier(true), async () => {
      const T = 20,
        Hq = 4,
        D = 576,
        Dv = 512,
        DI = 8,
        topk = 6,
        scale = 1 / Math.sqrt(192);
      const rng = new Rng(576);
      const q = rng.normals(T * Hq * D),
        k = rng.normals(T * D),
        v = rng.normals(T * Dv);
      const { qI, kI, w } = rampIndex(DI)(T, T);
      const ref = dsaReference(q, k, v, { qI, kI, w }, { T, Hq, Hkv: 1, D, Dv, HI: 1, DI, topk, scale });
      const o = gpu.nanTensor([T, Hq, Dv]);
      const lse = gpu.nanTensor([T, Hq]);
      const indices = gpu.tensor(new Int32Array(T * topk).fill(-7), [T, topk], 'i32');
      await dsa(
        gpu.dev,
        {
          q: gpu.tensor(q, [T, Hq, D]),
          k: gpu.tensor(k, [T, 1, D]),
          v: gpu.tensor(v, [T, 1, Dv]),
          qI: gpu.tensor(qI, [T, 1, DI]),
          kI: gpu.tensor(kI, [T, DI]),
          w: gpu.tensor(w, [T, 1]),
          o,
          lse,
          indices,
        },
        { topk, scale, target },
      );
      expect(Array.from(await gpu.read(indices))).toEqual(Array.from(ref.indices));
      const co = compare(await gpu.read(o), ref.o);
      expect(passes(co, TOLERANCE.f32), describeComparison(co)).toBe(true);
      const cl = compare(await gpu.read(lse), ref.lse);
      expect(passes(cl, TOLERANCE.f32), describeComparison(cl)).toBe(true);
    });
  }

  it('k >= T equals dense causal attention (convenience call)', async () => {
    const T = 70,
      Hq = 4,
      Hkv = 1,
      D = 32,
      HI = 2,
      DI = 8;
    const rng = new Rng(11);
    const q = rng.normals(T * Hq * D),
      k = rng.normals(T * D),
      v = rng.normals(T * D);
    const dense = attentionReference(q, k, v, { Tq: T, Tk: T, Hq, Hkv, D, causal: true });
    const o = gpu.nanTensor([T, Hq, D]);
    await dsa(
      gpu.dev,
      {
        q: gpu.tensor(q, [T, Hq, D]),
        k: gpu.tensor(k, [T, Hkv, D]),
        v: gpu.tensor(v, [T, Hkv, D]),
        qI: gpu.tensor(rng.normals(T * HI * DI), [T, HI, DI]),
        kI: gpu.tensor(rng.normals(T * DI), [T, DI]),
        w: gpu.tensor(rng.normals(T * HI), [T, HI]),
        o,
      },
      { topk: 2048 },
    );
    const co = compare(await gpu.read(o), dense.o);
    expect(passes(co, TOLERANCE.f32), describeComparison(co)).toBe(true);
  });
});

describe('dsa bad input', () => {
  it('rejects bad options and tensors with a TesseraError naming the argument', async () => {
    const base = { T: 16, Hq: 2, D: 16, HI: 2, DI: 8, topk: 4 };
    await expect(planDsa(gpu.dev, { ...base, topk: 0 })).rejects.toMatchObject({ code: 'E_ARG', argument: 'topk' });
    await expect(planDsa(gpu.dev, { ...base, topk: 5000 })).rejects.toMatchObject({
      code: 'E_UNSUPPORTED',
      argument: 'topk',
    });
    await expect(planDsa(gpu.dev, { ...base, DI: 6 })).rejects.toMatchObject({ code: 'E_UNSUPPORTED', argument: 'DI' });
    await expect(planDsa(gpu.dev, { ...base, HI: 0 })).rejects.toMatchObject({ argument: 'HI' });
    await expect(planDsa(gpu.dev, { ...base, Hkv: 3 })).rejects.toMatchObject({ argument: 'Hq' });
    const plan = await planDsa(gpu.dev, base);
    const enc = gpu.dev.device.createCommandEncoder();
    const good = {
      q: gpu.nanTensor([16, 2, 16]),
      k: gpu.nanTensor([16, 1, 16]),
      v: gpu.nanTensor([16, 1, 16]),
      qI: gpu.nanTensor([16, 2, 8]),
      kI: gpu.nanTensor([16, 8]),
      w: gpu.nanTensor([16, 2]),
      o: gpu.nanTensor([16, 2, 16]),
    };
    expect(() => plan.run(enc, { ...good, w: gpu.nanTensor([16, 3]) })).toThrow(
      expect.objectContaining({ argument: 'w.shape[1]' }),
    );
    expect(() => plan.run(enc, { ...good, kI: gpu.nanTensor([16, 2, 8]) })).toThrow(
      expect.objectContaining({ argument: 'kI.shape' }),
    );
    expect(() => plan.run(enc, { ...good, indices: gpu.nanTensor([16, 5]) })).toThrow(/indices/);
    plan.dispose();
    enc.finish();
  });
});

describe('dsa over a ragged batch (cuSeqlens)', () => {
  it('equals the reference run per sequence', async () => {
    const cu = [0, 40, 40, 110];
    const total = 110,
      Hq = 4,
      Hkv = 1,
      D = 32,
      HI = 2,
      DI = 16,
      topk = 24;
    const rng = new Rng(91);
    const f32 = (a: Float64Array) => roundTo(a, 'f32');
    const q = f32(rng.normals(total * Hq * D)),
      k = f32(rng.normals(total * D)),
      v = f32(rng.normals(total * D));
    const qI = f32(rng.normals(total * HI * DI)),
      kI = f32(rng.normals(total * DI)),
      w = f32(rng.normals(total * HI));
    const refO = new Float64Array(total * Hq * D);
    for (let n = 0; n + 1 < cu.length; n++) {
      const a = cu[n]!,
        len = cu[n + 1]! - a;
      if (!len) continue;
      const sl = (x: Float64Array, wd: number) => x.subarray(a * wd, (a + len) * wd);
      const r = dsaReference(
        sl(q, Hq * D),
        sl(k, D),
        sl(v, D),
        { qI: sl(qI, HI * DI), kI: sl(kI, DI), w: sl(w, HI) },
        { T: len, Hq, Hkv, D, HI, DI, topk },
      );
      refO.set(r.o, a * Hq * D);
    }
    // exact ties (index scores of exactly 0 after the ReLU) break to the lower token on both sides
    const o = gpu.nanTensor([total, Hq, D]);
    await dsaVarlen(
      gpu.dev,
      {
        q: gpu.tensor(q, [total, Hq, D]),
        k: gpu.tensor(k, [total, Hkv, D]),
        v: gpu.tensor(v, [total, Hkv, D]),
        qI: gpu.tensor(qI, [total, HI, DI]),
        kI: gpu.tensor(kI, [total, DI]),
        w: gpu.tensor(w, [total, HI]),
        o,
      },
      { cuSeqlens: cu, Hq, Hkv, D, HI, DI, topk },
    );
    const co = compare(await gpu.read(o), refO);
    expect(passes(co, TOLERANCE.f32), describeComparison(co)).toBe(true);
  });
});

describe('dsa loop bounds (llvmpipe stops an invocation after 65,535 loop iterations)', () => {
  it('bound functions', () => {
    expect(indexerLoopIterations(64, 128)).toBe(2183);
    const segs = indexerSegments(1024, 8, 512);
    expect(segs.map((g) => [g.begin, g.carry])).toEqual(segs.map((_, i) => [i * segs[0]!.end, i > 0]));
    for (const g of segs) expect(indexerLoopIterations(g.end - g.begin, 512)).toBeLessThanOrEqual(921);
    expect(indexerSegments(65535, 64, 128)).toHaveLength(1);
  });
  // 256 index heads of 1,024 dims: unsegmented one indexer invocation runs 256 x 258 + 7 =
  // 66,055 loop iterations (the 256-step dot product loop is too long to unroll).
  it('indexer with 256 heads of 1,024 dims on the default device', async () => {
    expect(indexerLoopIterations(256, 1024)).toBeGreaterThan(65535);
    const r = await runCase({ T: 1, Tk: 64, Hq: 2, Hkv: 1, D: 16, HI: 256, DI: 1024, topk: 16, dtype: 'f32' });
    if (Number.isFinite(gpu.dev.loopLimit)) expect(r.segments.indexer).toBeGreaterThan(1);
  });
  // 2,048 selected tokens at D = 64: the former gather walked them as 2,048 one-token blocks
  // (79,925 loop iterations per row, past llvmpipe's cap); the core attends a token list as one
  // run of keys (17,669 by its bound on the cpu shape, 5,545 on gpu), so one invocation suffices.
  for (const target of ['cpu', 'gpu'] as const) {
    it(`attention over 2,048 selected tokens on the default device (${target} shape)`, async () => {
      const r = await runCase({
        T: 1,
        Tk: 4096,
        Hq: 2,
        Hkv: 1,
        D: 64,
        HI: 1,
        DI: 8,
        topk: 2048,
        dtype: 'f32',
        target,
        index: rampIndex(8),
      });
      expect(r.excused).toBe(0);
      expect(r.segments.attention).toBe(1);
    });
  }
});

describe('dsa plans with loopLimit 1024 (every split path, small sizes, on any adapter)', () => {
  it('indexer over head groups: the selection exactly unsegmented', async () => {
    const c: Case = { T: 40, Hq: 2, Hkv: 1, D: 16, HI: 8, DI: 512, topk: 8, dtype: 'f32' };
    const r = await runCase({ ...c, loopLimit: 1024 });
    expect(r.segments.indexer).toBeGreaterThan(1);
    expect(r.selection).toEqual((await runCase(c)).selection);
  });
  // One test per variant: the cpu variant in the core tier, the gpu variant (430 rows of the gpu
  // shape, slow on a CPU adapter) in the extended tier.
  for (const target of ['cpu', 'gpu'] as const) {
    it(
      `selected-token and keep-everything attention in segments (f16, ${target} variant)`,
      tier(target === 'gpu'),
      async () => {
        // the gpu shape takes 64 keys per loop step: it needs more tokens to pass the budget
        const topk = target === 'gpu' ? 400 : 120;
        const r = await runCase({
          T: topk + 30,
          Hq: 2,
          Hkv: 1,
          D: 64,
          HI: 1,
          DI: 8,
          topk,
          dtype: 'f16',
          target,
          index: rampIndex(8),
          loopLimit: 1024,
        });
        expect(r.excused).toBe(0);
        expect(r.segments.attention).toBeGreaterThan(1);
        expect(r.segments.attentionAll).toBeGreaterThan(1);
      },
    );
  }
});
