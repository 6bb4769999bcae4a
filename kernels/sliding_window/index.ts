/**
 * Sliding-window attention with attention sinks (StreamingLLM; Mistral, Gemma, MiMo-V2-Flash).
 *
 * A thin entry over dense attention (`kernels/dense`, on the attention core), which fuses the window: query at
 * position `pos` sees keys `pos - W < j <= pos`, plus the first `sinks` keys (`j <= pos`), plus
 * optionally a learned per-head sink logit `s_h` in the softmax denominator (MiMo):
 * `lse' = logaddexp(lse, s_h)`, `o' = o * exp(lse - lse')`. Key blocks entirely outside the
 * window (and past the sinks) are never visited, so the cost grows with T * W, not T^2.
 * Nothing here duplicates the kernel; see kernels/dense/README.md for the math and layouts.
 */
import { checkInt } from '../../src/errors.js';
import type { DeviceLike } from '../../src/gpu/device.js';
import {
  attention,
  planAttention,
  planDecode,
  type AttentionOptions,
  type AttentionPlan,
  type AttentionPlanOptions,
  type AttentionTensors,
  type AttentionTuning,
  type DecodeOptions,
  type DecodePlan,
} from '../dense/index.js';

/** Sliding-window options: dense attention options with a required window and no `causal`. */
export type SlidingWindowOptions = Omit<AttentionOptions, 'window' | 'causal'> & {
  /** Window W >= 1: keys pos - W < j <= pos. */
  window: number;
  /** First S keys always visible (attention sinks; StreamingLLM uses 4). Default 0. */
  sinks?: number;
};

type Shape = { Tq: number; Tk?: number } | { cuSeqlensQ: readonly number[]; cuSeqlensK?: readonly number[] };

function windowOf(opts: { window?: unknown }): number {
  return checkInt(opts?.window, 'window', { min: 1 });
}

/**
 * Plans sliding-window prefill (causal, bottom-right aligned).
 *
 * @example
 * const plan = await planSlidingWindow(dev, { Tq: 4096, Hq: 8, Hkv: 2, D: 64, window: 512, sinks: 4 });
 * plan.run(encoder, { q, k, v, o, lse });
 */
export async function planSlidingWindow(
  device: DeviceLike,
  opts: SlidingWindowOptions & AttentionTuning & Shape,
): Promise<AttentionPlan> {
  const window = windowOf(opts);
  return planAttention(device, { ...opts, causal: true, window } as AttentionPlanOptions);
}

/**
 * Sliding-window attention in one call (plan, run, submit, wait); shapes come from the tensors.
 *
 * @example
 * await slidingWindowAttention(dev, { q, k, v, o, lse, sinkLogits }, { window: 128, sinkLogit: true });
 */
export async function slidingWindowAttention(
  device: DeviceLike,
  t: AttentionTensors,
  opts: Partial<SlidingWindowOptions> & { window: number } & AttentionTuning & {
      cuSeqlensQ?: readonly number[];
      cuSeqlensK?: readonly number[];
    },
): Promise<void> {
  const window = windowOf(opts);
  await attention(device, t, { ...opts, causal: true, window });
}

/**
 * Plans a sliding-window decode step (split-K over the window and sinks only, then merged).
 *
 * @example
 * const plan = await planSlidingWindowDecode(dev, { Hq: 8, Hkv: 2, D: 64, window: 512, sinks: 4, kvLens: [9000, 300] });
 */
export async function planSlidingWindowDecode(
  device: DeviceLike,
  opts: SlidingWindowOptions & AttentionTuning & { kvLens: readonly number[]; kvChunk?: number },
): Promise<DecodePlan> {
  const window = windowOf(opts);
  return planDecode(device, { ...opts, causal: true, window } as DecodeOptions);
}

export { slidingWindowReference } from './reference.js';
