/**
 * Dense attention, decode: one query token per sequence over its contiguous KV, split-K
 * (flash-decoding) into f32 partials merged exactly by the core's merge. The loop is the attention
 * core's (`kernels/attention`, contiguous 'ragged' key source: kvIndptr = the cumulative kvLens,
 * one query per sequence, bottom-right causal), planned once with the lengths fixed here. Head dims
 * that are not multiples of 4, and f16/bf16 K/V that do not end on a 16-byte word, go through
 * padded copies (pad.ts).
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
import { ATTENTION_TILE_ROWS, planBatchAttention, type BatchAttentionPlan } from '../attention/attention.js';
import { DensePad, dim4 } from './pad.js';
import { coreKeysPerPart, raggedCoreOptions } from './prefill_core.js';
import {
  checkInputs,
  checkOutputs,
  resolveAttention,
  type AttentionOptions,
  type AttentionTuning,
  type ResolvedAttention,
} from './options.js';

export interface DecodeOptions extends AttentionOptions, AttentionTuning {
  /** Keys per sequence (N = kvLens.length); 0 is allowed (that row gives o = 0, lse = -inf). */
  kvLens: readonly number[];
  /**
   * Keys per split. Default: at least 256, and enough that there are at most 64 splits. One
   * split writes o/lse directly; more go through f32 partials and the merge. On a device with a
   * loop cap (`ctx.loopLimit`: Mesa's llvmpipe) a chunk past the attention core's bound
   * (`attentionKeysPerPart`, kernels/attention) is lowered to it: `plan.kvChunk` is the value used
   * (about 4,500 keys at D = 128 on llvmpipe), the result is the same, only split finer.
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

/** A planned decode step. Create with {@link planDecode}. */
export class DecodePlan extends KernelPlan<DecodeTensors> {
  readonly options: ResolvedAttention;
  readonly N: number;
  readonly totalKeys: number;
  /** Partials per row that the merge combines (1: o written directly): `ceil(max kvLens / kvChunk)`. */
  readonly parts: number;
  /** Keys per split in use: the `kvChunk` option (or its default), lowered to the loop cap if needed. */
  readonly kvChunk: number;
  private readonly batch: BatchAttentionPlan;
  private readonly pad?: DensePad;

  private constructor(
    ctx: TesseraDevice,
    r: ResolvedAttention,
    N: number,
    totalKeys: number,
    kvChunk: number,
    parts: number,
    batch: BatchAttentionPlan,
    pad: DensePad | undefined,
  ) {
    super(ctx);
    this.options = r;
    this.N = N;
    this.totalKeys = totalKeys;
    this.kvChunk = kvChunk;
    this.parts = parts;
    this.batch = batch;
    this.pad = pad;
  }

  /** Number of KV splits: the same as {@link parts}. */
  get splits(): number {
    return this.parts;
  }

  /** Whether `run` copies q/k/v/o through padded workspaces (a head dim not a multiple of 4, or K/V not in whole 16-byte words). */
  get padded(): boolean {
    return this.pad !== undefined;
  }

  /** The kernel shape in use: `cpu` or `gpu` (the option `target`, 'auto' resolved by adapter class). */
  get target(): 'cpu' | 'gpu' {
    return this.options.target;
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
    check(lens.length <= 1 << 20, 'kvLens', 'at most 2^20 sequences', lens.length, 'E_LIMIT');
    const maxLen = Math.max(...lens);
    const asked = opts.kvChunk === undefined ? defaultKvChunk(maxLen) : checkInt(opts.kvChunk, 'kvChunk', { min: 1 });
    const N = lens.length;
    // Mesa's loop cap: a part must stay within 90% of ctx.loopLimit (the core's bound; its gpu
    // shape takes workgroup tiles where a token's query heads fill one), so a larger chunk
    // (default or given) is lowered to the largest that does (plan.kvChunk says which).
    const tiles = r.target === 'gpu' && r.Hq / r.Hkv >= ATTENTION_TILE_ROWS;
    const bound = coreKeysPerPart(ctx.loopLimit, r, N, tiles);
    if (bound < 1)
      fail(
        'E_LIMIT',
        'D',
        "is too large for one invocation within the device's loop limit;",
        r.D,
        `loopLimit ${ctx.loopLimit}`,
      );
    const kvChunk = Math.min(asked, bound);
    const parts = Math.max(1, Math.ceil(maxLen / kvChunk));
    checkPlannedSize(ctx, 'q', [N, r.Hq, r.D], r.dtype);
    checkPlannedSize(ctx, 'k', [total, r.Hkv, r.D], r.dtype);
    checkPlannedSize(ctx, 'v', [total, r.Hkv, r.Dv], r.dtype);
    if (parts > 1) checkPlannedSize(ctx, 'workspace (partials)', [parts, N * r.Hq, dim4(r.Dv) + 1], 'f32');
    const kvIndptr = [0];
    for (const n of lens) kvIndptr.push(kvIndptr[kvIndptr.length - 1]! + n);
    // causal, bottom-right: a decode query sees every key but for the window; an empty
    // sequence's query sits before its (absent) first key and sees none (earlyQueries)
    const batch = await planBatchAttention(ctx, {
      ...raggedCoreOptions(r),
      maxBatch: N,
      maxQTokens: N,
      maxKvTokens: total,
      maxKvLen: Math.max(1, maxLen),
      maxSplits: parts,
      kvChunk,
      tiles,
    });
    let pad: DensePad | undefined;
    try {
      const info = batch.schedule({ qoIndptr: lens.map((_, i) => i).concat(N), kvIndptr });
      if (info.parts !== parts)
        fail(
          'E_STATE',
          'kvLens',
          'were split differently by the attention core than planned;',
          info.parts,
          `${parts} parts`,
        );
      pad = await DensePad.create(ctx, r, N, total);
    } catch (e) {
      batch.dispose();
      throw e;
    }
    return new DecodePlan(ctx, r, N, total, kvChunk, parts, batch, pad);
  }

  override dispose(): void {
    this.batch.dispose();
    this.pad?.dispose();
    super.dispose();
  }

  run(encoder: GPUCommandEncoder, t: DecodeTensors): void {
    this.assertUsable();
    const r = this.options;
    const { q, k, v, sinkLogits } = checkInputs(this.ctx, r, t, this.N, this.totalKeys);
    const { o, lse } = checkOutputs(this.ctx, r, t, this.N);
    const io = this.pad ? this.pad.stage(encoder, { q, k, v, o }) : { q, k, v, o };
    this.batch.run(encoder, { q: io.q, k: io.k, v: io.v, o: io.o, lse, sinkLogits });
    this.pad?.finish(encoder, o);
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
