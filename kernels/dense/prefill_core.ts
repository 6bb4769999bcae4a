/**
 * Dense prefill on the attention core (kernels/attention, contiguous 'ragged' key source): the
 * sequences of a prefill call become one schedule (qoIndptr = cuSeqlensQ, kvIndptr = cuSeqlensK,
 * bottom-right causal with early queries), planned and scheduled once at plan time. Shapes the
 * core cannot take run the flash kernel (prefill.wgsl) instead: head dims not multiples of 4, K/V
 * byte sizes not multiples of 16, and split calls whose partials would not fit `partialBytes`
 * (the flash kernel's query groups).
 */
import { fail } from '../../src/errors.js';
import { loopBudget, type TesseraDevice } from '../../src/gpu/device.js';
import {
  ATTENTION_TILE_ROWS,
  attentionKeysPerPart,
  planBatchAttention,
  type BatchAttentionOptions,
  type BatchAttentionPlan,
} from '../attention/attention.js';
import { mergePartsPerSegment } from '../merge/merge.js';
import type { ResolvedAttention, SeqSpan } from './options.js';

/** What the core path of a prefill plan decided. */
/**
 * The attention core's options for dense attention over contiguous (ragged) K/V, from the dense
 * plan's resolved options: heads, dims, dtypes, mask (causal bottom-right, where a query before
 * the first key sees none), scale, kernel shape, one schedule slot. Prefill and decode add their
 * capacities and splits.
 */
export function raggedCoreOptions(r: ResolvedAttention) {
  return {
    source: 'ragged',
    Hq: r.Hq,
    Hkv: r.Hkv,
    D: r.D,
    Dv: r.Dv,
    kvDtype: r.dtype,
    qDtype: r.dtype,
    oDtype: r.outDtype,
    causal: r.causal,
    earlyQueries: r.causal,
    window: Math.min(r.window, 0xffffffff),
    sinks: Math.min(r.sinks, 0xffffffff),
    sinkLogit: r.sinkLogit,
    scale: r.scale,
    target: r.variant,
    scheduleSlots: 1,
  } satisfies Partial<BatchAttentionOptions>;
}

export interface PrefillCore {
  batch: BatchAttentionPlan;
  /** Split-K parts per row (1: o and lse written directly). */
  parts: number;
  /** Keys per part (`Infinity` when unsplit). */
  kvChunk: number;
}

/**
 * The fewest keys per part the core may use under `limit` (its packs of one row, with or without
 * the gpu shape's tiles), so that a plan given that many parts always fits them.
 */
function minKeysPerPart(limit: number, r: ResolvedAttention, N: number): number {
  const plain = attentionKeysPerPart(limit, r.variant, r.D, r.Dv, N, 1);
  return r.variant === 'gpu' ? Math.min(plain, attentionKeysPerPart(limit, 'gpu', r.D, r.Dv, N, 1, true)) : plain;
}

/**
 * Plans the prefill on the core, or returns `undefined` where the core cannot take it (the caller
 * then plans the flash kernel).
 */
export async function planPrefillCore(
  ctx: TesseraDevice,
  r: ResolvedAttention,
  spans: readonly SeqSpan[],
  limit: number,
): Promise<PrefillCore | undefined> {
  const eb = r.dtype === 'f32' ? 4 : 2;
  const N = spans.length;
  const last = spans[N - 1]!;
  const Tq = last.qOff + last.tq;
  const Tk = last.kOff + last.tk;
  if (r.D % 4 !== 0 || r.Dv % 4 !== 0) return undefined;
  if ((Tk * r.Hkv * r.D * eb) % 16 !== 0 || (Tk * r.Hkv * r.Dv * eb) % 16 !== 0) return undefined;
  if (r.Hq > 4096 || r.Hkv > 1024 || N > 1 << 20 || Tk > 2 ** 31) return undefined;
  let maxTk = 1;
  for (const s of spans) maxTk = Math.max(maxTk, s.tk);
  // The one step is known now: the gpu shape takes the tiles (main_gpu_tile) where the sequences
  // bring a tile's rows on average, else main_gpu, and compiles only that pipeline (not the
  // per-step fallback the core keeps for schedules it does not know yet).
  const tiles = r.variant === 'gpu' ? (Tq * (r.Hq / r.Hkv)) / N >= ATTENTION_TILE_ROWS : undefined;
  let parts = 1;
  if (Number.isFinite(loopBudget(limit))) {
    const keys = minKeysPerPart(limit, r, N);
    if (keys < 1) return undefined;
    parts = Math.ceil(maxTk / keys);
    const bytes = parts * Tq * r.Hq * (r.Dv + 1) * 4;
    if (parts > 1 && bytes > Math.min(r.partialBytes, ctx.limits.maxStorageBufferBindingSize)) return undefined;
    if (parts > 64 || parts > mergePartsPerSegment(limit, r.Dv)) return undefined;
  }
  const batch = await planBatchAttention(ctx, {
    ...raggedCoreOptions(r),
    maxBatch: N,
    maxQTokens: Tq,
    maxKvTokens: Math.max(1, Tk),
    maxKvLen: maxTk,
    subgroups: r.subgroups ? undefined : false,
    tiles,
    maxSplits: parts,
    loopLimit: Number.isFinite(limit) ? limit : undefined,
  });
  try {
    const qo = [0];
    const kv = [0];
    for (const s of spans) {
      qo.push(s.qOff + s.tq);
      kv.push(s.kOff + s.tk);
    }
    const info = batch.schedule({ qoIndptr: qo, kvIndptr: kv });
    if (info.parts > parts)
      fail('E_STATE', 'Tk', 'was split into more parts by the attention core than planned;', info.parts, `${parts}`);
    return { batch, parts: info.parts, kvChunk: info.parts > 1 ? info.kvChunk : Number.POSITIVE_INFINITY };
  } catch (e) {
    batch.dispose();
    throw e;
  }
}
