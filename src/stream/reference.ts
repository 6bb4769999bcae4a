/**
 * Float64 references for the streaming paths that have no single-kernel reference: sparse prefill
 * (`prefill.ts`: per-block page scores from the summaries, and the attention over the selected
 * pages plus the chunk's causal part) and the exact merge of per-device partials (`split.ts`).
 */
import { f16BitsToF32 } from '../tensor.js';

export interface PrefillRefOptions {
  Tq: number;
  /** Tokens in the sequence, chunk included (the chunk is the last Tq). */
  Tk: number;
  Hq: number;
  Hkv: number;
  D: number;
  Dv?: number;
  pageSize: number;
  blockSize: number;
  scale?: number;
}

/**
 * Block scores `[blocks][Hkv][contextPages]` from the cache's host summaries (f16 bits, as
 * `cache.summariesHost()` gives them): quest: max over the block's queries and the KV head's
 * query heads of `sum_d max(q_d * max_d, q_d * min_d)`; mean: the same max of `q . mean`.
 *
 * @example
 * const s = prefillScoresReference(q, cache.summariesHost().minmax, 'quest', { Tq, Tk, Hq, Hkv, D, pageSize: 64, blockSize: 64 });
 */
export function prefillScoresReference(
  q: ArrayLike<number>,
  summaries: Uint16Array,
  mode: 'quest' | 'mean',
  o: PrefillRefOptions,
): Float64Array[][] {
  const { Tq, Tk, Hq, Hkv, D, pageSize: P, blockSize: B } = o;
  const c = Math.floor((Tk - Tq) / P);
  const group = Hq / Hkv;
  const nb = Math.ceil(Tq / B);
  const per = mode === 'quest' ? 2 * D : D;
  const sv = new Float64Array(c * Hkv * per);
  for (let i = 0; i < sv.length; i++) sv[i] = f16BitsToF32(summaries[i]!);
  const out: Float64Array[][] = [];
  for (let b = 0; b < nb; b++) {
    const heads: Float64Array[] = [];
    for (let h = 0; h < Hkv; h++) {
      const s = new Float64Array(c).fill(-Infinity);
      for (let t = b * B; t < Math.min(Tq, (b + 1) * B); t++) {
        for (let g = 0; g < group; g++) {
          const qb = (t * Hq + h * group + g) * D;
          for (let p = 0; p < c; p++) {
            const base = (p * Hkv + h) * per;
            let x = 0;
            for (let d = 0; d < D; d++) {
              const qq = q[qb + d]!;
              x += mode === 'quest' ? Math.max(qq * sv[base + D + d]!, qq * sv[base + d]!) : qq * sv[base + d]!;
            }
            if (x > s[p]!) s[p] = x;
          }
        }
      }
      heads.push(s);
    }
    out.push(heads);
  }
  return out;
}

/**
 * Sparse prefill attention in float64: query t (block b = floor(t / blockSize), absolute position
 * Tk - Tq + t) of head hq (KV head h) attends to the tokens of the context pages `selected[b][h]`
 * and to the tokens from the chunk's first page start up to its own position.
 *
 * @example
 * const ref = sparsePrefillReference(q, k, v, stats.selected, { Tq, Tk, Hq, Hkv, D, pageSize: 64, blockSize: 64 });
 */
export function sparsePrefillReference(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  selected: readonly (readonly ArrayLike<number>[])[],
  o: PrefillRefOptions,
): { o: Float64Array; lse: Float64Array } {
  const { Tq, Tk, Hq, Hkv, D, pageSize: P, blockSize: B } = o;
  const Dv = o.Dv ?? D;
  const scale = o.scale ?? 1 / Math.sqrt(D);
  const qPos0 = Tk - Tq;
  const c = Math.floor(qPos0 / P);
  const group = Hq / Hkv;
  const out = new Float64Array(Tq * Hq * Dv);
  const lse = new Float64Array(Tq * Hq);
  for (let t = 0; t < Tq; t++) {
    const b = Math.floor(t / B);
    for (let hq = 0; hq < Hq; hq++) {
      const h = Math.floor(hq / group);
      const toks: number[] = [];
      for (const p of Array.from(selected[b]![h]!))
        for (let j = p * P; j < Math.min(Tk, (p + 1) * P); j++) toks.push(j);
      for (let j = c * P; j <= qPos0 + t; j++) toks.push(j);
      const qb = (t * Hq + hq) * D;
      const s = toks.map((j) => {
        let x = 0;
        for (let d = 0; d < D; d++) x += q[qb + d]! * k[(j * Hkv + h) * D + d]!;
        return x * scale;
      });
      const m = Math.max(...s);
      let l = 0;
      const r = t * Hq + hq;
      toks.forEach((j, i) => {
        const p = Math.exp(s[i]! - m);
        l += p;
        for (let d = 0; d < Dv; d++) out[r * Dv + d] += p * v[(j * Hkv + h) * Dv + d]!;
      });
      for (let d = 0; d < Dv; d++) out[r * Dv + d] /= l;
      lse[r] = m + Math.log(l);
    }
  }
  return { o: out, lse };
}

/**
 * Exact float64 merge of per-device partials over disjoint key sets: `parts[i] = { o [rows, Dv],
 * lse [rows] }` (natural log; -inf = the device saw no key) into the attention over the union.
 *
 * @example
 * const { o, lse } = mergePartialsF64([{ o: o0, lse: l0 }, { o: o1, lse: l1 }], Hq, 128);
 */
export function mergePartialsF64(
  parts: readonly { o: ArrayLike<number>; lse: ArrayLike<number> }[],
  rows: number,
  Dv: number,
): { o: Float64Array; lse: Float64Array } {
  const o = new Float64Array(rows * Dv);
  const lse = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity;
    for (const p of parts) m = Math.max(m, p.lse[r]!);
    if (m === -Infinity) {
      lse[r] = -Infinity;
      continue;
    }
    let s = 0;
    for (const p of parts) {
      const l = p.lse[r]!;
      if (l === -Infinity) continue;
      const w = Math.exp(l - m);
      s += w;
      for (let d = 0; d < Dv; d++) o[r * Dv + d] += w * p.o[r * Dv + d]!;
    }
    for (let d = 0; d < Dv; d++) o[r * Dv + d] /= s;
    lse[r] = m + Math.log(s);
  }
  return { o, lse };
}
