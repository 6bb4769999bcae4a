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
import { bindGroup, getPipeline, grid2d, wgslProgram, type Pipeline } from '../../src/gpu/pipeline.js';
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
] as const);

export const TOPK_SMALL_PARAMS = uniformLayout('TopKSmallParams', [
  ['rows', 'u32'],
  ['n', 'u32'],
  ['k', 'u32'],
  ['hasValues', 'u32'],
] as const);

const RADIX = wgslProgram('topk/radix', [keysWgsl, TOPK_PARAMS.wgsl, radixWgsl]);
const smallPrograms = new Map<number, ReturnType<typeof wgslProgram>>();
function smallProgram(kcap: number) {
  let p = smallPrograms.get(kcap);
  if (!p) {
    p = wgslProgram(`topk/small-k${kcap}`, [keysWgsl, TOPK_SMALL_PARAMS.wgsl, `const TK_KCAP: u32 = ${kcap}u;\n`, smallWgsl]);
    smallPrograms.set(kcap, p);
  }
  return p;
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
}

export interface TopKTensors {
  /** `[rows, n]` f32 scores. -inf (and NaN) candidates are never selected. */
  scores: GpuTensor;
  /** `[rows, k]` i32 out: selected candidate indices in 0..n-1, best first; -1 in unused slots. */
  indices: GpuTensor;
  /** Optional `[rows, k]` f32 out: the selected scores (-inf in unused slots; -0 reads as +0). */
  values?: GpuTensor;
}

/** Candidates per hist/compact unit (a workgroup on `gpu`, an invocation on `cpu`). */
const CHUNK = 4096;
/** Workgroup size of the radix passes per target. */
const RADIX_WG = { gpu: 256, cpu: 64 } as const;
/** Entry points per target: [hist, compact, rank]. */
const RADIX_ENTRIES = { gpu: ['hist_pass', 'compact_pass', 'rank_pass'], cpu: ['hist_inv', 'compact_inv', 'sort_inv'] } as const;

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

/**
 * The variant `auto` picks for a shape.
 *
 * @example
 * chooseTopKVariant({ rows: 16384, n: 32, k: 3 });   // 'small'
 */
export function chooseTopKVariant(opts: { rows: number; n: number; k: number }): TopKVariant {
  return opts.k <= TOPK_SMALL_MAX_K && opts.n <= TOPK_SMALL_MAX_N ? 'small' : 'radix';
}

export class TopKPlan extends KernelPlan<TopKTensors> {
  readonly options: Readonly<{ rows: number; n: number; k: number }>;
  readonly variant: TopKVariant;
  /** Kernel shape of the radix passes. */
  readonly target: 'cpu' | 'gpu';
  private readonly pipelines: Record<string, Pipeline>;
  private readonly params: [GPUBuffer, GPUBuffer]; // without / with values
  private readonly dummyValues: GPUBuffer;
  private readonly dummyWords: GPUBuffer;
  private readonly state?: GPUBuffer;
  private readonly hist?: GPUBuffer;
  private readonly sel?: GPUBuffer;
  private readonly levels: number;
  /** Survivor slots per row: the radix select stops once the candidates left fit. */
  readonly cap: number;
  private readonly chunks: number;

  private constructor(ctx: TesseraDevice, o: { rows: number; n: number; k: number }, variant: TopKVariant, target: 'cpu' | 'gpu', pipelines: Record<string, Pipeline>) {
    super(ctx);
    this.options = o;
    this.variant = variant;
    this.target = target;
    this.pipelines = pipelines;
    this.dummyValues = this.workspace(16, 'topk.novalues');
    this.dummyWords = this.workspace(16, 'topk.nowords');
    const L = indexDigits(o.n);
    this.levels = 4 + L;
    this.cap = survivorCap(o, target);
    this.chunks = Math.ceil(o.n / CHUNK);
    if (variant === 'small') {
      this.params = [0, 1].map((hasValues) => this.uniform(TOPK_SMALL_PARAMS, { rows: o.rows, n: o.n, k: o.k, hasValues })) as [GPUBuffer, GPUBuffer];
    } else {
      const base = {
        rows: o.rows,
        n: o.n,
        k: o.k,
        chunk: CHUNK,
        chunks: this.chunks,
        levels: this.levels,
        idxShift: L === 0 ? 0 : 32 - 8 * L,
        kBlocks: Math.ceil(this.cap / RADIX_WG[target]),
        cap: this.cap,
      };
      this.params = [0, 1].map((hasValues) => this.uniform(TOPK_PARAMS, { ...base, hasValues })) as [GPUBuffer, GPUBuffer];
      this.state = this.workspace(o.rows * 8 * 4, 'topk.state');
      this.hist = this.workspace(o.rows * 256 * 4, 'topk.hist');
      this.sel = this.workspace(o.rows * this.cap * 8, 'topk.sel');
    }
  }

  /** @internal use {@link planTopK}. */
  static async create(device: DeviceLike, opts: TopKOptions): Promise<TopKPlan> {
    const ctx = ctxOf(device);
    const o = validateTopKOptions(ctx, opts);
    const variant = opts.variant && opts.variant !== 'auto' ? opts.variant : chooseTopKVariant(o);
    if (variant === 'small' && o.k > TOPK_SMALL_MAX_K) {
      fail('E_ARG', 'variant', `"small" takes k <= ${TOPK_SMALL_MAX_K};`, o.k, `k <= ${TOPK_SMALL_MAX_K} or variant "radix"`);
    }
    const t = opts.target ?? 'auto';
    check(t === 'auto' || t === 'cpu' || t === 'gpu', 'target', 'one of "auto", "cpu", "gpu"', t);
    const target = t === 'auto' ? ctx.adapterClass : t;
    const pipelines: Record<string, Pipeline> = {};
    if (variant === 'small') {
      const kcap = o.k <= 4 ? 4 : o.k <= 8 ? 8 : o.k <= 16 ? 16 : 32;
      pipelines.small = await getPipeline(ctx, { shader: smallProgram(kcap), bindings: ['read', 'rw', 'rw', 'uniform'], constants: { WG: 64 } });
    } else {
      const bytes = { state: o.rows * 32, hist: o.rows * 1024, sel: o.rows * survivorCap(o, target) * 8 };
      for (const [name, b] of Object.entries(bytes)) {
        if (b > ctx.limits.maxStorageBufferBindingSize || b > ctx.limits.maxBufferSize) {
          throw new TesseraError('E_LIMIT', `topk: the ${name} workspace of ${b} bytes for rows = ${o.rows}, k = ${o.k} exceeds the device's binding limit`, {
            argument: 'rows',
            actual: o.rows,
            expected: `rows * 2k * 8 <= ${ctx.limits.maxStorageBufferBindingSize} (split the rows into several plans)`,
          });
        }
      }
      const spec = (entryPoint: string) =>
        getPipeline(ctx, { shader: RADIX, entryPoint, bindings: ['read', 'rw', 'rw', 'rw', 'rw', 'rw', 'uniform', 'read'], constants: { WG: RADIX_WG[target] } });
      const [hist, compact, rank] = RADIX_ENTRIES[target];
      const names = { init: 'init', hist, pick: 'pick_pass', compact, rank };
      const ps = await Promise.all(Object.values(names).map(spec));
      Object.keys(names).forEach((n, i) => (pipelines[n] = ps[i]!));
    }
    return new TopKPlan(ctx, o, variant, target, pipelines);
  }

  run(encoder: GPUCommandEncoder, t: TopKTensors): void {
    this.assertUsable();
    const { rows, n, k } = this.options;
    if (t === null || typeof t !== 'object') fail('E_ARG', 'tensors', 'is not an object;', t, '{ scores, indices, values? }');
    const scores = checkTensor(t.scores, 'scores', { rank: 2, shape: [rows, n], dtypes: ['f32'] });
    const indices = checkTensor(t.indices, 'indices', { rank: 2, shape: [rows, k], dtypes: ['i32'] });
    const values = t.values === undefined ? undefined : checkTensor(t.values, 'values', { rank: 2, shape: [rows, k], dtypes: ['f32'] });
    checkBindingSize(this.ctx, scores, 'scores');
    checkBindingSize(this.ctx, indices, 'indices');
    if (values) checkBindingSize(this.ctx, values, 'values');
    const vres = values ? res(values) : { buffer: this.dummyValues };
    const params = { buffer: this.params[values ? 1 : 0] };
    const p = this.pipelines;
    if (this.variant === 'small') {
      const pass = encoder.beginComputePass({ label: 'topk/small' });
      pass.setPipeline(p.small!.pipeline);
      pass.setBindGroup(0, bindGroup(this.ctx, p.small!, [res(scores), res(indices), vres, params]));
      pass.dispatchWorkgroups(...grid2d(this.ctx, Math.ceil(rows / 64)));
      pass.end();
      return;
    }
    encoder.clearBuffer(this.hist!);
    // scores again as 16-byte words: the binding rounded down to whole words.
    const words = Math.floor((rows * n * 4) / 16) * 16;
    const scores4 = words > 0 ? { buffer: scores.buffer, offset: scores.offset ?? 0, size: words } : { buffer: this.dummyWords };
    const group = bindGroup(
      this.ctx,
      p.init!,
      [res(scores), res(indices), vres, { buffer: this.state! }, { buffer: this.hist! }, { buffer: this.sel! }, params, scores4],
      'topk/radix',
    );
    const pass = encoder.beginComputePass({ label: 'topk/radix' });
    pass.setBindGroup(0, group);
    const go = (name: string, count: number) => {
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
    go('rank', rankGroups);
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
    fail('E_LIMIT', 'n', `rows * n = ${opts.rows * opts.n} scores exceed one storage binding;`, opts.n, `rows * n <= ${maxElems} (maxStorageBufferBindingSize / 4)`);
  }
  if (opts.rows * opts.k > maxElems) {
    fail('E_LIMIT', 'k', `rows * k = ${opts.rows * opts.k} outputs exceed one storage binding;`, opts.k, `rows * k <= ${maxElems}`);
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
  if (t === null || typeof t !== 'object') fail('E_ARG', 'tensors', 'is not an object;', t, '{ scores, indices, values? }');
  const scores = checkTensor(t.scores, 'scores', { rank: 2, dtypes: ['f32'] });
  const indices = checkTensor(t.indices, 'indices', { rank: 2, dtypes: ['i32'] });
  const [rows, n] = scores.shape as [number, number];
  const k = indices.shape[1]!;
  if (indices.shape[0] !== rows) fail('E_SHAPE', 'indices.shape[0]', 'does not match scores.shape[0];', indices.shape, `[${rows}, k]`);
  if (opts.checkFinite) {
    const words = new Uint32Array(await ctx.readback(scores.buffer, rows * n * 4, scores.offset ?? 0));
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
