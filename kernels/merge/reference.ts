/**
 * Float64 reference for merging attention partials. Rows are independent; `oParts` is
 * `[P, rows, D]`, `lseParts` is `[P, rows]` (natural log), both row-major.
 */
export function mergeReference(
  oParts: ArrayLike<number>,
  lseParts: ArrayLike<number>,
  P: number,
  rows: number,
  D: number,
): { o: Float64Array; lse: Float64Array } {
  const o = new Float64Array(rows * D);
  const lse = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity;
    for (let p = 0; p < P; p++) m = Math.max(m, lseParts[p * rows + r]!);
    if (m === -Infinity) {
      lse[r] = -Infinity;
      continue;
    }
    let s = 0;
    for (let p = 0; p < P; p++) {
      const l = lseParts[p * rows + r]!;
      if (l === -Infinity) continue;
      const w = Math.exp(l - m);
      s += w;
      for (let d = 0; d < D; d++) o[r * D + d] += w * oParts[(p * rows + r) * D + d]!;
    }
    for (let d = 0; d < D; d++) o[r * D + d] /= s;
    lse[r] = m + Math.log(s);
  }
  return { o, lse };
}
