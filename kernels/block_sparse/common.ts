/**
 * What the sparse families (block_sparse, MoBA, NSA, DSA) share besides the attention core
 * (kernels/attention, key source 3, lists.ts): the kernel-shape option, the head-dim check, the
 * storage / scale / target option rules and the run-time tensor checks.
 */
import { check, checkF32, fail } from '../../src/errors.js';
import type { TesseraDevice } from '../../src/gpu/device.js';
import { checkBindingSize } from '../../src/plan.js';
import { checkTensor, isFloatDType, type DType, type FloatDType, type GpuTensor } from '../../src/tensor.js';
import type { KernelTarget } from '../../src/options.js';

/** Kernel shape option (`target`) of the sparse families: the shared {@link KernelTarget}. */
export type GatherTarget = KernelTarget;

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

/**
 * The option rules every sparse family shares: q/k/v storage `dtype` (default f32), `outDtype`
 * (default dtype), head dims `D` and `Dv` (default D) as {@link checkHeadDim}, `scale` (default
 * 1/sqrt(D)) and the kernel `target`; errors name the option.
 *
 * @example
 * const { dtype, outDtype, D, Dv, scale, target } = validateSparseCommon(opts);
 */
export function validateSparseCommon(opts: {
  D: number;
  Dv?: number;
  dtype?: FloatDType;
  outDtype?: FloatDType;
  scale?: number;
  target?: GatherTarget;
}): { dtype: FloatDType; outDtype: FloatDType; D: number; Dv: number; scale: number; target: GatherTarget } {
  const dtype = opts.dtype ?? 'f32';
  check(isFloatDType(dtype), 'dtype', 'one of f32, f16, bf16', dtype, 'E_DTYPE');
  const outDtype = opts.outDtype ?? dtype;
  check(isFloatDType(outDtype), 'outDtype', 'one of f32, f16, bf16', outDtype, 'E_DTYPE');
  const D = checkHeadDim(opts.D, 'D', dtype);
  const Dv = checkHeadDim(opts.Dv ?? D, 'Dv', dtype);
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  check(checkF32(scale, 'scale', 'a positive finite number') > 0, 'scale', 'a positive finite number', scale);
  const target = opts.target ?? 'auto';
  check(target === 'auto' || target === 'cpu' || target === 'gpu', 'target', "'auto', 'cpu' or 'gpu'", target);
  return { dtype, outDtype, D, Dv, scale, target };
}

/**
 * A run's tensor `x` checked as `[rows, ...row]` of `dtype` (errors name `name`).
 *
 * @example
 * const q = checkRows(t.q, 'q', Tq, [Hq, D], dtype);
 */
export function checkRows(x: unknown, name: string, rows: number, row: readonly number[], dtype: DType): GpuTensor {
  return checkTensor(x, name, { rank: 1 + row.length, shape: [rows, ...row], dtypes: [dtype] });
}

/**
 * Checks that every tensor (keyed by its argument name) is on this device and fits one storage
 * binding (`checkBindingSize`).
 *
 * @example
 * checkBindings(ctx, { q, k, v, o });
 */
export function checkBindings(ctx: TesseraDevice, tensors: Readonly<Record<string, GpuTensor>>): void {
  for (const name in tensors) checkBindingSize(ctx, tensors[name]!, name);
}
