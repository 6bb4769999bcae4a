/**
 * DeepSeek sparse attention (lightning indexer + top-k token selection + gathered attention):
 * GQA, indexer heads/dims, top-k (k >= T included), row chunks, both gather targets, dtypes;
 * selections equal the reference's except near-ties (margin < 1e-3 excused and left out).
 */
import fc from 'fast-check';
import { planDsa } from '../../kernels/dsa/index.js';
import { dsaReference } from '../../kernels/dsa/reference.js';
import { roundTo, type FloatDType } from '../../src/tensor.js';
import { Rng, TOLERANCE } from '../../src/testing.js';
import { all, defineSweep, gen, selectionDiff, within, type SweepSize } from './run.js';

export interface DsaConfig {
  T: number;
  Hq: number;
  Hkv: number;
  D: number;
  HI: number;
  DI: number;
  topk: number;
  dtype: FloatDType;
  rowChunk?: number;
  target: 'auto' | 'cpu' | 'gpu';
  seed: number;
}

export const dsaSweep = defineSweep<DsaConfig>({
  family: 'dsa',
  arb: (size: SweepSize) =>
    fc
      .record({
        T: fc.integer({ min: 1, max: size === 'small' ? 48 : 300 }),
        heads: gen.heads(2, 4),
        D: fc.constantFrom(...(size === 'small' ? [16] : [8, 16, 32, 64])), // the subset keeps one head dim: few pipelines to compile
        HI: fc.integer({ min: 1, max: 4 }),
        DI: fc.constantFrom(...(size === 'small' ? [8, 16] : [8, 16, 32])),
        topk: fc.oneof(fc.integer({ min: 1, max: 16 }), fc.integer({ min: 1, max: size === 'small' ? 64 : 512 })),
        dtype: gen.dtype({ f32: 3, f16: 2, bf16: 0 }),
        rowChunk: fc.option(fc.integer({ min: 1, max: 100 }), { nil: undefined }),
        target: fc.constantFrom('auto' as const, 'cpu' as const, 'gpu' as const),
        seed: gen.seed(),
      })
      .map((r) => ({
        T: r.T,
        Hq: r.heads.Hq,
        Hkv: r.heads.Hkv,
        D: r.D,
        HI: r.HI,
        DI: r.DI,
        topk: r.topk,
        dtype: r.dtype,
        rowChunk: r.rowChunk,
        target: r.target,
        seed: r.seed,
      })),
  async check(b, c) {
    const rng = new Rng(c.seed);
    const r = (n: number, s = 1) => roundTo(rng.normals(n, s), c.dtype);
    const q = r(c.T * c.Hq * c.D),
      k = r(c.T * c.Hkv * c.D),
      v = r(c.T * c.Hkv * c.D);
    const qI = r(c.T * c.HI * c.DI),
      kI = r(c.T * c.DI),
      w = r(c.T * c.HI, 0.5);
    const ref = dsaReference(
      q,
      k,
      v,
      { qI, kI, w },
      { T: c.T, Hq: c.Hq, Hkv: c.Hkv, D: c.D, HI: c.HI, DI: c.DI, topk: c.topk },
    );
    const S = Math.min(c.topk, c.T);
    const plan = await planDsa(b.dev, {
      Tq: c.T,
      Hq: c.Hq,
      Hkv: c.Hkv,
      D: c.D,
      HI: c.HI,
      DI: c.DI,
      topk: c.topk,
      dtype: c.dtype,
      rowChunk: c.rowChunk,
      target: c.target,
    });
    const o = b.nan([c.T, c.Hq, c.D], c.dtype);
    const lse = b.nan([c.T, c.Hq]);
    const indices = b.nan([c.T, S], 'i32');
    await b.runPlan(
      plan,
      {
        q: b.tensor(q, [c.T, c.Hq, c.D], c.dtype),
        k: b.tensor(k, [c.T, c.Hkv, c.D], c.dtype),
        v: b.tensor(v, [c.T, c.Hkv, c.D], c.dtype),
        qI: b.tensor(qI, [c.T, c.HI, c.DI], c.dtype),
        kI: b.tensor(kI, [c.T, c.DI], c.dtype),
        w: b.tensor(w, [c.T, c.HI], c.dtype),
        o,
        lse,
        indices,
      },
      'sweep.dsa',
    );
    const excused = new Set<number>();
    // the reference's index rows are topk wide (padded with -1), the kernel's min(topk, T)
    const W = ref.indices.length / c.T;
    const gotI = await b.read(indices);
    const widened = new Float64Array(c.T * W).fill(-1);
    for (let t = 0; t < c.T; t++) for (let i = 0; i < S; i++) widened[t * W + i] = gotI[t * S + i]!;
    for (const t of selectionDiff(widened, ref.indices, W)) {
      if (ref.margin[t]! < 1e-3) excused.add(t);
      else return `indices: row ${t} differs beyond a near-tie (margin ${ref.margin[t]})`;
    }
    const got = await b.read(o);
    const gl = await b.read(lse);
    const refO = c.dtype === 'f32' ? ref.o : roundTo(ref.o, c.dtype);
    const go: number[] = [],
      ro: number[] = [],
      gL: number[] = [],
      rL: number[] = [];
    for (let row = 0; row < c.T * c.Hq; row++) {
      if (excused.has(Math.floor(row / c.Hq))) continue;
      for (let d = 0; d < c.D; d++) {
        go.push(got[row * c.D + d]!);
        ro.push(refO[row * c.D + d]!);
      }
      gL.push(gl[row]!);
      rL.push(ref.lse[row]!);
    }
    return all(within('o', go, ro, TOLERANCE[c.dtype]), within('lse', gL, rL, TOLERANCE.f32));
  },
});
