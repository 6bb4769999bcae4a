/**
 * MoBA (Mixture of Block Attention): block gate, top-k block selection with the own block
 * forced, and one softmax over the chosen blocks, on the GPU in three dispatches:
 *   1. `pool.wgsl`: gate keys = mean of the real keys of each block (skipped when the caller
 *      passes `blockMeans`, e.g. the KV cache's per-page means for decode);
 *   2. `select.wgsl`: per query row, gate scores `q · mean(K_b)` (no scale) and an in-register
 *      insertion top-(k-1) over the complete past blocks; the own block is slot 0;
 *   3. the gathered-block attention core (`kernels/block_sparse/gather.wgsl`, one row per group):
 *      chosen past blocks in full, the own block causally.
 */
import { check, checkInt, fail, checkF32 } from '../../src/errors.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { getPipeline, grid2d, wgslProgram, type Pipeline } from '../../src/gpu/pipeline.js';
import { uniformLayout } from '../../src/gpu/uniforms.js';
import { KernelPlan, checkAttentionSizes, checkBindingSize, res, runOnceAndDispose, attentionSizesOf } from '../../src/plan.js';
import { checkTensor, dtypeCode, isFloatDType, type FloatDType, type GpuTensor } from '../../src/tensor.js';
import storageWgsl from '../../shaders/storage.wgsl.js';
import unpackWgsl from '../../shaders/unpack4.wgsl.js';
import {
  GATHER_DEFAULTS, GATHER_PARAMS, GatherStaging, checkHeadDim, gatherGrid, gatherKernel, gatherSegmentsIterations, gatherSegmentsOrThrow, gatherTiles, gatherUsesCpu,
  type GatherKernel, type GatherSegment, type GatherTarget,
} from '../block_sparse/gather.js';
import { MergePlan, planMerge } from '../merge/index.js';
import { loopBudget } from '../topk/topk.js';
import listsWgsl from './lists.wgsl.js';
import { POOL_PARAMS, poolLoopIterations, poolPipeline, poolSegments, poolWorkgroups, type PoolSegment } from './pool.js';
import selectWgsl from './select.wgsl.js';
import selectSmallWgsl from '../../shaders/select_small.wgsl.js';

export const MOBA_SELECT_PARAMS = uniformLayout('MobaSelectParams', [
  ['Tq', 'u32'],
  ['Hq', 'u32'],
  ['Hkv', 'u32'],
  ['K', 'u32'],
  ['BS', 'u32'],
  ['NBM', 'u32'],
  ['POSOFF', 'i32'],
  ['B0', 'u32'], // segment: candidate blocks [B0, B1) ...
  ['B1', 'u32'],
  ['LOAD', 'u32'], // ... continuing the list carried in sel + carry ...
  ['LAST', 'u32'], // ... which the last segment stops carrying (see mobaSelectSegments)
] as const);

export const MOBA_LIST_PARAMS = uniformLayout('MobaListParams', [
  ['rows', 'u32'],
  ['Hq', 'u32'],
  ['K', 'u32'],
  ['NB', 'u32'],
  ['NL', 'u32'],
] as const);

const LISTS_PROGRAM = wgslProgram('moba/lists', [storageWgsl, MOBA_LIST_PARAMS.wgsl, listsWgsl]);
const SELECT_PROGRAM = wgslProgram('moba/select', [storageWgsl, unpackWgsl, selectSmallWgsl, MOBA_SELECT_PARAMS.wgsl, selectWgsl]);
const WG = 64;
/** Largest `topk` the in-register selection keeps. */
export const MOBA_MAX_TOPK = 64;

/**
 * Upper bound of the loop iterations one invocation of `select.wgsl` runs over `nc` candidate
 * blocks (counted as `loopBudget` in kernels/topk says; D4 = D / 4, KP = topk - 1): the early
 * return (1), the q load (D4 + 1), per candidate the step, the gate dot product (D4 + 1), the
 * insertion call (1) and its up to KP steps, the candidate loop's exit, the KP outputs (KP + 1)
 * and KP + 1 more to read a carried list back (rows before the keys write K + 1 and return). Unsegmented nc = ceil(Tk / blockSize): with D = 128,
 * topk = 12 it passes 65,535 at 1,424 blocks (Tk = 91K with blockSize 64).
 *
 * @example
 * mobaSelectLoopIterations(1024, 64, 3, false); // 21,526
 */
export function mobaSelectLoopIterations(nc: number, D: number, topk: number, load: boolean): number {
  const D4 = D / 4;
  const KP = topk - 1;
  return 1 + (D4 + 1) + nc * (D4 + KP + 3) + 1 + (KP + 1) + (load ? KP + 1 : 0);
}

/** One dispatch of the MoBA selection: candidate blocks [B0, B1). */
export interface MobaSelectSegment {
  B0: number;
  B1: number;
  LOAD: number;
  LAST: number;
}

/**
 * The selection dispatches under a loop budget: all `NB` candidates at once when that fits, else
 * segments of as many candidates as fit, the list carried between them.
 *
 * @example
 * mobaSelectSegments(3686, 512, 64, 3).length; // 3 with loopLimit 4096
 */
export function mobaSelectSegments(budget: number, NB: number, D: number, topk: number): MobaSelectSegment[] {
  if (mobaSelectLoopIterations(NB, D, topk, false) <= budget) return [{ B0: 0, B1: 0xffffffff, LOAD: 0, LAST: 1 }];
  const per = Math.max(1, Math.floor((budget - mobaSelectLoopIterations(0, D, topk, true)) / (D / 4 + topk + 2)));
  const segs: MobaSelectSegment[] = [];
  for (let b0 = 0; b0 < NB; b0 += per) segs.push({ B0: b0, B1: b0 + per, LOAD: b0 > 0 ? 1 : 0, LAST: b0 + per >= NB ? 1 : 0 });
  return segs;
}

/**
 * Upper bound of the loop iterations of the block-centric path's list building (`lists.wgsl`),
 * whose `scan` is one workgroup of 64 invocations over the NL = Hq * NB lists: each sums its
 * chunk = ceil(NL / 64) lists (chunk + 1), invocation 0 scans the 64 partial sums (65), and each
 * then writes its lists' cursors (chunk + 1) and 16-row tiles (per list tiles + 1; a list holds
 * at most Tq rows, the lists of one head at most Tq * (topk - 1)). When this exceeds the budget
 * the plan takes the per-row path instead.
 *
 * @example
 * mobaListsLoopIterations({ Tq: 65536, Hq: 8, NB: 128, topk: 3 }); // 16,516
 */
export function mobaListsLoopIterations(o: { Tq: number; Hq: number; NB: number; topk: number }): number {
  const chunk = Math.ceil((o.Hq * o.NB) / 64);
  const rows = Math.min(chunk * o.Tq, (Math.ceil(chunk / o.NB) + 1) * o.Tq * (o.topk - 1));
  const tiles = chunk + Math.floor(rows / 16);
  return 1 + (chunk + 1) + 65 + (chunk + 1) + chunk + tiles;
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
  /**
   * Kernel variant: `auto` (default) follows the adapter class. `cpu` = the block-centric path
   * (prefill only; decode always takes the per-row path), `gpu` = one invocation per row.
   */
  target?: GatherTarget;
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

type Resolved = Required<Omit<MobaOptions, 'Tk'>> & { Tk: number };

/** Pipelines and buffers of the block-centric path (CPU adapters, prefill). */
interface BlockPath {
  lists: { count: Pipeline; scan: Pipeline; scatter: Pipeline };
  tiles: GatherKernel;
  own: GatherKernel;
  merge: MergePlan;
  /** Launches of the tiles / own-block gathers (several on a loop-capped device). */
  tileSegs: GatherSegment[];
  ownSegs: GatherSegment[];
}

/** How a plan splits its dispatches under the device's loop limit (one each elsewhere). */
interface Splits {
  pool: PoolSegment[];
  select: MobaSelectSegment[];
  /** The per-row gather's launches (when the block-centric path is not taken). */
  gather: GatherSegment[];
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
  private readonly pools: Pipeline;
  private readonly selectP: Pipeline;
  private readonly selectGiven: Pipeline;
  private readonly gatherK: GatherKernel;
  private readonly poolParams: GPUBuffer[];
  private readonly selParams: GPUBuffer[];
  private readonly gParamsLse: GPUBuffer;
  private readonly gParamsNoLse: GPUBuffer;
  /** Per-launch uniforms of the per-row gather when it is split (else empty). */
  private readonly gParamsSegs: GPUBuffer[];
  private staging?: GatherStaging;
  private readonly means: GPUBuffer;
  private readonly selWs: GPUBuffer;
  private readonly selCarry: GPUBuffer;
  private readonly dummy: GPUBuffer;
  private readonly dummyOut: GPUBuffer;
  /**
   * Dispatches of each step per run: 1 each, more on a loop-capped device (llvmpipe) where one
   * invocation would run too many loop iterations (huge blocks, many blocks, many keys).
   */
  readonly segments: { pool: number; select: number; attention: number };
  /** Upper bound of the loop iterations of one invocation of any of the plan's dispatches. */
  readonly loopIterations: number;
  private readonly block?: BlockPath & {
    listParams: GPUBuffer; tileParams: GPUBuffer[]; ownParams: GPUBuffer[]; maxTiles: number;
    counts: GPUBuffer; cursor: GPUBuffer; entries: GPUBuffer; tileTable: GPUBuffer; oParts: GPUBuffer; lseParts: GPUBuffer;
    lseOut: GPUBuffer; diagPtr: GPUBuffer; diagIdx: GPUBuffer;
  };

  /** Whether this plan runs the block-centric path (CPU adapters, prefill). */
  get blockCentric(): boolean {
    return this.block !== undefined;
  }

  private constructor(ctx: TesseraDevice, o: Resolved, pools: Pipeline, selectP: Pipeline, selectGiven: Pipeline, gatherK: GatherKernel, splits: Splits, block?: BlockPath) {
    super(ctx);
    this.loopIterations = splits.loopIterations;
    this.segments = {
      pool: splits.pool.length,
      select: splits.select.length,
      attention: block ? Math.max(block.tileSegs.length, block.ownSegs.length) : splits.gather.length,
    };
    this.selectGiven = selectGiven;
    this.options = o;
    this.pools = pools;
    this.selectP = selectP;
    this.gatherK = gatherK;
    const NB = (this.numBlocks = Math.ceil(o.Tk / o.blockSize));
    this.poolParams = splits.pool.map((seg) => this.uniform(POOL_PARAMS, { T: o.Tk, H: o.Hkv, D: o.D, BS: o.blockSize, NB, ...seg }));
    this.selParams = splits.select.map((seg) => this.uniform(MOBA_SELECT_PARAMS, { Tq: o.Tq, Hq: o.Hq, Hkv: o.Hkv, K: o.topk, BS: o.blockSize, NBM: NB, POSOFF: o.Tk - o.Tq, ...seg }));
    this.selCarry = this.workspace(splits.select.length > 1 ? o.Tq * o.Hq * (o.topk - 1) * 4 : 16, 'moba.selCarry');
    const g = {
      ...GATHER_DEFAULTS, Tq: o.Tq, Tk: o.Tk, Hq: o.Hq, Hkv: o.Hkv, NG: o.Tq * o.Hq, NGH: o.Hq, S: o.topk, BS: o.blockSize,
      POSOFF: o.Tk - o.Tq, scale: o.scale,
    };
    this.gParamsLse = this.uniform(GATHER_PARAMS, { ...g, WRITE_LSE: 1 });
    this.gParamsNoLse = this.uniform(GATHER_PARAMS, { ...g, WRITE_LSE: 0 });
    this.gParamsSegs = !block && splits.gather.length > 1 ? splits.gather.map((seg) => this.uniform(GATHER_PARAMS, { ...g, ...seg, WRITE_LSE: 1 })) : [];
    this.means = this.workspace(NB * o.Hkv * o.D * 4, 'moba.means');
    this.selWs = this.workspace(o.Tq * o.Hq * o.topk * 4, 'moba.selection');
    this.dummy = this.workspace(16, 'moba.dummy');
    this.dummyOut = this.workspace(16, 'moba.dummyOut');
    if (block) {
      const rows = o.Tq * o.Hq;
      const K = o.topk;
      const NL = o.Hq * NB;
      const maxTiles = Math.ceil((rows * (K - 1)) / 16) + NL;
      const MB = NB;
      const diag = new Uint32Array(MB + 1).map((_, i) => i);
      const diagPtr = this.workspace((MB + 1) * 4, 'moba.diagPtr');
      const diagIdx = this.workspace(MB * 4, 'moba.diagIdx');
      ctx.device.queue.writeBuffer(diagPtr, 0, diag);
      ctx.device.queue.writeBuffer(diagIdx, 0, diag.subarray(0, MB));
      const gb = { ...GATHER_DEFAULTS, Tq: o.Tq, Tk: o.Tk, Hq: o.Hq, Hkv: o.Hkv, BS: o.blockSize, scale: o.scale, KS: K, WRITE_LSE: 1 };
      this.block = {
        ...block,
        maxTiles,
        listParams: this.uniform(MOBA_LIST_PARAMS, { rows, Hq: o.Hq, K, NB, NL }),
        tileParams: block.tileSegs.map((seg) => this.uniform(GATHER_PARAMS, { ...gb, NG: maxTiles, NGH: 1, NTILES: maxTiles, ...seg })),
        ownParams: block.ownSegs.map((seg) => this.uniform(GATHER_PARAMS, { ...gb, NG: MB * o.Hq, NGH: o.Hq, MB, P: 1, NTILES: gatherTiles(block.own, MB * o.Hq), ...seg })),
        counts: this.workspace(NL * 4, 'moba.counts'),
        cursor: this.workspace(NL * 4, 'moba.cursor'),
        entries: this.workspace(rows * (K - 1) * 4, 'moba.entries'),
        tileTable: this.workspace(maxTiles * 16, 'moba.tiles'),
        oParts: this.workspace(K * rows * o.Dv * 4, 'moba.oParts'),
        lseParts: this.workspace(K * rows * 4, 'moba.lseParts'),
        lseOut: this.workspace(rows * 4, 'moba.lse'),
        diagPtr,
        diagIdx,
      };
    }
  }

  override dispose(): void {
    this.block?.merge.dispose();
    this.staging?.dispose();
    super.dispose();
  }

  /** @internal use {@link planMoba}. */
  static async create(device: DeviceLike, opts: MobaOptions): Promise<MobaPlan> {
    const ctx = ctxOf(device);
    const o = validateMobaOptions(opts);
    checkAttentionSizes(ctx, o);
    // Splits under the device's loop limit (llvmpipe): pooling over token ranges, selection over
    // candidate ranges, attention over list entries / key ranges (see the bound functions).
    const budget = loopBudget(ctx);
    const NB = Math.ceil(o.Tk / o.blockSize);
    const keys = Math.min(o.blockSize, o.Tk);
    const pool = poolSegments(budget, o.blockSize, o.Tk);
    const selSegs = mobaSelectSegments(budget, NB, o.D, o.topk);
    const rowInfo = { cpu: false, D: o.D, Dv: o.Dv };
    const rowWork = { entries: o.topk, keys };
    const gatherSegs = gatherSegmentsOrThrow(ctx, rowInfo, rowWork);
    const selectIters = Math.max(...selSegs.map((g) => mobaSelectLoopIterations(Math.min(g.B1, NB) - g.B0, o.D, o.topk, g.LOAD === 1)));
    const poolIters = Math.max(...pool.map((g) => poolLoopIterations(Math.min(g.J1, keys) - g.J0)));
    const select = (meansDtype: 'f32' | 'f16') =>
      getPipeline(ctx, { shader: SELECT_PROGRAM, bindings: ['read', 'read', 'rw', 'uniform', 'rw'], constants: { WG, IN_DTYPE: dtypeCode(o.dtype), D: o.D, MEANS_DTYPE: dtypeCode(meansDtype) } });
    const [pools, selectP, selectGiven, gatherK] = await Promise.all([
      poolPipeline(ctx, o.dtype, 'count'),
      select('f32'),
      select(o.meansDtype),
      // split launches chain through f32 partials (GatherStaging converts at the end)
      gatherKernel(ctx, { mode: 0, inDtype: o.dtype, outDtype: gatherSegs.length > 1 ? 'f32' : o.outDtype, D: o.D, Dv: o.Dv, causal: true, NR: 1, target: 'gpu' }),
    ]);
    let block: BlockPath | undefined;
    const rows = o.Tq * o.Hq;
    const listsFit = mobaListsLoopIterations({ Tq: o.Tq, Hq: o.Hq, NB, topk: o.topk }) <= budget;
    if (gatherUsesCpu(ctx, o.target) && o.Tq === o.Tk && listsFit && o.topk * rows * o.Dv * 4 <= ctx.limits.maxStorageBufferBindingSize) {
      const lb: ('read' | 'rw' | 'uniform')[] = ['read', 'rw', 'rw', 'rw', 'rw', 'rw', 'uniform'];
      const lists = (entryPoint: string) => getPipeline(ctx, { shader: LISTS_PROGRAM, entryPoint, bindings: lb, constants: entryPoint === 'scan' ? {} : { WG } });
      const common = { inDtype: o.dtype, outDtype: 'f32' as const, D: o.D, Dv: o.Dv, target: 'cpu' as const };
      const [count, scan, scatter, tiles, own, merge] = await Promise.all([
        lists('count'),
        lists('scan'),
        lists('scatter'),
        gatherKernel(ctx, { ...common, mode: 3, causal: false, NR: 16 }),
        gatherKernel(ctx, { ...common, mode: 1, causal: true, NR: o.blockSize }),
        planMerge(ctx, { parts: o.topk, rows, D: o.Dv, outDtype: o.outDtype }),
      ]);
      const cpuInfo = { cpu: true, D: o.D, Dv: o.Dv };
      const blockWork = { entries: 1, keys };
      block = { lists: { count, scan, scatter }, tiles, own, merge, tileSegs: gatherSegmentsOrThrow(ctx, cpuInfo, blockWork), ownSegs: gatherSegmentsOrThrow(ctx, cpuInfo, blockWork) };
    }
    const attnIters = block
      ? Math.max(gatherSegmentsIterations({ cpu: true, D: o.D, Dv: o.Dv }, { entries: 1, keys }, block.tileSegs), mobaListsLoopIterations({ Tq: o.Tq, Hq: o.Hq, NB, topk: o.topk }))
      : gatherSegmentsIterations(rowInfo, rowWork, gatherSegs);
    const splits: Splits = { pool, select: selSegs, gather: gatherSegs, loopIterations: Math.max(poolIters, selectIters, attnIters) };
    const plan = new MobaPlan(ctx, o, pools, selectP, selectGiven, gatherK, splits, block);
    if (!block && gatherSegs.length > 1) plan.staging = await GatherStaging.create(ctx, (b, l) => plan.workspace(b, l), { rows, Dv: o.Dv, outDtype: o.outDtype });
    return plan;
  }

  run(encoder: GPUCommandEncoder, t: MobaTensors): void {
    this.assertUsable();
    const { Tq, Tk, Hq, Hkv, D, Dv, dtype, outDtype, topk } = this.options;
    const NB = this.numBlocks;
    const q = checkTensor(t?.q, 'q', { rank: 3, shape: [Tq, Hq, D], dtypes: [dtype] });
    const k = checkTensor(t.k, 'k', { rank: 3, shape: [Tk, Hkv, D], dtypes: [dtype] });
    const v = checkTensor(t.v, 'v', { rank: 3, shape: [Tk, Hkv, Dv], dtypes: [dtype] });
    const o = checkTensor(t.o, 'o', { rank: 3, shape: [Tq, Hq, Dv], dtypes: [outDtype] });
    const lse = t.lse === undefined ? undefined : checkTensor(t.lse, 'lse', { rank: 2, shape: [Tq, Hq], dtypes: ['f32'] });
    const means = t.blockMeans === undefined ? undefined : checkTensor(t.blockMeans, 'blockMeans', { rank: 3, shape: [NB, Hkv, D], dtypes: [this.options.meansDtype] });
    const sel = t.selection === undefined ? undefined : checkTensor(t.selection, 'selection', { rank: 3, shape: [Tq, Hq, topk], dtypes: ['i32'] });
    for (const [x, n] of [[q, 'q'], [k, 'k'], [v, 'v'], [o, 'o']] as const) checkBindingSize(this.ctx, x, n);
    const meansRes = means ? res(means) : { buffer: this.means, size: NB * Hkv * D * 4 };
    const selRes = sel ? res(sel) : { buffer: this.selWs, size: Tq * Hq * topk * 4 };
    if (!means) for (const u of this.poolParams) this.dispatch(encoder, this.pools, [res(k), meansRes, { buffer: u }], grid2d(this.ctx, poolWorkgroups(NB, Hkv, D)));
    for (const u of this.selParams) {
      this.dispatch(encoder, means ? this.selectGiven : this.selectP, [res(q), meansRes, selRes, { buffer: u }, { buffer: this.selCarry }], grid2d(this.ctx, Math.ceil((Tq * Hq) / WG)));
    }
    const dummy = { buffer: this.dummy, size: 16 };
    if (this.block) {
      this.runBlockPath(encoder, q, k, v, o, lse, selRes);
      return;
    }
    if (this.staging) {
      const out = this.staging.targets(o, lse);
      for (const u of this.gParamsSegs) this.dispatch(encoder, this.gatherK.pipeline, [res(q), res(k), res(v), selRes, dummy, out.o, out.lse, { buffer: u }], gatherGrid(this.ctx, this.gatherK, Tq * Hq));
      this.staging.finish(encoder, o, lse);
      return;
    }
    this.dispatch(
      encoder,
      this.gatherK.pipeline,
      [res(q), res(k), res(v), selRes, dummy, res(o), lse ? res(lse) : { buffer: this.dummyOut, size: 16 }, { buffer: lse ? this.gParamsLse : this.gParamsNoLse }],
      gatherGrid(this.ctx, this.gatherK, Tq * Hq),
    );
  }

  /** Block-centric prefill: lists of rows per (head, past block), tiles of 16 rows per block. */
  private runBlockPath(encoder: GPUCommandEncoder, q: GpuTensor, k: GpuTensor, v: GpuTensor, o: GpuTensor, lse: GpuTensor | undefined, selRes: { buffer: GPUBuffer; offset?: number; size?: number }): void {
    const b = this.block!;
    const { Tq, Hq, Dv, topk: K } = this.options;
    const rows = Tq * Hq;
    const NL = Hq * this.numBlocks;
    const w = (buffer: GPUBuffer, bytes: number) => ({ buffer, size: Math.max(4, bytes) });
    encoder.clearBuffer(b.counts, 0, NL * 4);
    encoder.clearBuffer(b.tileTable, 0, b.maxTiles * 16);
    const listRes = [selRes, w(b.counts, NL * 4), w(b.cursor, NL * 4), w(b.entries, rows * (K - 1) * 4), w(b.tileTable, b.maxTiles * 16), w(b.lseParts, K * rows * 4), { buffer: b.listParams }];
    const slotWg = grid2d(this.ctx, Math.ceil((rows * Math.max(K - 1, 1)) / WG));
    this.dispatch(encoder, b.lists.count, listRes, slotWg);
    this.dispatch(encoder, b.lists.scan, listRes, [1]);
    this.dispatch(encoder, b.lists.scatter, listRes, slotWg);
    const oParts = w(b.oParts, K * rows * Dv * 4);
    const lseParts = w(b.lseParts, K * rows * 4);
    // (split launches, if any, continue in place from the f32 partials in oParts / lseParts)
    for (const u of b.tileParams) {
      this.dispatch(encoder, b.tiles.pipeline, [res(q), res(k), res(v), w(b.entries, rows * (K - 1) * 4), w(b.tileTable, b.maxTiles * 16), oParts, lseParts, { buffer: u }], grid2d(this.ctx, b.maxTiles));
    }
    for (const u of b.ownParams) {
      this.dispatch(encoder, b.own.pipeline, [res(q), res(k), res(v), w(b.diagIdx, this.numBlocks * 4), w(b.diagPtr, (this.numBlocks + 1) * 4), oParts, lseParts, { buffer: u }], gatherGrid(this.ctx, b.own, this.numBlocks * Hq));
    }
    b.merge.run(encoder, {
      oParts: { buffer: b.oParts, shape: [K, rows, Dv], dtype: 'f32' },
      lseParts: { buffer: b.lseParts, shape: [K, rows], dtype: 'f32' },
      o: { ...o, shape: [rows, Dv] },
      lse: lse ? { ...lse, shape: [rows] } : { buffer: b.lseOut, shape: [rows], dtype: 'f32' },
    });
  }
}

function validateMobaOptions(opts: MobaOptions): Resolved {
  if (opts === null || typeof opts !== 'object') fail('E_ARG', 'options', 'missing;', opts, 'an options object');
  const Tq = checkInt(opts.Tq, 'Tq', { min: 1 });
  const Tk = checkInt(opts.Tk ?? Tq, 'Tk', { min: 1 });
  const Hq = checkInt(opts.Hq, 'Hq', { min: 1 });
  const Hkv = checkInt(opts.Hkv, 'Hkv', { min: 1 });
  check(Hq % Hkv === 0, 'Hq', `a multiple of Hkv = ${Hkv}`, Hq);
  const blockSize = checkInt(opts.blockSize, 'blockSize', { min: 1, max: 1 << 20 });
  const topk = checkInt(opts.topk, 'topk', { min: 1 });
  if (topk > MOBA_MAX_TOPK) fail('E_UNSUPPORTED', 'topk', 'exceeds what the in-register MoBA selection keeps;', topk, `at most ${MOBA_MAX_TOPK}`);
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
  const s = attentionSizesOf(t);
  const plan = await planMoba(ctx, {
    ...opts,
    ...s,
    dtype: opts?.dtype ?? s.dtype,
    outDtype: opts?.outDtype ?? s.outDtype,
  });
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
export function planMobaDecode(device: DeviceLike, opts: Omit<MobaOptions, 'Tq' | 'Tk'> & { Tk: number }): Promise<MobaPlan> {
  return MobaPlan.create(device, { ...opts, Tq: 1 });
}
