/**
 * DSA over a ragged batch (`cuSeqlens`); selection never crosses a sequence. One set of
 * dispatches per row chunk of the batch (chunks keep the `[rows, longest]` f32 index scores within
 * 64 MiB; their count depends on the batch's size, not on its number of sequences): the indexer
 * over the chunk's rows of every sequence (`varlen_indexer.wgsl`), the top-k (`kernels/topk`) and
 * one attention core dispatch reading the selection as token lists with a per-sequence table
 * (kernels/attention/lists.ts `seqs`), each reading and writing the batch tensors in place at the
 * sequence's own rows (no staging copies). Rows of a sequence before `topk` keep all their causal
 * tokens: the top-k of a row lists every visible token when it has fewer than `topk`.
 * The `indices` output is not offered here (its width, min(topk, length), differs per sequence).
 */
import { checkInt, fail } from '../../src/errors.js';
import { resolveTarget } from '../../src/options.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { getPipeline } from '../../src/gpu/pipeline.js';
import { checkAttentionSizes, runOnceAndDispose } from '../../src/plan.js';
import { raggedSequences } from '../block_sparse/ragged.js';
import { BlockListPlan, raggedSearchTrips } from '../attention/lists.js';
import { planTopK, type TopKPlan } from '../topk/index.js';
import { planLoopLimit, withLoopLimit } from '../../src/gpu/segments.js';
import {
  DsaEncoder,
  SCORE_CHUNK_BYTES,
  dsaVarlenIndexerSpec,
  type DsaVarlenIndexerPipeline,
  indexerSegments,
  validateDsaOptions,
  type DsaOptions,
  type DsaTensors,
} from './dsa.js';

export interface DsaVarlenOptions extends Omit<DsaOptions, 'Tq' | 'T' | 'rowChunk'> {
  /** `[N + 1]` cumulative sequence lengths, starting at 0, non-decreasing. */
  cuSeqlens: readonly number[];
  /**
   * Rows of the batch per chunk (default: as many as keep the `[rows, longest sequence]` f32
   * index scores within 64 MiB); chunks may cut through sequences.
   */
  rowChunk?: number;
}

/**
 * DSA over a ragged batch (`cuSeqlens`).
 * Planned once by `planDsaVarlen`; `run` records it into your encoder and allocates
 * nothing; `dispose()` frees what the plan holds.
 *
 * @example
 * const plan = await planDsaVarlen(dev, { cuSeqlens: [0, 3000, 8000], Hq: 16, D: 64, HI: 8, DI: 64, topk: 2048 });
 * plan.run(encoder, { q, k, v, qI, kI, w, o });
 * plan.dispose();
 */
export class DsaVarlenPlan extends DsaEncoder {
  readonly total: number;
  /** Row chunks of the batch (one set of dispatches each; 1 unless the index scores pass 64 MiB). */
  readonly chunks: number;
  /** Dispatches per chunk: the indexer's segments and the attention's parts (1 each off llvmpipe). */
  readonly segments: { indexer: number; attention: number };

  private constructor(
    ctx: TesseraDevice,
    o: ReturnType<typeof validateDsaOptions>,
    total: number,
    table: Uint32Array<ArrayBuffer>,
    chunks: { T0: number; rows: number; topk: TopKPlan; core: BlockListPlan }[],
    indexer: {
      pipeline?: DsaVarlenIndexerPipeline;
      segs: ReturnType<typeof indexerSegments>;
      width: number;
      rowChunk: number;
    },
  ) {
    super(ctx);
    this.total = total;
    this.chunks = chunks.length;
    this.segments = {
      indexer: chunks.length ? indexer.segs.length : 0,
      attention: Math.max(0, ...chunks.map((c) => c.core.split.parts)),
    };
    const seqs = this.workspace(table.byteLength, 'dsa.varlen.seqs');
    ctx.device.queue.writeBuffer(seqs, 0, table);
    this.initDsa(
      o,
      { T: total, Tk: total, width: indexer.width, posOff: 0 },
      indexer.rowChunk,
      chunks.map((c) => ({ ...c, all: false })),
      indexer,
      seqs,
    );
  }

  /** @internal use {@link planDsaVarlen}. */
  static async create(device: DeviceLike, opts: DsaVarlenOptions): Promise<DsaVarlenPlan> {
    const ctx = ctxOf(device);
    if (opts === null || typeof opts !== 'object') fail('E_ARG', 'options', 'missing;', opts, 'an options object');
    const all = raggedSequences(opts.cuSeqlens);
    const total = opts.cuSeqlens[opts.cuSeqlens.length - 1]!;
    const maxLen = Math.max(1, ...all.map((s) => s.len));
    // the single-sequence rules and argument names, for the longest sequence
    const o = validateDsaOptions(ctx, { ...opts, Tq: maxLen, Tk: maxLen, rowChunk: undefined } as DsaOptions);
    if (total > 0) checkAttentionSizes(ctx, { ...o, Tq: total, Tk: total });
    const seqs = all.filter((s) => s.len > 0);
    const table = new Uint32Array(1 + 2 * seqs.length);
    table[0] = seqs.length;
    seqs.forEach((s, i) => table.set([s.start, s.len], 1 + 2 * i));
    // score rows as wide as the longest sequence, in chunks of rows within 64 MiB
    const width = maxLen;
    const fit = Math.floor(Math.min(SCORE_CHUNK_BYTES, ctx.limits.maxStorageBufferBindingSize) / (4 * width));
    const rowChunk = Math.max(1, Math.min(total, checkInt(opts.rowChunk ?? fit, 'rowChunk', { min: 1 })));
    if (rowChunk * width * 4 > ctx.limits.maxStorageBufferBindingSize)
      fail(
        'E_LIMIT',
        'rowChunk',
        'makes the score chunk exceed a storage binding;',
        rowChunk,
        `at most ${Math.floor(ctx.limits.maxStorageBufferBindingSize / (4 * width))}`,
      );
    // Under a loop limit (llvmpipe): the row's sequence search adds log2 n + 2 trips per invocation.
    const limit = planLoopLimit(ctx, opts.loopLimit);
    const capped = withLoopLimit(ctx, limit);
    const segs = indexerSegments(limit, o.HI, o.DI, raggedSearchTrips(seqs.length));
    if (seqs.length === 0) return new DsaVarlenPlan(ctx, o, total, table, [], { segs, width, rowChunk });
    const chunkList: { T0: number; rows: number }[] = [];
    for (let T0 = 0; T0 < total; T0 += rowChunk) chunkList.push({ T0, rows: Math.min(rowChunk, total - T0) });
    const topks = new Map<number, Promise<TopKPlan>>();
    for (const c of chunkList)
      if (!topks.has(c.rows))
        topks.set(c.rows, planTopK(ctx, { rows: c.rows, n: width, k: o.S, loopLimit: opts.loopLimit }));
    const target = resolveTarget(ctx, o.target);
    const cores = chunkList.map(({ T0, rows }) =>
      BlockListPlan.create(capped, {
        Tq: rows,
        t0: T0,
        Tk: total,
        Hq: o.Hq,
        Hkv: o.Hkv,
        D: o.D,
        Dv: o.Dv,
        rows: 1,
        heads: 1,
        stride: o.S,
        base: 0,
        block: 0,
        maxEntries: o.S,
        posOff: 0,
        causal: true,
        scale: o.scale,
        qDtype: o.dtype,
        kvDtype: o.dtype,
        oDtype: o.outDtype,
        target,
        // the sequences of the chunk; a row's list is row t - T0 of the chunk's selection
        seqs: seqs
          .filter((s) => s.start < T0 + rows && s.start + s.len > T0)
          .map((s) => ({ q0: s.start, Tq: s.len, kv0: s.start, Tk: s.len, posOff: 0, base: (s.start - T0) * o.S })),
      }),
    );
    const results = await Promise.allSettled([
      getPipeline(ctx, dsaVarlenIndexerSpec(o.dtype, o.DI)),
      ...cores,
      ...topks.values(),
    ]);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) {
      for (const r of results.slice(1)) if (r.status === 'fulfilled') (r.value as BlockListPlan | TopKPlan).dispose();
      throw (failed as PromiseRejectedResult).reason;
    }
    const value = <T>(i: number) => (results[i] as PromiseFulfilledResult<T>).value;
    const topkOf = new Map<number, TopKPlan>();
    [...topks.keys()].forEach((rows, i) => topkOf.set(rows, value<TopKPlan>(1 + cores.length + i)));
    const chunks = chunkList.map((c, i) => ({ ...c, topk: topkOf.get(c.rows)!, core: value<BlockListPlan>(1 + i) }));
    return new DsaVarlenPlan(ctx, o, total, table, chunks, {
      pipeline: value<DsaVarlenIndexerPipeline>(0),
      segs,
      width,
      rowChunk,
    });
  }
}

/**
 * Plans DSA prefill over a ragged batch (`cuSeqlens`).
 *
 * @example
 * const plan = await planDsaVarlen(dev, { cuSeqlens: [0, 3000, 8000], Hq: 16, D: 64, HI: 8, DI: 64, topk: 2048 });
 * plan.run(encoder, { q, k, v, qI, kI, w, o });
 */
export function planDsaVarlen(device: DeviceLike, opts: DsaVarlenOptions): Promise<DsaVarlenPlan> {
  return DsaVarlenPlan.create(device, opts);
}

/**
 * DSA over a ragged batch in one call.
 *
 * @example
 * await dsaVarlen(dev, { q, k, v, qI, kI, w, o }, { cuSeqlens: [0, 300, 812], Hq: 4, D: 64, HI: 4, DI: 32, topk: 128 });
 */
export async function dsaVarlen(device: DeviceLike, t: DsaTensors, opts: DsaVarlenOptions): Promise<void> {
  const ctx = ctxOf(device);
  const plan = await planDsaVarlen(ctx, opts);
  await runOnceAndDispose(ctx, plan, t, 'dsa.varlen');
}
