/**
 * Submit epochs: plans that keep per-step state in a ring of slots need to know whether work
 * they encoded may still be waiting for a submit.
 */

const submitCounts = new WeakMap<GPUQueue, { n: number }>();

/**
 * The number of `queue.submit` calls on `ctx`'s queue since Tessera first asked (the first call
 * wraps `submit` on this queue INSTANCE, never the prototype; every submit through it counts,
 * whoever makes it). Returns -1 where the queue object does not accept the wrapper. A plan that
 * records the epoch at `run` knows that work it encoded may be unsubmitted while the epoch is
 * unchanged.
 *
 * @example
 * const e = submitEpoch(ctx); ctx.device.queue.submit([]); submitEpoch(ctx); // e + 1
 */
export function submitEpoch(ctx: { readonly device: GPUDevice }): number {
  const queue = ctx.device.queue;
  let s = submitCounts.get(queue);
  if (!s) {
    const state = { n: 0 };
    const submit = queue.submit;
    try {
      Object.defineProperty(queue, 'submit', {
        value: function submitCounted(this: GPUQueue, commands: Iterable<GPUCommandBuffer>): undefined {
          state.n++;
          return submit.call(this, commands);
        },
        writable: true,
        configurable: true,
        enumerable: false,
      });
      if (queue.submit === submit) state.n = -1;
    } catch {
      state.n = -1;
    }
    submitCounts.set(queue, state);
    s = state;
  }
  return s.n < 0 ? -1 : s.n;
}
