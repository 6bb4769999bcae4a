/**
 * Float64 references: causal attention of a block of queries against a key sequence with
 * absolute positions (the streaming oracle's definition), and paged partials over a page list.
 */

export interface AttnRefOptions {
  Tq: number;
  Tk: number;
  Hq: number;
  Hkv: number;
  D: number;
  Dv?: number;
  /** Absolute position of query 0 (default Tk - Tq: bottom-right aligned). Key j sits at position j. */
  qPos0?: number;
  causal?: boolean;
  scale?: number;
}

/**
 * `q` `[Tq, Hq, D]`, `k` `[Tk, Hkv, D]`, `v` `[Tk, Hkv, Dv]` -> `o` `[Tq, Hq, Dv]`, `lse` `[Tq, Hq]`
 * (natural log; rows that see no key: o = 0, lse = -inf). GQA: query head h uses KV head
 * floor(h / (Hq / Hkv)).
 *
 * @example
 * const { o, lse } = streamAttentionReference(q, k, v, { Tq: 1, Tk: 1000, Hq: 4, Hkv: 2, D: 64 });
 */
export function streamAttentionReference(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  o: AttnRefOptions,
): { o: Float64Array; lse: Float64Array } {
  const { Tq, Tk, Hq, Hkv, D } = o;
  const Dv = o.Dv ?? D;
  const qPos0 = o.qPos0 ?? Tk - Tq;
  const causal = o.causal ?? true;
  const scale = o.scale ?? 1 / Math.sqrt(D);
  const group = Hq / Hkv;
  const out = new Float64Array(Tq * Hq * Dv);
  const lse = new Float64Array(Tq * Hq);
  const s = new Float64Array(Tk);
  for (let t = 0; t < Tq; t++) {
    const last = causal ? Math.min(Tk - 1, qPos0 + t) : Tk - 1;
    for (let hq = 0; hq < Hq; hq++) {
      const h = Math.floor(hq / group);
      const qb = (t * Hq + hq) * D;
      let m = -Infinity;
      for (let j = 0; j <= last; j++) {
        let d = 0;
        const kb = (j * Hkv + h) * D;
        for (let c = 0; c < D; c++) d += q[qb + c]! * k[kb + c]!;
        s[j] = d * scale;
        if (s[j]! > m) m = s[j]!;
      }
      const r = t * Hq + hq;
      if (last < 0) {
        lse[r] = -Infinity;
        continue;
      }
      let l = 0;
      const ob = r * Dv;
      for (let j = 0; j <= last; j++) {
        const p = Math.exp(s[j]! - m);
        l += p;
        const vb = (j * Hkv + h) * Dv;
        for (let c = 0; c < Dv; c++) out[ob + c] += p * v[vb + c]!;
      }
      for (let c = 0; c < Dv; c++) out[ob + c] /= l;
      lse[r] = m + Math.log(l);
    }
  }
  return { o: out, lse };
}
