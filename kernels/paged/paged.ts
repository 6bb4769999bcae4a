/**
 * Paged attention partials over a page list (FlashInfer's paged decode, split into parts): the
 * building block of streaming exact attention and of Quest sparse decode. Each call attends a block
 * of queries to the pages named by a list (all in one pool buffer) and writes one `(o, lse)`
 * partial per part and row; partials of disjoint key sets merge exactly with `kernels/merge`.
 */
import { TesseraError, check, checkInt, fail, checkF32 } from '../../src/errors.js';
import { ctxOf, loopBudget, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { getPipeline, wgslProgram, type Pipeline } from '../../src/gpu/pipeline.js';
import { uniformLayout } from '../../src/gpu/uniforms.js';
import { KernelPlan, checkBindingSize, res } from '../../src/plan.js';
import { checkTensor } from '../../src/tensor.js';
import { kvDtypeCode, pageLayout, KV_DTYPES, type KvDType } from '../../src/kv/codec.js';
import storageWgsl from '../../shaders/storage.wgsl.js';
import pagedWgsl from './paged.wgsl.js';
import { GPUBufferUsageFlags } from '../../src/gpu/flags.js';

export const PAGED_PARAMS = uniformLayout('PagedParams', [
  ['rows', 'u32'],
  ['Hq', 'u32'],
  ['group', 'u32'],
  ['Hkv', 'u32'],
  ['qPos0', 'u32'],
  ['causal', 'u32'],
  ['scaleLog2', 'f32'],
  ['listBase', 'u32'],
  ['nEntries', 'u32'],
  ['ePer', 'u32'],
  ['partBase', 'u32'],
  ['partCount', 'u32'],
  ['pageWords', 'u32'],
  ['kHeadWords', 'u32'],
  ['vOffWords', 'u32'],
  ['vHeadWords', 'u32'],
  ['scaleOffWords', 'u32'],
] as const);

const PROGRAM = wgslProgram('paged/partials', [storageWgsl, PAGED_PARAMS.wgsl, pagedWgsl]);
const WG = 64;
/** Words per list entry: slot, start, len, head. */
export const PAGED_ENTRY_WORDS = 4;
/** `head` value of an entry that applies to every KV head. */
export const ALL_HEADS = 0xffffffff;

/**
 * The loop cost of one invocation of `paged.wgsl`, counted the way Mesa's gallivm counts (every
 * back-edge of every loop, all loops together; a loop entered for n trips counts n + 1), for
 * pages of up to `pageSize` keys: `setup` for the loops outside the page loop and `perEntry` for
 * one list entry (page).
 *
 * - `cpu` (`main_cpu`, one invocation per part and row, `gD = ceil(D/32)`, `gV = ceil(Dv/32)`,
 *   `L = min(pageSize, 256)`): per page the score reset, the max and the exp loops over its keys,
 *   `gD` and `gV` channel groups each with a loop over the keys:
 *   `(3 + gD + gV)(L + 1) + gD + gV + 3`; setup: the zeroing and the normalising loops over Dv.
 * - `gpu` (`main_gpu`, a workgroup per part and row): per page `ceil(L/64)` key blocks, each with
 *   the score loop over D/4, two 6-step tree reductions and the accumulation over <= 64 keys.
 *
 * Both add a small allowance for the compiler (the setup counted twice plus 8).
 */
export function pagedLoopCost(variant: 'cpu' | 'gpu', D: number, Dv: number, pageSize: number): { setup: number; perEntry: number } {
  const L = Math.min(pageSize, 256);
  if (variant === 'cpu') {
    const gD = Math.ceil(D / 32);
    const gV = Math.ceil(Dv / 32);
    return { setup: 2 * (2 * (Dv + 1) + 1) + 8, perEntry: (3 + gD + gV) * (L + 1) + gD + gV + 3 };
  }
  const blocks = Math.ceil(pageSize / WG);
  const perBlock = D / 4 + 1 + 2 * (Math.log2(WG) + 1) + (WG + 1) + 1;
  return { setup: 2 * (Math.ceil(D / 4 / WG) + 2) + 8, perEntry: 1 + (blocks + 1) + blocks * perBlock };
}

/**
 * The most list entries one part may cover so that an invocation stays within 90% of `loopLimit`
 * ({@link pagedLoopCost}); `Infinity` without a cap, 0 when not even one page fits.
 *
 * @example
 * pagedEntriesPerPart(65535, 'cpu', 128, 128, 64); // 81 pages of 64 keys
 */
export function pagedEntriesPerPart(loopLimit: number, variant: 'cpu' | 'gpu', D: number, Dv: number, pageSize: number): number {
  if (!Number.isFinite(loopLimit)) return Number.POSITIVE_INFINITY;
  const c = pagedLoopCost(variant, D, Dv, pageSize);
  return Math.max(0, Math.floor((loopBudget(loopLimit) - c.setup) / c.perEntry));
}

export interface PagedOptions {
  /** Query heads (a multiple of `Hkv`). */
  Hq: number;
  Hkv: number;
  /** Key head dim (multiple of 4, <= 256). */
  D: number;
  /** Value head dim (default D). */
  Dv?: number;
  /** Queries per call (default 1: decode). */
  Tq?: number;
  /** Tokens per page (as in the cache). */
  pageSize: number;
  /** Page storage dtype (default f16). */
  dtype?: KvDType;
  /** Causal masking by absolute position (default true). */
  causal?: boolean;
  /** Softmax scale (default 1/sqrt(D)). */
  scale?: number;
  /** Uniform slots: the number of `dispatch` calls that may be encoded before a submit (default 16). */
  maxCalls?: number;
  /**
   * Kernel shape: `cpu` (one invocation per part and row, no barriers: what SwiftShader runs well),
   * `gpu` (a workgroup per part and row, keys across threads, coalesced V loads), or `auto`
   * (default: by the adapter class).
   */
  variant?: 'auto' | 'cpu' | 'gpu';
}

export interface PagedTensors {
  /** `[Tq, Hq, D]` f32. */
  q: { buffer: GPUBuffer; offset?: number; shape: readonly number[]; dtype: 'f32' };
  /** The pool buffer holding the pages. */
  pages: GPUBuffer;
  /** Page list, `PAGED_ENTRY_WORDS` u32 per entry. */
  list: GPUBuffer;
  /** `[parts, Tq * Hq, Dv]` f32. */
  oParts: { buffer: GPUBuffer; offset?: number; shape: readonly number[]; dtype: 'f32' };
  /** `[parts, Tq * Hq]` f32. */
  lseParts: { buffer: GPUBuffer; offset?: number; shape: readonly number[]; dtype: 'f32' };
}

/** One dispatch: which entries and which parts. */
export interface PagedCall {
  /** Absolute position of query 0 (query t sits at qPos0 + t). */
  qPos0: number;
  /** First entry in the list buffer. */
  listBase: number;
  /** Entries to attend. */
  nEntries: number;
  /** Entries per part. */
  ePer: number;
  /** First part written. */
  partBase: number;
  /** Parts written (parts past the entries get o = 0, lse = -inf). */
  partCount: number;
}

export class PagedPlan extends KernelPlan<PagedTensors & { calls: readonly PagedCall[] }> {
  /** What run writes (checked against the inputs by KernelPlan before encoding). */
  protected override get writes(): readonly string[] {
    return ['oParts', 'lseParts'];
  }
  readonly options: Required<PagedOptions>;
  /** The kernel shape in use. */
  readonly variant: 'cpu' | 'gpu';
  readonly rows: number;
  /**
   * The most entries a call's part may cover on this device (`ePer`, or `nEntries` when smaller):
   * the loop cap of Mesa's llvmpipe (`ctx.loopLimit`) bounds one invocation's pages; `Infinity`
   * elsewhere. Callers size their parts with it; `run` refuses a call past it (`E_LIMIT`).
   */
  readonly maxEntriesPerPart: number;
  private readonly pipeline: Pipeline;
  private readonly params: GPUBuffer;
  private readonly slotBytes: number;
  private nextSlot = 0;
  private readonly fixed: { pageWords: number; kHeadWords: number; vOffWords: number; vHeadWords: number; scaleOffWords: number };

  private constructor(ctx: TesseraDevice, o: Required<PagedOptions>, pipeline: Pipeline, variant: 'cpu' | 'gpu') {
    super(ctx);
    this.options = o;
    this.variant = variant;
    this.rows = o.Tq * o.Hq;
    this.maxEntriesPerPart = pagedEntriesPerPart(ctx.loopLimit, variant, o.D, o.Dv, o.pageSize);
    this.pipeline = pipeline;
    this.slotBytes = Math.max(256, ctx.limits.minUniformBufferOffsetAlignment);
    this.params = this.workspace(this.slotBytes * o.maxCalls, 'paged.params', GPUBufferUsageFlags.UNIFORM | GPUBufferUsageFlags.COPY_DST);
    const L = pageLayout(o.pageSize, o.Hkv, o.D, o.Dv, o.dtype);
    this.fixed = { pageWords: L.pageBytes / 4, kHeadWords: L.kHeadBytes / 4, vOffWords: L.vOffset / 4, vHeadWords: L.vHeadBytes / 4, scaleOffWords: L.scaleOffset / 4 };
  }

  /** @internal use {@link planPaged}. */
  static async create(device: DeviceLike, opts: PagedOptions): Promise<PagedPlan> {
    const ctx = ctxOf(device);
    const o = validate(opts);
    const variant = o.variant === 'auto' ? (ctx.adapterClass === 'cpu' ? 'cpu' : 'gpu') : o.variant;
    // main_cpu holds one page's scores in a private array of 256.
    if (variant === 'cpu' && o.pageSize > 256) fail('E_UNSUPPORTED', 'pageSize', 'is larger than the cpu variant holds;', o.pageSize, 'at most 256 (the KV cache allows 16..256)');
    if (pagedEntriesPerPart(ctx.loopLimit, variant, o.D, o.Dv, o.pageSize) < 1) {
      fail('E_LIMIT', 'pageSize', "makes one page longer than the device's loop limit allows per invocation;", o.pageSize, `smaller pages or head dims (loopLimit ${ctx.loopLimit})`);
    }
    const pipeline = await getPipeline(ctx, {
      shader: PROGRAM,
      entryPoint: variant === 'cpu' ? 'main_cpu' : 'main_gpu',
      bindings: ['read', 'read', 'read', 'rw', 'rw', 'uniform', 'read'],
      constants: { WG, D: o.D, DV: o.Dv, KV_DT: kvDtypeCode(o.dtype), VEC: o.D % 32 === 0 && o.Dv % 32 === 0 ? 1 : 0 },
    });
    return new PagedPlan(ctx, o, pipeline, variant);
  }

  /**
   * Encodes `calls` (one dispatch each). Per-call parameters go into the plan's uniform ring
   * (`maxCalls` slots, used round robin) with `queue.writeBuffer`, so submit the encoder before
   * encoding more than `maxCalls` calls in total.
   */
  run(encoder: GPUCommandEncoder, t: PagedTensors & { calls: readonly PagedCall[] }): void {
    this.assertUsable();
    const o = this.options;
    const q = checkTensor(t.q, 'q', { rank: 3, shape: [o.Tq, o.Hq, o.D], dtypes: ['f32'] });
    const oParts = checkTensor(t.oParts, 'oParts', { rank: 3, shape: [-1, this.rows, o.Dv], dtypes: ['f32'] });
    const parts = oParts.shape[0]!;
    const lseParts = checkTensor(t.lseParts, 'lseParts', { rank: 2, shape: [parts, this.rows], dtypes: ['f32'] });
    for (const [x, n] of [[q, 'q'], [oParts, 'oParts'], [lseParts, 'lseParts']] as const) checkBindingSize(this.ctx, x, n);
    if (!t.pages || typeof t.pages.size !== 'number') fail('E_BUFFER', 'pages', 'is not a GPUBuffer;', typeof t.pages);
    if (!t.list || typeof t.list.size !== 'number') fail('E_BUFFER', 'list', 'is not a GPUBuffer;', typeof t.list);
    if (t.pages.size > this.ctx.limits.maxStorageBufferBindingSize) fail('E_LIMIT', 'pages', 'is larger than one storage binding;', t.pages.size, `at most ${this.ctx.limits.maxStorageBufferBindingSize} bytes`);
    check(Array.isArray(t.calls) && t.calls.length <= o.maxCalls, 'calls', `at most maxCalls = ${o.maxCalls} calls`, t.calls?.length);
    const listEntries = Math.floor(t.list.size / (4 * PAGED_ENTRY_WORDS));
    t.calls.forEach((c, i) => {
      checkInt(c.qPos0, `calls[${i}].qPos0`, { min: 0, max: 0xffffffff - o.Tq });
      checkInt(c.nEntries, `calls[${i}].nEntries`, { min: 0 });
      checkInt(c.listBase, `calls[${i}].listBase`, { min: 0 });
      if (c.listBase + c.nEntries > listEntries) fail('E_BUFFER', `calls[${i}].nEntries`, 'reads past the end of the list buffer;', c.listBase + c.nEntries, `<= ${listEntries}`);
      checkInt(c.ePer, `calls[${i}].ePer`, { min: 1 });
      checkInt(c.partBase, `calls[${i}].partBase`, { min: 0 });
      checkInt(c.partCount, `calls[${i}].partCount`, { min: 0 });
      if (c.partBase + c.partCount > parts) fail('E_SHAPE', `calls[${i}].partCount`, 'writes past the partials;', c.partBase + c.partCount, `<= ${parts}`);
      if (Math.ceil(c.nEntries / c.ePer) > c.partCount) fail('E_ARG', `calls[${i}].partCount`, 'is too small for its entries;', c.partCount, `>= ceil(nEntries / ePer) = ${Math.ceil(c.nEntries / c.ePer)}`);
      if (Math.min(c.ePer, c.nEntries) > this.maxEntriesPerPart) {
        fail('E_LIMIT', `calls[${i}].ePer`, "gives one invocation more pages than the device's loop limit allows;", c.ePer, `at most maxEntriesPerPart = ${this.maxEntriesPerPart}`);
      }
    });
    const qr = res(q);
    const pr = { buffer: t.pages };
    const lr = { buffer: t.list };
    const opr = res(oParts);
    const lpr = res(lseParts);
    for (const c of t.calls) {
      if (c.partCount === 0) continue;
      const slot = this.nextSlot;
      this.nextSlot = (this.nextSlot + 1) % o.maxCalls;
      const values = {
        rows: this.rows,
        Hq: o.Hq,
        group: o.Hq / o.Hkv,
        Hkv: o.Hkv,
        qPos0: c.qPos0,
        causal: o.causal ? 1 : 0,
        scaleLog2: o.scale * Math.LOG2E,
        listBase: c.listBase,
        nEntries: c.nEntries,
        ePer: c.ePer,
        partBase: c.partBase,
        partCount: c.partCount,
        ...this.fixed,
      };
      this.ctx.device.queue.writeBuffer(this.params, slot * this.slotBytes, PAGED_PARAMS.pack(values));
      const invocations = c.partCount * this.rows;
      const groups = this.variant !== 'gpu' ? Math.ceil(invocations / WG) : invocations;
      const max = this.ctx.limits.maxComputeWorkgroupsPerDimension;
      const x = Math.min(groups, max);
      const y = Math.ceil(groups / x);
      if (y > max) throw new TesseraError('E_LIMIT', `paged: ${invocations} invocations exceed the dispatch limit`);
      this.dispatch(encoder, this.pipeline, [qr, pr, lr, opr, lpr, { buffer: this.params, offset: slot * this.slotBytes, size: PAGED_PARAMS.size }, pr], [x, y]);
    }
  }
}

function validate(opts: PagedOptions): Required<PagedOptions> {
  if (!opts || typeof opts !== 'object') fail('E_ARG', 'options', 'is required;', opts);
  const Hkv = checkInt(opts.Hkv, 'Hkv', { min: 1 });
  const Hq = checkInt(opts.Hq, 'Hq', { min: 1 });
  check(Hq % Hkv === 0, 'Hq', `a multiple of Hkv = ${Hkv}`, Hq, 'E_SHAPE');
  const D = checkInt(opts.D, 'D', { min: 4, max: 256 });
  const Dv = checkInt(opts.Dv ?? D, 'Dv', { min: 4, max: 256 });
  check(D % 4 === 0, 'D', 'a multiple of 4', D, 'E_UNSUPPORTED');
  check(Dv % 4 === 0, 'Dv', 'a multiple of 4', Dv, 'E_UNSUPPORTED');
  const Tq = checkInt(opts.Tq ?? 1, 'Tq', { min: 1 });
  const pageSize = checkInt(opts.pageSize, 'pageSize', { min: 1, max: 4096 });
  const dtype = opts.dtype ?? 'f16';
  check(KV_DTYPES.includes(dtype), 'dtype', KV_DTYPES.join(', '), dtype, 'E_DTYPE');
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  checkF32(scale, 'scale');
  const maxCalls = checkInt(opts.maxCalls ?? 16, 'maxCalls', { min: 1, max: 4096 });
  const variant = opts.variant ?? 'auto';
  check(variant === 'auto' || variant === 'cpu' || variant === 'gpu', 'variant', '"auto", "cpu" or "gpu"', variant);
  return { Hq, Hkv, D, Dv, Tq, pageSize, dtype, causal: opts.causal ?? true, scale, maxCalls, variant };
}

/**
 * Plans paged attention partials.
 *
 * @example
 * const plan = await planPaged(dev, { Hq: 8, Hkv: 2, D: 128, pageSize: 64, dtype: 'f16' });
 * plan.run(encoder, { q, pages: poolBuffer, list, oParts, lseParts,
 *   calls: [{ qPos0: T - 1, listBase: 0, nEntries: 12, ePer: 1, partBase: 0, partCount: 12 }] });
 */
export function planPaged(device: DeviceLike, opts: PagedOptions): Promise<PagedPlan> {
  return PagedPlan.create(device, opts);
}
