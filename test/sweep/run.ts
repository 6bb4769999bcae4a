/**
 * The shared property-sweep runner. A family's sweep (`test/sweep/<family>.sweep.ts`) is a
 * generator of random VALID configurations (a fast-check arbitrary, with `small` bounds for the
 * fixed-seed subset of the extended tier (`npm run test:extended`) and `full` bounds for `npm run test:sweep`) and a check that
 * runs one configuration on the GPU against the family's float64 reference. A configuration
 * carries its own data seed, so the JSON printed on failure is a complete reproducer:
 * `SWEEP_FAMILY=<family> SWEEP_CONFIG='<json>' npm run test:sweep`.
 */
import fc from 'fast-check';
import { TesseraError } from '../../src/errors.js';
import type { TesseraDevice } from '../../src/gpu/device.js';
import { runOnce, type KernelPlan } from '../../src/plan.js';
import { byteSize, decode, encode, type DType, type GpuTensor } from '../../src/tensor.js';
import { compare, describeComparison, passes, type Tolerance } from '../../src/testing.js';

export type SweepSize = 'small' | 'full';

export interface Sweep<C> {
  family: string;
  /** Random valid configurations; `small` keeps T and D small (the npm-test subset). */
  arb(size: SweepSize): fc.Arbitrary<C>;
  /** Runs one configuration; returns null when it matches the reference, else what differs. */
  check(bufs: Buffers, c: C): Promise<string | null>;
}

/** A sweep with its configuration type erased (for the registry). */
export type AnySweep = Sweep<any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export function defineSweep<C>(s: Sweep<C>): Sweep<C> {
  return s;
}

/**
 * Tensors of one configuration. Every buffer is destroyed after the configuration (a sweep runs
 * hundreds in one test, so the per-test cleanup of the GPU fixture would come too late).
 */
export class Buffers {
  readonly dev: TesseraDevice;
  private readonly held: GPUBuffer[] = [];
  constructor(dev: TesseraDevice) {
    this.dev = dev;
  }
  tensor(values: ArrayLike<number>, shape: readonly number[], dtype: DType = 'f32'): GpuTensor {
    const buffer = this.dev.upload(encode(values, dtype), { size: byteSize(shape, dtype), label: 'sweep.tensor' });
    this.held.push(buffer);
    return { buffer, shape: [...shape], dtype };
  }
  /** A tensor filled with NaN (floats) or -7 (ints), so an element never written fails. */
  nan(shape: readonly number[], dtype: DType = 'f32'): GpuTensor {
    const n = shape.reduce((a, b) => a * b, 1);
    return this.tensor(
      new Float64Array(n).fill(dtype === 'i32' || dtype === 'u32' ? 7 * (dtype === 'i32' ? -1 : 1) : NaN),
      shape,
      dtype,
    );
  }
  /** Tracks a buffer made elsewhere so it is destroyed with the configuration. */
  own(b: GPUBuffer): GPUBuffer {
    this.held.push(b);
    return b;
  }
  async read(t: GpuTensor): Promise<Float64Array> {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const bytes = await this.dev.readback(t.buffer, byteSize(t.shape, t.dtype), t.offset ?? 0);
    return decode(new Uint32Array(bytes), t.dtype, n);
  }
  /** Runs a plan once (submit + wait, GPU errors captured), then disposes it. */
  async runPlan<I>(plan: KernelPlan<I>, inputs: I, what: string): Promise<void> {
    try {
      await runOnce(this.dev, plan, inputs, what);
    } finally {
      plan.dispose();
    }
  }
  release(): void {
    for (const b of this.held) this.dev.destroyBuffer(b);
    this.held.length = 0;
  }
}

/** `null` when `got` matches `ref` within `tol` (NaN never passes), else a description. */
export function within(name: string, got: ArrayLike<number>, ref: ArrayLike<number>, tol: Tolerance): string | null {
  const c = compare(got, ref);
  return passes(c, tol) ? null : `${name}: ${describeComparison(c)}`;
}

/** Joins the failures of several outputs (null when all pass). */
export function all(...r: (string | null)[]): string | null {
  const bad = r.filter((x): x is string => x !== null);
  return bad.length ? bad.join('; ') : null;
}

/** Rows whose selected set (ignoring order and -1 slots) differs from the reference's. */
export function selectionDiff(got: ArrayLike<number>, ref: ArrayLike<number>, width: number): number[] {
  const rows: number[] = [];
  for (let r = 0; r < ref.length / width; r++) {
    const a = new Set<number>();
    const b = new Set<number>();
    for (let i = 0; i < width; i++) {
      if (got[r * width + i]! >= 0) a.add(got[r * width + i]!);
      if (ref[r * width + i]! >= 0) b.add(ref[r * width + i]!);
    }
    if (a.size !== b.size || [...a].some((x) => !b.has(x))) rows.push(r);
  }
  return rows;
}

export interface SweepRunOptions {
  numRuns: number;
  seed: number;
  size: SweepSize;
  /** Called after each configuration (for progress logs). */
  onConfig?: (c: unknown, ms: number, ok: boolean) => void;
}

export interface SweepOutcome {
  family: string;
  runs: number;
  seed: number;
  ms: number;
  failed: boolean;
  /** The report printed on failure: shrunk configuration as JSON plus what differed. */
  report?: string;
}

function describeError(e: unknown): string {
  if (e instanceof TesseraError) return `${e.code}: ${e.message}`;
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

/** Runs one configuration, always releasing its buffers; throws with the difference on failure. */
export async function runOne<C>(dev: TesseraDevice, sweep: Sweep<C>, c: C): Promise<string | null> {
  const bufs = new Buffers(dev);
  try {
    return await sweep.check(bufs, c);
  } catch (e) {
    return `threw ${describeError(e)}`;
  } finally {
    bufs.release();
  }
}

/**
 * Runs `numRuns` random configurations of `sweep` (fast-check, seeded); on failure fast-check
 * shrinks to a minimal configuration, and the outcome's `report` holds it as JSON together with
 * the seed, the replay path and the command that reruns it.
 */
export async function runSweep<C>(dev: TesseraDevice, sweep: Sweep<C>, o: SweepRunOptions): Promise<SweepOutcome> {
  const t0 = performance.now();
  let lastFailure = '';
  const prop = fc.asyncProperty(sweep.arb(o.size), async (c) => {
    const s0 = performance.now();
    const err = await runOne(dev, sweep, c);
    o.onConfig?.(c, performance.now() - s0, err === null);
    if (err !== null) {
      lastFailure = err;
      throw new Error(err);
    }
  });
  const details = await fc.check(prop, { numRuns: o.numRuns, seed: o.seed, endOnFailure: false });
  const ms = performance.now() - t0;
  if (!details.failed) return { family: sweep.family, runs: details.numRuns, seed: o.seed, ms, failed: false };
  const cx = details.counterexample?.[0];
  const json = JSON.stringify(cx);
  // rerun the shrunk configuration for its own message (the last failure seen may be another shrink)
  const own = cx === undefined ? lastFailure : ((await runOne(dev, sweep, cx as C)) ?? lastFailure);
  const report = [
    `sweep ${sweep.family}: a configuration fails after ${details.numRuns} runs (seed ${o.seed}, path "${details.counterexamplePath}", ${details.numShrinks} shrinks)`,
    `minimal reproducer: ${json}`,
    `what differs: ${own}`,
    `rerun: SWEEP_FAMILY=${sweep.family} SWEEP_CONFIG='${json}' npm run test:sweep`,
  ].join('\n');
  return { family: sweep.family, runs: details.numRuns, seed: o.seed, ms, failed: true, report };
}

/** Small shared generators. */
export const gen = {
  dtype: (weights: { f32: number; f16: number; bf16: number } = { f32: 3, f16: 2, bf16: 1 }) =>
    fc.oneof(
      { arbitrary: fc.constant('f32' as const), weight: weights.f32 },
      { arbitrary: fc.constant('f16' as const), weight: weights.f16 },
      { arbitrary: fc.constant('bf16' as const), weight: weights.bf16 },
    ),
  /** Query/kv heads with Hq a multiple of Hkv (GQA ratio 1..maxRatio). */
  heads: (maxHkv: number, maxRatio: number) =>
    fc
      .record({ Hkv: fc.integer({ min: 1, max: maxHkv }), ratio: fc.integer({ min: 1, max: maxRatio }) })
      .map(({ Hkv, ratio }) => ({ Hkv, Hq: Hkv * ratio })),
  seed: () => fc.integer({ min: 1, max: 0x7fffffff }),
  /** Ragged lengths (some may be 0 when `allowEmpty`) as cumulative offsets [N+1]. */
  cuSeqlens: (maxN: number, maxLen: number, allowEmpty = false) =>
    fc.array(fc.integer({ min: allowEmpty ? 0 : 1, max: maxLen }), { minLength: 1, maxLength: maxN }).map((lens) => {
      const cu = [0];
      for (const l of lens) cu.push(cu[cu.length - 1]! + l);
      return cu;
    }),
};
