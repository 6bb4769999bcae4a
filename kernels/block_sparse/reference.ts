/**
 * Float64 reference for block-sparse attention with a BSR block mask (FlashInfer's
 * `BlockSparseAttentionWrapper` vocabulary): query blocks of R rows, key blocks of C keys; block
 * row r lists its key blocks in `indices[indptr[r] .. indptr[r+1])`. With `causal` (default), key j
 * is visible to query row t only when j <= t + Tk - Tq (bottom-right), so diagonal blocks are
 * masked inside. A row that sees no key gives o = 0 and lse = -inf.
 *
 * Per-head patterns: `indptr`/`indices` may be lists of P patterns, P = 1, Hkv or Hq; query head
 * hq uses pattern floor(hq / (Hq / P)).
 */
export interface BlockSparseReferenceOptions {
  Tq: number;
  Tk?: number;
  Hq: number;
  Hkv: number;
  D: number;
  Dv?: number;
  R: number;
  C: number;
  indptr: ArrayLike<number> | ArrayLike<number>[];
  indices: ArrayLike<number> | ArrayLike<number>[];
  causal?: boolean;
  scale?: number;
}

/**
 * Block-sparse attention in float64 (see the module docs for the mask semantics).
 *
 * @example
 * const { o, lse } = blockSparseReference(q, k, v, { Tq: 128, Hq: 2, Hkv: 1, D: 64, R: 64, C: 64, indptr: [0, 1, 3], indices: [0, 0, 1] });
 */
export function blockSparseReference(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  opts: BlockSparseReferenceOptions,
): { o: Float64Array; lse: Float64Array } {
  const { Tq, Hq, Hkv, D, R, C } = opts;
  const Tk = opts.Tk ?? Tq;
  const Dv = opts.Dv ?? D;
  const causal = opts.causal ?? true;
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const G = Hq / Hkv;
  const perHead = Array.isArray(opts.indptr) && typeof (opts.indptr as unknown[])[0] !== 'number';
  const ptrs = (perHead ? opts.indptr : [opts.indptr]) as ArrayLike<number>[];
  const idxs = (perHead ? opts.indices : [opts.indices]) as ArrayLike<number>[];
  const P = ptrs.length;
  const o = new Float64Array(Tq * Hq * Dv);
  const lse = new Float64Array(Tq * Hq).fill(-Infinity);
  for (let hq = 0; hq < Hq; hq++) {
    const p = Math.floor(hq / (Hq / P));
    const h = Math.floor(hq / G);
    for (let t = 0; t < Tq; t++) {
      const r = Math.floor(t / R);
      const keys: number[] = [];
      for (let s = ptrs[p]![r]!; s < ptrs[p]![r + 1]!; s++) {
        const b = idxs[p]![s]!;
        for (let j = b * C; j < Math.min(Tk, (b + 1) * C); j++) if (!causal || j <= t + Tk - Tq) keys.push(j);
      }
      if (keys.length === 0) continue;
      const sc = keys.map((j) => {
        let x = 0;
        for (let d = 0; d < D; d++) x += q[(t * Hq + hq) * D + d]! * k[(j * Hkv + h) * D + d]!;
        return x * scale;
      });
      const m = sc.reduce((a, b) => Math.max(a, b), -Infinity); // (no spread: rows may hold 100k+ keys)
      let z = 0;
      const row = t * Hq + hq;
      keys.forEach((j, i) => {
        const w = Math.exp(sc[i]! - m);
        z += w;
        for (let d = 0; d < Dv; d++) o[row * Dv + d] += w * v[(j * Hkv + h) * Dv + d]!;
      });
      for (let d = 0; d < Dv; d++) o[row * Dv + d] /= z;
      lse[row] = m + Math.log(z);
    }
  }
  return { o, lse };
}
