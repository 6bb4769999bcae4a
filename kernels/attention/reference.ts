/**
 * Float64 references of the attention core: the ragged batch in terms of the dense reference
 * (one sequence at a time, bottom-right aligned), and a page decoder that reads K/V back out of
 * pool bytes through a CSR page table (an independent reading of the page layout in page.ts).
 */
import { bf16BitsToF32, f16BitsToF32 } from '../../src/tensor.js';
import { attentionReference, type AttentionReferenceOptions } from '../dense/reference.js';
import { KV_DTYPE_BYTES, type PageLayout } from './page.js';

/** The dense reference's options without the lengths (each sequence of the batch has its own). */
export type BatchReferenceOptions = Omit<AttentionReferenceOptions, 'Tq' | 'Tk'>;

/**
 * Attention of a ragged batch: `q [qoIndptr[B], Hq, D]`; sequence b's keys `seqs[b].k [L_b, Hkv, D]`,
 * `seqs[b].v [L_b, Hkv, Dv]`; query i of its n new tokens sits at position L_b - n + i.
 * Returns `o [totalQ, Hq, Dv]`, `lse [totalQ, Hq]` (natural log; -inf for a row that sees no key
 * and has no sink logit, with o = 0).
 *
 * @example
 * const { o, lse } = batchAttentionReference(q, [{ k, v }], [0, 1], { Hq: 8, Hkv: 2, D: 64 });
 */
export function batchAttentionReference(
  q: ArrayLike<number>,
  seqs: readonly { k: ArrayLike<number>; v: ArrayLike<number> }[],
  qoIndptr: ArrayLike<number>,
  opts: BatchReferenceOptions,
): { o: Float64Array; lse: Float64Array } {
  const { Hq, Hkv, D } = opts;
  const Dv = opts.Dv ?? D;
  const totalQ = qoIndptr[seqs.length]!;
  const o = new Float64Array(totalQ * Hq * Dv);
  const lse = new Float64Array(totalQ * Hq);
  seqs.forEach((s, b) => {
    const q0 = qoIndptr[b]!;
    const n = qoIndptr[b + 1]! - q0;
    if (n === 0) return;
    const L = s.k.length / (Hkv * D);
    const qs = Array.prototype.slice.call(q, q0 * Hq * D, (q0 + n) * Hq * D) as number[];
    const r = attentionReference(qs, s.k, s.v, {
      Tq: n,
      Tk: L,
      Hq,
      Hkv,
      D,
      Dv,
      causal: opts.causal ?? true,
      scale: opts.scale,
      window: opts.window,
      sinks: opts.sinks,
      sinkLogits: opts.sinkLogits,
    });
    o.set(r.o, q0 * Hq * Dv);
    lse.set(r.lse, q0 * Hq);
  });
  return { o, lse };
}

/**
 * Reads sequence b's keys and values `[L, Hkv, D]`, `[L, Hkv, Dv]` (f64) out of pool bytes through
 * the page table.
 */
export function readPagedSequence(
  pool: Uint8Array,
  L: PageLayout,
  kvIndptr: ArrayLike<number>,
  kvIndices: ArrayLike<number>,
  kvLastPageLen: ArrayLike<number>,
  b: number,
): { k: Float64Array; v: Float64Array } {
  const np = kvIndptr[b + 1]! - kvIndptr[b]!;
  const len = np > 0 ? (np - 1) * L.pageSize + kvLastPageLen[b]! : 0;
  const k = new Float64Array(len * L.Hkv * L.D);
  const v = new Float64Array(len * L.Hkv * L.Dv);
  const dv = new DataView(pool.buffer, pool.byteOffset, pool.byteLength);
  const eb = KV_DTYPE_BYTES[L.dtype];
  const el = (off: number, scale: number): number => {
    if (L.dtype === 'f32') return dv.getFloat32(off, true);
    if (L.dtype === 'f16') return f16BitsToF32(dv.getUint16(off, true));
    if (L.dtype === 'bf16') return bf16BitsToF32(dv.getUint16(off, true));
    return (Math.max(-127, dv.getInt8(off)) / 127) * scale;
  };
  for (let t = 0; t < len; t++) {
    const slot = kvIndices[kvIndptr[b]! + Math.floor(t / L.pageSize)]!;
    const row = t % L.pageSize;
    const base = slot * L.pageBytes;
    for (let h = 0; h < L.Hkv; h++) {
      const ks = L.dtype === 'int8' ? dv.getFloat32(base + L.scaleOffset + 4 * (h * L.pageSize + row), true) : 1;
      const vs =
        L.dtype === 'int8' ? dv.getFloat32(base + L.scaleOffset + 4 * ((L.Hkv + h) * L.pageSize + row), true) : 1;
      for (let d = 0; d < L.D; d++)
        k[(t * L.Hkv + h) * L.D + d] = el(base + h * L.kHeadBytes + (row * L.D + d) * eb, ks);
      for (let d = 0; d < L.Dv; d++)
        v[(t * L.Hkv + h) * L.Dv + d] = el(base + L.vOffset + h * L.vHeadBytes + (row * L.Dv + d) * eb, vs);
    }
  }
  return { k, v };
}
