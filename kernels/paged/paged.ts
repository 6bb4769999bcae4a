/**
 * Paged attention partials over a page list (FlashInfer's paged decode, split into parts): the
 * building block of streaming exact attention and of Quest sparse decode. Each call attends a block
 * of queries to the pages named by a list (all in one pool buffer) and writes one `(o, lse)`
 * partial per part and row; partials of disjoint key sets merge exactly with `kernels/merge`.
 *
 * The loop itself is the attention core's (`kernels/attention/attention.wgsl`, key source 2: an
 * entry list): this file only validates calls and writes each call's parameters.
 */
import { TesseraError, check, checkInt, fail, checkF32 } from '../../src/errors.js';
import { kernelTarget, resolveTarget, type KernelTarget } from '../../src/options.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { maxUnits, planLoopLimit } from '../../src/gpu/segments.js';
import { getPipeline } from '../../src/gpu/pipeline.js';
import { UniformRing } from '../../src/gpu/ring.js';
import { KernelPlan, checkBindingSize, res } from '../../src/plan.js';
import { checkTensor } from '../../src/tensor.js';
import { kvDtypeCode, pageLayout, KV_DTYPES, type KvDType } from '../attention/page.js';
import {
  CORE_PARAMS,
  CORE_LIST_DEFAULTS,
  attentionListLoopCost,
  coreSpec,
  type CorePipeline,
  ATTENTION_ROWS,
  ATTENTION_WG,
} from '../attention/attention.js';
import { GPUBufferUsageFlags } from '../../src/gpu/flags.js';

/** The uniform block of a call: the attention core's. */
export const PAGED_PARAMS = CORE_PARAMS;
const WG = ATTENTION_WG;
/** Words per list entry: slot, start, len, head. */
export const PAGED_ENTRY_WORDS = 4;
/** `head` value of an entry that applies to every KV head. */
export const ALL_HEADS = 0xffffffff;

/**
 * The loop cost of one invocation for pages of up to `pageSize` keys, counted the way Mesa's
 * gallivm counts (see `attentionLoopCost` in kernels/attention): `setup` for the loops outside the
 * entry loop and `perEntry` for one list entry (page): the cpu shape's 32-key blocks (per key one
 * trip per 32-channel group of D and of Dv, plus the block's address, max and exp loops), the gpu
 * shape's 64-key blocks (score loop over D/4, two tree reductions, the value loop).
 */
export function pagedLoopCost(
  target: 'cpu' | 'gpu',
  D: number,
  Dv: number,
  pageSize: number,
  rows = 1,
): { setup: number; perEntry: number } {
  return attentionListLoopCost(target, D, Dv, pageSize, rows);
}

/**
 * The most list entries one part may cover so that an invocation stays within 90% of `loopLimit`
 * ({@link pagedLoopCost}, sized by `maxUnits` of src/gpu/segments.ts); `Infinity` without a cap, 0
 * when not even one page fits.
 *
 * @example
 * pagedEntriesPerPart(65535, 'cpu', 128, 128, 64); // 71 pages of 64 keys
 */
export function pagedEntriesPerPart(
  loopLimit: number,
  target: 'cpu' | 'gpu',
  D: number,
  Dv: number,
  pageSize: number,
  rows = 1,
): number {
  const c = pagedLoopCost(target, D, Dv, pageSize, rows);
  return maxUnits((entries) => c.setup + entries * c.perEntry, loopLimit);
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
  target?: KernelTarget;
  /** @deprecated Use `target` (same values): the kernel shape's old name in this family. */
  variant?: 'auto' | 'cpu' | 'gpu';
  /**
   * Query rows packed per invocation (cpu) or workgroup (gpu), sharing each K/V load (default 1):
   * 1, 2, 4 or 8 rows of one KV head; they are the G = Hq / Hkv query heads of one query, or,
   * without causal, any of the Tq * G rows of the head (every query sees the same entries).
   */
  rows?: number;
  /**
   * Size the parts for this loop cap (lower than the device's only; an integer >= 256): tests run
   * the split paths llvmpipe needs on any adapter with it. Default: the device's.
   */
  loopLimit?: number;
}

/** The options as a plan holds them: every default filled in, the kernel shape as `target` only. */
type Resolved = Required<Omit<PagedOptions, 'loopLimit' | 'variant'>>;

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

/**
 * Attention over pages of a pool buffer, listed per call.
 * Planned once by `planPaged`; `run` records it into your encoder and allocates
 * nothing; `dispose()` frees what the plan holds.
 *
 * @example
 * const plan = await planPaged(dev, { Hq: 8, Hkv: 2, D: 128, pageSize: 64, dtype: 'f16' });
 * plan.run(encoder, { q, pages, list, oParts, lseParts, calls });
 * plan.dispose();
 */
export class PagedPlan extends KernelPlan<PagedTensors & { calls: readonly PagedCall[] }> {
  /** What run writes (checked against the inputs by KernelPlan before encoding). */
  protected override get writes(): readonly string[] {
    return ['oParts', 'lseParts'];
  }
  readonly options: Resolved;
  /** The loop cap the parts are sized for: the device's, or the plan's lower `loopLimit`. */
  readonly loopLimit: number;
  /** The kernel shape in use. */
  readonly target: 'cpu' | 'gpu';
  /** @deprecated use target (the kernel shape's old name; same value). */
  get variant(): 'cpu' | 'gpu' {
    return this.target;
  }
  readonly rows: number;
  /** Packs per part: one invocation (cpu) or workgroup (gpu) each. */
  private readonly packs: number;
  /**
   * The most entries a call's part may cover on this device (`ePer`, or `nEntries` when smaller):
   * the loop cap (`ctx.loopLimit` of Mesa's llvmpipe, or the plan's lower `loopLimit`) bounds one invocation's pages; `Infinity`
   * elsewhere. Callers size their parts with it; `run` refuses a call past it (`E_LIMIT`).
   */
  readonly maxEntriesPerPart: number;
  private readonly pipeline: CorePipeline;
  private readonly ring: UniformRing<(typeof PAGED_PARAMS.fields)[number][0]>;
  private readonly fixed: Record<string, number>;

  private constructor(ctx: TesseraDevice, o: Resolved, pipeline: CorePipeline, target: 'cpu' | 'gpu', limit: number) {
    super(ctx);
    this.options = o;
    this.loopLimit = limit;
    this.target = target;
    this.rows = o.Tq * o.Hq;
    const G = o.Hq / o.Hkv;
    const span = o.causal ? G : o.Tq * G;
    this.packs = ((o.Tq * G) / span) * o.Hkv * Math.ceil(span / o.rows);
    this.maxEntriesPerPart = pagedEntriesPerPart(limit, target, o.D, o.Dv, o.pageSize, o.rows);
    this.pipeline = pipeline;
    this.ring = new UniformRing(ctx, PAGED_PARAMS, o.maxCalls, 'PagedPlan', (bytes) =>
      this.workspace(bytes, 'paged.params', GPUBufferUsageFlags.UNIFORM | GPUBufferUsageFlags.COPY_DST),
    );
    const L = pageLayout(o.pageSize, o.Hkv, o.D, o.Dv, o.dtype);
    const eb = o.dtype === 'f32' ? 4 : o.dtype === 'int8' ? 1 : 2;
    this.fixed = {
      hq: o.Hq,
      group: o.Hq / o.Hkv,
      hkv: o.Hkv,
      scale_log2: o.scale * Math.LOG2E,
      causal: o.causal ? 1 : 0,
      window: 0,
      sinks: 0,
      has_sink: 0,
      page: o.pageSize,
      page_elems: L.pageBytes / eb,
      page_words: L.pageBytes / 4,
      k_head: L.kHeadBytes / eb,
      v_off: L.vOffset / eb,
      v_head: L.vHeadBytes / eb,
      scale_off: L.scaleOffset / 4,
      off_qo: 0,
      off_kv: 0,
      off_last: 0,
      off_idx: 0,
      lse_off: 0,
      l_rows: this.rows,
      ...CORE_LIST_DEFAULTS,
    };
  }

  /** @internal use {@link planPaged}. */
  static async create(device: DeviceLike, opts: PagedOptions): Promise<PagedPlan> {
    const ctx = ctxOf(device);
    const o = validate(opts);
    const target = resolveTarget(ctx, o.target);
    const limit = planLoopLimit(ctx, opts.loopLimit);
    if (pagedEntriesPerPart(limit, target, o.D, o.Dv, o.pageSize, o.rows) < 1) {
      fail(
        'E_LIMIT',
        'pageSize',
        "makes one page longer than the device's loop limit allows per invocation;",
        o.pageSize,
        `smaller pages or head dims (loopLimit ${limit})`,
      );
    }
    // The attention core with the entry-list key source: q f32, partials f32.
    // SRC 2 writes its partials to o/lse directly (no `work`) and reads no sink logits
    const pipeline = await getPipeline(
      ctx,
      coreSpec(
        { D: o.D, Dv: o.Dv, rows: o.rows, target },
        { SRC: 2, KV_DT: kvDtypeCode(o.dtype), Q_DT: 0, O_DT: 0 },
        { work: false, sink_logits: false, seq_table: false },
      ),
    );
    return new PagedPlan(ctx, o, pipeline, target, limit);
  }

  /**
   * Encodes `calls` (one dispatch each). Per-call parameters go into the plan's uniform ring
   * (`maxCalls` slots, used round robin) with `queue.writeBuffer`, so submit the encoder before
   * encoding more than `maxCalls` calls in total: one encoder that would hold more is refused
   * with `E_STATE` (see `src/gpu/ring.ts`); across encoders, submit them in the order encoded.
   */
  run(encoder: GPUCommandEncoder, t: PagedTensors & { calls: readonly PagedCall[] }): void {
    this.assertUsable();
    const o = this.options;
    const q = checkTensor(t.q, 'q', { rank: 3, shape: [o.Tq, o.Hq, o.D], dtypes: ['f32'] });
    const oParts = checkTensor(t.oParts, 'oParts', { rank: 3, shape: [-1, this.rows, o.Dv], dtypes: ['f32'] });
    const parts = oParts.shape[0]!;
    const lseParts = checkTensor(t.lseParts, 'lseParts', { rank: 2, shape: [parts, this.rows], dtypes: ['f32'] });
    for (const [x, n] of [
      [q, 'q'],
      [oParts, 'oParts'],
      [lseParts, 'lseParts'],
    ] as const)
      checkBindingSize(this.ctx, x, n);
    if (!t.pages || typeof t.pages.size !== 'number') fail('E_BUFFER', 'pages', 'is not a GPUBuffer;', typeof t.pages);
    if (!t.list || typeof t.list.size !== 'number') fail('E_BUFFER', 'list', 'is not a GPUBuffer;', typeof t.list);
    if (t.pages.size > this.ctx.limits.maxStorageBufferBindingSize)
      fail(
        'E_LIMIT',
        'pages',
        'is larger than one storage binding;',
        t.pages.size,
        `at most ${this.ctx.limits.maxStorageBufferBindingSize} bytes`,
      );
    check(
      Array.isArray(t.calls) && t.calls.length <= o.maxCalls,
      'calls',
      `at most maxCalls = ${o.maxCalls} calls`,
      t.calls?.length,
    );
    const listEntries = Math.floor(t.list.size / (4 * PAGED_ENTRY_WORDS));
    t.calls.forEach((c, i) => {
      checkInt(c.qPos0, `calls[${i}].qPos0`, { min: 0, max: 0xffffffff - o.Tq });
      checkInt(c.nEntries, `calls[${i}].nEntries`, { min: 0 });
      checkInt(c.listBase, `calls[${i}].listBase`, { min: 0 });
      if (c.listBase + c.nEntries > listEntries)
        fail(
          'E_BUFFER',
          `calls[${i}].nEntries`,
          'reads past the end of the list buffer;',
          c.listBase + c.nEntries,
          `<= ${listEntries}`,
        );
      checkInt(c.ePer, `calls[${i}].ePer`, { min: 1 });
      checkInt(c.partBase, `calls[${i}].partBase`, { min: 0 });
      checkInt(c.partCount, `calls[${i}].partCount`, { min: 0 });
      if (c.partBase + c.partCount > parts)
        fail('E_SHAPE', `calls[${i}].partCount`, 'writes past the partials;', c.partBase + c.partCount, `<= ${parts}`);
      if (Math.ceil(c.nEntries / c.ePer) > c.partCount)
        fail(
          'E_ARG',
          `calls[${i}].partCount`,
          'is too small for its entries;',
          c.partCount,
          `>= ceil(nEntries / ePer) = ${Math.ceil(c.nEntries / c.ePer)}`,
        );
      if (Math.min(c.ePer, c.nEntries) > this.maxEntriesPerPart) {
        fail(
          'E_LIMIT',
          `calls[${i}].ePer`,
          "gives one invocation more pages than the device's loop limit allows;",
          c.ePer,
          `at most maxEntriesPerPart = ${this.maxEntriesPerPart}`,
        );
      }
    });
    let slotsNeeded = 0;
    for (const c of t.calls) if (c.partCount > 0) slotsNeeded++;
    this.ring.claim(encoder, slotsNeeded);
    const qr = res(q);
    const pr = { buffer: t.pages };
    const lr = { buffer: t.list };
    const opr = res(oParts);
    const lpr = res(lseParts);
    for (const c of t.calls) {
      if (c.partCount === 0) continue;
      const values = {
        ...this.fixed,
        q_pos0: c.qPos0,
        list_base: c.listBase,
        n_entries: c.nEntries,
        e_per: c.ePer,
        part_base: c.partBase,
        part_count: c.partCount,
      } as Record<(typeof CORE_PARAMS.fields)[number][0], number>;
      const invocations = c.partCount * this.packs;
      const groups = this.target !== 'gpu' ? Math.ceil(invocations / WG) : invocations;
      const max = this.ctx.limits.maxComputeWorkgroupsPerDimension;
      const x = Math.min(groups, max);
      const y = Math.ceil(groups / x);
      if (y > max) throw new TesseraError('E_LIMIT', `paged: ${invocations} invocations exceed the dispatch limit`);
      this.dispatch(
        encoder,
        this.pipeline,
        {
          q: qr,
          k: pr,
          v: pr,
          sched: lr,
          o: opr,
          lse: lpr,
          params: this.ring.write(values),
        },
        [x, y],
      );
    }
  }
}

function validate(opts: PagedOptions): Resolved {
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
  const target = kernelTarget(opts);
  const rows = checkInt(opts.rows ?? 1, 'rows', { min: 1, max: 8 });
  check((ATTENTION_ROWS as readonly number[]).includes(rows), 'rows', '1, 2, 4 or 8', rows, 'E_UNSUPPORTED');
  return {
    Hq,
    Hkv,
    D,
    Dv,
    Tq,
    pageSize,
    dtype,
    causal: opts.causal ?? true,
    scale,
    maxCalls,
    target,
    rows,
  };
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
