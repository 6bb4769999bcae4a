/**
 * One run at a time for objects whose async methods share mutable GPU scratch (the running
 * accumulator and page list of a streaming plan, the partials and entry list of a Quest decode
 * plan, the carried state of a `LinearStream`). Two overlapping runs of such an object would both
 * resolve with wrong outputs (each resets or overwrites what the other is still reading), so the
 * second is refused with `E_STATE` instead, before it touches anything. Runs of different objects,
 * even on one cache or device, stay concurrent (each has its own scratch).
 */
import { TesseraError } from './errors.js';

/**
 * Shadows the async `methods` of `obj` by own properties that reject a call while another of them
 * is still pending on the same object (`E_STATE`, argument `plan`). The slot is released when the
 * pending call settles, whether it resolved or failed. Call it once, from the constructor.
 *
 * @example
 * exclusiveRuns(this, 'StreamAttentionPlan', ['run']);
 */
export function exclusiveRuns(obj: object, name: string, methods: readonly string[]): void {
  let running: string | null = null;
  for (const m of methods) {
    const f = Reflect.get(obj, m) as (...args: unknown[]) => Promise<unknown>;
    Object.defineProperty(obj, m, {
      value: (...args: unknown[]): Promise<unknown> => {
        if (running !== null) {
          return Promise.reject(
            new TesseraError(
              'E_STATE',
              `plan: ${name}.${m} was called while ${name}.${running} is still running on this object (they share its scratch buffers)`,
              {
                argument: 'plan',
                expected: 'await the pending call first, or make one plan per concurrent stream',
              },
            ),
          );
        }
        running = m;
        let p: Promise<unknown>;
        try {
          p = Promise.resolve(f.apply(obj, args));
        } catch (e) {
          running = null;
          return Promise.reject(e);
        }
        return p.finally(() => {
          running = null;
        });
      },
      writable: true,
      configurable: true,
      enumerable: false,
    });
  }
}
