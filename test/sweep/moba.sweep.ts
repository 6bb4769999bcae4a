/**
 * MoBA prefill and decode (Tq < Tk, bottom-right), GQA, block sizes, top-k (k >= blocks included),
 * dtypes, optional supplied block means; selections equal the reference's except near-ties (rows
 * whose k-th/(k+1)-th gate margin is below the dtype's tolerance are excused and left out).
 */
import fc from 'fast-check';
import { planMoba } from '../../kernels/moba/index.js';
import { mobaBlockMeansReference, mobaReference } from '../../kernels/moba/reference.js';
import { roundTo, type FloatDType } from '../../src/tensor.js';
import { Rng, TOLERANCE } from '../../src/testing.js';
import { all, defineSweep, gen, selectionDiff, within, type SweepSize } from './run.js';

export interface MobaConfig {
  Tq: number;
  Tk: number;
  Hq: number;
  Hkv: number;
  D: number;
  B: number;
  k: number;
  dtype: FloatDType;
  means: boolean;
  lse: boolean;
  seed: number;
}

export const mobaSweep = defineSweep<MobaConfig>({
  family: 'moba',
  arb: (size: SweepSize) =>
    fc
      .record({
        Tk: fc.integer({ min: 1, max: size === 'small' ? 48 : 400 }),
        decode: fc.oneof(
          { arbitrary: fc.constant(0), weight: 3 },
          { arbitrary: fc.integer({ min: 1, max: 4 }), weight: 1 },
        ),
        heads: gen.heads(2, 4),
        D: fc.constantFrom(...(size === 'small' ? [16] : [8, 16, 32, 48, 64])), // the subset keeps one head dim: few pipelines to compile
        B: fc.constantFrom(...(size === 'small' ? [4, 8, 16] : [1, 3, 8, 16, 32, 64, 100])),
        k: fc.oneof(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 64 })),
        dtype:
          size === 'small' ? fc.constantFrom('f32' as const, 'f16' as const) : gen.dtype({ f32: 3, f16: 2, bf16: 0 }),
        means: fc.boolean(),
        lse: fc.boolean(),
        seed: gen.seed(),
      })
      .map((r) => ({
        Tq: r.decode ? Math.min(r.decode, r.Tk) : r.Tk,
        Tk: r.Tk,
        Hq: r.heads.Hq,
        Hkv: r.heads.Hkv,
        D: r.D,
        B: r.B,
        k: r.k,
        dtype: r.dtype,
        means: r.means,
        lse: r.lse,
        seed: r.seed,
      })),
  async check(b, c) {
    const rng = new Rng(c.seed);
    const q = roundTo(rng.normals(c.Tq * c.Hq * c.D), c.dtype);
    const k = roundTo(rng.normals(c.Tk * c.Hkv * c.D), c.dtype);
    const v = roundTo(rng.normals(c.Tk * c.Hkv * c.D), c.dtype);
    const NB = Math.ceil(c.Tk / c.B);
    const means = c.means
      ? roundTo(
          mobaBlockMeansReference(k, c.Tk, c.Hkv, c.D, c.B).map((x, i) => x + 0.3 * Math.sin(i)),
          'f32',
        )
      : undefined;
    const ref = mobaReference(q, k, v, {
      Tq: c.Tq,
      Tk: c.Tk,
      Hq: c.Hq,
      Hkv: c.Hkv,
      D: c.D,
      blockSize: c.B,
      topk: c.k,
      blockMeans: means,
    });
    const plan = await planMoba(b.dev, {
      Tq: c.Tq,
      Tk: c.Tk,
      Hq: c.Hq,
      Hkv: c.Hkv,
      D: c.D,
      blockSize: c.B,
      topk: c.k,
      dtype: c.dtype,
    });
    const o = b.nan([c.Tq, c.Hq, c.D], c.dtype);
    const lse = c.lse ? b.nan([c.Tq, c.Hq]) : undefined;
    const selection = b.nan([c.Tq, c.Hq, c.k], 'i32');
    await b.runPlan(
      plan,
      {
        q: b.tensor(q, [c.Tq, c.Hq, c.D], c.dtype),
        k: b.tensor(k, [c.Tk, c.Hkv, c.D], c.dtype),
        v: b.tensor(v, [c.Tk, c.Hkv, c.D], c.dtype),
        o,
        lse,
        selection,
        blockMeans: means && b.tensor(means, [NB, c.Hkv, c.D]),
      },
      'sweep.moba',
    );
    const tieTol = c.dtype === 'f32' ? 1e-4 : 1e-2;
    const diff = selectionDiff(await b.read(selection), ref.selection, c.k);
    const excused = new Set<number>();
    for (const r of diff) {
      if (ref.margin[r]! < tieTol) excused.add(r);
      else
        return `selection: row ${r} (t ${Math.floor(r / c.Hq)}, head ${r % c.Hq}) differs beyond a near-tie (margin ${ref.margin[r]})`;
    }
    const go = await b.read(o);
    const gl = lse ? await b.read(lse) : undefined;
    const refO = c.dtype === 'f32' ? ref.o : roundTo(ref.o, c.dtype);
    const keep = (x: ArrayLike<number>, w: number) => Array.from(x).filter((_, i) => !excused.has(Math.floor(i / w)));
    return all(
      within('o', keep(go, c.D), keep(refO, c.D), TOLERANCE[c.dtype]),
      gl ? within('lse', keep(gl, 1), keep(ref.lse, 1), c.dtype === 'f32' ? TOLERANCE.f32 : TOLERANCE.f16) : null,
    );
  },
});
