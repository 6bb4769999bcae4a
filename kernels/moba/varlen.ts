/**
 * MoBA over a ragged batch (`cuSeqlens`, MoBA's own varlen layout): sequence n is rows
 * `[cuSeqlens[n], cuSeqlens[n+1])` of q, k, v, o, and its blocks start at its first token (blocks
 * never span two sequences). One set of dispatches serves the whole batch, whatever the number of
 * sequences: the gate keys of every sequence's blocks (`varlen_pool.wgsl`), the selection of every
 * row (`varlen_select.wgsl`) and one attention core dispatch over block lists with a per-sequence
 * table (kernels/attention/lists.ts `seqs`), each reading and writing the batch tensors in place
 * at the sequence's own rows (no staging copies: boundaries need not be 256-byte aligned).
 */
import { fail } from '../../src/errors.js';
import { resolveTarget } from '../../src/options.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { getPipeline, grid2d } from '../../src/gpu/pipeline.js';
import { KernelPlan, checkAttentionSizes, res, runOnceAndDispose } from '../../src/plan.js';
import { type DType, type FloatDType } from '../../src/tensor.js';
import { checkBindings, checkRows } from '../block_sparse/common.js';
import { raggedSequences } from '../block_sparse/ragged.js';
import { BlockListPlan, raggedSearchTrips } from '../attention/lists.js';
import { planLoopLimit, segmentUniforms, withLoopLimit, type Segment } from '../../src/gpu/segments.js';
import {
  MOBA_SELECT_PARAMS,
  mobaSelectSegments,
  mobaVarlenSelectSpec,
  type MobaVarlenSelectPipeline,
  validateMobaOptions,
  type MobaOptions,
  type MobaTensors,
} from './moba.js';
import { raggedBlocks, raggedPoolPipeline, type RaggedPoolPipeline } from './ragged_pool.js';
import { POOL_PARAMS, poolSegments, poolWorkgroups } from './pool.js';

export interface MobaVarlenOptions extends Omit<MobaOptions, 'Tq' | 'Tk'> {
  /** `[N + 1]` cumulative sequence lengths, starting at 0, non-decreasing (flash-attn / fla layout). */
  cuSeqlens: readonly number[];
}

const SELECT_WG = 64;

type Resolved = MobaVarlenOptions & { total: number; Dv: number; dtype: FloatDType; outDtype: FloatDType };

/**
 * MoBA over a ragged batch (`cuSeqlens`).
 * Planned once by `planMobaVarlen`; `run` records it into your encoder and allocates
 * nothing; `dispose()` frees what the plan holds.
 *
 * @example
 * const plan = await planMobaVarlen(dev, { cuSeqlens: [0, 300, 812], Hq: 4, Hkv: 2, D: 64, blockSize: 64, topk: 3 });
 * plan.run(encoder, { q, k, v, o });
 * plan.dispose();
 */
export class MobaVarlenPlan extends KernelPlan<MobaTensors> {
  readonly options: Readonly<
    MobaVarlenOptions & { total: number; Dv: number; dtype: FloatDType; outDtype: FloatDType }
  >;
  /** Gate-key blocks of the whole batch. */
  readonly numBlocks: number;
  /**
   * Dispatches of each step per run, independent of the number of sequences: 1 each, more on a
   * loop-capped device (llvmpipe); `attention` counts the parts of the core (merged by kernels/merge).
   */
  readonly segments: { pool: number; select: number; attention: number };
  private readonly pool?: RaggedPoolPipeline;
  private readonly select?: MobaVarlenSelectPipeline;
  private readonly core?: BlockListPlan;
  private readonly seqTable: GPUBuffer;
  private readonly poolParams: GPUBuffer[];
  private readonly selParams: GPUBuffer[];
  private readonly means: GPUBuffer;
  private readonly selWs: GPUBuffer;
  private readonly selCarry?: GPUBuffer;

  private constructor(
    ctx: TesseraDevice,
    o: Resolved,
    table: Uint32Array<ArrayBuffer>,
    NB: number,
    parts: {
      pool?: RaggedPoolPipeline;
      select?: MobaVarlenSelectPipeline;
      core?: BlockListPlan;
      poolSegs: readonly Segment[];
      selSegs: readonly Segment[];
    },
  ) {
    super(ctx);
    this.options = o;
    this.numBlocks = NB;
    this.pool = parts.pool;
    this.select = parts.select;
    this.core = parts.core;
    const { total, Hq, Hkv, D, topk, blockSize } = o;
    this.seqTable = this.workspace(table.byteLength, 'moba.varlen.seqs');
    ctx.device.queue.writeBuffer(this.seqTable, 0, table);
    this.poolParams = parts.poolSegs.map((seg) =>
      this.uniform(POOL_PARAMS, { T: total, H: Hkv, D, BS: blockSize, NB, ...segmentUniforms(seg) }),
    );
    this.selParams = parts.selSegs.map((seg) =>
      this.uniform(MOBA_SELECT_PARAMS, {
        Tq: total,
        Hq,
        Hkv,
        K: topk,
        BS: blockSize,
        NBM: NB,
        POSOFF: 0,
        ...segmentUniforms(seg),
      }),
    );
    this.segments = {
      pool: parts.core ? this.poolParams.length : 0,
      select: parts.core ? this.selParams.length : 0,
      attention: parts.core?.split.parts ?? 0,
    };
    if (parts.selSegs.length > 1) this.selCarry = this.workspace(total * Hq * (topk - 1) * 4, 'moba.varlen.carry');
    this.means = this.workspace(NB * Hkv * D * 4, 'moba.varlen.means');
    this.selWs = this.workspace(total * Hq * topk * 4, 'moba.varlen.selection');
  }

  override dispose(): void {
    this.core?.dispose();
    super.dispose();
  }

  /** @internal use {@link planMobaVarlen}. */
  static async create(device: DeviceLike, opts: MobaVarlenOptions): Promise<MobaVarlenPlan> {
    const ctx = ctxOf(device);
    if (opts === null || typeof opts !== 'object') fail('E_ARG', 'options', 'missing;', opts, 'an options object');
    const cu = opts.cuSeqlens;
    const all = raggedSequences(cu);
    const total = cu[cu.length - 1]!;
    const maxLen = Math.max(1, ...all.map((s) => s.len));
    // the single-sequence rules and argument names, for the longest sequence
    const r = validateMobaOptions({ ...opts, Tq: maxLen, Tk: maxLen });
    if (total > 0) checkAttentionSizes(ctx, { ...r, Tq: total, Tk: total });
    const o: Resolved = { ...opts, total, Dv: r.Dv, dtype: r.dtype, outDtype: r.outDtype };
    const { seqs, NB, table } = raggedBlocks(all, r.blockSize);
    // Under a loop limit (llvmpipe): the row's sequence search adds log2 n + 2 trips per invocation.
    const limit = planLoopLimit(ctx, opts.loopLimit);
    const search = raggedSearchTrips(seqs.length);
    const maxNB = Math.ceil(maxLen / r.blockSize);
    const poolSegs = poolSegments(limit, r.blockSize, maxLen, search);
    const selSegs = mobaSelectSegments(limit, maxNB, r.D, r.topk, search);
    if (seqs.length === 0) return new MobaVarlenPlan(ctx, o, table, NB, { poolSegs, selSegs });
    const [pool, select, core] = await Promise.all([
      raggedPoolPipeline(ctx, r.dtype, 'count'),
      getPipeline(ctx, mobaVarlenSelectSpec(r.dtype, r.D, selSegs.length > 1)),
      BlockListPlan.create(withLoopLimit(ctx, limit), {
        Tq: total,
        Tk: total,
        Hq: r.Hq,
        Hkv: r.Hkv,
        D: r.D,
        Dv: r.Dv,
        rows: 1,
        heads: r.Hq,
        stride: r.topk,
        base: 0,
        block: r.blockSize,
        maxEntries: r.topk,
        entryKeys: Math.min(r.blockSize, maxLen),
        posOff: 0,
        causal: true,
        scale: r.scale,
        qDtype: r.dtype,
        kvDtype: r.dtype,
        oDtype: r.outDtype,
        target: resolveTarget(ctx, r.target),
        seqs: seqs.map((s) => ({
          q0: s.start,
          Tq: s.len,
          kv0: s.start,
          Tk: s.len,
          posOff: 0,
          base: s.start * r.Hq * r.topk,
        })),
      }),
    ]);
    return new MobaVarlenPlan(ctx, o, table, NB, { pool, select, core, poolSegs, selSegs });
  }

  run(encoder: GPUCommandEncoder, t: MobaTensors): void {
    this.assertUsable();
    const { total, Hq, Hkv, D, Dv, topk, dtype, outDtype } = this.options;
    const f = (x: unknown, name: string, row: number[], dt: DType) => checkRows(x, name, total, row, dt);
    const q = f(t?.q, 'q', [Hq, D], dtype);
    const k = f(t.k, 'k', [Hkv, D], dtype);
    const v = f(t.v, 'v', [Hkv, Dv], dtype);
    const o = f(t.o, 'o', [Hq, Dv], outDtype);
    const lse = t.lse === undefined ? undefined : f(t.lse, 'lse', [Hq], 'f32');
    const sel = t.selection === undefined ? undefined : f(t.selection, 'selection', [Hq, topk], 'i32');
    if (t.blockMeans !== undefined)
      fail('E_UNSUPPORTED', 'blockMeans', 'is not taken by the varlen (prefill) path;', 'a tensor', 'no blockMeans');
    checkBindings(this.ctx, { q, k, v, o });
    if (!this.core) return; // every sequence empty
    const NB = this.numBlocks;
    const means = { buffer: this.means, size: NB * Hkv * D * 4 };
    const selRes = sel ? res(sel) : { buffer: this.selWs, size: total * Hq * topk * 4 };
    const table = { buffer: this.seqTable };
    for (const u of this.poolParams)
      this.dispatch(
        encoder,
        this.pool!,
        { x_buf: res(k), out: means, params: { buffer: u }, seqs: table },
        grid2d(this.ctx, poolWorkgroups(NB, Hkv, D)),
      );
    for (const u of this.selParams)
      this.dispatch(
        encoder,
        this.select!,
        {
          q_buf: res(q),
          gate_keys: means,
          sel: selRes,
          params: { buffer: u },
          carry: this.selCarry && { buffer: this.selCarry },
          seqs: table,
        },
        grid2d(this.ctx, Math.ceil((total * Hq) / SELECT_WG)),
      );
    this.core.run(encoder, { q, k, v, lists: selRes, o, lse });
  }
}

/**
 * Plans MoBA prefill over a ragged batch of sequences (`cuSeqlens`).
 *
 * @example
 * const plan = await planMobaVarlen(dev, { cuSeqlens: [0, 300, 812], Hq: 4, Hkv: 2, D: 64, blockSize: 64, topk: 3 });
 * plan.run(encoder, { q, k, v, o });   // q, k, v, o hold the 812 rows of both sequences
 */
export function planMobaVarlen(device: DeviceLike, opts: MobaVarlenOptions): Promise<MobaVarlenPlan> {
  return MobaVarlenPlan.create(device, opts);
}

/**
 * MoBA over a ragged batch in one call.
 *
 * @example
 * await mobaVarlen(dev, { q, k, v, o }, { cuSeqlens: [0, 300, 812], Hq: 4, Hkv: 2, D: 64, blockSize: 64, topk: 3 });
 */
export async function mobaVarlen(device: DeviceLike, t: MobaTensors, opts: MobaVarlenOptions): Promise<void> {
  const ctx = ctxOf(device);
  const plan = await planMobaVarlen(ctx, opts);
  await runOnceAndDispose(ctx, plan, t, 'moba.varlen');
}
