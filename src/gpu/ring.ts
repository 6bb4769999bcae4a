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
import type { BindingResource } from './pipeline.js';
import type { UniformLayout } from './uniforms.js';

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

/**
 * A plan's ring of `slots` uniform slots of one layout in one buffer, a slot every
 * `minUniformBufferOffsetAlignment` bytes (at least 256): a run `claim`s the slots its calls
 * will use in an encoder ({@link claimRingSlots}, named `name`), then `write`s each call's values
 * into the next slot and binds what `write` returns. The plan makes the buffer (`allocate`, its
 * workspace) and frees it.
 *
 * @example
 * this.ring = new UniformRing(ctx, QUEST_PARAMS, o.maxCalls, 'QuestScorePlan', (bytes) => this.workspace(bytes, 'quest.params', UNIFORM | COPY_DST));
 * this.ring.claim(encoder, calls.length);
 * for (const c of calls) this.dispatch(encoder, pipeline, { ...buffers, params: this.ring.write(valuesOf(c)) }, grid);
 */
export class UniformRing<K extends string> {
  readonly buffer: GPUBuffer;
  /** Bytes from one slot to the next. */
  readonly step: number;
  private next = 0;

  constructor(
    private readonly ctx: { readonly device: GPUDevice; readonly limits: { minUniformBufferOffsetAlignment: number } },
    private readonly layout: UniformLayout<K>,
    readonly slots: number,
    private readonly name: string,
    allocate: (bytes: number) => GPUBuffer,
  ) {
    this.step = Math.max(256, ctx.limits.minUniformBufferOffsetAlignment);
    this.buffer = allocate(this.step * slots);
  }

  /** Counts `n` more slots of this ring in `encoder`; `E_STATE` when they would wrap before a submit. */
  claim(encoder: GPUCommandEncoder, n: number): void {
    claimRingSlots(this, encoder, n, this.slots, this.name);
  }

  /** Packs `values` into the next slot (queue.writeBuffer) and returns that slot's binding. */
  write(values: Readonly<Record<K, number>>): BindingResource {
    const slot = this.next;
    this.next = (slot + 1) % this.slots;
    this.ctx.device.queue.writeBuffer(this.buffer, slot * this.step, this.layout.pack(values));
    return { buffer: this.buffer, offset: slot * this.step, size: this.layout.size };
  }
}
