/**
 * Uniform rings and command buffers. A plan that writes per-call parameters at `run` time
 * (`kernels/paged`, `kernels/quest` scoring) keeps them in a ring of `maxCalls` uniform slots
 * written with `queue.writeBuffer`, which takes effect at once on the queue, before the caller
 * submits the encoder. So one encoder must not hold more calls of one plan than the ring has
 * slots: the later calls would overwrite the parameters of earlier dispatches not yet run, and
 * every run would still "succeed" with wrong outputs. {@link claimRingSlots} counts, per encoder
 * and plan, the slots used and refuses the call that would wrap with `E_STATE`.
 */
import { TesseraError } from '../errors.js';

const used = new WeakMap<GPUCommandEncoder, WeakMap<object, number>>();

/**
 * Records that `plan` encodes `n` more ring slots into `encoder`; throws `E_STATE` (argument
 * `encoder`) when that would be more than the ring's `slots` for this encoder. Both maps are weak:
 * nothing is retained once the encoder is gone.
 */
export function claimRingSlots(plan: object, encoder: GPUCommandEncoder, n: number, slots: number, name: string): void {
  if (n === 0 || encoder === null || typeof encoder !== 'object') return;
  let perPlan = used.get(encoder);
  if (!perPlan) used.set(encoder, (perPlan = new WeakMap()));
  const before = perPlan.get(plan) ?? 0;
  if (before + n > slots) {
    throw new TesseraError(
      'E_STATE',
      `encoder: ${name} already encoded ${before} calls into this command encoder; ${n} more would reuse its ${slots} uniform slots before the first dispatches ran`,
      {
        argument: 'encoder',
        expected: `at most ${slots} calls (maxCalls) of one plan per command encoder: submit it first, or plan with a larger maxCalls`,
      },
    );
  }
  perPlan.set(plan, before + n);
}
