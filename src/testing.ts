/**
 * Numeric comparison used by tests, `verify` and the sweeps: relative RMS error and max absolute
 * error against a float64 reference. NaN never passes: a NaN (or Inf) in the result where the
 * reference is finite is a failure, and -inf matches only -inf.
 */
export interface Comparison {
  relRms: number;
  maxAbs: number;
  /** max |ref|, the scale the max-abs bound is relative to. */
  refMax: number;
  /** Elements where the result is non-finite and the reference is not (or -inf mismatches). */
  badCount: number;
  firstBad: number;
  n: number;
}

export function compare(got: ArrayLike<number>, ref: ArrayLike<number>): Comparison {
  if (got.length !== ref.length) throw new Error(`compare: length ${got.length} != reference length ${ref.length}`);
  let num = 0;
  let den = 0;
  let maxAbs = 0;
  let refMax = 0;
  let badCount = 0;
  let firstBad = -1;
  for (let i = 0; i < ref.length; i++) {
    const r = ref[i]!;
    const g = got[i]!;
    if (!Number.isFinite(r)) {
      if (!(g === r)) {
        badCount++;
        if (firstBad < 0) firstBad = i;
      }
      continue;
    }
    if (!Number.isFinite(g)) {
      badCount++;
      if (firstBad < 0) firstBad = i;
      continue;
    }
    const d = g - r;
    num += d * d;
    den += r * r;
    maxAbs = Math.max(maxAbs, Math.abs(d));
    refMax = Math.max(refMax, Math.abs(r));
  }
  const relRms = den > 0 ? Math.sqrt(num / den) : Math.sqrt(num);
  return { relRms, maxAbs, refMax, badCount, firstBad, n: ref.length };
}

export interface Tolerance {
  /** Bound on relative RMS error. */
  relRms: number;
  /** Bound on max absolute error, relative to max |ref| (with 1 as the floor of the scale). */
  maxAbsRel: number;
}

/** Tolerances per storage dtype for attention-like kernels (inputs rounded to the dtype first). */
export const TOLERANCE: Readonly<Record<'f32' | 'f16' | 'bf16', Tolerance>> = {
  f32: { relRms: 1e-5, maxAbsRel: 1e-4 },
  f16: { relRms: 2e-3, maxAbsRel: 1e-2 },
  bf16: { relRms: 1.6e-2, maxAbsRel: 8e-2 },
};

export function passes(c: Comparison, tol: Tolerance): boolean {
  return c.badCount === 0 && c.relRms <= tol.relRms && c.maxAbs <= tol.maxAbsRel * Math.max(c.refMax, 1e-30);
}

export function describeComparison(c: Comparison): string {
  return `rel_rms=${c.relRms.toExponential(2)} max_abs=${c.maxAbs.toExponential(2)} (ref max ${c.refMax.toPrecision(3)}${c.badCount ? `, ${c.badCount} non-finite mismatches from index ${c.firstBad}` : ''})`;
}

/** A small deterministic PRNG (mulberry32) with normal draws, for tests and synthetic data. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 1;
  }
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  normal(): number {
    const u = Math.max(this.next(), 1e-300);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }
  normals(n: number, scale = 1): Float64Array {
    const a = new Float64Array(n);
    for (let i = 0; i < n; i++) a[i] = this.normal() * scale;
    return a;
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
}
