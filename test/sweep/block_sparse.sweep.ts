/**
 * Block-sparse attention over a BSR mask: Tq != Tk, GQA, R x C blocks, one pattern / per kv head /
 * per query head, random densities with empty block rows, causal or not, D != Dv, dtypes.
 */
import fc from 'fast-check';
import { planBlockSparse } from '../../kernels/block_sparse/index.js';
import { blockSparseReference } from '../../kernels/block_sparse/reference.js';
import { roundTo, type FloatDType } from '../../src/tensor.js';
import { Rng, TOLERANCE } from '../../src/testing.js';
import { all, defineSweep, gen, within, type SweepSize } from './run.js';

export interface BlockSparseConfig {
  Tq: number;
  Tk: number;
  Hq: number;
  Hkv: number;
  D: number;
  Dv: number;
  R: number;
  C: number;
  P: 'one' | 'kv' | 'q';
  density: number;
  causal: boolean;
  dtype: FloatDType;
  lse: boolean;
  seed: number;
}

export const blockSparseSweep = defineSweep<BlockSparseConfig>({
  family: 'block_sparse',
  arb: (size: SweepSize) =>
    fc
      .record({
        Tq: fc.integer({ min: 1, max: size === 'small' ? 48 : 300 }),
        extraK: fc.integer({ min: -20, max: size === 'small' ? 48 : 300 }),
        heads: gen.heads(2, 4),
        D: fc.constantFrom(...(size === 'small' ? [16] : [8, 16, 32, 64])), // the subset keeps one head dim: few pipelines to compile
        DvSame: fc.boolean(),
        Dv: fc.constantFrom(...(size === 'small' ? [8] : [8, 16, 32, 64])),
        R: fc.constantFrom(...(size === 'small' ? [4, 8, 16] : [1, 4, 8, 16, 32, 64, 128, 256])),
        C: fc.constantFrom(...(size === 'small' ? [4, 8, 16] : [1, 4, 8, 16, 32, 64, 100])),
        P: fc.constantFrom('one' as const, 'kv' as const, 'q' as const),
        density: fc.constantFrom(0, 0.2, 0.5, 1),
        causal: fc.boolean(),
        dtype: gen.dtype({ f32: 3, f16: 2, bf16: 0 }),
        lse: fc.boolean(),
        seed: gen.seed(),
      })
      .map((r) => ({
        Tq: r.Tq,
        Tk: Math.max(1, r.Tq + r.extraK),
        Hq: r.heads.Hq,
        Hkv: r.heads.Hkv,
        D: r.D,
        Dv: r.DvSame ? r.D : r.Dv,
        R: r.R,
        C: r.C,
        P: r.P,
        density: r.density,
        causal: r.causal,
        dtype: r.dtype,
        lse: r.lse,
        seed: r.seed,
      })),
  async check(b, c) {
    const rng = new Rng(c.seed);
    const MB = Math.ceil(c.Tq / c.R);
    const NB = Math.ceil(c.Tk / c.C);
    const P = c.P === 'one' ? 1 : c.P === 'kv' ? c.Hkv : c.Hq;
    const pats = Array.from({ length: P }, () => {
      const indptr = [0];
      const indices: number[] = [];
      for (let r = 0; r < MB; r++) {
        for (let j = 0; j < NB; j++) if (rng.next() < c.density) indices.push(j);
        indptr.push(indices.length);
      }
      return { indptr, indices };
    });
    const indptr = P === 1 ? pats[0]!.indptr : pats.map((x) => x.indptr);
    const indices = P === 1 ? pats[0]!.indices : pats.map((x) => x.indices);
    const q = roundTo(rng.normals(c.Tq * c.Hq * c.D), c.dtype);
    const k = roundTo(rng.normals(c.Tk * c.Hkv * c.D), c.dtype);
    const v = roundTo(rng.normals(c.Tk * c.Hkv * c.Dv), c.dtype);
    const ref = blockSparseReference(q, k, v, {
      Tq: c.Tq,
      Tk: c.Tk,
      Hq: c.Hq,
      Hkv: c.Hkv,
      D: c.D,
      Dv: c.Dv,
      R: c.R,
      C: c.C,
      indptr,
      indices,
      causal: c.causal,
    });
    const plan = await planBlockSparse(b.dev, {
      Tq: c.Tq,
      Tk: c.Tk,
      Hq: c.Hq,
      Hkv: c.Hkv,
      D: c.D,
      Dv: c.Dv,
      R: c.R,
      C: c.C,
      indptr,
      indices,
      causal: c.causal,
      dtype: c.dtype,
    });
    const o = b.nan([c.Tq, c.Hq, c.Dv], c.dtype);
    const lse = c.lse ? b.nan([c.Tq, c.Hq]) : undefined;
    await b.runPlan(
      plan,
      {
        q: b.tensor(q, [c.Tq, c.Hq, c.D], c.dtype),
        k: b.tensor(k, [c.Tk, c.Hkv, c.D], c.dtype),
        v: b.tensor(v, [c.Tk, c.Hkv, c.Dv], c.dtype),
        o,
        lse,
      },
      'sweep.block_sparse',
    );
    return all(
      within('o', await b.read(o), c.dtype === 'f32' ? ref.o : roundTo(ref.o, c.dtype), TOLERANCE[c.dtype]),
      lse ? within('lse', await b.read(lse), ref.lse, TOLERANCE.f32) : null,
    );
  },
});
