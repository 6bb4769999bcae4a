import { attentionReference, type AttentionReferenceOptions } from '../dense/reference.js';

/**
 * Float64 reference of sliding-window attention (the dense reference with a window).
 *
 * @example
 * const { o, lse } = slidingWindowReference(q, k, v, { Tq: 300, Hq: 4, Hkv: 2, D: 64, window: 64, sinks: 4 });
 */
export function slidingWindowReference(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  opts: Omit<AttentionReferenceOptions, 'causal' | 'window'> & { window: number },
): { o: Float64Array; lse: Float64Array } {
  return attentionReference(q, k, v, { ...opts, causal: true });
}
