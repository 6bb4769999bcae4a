/**
 * Deterministic synthetic KV data for the long-context demos (prefill, split): xorshift32 f16 bit
 * patterns of magnitude < 2, generated a chunk at a time so a 10M-token context never exists in
 * host memory outside the cache.
 */
import { intOption } from '../cli-common.js';
import { f16BitsToF32 } from '../tensor.js';

/** xorshift32 state. */
export interface Xorshift {
  s: number;
}

/** Fills `words` with random 16-bit pairs masked by `mask` (0xbfffbfff: f16 with |x| < 2). */
export function fillWords(words: Uint32Array, st: Xorshift, mask = 0xbfffbfff): void {
  let s = st.s;
  for (let i = 0; i < words.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    words[i] = s & mask;
  }
  st.s = s;
}

/** A uniform number in [0, 1). */
export function uniform(st: Xorshift): number {
  let s = st.s;
  s ^= s << 13;
  s ^= s >>> 17;
  s ^= s << 5;
  st.s = s;
  return (s >>> 0) / 4294967296;
}

/** f16 bits -> f32 values. */
export function f16ToF32(bits: Uint16Array, out = new Float32Array(bits.length)): Float32Array {
  for (let i = 0; i < bits.length; i++) out[i] = f16BitsToF32(bits[i]!);
  return out;
}

/** Parses a positive integer CLI value (underscores allowed): `E_ARG` naming the flag otherwise (`intOption`). */
export function positiveInt(s: string, name: string): number {
  return intOption(s, `--${name}`);
}

/** Relative RMS and max |a - b| of `a` against `b`. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): { relRms: number; maxAbs: number } {
  let num = 0;
  let den = 0;
  let maxAbs = 0;
  for (let i = 0; i < b.length; i++) {
    const d = a[i]! - b[i]!;
    num += d * d;
    den += b[i]! * b[i]!;
    maxAbs = Math.max(maxAbs, Math.abs(d));
    if (Number.isNaN(d)) return { relRms: NaN, maxAbs: NaN };
  }
  return { relRms: Math.sqrt(num / Math.max(den, 1e-300)), maxAbs };
}
