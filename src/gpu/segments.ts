/**
 * Segments: how a kernel splits its work under a per-invocation loop cap.
 *
 * Mesa's llvmpipe (gallivm) stops a shader invocation silently once it has run
 * `TesseraDevice.loopLimit` (65,535) loop iterations, counted over all of its loops together. A
 * kernel whose per-invocation loops grow with the problem (tokens of a scan, parts of a merge,
 * candidates of a top-k, keys of a flash tile) describes the iterations one invocation runs as a
 * cost function of the units it covers, written beside its WGSL with the {@link loops} counting
 * rules, and lets {@link segment} split the units into the fewest equal segments that stay within
 * {@link loopBudget}. Each segment is one dispatch; the shader reads the segment from one uniform
 * spelling, {@link SEGMENT_FIELDS}: `seg_begin`, `seg_end` (the units of this dispatch),
 * `seg_carry` (1: continue from the state the previous segment left) and `seg_last` (1: the last
 * segment, which writes the outputs).
 *
 * A plan takes its cap from the device, or lower from its `loopLimit` option
 * ({@link planLoopLimit}), so that tests run the segmented paths on any adapter without a second
 * device.
 *
 * Counting rules (measured on llvmpipe, Mesa 22.3): a loop that runs n trips costs n + 1 (the trip
 * that finds the exit reaches the back-edge too), nested loops multiply, a call of a function
 * holding a loop or an early return costs 1 more (the compiler wraps such bodies in a one-trip
 * loop), an entry point's early return costs 1. Short constant loops are often unrolled (cost 0)
 * but are counted anyway: a bound may be loose, never short.
 */
import { TesseraError } from '../errors.js';
import { loopBudget } from './device.js';

export { loopBudget };

/**
 * The counting rules as functions, so that a cost function reads like the loop nest it describes.
 *
 * @example
 * // for (t < tokens) { for (c < K) {...} }   after an early return:
 * loops.ret + loops.loop(tokens, loops.loop(K)); // 1 + (tokens + 1) + tokens * (K + 1)
 */
export const loops = {
  /** A loop of `trips` trips whose body costs `body`: trips + 1 + trips x body. */
  loop(trips: number, body = 0): number {
    return trips + 1 + trips * body;
  },
  /** A call of a function that holds a loop or an early return: its body + 1. */
  call(body: number): number {
    return body + 1;
  },
  /** An entry point's (or a wrapped function's) early return. */
  ret: 1,
} as const;

/** The uniform fields of a segmented dispatch, one spelling for every kernel (see {@link segmentUniforms}). */
export const SEGMENT_FIELDS = [
  ['seg_begin', 'u32'],
  ['seg_end', 'u32'],
  ['seg_carry', 'u32'],
  ['seg_last', 'u32'],
] as const;

/** One dispatch of a segmented kernel: units [begin, end), whether it continues and whether it finishes. */
export interface Segment {
  readonly begin: number;
  readonly end: number;
  /** Continues from the state the previous segment left (every segment but the first). */
  readonly carry: boolean;
  /** The last segment (it writes the outputs). */
  readonly last: boolean;
}

/** A split of `units` units under a loop budget. */
export interface Segmentation {
  /** The per-invocation budget (90% of the loop limit; `Infinity` without a cap). */
  readonly budget: number;
  /** Units per segment (the last may be shorter). */
  readonly length: number;
  /** Number of segments (at least 1). */
  readonly count: number;
  /** The cost of the largest segment (the bound the plan was sized for). */
  readonly bound: number;
  readonly segments: readonly Segment[];
}

/** What to say when not even one unit fits: the operation, the unit, and the argument to blame. */
export interface SegmentLimitError {
  readonly op: string;
  /** e.g. `one token of the recurrent form`. */
  readonly what: string;
  readonly argument: string;
  readonly actual: unknown;
  /** What would fit, e.g. `a smaller K`. */
  readonly expected: string;
}

/** `loopLimit` of a device, or anything holding one. */
export type LoopLimitLike = number | { readonly loopLimit: number };

/**
 * The loop cap a plan is sized for: the device's, or lower where the plan's `loopLimit` option
 * asks for it (tests use it to run the segmented paths on an adapter without a cap). Throws
 * `E_ARG` naming `loopLimit` when the option is not an integer of at least 256.
 *
 * @example
 * planLoopLimit(dev);        // dev.loopLimit (Infinity on SwiftShader)
 * planLoopLimit(dev, 4096);  // 4096
 */
export function planLoopLimit(ctx: { readonly loopLimit: number }, option?: number): number {
  if (option === undefined) return ctx.loopLimit;
  if (!(Number.isInteger(option) && option >= 256)) {
    throw new TesseraError('E_ARG', 'loopLimit: is not an integer of at least 256', {
      argument: 'loopLimit',
      actual: option,
      expected: 'an integer >= 256 (at most the device loop limit applies)',
    });
  }
  return Math.min(ctx.loopLimit, option);
}

/**
 * Splits `units` units (tokens, chunks, parts, candidates, keys; at least 0) into the fewest
 * segments of equal length whose invocation cost `cost(length)` stays within the budget of
 * `limit`. `cost` must be non-decreasing in its argument. Throws `E_LIMIT` (naming
 * `err.argument`) when not even one unit fits.
 *
 * @example
 * segment(1000, (n) => 1 + loops.loop(n, 130), 65535, err);
 * // { budget: 58981, length: 449, count: 3, bound: 58821, segments: [{ begin: 0, end: 449, carry: false, last: false }, ...] }
 */
export function segment(
  units: number,
  cost: (units: number) => number,
  limit: LoopLimitLike,
  err: SegmentLimitError,
): Segmentation {
  const budget = loopBudget(limit);
  const n = Math.max(0, Math.ceil(units));
  const one = cost(1);
  if (one > budget) {
    const cap = typeof limit === 'number' ? limit : limit.loopLimit;
    throw new TesseraError(
      'E_LIMIT',
      `${err.op}: ${err.what} needs ${one} loop iterations in one invocation; this device (or the plan's loopLimit) stops an invocation after ${cap} (budget ${budget})`,
      {
        argument: err.argument,
        actual: err.actual,
        expected: err.expected,
      },
    );
  }
  let length = n;
  if (n > 1 && cost(n) > budget) {
    // the largest length that fits (cost is non-decreasing): binary search in [1, n)
    let lo = 1;
    let hi = n - 1;
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      if (cost(mid) <= budget) lo = mid;
      else hi = mid - 1;
    }
    length = lo;
  }
  length = Math.max(1, length);
  const count = Math.max(1, Math.ceil(n / length));
  const segments: Segment[] = [];
  for (let i = 0; i < count; i++) {
    const begin = i * length;
    segments.push({ begin, end: Math.min(n, begin + length), carry: i > 0, last: i === count - 1 });
  }
  return { budget, length, count, bound: cost(Math.min(n, length)), segments };
}

/**
 * The largest number of units whose `cost` stays within the budget of `limit` (`Infinity` without a
 * cap, 0 when not even one fits). For kernels that size a tile or a part rather than segment a
 * known count.
 *
 * @example
 * maxUnits((n) => 150 + 67 * n, 65535); // 878
 */
export function maxUnits(cost: (units: number) => number, limit: LoopLimitLike, ceiling = 1 << 30): number {
  const budget = loopBudget(limit);
  if (!Number.isFinite(budget)) return Number.POSITIVE_INFINITY;
  if (cost(1) > budget) return 0;
  let lo = 1;
  let hi = ceiling;
  if (cost(hi) <= budget) return hi;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (cost(mid) <= budget) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** The {@link SEGMENT_FIELDS} values of one segment (offsets added for kernels whose units start elsewhere). */
export function segmentUniforms(s: Segment): {
  seg_begin: number;
  seg_end: number;
  seg_carry: number;
  seg_last: number;
} {
  return { seg_begin: s.begin, seg_end: s.end, seg_carry: s.carry ? 1 : 0, seg_last: s.last ? 1 : 0 };
}

const views = new WeakMap<object, Map<number, unknown>>();

/**
 * The device as a plan sized for `limit` sees it: `ctx` itself when `limit` is its own cap, else a
 * view whose `loopLimit` is `limit` and that forwards everything else (the same GPU device,
 * buffers, pipeline cache and accounting; one view per device and limit). For a plan whose
 * `loopLimit` option must reach a sub-plan that sizes its splits from `ctx.loopLimit` (the
 * attention core of MoBA, NSA, DSA and the paged kernels).
 *
 * @example
 * const core = await BlockListPlan.create(withLoopLimit(ctx, planLoopLimit(ctx, opts.loopLimit)), coreOpts);
 */
export function withLoopLimit<T extends { readonly loopLimit: number }>(ctx: T, limit: number): T {
  if (limit === ctx.loopLimit) return ctx;
  let m = views.get(ctx);
  if (!m) views.set(ctx, (m = new Map()));
  let v = m.get(limit) as T | undefined;
  if (!v) {
    v = new Proxy(ctx, {
      get: (target, p) => (p === 'loopLimit' ? limit : Reflect.get(target, p, target)),
    });
    m.set(limit, v);
  }
  return v;
}
