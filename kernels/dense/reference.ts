/**
 * Float64 reference for dense softmax attention: the definition the kernels are tested against.
 *
 * Layouts (row-major, one sequence): `q [Tq, Hq, D]`, `k [Tk, Hkv, D]`, `v [Tk, Hkv, Dv]`,
 * `o [Tq, Hq, Dv]`, `lse [Tq, Hq]` (natural log). Query head `h` uses kv head
 * `floor(h / (Hq / Hkv))`.
 *
 * Visibility of key `j` to query row `i` (see {@link keyVisible}): with `causal`, query `i` sits at
 * absolute position `pos = Tk - Tq + i` (bottom-right aligned) and sees `j <= pos`; with a window
 * `W > 0` additionally `pos - W < j`, except that the first `sinks` keys stay visible (still
 * `j <= pos`). A per-head sink logit `s_h` adds `exp(s_h)` to the softmax denominator (a virtual
 * key with a zero value): `lse' = logaddexp(lse, s_h)`, `o' = o * exp(lse - lse')`.
 * A row that sees no key (and has no sink logit) gives `o = 0`, `lse = -inf`.
 */
export interface AttentionReferenceOptions {
  Tq: number;
  /** Keys (default Tq). */
  Tk?: number;
  Hq: number;
  Hkv: number;
  D: number;
  /** Value head dim (default D). */
  Dv?: number;
  /** Default true. */
  causal?: boolean;
  /** Default 1/sqrt(D). */
  scale?: number;
  /** Sliding window W (0 or undefined: none). Causal only. */
  window?: number;
  /** First S keys always visible with a window (default 0). */
  sinks?: number;
  /** Per-query-head sink logits `[Hq]` (MiMo), natural-log units. */
  sinkLogits?: ArrayLike<number>;
}

/**
 * Whether key `j` is visible to the query at absolute position `pos` (see module docs).
 *
 * @example
 * keyVisible(3, 10, true, 4, 0); // false: outside the window (6, 10]
 * keyVisible(1, 10, true, 4, 2); // true: a sink token
 */
export function keyVisible(j: number, pos: number, causal: boolean, window: number, sinks: number): boolean {
  if (!causal) return true;
  if (j > pos) return false;
  if (window > 0 && j <= pos - window && j >= sinks) return false;
  return true;
}

/**
 * Float64 attention of one sequence.
 *
 * @example
 * const { o, lse } = attentionReference(q, k, v, { Tq: 5, Hq: 4, Hkv: 2, D: 8 });
 */
export function attentionReference(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  opts: AttentionReferenceOptions,
): { o: Float64Array; lse: Float64Array } {
  const { Tq, Hq, Hkv, D } = opts;
  const Tk = opts.Tk ?? Tq;
  const Dv = opts.Dv ?? D;
  const causal = opts.causal ?? true;
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const window = opts.window ?? 0;
  const sinks = opts.sinks ?? 0;
  const G = Hq / Hkv;
  const o = new Float64Array(Tq * Hq * Dv);
  const lse = new Float64Array(Tq * Hq);
  const s = new Float64Array(Tk);
  for (let i = 0; i < Tq; i++) {
    const pos = Tk - Tq + i;
    for (let h = 0; h < Hq; h++) {
      const hk = Math.floor(h / G);
      let m = -Infinity;
      for (let j = 0; j < Tk; j++) {
        if (!keyVisible(j, pos, causal, window, sinks)) {
          s[j] = -Infinity;
          continue;
        }
        let dot = 0;
        const qb = (i * Hq + h) * D;
        const kb = (j * Hkv + hk) * D;
        for (let d = 0; d < D; d++) dot += q[qb + d]! * k[kb + d]!;
        s[j] = dot * scale;
        if (s[j]! > m) m = s[j]!;
      }
      const sink = opts.sinkLogits ? opts.sinkLogits[h]! : -Infinity;
      if (sink > m) m = sink;
      const ob = (i * Hq + h) * Dv;
      if (m === -Infinity) {
        lse[i * Hq + h] = -Infinity;
        continue;
      }
      let z = sink === -Infinity ? 0 : Math.exp(sink - m);
      for (let j = 0; j < Tk; j++) {
        if (s[j] === -Infinity) continue;
        const p = Math.exp(s[j]! - m);
        z += p;
        const vb = (j * Hkv + hk) * Dv;
        for (let d = 0; d < Dv; d++) o[ob + d] += p * v[vb + d]!;
      }
      for (let d = 0; d < Dv; d++) o[ob + d] /= z;
      lse[i * Hq + h] = m + Math.log(z);
    }
  }
  return { o, lse };
}
