/**
 * Float64 reference for DSA (DeepSeek-V3.2 sparse attention), written from the definition:
 *   index score  I[t, s] = Σ_j w[t, j] · ReLU(qI[t, j] · kI[s])    for s ≤ t (causal)
 *   selection    the top min(k, t + 1) tokens s by I[t, s] (ties: lower s), shared by all heads
 *   attention    o[t, h] = softmax_s∈sel(scale · q[t, h] · k[s, h_kv]) · v[s, h_kv]
 * The reference model's FP8 quantisation and Hadamard rotation (orthogonal, dot products
 * unchanged) are left out. Layouts: q `[T, Hq, D]`, k `[T, Hkv, D]`, v `[T, Hkv, Dv]`,
 * qI `[T, HI, DI]`, kI `[Tk, DI]`, w `[T, HI]`; indices `[T, min(k, Tk)]` (descending score, -1 unused),
 * margin `[T]` = gap between the k-th and (k+1)-th index score (+inf when all are kept).
 */
export interface DsaReferenceOptions {
  T: number;
  /** Keys (default T); query row t sits at key position t + Tk − T. */
  Tk?: number;
  Hq: number;
  Hkv: number;
  D: number;
  Dv?: number;
  HI: number;
  DI: number;
  topk: number;
  scale?: number;
}

/**
 * The index scores `[T, Tk]` (-inf after each row's position t + Tk − T).
 *
 * @example
 * const I = dsaIndexerReference(qI, kI, w, T, 64, 128);
 */
export function dsaIndexerReference(
  qI: ArrayLike<number>,
  kI: ArrayLike<number>,
  w: ArrayLike<number>,
  T: number,
  HI: number,
  DI: number,
  Tk = T,
): Float64Array {
  const out = new Float64Array(T * Tk).fill(-Infinity);
  for (let t = 0; t < T; t++)
    for (let s = 0; s <= t + Tk - T; s++) {
      let acc = 0;
      for (let j = 0; j < HI; j++) {
        let d = 0;
        for (let c = 0; c < DI; c++) d += qI[(t * HI + j) * DI + c]! * kI[s * DI + c]!;
        acc += w[t * HI + j]! * Math.max(d, 0);
      }
      out[t * Tk + s] = acc;
    }
  return out;
}

/**
 * DSA in float64 (see the module docs).
 *
 * @example
 * const { o, indices } = dsaReference(q, k, v, { qI, kI, w }, { T, Hq: 16, Hkv: 1, D: 64, HI: 8, DI: 64, topk: 2048 });
 */
export function dsaReference(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  index: { qI: ArrayLike<number>; kI: ArrayLike<number>; w: ArrayLike<number> },
  opts: DsaReferenceOptions,
): { o: Float64Array; lse: Float64Array; indices: Int32Array; margin: Float64Array; scores: Float64Array } {
  const { T, Hq, Hkv, D, HI, DI, topk } = opts;
  const Tk = opts.Tk ?? T;
  const Dv = opts.Dv ?? D;
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const G = Hq / Hkv;
  const scores = dsaIndexerReference(index.qI, index.kI, index.w, T, HI, DI, Tk);
  const S = Math.min(topk, Tk);
  const indices = new Int32Array(T * S).fill(-1);
  const margin = new Float64Array(T);
  const o = new Float64Array(T * Hq * Dv);
  const lse = new Float64Array(T * Hq);
  for (let t = 0; t < T; t++) {
    const cand = Array.from({ length: t + Tk - T + 1 }, (_, s) => ({ s, x: scores[t * Tk + s]! }));
    cand.sort((a, b) => b.x - a.x || a.s - b.s);
    const n = Math.min(topk, cand.length);
    for (let i = 0; i < n; i++) indices[t * S + i] = cand[i]!.s;
    margin[t] = cand.length > topk ? cand[topk - 1]!.x - cand[topk]!.x : Infinity;
    const keys = cand.slice(0, n).map((c) => c.s);
    for (let hq = 0; hq < Hq; hq++) {
      const h = Math.floor(hq / G);
      const sc = keys.map((s) => {
        let x = 0;
        for (let d = 0; d < D; d++) x += q[(t * Hq + hq) * D + d]! * k[(s * Hkv + h) * D + d]!;
        return x * scale;
      });
      const m = sc.reduce((a, b) => Math.max(a, b), -Infinity); // (no spread: rows may hold 100k+ keys)
      let z = 0;
      const row = t * Hq + hq;
      keys.forEach((s, i) => {
        const p = Math.exp(sc[i]! - m);
        z += p;
        for (let d = 0; d < Dv; d++) o[row * Dv + d] += p * v[(s * Hkv + h) * Dv + d]!;
      });
      for (let d = 0; d < Dv; d++) o[row * Dv + d] /= z;
      lse[row] = m + Math.log(z);
    }
  }
  return { o, lse, indices, margin, scores };
}
