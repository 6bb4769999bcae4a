/**
 * NSA prefill: both variants (native-sparse-attention and fla), GQA groups, block sizes, block
 * counts, windows (0 = no window branch), dtypes, sigmoid gates; selection near-ties excused as
 * in test/nsa.test.ts.
 */
import fc from 'fast-check';
import { planNsa } from '../../kernels/nsa/index.js';
import { nsaReference, type NsaVariant } from '../../kernels/nsa/reference.js';
import { roundTo, type FloatDType } from '../../src/tensor.js';
import { Rng, TOLERANCE } from '../../src/testing.js';
import { defineSweep, gen, selectionDiff, within, type SweepSize } from './run.js';

export interface NsaConfig {
  T: number;
  Hq: number;
  Hkv: number;
  D: number;
  bs: number;
  S: number;
  W: number;
  variant: NsaVariant;
  dtype: FloatDType;
  indices: boolean;
  seed: number;
}

export const nsaSweep = defineSweep<NsaConfig>({
  family: 'nsa',
  arb: (size: SweepSize) =>
    fc
      .record({
        T: fc.integer({ min: 1, max: size === 'small' ? 48 : 300 }),
        heads: gen.heads(2, 4),
        D: fc.constantFrom(...(size === 'small' ? [16] : [8, 16, 32, 64])), // the subset keeps one head dim: few pipelines to compile
        bs: fc.constantFrom(...(size === 'small' ? [4, 8, 16] : [1, 4, 8, 16, 32, 64])),
        S: fc.oneof(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 64 })),
        W: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: size === 'small' ? 48 : 300 })),
        variant: fc.constantFrom<NsaVariant>('nsa', 'fla'),
        dtype:
          size === 'small' ? fc.constantFrom('f32' as const, 'f16' as const) : gen.dtype({ f32: 3, f16: 2, bf16: 0 }),
        indices: fc.boolean(),
        seed: gen.seed(),
      })
      .map((r) => ({
        T: r.T,
        Hq: r.heads.Hq,
        Hkv: r.heads.Hkv,
        D: r.D,
        bs: r.bs,
        S: r.S,
        W: r.W,
        variant: r.variant,
        dtype: r.dtype,
        indices: r.indices,
        seed: r.seed,
      })),
  async check(b, c) {
    const rng = new Rng(c.seed);
    const sig = (x: number) => 1 / (1 + Math.exp(-x));
    const q = roundTo(rng.normals(c.T * c.Hq * c.D), c.dtype);
    const k = roundTo(rng.normals(c.T * c.Hkv * c.D), c.dtype);
    const v = roundTo(rng.normals(c.T * c.Hkv * c.D), c.dtype);
    const gCmp = roundTo(rng.normals(c.T * c.Hq).map(sig), 'f32');
    const gSlc = roundTo(rng.normals(c.T * c.Hq).map(sig), 'f32');
    const gSwa = roundTo(rng.normals(c.T * c.Hq).map(sig), 'f32');
    const ref = nsaReference(
      q,
      k,
      v,
      { gCmp, gSlc, gSwa: c.W > 0 ? gSwa : undefined },
      { T: c.T, Hq: c.Hq, Hkv: c.Hkv, D: c.D, blockSize: c.bs, blockCount: c.S, window: c.W, variant: c.variant },
    );
    const plan = await planNsa(b.dev, {
      Tq: c.T,
      Hq: c.Hq,
      Hkv: c.Hkv,
      D: c.D,
      blockSize: c.bs,
      blockCount: c.S,
      window: c.W,
      variant: c.variant,
      dtype: c.dtype,
    });
    const o = b.nan([c.T, c.Hq, c.D], c.dtype);
    // selected blocks are needed to excuse near-ties; with indices: false the check is numeric only
    const blockIndices = b.nan([c.T, c.Hkv, c.S], 'i32');
    await b.runPlan(
      plan,
      {
        q: b.tensor(q, [c.T, c.Hq, c.D], c.dtype),
        k: b.tensor(k, [c.T, c.Hkv, c.D], c.dtype),
        v: b.tensor(v, [c.T, c.Hkv, c.D], c.dtype),
        gCmp: b.tensor(gCmp, [c.T, c.Hq]),
        gSlc: b.tensor(gSlc, [c.T, c.Hq]),
        gSwa: c.W > 0 ? b.tensor(gSwa, [c.T, c.Hq]) : undefined,
        o,
        blockIndices: c.indices ? blockIndices : undefined,
      },
      'sweep.nsa',
    );
    const excused = new Set<number>();
    if (c.indices) {
      const sel = await b.read(blockIndices);
      for (let i = 0; i < sel.length; i++) if (sel[i]! < -1) return `blockIndices[${i}] = ${sel[i]} (not written)`;
      for (const r of selectionDiff(sel, ref.blockIndices, c.S)) {
        if (ref.margin[r]! < 1e-4 || (c.dtype !== 'f32' && ref.margin[r]! < 1e-2)) excused.add(r);
        else
          return `blockIndices: row ${r} (t ${Math.floor(r / c.Hkv)}, kv head ${r % c.Hkv}) differs beyond a near-tie (margin ${ref.margin[r]})`;
      }
    } else {
      // without the selection output, excuse every row whose selection is a near-tie
      for (let r = 0; r < c.T * c.Hkv; r++) if (ref.margin[r]! < (c.dtype === 'f32' ? 1e-4 : 1e-2)) excused.add(r);
    }
    const G = c.Hq / c.Hkv;
    const go = await b.read(o);
    const refO = c.dtype === 'f32' ? ref.o : roundTo(ref.o, c.dtype);
    const g: number[] = [];
    const r: number[] = [];
    for (let row = 0; row < c.T * c.Hq; row++) {
      const kvRow = Math.floor(row / c.Hq) * c.Hkv + Math.floor((row % c.Hq) / G);
      if (excused.has(kvRow)) continue;
      for (let d = 0; d < c.D; d++) {
        g.push(go[row * c.D + d]!);
        r.push(refO[row * c.D + d]!);
      }
    }
    return within('o', g, r, TOLERANCE[c.dtype]);
  },
});
