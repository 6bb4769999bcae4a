/**
 * Dense flash attention, prefill: the plan. Runs on the attention core (kernels/attention,
 * contiguous key source; prefill_core.ts) and, for the shapes the core cannot take, on the flash
 * kernel (flash.ts, prefill.wgsl). Options and their checks: options.ts.
 *
 * Layouts: `q [Tq, Hq, D]`, `k [Tk, Hkv, D]`, `v [Tk, Hkv, Dv]`, `o [Tq, Hq, Dv]`, `lse [Tq, Hq]`
 * f32 natural log. A ragged batch concatenates its sequences along the token axis, described by
 * `cuSeqlensQ`/`cuSeqlensK` (host arrays `[N+1]`, FlashInfer/fla style).
 */
import { ctxOf, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { planLoopLimit } from '../../src/gpu/segments.js';
import { KernelPlan, checkAttentionSizes, checkPlannedSize, runOnceAndDispose } from '../../src/plan.js';
import { DTYPE_BYTES, checkTensor, type FloatDType, type GpuTensor } from '../../src/tensor.js';
import { planMerge, type MergePlan } from '../merge/index.js';
import { ATTN_PARAMS, FlashCore, planKvSplit, spansInQueryRange } from './flash.js';
import {
  checkInputs,
  checkOutputs,
  resolveAttention,
  resolveSpans,
  type AttentionOptions,
  type AttentionTuning,
  type ResolvedAttention,
  type SeqSpan,
} from './options.js';
import { planPrefillCore, type PrefillCore } from './prefill_core.js';

export {
  ATTN_PARAMS,
  CPU_TILE_ROWS,
  FlashCore,
  GPU_TILE_ROWS,
  flashLoopCost,
  flashLoopIterations,
  gpuKeyBlock,
  maxFlashKvChunk,
  maxTileKeys,
  planKvSplit,
  spansInQueryRange,
  type FlashEntry,
} from './flash.js';
export {
  MAX_HEAD_DIM,
  PREFILL_PARTIALS_BYTES,
  checkInputs,
  checkOutputs,
  resolveAttention,
  resolveSpans,
  type AttentionOptions,
  type AttentionTuning,
  type ResolvedAttention,
  type SeqSpan,
} from './options.js';

export type AttentionPlanOptions = AttentionOptions &
  AttentionTuning & {
    /**
     * Size the KV splits for this loop cap instead of the device's (lower only; an integer >=
     * 256): runs the split path that Mesa's llvmpipe needs on any adapter (src/gpu/segments.ts).
     */
    loopLimit?: number;
  } & (
    | { Tq: number; Tk?: number; cuSeqlensQ?: undefined; cuSeqlensK?: undefined }
    | { cuSeqlensQ: readonly number[]; cuSeqlensK?: readonly number[]; Tq?: undefined; Tk?: undefined }
  );

export interface AttentionTensors {
  /** `[Tq, Hq, D]` in `dtype`. */
  q: GpuTensor;
  /** `[Tk, Hkv, D]` in `dtype`. */
  k: GpuTensor;
  /** `[Tk, Hkv, Dv]` in `dtype`. */
  v: GpuTensor;
  /** `[Tq, Hq, Dv]` in `outDtype`. */
  o: GpuTensor;
  /** `[Tq, Hq]` f32, natural log (optional). */
  lse?: GpuTensor;
  /** `[Hq]` f32, required iff `sinkLogit`. */
  sinkLogits?: GpuTensor;
}

/** A tensor view of rows `[t0, t0 + n)` of the leading axis (offset in bytes). */
function rowsOf(t: GpuTensor, t0: number, n: number): GpuTensor {
  const per = t.shape.slice(1).reduce((a, b) => a * b, 1);
  return {
    buffer: t.buffer,
    offset: (t.offset ?? 0) + t0 * per * DTYPE_BYTES[t.dtype],
    shape: [n, ...t.shape.slice(1)],
    dtype: t.dtype,
  };
}

/** One query group of a split prefill: its tokens, its flash dispatch and its merge. */
interface QueryGroup {
  tok0: number;
  tokens: number;
  core: FlashCore;
  merger?: MergePlan;
}

/**
 * A planned dense (prefill) attention call: options validated, pipeline compiled, workspaces
 * allocated. `run` encodes into the caller's encoder and allocates nothing. Create with
 * {@link planAttention}; `dispose()` frees its workspaces.
 *
 * @example
 * const plan = await planAttention(dev, { Tq: 300, Hq: 4, Hkv: 2, D: 64, causal: true });
 * const enc = dev.device.createCommandEncoder();
 * plan.run(enc, { q, k, v, o });
 * dev.device.queue.submit([enc.finish()]);
 */
export class AttentionPlan extends KernelPlan<AttentionTensors> {
  readonly options: ResolvedAttention;
  readonly Tq: number;
  readonly Tk: number;
  readonly spans: readonly SeqSpan[];
  /**
   * KV splits per work item: 1 (the kernel writes `o`/`lse` directly) unless a work item would
   * loop past 90% of the loop cap (`ctx.loopLimit`, Mesa's llvmpipe, or the plan's `loopLimit`), see
   * {@link flashLoopIterations}; then each split of `kvChunk` keys writes f32 partials that
   * `kernels/merge` combines exactly.
   */
  readonly splits: number;
  /** Keys per split (`Infinity` when unsplit). */
  readonly kvChunk: number;
  /** The loop cap the splits were sized for: the device's, or the plan's lower `loopLimit`. */
  loopLimit = Number.POSITIVE_INFINITY;
  /**
   * The kernel that runs: the attention core (kernels/attention, contiguous key source) or the
   * flash kernel (prefill.wgsl) for what the core cannot take (see prefill_core.ts).
   */
  kernel: 'core' | 'flash' = 'flash';
  private core?: PrefillCore;
  private groups: QueryGroup[] = [];
  private oParts?: GPUBuffer;
  private lseParts?: GPUBuffer;
  private lseScratch?: GPUBuffer;

  private constructor(
    ctx: TesseraDevice,
    r: ResolvedAttention,
    spans: SeqSpan[],
    split: { splits: number; kvChunk: number },
  ) {
    super(ctx);
    this.options = r;
    this.spans = spans;
    this.splits = split.splits;
    this.kvChunk = split.kvChunk;
    const last = spans[spans.length - 1]!;
    this.Tq = last.qOff + last.tq;
    this.Tk = last.kOff + last.tk;
  }

  /** Milliseconds spent compiling this plan's pipeline (0 when it was cached). */
  get compileMs(): number {
    return this.core ? this.core.batch.compileMs : this.groups[0]!.core.pipeline.compileMs;
  }

  /**
   * Query groups encoded one after another (each a flash dispatch and a merge), so that a split
   * call's partials stay within {@link PREFILL_PARTIALS_BYTES}; 1 when unsplit.
   */
  get queryGroups(): number {
    return this.core ? 1 : this.groups.length;
  }

  /** The kernel variant in use (`cpu`/`gpu`, with or without subgroups). */
  get variant(): string {
    return `${this.options.variant}${this.options.variant === 'cpu' ? (this.options.subgroups ? '+subgroups' : '-nosubgroups') : ''}`;
  }

  /** @internal use {@link planAttention}. */
  static async create(device: DeviceLike, opts: AttentionPlanOptions): Promise<AttentionPlan> {
    const ctx = ctxOf(device);
    const r = resolveAttention(ctx, opts);
    const spans = resolveSpans(opts);
    const limit = planLoopLimit(ctx, opts.loopLimit);
    const last = spans[spans.length - 1]!;
    checkAttentionSizes(ctx, { ...r, Tq: last.qOff + last.tq, Tk: last.kOff + last.tk });
    const core = await planPrefillCore(ctx, r, spans, limit);
    if (core) {
      const plan = new AttentionPlan(ctx, r, spans, { splits: core.parts, kvChunk: core.kvChunk });
      plan.loopLimit = limit;
      plan.kernel = 'core';
      plan.core = core;
      return plan;
    }
    const plan = new AttentionPlan(ctx, r, spans, planKvSplit(limit, r, spans));
    plan.loopLimit = limit;
    try {
      if (plan.splits === 1) {
        plan.groups = [
          { tok0: 0, tokens: plan.Tq, core: await FlashCore.create(ctx, r, spans, undefined, plan.allocator()) },
        ];
      } else {
        await plan.planSplit(r, spans);
      }
    } catch (e) {
      plan.dispose();
      throw e;
    }
    return plan;
  }

  /**
   * The split path: query groups of whole 128-token blocks (so every group's q/o/lse binding
   * offset stays 256-byte aligned in every dtype) small enough that the f32 partials
   * `[splits, tokens * Hq, Dv]` fit {@link PREFILL_PARTIALS_BYTES}; one workspace serves them all.
   */
  private async planSplit(r: ResolvedAttention, spans: readonly SeqSpan[]): Promise<void> {
    const ctx = this.ctx;
    const { splits, kvChunk } = this;
    const perToken = splits * r.Hq * r.Dv * 4;
    const budget = Math.min(r.partialBytes, ctx.limits.maxStorageBufferBindingSize);
    let tokens = Math.max(128, 128 * Math.floor(budget / perToken / 128));
    if (tokens >= this.Tq) tokens = this.Tq;
    checkPlannedSize(ctx, 'workspace (partials)', [splits, tokens * r.Hq, r.Dv], 'f32');
    const rowsMax = tokens * r.Hq;
    this.oParts = this.workspace(splits * rowsMax * r.Dv * 4, 'dense.prefill.oParts');
    this.lseParts = this.workspace(splits * rowsMax * 4, 'dense.prefill.lseParts');
    this.lseScratch = this.workspace(rowsMax * 4, 'dense.prefill.lse');
    const mergers = new Map<number, MergePlan>();
    for (let t0 = 0; t0 < this.Tq; t0 += tokens) {
      const n = Math.min(tokens, this.Tq - t0);
      const rows = n * r.Hq;
      const split = { splits, kvChunk, oStride: rows * r.Dv, lseStride: rows };
      const core = await FlashCore.create(
        ctx,
        r,
        spansInQueryRange(spans, t0, t0 + n, r.causal),
        split,
        this.allocator(),
      );
      let merger = mergers.get(rows);
      if (!merger) {
        merger = await planMerge(ctx, {
          parts: splits,
          rows,
          D: r.Dv,
          outDtype: r.outDtype,
          loopLimit: Number.isFinite(this.loopLimit) ? this.loopLimit : undefined,
        });
        mergers.set(rows, merger);
        this.mergers.push(merger);
      }
      this.groups.push({ tok0: t0, tokens: n, core, merger });
    }
  }

  private readonly mergers: MergePlan[] = [];

  override dispose(): void {
    for (const m of this.mergers) m.dispose();
    this.core?.batch.dispose();
    super.dispose();
  }

  /** @internal buffers owned by this plan. */
  allocator(): {
    uniform: (values: Record<string, number>) => GPUBuffer;
    buffer: (words: Uint32Array, label: string) => GPUBuffer;
  } {
    return {
      uniform: (values) => this.uniform(ATTN_PARAMS, values as Record<(typeof ATTN_PARAMS.fields)[number][0], number>),
      buffer: (words, label) => {
        const b = this.workspace(words.byteLength, label);
        this.ctx.device.queue.writeBuffer(b, 0, words.buffer as ArrayBuffer, words.byteOffset, words.byteLength);
        return b;
      },
    };
  }

  run(encoder: GPUCommandEncoder, t: AttentionTensors): void {
    this.assertUsable();
    const r = this.options;
    const { q, k, v, sinkLogits } = checkInputs(this.ctx, r, t, this.Tq, this.Tk);
    const { o, lse } = checkOutputs(this.ctx, r, t, this.Tq);
    if (this.core) {
      this.core.batch.run(encoder, { q, k, v, o, lse, sinkLogits });
      return;
    }
    if (this.splits === 1) {
      const c = this.groups[0]!.core;
      this.dispatch(encoder, c.pipeline, c.bindings({ q, k, v, o, lse, sinkLogits }), c.workgroups);
      return;
    }
    // Split: per query group, partials over KV chunks, then the exact merge into o / lse.
    const S = this.splits;
    for (const g of this.groups) {
      const c = g.core;
      const rows = g.tokens * r.Hq;
      const oParts: GpuTensor = { buffer: this.oParts!, shape: [S, rows, r.Dv], dtype: 'f32' };
      const lseParts: GpuTensor = { buffer: this.lseParts!, shape: [S, rows], dtype: 'f32' };
      this.dispatch(
        encoder,
        c.pipeline,
        c.bindings({ q: rowsOf(q, g.tok0, g.tokens), k, v, o: oParts, lse: lseParts, sinkLogits }),
        c.workgroups,
      );
      const og = rowsOf(o, g.tok0, g.tokens);
      g.merger!.run(encoder, {
        oParts,
        lseParts,
        o: { buffer: og.buffer, offset: og.offset, shape: [rows, r.Dv], dtype: o.dtype },
        lse: lse
          ? { ...rowsOf(lse, g.tok0, g.tokens), shape: [rows] }
          : { buffer: this.lseScratch!, shape: [rows], dtype: 'f32' },
      });
    }
  }
}

/**
 * Plans dense flash attention over one sequence (`Tq`, `Tk`) or a ragged batch (`cuSeqlensQ`,
 * `cuSeqlensK`). Validates everything and compiles (or fetches) the pipeline.
 *
 * @example
 * const plan = await planAttention(dev, { Tq: 300, Hq: 4, Hkv: 2, D: 64 });
 * const enc = dev.device.createCommandEncoder();
 * plan.run(enc, { q, k, v, o, lse });
 * dev.device.queue.submit([enc.finish()]);
 */
export function planAttention(device: DeviceLike, opts: AttentionPlanOptions): Promise<AttentionPlan> {
  return AttentionPlan.create(device, opts);
}

/**
 * Dense attention in one call: plans from the tensor shapes, runs, submits and waits.
 * `q [Tq, Hq, D]`, `k [Tk, Hkv, D]`, `v [Tk, Hkv, Dv]`, `o [Tq, Hq, Dv]`, `lse? [Tq, Hq]`.
 *
 * @example
 * await attention(dev, { q, k, v, o, lse }, { causal: true });
 */
export async function attention(
  device: DeviceLike,
  t: AttentionTensors,
  opts: Partial<AttentionOptions> &
    AttentionTuning & { cuSeqlensQ?: readonly number[]; cuSeqlensK?: readonly number[] } = {},
): Promise<void> {
  const ctx = ctxOf(device);
  const q = checkTensor(t?.q, 'q', { rank: 3 });
  const k = checkTensor(t.k, 'k', { rank: 3 });
  const v = checkTensor(t.v, 'v', { rank: 3 });
  const [Tq, Hq, D] = q.shape as [number, number, number];
  const [Tk, Hkv] = k.shape as [number, number, number];
  const base = {
    Hq,
    Hkv,
    D,
    Dv: v.shape[2],
    dtype: q.dtype as FloatDType,
    outDtype: (t.o?.dtype ?? q.dtype) as FloatDType,
    sinkLogit: t.sinkLogits !== undefined,
    ...opts,
  };
  const plan = await planAttention(
    ctx,
    opts.cuSeqlensQ
      ? { ...base, cuSeqlensQ: opts.cuSeqlensQ, cuSeqlensK: opts.cuSeqlensK }
      : { ...base, Tq, Tk, cuSeqlensQ: undefined, cuSeqlensK: undefined },
  );
  await runOnceAndDispose(ctx, plan, t, 'attention');
}
