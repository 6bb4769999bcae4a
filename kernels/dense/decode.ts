/**
 * Dense attention, decode: one query token per sequence over its contiguous KV, split-K
 * (flash-decoding) into f32 partials merged exactly by `kernels/merge`. The loop is the attention
 * core's (`kernels/attention`, contiguous 'ragged' key source: kvIndptr = the cumulative kvLens,
 * one query per sequence, bottom-right causal), planned once with the lengths fixed here. Head dims
 * or K/V byte sizes the core's 16-byte K/V reads cannot take (a dim not a multiple of 4, or f16/bf16
 * K/V whose size is not a multiple of 16 bytes) run the dense flash kernel (prefill.wgsl) instead.
 *
 * Layouts: `q [N, Hq, D]`, `k [sum kvLens, Hkv, D]`, `v [sum kvLens, Hkv, Dv]` (the rows of
 * sequence n are contiguous, sequences back to back), `o [N, Hq, Dv]`, `lse [N, Hq]` f32.
 * The query of sequence n sits at position kvLens[n] - 1 (bottom-right), so causal masking lets
 * it see every key and only a window (plus sinks) restricts it.
 */
import { check, checkInt, fail } from '../../src/errors.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { KernelPlan, checkPlannedSize, runOnceAndDispose } from '../../src/plan.js';
import { checkTensor, type FloatDType, type GpuTensor } from '../../src/tensor.js';
import { attentionKeysPerPart, planBatchAttention, type BatchAttentionPlan } from '../attention/attention.js';
import { planMerge, type MergePlan } from '../merge/index.js';
import { raggedCoreOptions } from './prefill_core.js';
import {
  ATTN_PARAMS,
  FlashCore,
  checkInputs,
  checkOutputs,
  maxFlashKvChunk,
  resolveAttention,
  type AttentionOptions,
  type AttentionTuning,
  type ResolvedAttention,
  type SeqSpan,
} from './prefill.js';

export interface DecodeOptions extends AttentionOptions, AttentionTuning {
  /** Keys per sequence (N = kvLens.length); 0 is allowed (that row gives o = 0, lse = -inf). */
  kvLens: readonly number[];
  /**
   * Keys per split. Default: at least 256, and enough that there are at most 64 splits. One
   * split writes o/lse directly; more go through f32 partials and the merge kernel. On a device
   * with a loop cap (`ctx.loopLimit`: Mesa's llvmpipe) a chunk past `maxFlashKvChunk` is lowered
   * to it (`plan.kvChunk` is the value used; about 14,000 keys at D = 128 on llvmpipe), and the
   * attention core splits each split finer where its own bound (`attentionKeysPerPart`) needs it
   * (`plan.parts`): the result is the same, only split finer.
   */
  kvChunk?: number;
}

export interface DecodeTensors {
  /** `[N, Hq, D]` in `dtype`. */
  q: GpuTensor;
  /** `[sum kvLens, Hkv, D]` in `dtype`. */
  k: GpuTensor;
  /** `[sum kvLens, Hkv, Dv]` in `dtype`. */
  v: GpuTensor;
  /** `[N, Hq, Dv]` in `outDtype`. */
  o: GpuTensor;
  /** `[N, Hq]` f32, natural log (optional). */
  lse?: GpuTensor;
  /** `[Hq]` f32, required iff `sinkLogit`. */
  sinkLogits?: GpuTensor;
}

/**
 * The default split size (keys per workgroup) for the longest sequence `maxLen`: at least 256,
 * a multiple of 16, and at most 64 splits.
 *
 * @example
 * defaultKvChunk(100_000); // 1568 -> 64 splits
 */
export function defaultKvChunk(maxLen: number): number {
  return Math.max(256, 16 * Math.ceil(maxLen / 64 / 16));
}

/**
 * Whether the attention core can run this decode: head dims multiples of 4 (<= 576 / 512), K and
 * V byte sizes multiples of 16 (it reads them as 16-byte words), heads and sequences within its
 * limits, and at least one key per part within the device's loop cap.
 */
function coreTakes(ctx: TesseraDevice, r: ResolvedAttention, N: number, total: number): boolean {
  const eb = r.dtype === 'f32' ? 4 : 2;
  if (r.D % 4 !== 0 || r.Dv % 4 !== 0 || r.D > 576 || r.Dv > 512) return false;
  if ((total * r.Hkv * r.D * eb) % 16 !== 0 || (total * r.Hkv * r.Dv * eb) % 16 !== 0) return false;
  if (r.Hq > 4096 || r.Hkv > 1024 || N > 1 << 20 || total > 2 ** 31) return false;
  return attentionKeysPerPart(ctx.loopLimit, r.variant, r.D, r.Dv, N) >= 1;
}

/** A planned decode step. Create with {@link planDecode}. */
export class DecodePlan extends KernelPlan<DecodeTensors> {
  readonly options: ResolvedAttention;
  readonly N: number;
  readonly totalKeys: number;
  /** Number of KV splits (`ceil(max kvLens / kvChunk)`). */
  readonly splits: number;
  /** Partials per row that the merge combines (1: o written directly; more where the kernel's loop bound splits finer). */
  readonly parts: number;
  /** Keys per split in use: the `kvChunk` option (or its default), lowered to the loop cap if needed. */
  readonly kvChunk: number;
  /** The kernel that runs: the attention core (contiguous key source) or the dense flash kernel (shapes the core cannot take). */
  readonly kernel: 'core' | 'flash';
  private batch?: BatchAttentionPlan;
  private core?: FlashCore;
  private merger?: MergePlan;
  private oParts?: GpuTensor;
  private lseParts?: GpuTensor;
  private lseScratch?: GpuTensor;

  private constructor(
    ctx: TesseraDevice,
    r: ResolvedAttention,
    N: number,
    totalKeys: number,
    kvChunk: number,
    splits: number,
    parts: number,
    kernel: 'core' | 'flash',
  ) {
    super(ctx);
    this.options = r;
    this.N = N;
    this.totalKeys = totalKeys;
    this.kvChunk = kvChunk;
    this.splits = splits;
    this.parts = parts;
    this.kernel = kernel;
  }

  /** @internal use {@link planDecode}. */
  static async create(device: DeviceLike, opts: DecodeOptions): Promise<DecodePlan> {
    const ctx = ctxOf(device);
    const r = resolveAttention(ctx, opts);
    const lens = opts.kvLens;
    if (!Array.isArray(lens) || lens.length === 0)
      fail('E_ARG', 'kvLens', 'is not a non-empty list of lengths;', lens, 'an array [N] of key counts');
    lens.forEach((x, i) => checkInt(x, `kvLens[${i}]`, { min: 0 }));
    const total = lens.reduce((a: number, b: number) => a + b, 0);
    check(total > 0, 'kvLens', 'at least one key in the batch', lens);
    const maxLen = Math.max(...lens);
    const asked = opts.kvChunk === undefined ? defaultKvChunk(maxLen) : checkInt(opts.kvChunk, 'kvChunk', { min: 1 });
    // Mesa's loop cap: a split must stay within 90% of ctx.loopLimit, so a larger chunk (default
    // or given) is lowered to the largest that does (plan.kvChunk says which).
    const kvChunk = Math.min(
      asked,
      maxFlashKvChunk(ctx.loopLimit, r.variant === 'gpu' ? 'main_gpu' : 'main_decode_cpu', r.D, r.Dv),
    );
    const splits = Math.max(1, Math.ceil(maxLen / kvChunk));
    const N = lens.length;
    checkPlannedSize(ctx, 'q', [N, r.Hq, r.D], r.dtype);
    checkPlannedSize(ctx, 'k', [total, r.Hkv, r.D], r.dtype);
    checkPlannedSize(ctx, 'v', [total, r.Hkv, r.Dv], r.dtype);
    const rows = N * r.Hq;
    if (coreTakes(ctx, r, N, total)) {
      // The core's parts: the splits, cut finer where its own loop bound needs it.
      const partKeys = Math.min(kvChunk, attentionKeysPerPart(ctx.loopLimit, r.variant, r.D, r.Dv, N));
      const parts = Math.max(1, Math.ceil(maxLen / partKeys));
      if (parts > 1) checkPlannedSize(ctx, 'workspace (partials)', [parts, rows, r.Dv], 'f32');
      const plan = new DecodePlan(ctx, r, N, total, kvChunk, splits, parts, 'core');
      const kvIndptr = [0];
      for (const n of lens) kvIndptr.push(kvIndptr[kvIndptr.length - 1]! + n);
      try {
        // causal, bottom-right: a decode query sees every key but for the window; an empty
        // sequence's query sits before its (absent) first key and sees none (earlyQueries)
        plan.batch = await planBatchAttention(ctx, {
          ...raggedCoreOptions(r),
          maxBatch: N,
          maxQTokens: N,
          maxKvTokens: total,
          maxKvLen: Math.max(1, maxLen),
          maxSplits: parts,
          kvChunk: partKeys,
        });
        const info = plan.batch.schedule({ qoIndptr: lens.map((_, i) => i).concat(N), kvIndptr });
        if (info.parts !== parts)
          fail(
            'E_STATE',
            'kvLens',
            'were split differently by the attention core than planned;',
            info.parts,
            `${parts} parts`,
          );
      } catch (e) {
        plan.dispose();
        throw e;
      }
      return plan;
    }
    const parts = splits;
    const plan = new DecodePlan(ctx, r, N, total, kvChunk, splits, parts, 'flash');
    if (parts > 1) checkPlannedSize(ctx, 'workspace (partials)', [parts, rows, r.Dv], 'f32');
    const spans: SeqSpan[] = [];
    let off = 0;
    for (let n = 0; n < N; n++) {
      spans.push({ qOff: n, tq: 1, kOff: off, tk: lens[n]! });
      off += lens[n]!;
    }
    try {
      const alloc = {
        uniform: (values: Record<string, number>) =>
          plan.uniform(ATTN_PARAMS, values as Record<(typeof ATTN_PARAMS.fields)[number][0], number>),
        buffer: (words: Uint32Array, label: string) => {
          const b = plan.workspace(words.byteLength, label);
          ctx.device.queue.writeBuffer(b, 0, words.buffer as ArrayBuffer, words.byteOffset, words.byteLength);
          return b;
        },
      };
      if (parts > 1) {
        plan.oParts = {
          buffer: plan.workspace(parts * rows * r.Dv * 4, 'dense.decode.oParts'),
          shape: [parts, rows, r.Dv],
          dtype: 'f32',
        };
        plan.lseParts = {
          buffer: plan.workspace(parts * rows * 4, 'dense.decode.lseParts'),
          shape: [parts, rows],
          dtype: 'f32',
        };
        plan.lseScratch = { buffer: plan.workspace(rows * 4, 'dense.decode.lse'), shape: [rows], dtype: 'f32' };
        plan.merger = await planMerge(ctx, { parts, rows, D: r.Dv, outDtype: r.outDtype });
      }
      // Split s writes partial s.
      const split = parts > 1 ? { splits, kvChunk, oStride: rows * r.Dv, lseStride: rows } : undefined;
      plan.core = await FlashCore.create(ctx, r, spans, split, alloc);
    } catch (e) {
      plan.dispose();
      throw e;
    }
    return plan;
  }

  override dispose(): void {
    this.batch?.dispose();
    this.merger?.dispose();
    super.dispose();
  }

  run(encoder: GPUCommandEncoder, t: DecodeTensors): void {
    this.assertUsable();
    const r = this.options;
    const { q, k, v, sinkLogits } = checkInputs(this.ctx, r, t, this.N, this.totalKeys);
    const { o, lse } = checkOutputs(this.ctx, r, t, this.N);
    if (this.batch) {
      this.batch.run(encoder, { q, k, v, o, lse, sinkLogits });
      return;
    }
    const c = this.core!;
    const rows = this.N * r.Hq;
    const direct = this.parts === 1;
    const out = direct ? { o, lse } : { o: this.oParts!, lse: this.lseParts! };
    this.dispatch(encoder, c.pipeline, c.bindings({ q, k, v, ...out, sinkLogits }), c.workgroups);
    if (!direct) {
      this.merger!.run(encoder, {
        oParts: this.oParts!,
        lseParts: this.lseParts!,
        o: { buffer: o.buffer, offset: o.offset, shape: [rows, r.Dv], dtype: o.dtype },
        lse: lse ? { buffer: lse.buffer, offset: lse.offset, shape: [rows], dtype: 'f32' } : this.lseScratch!,
      });
    }
  }
}

/**
 * Plans a decode step: one query per sequence over `kvLens[n]` keys, split-K then merged.
 *
 * @example
 * const plan = await planDecode(dev, { Hq: 32, Hkv: 8, D: 128, kvLens: [4096, 17, 900] });
 * plan.run(encoder, { q, k, v, o, lse });
 */
export function planDecode(device: DeviceLike, opts: DecodeOptions): Promise<DecodePlan> {
  return DecodePlan.create(device, opts);
}

/**
 * Decode in one call (plan, run, submit, wait). Shapes come from the tensors; `kvLens` from the
 * options (default: one sequence holding all of k).
 *
 * @example
 * await decodeAttention(dev, { q, k, v, o }, { kvLens: [1000, 24] });
 */
export async function decodeAttention(
  device: DeviceLike,
  t: DecodeTensors,
  opts: Partial<DecodeOptions> = {},
): Promise<void> {
  const ctx = ctxOf(device);
  const q = checkTensor(t?.q, 'q', { rank: 3 });
  const k = checkTensor(t.k, 'k', { rank: 3 });
  const v = checkTensor(t.v, 'v', { rank: 3 });
  const plan = await planDecode(ctx, {
    Hq: q.shape[1]!,
    Hkv: k.shape[1]!,
    D: q.shape[2]!,
    Dv: v.shape[2],
    dtype: q.dtype as FloatDType,
    outDtype: (t.o?.dtype ?? q.dtype) as FloatDType,
    sinkLogit: t.sinkLogits !== undefined,
    kvLens: opts.kvLens ?? [k.shape[0]!],
    ...opts,
  } as DecodeOptions);
  await runOnceAndDispose(ctx, plan, t, 'decode');
}
