/**
 * Float64 reference for NSA (Native Sparse Attention) in the two variants the golden cases pin:
 *
 * `variant: 'nsa'` (fla-org/native-sparse-attention `naive_nsa_with_compression`):
 * - compression: k̃_c, ṽ_c = sum of block c's keys/values / blockSize (last block zero-padded);
 *   query t sees compressed block c iff (c+1)·bs − 1 ≤ t; o_cmp = 0 when it sees none;
 * - selection: per KV head, score_c = Σ over the query heads of its group of the compressed
 *   attention probability p_cmp[t, h, c]; the query's own block counts 1.0 per head (forced);
 *   the top `blockCount` blocks (ties: lower id), future blocks never; o_slc = softmax over the
 *   tokens j ≤ t of the chosen blocks;
 * - sliding window: keys in (t − W, t] (branch present when `window > 0`);
 * - o = g_cmp·o_cmp + g_slc·o_slc + g_swa·o_swa.
 *
 * `variant: 'fla'` (flash-linear-attention `fla/ops/nsa/naive.py`): compressed keys are the mean
 * over the block's real tokens, the score is the *mean* over the group, and block 0, the own block
 * and the previous block are forced (score 1.0). The window branch is optional.
 *
 * Layouts: q `[T, Hq, D]`, k `[Tk, Hkv, D]`, v `[Tk, Hkv, Dv]`, gates `[T, Hq]`, o `[T, Hq, Dv]`,
 * blockIndices `[T, Hkv, S]` (descending score, `-1` unused), margin `[T, Hkv]`.
 */

export type NsaVariant = 'nsa' | 'fla';

export interface NsaReferenceOptions {
  T: number;
  /** Keys (default T); query row t sits at key position t + Tk − T. */
  Tk?: number;
  Hq: number;
  Hkv: number;
  D: number;
  Dv?: number;
  blockSize: number;
  blockCount: number;
  window?: number;
  variant?: NsaVariant;
  scale?: number;
}

/**
 * NSA in float64 (see the module docs); also returns the branch outputs and per-(token, KV
 * head) selection margins (gap between the last chosen and the best rejected block score).
 *
 * @example
 * const { o, blockIndices } = nsaReference(q, k, v, { gCmp, gSlc, gSwa }, { T, Hq: 32, Hkv: 2, D: 64, blockSize: 32, blockCount: 4, window: 64 });
 */
export function nsaReference(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  gates: { gCmp: ArrayLike<number>; gSlc: ArrayLike<number>; gSwa?: ArrayLike<number> },
  opts: NsaReferenceOptions,
): {
  o: Float64Array;
  blockIndices: Int32Array;
  margin: Float64Array;
  oCmp: Float64Array;
  oSlc: Float64Array;
  oSwa: Float64Array;
} {
  const { T, Hq, Hkv, D, blockSize: bs, blockCount: S } = opts;
  const Tk = opts.Tk ?? T;
  const Dv = opts.Dv ?? D;
  const W = opts.window ?? 0;
  const fla = (opts.variant ?? 'nsa') === 'fla';
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const G = Hq / Hkv;
  const NC = Math.ceil(Tk / bs);
  const kc = new Float64Array(NC * Hkv * D);
  const vc = new Float64Array(NC * Hkv * Dv);
  for (let c = 0; c < NC; c++) {
    const j0 = c * bs;
    const j1 = Math.min(Tk, j0 + bs);
    const div = fla ? j1 - j0 : bs;
    for (let h = 0; h < Hkv; h++) {
      for (let d = 0; d < D; d++) {
        let s = 0;
        for (let j = j0; j < j1; j++) s += k[(j * Hkv + h) * D + d]!;
        kc[(c * Hkv + h) * D + d] = s / div;
      }
      for (let d = 0; d < Dv; d++) {
        let s = 0;
        for (let j = j0; j < j1; j++) s += v[(j * Hkv + h) * Dv + d]!;
        vc[(c * Hkv + h) * Dv + d] = s / div;
      }
    }
  }
  const oCmp = new Float64Array(T * Hq * Dv);
  const oSlc = new Float64Array(T * Hq * Dv);
  const oSwa = new Float64Array(T * Hq * Dv);
  const blockIndices = new Int32Array(T * Hkv * S).fill(-1);
  const margin = new Float64Array(T * Hkv);

  // softmax attention of row (t, hq) over explicit key rows of (keys, vals) with head stride
  const attend = (
    t: number,
    hq: number,
    rows: number[],
    keys: Float64Array | ArrayLike<number>,
    vals: Float64Array | ArrayLike<number>,
    out: Float64Array,
  ): Float64Array => {
    const h = Math.floor(hq / G);
    const p = new Float64Array(rows.length);
    if (rows.length === 0) return p;
    let m = -Infinity;
    rows.forEach((j, i) => {
      let s = 0;
      for (let d = 0; d < D; d++) s += q[(t * Hq + hq) * D + d]! * keys[(j * Hkv + h) * D + d]!;
      p[i] = s * scale;
      m = Math.max(m, p[i]!);
    });
    let z = 0;
    for (let i = 0; i < p.length; i++) z += p[i] = Math.exp(p[i]! - m);
    const ob = (t * Hq + hq) * Dv;
    rows.forEach((j, i) => {
      p[i]! /= z;
      for (let d = 0; d < Dv; d++) out[ob + d] += p[i]! * vals[(j * Hkv + h) * Dv + d]!;
    });
    return p;
  };

  for (let t = 0; t < T; t++) {
    const pos = t + Tk - T;
    const nVis = Math.floor((pos + 1) / bs);
    const own = Math.floor(pos / bs);
    const visible = Array.from({ length: nVis }, (_, c) => c);
    const probs: Float64Array[] = [];
    for (let hq = 0; hq < Hq; hq++) probs.push(attend(t, hq, visible, kc, vc, oCmp));
    for (let h = 0; h < Hkv; h++) {
      const cand: { c: number; s: number }[] = [];
      for (let c = 0; c <= own; c++) {
        const forced = c === own || (fla && (c === 0 || c === own - 1));
        let s = 0;
        for (let i = 0; i < G; i++) s += forced ? 1 : c < nVis ? probs[h * G + i]![c]! : 0;
        cand.push({ c, s: fla ? s / G : s });
      }
      cand.sort((a, b) => b.s - a.s || a.c - b.c);
      const n = Math.min(S, cand.length);
      for (let i = 0; i < n; i++) blockIndices[(t * Hkv + h) * S + i] = cand[i]!.c;
      margin[t * Hkv + h] = cand.length > S ? cand[S - 1]!.s - cand[S]!.s : Infinity;
      const rows: number[] = [];
      for (let i = 0; i < n; i++) {
        const c = cand[i]!.c;
        for (let j = c * bs; j < Math.min(Tk, (c + 1) * bs) && j <= pos; j++) rows.push(j);
      }
      for (let i = 0; i < G; i++) attend(t, h * G + i, rows, k, v, oSlc);
    }
    if (W > 0) {
      const rows: number[] = [];
      for (let j = Math.max(0, pos - W + 1); j <= pos; j++) rows.push(j);
      for (let hq = 0; hq < Hq; hq++) attend(t, hq, rows, k, v, oSwa);
    }
  }
  const o = new Float64Array(T * Hq * Dv);
  for (let r = 0; r < T * Hq; r++) {
    const a = gates.gCmp[r]!;
    const b = gates.gSlc[r]!;
    const c = W > 0 && gates.gSwa ? gates.gSwa[r]! : 0;
    for (let d = 0; d < Dv; d++) o[r * Dv + d] = a * oCmp[r * Dv + d]! + b * oSlc[r * Dv + d]! + c * oSwa[r * Dv + d]!;
  }
  return { o, blockIndices, margin, oCmp, oSlc, oSwa };
}
