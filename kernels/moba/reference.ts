/**
 * Float64 reference for MoBA (Mixture of Block Attention, MoonshotAI/MoBA `moba_naive.py`
 * semantics, computed in float64 throughout).
 *
 * Layouts: q `[Tq, Hq, D]`, k `[Tk, Hkv, D]`, v `[Tk, Hkv, Dv]`, o `[Tq, Hq, Dv]`, lse `[Tq, Hq]`
 * (natural log), selection `[Tq, Hq, topk]` (own block first, then the chosen past blocks by
 * descending gate score, `-1` in unused slots), margin `[Tq, Hq]`.
 * Query row t sits at key position `pos = t + Tk - Tq` (bottom-right alignment; Tq = Tk for
 * prefill, Tq = 1 for decode).
 */

export interface MobaReferenceOptions {
  Tq: number;
  Tk?: number;
  Hq: number;
  Hkv: number;
  D: number;
  Dv?: number;
  blockSize: number;
  topk: number;
  scale?: number;
  /** Gate keys `[NB, Hkv, D]` to use instead of the block means of k (decode over page means). */
  blockMeans?: ArrayLike<number>;
}

/**
 * Mean of the real keys of each block: `[ceil(Tk / B), Hkv, D]`.
 *
 * @example
 * const means = mobaBlockMeansReference(k, Tk, Hkv, D, 512);
 */
export function mobaBlockMeansReference(
  k: ArrayLike<number>,
  Tk: number,
  Hkv: number,
  D: number,
  B: number,
): Float64Array {
  const NB = Math.ceil(Tk / B);
  const out = new Float64Array(NB * Hkv * D);
  for (let b = 0; b < NB; b++) {
    const j0 = b * B;
    const j1 = Math.min(Tk, j0 + B);
    for (let h = 0; h < Hkv; h++)
      for (let d = 0; d < D; d++) {
        let s = 0;
        for (let j = j0; j < j1; j++) s += k[(j * Hkv + h) * D + d]!;
        out[(b * Hkv + h) * D + d] = s / (j1 - j0);
      }
  }
  return out;
}

/**
 * MoBA attention in float64. Gate score of past block b for query row (t, hq): `q · mean(K_b)`
 * (no scale). The own block (the one holding the query position) always counts toward `topk`;
 * the other `topk - 1` are the complete past blocks with the largest gate (ties: lower block id).
 * Attention: the chosen past blocks in full plus the own block causally, one softmax with `scale`
 * (default `1/sqrt(D)`). `margin` is the gate gap between the last chosen and the best rejected
 * past block (+inf when every past block is chosen).
 *
 * @example
 * const { o, lse, selection } = mobaReference(q, k, v, { Tq: T, Hq: 4, Hkv: 2, D: 64, blockSize: 64, topk: 3 });
 */
export function mobaReference(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  opts: MobaReferenceOptions,
): { o: Float64Array; lse: Float64Array; selection: Int32Array; margin: Float64Array } {
  const { Tq, Hq, Hkv, D, blockSize: B, topk } = opts;
  const Tk = opts.Tk ?? Tq;
  const Dv = opts.Dv ?? D;
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const G = Hq / Hkv;
  const means = opts.blockMeans ?? mobaBlockMeansReference(k, Tk, Hkv, D, B);
  const o = new Float64Array(Tq * Hq * Dv);
  const lse = new Float64Array(Tq * Hq);
  const selection = new Int32Array(Tq * Hq * topk).fill(-1);
  const margin = new Float64Array(Tq * Hq);
  const gates: { b: number; s: number }[] = [];
  const keys: number[] = [];
  for (let t = 0; t < Tq; t++) {
    const pos = t + Tk - Tq;
    for (let hq = 0; hq < Hq; hq++) {
      const h = Math.floor(hq / G);
      const row = t * Hq + hq;
      const qo = row * D;
      keys.length = 0;
      if (pos < 0) {
        lse[row] = -Infinity;
        margin[row] = Infinity;
        continue;
      }
      const own = Math.floor(pos / B);
      gates.length = 0;
      for (let b = 0; b < own; b++) {
        let s = 0;
        for (let d = 0; d < D; d++) s += q[qo + d]! * means[(b * Hkv + h) * D + d]!;
        gates.push({ b, s });
      }
      gates.sort((x, y) => y.s - x.s || x.b - y.b);
      const nSel = Math.min(topk - 1, gates.length);
      margin[row] =
        nSel < gates.length && nSel > 0
          ? gates[nSel - 1]!.s - gates[nSel]!.s
          : nSel === 0 && gates.length > 0
            ? Infinity
            : Infinity;
      selection[row * topk] = own;
      for (let i = 0; i < nSel; i++) {
        const b = gates[i]!.b;
        selection[row * topk + 1 + i] = b;
        for (let j = b * B; j < (b + 1) * B; j++) keys.push(j);
      }
      for (let j = own * B; j <= pos; j++) keys.push(j);
      let m = -Infinity;
      const sc = new Float64Array(keys.length);
      keys.forEach((j, i) => {
        let s = 0;
        for (let d = 0; d < D; d++) s += q[qo + d]! * k[(j * Hkv + h) * D + d]!;
        sc[i] = s * scale;
        m = Math.max(m, sc[i]!);
      });
      let z = 0;
      const oo = row * Dv;
      keys.forEach((j, i) => {
        const p = Math.exp(sc[i]! - m);
        z += p;
        for (let d = 0; d < Dv; d++) o[oo + d] += p * v[(j * Hkv + h) * Dv + d]!;
      });
      for (let d = 0; d < Dv; d++) o[oo + d] /= z;
      lse[row] = m + Math.log(z);
    }
  }
  return { o, lse, selection, margin };
}
