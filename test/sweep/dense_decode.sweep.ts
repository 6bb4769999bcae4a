/**
 * Dense decode (split-K then merge): one query per sequence over kvLens[n] keys (0 allowed), any
 * kvChunk (one split or many), GQA, D != Dv, windows with sinks, sink logits, dtypes, lse on/off,
 * against `attentionReference` per sequence (Tq = 1, bottom-right: the query sits after its keys).
 */
import fc from 'fast-check';
import { planDecode } from '../../kernels/dense/index.js';
import { attentionReference } from '../../kernels/dense/reference.js';
import { roundTo, type FloatDType } from '../../src/tensor.js';
import { Rng, TOLERANCE } from '../../src/testing.js';
import { all, defineSweep, gen, within, type SweepSize } from './run.js';

export interface DecodeConfig {
  kvLens: number[];
  kvChunk?: number;
  Hq: number;
  Hkv: number;
  D: number;
  Dv: number;
  window: number;
  sinks: number;
  sinkLogit: boolean;
  dtype: FloatDType;
  outF32: boolean;
  lse: boolean;
  seed: number;
}

export const denseDecodeSweep = defineSweep<DecodeConfig>({
  family: 'dense_decode',
  arb: (size: SweepSize) => {
    const dims = size === 'small' ? [4, 8, 16, 32] : [4, 8, 12, 16, 32, 48, 64, 80, 96, 128];
    const maxLen = size === 'small' ? 80 : 1200;
    return fc
      .record({
        kvLens: fc.array(
          fc.oneof(
            { arbitrary: fc.integer({ min: 0, max: maxLen }), weight: 5 },
            { arbitrary: fc.constant(0), weight: 1 },
          ),
          { minLength: 1, maxLength: size === 'small' ? 3 : 6 },
        ),
        kvChunk: fc.option(fc.integer({ min: 1, max: size === 'small' ? 40 : 400 }), { nil: undefined }),
        heads: gen.heads(size === 'small' ? 2 : 4, 4),
        D: fc.constantFrom(...dims),
        DvSame: fc.boolean(),
        Dv: fc.constantFrom(...dims),
        window: fc.oneof(
          { arbitrary: fc.constant(0), weight: 2 },
          { arbitrary: fc.integer({ min: 1, max: maxLen }), weight: 1 },
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
        const Dv = r.DvSame ? r.D : r.Dv;
        // the batch needs at least one key (documented E_ARG); single sequences may still be empty
        const kvLens = r.kvLens.some((x) => x > 0) ? r.kvLens : [...r.kvLens.slice(0, -1), 1];
        return {
          kvLens,
          kvChunk: r.kvChunk,
          Hq: r.heads.Hq,
          Hkv: r.heads.Hkv,
          D: r.D,
          Dv,
          window: r.window,
          sinks: r.window > 0 ? r.sinks : 0,
          sinkLogit: r.sinkLogit,
          dtype: r.dtype,
          outF32: r.outF32 || (r.dtype !== 'f32' && Dv % 2 !== 0),
          lse: r.lse,
          seed: r.seed,
        };
      });
  },
  async check(b, c) {
    const N = c.kvLens.length;
    const Tk = c.kvLens.reduce((a, x) => a + x, 0);
    const rng = new Rng(c.seed);
    const outDtype: FloatDType = c.outF32 ? 'f32' : c.dtype;
    const q = roundTo(rng.normals(N * c.Hq * c.D), c.dtype);
    const k = roundTo(rng.normals(Tk * c.Hkv * c.D), c.dtype);
    const v = roundTo(rng.normals(Tk * c.Hkv * c.Dv), c.dtype);
    const sinkLogits = c.sinkLogit ? roundTo(rng.normals(c.Hq, 2), 'f32') : undefined;
    const refO = new Float64Array(N * c.Hq * c.Dv);
    const refL = new Float64Array(N * c.Hq);
    let k0 = 0;
    for (let n = 0; n < N; n++) {
      const tk = c.kvLens[n]!;
      const r = attentionReference(
        q.subarray(n * c.Hq * c.D, (n + 1) * c.Hq * c.D),
        k.subarray(k0 * c.Hkv * c.D, (k0 + tk) * c.Hkv * c.D),
        v.subarray(k0 * c.Hkv * c.Dv, (k0 + tk) * c.Hkv * c.Dv),
        {
          Tq: 1,
          Tk: tk,
          Hq: c.Hq,
          Hkv: c.Hkv,
          D: c.D,
          Dv: c.Dv,
          causal: true,
          window: c.window,
          sinks: c.sinks,
          sinkLogits,
        },
      );
      refO.set(r.o, n * c.Hq * c.Dv);
      refL.set(r.lse, n * c.Hq);
      k0 += tk;
    }
    const plan = await planDecode(b.dev, {
      kvLens: c.kvLens,
      kvChunk: c.kvChunk,
      Hq: c.Hq,
      Hkv: c.Hkv,
      D: c.D,
      Dv: c.Dv,
      window: c.window,
      sinks: c.sinks,
      sinkLogit: c.sinkLogit,
      dtype: c.dtype,
      outDtype,
    });
    const o = b.nan([N, c.Hq, c.Dv], outDtype);
    const lse = c.lse ? b.nan([N, c.Hq]) : undefined;
    await b.runPlan(
      plan,
      {
        q: b.tensor(q, [N, c.Hq, c.D], c.dtype),
        k: b.tensor(k, [Tk, c.Hkv, c.D], c.dtype),
        v: b.tensor(v, [Tk, c.Hkv, c.Dv], c.dtype),
        o,
        lse,
        sinkLogits: sinkLogits && b.tensor(sinkLogits, [c.Hq]),
      },
      'sweep.dense_decode',
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
