/**
 * Merge of attention partials: `P` partial results `(o_p, lse_p)` over the same rows, each
 * computed on a disjoint set of keys, combine exactly into the attention over the union.
 */
import { check, checkInt, fail } from '../../src/errors.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { maxUnits, planLoopLimit } from '../../src/gpu/segments.js';
import {
  getPipeline,
  grid2d,
  wgslProgram,
  type Pipeline,
  type PipelineSpec,
  type TablePipeline,
} from '../../src/gpu/pipeline.js';
import { bindingTable, registerPasses } from '../../src/gpu/bindings.js';
import { uniformLayout } from '../../src/gpu/uniforms.js';
import { KernelPlan, checkBindingSize, checkPlannedSize, res, runOnceAndDispose } from '../../src/plan.js';
import { checkTensor, dtypeCode, isFloatDType, type FloatDType, type GpuTensor } from '../../src/tensor.js';
import storageWgsl from '../../shaders/storage.wgsl.js';
import mergeWgsl from './merge.wgsl.js';
import { GPUBufferUsageFlags } from '../../src/gpu/flags.js';

export const MERGE_PARAMS = uniformLayout('MergeParams', [
  ['P', 'u32'],
  ['rows', 'u32'],
  ['D', 'u32'],
  ['p0', 'u32'],
  ['carry', 'u32'],
  ['out_state', 'u32'],
  // Always 1.0: the two-sums multiply by it, so that a compiler that reassociates floating point
  // (Mesa's llvmpipe does) cannot prove the rounding error they extract to be zero.
  ['one', 'f32'],
] as const);

const PROGRAM = wgslProgram('merge/merge', [storageWgsl, MERGE_PARAMS.wgsl, mergeWgsl]);
/** @internal The merge program (tests build a loop-counting debug build of it). */
export function getMergeProgram(): typeof PROGRAM {
  return PROGRAM;
}

/**
 * The merge's bindings (src/gpu/bindings.ts). carry_o / carry_s are read only where params.carry
 * is set (a uniform: one pipeline serves every segment); elsewhere run() binds the parts' own
 * buffers there, never a dummy.
 */
const MERGE = bindingTable('merge/merge', {
  o_parts: 'read',
  lse_parts: 'read',
  o_out: 'rw',
  lse_out: 'rw',
  params: 'uniform',
  carry_o: 'read',
  carry_s: 'read',
});

/** A pipeline of the merge (its bindings are the table MERGE, bound by name). */
export type MergePipeline = Pipeline<ReturnType<typeof MERGE.variant>>;

function mergeSpec(outDtype: FloatDType): PipelineSpec<ReturnType<typeof MERGE.variant>> {
  return { shader: PROGRAM, bindings: MERGE.variant({}), constants: { WG, OUT_DTYPE: dtypeCode(outDtype) } };
}
registerPasses('merge', () => [mergeSpec('f32'), mergeSpec('f16')]);
const WG = 64;

/**
 * Loop iterations one invocation of `merge.wgsl` runs for a segment of `parts` partials (plus the
 * carried state) of `D` values, counted the way Mesa's gallivm does (every back-edge of every
 * loop, a loop of n trips as n + 1): the max loop over the parts, the loop over its `E =
 * ceil(D / (2 WG))` value pairs to load the carry, the loop over chunks of WG parts with, per part,
 * a loop over the pairs, and the loop that writes the pairs; plus a small allowance for the compiler.
 *
 * @example
 * mergeLoopIterations(1000, 128); // 4047: far below llvmpipe's 65,535
 */
export function mergeLoopIterations(parts: number, D: number): number {
  const E = Math.ceil(D / (2 * WG));
  const C = Math.ceil(parts / WG);
  return parts * (E + 3) + 2 * C + 2 * E + 13;
}

/**
 * The most parts one dispatch of the merge may take so that an invocation stays within 90% of
 * `loopLimit` (`Infinity` when the device has no cap).
 */
export function mergePartsPerSegment(loopLimit: number, D: number): number {
  return maxUnits((parts) => mergeLoopIterations(parts, D), loopLimit);
}

export interface MergeOptions {
  /** Number of partials. */
  parts: number;
  /** Rows per partial (for attention: tokens x query heads). */
  rows: number;
  /** Values per row (the value head dim). */
  D: number;
  /** Storage dtype of the merged `o` (default f32). `lse` is always f32. */
  outDtype?: FloatDType;
  /**
   * Size the segments for this loop cap instead of the device's (lower only; an integer >= 256):
   * runs the segmented path that Mesa's llvmpipe needs on any adapter (src/gpu/segments.ts).
   */
  loopLimit?: number;
}

export interface MergeTensors {
  /** `[parts, rows, D]` f32. */
  oParts: GpuTensor;
  /** `[parts, rows]` f32, natural log; `-inf` marks a partial that saw no key. */
  lseParts: GpuTensor;
  /** `[rows, D]` in `outDtype` (not written when `stateOut` is given). */
  o?: GpuTensor;
  /** `[rows]` f32 (not written when `stateOut` is given). */
  lse?: GpuTensor;
  /** A running state from an earlier step ({@link createMergeState}), merged in as one more partial. */
  stateIn?: MergeState;
  /** Write the merged result as a running state here instead of `o` and `lse` (must differ from `stateIn`). */
  stateOut?: MergeState;
}

/**
 * The running result of a merge done in steps (streaming, segments), kept exact between steps:
 * the unnormalized sums relative to the running max, each as two f32 (see merge.wgsl).
 * `o` is `[rows, 2, D]` f32 (hi then lo), `s` is `[rows, 4]` f32 (m, S hi, S lo, 0).
 */
export interface MergeState {
  o: GpuTensor;
  s: GpuTensor;
}

/** Bytes of a {@link MergeState} for `rows` rows of `D` values. */
export function mergeStateBytes(rows: number, D: number): number {
  return rows * (2 * D + 4) * 4;
}

/**
 * Allocates a {@link MergeState} (the caller destroys `o.buffer` and `s.buffer`). Its contents
 * matter only once a merge has written it (`stateOut`).
 *
 * @example
 * const a = createMergeState(dev, rows, D), b = createMergeState(dev, rows, D);
 * plan.run(enc, { oParts, lseParts, stateOut: a });              // step 1
 * plan.run(enc, { oParts, lseParts, stateIn: a, stateOut: b });  // step 2
 * plan.finish(enc, { state: b, o, lse });                        // o and lse of everything
 */
export function createMergeState(
  device: DeviceLike,
  rows: number,
  D: number,
  label = 'tessera.merge.state',
): MergeState {
  const ctx = ctxOf(device);
  checkInt(rows, 'rows', { min: 1 });
  checkInt(D, 'D', { min: 1, max: 1024 });
  const usage = GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_SRC | GPUBufferUsageFlags.COPY_DST;
  return {
    o: {
      buffer: ctx.createBuffer({ size: rows * 2 * D * 4, usage, label: `${label}.o` }),
      shape: [rows, 2, D],
      dtype: 'f32',
    },
    s: { buffer: ctx.createBuffer({ size: rows * 4 * 4, usage, label: `${label}.s` }), shape: [rows, 4], dtype: 'f32' },
  };
}

/**
 * An exact merge of attention parts `(o, lse)`.
 * Planned once by `planMerge`; `run` records it into your encoder and allocates
 * nothing; `dispose()` frees what the plan holds.
 *
 * @example
 * const plan = await planMerge(dev, { parts: 4, rows: T * H, D: 64 });
 * plan.run(encoder, { oParts, lseParts, o, lse });
 * plan.dispose();
 */
export class MergePlan extends KernelPlan<MergeTensors> {
  readonly options: Required<Omit<MergeOptions, 'loopLimit'>>;
  /**
   * Dispatches the merge takes: 1, unless the parts are so many that one invocation would run
   * past the device's loop cap (`ctx.loopLimit`, Mesa's llvmpipe); then each dispatch merges at
   * most {@link MergePlan.partsPerSegment} parts into a carried state that the next one continues.
   */
  readonly segments: number;
  readonly partsPerSegment: number;
  private readonly pipeline: TablePipeline<typeof MERGE>;
  /** Per segment, uniforms for [state in?][state out?] (only segment 0 reads a caller's state, only the last writes one). */
  private readonly params: GPUBuffer[][];
  private readonly finishParams: GPUBuffer;
  /** Ping-pong carried states between segments (absent with one segment). */
  private readonly carries: MergeState[] = [];

  private constructor(
    ctx: TesseraDevice,
    options: Required<Omit<MergeOptions, 'loopLimit'>>,
    pipeline: TablePipeline<typeof MERGE>,
    perSegment: number,
  ) {
    super(ctx);
    this.options = options;
    this.pipeline = pipeline;
    const { parts, rows, D } = options;
    this.partsPerSegment = Math.min(parts, perSegment);
    this.segments = Math.ceil(parts / this.partsPerSegment);
    this.params = [];
    for (let i = 0; i < this.segments; i++) {
      const p0 = i * this.partsPerSegment;
      const P = Math.min(parts, p0 + this.partsPerSegment) - p0;
      const last = i === this.segments - 1;
      const row: GPUBuffer[] = [];
      for (const [hasIn, hasOut] of [
        [0, 0],
        [0, 1],
        [1, 0],
        [1, 1],
      ] as const) {
        row.push(
          this.uniform(MERGE_PARAMS, {
            P,
            rows,
            D,
            p0,
            carry: i > 0 || hasIn ? 1 : 0,
            out_state: !last || hasOut ? 1 : 0,
            one: 1,
          }),
        );
      }
      this.params.push(row);
    }
    this.finishParams = this.uniform(MERGE_PARAMS, { P: 0, rows, D, p0: 0, carry: 1, out_state: 0, one: 1 });
    for (let i = 0; i < Math.min(2, this.segments - 1); i++) {
      this.carries.push({
        o: { buffer: this.workspace(rows * 2 * D * 4, 'merge.carryO'), shape: [rows, 2, D], dtype: 'f32' },
        s: { buffer: this.workspace(rows * 4 * 4, 'merge.carryS'), shape: [rows, 4], dtype: 'f32' },
      });
    }
  }

  /** @internal use {@link planMerge}. */
  static async create(device: DeviceLike, opts: MergeOptions): Promise<MergePlan> {
    const ctx = ctxOf(device);
    const o = validateMergeOptions(opts);
    checkPlannedSize(ctx, 'oParts', [o.parts, o.rows, o.D], 'f32');
    checkPlannedSize(ctx, 'o', [o.rows, o.D], o.outDtype);
    const limit = planLoopLimit(ctx, opts.loopLimit);
    const perSegment = mergePartsPerSegment(limit, o.D);
    if (perSegment < 1)
      fail(
        'E_LIMIT',
        'D',
        "is too large for one merge invocation within the device's loop limit;",
        o.D,
        `loopLimit ${limit} allows less than one part`,
      );
    checkPlannedSize(ctx, 'workspace (merge state)', [o.rows, 2, o.D], 'f32');
    const pipeline = await getPipeline(ctx, mergeSpec(o.outDtype));
    return new MergePlan(ctx, o, pipeline, perSegment);
  }

  private checkState(x: MergeState | undefined, name: string): MergeState | undefined {
    if (x === undefined) return undefined;
    const { rows, D } = this.options;
    const o = checkTensor(x?.o, `${name}.o`, { shape: [rows, 2, D], rank: 3, dtypes: ['f32'] });
    const s = checkTensor(x.s, `${name}.s`, { shape: [rows, 4], rank: 2, dtypes: ['f32'] });
    return { o, s };
  }

  run(encoder: GPUCommandEncoder, t: MergeTensors): void {
    this.assertUsable();
    const { parts, rows, D, outDtype } = this.options;
    const oParts = checkTensor(t.oParts, 'oParts', { shape: [parts, rows, D], rank: 3, dtypes: ['f32'] });
    const lseParts = checkTensor(t.lseParts, 'lseParts', { shape: [parts, rows], rank: 2, dtypes: ['f32'] });
    const stateIn = this.checkState(t.stateIn, 'stateIn');
    const stateOut = this.checkState(t.stateOut, 'stateOut');
    if (stateIn && stateOut && (stateIn.o.buffer === stateOut.o.buffer || stateIn.s.buffer === stateOut.s.buffer)) {
      fail('E_ARG', 'stateOut', 'is the same buffer as stateIn;', 'stateIn', 'two states, used in turn');
    }
    let out: { o: GpuTensor; lse: GpuTensor } | undefined;
    if (!stateOut) {
      const o = checkTensor(t.o, 'o', { shape: [rows, D], rank: 2, dtypes: [outDtype] });
      const lse = checkTensor(t.lse, 'lse', { shape: [rows], rank: 1, dtypes: ['f32'] });
      out = { o, lse };
    }
    for (const [x, n] of [
      [oParts, 'oParts'],
      [lseParts, 'lseParts'],
      [out?.o, 'o'],
      [out?.lse, 'lse'],
    ] as const)
      if (x) checkBindingSize(this.ctx, x, n);
    const grid = grid2d(this.ctx, rows);
    const variant = (stateIn ? 2 : 0) + (stateOut ? 1 : 0);
    for (let i = 0; i < this.segments; i++) {
      const last = i === this.segments - 1;
      const from = i > 0 ? this.carries[(i - 1) % 2]! : stateIn;
      const to = last
        ? stateOut
          ? { o: stateOut.o, lse: stateOut.s }
          : out!
        : { o: this.carries[i % 2]!.o, lse: this.carries[i % 2]!.s };
      this.dispatch(
        encoder,
        this.pipeline,
        {
          o_parts: res(oParts),
          lse_parts: res(lseParts),
          o_out: res(to.o),
          lse_out: res(to.lse),
          params: { buffer: this.params[i]![variant]! },
          // without a carried state (params.carry = 0) the parts' own buffers stand in, unread
          carry_o: res(from ? from.o : oParts),
          carry_s: res(from ? from.s : lseParts),
        },
        grid,
      );
    }
  }

  /** Writes `o` and `lse` from a running state (the last step of a merge done in steps). */
  finish(encoder: GPUCommandEncoder, t: { state: MergeState; o: GpuTensor; lse: GpuTensor }): void {
    this.assertUsable();
    const { rows, D, outDtype } = this.options;
    const state = this.checkState(t?.state, 'state')!;
    if (!state) fail('E_ARG', 'state', 'is required;', state);
    const o = checkTensor(t.o, 'o', { shape: [rows, D], rank: 2, dtypes: [outDtype] });
    const lse = checkTensor(t.lse, 'lse', { shape: [rows], rank: 1, dtypes: ['f32'] });
    // P = 0: the part bindings are never read; the state's own buffers stand in for them.
    this.dispatch(
      encoder,
      this.pipeline,
      {
        o_parts: res(state.o),
        lse_parts: res(state.s),
        o_out: res(o),
        lse_out: res(lse),
        params: { buffer: this.finishParams },
        carry_o: res(state.o),
        carry_s: res(state.s),
      },
      grid2d(this.ctx, rows),
    );
  }
}

/**
 * The merge pipeline for outputs of `outDtype`, for kernels whose row count changes per step
 * (the attention core): the caller owns a {@link MERGE_PARAMS} uniform, binds
 * by name `{ o_parts, lse_parts, o_out, lse_out, params, carry_o, carry_s }` (the table MERGE, as
 * MergePlan does; without a carried state the parts' own buffers stand in for the carry, unread) and dispatches one workgroup per row
 * (`grid2d`); rows past `params.rows` return at once.
 */
export function getMergePipeline(ctx: TesseraDevice, outDtype: FloatDType): Promise<MergePipeline> {
  return getPipeline(ctx, mergeSpec(outDtype));
}

function validateMergeOptions(opts: MergeOptions): Required<Omit<MergeOptions, 'loopLimit'>> {
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
export async function merge(
  device: DeviceLike,
  t: MergeTensors,
  opts: { outDtype?: FloatDType; loopLimit?: number } = {},
): Promise<void> {
  const ctx = ctxOf(device);
  const oParts = checkTensor(t.oParts, 'oParts', { rank: 3, dtypes: ['f32'] });
  const [parts, rows, D] = oParts.shape as [number, number, number];
  const plan = await planMerge(ctx, {
    parts,
    rows,
    D,
    outDtype: opts.outDtype ?? (t.o?.dtype as FloatDType),
    loopLimit: opts.loopLimit,
  });
  await runOnceAndDispose(ctx, plan, t, 'merge');
}
