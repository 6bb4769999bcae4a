/**
 * NSA over a ragged batch (`cuSeqlens`, the layout of fla's `cu_seqlens`); blocks and windows
 * restart at every sequence start. One set of dispatches serves the whole batch, whatever the
 * number of sequences: compressed keys and values of every sequence's blocks
 * (`kernels/moba/varlen_pool.wgsl`), the compression branch, the selection of every (token, KV
 * head) (`varlen_select.wgsl`), the selected-block and window branches (the attention core with a
 * per-sequence table, kernels/attention/lists.ts `seqs`) and the gate combine, each reading and
 * writing the batch tensors in place at the sequence's own rows (no staging copies).
 */
import { fail } from '../../src/errors.js';
import { resolveTarget } from '../../src/options.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { getPipeline } from '../../src/gpu/pipeline.js';
import { checkAttentionSizes, runOnceAndDispose } from '../../src/plan.js';
import { raggedSequences } from '../block_sparse/ragged.js';
import { BlockListPlan, raggedSearchTrips, type BlockListSeq } from '../attention/lists.js';
import { poolSegments } from '../moba/pool.js';
import { raggedBlocks, raggedPoolPipeline } from '../moba/ragged_pool.js';
import { planLoopLimit, withLoopLimit, type Segment } from '../../src/gpu/segments.js';
import {
  combineSpec,
  NsaEncoder,
  nsaVarlenSelectSpec,
  nsaSelectSegments,
  validateNsaOptions,
  type NsaOptions,
  type NsaPasses,
  type NsaTensors,
} from './nsa.js';

export interface NsaVarlenOptions extends Omit<NsaOptions, 'Tq' | 'T' | 'Tk'> {
  /** `[N + 1]` cumulative sequence lengths, starting at 0, non-decreasing. */
  cuSeqlens: readonly number[];
}

/**
 * NSA over a ragged batch (`cuSeqlens`).
 * Planned once by `planNsaVarlen`; `run` records it into your encoder and allocates
 * nothing; `dispose()` frees what the plan holds.
 *
 * @example
 * const plan = await planNsaVarlen(dev, { cuSeqlens: [0, 300, 812], Hq: 32, Hkv: 2, D: 64, blockSize: 64, blockCount: 16, window: 512 });
 * plan.run(encoder, { q, k, v, gCmp, gSlc, gSwa, o });
 * plan.dispose();
 */
export class NsaVarlenPlan extends NsaEncoder {
  readonly total: number;
  /** Compressed blocks of the whole batch. */
  readonly numBlocks: number;
  /**
   * Dispatches of each step per run, independent of the number of sequences: 1 each (pool: keys
   * and values), more on a loop-capped device (llvmpipe); the branches count the core's parts.
   */
  readonly segments: { pool: number; cmp: number; select: number; slc: number; swa: number };

  private constructor(
    ctx: TesseraDevice,
    o: ReturnType<typeof validateNsaOptions>,
    total: number,
    NC: number,
    table: Uint32Array<ArrayBuffer>,
    segs: { pool: readonly Segment[]; select: readonly Segment[] },
    p?: NsaPasses,
  ) {
    super(ctx);
    this.total = total;
    this.numBlocks = NC;
    this.segments = {
      pool: p ? 2 * segs.pool.length : 0,
      cmp: p?.cmp.split.parts ?? 0,
      select: p ? segs.select.length : 0,
      slc: p?.slc.split.parts ?? 0,
      swa: p?.swa?.split.parts ?? 0,
    };
    const seqs = this.workspace(table.byteLength, 'nsa.varlen.seqs');
    ctx.device.queue.writeBuffer(seqs, 0, table);
    this.initNsa(o, { T: total, Tk: total, NC }, segs, p, seqs);
  }

  /** @internal use {@link planNsaVarlen}. */
  static async create(device: DeviceLike, opts: NsaVarlenOptions): Promise<NsaVarlenPlan> {
    const ctx = ctxOf(device);
    if (opts === null || typeof opts !== 'object') fail('E_ARG', 'options', 'missing;', opts, 'an options object');
    const all = raggedSequences(opts.cuSeqlens);
    const total = opts.cuSeqlens[opts.cuSeqlens.length - 1]!;
    const maxLen = Math.max(1, ...all.map((s) => s.len));
    // the single-sequence rules and argument names, for the longest sequence
    const o = validateNsaOptions({ ...opts, Tq: maxLen, Tk: maxLen } as NsaOptions);
    if (total > 0) checkAttentionSizes(ctx, { ...o, Tq: total, Tk: total });
    const { seqs, NB: NC, table } = raggedBlocks(all, o.blockSize);
    const G = o.Hq / o.Hkv;
    // Under a loop limit (llvmpipe): the row's sequence search adds log2 n + 2 trips per invocation.
    const limit = planLoopLimit(ctx, opts.loopLimit);
    const search = raggedSearchTrips(seqs.length);
    const maxNC = Math.ceil(maxLen / o.blockSize);
    const selSegs = nsaSelectSegments(limit, maxNC, G, o.D, o.blockCount, search);
    const segs = { pool: poolSegments(limit, o.blockSize, maxLen, search), select: selSegs };
    const capped = withLoopLimit(ctx, limit);
    if (seqs.length === 0) return new NsaVarlenPlan(ctx, o, total, NC, table, segs);
    const core = {
      Tq: total,
      Hq: o.Hq,
      Hkv: o.Hkv,
      D: o.D,
      Dv: o.Dv,
      posOff: 0,
      causal: true,
      scale: o.scale,
      qDtype: o.dtype,
      oDtype: 'f32' as const,
      target: resolveTarget(ctx, o.target),
    };
    // one list of one word (block 0) for every row: rows = total keeps every row in query block 0
    const one = { rows: total, heads: 1, stride: 1, base: 0, maxEntries: 1 };
    const per = (f: (s: (typeof seqs)[number]) => Partial<BlockListSeq>): BlockListSeq[] =>
      seqs.map((s) => ({ q0: s.start, Tq: s.len, kv0: s.start, Tk: s.len, posOff: 0, base: 0, ...f(s) }));
    const [pool, select, combine, cmp, slc, swa] = await Promise.all([
      raggedPoolPipeline(ctx, o.dtype, o.variant === 'fla' ? 'count' : 'blockSize'),
      getPipeline(ctx, nsaVarlenSelectSpec(o.dtype, o.D, o.variant === 'fla', selSegs.length > 1)),
      getPipeline(ctx, combineSpec(o.gateDtype, o.outDtype, o.window > 0)),
      BlockListPlan.create(capped, {
        ...core,
        ...one,
        Tk: NC,
        block: maxNC,
        keyStride: o.blockSize,
        kvDtype: 'f32',
        seqs: per((s) => ({ kv0: s.blk0, Tk: Math.ceil(s.len / o.blockSize) })),
      }),
      BlockListPlan.create(capped, {
        ...core,
        Tk: total,
        rows: 1,
        heads: o.Hkv,
        stride: o.blockCount,
        base: 0,
        block: o.blockSize,
        maxEntries: o.blockCount,
        entryKeys: Math.min(o.blockSize, maxLen),
        kvDtype: o.dtype,
        seqs: per((s) => ({ base: s.start * o.Hkv * o.blockCount })),
      }),
      o.window > 0
        ? BlockListPlan.create(capped, {
            ...core,
            ...one,
            Tk: total,
            block: maxLen,
            entryKeys: Math.min(maxLen, o.window),
            window: o.window,
            kvDtype: o.dtype,
            seqs: per(() => ({})),
          })
        : Promise.resolve(undefined),
    ]);
    return new NsaVarlenPlan(ctx, o, total, NC, table, segs, { pool, select, combine, cmp, slc, swa });
  }
}

/**
 * Plans NSA prefill over a ragged batch (`cuSeqlens`).
 *
 * @example
 * const plan = await planNsaVarlen(dev, { cuSeqlens: [0, 300, 812], Hq: 32, Hkv: 2, D: 64, blockSize: 64, blockCount: 16, window: 512 });
 * plan.run(encoder, { q, k, v, gCmp, gSlc, gSwa, o });
 */
export function planNsaVarlen(device: DeviceLike, opts: NsaVarlenOptions): Promise<NsaVarlenPlan> {
  return NsaVarlenPlan.create(device, opts);
}

/**
 * NSA over a ragged batch in one call.
 *
 * @example
 * await nsaVarlen(dev, { q, k, v, gCmp, gSlc, o }, { cuSeqlens: [0, 300, 812], Hq: 32, Hkv: 2, D: 64, blockSize: 32, blockCount: 6, variant: 'fla' });
 */
export async function nsaVarlen(device: DeviceLike, t: NsaTensors, opts: NsaVarlenOptions): Promise<void> {
  const ctx = ctxOf(device);
  const plan = await planNsaVarlen(ctx, opts);
  await runOnceAndDispose(ctx, plan, t, 'nsa.varlen');
}
