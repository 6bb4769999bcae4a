/**
 * Float64 reference of Quest page selection (and MoBA's mean-key variant) for one decode query,
 * and of the block bound (`block.ts`) for blocks of queries.
 */
import { f16BitsToF32 } from '../../src/tensor.js';

export interface QuestRefOptions {
  Hq: number;
  Hkv: number;
  D: number;
  pageSize: number;
  /** Tokens in the sequence (the last page may be partial). */
  T: number;
  /** Pages selected per KV head, forced ones included. */
  budgetPages: number;
  /** First pages always selected (default 1). */
  sinkPages?: number;
  mode?: 'quest' | 'mean';
  groupReduce?: 'max' | 'sum';
}

/**
 * Page scores `[Hkv, pages]` from keys `k` `[T, Hkv, D]` and query `q` `[Hq, D]`:
 * quest: max_g sum_d max(q_gd * max_d, q_gd * min_d) over the page's keys; mean: max_g q_g . mean(K).
 *
 * @example
 * const scores = questScoresReference(q, k, { Hq: 4, Hkv: 2, D: 64, pageSize: 16, T: 3000, budgetPages: 16 });
 */
export function questScoresReference(q: ArrayLike<number>, k: ArrayLike<number>, o: QuestRefOptions): Float64Array {
  const { Hq, Hkv, D, pageSize: P, T } = o;
  const pages = Math.ceil(T / P);
  const group = Hq / Hkv;
  const out = new Float64Array(Hkv * pages);
  const mn = new Float64Array(D);
  const mx = new Float64Array(D);
  const mean = new Float64Array(D);
  for (let h = 0; h < Hkv; h++) {
    for (let p = 0; p < pages; p++) {
      mn.fill(Infinity);
      mx.fill(-Infinity);
      mean.fill(0);
      const t1 = Math.min(T, (p + 1) * P);
      for (let t = p * P; t < t1; t++) {
        for (let d = 0; d < D; d++) {
          const x = k[(t * Hkv + h) * D + d]!;
          mn[d] = Math.min(mn[d]!, x);
          mx[d] = Math.max(mx[d]!, x);
          mean[d] += x / (t1 - p * P);
        }
      }
      let best = -Infinity;
      let total = 0;
      for (let g = 0; g < group; g++) {
        const qb = (h * group + g) * D;
        let s = 0;
        for (let d = 0; d < D; d++) {
          const qq = q[qb + d]!;
          s += o.mode === 'mean' ? qq * mean[d]! : Math.max(qq * mx[d]!, qq * mn[d]!);
        }
        best = Math.max(best, s);
        total += s;
      }
      out[h * pages + p] = o.groupReduce === 'sum' ? total : best;
    }
  }
  return out;
}

/**
 * Selected page indices per KV head (sorted ascending): the newest page, the sink pages (at most
 * budgetPages - 1 of them), and the
 * highest-scoring others (ties to the lower index) up to `budgetPages` in all.
 *
 * @example
 * const [pagesOfHead0] = questSelectReference(scores, 1, 188, 16); // sink, newest and 14 best pages
 */
export function questSelectReference(
  scores: ArrayLike<number>,
  Hkv: number,
  pages: number,
  budgetPages: number,
  sinkPages = 1,
): Int32Array[] {
  const out: Int32Array[] = [];
  for (let h = 0; h < Hkv; h++) {
    const forced = new Set<number>();
    // The newest page always counts; sink pages fill at most the rest of the budget.
    for (let p = 0; p < Math.min(sinkPages, pages, Math.max(0, budgetPages - 1)); p++) forced.add(p);
    if (pages > 0) forced.add(pages - 1);
    const rest: number[] = [];
    for (let p = 0; p < pages; p++) if (!forced.has(p)) rest.push(p);
    rest.sort((a, b) => scores[h * pages + b]! - scores[h * pages + a]! || a - b);
    const k = Math.max(0, budgetPages - forced.size);
    const sel = [...forced, ...rest.slice(0, k)].sort((a, b) => a - b);
    out.push(Int32Array.from(sel));
  }
  return out;
}

/**
 * Block-bound page scores in float64 (`block.ts`): for each block of `blockSize` query rows of `q`
 * (`[T, Hq, D]`; a last partial block uses its rows only), KV head and page of `summaries` (f16 bits
 * as `cache.summariesHost()` gives them: minmax `[pages, Hkv, 2, D]`, mean `[pages, Hkv, D]`):
 * quest `sum_d max(lo_d m_d, lo_d M_d, hi_d m_d, hi_d M_d)`, mean `sum_d max(lo_d mu_d, hi_d mu_d)`,
 * with `[lo, hi]` the block's per-channel query min and max over its rows and the KV head's query
 * heads. Returns `[blocks][Hkv]` arrays of `pages` scores.
 *
 * @example
 * const s = questBlockScoresReference(q, cache.summariesHost().minmax, 'quest', { T: 100, Hq: 2, Hkv: 1, D: 16, blockSize: 32, pages: 40 });
 */
export function questBlockScoresReference(
  q: ArrayLike<number>,
  summaries: Uint16Array,
  mode: 'quest' | 'mean',
  o: { T: number; Hq: number; Hkv: number; D: number; blockSize: number; pages: number },
): Float64Array[][] {
  const { T, Hq, Hkv, D, blockSize: B, pages } = o;
  const group = Hq / Hkv;
  const per = mode === 'quest' ? 2 * D : D;
  const out: Float64Array[][] = [];
  for (let b = 0; b * B < T; b++) {
    const heads: Float64Array[] = [];
    for (let h = 0; h < Hkv; h++) {
      const lo = new Float64Array(D).fill(Infinity);
      const hi = new Float64Array(D).fill(-Infinity);
      for (let t = b * B; t < Math.min(T, (b + 1) * B); t++) {
        for (let g = 0; g < group; g++) {
          for (let d = 0; d < D; d++) {
            const x = q[(t * Hq + h * group + g) * D + d]!;
            lo[d] = Math.min(lo[d]!, x);
            hi[d] = Math.max(hi[d]!, x);
          }
        }
      }
      const s = new Float64Array(pages);
      for (let p = 0; p < pages; p++) {
        const base = (p * Hkv + h) * per;
        let x = 0;
        for (let d = 0; d < D; d++) {
          const m = f16BitsToF32(summaries[base + d]!);
          const M = mode === 'quest' ? f16BitsToF32(summaries[base + D + d]!) : m;
          x += Math.max(lo[d]! * m, lo[d]! * M, hi[d]! * m, hi[d]! * M);
        }
        s[p] = x;
      }
      heads.push(s);
    }
    out.push(heads);
  }
  return out;
}
