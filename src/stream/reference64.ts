/**
 * Float64 decode attention over the stored K/V of a cache sequence, page by page from the host
 * or disk tier (memory stays at one page): the oracle for streaming exact attention at lengths
 * where no dense reference fits in memory (the needle demo's `--check-float64`).
 */
import { check, checkInt } from '../errors.js';
import { readHeadRows } from '../kv/codec.js';
import type { KvCache } from '../kv/cache.js';

export interface Reference64Options {
  /** Query heads (a multiple of the cache's Hkv); `q` holds `nq` queries of `[Hq, D]` each. */
  Hq: number;
  /** Softmax scale (default 1/sqrt(D), rounded to f32 as the kernels use it). */
  scale?: number;
  /** Called after each page with (tokens done, tokens total). */
  onProgress?: (done: number, total: number) => void;
}

/**
 * Attention of `nq` decode queries (`q`: `[nq, Hq, D]` values, each the query after the last
 * token) against all of sequence `seq`, in float64: `o` `[nq, Hq, Dv]`, `lse` `[nq, Hq]` (natural
 * log). Scores use the f32 values of `q` and the stored (decoded) keys.
 *
 * @example
 * const { o, lse } = decodeReference64(cache, seq, q, { Hq: 4 }); // q [2, 4, D]: two queries
 */
export function decodeReference64(
  cache: KvCache,
  seq: number,
  q: ArrayLike<number>,
  opts: Reference64Options,
): { o: Float64Array; lse: Float64Array } {
  const Hq = checkInt(opts?.Hq, 'Hq', { min: 1 });
  const { Hkv, D, Dv, pageSize: P } = cache;
  check(Hq % Hkv === 0, 'Hq', `a multiple of the cache's Hkv = ${Hkv}`, Hq, 'E_SHAPE');
  check(q.length % (Hq * D) === 0 && q.length > 0, 'q', `[nq, ${Hq}, ${D}] values`, q.length, 'E_SHAPE');
  const nq = q.length / (Hq * D);
  const g = Hq / Hkv;
  const scale = Math.fround(opts.scale ?? 1 / Math.sqrt(D));
  const qf = Float64Array.from(Float32Array.from(q));
  const len = cache.length(seq);
  const pages = cache.pages(seq);
  const R = nq * Hq;
  const m = new Float64Array(R).fill(-Infinity);
  const S = new Float64Array(R);
  const O = new Float64Array(R * Dv);
  const k = new Float32Array(P * D);
  const v = new Float32Array(P * Dv);
  const s = new Float64Array(P);
  for (let pi = 0; pi < pages.length; pi++) {
    const n = Math.min(P, len - pi * P);
    const bytes = cache.hostPage(pages[pi]!);
    for (let h = 0; h < Hkv; h++) {
      readHeadRows(bytes, cache.layout, 0, h, n, k);
      readHeadRows(bytes, cache.layout, 1, h, n, v);
      for (let qi = 0; qi < nq; qi++) {
        for (let j = 0; j < g; j++) {
          const r = qi * Hq + h * g + j;
          const qo = r * D;
          let pm = -Infinity;
          for (let t = 0; t < n; t++) {
            let dot = 0;
            for (let d = 0, ko = t * D; d < D; d++) dot += qf[qo + d]! * k[ko + d]!;
            s[t] = dot * scale;
            if (s[t]! > pm) pm = s[t]!;
          }
          const mNew = Math.max(m[r]!, pm);
          const f = m[r] === -Infinity ? 0 : Math.exp(m[r]! - mNew);
          let sum = S[r]! * f;
          const oo = r * Dv;
          for (let d = 0; d < Dv; d++) O[oo + d] *= f;
          for (let t = 0; t < n; t++) {
            const w = Math.exp(s[t]! - mNew);
            sum += w;
            for (let d = 0, vo = t * Dv; d < Dv; d++) O[oo + d] += w * v[vo + d]!;
          }
          S[r] = sum;
          m[r] = mNew;
        }
      }
    }
    if (opts.onProgress && (pi % 1024 === 1023 || pi === pages.length - 1))
      opts.onProgress(Math.min(len, (pi + 1) * P), len);
  }
  const lse = new Float64Array(R);
  for (let r = 0; r < R; r++) {
    lse[r] = S[r]! > 0 ? m[r]! + Math.log(S[r]!) : -Infinity;
    for (let d = 0; d < Dv; d++) O[r * Dv + d] = S[r]! > 0 ? O[r * Dv + d]! / S[r]! : 0;
  }
  return { o: O, lse };
}
