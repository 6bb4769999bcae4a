/**
 * Dense flash attention, prefill: the plan. Runs on the attention core (kernels/attention,
 * contiguous key source; prefill_core.ts), with padded copies of q/k/v/o for head dims that are
 * not multiples of 4 (pad.ts). Options and their checks: options.ts.
 *
 * Layouts: `q [Tq, Hq, D]`, `k [Tk, Hkv, D]`, `v [Tk, Hkv, Dv]`, `o [Tq, Hq, Dv]`, `lse [Tq, Hq]`
 * f32 natural log. A ragged batch concatenates its sequences along the token axis, described by
 * `cuSeqlensQ`/`cuSeqlensK` (host arrays `[N+1]`, FlashInfer/fla style).
 */
import { ctxOf, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { planLoopLimit } from '../../src/gpu/segments.js';
import { KernelPlan, checkAttentionSizes, runOnceAndDispose } from '../../src/plan.js';
import { DTYPE_BYTES, checkTensor, type FloatDType, type GpuTensor } from '../../src/tensor.js';
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
import { DensePad } from './pad.js';
import { planPrefillCore, type PrefillCore } from './prefill_core.js';

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

/**
 * A planned dense (prefill) attention call: options validated, pipelines compiled, workspaces
 * allocated, the attention core's schedule written. `run` encodes into the caller's encoder and
 * allocates nothing. Create with {@link planAttention}; `dispose()` frees its workspaces.
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
   * Split-K parts per row: 1 (the core writes `o`/`lse` directly) unless a row would loop past
   * 90% of the loop cap (`ctx.loopLimit`, Mesa's llvmpipe, or the plan's `loopLimit`), see
   * `attentionKeysPerPart` (kernels/attention); then each part of at most `kvChunk` keys writes f32
   * partials that the core's merge combines exactly.
   */
  readonly splits: number;
  /** Keys per split (`Infinity` when unsplit). */
  readonly kvChunk: number;
  /** The loop cap the splits were sized for: the device's, or the plan's lower `loopLimit`. */
  readonly loopLimit: number;
  private readonly core: PrefillCore;
  private readonly pad?: DensePad;

  private constructor(
    ctx: TesseraDevice,
    r: ResolvedAttention,
    spans: SeqSpan[],
    limit: number,
    core: PrefillCore,
    pad: DensePad | undefined,
  ) {
    super(ctx);
    this.options = r;
    this.spans = spans;
    this.loopLimit = limit;
    this.core = core;
    this.pad = pad;
    this.splits = core.parts;
    this.kvChunk = core.kvChunk;
    const last = spans[spans.length - 1]!;
    this.Tq = last.qOff + last.tq;
    this.Tk = last.kOff + last.tk;
  }

  /** Milliseconds spent compiling this plan's core pipelines (0 when they were cached). */
  get compileMs(): number {
    return this.core.batch.compileMs;
  }

  /**
   * Query groups encoded one after another (each a schedule of the core, its dispatch and merge),
   * so that a split call's partials stay within `partialBytes` (default `PREFILL_PARTIALS_BYTES`, options.ts);
   * 1 when unsplit.
   */
  get queryGroups(): number {
    return this.core.groups.length;
  }

  /** Whether `run` copies q/k/v/o through padded workspaces (a head dim not a multiple of 4, or K/V not in whole 16-byte words). */
  get padded(): boolean {
    return this.pad !== undefined;
  }

  /** The kernel shape in use: `cpu` (an invocation per query row) or `gpu` (a workgroup per row tile). */
  get target(): 'cpu' | 'gpu' {
    return this.options.target;
  }

  /**
   * @deprecated use {@link target} (and `options.subgroups`): the kernel shape with, for `cpu`,
   * whether subgroups are used (`cpu+subgroups`, `cpu-nosubgroups`, `gpu`).
   */
  get variant(): string {
    const { target, subgroups } = this.options;
    return `${target}${target === 'cpu' ? (subgroups ? '+subgroups' : '-nosubgroups') : ''}`;
  }

  /** @internal use {@link planAttention}. */
  static async create(device: DeviceLike, opts: AttentionPlanOptions): Promise<AttentionPlan> {
    const ctx = ctxOf(device);
    const r = resolveAttention(ctx, opts);
    const spans = resolveSpans(opts);
    const limit = planLoopLimit(ctx, opts.loopLimit);
    const last = spans[spans.length - 1]!;
    const Tq = last.qOff + last.tq;
    const Tk = last.kOff + last.tk;
    checkAttentionSizes(ctx, { ...r, Tq, Tk });
    const core = await planPrefillCore(ctx, r, spans, limit, opts.cuSeqlensQ ? 'cuSeqlensK' : 'Tk');
    let pad: DensePad | undefined;
    try {
      pad = await DensePad.create(ctx, r, Tq, Tk);
    } catch (e) {
      core.batch.dispose();
      throw e;
    }
    return new AttentionPlan(ctx, r, spans, limit, core, pad);
  }

  override dispose(): void {
    this.core.batch.dispose();
    this.pad?.dispose();
    super.dispose();
  }

  run(encoder: GPUCommandEncoder, t: AttentionTensors): void {
    this.assertUsable();
    const r = this.options;
    const { q, k, v, sinkLogits } = checkInputs(this.ctx, r, t, this.Tq, this.Tk);
    const { o, lse } = checkOutputs(this.ctx, r, t, this.Tq);
    const io = this.pad ? this.pad.stage(encoder, { q, k, v, o }) : { q, k, v, o };
    const { batch, groups } = this.core;
    if (groups.length === 1) {
      batch.run(encoder, { q: io.q, k: io.k, v: io.v, o: io.o, lse, sinkLogits });
    } else {
      // Query groups in turn, each its own schedule slot, q/o/lse bound from its first token.
      for (const g of groups) {
        batch.select(g.slot);
        batch.run(encoder, {
          q: rowsOf(io.q, g.tok0, g.tokens),
          k: io.k,
          v: io.v,
          o: rowsOf(io.o, g.tok0, g.tokens),
          lse: lse && rowsOf(lse, g.tok0, g.tokens),
          sinkLogits,
        });
      }
    }
    this.pad?.finish(encoder, o);
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
