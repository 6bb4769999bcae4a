/**
 * GPU top-k: per row of `[rows, n]` f32 scores, the `k` largest, sorted by descending score, ties
 * to the lower index. `-inf` marks a candidate that is never selected; NaN is treated as `-inf`.
 * Slots past the number of selectable candidates hold index -1 and value -inf.
 *
 * Variants (chosen in {@link planTopK} from rows, n and k; see README.md):
 * - `small`: one invocation per row, a sorted private list of k (k <= 32, n <= 4096): MoBA/NSA
 *   block selection, many rows of few candidates.
 * - `radix`: radix select on the 64-bit (score key, index) composite over many workgroups per
 *   row, stopping once the candidates left fit a survivor buffer, then compaction and a sort of
 *   the survivors: long rows (DSA tokens, Quest pages, 1M..16M candidates) and every case the
 *   `small` variant does not take. Its passes have a `gpu` shape (workgroup histograms, tiled
 *   ranking) and a `cpu` shape for software adapters (private histograms, vec4 loads, per-row
 *   heap), picked by the device's adapter class.
 */
import { TesseraError, check, checkInt, fail } from '../../src/errors.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import {
  loopBudget,
  planLoopLimit,
  segment,
  segmentUniforms,
  SEGMENT_FIELDS,
  type LoopLimitLike,
  type Segment,
} from '../../src/gpu/segments.js';
import {
  bindGroup,
  getPipeline,
  grid2d,
  wgslProgram,
  type PipelineSpec,
  type TablePipeline,
} from '../../src/gpu/pipeline.js';
import { bindingTable, registerPasses, type VariantOf } from '../../src/gpu/bindings.js';
import { wgslConstants } from '../../src/gpu/specialize.js';
import { uniformLayout } from '../../src/gpu/uniforms.js';
import { KernelPlan, checkBindingSize, res, runOnceAndDispose } from '../../src/plan.js';
import { checkTensor, decode, type GpuTensor } from '../../src/tensor.js';
import keysWgsl from './keys.wgsl.js';
import radixWgsl from './radix.wgsl.js';
import smallWgsl from './small.wgsl.js';

/** The largest k any variant takes. */
export const TOPK_MAX_K = 4096;

/** Largest k of the `small` variant, and its largest n. */
export const TOPK_SMALL_MAX_K = 32;
export const TOPK_SMALL_MAX_N = 4096;

export const TOPK_PARAMS = uniformLayout('TopKParams', [
  ['rows', 'u32'],
  ['n', 'u32'],
  ['k', 'u32'],
  ['chunk', 'u32'], // candidates per workgroup in hist/compact
  ['chunks', 'u32'], // ceil(n / chunk)
  ['levels', 'u32'], // 4 key digits + index digits
  ['idxShift', 'u32'], // 32 - 8 * (index digits)
  ['kBlocks', 'u32'], // ceil(cap / WG) workgroups per row in rank_pass
  ['cap', 'u32'], // survivor slots per row (>= k)
  ['hasValues', 'u32'],
  ['h0', 'u32'], // sort_inv segment: heapify the nodes [h0, h1) ...
  ['h1', 'u32'],
  ['o0', 'u32'], // ... and pop the outputs [o0, o1) (see sortSegments)
  ['o1', 'u32'],
] as const);

export const TOPK_SMALL_PARAMS = uniformLayout('TopKSmallParams', [
  ['rows', 'u32'],
  ['n', 'u32'],
  ['k', 'u32'],
  ['hasValues', 'u32'],
  // this dispatch scans candidates [seg_begin, seg_end) of each row (see smallSegments); seg_carry
  // 1: continue from the list carried from the previous segment; seg_last 1: write the outputs,
  // 0: carry the list to the next segment
  ...SEGMENT_FIELDS,
] as const);

const RADIX = wgslProgram('topk/radix', [keysWgsl, TOPK_PARAMS.wgsl, radixWgsl]);
const smallPrograms = new Map<number, ReturnType<typeof wgslProgram>>();
/** The small variant's list length (a private array's size, so a `const`). */
const SMALL_CONSTS = wgslConstants({ TK_KCAP: 'u32' });
/** @internal The small variant's program for lists of up to `kcap` (tests build a loop-counting debug build of it). */
export function smallProgram(kcap: number) {
  let p = smallPrograms.get(kcap);
  if (!p) {
    const c = { TK_KCAP: kcap };
    p = wgslProgram(`topk/small-${SMALL_CONSTS.tag(c)}`, [
      keysWgsl,
      TOPK_SMALL_PARAMS.wgsl,
      SMALL_CONSTS.wgsl(c),
      smallWgsl,
    ]);
    smallPrograms.set(kcap, p);
  }
  return p;
}

/*
 * Bindings (src/gpu/bindings.ts). Two 16-byte stand-ins remain, documented rather than removed:
 * out_val without values (whether a run writes values is a uniform, params.hasValues, so one plan
 * serves runs with and without them on the same pipelines), and scores4 when rows * n < 4 (a
 * vec4 view needs 16 bytes; the cpu passes then read no whole word, the gpu ones never read it).
 */
const SMALL_BINDINGS = bindingTable('topk/small', {
  scores: 'read',
  out_idx: 'rw',
  out_val: 'rw',
  params: 'uniform',
  carry: 'rw',
});
const RADIX_BINDINGS = bindingTable('topk/radix', {
  scores: 'read',
  out_idx: 'rw',
  out_val: 'rw',
  state: 'rw',
  hist: 'rw',
  sel: 'rw',
  params: 'uniform',
  scores4: 'read',
});
function smallSpec(kcap: number): PipelineSpec<VariantOf<typeof SMALL_BINDINGS>> {
  return { shader: smallProgram(kcap), bindings: SMALL_BINDINGS.variant({}), constants: { WG: 64 } };
}
function radixSpec(target: 'cpu' | 'gpu', entryPoint: string): PipelineSpec<VariantOf<typeof RADIX_BINDINGS>> {
  return { shader: RADIX, entryPoint, bindings: RADIX_BINDINGS.variant({}), constants: { WG: RADIX_WG[target] } };
}
registerPasses('topk', () => [
  smallSpec(smallKcap(8)),
  ...(['cpu', 'gpu'] as const).flatMap((t) => ['init', 'pick_pass', ...RADIX_ENTRIES[t]].map((e) => radixSpec(t, e))),
]);
type SmallPipeline = TablePipeline<typeof SMALL_BINDINGS>;
type RadixPipeline = TablePipeline<typeof RADIX_BINDINGS>;
interface TopKPipelines {
  small?: SmallPipeline;
  init?: RadixPipeline;
  hist?: RadixPipeline;
  pick?: RadixPipeline;
  compact?: RadixPipeline;
  rank?: RadixPipeline;
}

export type TopKVariant = 'small' | 'radix';

export interface TopKOptions {
  /** Number of independent rows (>= 1). */
  rows: number;
  /** Candidates per row (>= 1; at most `floor(maxStorageBufferBindingSize / 4 / rows)`). */
  n: number;
  /** How many to keep per row, 1..4096 (k > n is allowed: the extra slots are -1 / -inf). */
  k: number;
  /** Force a variant (default: chosen from rows, n, k; see the module docs). */
  variant?: TopKVariant | 'auto';
  /**
   * Kernel shape of the `radix` passes (default `auto`: the device's `adapterClass`). `gpu`:
   * a workgroup per chunk with workgroup-memory histograms and tiled ranking; `cpu`: an
   * invocation per chunk with a private histogram, no workgroup memory or barriers (software
   * adapters, where those are what costs).
   */
  target?: 'auto' | 'cpu' | 'gpu';
  /**
   * Size the segments for this loop cap instead of the device's (lower only; an integer >= 256):
   * runs the segmented paths that Mesa's llvmpipe needs on any adapter (src/gpu/segments.ts).
   */
  loopLimit?: number;
}

export interface TopKTensors {
  /** `[rows, n]` f32 scores. -inf (and NaN) candidates are never selected. */
  scores: GpuTensor;
  /** `[rows, k]` i32 out: selected candidate indices in 0..n-1, best first; -1 in unused slots. */
  indices: GpuTensor;
  /** Optional `[rows, k]` f32 out: the selected scores (-inf in unused slots; -0 reads as +0). */
  values?: GpuTensor;
}

/** Candidates per hist/compact unit (a workgroup on `gpu`, an invocation on `cpu`) when nothing caps loops. */
const CHUNK = 4096;
/** Workgroup size of the radix passes per target. */
const RADIX_WG = { gpu: 256, cpu: 64 } as const;
/** Entry points per target: [hist, compact, rank]. */
const RADIX_ENTRIES = {
  gpu: ['hist_pass', 'compact_pass', 'rank_pass'],
  cpu: ['hist_inv', 'compact_inv', 'sort_inv'],
} as const;

/** Number of 8-bit digits needed for an index in [0, n). */
function indexDigits(n: number): number {
  if (n <= 1) return 0;
  const bits = Math.floor(Math.log2(n - 1)) + 1;
  return Math.ceil(bits / 8);
}

/**
 * Survivor slots per row of the radix variant: at least 2k (so that selection usually stops a
 * digit before the exact threshold), larger for few rows (fewer passes over long rows), with
 * the whole buffer kept near 16 MiB. The gpu shape ranks survivors pairwise, so it keeps less.
 */
function survivorCap(o: { rows: number; k: number }, target: 'cpu' | 'gpu'): number {
  const most = target === 'cpu' ? 65536 : 4096;
  return Math.max(2 * o.k, Math.min(most, Math.floor((2 << 20) / o.rows)));
}

function floorLog2(x: number): number {
  return x <= 1 ? 0 : Math.floor(Math.log2(x));
}

/** @internal */
export function smallKcap(k: number): number {
  return k <= 4 ? 4 : k <= 8 ? 8 : k <= 16 ? 16 : 32;
}

/**
 * Upper bound of the loop iterations (all loops together, counted as {@link loopBudget} says)
 * one invocation of `small.wgsl` runs over a segment of `len` candidates: the scan (len + 1),
 * per candidate up to k insertion steps (k - 1 shifts and the exit), the k outputs or the
 * carried list (k + 1), k + 1 more to load a carried list, 1 for the entry's early return.
 * Unsegmented (len = n) it passes 65,535 at n >= 3,854 for k = 16 and n >= 1,985 for k = 32.
 *
 * @example
 * topKSmallLoopIterations(4096, 32, false); // 135,203: llvmpipe runs it as 3 segments
 */
export function topKSmallLoopIterations(len: number, k: number, load: boolean): number {
  return len * (k + 1) + 1 + (k + 1) + 1 + (load ? k + 1 : 0);
}

/** One dispatch of the small variant: candidates [begin, end) of every row (src/gpu/segments.ts). */
export type SmallSegment = Segment;

/**
 * The dispatches of the small variant under a loop budget: the whole row at once when it fits,
 * else segments of as many candidates as fit (with the cost of loading the carried list), carrying
 * the list between them.
 *
 * @example
 * smallSegments(4096, 32, 65535).length; // 3 on llvmpipe
 */
export function smallSegments(n: number, k: number, limit: LoopLimitLike): SmallSegment[] {
  if (topKSmallLoopIterations(n, k, false) <= loopBudget(limit))
    return [{ begin: 0, end: n, carry: false, last: true }];
  return segment(n, (len) => topKSmallLoopIterations(len, k, true), limit, {
    op: 'topk',
    what: 'one candidate of the small variant',
    argument: 'k',
    actual: k,
    expected: 'a smaller k',
  }).segments.slice();
}

/** The shape of the radix passes a plan runs. */
export interface TopKRadixShape {
  target: 'cpu' | 'gpu';
  /** Candidates per hist/compact unit. */
  chunk: number;
  /** Survivor slots per row. */
  cap: number;
  k: number;
}

/**
 * Upper bounds of the loop iterations one invocation of each radix pass runs (`radix.wgsl`,
 * counted as {@link loopBudget} says; every entry point returns early: + 1):
 * - gpu (WG = 256): `hist_pass` zeroes the workgroup histogram (the compiler's loop over the
 *   lanes, 2), zeroes and flushes it (2 + 2) and strides its chunk (chunk / 256 + 1);
 *   `pick_pass` walks 256 bins (257); `compact_pass` chunk / 256 + 1; `rank_pass` zeroes its
 *   tile (2) and counts every survivor before its own: T = ceil(cap / 256) tiles (T + 1) of up
 *   to 256 (+ 1 each).
 * - cpu: `hist_inv` runs the <= 3 + 1 + 3 scalar edges (8), W = chunk / 4 vec4 words (W + 1)
 *   and the 256-bin flush (257); `compact_inv` the edges and W words of 4 appends (1 + 5 each);
 *   `sort_inv` unsegmented: heapify cap / 2 + 1 outer steps and a sift per node (a call: 1, its
 *   height <= floor(log2(cap / (i + 1))) and the exit; heights sum to < cap), so < 2.5 cap + 1,
 *   then k pops of 1 + 1 + floor(log2 cap) + 1, and the loop exits.
 * Unsegmented, the cpu sort passes 65,535 at k = 2048 with 1M candidates (cap 65,536: 163,842 +
 * 38,912), which is why llvmpipe left slots unwritten there; {@link sortSegments} splits it.
 *
 * @example
 * topKRadixLoopIterations({ target: 'cpu', chunk: 4096, cap: 65536, k: 2048 }).rank; // 202,755
 */
export function topKRadixLoopIterations(s: TopKRadixShape): {
  hist: number;
  pick: number;
  compact: number;
  rank: number;
} {
  if (s.target === 'gpu') {
    const T = Math.ceil(s.cap / 256);
    return {
      hist: 8 + Math.ceil(s.chunk / 256),
      pick: 258,
      compact: 2 + Math.ceil(s.chunk / 256),
      rank: 4 + (T + 1) + s.cap + T,
    };
  }
  const words = Math.ceil(s.chunk / 4);
  return {
    hist: 1 + 8 + (words + 1) + 257,
    pick: 258,
    compact: 1 + 8 + 1 + 6 * words,
    rank: 1 + Math.floor(2.5 * s.cap) + 1 + s.k * (floorLog2(s.cap) + 3) + 1,
  };
}

/** One dispatch of the cpu sort: heapify the nodes [h0, h1), then pop the outputs [o0, o1). */
export interface SortSegment {
  h0: number;
  h1: number;
  o0: number;
  o1: number;
}

/** Loop iterations of one `sort_inv` segment over a heap of at most `cap` survivors. */
export function sortSegmentIterations(seg: SortSegment, cap: number, k: number): number {
  const h = floorLog2(cap);
  const nodes = Math.max(0, Math.min(seg.h1, Math.floor(cap / 2)) - seg.h0);
  // node i has at most floor(log2(cap / (i + 1))) levels below it; its sift runs that + 1 steps
  // and costs 1 as a call, the outer step 1 more; each loop exits once (+ 1), the entry + 1
  const heapify = nodes === 0 ? 0 : nodes * (floorLog2(cap / (seg.h0 + 1)) + 3);
  const pops = Math.max(0, Math.min(seg.o1, k) - seg.o0) * (h + 3);
  return 1 + heapify + 1 + pops + 1;
}

/**
 * The dispatches of the cpu shape's heap sort under a loop budget: one when the whole sort fits
 * ({@link topKRadixLoopIterations}), else heapify segments from the leaves up (node ranges sized
 * by the height below them) and then pop segments of `floor((budget - 3) / (floor(log2 cap) + 3))`
 * outputs. The heap stays in the survivor buffer between dispatches.
 *
 * @example
 * sortSegments(65536, 4096, 58981).length; // 6 on llvmpipe (one row, k = 4096)
 */
export function sortSegments(cap: number, k: number, budget: number): SortSegment[] {
  if (topKRadixLoopIterations({ target: 'cpu', chunk: 0, cap, k }).rank <= budget)
    return [{ h0: 0, h1: 0xffffffff, o0: 0, o1: k }];
  const segs: SortSegment[] = [];
  let top = Math.floor(cap / 2);
  while (top > 0) {
    // the lowest a with (top - a) nodes of height <= floor(log2(cap / (a + 1))) within budget
    let lo = 0;
    let hi = top - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (sortSegmentIterations({ h0: mid, h1: top, o0: 0, o1: 0 }, cap, k) <= budget) hi = mid;
      else lo = mid + 1;
    }
    segs.push({ h0: lo, h1: top, o0: 0, o1: 0 });
    top = lo;
  }
  const per = Math.max(1, Math.floor((budget - 3) / (floorLog2(cap) + 3)));
  for (let o0 = 0; o0 < k; o0 += per) segs.push({ h0: 0, h1: 0, o0, o1: Math.min(k, o0 + per) });
  return segs;
}

/** The radix plan's geometry under the loop budget, or why the shape cannot fit it. */
function radixShape(
  o: { rows: number; k: number },
  target: 'cpu' | 'gpu',
  budget: number,
): { chunk: number; cap: number; sort: SortSegment[]; iterations: number } | string {
  let cap = survivorCap(o, target);
  let chunk = CHUNK;
  if (target === 'gpu') {
    // rank_pass reads every survivor: fewer survivor slots (never fewer than k) shorten it
    if (topKRadixLoopIterations({ target, chunk, cap, k: o.k }).rank > budget) {
      let c = Math.floor((budget * 256) / 258);
      while (topKRadixLoopIterations({ target, chunk, cap: c, k: o.k }).rank > budget) c--;
      cap = Math.max(o.k, Math.min(cap, c));
    }
  } else {
    const unit = (c: number) => topKRadixLoopIterations({ target, chunk: c, cap, k: o.k });
    while (chunk > 256 && Math.max(unit(chunk).hist, unit(chunk).compact) > budget) chunk /= 2;
  }
  const b = topKRadixLoopIterations({ target, chunk, cap, k: o.k });
  const sort = target === 'cpu' ? sortSegments(cap, o.k, budget) : [{ h0: 0, h1: 0xffffffff, o0: 0, o1: o.k }];
  const rank =
    target === 'cpu'
      ? Math.max(...sort.map((s) => sortSegmentIterations(s, cap, o.k)), sort.length === 1 ? b.rank : 0)
      : b.rank;
  const iterations = Math.max(b.hist, b.pick, b.compact, rank);
  if (iterations > budget) {
    return target === 'gpu'
      ? `its rank pass reads all k = ${o.k} survivors of a row in one invocation (${b.rank} loop iterations)`
      : `one hist/compact unit of ${chunk} candidates runs ${Math.max(b.hist, b.compact)} loop iterations`;
  }
  return { chunk, cap, sort, iterations };
}

/**
 * The variant `auto` picks for a shape.
 *
 * @example
 * chooseTopKVariant({ rows: 16384, n: 32, k: 3 });   // 'small'
 */
export function chooseTopKVariant(opts: { rows: number; n: number; k: number }): TopKVariant {
  return opts.k <= TOPK_SMALL_MAX_K && opts.n <= TOPK_SMALL_MAX_N ? 'small' : 'radix';
}

/**
 * A sorted top-k per row of scores.
 * Planned once by `planTopK`; `run` records it into your encoder and allocates
 * nothing; `dispose()` frees what the plan holds.
 *
 * @example
 * const plan = await planTopK(dev, { rows: T * Hq, n: numBlocks, k: 3 });
 * plan.run(encoder, { scores, indices, values });
 * plan.dispose();
 */
export class TopKPlan extends KernelPlan<TopKTensors> {
  readonly options: Readonly<{ rows: number; n: number; k: number }>;
  readonly variant: TopKVariant;
  /** Kernel shape of the radix passes. */
  readonly target: 'cpu' | 'gpu';
  private readonly pipelines: TopKPipelines;
  /** Uniforms without / with values, one pair per sort segment (a single pair unless segmented). */
  private readonly params: [GPUBuffer, GPUBuffer][];
  private readonly dummyValues: GPUBuffer;
  private readonly dummyWords: GPUBuffer;
  private readonly state?: GPUBuffer;
  private readonly hist?: GPUBuffer;
  private readonly sel?: GPUBuffer;
  private readonly levels: number;
  /** Survivor slots per row: the radix select stops once the candidates left fit. */
  readonly cap: number;
  /** Candidates per hist/compact unit of the radix passes. */
  readonly chunk: number;
  /** Dispatches of the cpu shape's heap sort (1 unless the device caps loops: see `sortSegments`). */
  readonly sortSegments: number;
  /**
   * Dispatches of the pass that is segmented on a loop-capped device: the small variant's scan
   * ({@link smallSegments}) or the cpu shape's heap sort ({@link sortSegments}); 1 elsewhere.
   */
  readonly segments: number;
  private readonly carry?: GPUBuffer;
  /**
   * Upper bound of the loop iterations one invocation of this plan runs (the longest pass), kept
   * within 90% of the device's `loopLimit`.
   */
  readonly loopIterations: number;
  private readonly chunks: number;

  private constructor(
    ctx: TesseraDevice,
    o: { rows: number; n: number; k: number },
    variant: TopKVariant,
    target: 'cpu' | 'gpu',
    pipelines: TopKPipelines,
    shape: { chunk: number; cap: number; sort: SortSegment[]; small?: SmallSegment[]; iterations: number },
  ) {
    super(ctx);
    this.options = o;
    this.variant = variant;
    this.target = target;
    this.pipelines = pipelines;
    this.dummyValues = this.workspace(16, 'topk.novalues');
    this.dummyWords = this.workspace(16, 'topk.nowords');
    const L = indexDigits(o.n);
    this.levels = 4 + L;
    this.cap = shape.cap;
    this.chunk = shape.chunk;
    this.sortSegments = shape.sort.length;
    this.segments = variant === 'small' ? shape.small!.length : shape.sort.length;
    this.loopIterations = shape.iterations;
    this.chunks = Math.ceil(o.n / this.chunk);
    if (variant === 'small') {
      this.params = shape.small!.map(
        (seg) =>
          [0, 1].map((hasValues) =>
            this.uniform(TOPK_SMALL_PARAMS, { rows: o.rows, n: o.n, k: o.k, hasValues, ...segmentUniforms(seg) }),
          ) as [GPUBuffer, GPUBuffer],
      );
      this.carry = this.workspace(shape.small!.length > 1 ? o.rows * 2 * o.k * 4 : 16, 'topk.carry');
    } else {
      const base = {
        rows: o.rows,
        n: o.n,
        k: o.k,
        chunk: this.chunk,
        chunks: this.chunks,
        levels: this.levels,
        idxShift: L === 0 ? 0 : 32 - 8 * L,
        kBlocks: Math.ceil(this.cap / RADIX_WG[target]),
        cap: this.cap,
      };
      this.params = shape.sort.map(
        (seg) =>
          [0, 1].map((hasValues) => this.uniform(TOPK_PARAMS, { ...base, ...seg, hasValues })) as [
            GPUBuffer,
            GPUBuffer,
          ],
      );
      this.state = this.workspace(o.rows * 8 * 4, 'topk.state');
      this.hist = this.workspace(o.rows * 256 * 4, 'topk.hist');
      this.sel = this.workspace(o.rows * this.cap * 8, 'topk.sel');
    }
  }

  /** @internal use {@link planTopK}. */
  static async create(device: DeviceLike, opts: TopKOptions): Promise<TopKPlan> {
    const ctx = ctxOf(device);
    const o = validateTopKOptions(ctx, opts);
    const limit = planLoopLimit(ctx, opts.loopLimit);
    const budget = loopBudget(limit);
    const variant = opts.variant && opts.variant !== 'auto' ? opts.variant : chooseTopKVariant(o);
    if (variant === 'small' && o.k > TOPK_SMALL_MAX_K) {
      fail(
        'E_ARG',
        'variant',
        `"small" takes k <= ${TOPK_SMALL_MAX_K};`,
        o.k,
        `k <= ${TOPK_SMALL_MAX_K} or variant "radix"`,
      );
    }
    const t = opts.target ?? 'auto';
    check(t === 'auto' || t === 'cpu' || t === 'gpu', 'target', 'one of "auto", "cpu", "gpu"', t);
    const pipelines: TopKPipelines = {};
    if (variant === 'small') {
      const kcap = smallKcap(o.k);
      pipelines.small = await getPipeline(ctx, smallSpec(kcap));
      // segments of the row when one invocation cannot scan it all (loop-capped devices)
      const small = smallSegments(o.n, o.k, limit);
      const iterations = Math.max(...small.map((g) => topKSmallLoopIterations(g.end - g.begin, o.k, g.carry)));
      return new TopKPlan(ctx, o, variant, ctx.adapterClass, pipelines, {
        chunk: CHUNK,
        cap: 0,
        sort: [],
        small,
        iterations,
      });
    }
    // The radix shape: the adapter's (or the forced one); on a loop-capped device, the other
    // shape when the preferred one cannot fit (the cpu shape always can: its sort is segmented).
    const preferred = t === 'auto' ? ctx.adapterClass : t;
    let target = preferred;
    let shape = radixShape(o, target, budget);
    if (typeof shape === 'string' && t === 'auto') {
      const other = preferred === 'cpu' ? 'gpu' : 'cpu';
      const alt = radixShape(o, other, budget);
      if (typeof alt !== 'string') [target, shape] = [other, alt];
    }
    if (typeof shape === 'string') {
      throw new TesseraError(
        'E_LIMIT',
        `topk: the "${target}" shape cannot run k = ${o.k} on this device: ${shape}, over ${budget} (90% of its loop limit ${limit})`,
        {
          argument: t === 'auto' ? 'k' : 'target',
          actual: t === 'auto' ? o.k : t,
          expected: t === 'auto' ? 'a smaller k' : 'target "auto" (or the other shape)',
        },
      );
    }
    const bytes = { state: o.rows * 32, hist: o.rows * 1024, sel: o.rows * shape.cap * 8 };
    for (const [name, b] of Object.entries(bytes)) {
      if (b > ctx.limits.maxStorageBufferBindingSize || b > ctx.limits.maxBufferSize) {
        throw new TesseraError(
          'E_LIMIT',
          `topk: the ${name} workspace of ${b} bytes for rows = ${o.rows}, k = ${o.k} exceeds the device's binding limit`,
          {
            argument: 'rows',
            actual: o.rows,
            expected: `rows * 2k * 8 <= ${ctx.limits.maxStorageBufferBindingSize} (split the rows into several plans)`,
          },
        );
      }
    }
    const [hist, compact, rank] = RADIX_ENTRIES[target];
    const names = { init: 'init', hist, pick: 'pick_pass', compact, rank };
    const ps = await Promise.all(Object.values(names).map((e) => getPipeline(ctx, radixSpec(target, e))));
    Object.keys(names).forEach((n, i) => (pipelines[n as keyof typeof names] = ps[i]!));
    return new TopKPlan(ctx, o, variant, target, pipelines, shape);
  }

  run(encoder: GPUCommandEncoder, t: TopKTensors): void {
    this.assertUsable();
    const { rows, n, k } = this.options;
    if (t === null || typeof t !== 'object')
      fail('E_ARG', 'tensors', 'is not an object;', t, '{ scores, indices, values? }');
    const scores = checkTensor(t.scores, 'scores', { rank: 2, shape: [rows, n], dtypes: ['f32'] });
    const indices = checkTensor(t.indices, 'indices', { rank: 2, shape: [rows, k], dtypes: ['i32'] });
    const values =
      t.values === undefined
        ? undefined
        : checkTensor(t.values, 'values', { rank: 2, shape: [rows, k], dtypes: ['f32'] });
    checkBindingSize(this.ctx, scores, 'scores');
    checkBindingSize(this.ctx, indices, 'indices');
    if (values) checkBindingSize(this.ctx, values, 'values');
    const vres = values ? res(values) : { buffer: this.dummyValues };
    const params = this.params.map((pair) => ({ buffer: pair[values ? 1 : 0] }));
    const p = this.pipelines;
    if (this.variant === 'small') {
      const pass = encoder.beginComputePass({ label: 'topk/small' });
      pass.setPipeline(p.small!.pipeline);
      for (const u of params) {
        pass.setBindGroup(
          0,
          bindGroup(this.ctx, p.small!, {
            scores: res(scores),
            out_idx: res(indices),
            out_val: vres,
            params: u,
            carry: { buffer: this.carry! },
          }),
        );
        pass.dispatchWorkgroups(...grid2d(this.ctx, Math.ceil(rows / 64)));
      }
      pass.end();
      return;
    }
    encoder.clearBuffer(this.hist!);
    // scores again as 16-byte words: the binding rounded down to whole words.
    const words = Math.floor((rows * n * 4) / 16) * 16;
    const scores4 =
      words > 0 ? { buffer: scores.buffer, offset: scores.offset ?? 0, size: words } : { buffer: this.dummyWords };
    const groups = params.map((u, i) =>
      bindGroup(
        this.ctx,
        p.init!,
        {
          scores: res(scores),
          out_idx: res(indices),
          out_val: vres,
          state: { buffer: this.state! },
          hist: { buffer: this.hist! },
          sel: { buffer: this.sel! },
          params: u,
          scores4,
        },
        i === 0 ? 'topk/radix' : `topk/radix.sort${i}`,
      ),
    );
    const pass = encoder.beginComputePass({ label: 'topk/radix' });
    pass.setBindGroup(0, groups[0]!);
    const go = (name: keyof TopKPipelines, count: number) => {
      pass.setPipeline(p[name]!.pipeline);
      pass.dispatchWorkgroups(...grid2d(this.ctx, count));
    };
    const wg = RADIX_WG[this.target];
    // Units of work per (row, chunk): one workgroup each on gpu, one invocation each on cpu.
    const chunkGroups = this.target === 'gpu' ? rows * this.chunks : Math.ceil((rows * this.chunks) / wg);
    const rankGroups = this.target === 'gpu' ? rows * Math.ceil(this.cap / wg) : Math.ceil(rows / wg);
    go('init', Math.ceil(rows / wg));
    for (let l = 0; l < this.levels; l++) {
      go('hist', chunkGroups);
      go('pick', Math.ceil(rows / wg));
    }
    go('compact', chunkGroups);
    // the sort: one dispatch, or one per segment (the heap carries over in the survivor buffer)
    groups.forEach((g, i) => {
      if (i > 0) pass.setBindGroup(0, g);
      go('rank', rankGroups);
    });
    pass.end();
  }
}

function validateTopKOptions(ctx: TesseraDevice, opts: TopKOptions): { rows: number; n: number; k: number } {
  if (opts === null || typeof opts !== 'object') fail('E_ARG', 'options', 'is not an object;', opts, '{ rows, n, k }');
  checkInt(opts.rows, 'rows', { min: 1 });
  checkInt(opts.n, 'n', { min: 1 });
  checkInt(opts.k, 'k', { min: 1, max: TOPK_MAX_K });
  const v = opts.variant ?? 'auto';
  check(v === 'auto' || v === 'small' || v === 'radix', 'variant', 'one of "auto", "small", "radix"', v);
  const maxElems = Math.floor(ctx.limits.maxStorageBufferBindingSize / 4);
  if (opts.rows * opts.n > maxElems) {
    fail(
      'E_LIMIT',
      'n',
      `rows * n = ${opts.rows * opts.n} scores exceed one storage binding;`,
      opts.n,
      `rows * n <= ${maxElems} (maxStorageBufferBindingSize / 4)`,
    );
  }
  if (opts.rows * opts.k > maxElems) {
    fail(
      'E_LIMIT',
      'k',
      `rows * k = ${opts.rows * opts.k} outputs exceed one storage binding;`,
      opts.k,
      `rows * k <= ${maxElems}`,
    );
  }
  return { rows: opts.rows, n: opts.n, k: opts.k };
}

/**
 * Plans a top-k over `[rows, n]` f32 scores. Run it many times with {@link TopKPlan.run}.
 *
 * @example
 * const plan = await planTopK(dev, { rows: T * Hq, n: numBlocks, k: 3 });
 * plan.run(encoder, { scores, indices, values });   // indices [rows, 3] i32, values [rows, 3] f32
 */
export function planTopK(device: DeviceLike, opts: TopKOptions): Promise<TopKPlan> {
  return TopKPlan.create(device, opts);
}

export interface TopKCallOptions {
  /**
   * Read the scores back first and throw `E_NAN` if any is NaN (default false: the kernel treats
   * NaN as -inf). +inf and -inf are valid scores (-inf = masked, +inf = always selected).
   */
  checkFinite?: boolean;
  /** Force a variant (default: chosen by shape). */
  variant?: TopKVariant | 'auto';
  /** Kernel shape of the radix passes (see {@link TopKOptions.target}). */
  target?: 'auto' | 'cpu' | 'gpu';
}

/**
 * Top-k in one call: plans, runs, submits and waits. `rows`, `n` and `k` come from the shapes of
 * `scores` `[rows, n]` and `indices` `[rows, k]`.
 *
 * @example
 * await topK(dev, { scores, indices, values }, { checkFinite: true });
 */
export async function topK(device: DeviceLike, t: TopKTensors, opts: TopKCallOptions = {}): Promise<void> {
  const ctx = ctxOf(device);
  if (t === null || typeof t !== 'object')
    fail('E_ARG', 'tensors', 'is not an object;', t, '{ scores, indices, values? }');
  const scores = checkTensor(t.scores, 'scores', { rank: 2, dtypes: ['f32'] });
  const indices = checkTensor(t.indices, 'indices', { rank: 2, dtypes: ['i32'] });
  const [rows, n] = scores.shape as [number, number];
  const k = indices.shape[1]!;
  if (indices.shape[0] !== rows)
    fail('E_SHAPE', 'indices.shape[0]', 'does not match scores.shape[0];', indices.shape, `[${rows}, k]`);
  if (opts.checkFinite) {
    const words = new Uint32Array(await ctx.readback(scores.buffer, rows * n * 4, scores.offset ?? 0, 'scores.buffer'));
    for (let i = 0; i < words.length; i++) {
      const w = words[i]!;
      if ((w & 0x7fffffff) > 0x7f800000) {
        throw new TesseraError('E_NAN', `scores: NaN at row ${Math.floor(i / n)}, column ${i % n}`, {
          argument: 'scores',
          actual: decode(words.subarray(i, i + 1), 'f32')[0],
          expected: 'no NaN (use -inf to mask a candidate)',
        });
      }
    }
  }
  const plan = await planTopK(ctx, { rows, n, k, variant: opts.variant, target: opts.target });
  await runOnceAndDispose(ctx, plan, t, 'topk');
}
