/**
 * Float64 reference for top-k: the definition the GPU kernel is tested against.
 *
 * Per row of `scores` (`[rows, n]`, row-major), the `k` largest values sorted by descending value,
 * ties broken by the lower index. `-Infinity` and NaN are never selected. Slots past the number of
 * selectable candidates hold index -1 and value -Infinity. Values are compared exactly as given:
 * pass the f32-rounded scores (what the GPU sees) to get the GPU's ties.
 *
 * @example
 * const { indices, values } = topKReference(Float32Array.from([1, 3, 3, -Infinity]), 1, 4, 3);
 * // indices [1, 2, 0], values [3, 3, 1]
 */
export function topKReference(
  scores: ArrayLike<number>,
  rows: number,
  n: number,
  k: number,
): { indices: Int32Array; values: Float64Array } {
  const indices = new Int32Array(rows * k).fill(-1);
  const values = new Float64Array(rows * k).fill(-Infinity);
  // A min-heap of the best k seen so far; the root is the worst kept (smallest value, then the
  // largest index), so a newcomer replaces it when it ranks before it.
  const hv = new Float64Array(k);
  const hi = new Int32Array(k);
  const worse = (a: number, b: number) => hv[a]! < hv[b]! || (hv[a] === hv[b] && hi[a]! > hi[b]!);
  const swap = (a: number, b: number) => {
    const v = hv[a]!;
    hv[a] = hv[b]!;
    hv[b] = v;
    const i = hi[a]!;
    hi[a] = hi[b]!;
    hi[b] = i;
  };
  for (let r = 0; r < rows; r++) {
    let size = 0;
    for (let j = 0; j < n; j++) {
      const v = scores[r * n + j]!;
      if (!(v > -Infinity)) continue; // -inf and NaN
      if (size < k) {
        hv[size] = v;
        hi[size] = j;
        let c = size++;
        while (c > 0) {
          const p = (c - 1) >> 1;
          if (!worse(c, p)) break;
          swap(c, p);
          c = p;
        }
      } else if (v > hv[0]!) {
        // Same value as the root never wins: j is larger than every index kept.
        hv[0] = v;
        hi[0] = j;
        let c = 0;
        for (;;) {
          const l = 2 * c + 1;
          const rr = l + 1;
          let m = c;
          if (l < size && worse(l, m)) m = l;
          if (rr < size && worse(rr, m)) m = rr;
          if (m === c) break;
          swap(c, m);
          c = m;
        }
      }
    }
    const order = Array.from({ length: size }, (_, i) => i).sort((a, b) => hv[b]! - hv[a]! || hi[a]! - hi[b]!);
    for (let s = 0; s < size; s++) {
      indices[r * k + s] = hi[order[s]!]!;
      values[r * k + s] = hv[order[s]!]!;
    }
  }
  return { indices, values };
}
