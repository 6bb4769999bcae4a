/**
 * MoBA (Mixture of Block Attention): block gate, top-k block selection with the own block
 * forced, and one softmax over the chosen blocks, on the GPU in three dispatches:
 *   1. `pool.wgsl`: gate keys = mean of the real keys of each block (skipped when the caller
 *      passes `blockMeans`, e.g. the KV cache's per-page means for decode);
 *   2. `select.wgsl`: per query row, gate scores `q · mean(K_b)` (no scale) and an in-register
 *      insertion top-(k-1) over the complete past blocks; the own block is slot 0;
 *   3. the attention core (kernels/attention, key source 3: block lists) reads the selection in
 *      place as each row's key-block list: chosen past blocks in full, the own block causally.
 */
import { check, checkInt, fail } from '../../src/errors.js';
import { resolveTarget } from '../../src/options.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { getPipeline, grid2d, type Pipeline } from '../../src/gpu/pipeline.js';
import { registerPasses, type VariantOf } from '../../src/gpu/bindings.js';
import { uniformLayout } from '../../src/gpu/uniforms.js';
import { KernelPlan, checkAttentionSizes, res, runOnceAndDispose, attentionSizesOf } from '../../src/plan.js';
import { checkTensor, dtypeCode, type FloatDType, type GpuTensor } from '../../src/tensor.js';
import { checkBindings, validateSparseCommon, type GatherTarget } from '../block_sparse/common.js';
import { BlockListPlan } from '../attention/lists.js';
import { selectionPass } from '../block_sparse/ragged.js';
import {
  loops,
  planLoopLimit,
  segment,
  segmentUniforms,
  SEGMENT_FIELDS,
  withLoopLimit,
  type Segment,
} from '../../src/gpu/segments.js';
import { POOL_PARAMS, poolLoopIterations, poolSegments, poolSpec, poolWorkgroups, type PoolPipeline } from './pool.js';
import selectWgsl from './select.wgsl.js';
import varlenSelectWgsl from './varlen_select.wgsl.js';
import selectCoreWgsl from './select_core.wgsl.js';

export const MOBA_SELECT_PARAMS = uniformLayout('MobaSelectParams', [
  ['Tq', 'u32'],
  ['Hq', 'u32'],
  ['Hkv', 'u32'],
  ['K', 'u32'],
  ['BS', 'u32'],
  ['NBM', 'u32'],
  ['POSOFF', 'i32'],
  // segment: candidate blocks [seg_begin, seg_end), continuing the list carried in sel + carry
  // (seg_carry), which the last segment stops carrying (seg_last; see mobaSelectSegments)
  ...SEGMENT_FIELDS,
] as const);

const WG = 64;

/** The gate selection over one sequence (`one`) and over a ragged batch (`batch`, varlen.ts). */
const SELECT = selectionPass(
  'moba/select',
  MOBA_SELECT_PARAMS,
  { entry: selectWgsl, batchEntry: varlenSelectWgsl, core: selectCoreWgsl },
  { q_buf: 'read', gate_keys: 'read', sel: 'rw', params: 'uniform' },
);
export const SELECT_PROGRAM = SELECT.one.program;
type SelectPipeline = Pipeline<VariantOf<typeof SELECT.one.table>>;
/** @internal The batch selection's pipeline (the varlen plan's). */
export type MobaVarlenSelectPipeline = Pipeline<VariantOf<typeof SELECT.batch.table>>;

/** @internal The selection pass's pipeline spec (bindings by name; carry declared where the plan has several segments). */
export function mobaSelectSpec(dtype: FloatDType, D: number, meansDtype: 'f32' | 'f16', carry: boolean) {
  return SELECT.one.spec({ carry }, { WG, IN_DTYPE: dtypeCode(dtype), D, MEANS_DTYPE: dtypeCode(meansDtype) });
}
/** @internal {@link mobaSelectSpec} over a ragged batch (the varlen plan's; f32 block means). */
export function mobaVarlenSelectSpec(dtype: FloatDType, D: number, carry: boolean) {
  return SELECT.batch.spec({ carry }, { WG, IN_DTYPE: dtypeCode(dtype), D });
}
registerPasses('moba', () => [
  mobaSelectSpec('f32', 64, 'f32', false),
  mobaSelectSpec('bf16', 64, 'f16', true),
  mobaVarlenSelectSpec('f32', 64, false),
  mobaVarlenSelectSpec('bf16', 64, true),
]);
/** Largest `topk` the in-register selection keeps. */
export const MOBA_MAX_TOPK = 64;

/**
 * Upper bound of the loop iterations one invocation of `select.wgsl` runs over `nc` candidate
 * blocks, in the counting rules of src/gpu/segments.ts (D4 = D / 4, KP = topk - 1): the early
 * return, the q load (a loop of D4), a carried list read back (a loop of KP), per candidate the
 * gate dot product (a loop of D4) and the insertion call (`sel_offer`: a loop of at most KP - 1
 * shifts), and the KP outputs. Unsegmented nc = ceil(Tk / blockSize): with D = 128, topk = 12 it
 * passes 65,535 at 1,424 blocks (Tk = 91K with blockSize 64).
 *
 * @example
 * mobaSelectLoopIterations(1024, 64, 3, false); // 21,526
 */
export function mobaSelectLoopIterations(nc: number, D: number, topk: number, load: boolean): number {
  const D4 = D / 4;
  const KP = topk - 1;
  return (
    loops.ret +
    loops.loop(D4) +
    (load ? loops.loop(KP) : 0) +
    loops.loop(nc, loops.loop(D4) + loops.call(loops.loop(KP - 1))) +
    loops.loop(KP)
  );
}

/**
 * The selection dispatches under loop cap `limit` (`segment()` of src/gpu/segments.ts): all `NB`
 * candidates at once when that fits, else segments of as many candidates as fit, the list
 * carried between them.
 *
 * @example
 * mobaSelectSegments(4096, 512, 64, 3).length; // 3
 */
export function mobaSelectSegments(limit: number, NB: number, D: number, topk: number, extra = 0): readonly Segment[] {
  const s = segment(NB, (n) => mobaSelectLoopIterations(n, D, topk, n < NB) + extra, limit, {
    op: 'moba',
    what: 'one candidate block of the selection',
    argument: 'D',
    actual: D,
    expected: 'a smaller D or topk, or a larger loopLimit',
  });
  return s.segments;
}

export interface MobaOptions {
  /** Query rows. Prefill: Tq = Tk. Decode: Tq = 1 (the newest token). */
  Tq: number;
  /** Keys (default Tq). Query row t sits at key position t + Tk - Tq (bottom-right). */
  Tk?: number;
  Hq: number;
  Hkv: number;
  /** q/k head dim: a multiple of 4 up to 256. */
  D: number;
  /** v/o head dim (default D). */
  Dv?: number;
  /** MoBA block (chunk) size in tokens, e.g. 512, 4096. */
  blockSize: number;
  /** Blocks per query row, the own block included (MoBA's `moba_topk`), 1..64. */
  topk: number;
  /** Softmax scale (default 1/sqrt(D)). The gate has no scale. */
  scale?: number;
  /** Storage of q, k, v (default f32). */
  dtype?: FloatDType;
  /** Storage of o (default `dtype`). */
  outDtype?: FloatDType;
  /** Storage of a caller's `blockMeans` (default f32; f16 = the KV cache's page mean summaries). */
  meansDtype?: 'f32' | 'f16';
  /** Kernel shape of the attention core: `auto` (default) follows the adapter class; `cpu`/`gpu` force one. */
  target?: GatherTarget;
  /**
   * Size the splits for this loop cap (lower than the device's only; an integer >= 256): tests
   * run the segmented paths llvmpipe needs on any adapter with it. Default: the device's.
   */
  loopLimit?: number;
}

export interface MobaTensors {
  /** `[Tq, Hq, D]`. */
  q: GpuTensor;
  /** `[Tk, Hkv, D]`. */
  k: GpuTensor;
  /** `[Tk, Hkv, Dv]`. */
  v: GpuTensor;
  /** `[Tq, Hq, Dv]` out. */
  o: GpuTensor;
  /** `[Tq, Hq]` f32 out, natural log (optional). */
  lse?: GpuTensor;
  /** `[ceil(Tk / blockSize), Hkv, D]` gate keys in `meansDtype`; default: the block means of k. */
  blockMeans?: GpuTensor;
  /** `[Tq, Hq, topk]` i32 out (optional): own block, then past blocks by gate, -1 unused. */
  selection?: GpuTensor;
}

type Resolved = Required<Omit<MobaOptions, 'Tk' | 'loopLimit'>> & { Tk: number };

/** How a plan splits its dispatches under the device's loop limit (one each elsewhere). */
interface Splits {
  pool: readonly Segment[];
  select: readonly Segment[];
  loopIterations: number;
}

/**
 * MoBA attention (prefill, or decode over per-page key means).
 * Planned once by `planMoba` / `planMobaDecode`; `run` records it into your encoder and allocates
 * nothing; `dispose()` frees what the plan holds.
 *
 * @example
 * const plan = await planMoba(dev, { Tq: 4096, Hq: 8, Hkv: 2, D: 64, blockSize: 512, topk: 3 });
 * plan.run(encoder, { q, k, v, o });
 * plan.dispose();
 */
export class MobaPlan extends KernelPlan<MobaTensors> {
  readonly options: Resolved;
  readonly numBlocks: number;
  private readonly pools: PoolPipeline;
  private readonly selectP: SelectPipeline;
  private readonly selectGiven: SelectPipeline;
  private readonly core: BlockListPlan;
  private readonly poolParams: GPUBuffer[];
  private readonly selParams: GPUBuffer[];
  private readonly means: GPUBuffer;
  private readonly selWs: GPUBuffer;
  private readonly selCarry?: GPUBuffer;
  /**
   * Dispatches of each step per run: 1 each, more on a loop-capped device (llvmpipe) where one
   * invocation would run too many loop iterations (huge blocks, many blocks, many keys); for
   * `attention`, the parts each row's block list is split into (merged by kernels/merge).
   */
  readonly segments: { pool: number; select: number; attention: number };
  /** Upper bound of the loop iterations of one invocation of any of the plan's dispatches. */
  readonly loopIterations: number;

  /** Whether this plan runs a block-centric path: no longer (every row attends its own list through the attention core). */
  get blockCentric(): boolean {
    return false;
  }

  private constructor(
    ctx: TesseraDevice,
    o: Resolved,
    pools: PoolPipeline,
    selectP: SelectPipeline,
    selectGiven: SelectPipeline,
    core: BlockListPlan,
    splits: Splits,
  ) {
    super(ctx);
    this.loopIterations = Math.max(splits.loopIterations, core.split.loopIterations);
    this.segments = { pool: splits.pool.length, select: splits.select.length, attention: core.split.parts };
    this.selectGiven = selectGiven;
    this.options = o;
    this.pools = pools;
    this.selectP = selectP;
    this.core = core;
    const NB = (this.numBlocks = Math.ceil(o.Tk / o.blockSize));
    this.poolParams = splits.pool.map((seg) =>
      this.uniform(POOL_PARAMS, { T: o.Tk, H: o.Hkv, D: o.D, BS: o.blockSize, NB, ...segmentUniforms(seg) }),
    );
    this.selParams = splits.select.map((seg) =>
      this.uniform(MOBA_SELECT_PARAMS, {
        Tq: o.Tq,
        Hq: o.Hq,
        Hkv: o.Hkv,
        K: o.topk,
        BS: o.blockSize,
        NBM: NB,
        POSOFF: o.Tk - o.Tq,
        ...segmentUniforms(seg),
      }),
    );
    if (splits.select.length > 1) this.selCarry = this.workspace(o.Tq * o.Hq * (o.topk - 1) * 4, 'moba.selCarry');
    this.means = this.workspace(NB * o.Hkv * o.D * 4, 'moba.means');
    this.selWs = this.workspace(o.Tq * o.Hq * o.topk * 4, 'moba.selection');
  }

  override dispose(): void {
    this.core.dispose();
    super.dispose();
  }

  /** @internal use {@link planMoba}. */
  static async create(device: DeviceLike, opts: MobaOptions): Promise<MobaPlan> {
    const ctx = ctxOf(device);
    const o = validateMobaOptions(opts);
    checkAttentionSizes(ctx, o);
    // Splits under the device's loop limit (llvmpipe): pooling over token ranges, selection over
    // candidate ranges, attention over list entries / key ranges (see the bound functions).
    const limit = planLoopLimit(ctx, opts.loopLimit);
    const NB = Math.ceil(o.Tk / o.blockSize);
    const pool = poolSegments(limit, o.blockSize, o.Tk);
    const selSegs = mobaSelectSegments(limit, NB, o.D, o.topk);
    const selectIters = Math.max(
      ...selSegs.map((g) => mobaSelectLoopIterations(g.end - g.begin, o.D, o.topk, g.carry)),
    );
    const poolIters = Math.max(...pool.map((g) => poolLoopIterations(g.end - g.begin)));
    const select = (meansDtype: 'f32' | 'f16') =>
      getPipeline(ctx, mobaSelectSpec(o.dtype, o.D, meansDtype, selSegs.length > 1));
    // The attention core reads the selection [Tq, Hq, topk] as one list of topk block ids per row.
    const [pools, selectP, selectGiven, core] = await Promise.all([
      getPipeline(ctx, poolSpec(o.dtype, 'count')),
      select('f32'),
      select(o.meansDtype),
      BlockListPlan.create(withLoopLimit(ctx, limit), {
        Tq: o.Tq,
        Tk: o.Tk,
        Hq: o.Hq,
        Hkv: o.Hkv,
        D: o.D,
        Dv: o.Dv,
        rows: 1,
        heads: o.Hq,
        stride: o.topk,
        base: 0,
        block: o.blockSize,
        maxEntries: o.topk,
        posOff: o.Tk - o.Tq,
        causal: true,
        scale: o.scale,
        qDtype: o.dtype,
        kvDtype: o.dtype,
        oDtype: o.outDtype,
        target: resolveTarget(ctx, o.target),
      }),
    ]);
    return new MobaPlan(ctx, o, pools, selectP, selectGiven, core, {
      pool,
      select: selSegs,
      loopIterations: Math.max(poolIters, selectIters),
    });
  }

  run(encoder: GPUCommandEncoder, t: MobaTensors): void {
    this.assertUsable();
    const { Tq, Tk, Hq, Hkv, D, Dv, dtype, outDtype, topk } = this.options;
    const NB = this.numBlocks;
    const q = checkTensor(t?.q, 'q', { rank: 3, shape: [Tq, Hq, D], dtypes: [dtype] });
    const k = checkTensor(t.k, 'k', { rank: 3, shape: [Tk, Hkv, D], dtypes: [dtype] });
    const v = checkTensor(t.v, 'v', { rank: 3, shape: [Tk, Hkv, Dv], dtypes: [dtype] });
    const o = checkTensor(t.o, 'o', { rank: 3, shape: [Tq, Hq, Dv], dtypes: [outDtype] });
    const lse =
      t.lse === undefined ? undefined : checkTensor(t.lse, 'lse', { rank: 2, shape: [Tq, Hq], dtypes: ['f32'] });
    const means =
      t.blockMeans === undefined
        ? undefined
        : checkTensor(t.blockMeans, 'blockMeans', { rank: 3, shape: [NB, Hkv, D], dtypes: [this.options.meansDtype] });
    const sel =
      t.selection === undefined
        ? undefined
        : checkTensor(t.selection, 'selection', { rank: 3, shape: [Tq, Hq, topk], dtypes: ['i32'] });
    checkBindings(this.ctx, { q, k, v, o });
    const meansRes = means ? res(means) : { buffer: this.means, size: NB * Hkv * D * 4 };
    const selRes = sel ? res(sel) : { buffer: this.selWs, size: Tq * Hq * topk * 4 };
    if (!means)
      for (const u of this.poolParams)
        this.dispatch(
          encoder,
          this.pools,
          { x_buf: res(k), out: meansRes, params: { buffer: u } },
          grid2d(this.ctx, poolWorkgroups(NB, Hkv, D)),
        );
    for (const u of this.selParams) {
      this.dispatch(
        encoder,
        means ? this.selectGiven : this.selectP,
        {
          q_buf: res(q),
          gate_keys: meansRes,
          sel: selRes,
          params: { buffer: u },
          carry: this.selCarry && { buffer: this.selCarry },
        },
        grid2d(this.ctx, Math.ceil((Tq * Hq) / WG)),
      );
    }
    this.core.run(encoder, { q, k, v, lists: selRes, o, lse });
  }
}

/** @internal the option rules of every MoBA plan (also the varlen plan's). */
export function validateMobaOptions(opts: MobaOptions): Resolved {
  if (opts === null || typeof opts !== 'object') fail('E_ARG', 'options', 'missing;', opts, 'an options object');
  const Tq = checkInt(opts.Tq, 'Tq', { min: 1 });
  const Tk = checkInt(opts.Tk ?? Tq, 'Tk', { min: 1 });
  const Hq = checkInt(opts.Hq, 'Hq', { min: 1 });
  const Hkv = checkInt(opts.Hkv, 'Hkv', { min: 1 });
  check(Hq % Hkv === 0, 'Hq', `a multiple of Hkv = ${Hkv}`, Hq);
  const blockSize = checkInt(opts.blockSize, 'blockSize', { min: 1, max: 1 << 20 });
  const topk = checkInt(opts.topk, 'topk', { min: 1 });
  if (topk > MOBA_MAX_TOPK)
    fail(
      'E_UNSUPPORTED',
      'topk',
      'exceeds what the in-register MoBA selection keeps;',
      topk,
      `at most ${MOBA_MAX_TOPK}`,
    );
  const { dtype, outDtype, D, Dv, scale, target } = validateSparseCommon(opts);
  const meansDtype = opts.meansDtype ?? 'f32';
  check(meansDtype === 'f32' || meansDtype === 'f16', 'meansDtype', "'f32' or 'f16'", meansDtype, 'E_DTYPE');
  return { Tq, Tk, Hq, Hkv, D, Dv, blockSize, topk, scale, dtype, outDtype, target, meansDtype };
}

/**
 * Plans MoBA attention (prefill with Tq = Tk, decode with Tq = 1 and the cache length as Tk).
 *
 * @example
 * const plan = await planMoba(dev, { Tq: 4096, Hq: 8, Hkv: 2, D: 64, blockSize: 512, topk: 3 });
 * plan.run(encoder, { q, k, v, o });
 */
export function planMoba(device: DeviceLike, opts: MobaOptions): Promise<MobaPlan> {
  return MobaPlan.create(device, opts);
}

/**
 * MoBA attention in one call (plan, run, submit, wait). Sizes come from the tensors.
 *
 * @example
 * await moba(dev, { q, k, v, o }, { blockSize: 64, topk: 3 });
 */
export async function moba(
  device: DeviceLike,
  t: MobaTensors,
  opts: Omit<MobaOptions, 'Tq' | 'Tk' | 'Hq' | 'Hkv' | 'D' | 'Dv'>,
): Promise<void> {
  const ctx = ctxOf(device);
  const plan = await planMoba(ctx, { ...opts, ...attentionSizesOf(t, opts) });
  await runOnceAndDispose(ctx, plan, t, 'moba');
}

/**
 * MoBA decode over per-block (per-page) gate keys: one query per call at the newest position,
 * with `blockMeans` `[ceil(Tk / blockSize), Hkv, D]` f32 supplied by the caller (the KV cache's
 * page mean summaries, page size = blockSize). Only complete blocks before the query's own
 * block are candidates, so the mean of the partial last page is never read.
 *
 * @example
 * const plan = await planMobaDecode(dev, { Tk: 100_000, Hq: 8, Hkv: 2, D: 64, blockSize: 512, topk: 3 });
 * plan.run(encoder, { q, k, v, o, blockMeans: pageMeans });
 */
export function planMobaDecode(
  device: DeviceLike,
  opts: Omit<MobaOptions, 'Tq' | 'Tk'> & { Tk: number },
): Promise<MobaPlan> {
  return MobaPlan.create(device, { ...opts, Tq: 1 });
}
