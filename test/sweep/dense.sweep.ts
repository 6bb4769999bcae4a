/**
 * Dense attention prefill: one sequence (Tq, Tk with bottom-right causal alignment) or a ragged
 * batch, GQA, D != Dv, causal / full, sliding window with sinks, per-head sink logits, f32 / f16 /
 * bf16 storage, lse on or off, against `attentionReference` per sequence.
 */
import fc from 'fast-check';
import { planAttention } from '../../kernels/dense/index.js';
import { attentionReference } from '../../kernels/dense/reference.js';
import { roundTo, type FloatDType } from '../../src/tensor.js';
import { Rng, TOLERANCE } from '../../src/testing.js';
import { all, defineSweep, gen, within, type SweepSize } from './run.js';

export interface DenseConfig {
  /** Ragged batch (cuSeqlensQ / cuSeqlensK) or one sequence (Tq, Tk). */
  cuQ: number[];
  cuK: number[];
  ragged: boolean;
  Hq: number;
  Hkv: number;
  D: number;
  Dv: number;
  causal: boolean;
  window: number;
  sinks: number;
  sinkLogit: boolean;
  dtype: FloatDType;
  outF32: boolean;
  lse: boolean;
  seed: number;
}

const DIMS_SMALL = [4, 8, 12, 16];
const DIMS_FULL = [4, 8, 12, 16, 32, 48, 64, 80, 96, 128];

export function denseArb(size: SweepSize): fc.Arbitrary<DenseConfig> {
  const maxT = size === 'small' ? 24 : 160;
  const dims = size === 'small' ? DIMS_SMALL : DIMS_FULL;
  return fc
    .record({
      lens: fc.array(fc.record({ tq: fc.integer({ min: 0, max: maxT }), extraK: fc.integer({ min: -8, max: maxT }) }), {
        minLength: 1,
        maxLength: size === 'small' ? 3 : 4,
      }),
      ragged: fc.boolean(),
      heads: gen.heads(size === 'small' ? 2 : 4, 4),
      D: fc.constantFrom(...dims),
      DvSame: fc.boolean(),
      Dv: fc.constantFrom(...dims),
      causal: fc.oneof({ arbitrary: fc.constant(true), weight: 3 }, { arbitrary: fc.constant(false), weight: 1 }),
      window: fc.oneof(
        { arbitrary: fc.constant(0), weight: 2 },
        { arbitrary: fc.integer({ min: 1, max: maxT }), weight: 2 },
      ),
      sinks: fc.oneof(
        { arbitrary: fc.constant(0), weight: 2 },
        { arbitrary: fc.integer({ min: 1, max: 8 }), weight: 1 },
      ),
      sinkLogit: fc.oneof({ arbitrary: fc.constant(false), weight: 3 }, { arbitrary: fc.constant(true), weight: 1 }),
      dtype: gen.dtype(),
      outF32: fc.boolean(),
      lse: fc.boolean(),
      seed: gen.seed(),
    })
    .map((r) => {
      const ragged = r.ragged && r.lens.length > 1;
      const lens = ragged ? r.lens : r.lens.slice(0, 1);
      const cuQ = [0];
      const cuK = [0];
      for (const l of lens) {
        // one sequence: Tq, Tk >= 1; ragged: empty sequences allowed
        const tq = ragged ? l.tq : Math.max(1, l.tq);
        const tk = Math.max(ragged ? 0 : 1, tq + l.extraK);
        cuQ.push(cuQ[cuQ.length - 1]! + tq);
        cuK.push(cuK[cuK.length - 1]! + tk);
      }
      if (cuQ[cuQ.length - 1] === 0) cuQ[cuQ.length - 1] = 1; // at least one query token in all
      const window = r.causal ? r.window : 0;
      const Dv = r.DvSame ? r.D : r.Dv;
      // 16-bit outputs need an even Dv (documented E_UNSUPPORTED)
      const outF32 = r.outF32 || (r.dtype !== 'f32' && Dv % 2 !== 0);
      return {
        cuQ,
        cuK,
        ragged,
        Hq: r.heads.Hq,
        Hkv: r.heads.Hkv,
        D: r.D,
        Dv,
        causal: r.causal,
        window,
        sinks: window > 0 ? r.sinks : 0,
        sinkLogit: r.sinkLogit,
        dtype: r.dtype,
        outF32,
        lse: r.lse,
        seed: r.seed,
      };
    });
}

export const denseSweep = defineSweep<DenseConfig>({
  family: 'dense',
  arb: denseArb,
  async check(b, c) {
    const Tq = c.cuQ[c.cuQ.length - 1]!;
    const Tk = c.cuK[c.cuK.length - 1]!;
    const rng = new Rng(c.seed);
    const outDtype: FloatDType = c.outF32 ? 'f32' : c.dtype;
    const q = roundTo(rng.normals(Tq * c.Hq * c.D), c.dtype);
    const k = roundTo(rng.normals(Math.max(Tk, 0) * c.Hkv * c.D), c.dtype);
    const v = roundTo(rng.normals(Math.max(Tk, 0) * c.Hkv * c.Dv), c.dtype);
    const sinkLogits = c.sinkLogit ? roundTo(rng.normals(c.Hq, 2), 'f32') : undefined;
    const refO = new Float64Array(Tq * c.Hq * c.Dv);
    const refL = new Float64Array(Tq * c.Hq);
    for (let n = 0; n + 1 < c.cuQ.length; n++) {
      const q0 = c.cuQ[n]!,
        tq = c.cuQ[n + 1]! - q0,
        k0 = c.cuK[n]!,
        tk = c.cuK[n + 1]! - k0;
      if (tq === 0) continue;
      const r = attentionReference(
        q.subarray(q0 * c.Hq * c.D, (q0 + tq) * c.Hq * c.D),
        k.subarray(k0 * c.Hkv * c.D, (k0 + tk) * c.Hkv * c.D),
        v.subarray(k0 * c.Hkv * c.Dv, (k0 + tk) * c.Hkv * c.Dv),
        {
          Tq: tq,
          Tk: tk,
          Hq: c.Hq,
          Hkv: c.Hkv,
          D: c.D,
          Dv: c.Dv,
          causal: c.causal,
          window: c.window,
          sinks: c.sinks,
          sinkLogits,
        },
      );
      refO.set(r.o, q0 * c.Hq * c.Dv);
      refL.set(r.lse, q0 * c.Hq);
    }
    const shape = c.ragged ? { cuSeqlensQ: c.cuQ, cuSeqlensK: c.cuK } : { Tq, Tk };
    const plan = await planAttention(b.dev, {
      ...shape,
      Hq: c.Hq,
      Hkv: c.Hkv,
      D: c.D,
      Dv: c.Dv,
      causal: c.causal,
      window: c.window,
      sinks: c.sinks,
      sinkLogit: c.sinkLogit,
      dtype: c.dtype,
      outDtype,
    } as Parameters<typeof planAttention>[1]);
    const o = b.nan([Tq, c.Hq, c.Dv], outDtype);
    const lse = c.lse ? b.nan([Tq, c.Hq]) : undefined;
    await b.runPlan(
      plan,
      {
        q: b.tensor(q, [Tq, c.Hq, c.D], c.dtype),
        k: b.tensor(k, [Tk, c.Hkv, c.D], c.dtype),
        v: b.tensor(v, [Tk, c.Hkv, c.Dv], c.dtype),
        o,
        lse,
        sinkLogits: sinkLogits && b.tensor(sinkLogits, [c.Hq]),
      },
      'sweep.dense',
    );
    return all(
      within(
        'o',
        await b.read(o),
        outDtype === 'f32' ? refO : roundTo(refO, outDtype),
        TOLERANCE[outDtype === 'f32' ? c.dtype : outDtype],
      ),
      lse ? within('lse', await b.read(lse), refL, c.dtype === 'f32' ? TOLERANCE.f32 : TOLERANCE.f16) : null,
    );
  },
});
