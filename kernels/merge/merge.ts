/**
 * Merge of attention partials: `P` partial results `(o_p, lse_p)` over the same rows, each
 * computed on a disjoint set of keys, combine exactly into the attention over the union.
 */
import { check, checkInt } from '../../src/errors.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { getPipeline, grid2d, wgslProgram, type Pipeline } from '../../src/gpu/pipeline.js';
import { uniformLayout } from '../../src/gpu/uniforms.js';
import { KernelPlan, checkBindingSize, checkPlannedSize, res, runOnceAndDispose } from '../../src/plan.js';
import { checkTensor, dtypeCode, isFloatDType, type FloatDType, type GpuTensor } from '../../src/tensor.js';
import storageWgsl from '../../shaders/storage.wgsl.js';
import mergeWgsl from './merge.wgsl.js';

export const MERGE_PARAMS = uniformLayout('MergeParams', [
  ['P', 'u32'],
  ['rows', 'u32'],
  ['D', 'u32'],
] as const);

const PROGRAM = wgslProgram('merge/merge', [storageWgsl, MERGE_PARAMS.wgsl, mergeWgsl]);

export interface MergeOptions {
  /** Number of partials. */
  parts: number;
  /** Rows per partial (for attention: tokens x query heads). */
  rows: number;
  /** Values per row (the value head dim). */
  D: number;
  /** Storage dtype of the merged `o` (default f32). `lse` is always f32. */
  outDtype?: FloatDType;
}

export interface MergeTensors {
  /** `[parts, rows, D]` f32. */
  oParts: GpuTensor;
  /** `[parts, rows]` f32, natural log; `-inf` marks a partial that saw no key. */
  lseParts: GpuTensor;
  /** `[rows, D]` in `outDtype`. */
  o: GpuTensor;
  /** `[rows]` f32. */
  lse: GpuTensor;
}

export class MergePlan extends KernelPlan<MergeTensors> {
  readonly options: Required<MergeOptions>;
  private readonly pipeline: Pipeline;
  private readonly params: GPUBuffer;

  private constructor(ctx: TesseraDevice, options: Required<MergeOptions>, pipeline: Pipeline) {
    super(ctx);
    this.options = options;
    this.pipeline = pipeline;
    this.params = this.uniform(MERGE_PARAMS, { P: options.parts, rows: options.rows, D: options.D });
  }

  /** @internal use {@link planMerge}. */
  static async create(device: DeviceLike, opts: MergeOptions): Promise<MergePlan> {
    const ctx = ctxOf(device);
    const o = validateMergeOptions(opts);
    checkPlannedSize(ctx, 'oParts', [o.parts, o.rows, o.D], 'f32');
    checkPlannedSize(ctx, 'o', [o.rows, o.D], o.outDtype);
    const pipeline = await getPipeline(ctx, {
      shader: PROGRAM,
      bindings: ['read', 'read', 'rw', 'rw', 'uniform'],
      constants: { WG: 64, OUT_DTYPE: dtypeCode(o.outDtype) },
    });
    return new MergePlan(ctx, o, pipeline);
  }

  run(encoder: GPUCommandEncoder, t: MergeTensors): void {
    this.assertUsable();
    const { parts, rows, D, outDtype } = this.options;
    const oParts = checkTensor(t.oParts, 'oParts', { shape: [parts, rows, D], rank: 3, dtypes: ['f32'] });
    const lseParts = checkTensor(t.lseParts, 'lseParts', { shape: [parts, rows], rank: 2, dtypes: ['f32'] });
    const o = checkTensor(t.o, 'o', { shape: [rows, D], rank: 2, dtypes: [outDtype] });
    const lse = checkTensor(t.lse, 'lse', { shape: [rows], rank: 1, dtypes: ['f32'] });
    for (const [x, n] of [[oParts, 'oParts'], [lseParts, 'lseParts'], [o, 'o'], [lse, 'lse']] as const) checkBindingSize(this.ctx, x, n);
    this.dispatch(encoder, this.pipeline, [res(oParts), res(lseParts), res(o), res(lse), { buffer: this.params }], grid2d(this.ctx, rows));
  }
}

function validateMergeOptions(opts: MergeOptions): Required<MergeOptions> {
  checkInt(opts?.parts, 'parts', { min: 1 });
  checkInt(opts.rows, 'rows', { min: 1 });
  checkInt(opts.D, 'D', { min: 1, max: 1024 });
  const outDtype = opts.outDtype ?? 'f32';
  check(isFloatDType(outDtype), 'outDtype', 'one of f32, f16, bf16', outDtype, 'E_DTYPE');
  check(outDtype === 'f32' || opts.D % 2 === 0, 'D', 'an even head dim for 16-bit outputs', opts.D);
  return { parts: opts.parts, rows: opts.rows, D: opts.D, outDtype };
}

/**
 * Plans a merge of `parts` partials of `[rows, D]`.
 *
 * @example
 * const plan = await planMerge(dev, { parts: 4, rows: T * H, D: 64 });
 * plan.run(encoder, { oParts, lseParts, o, lse });
 */
export function planMerge(device: DeviceLike, opts: MergeOptions): Promise<MergePlan> {
  return MergePlan.create(device, opts);
}

/**
 * Merges partials, submitting and waiting. Shapes are read from the tensors.
 *
 * @example
 * await merge(dev, { oParts, lseParts, o, lse });
 */
export async function merge(device: DeviceLike, t: MergeTensors, opts: { outDtype?: FloatDType } = {}): Promise<void> {
  const ctx = ctxOf(device);
  const oParts = checkTensor(t.oParts, 'oParts', { rank: 3, dtypes: ['f32'] });
  const [parts, rows, D] = oParts.shape as [number, number, number];
  const plan = await planMerge(ctx, { parts, rows, D, outDtype: opts.outDtype ?? t.o?.dtype as FloatDType });
  await runOnceAndDispose(ctx, plan, t, 'merge');
}
