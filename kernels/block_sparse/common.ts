/**
 * What the sparse families (block_sparse, MoBA, NSA, DSA) share besides the attention core
 * (kernels/attention, key source 3, lists.ts): the kernel-variant option and the head-dim check.
 */
import { fail } from '../../src/errors.js';
import type { TesseraDevice } from '../../src/gpu/device.js';
import type { FloatDType } from '../../src/tensor.js';
import type { KernelTarget } from '../../src/options.js';

/** Kernel shape option (`target`) of the sparse families: the shared {@link KernelTarget}. */
export type GatherTarget = KernelTarget;

/**
 * The core's shape for a family's `target`: `cpu` (`main_cpu`) on CPU adapters, else `gpu`.
 *
 * @example
 * sparseVariant(ctx, 'auto'); // 'cpu' on SwiftShader
 */
export function sparseVariant(ctx: TesseraDevice, target: GatherTarget = 'auto'): 'cpu' | 'gpu' {
  return target === 'cpu' || (target === 'auto' && ctx.adapterClass === 'cpu') ? 'cpu' : 'gpu';
}

/**
 * Head dims the sparse families accept: multiples of 4 up to `max` (256; DSA: 576 for q/k and
 * 512 for v, MLA latents), and of 8 for 16-bit storage.
 *
 * @example
 * const D = checkHeadDim(opts.D, 'D', 'f16'); // throws E_UNSUPPORTED for 18 or 36
 */
export function checkHeadDim(v: number, argument: string, dtype: FloatDType = 'f32', max = 256): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 4 || v > max)
    fail('E_ARG', argument, 'invalid head dim;', v, `an integer in [4, ${max}]`);
  if (v % 4 !== 0)
    fail('E_UNSUPPORTED', argument, 'head dims must be multiples of 4 in the sparse kernels;', v, 'a multiple of 4');
  if (dtype !== 'f32' && v % 8 !== 0)
    fail(
      'E_UNSUPPORTED',
      argument,
      `head dims must be multiples of 8 with ${dtype} storage in the sparse kernels;`,
      v,
      'a multiple of 8',
    );
  return v;
}
