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
import { ctxOf, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { getPipeline, grid2d, wgslProgram, type Pipeline, type PipelineSpec } from '../../src/gpu/pipeline.js';
import { bindingTable, registerPasses, type VariantOf } from '../../src/gpu/bindings.js';
import { KernelPlan, checkAttentionSizes, checkBindingSize, res, runOnceAndDispose } from '../../src/plan.js';
import { checkTensor, dtypeCode, type DType, type FloatDType } from '../../src/tensor.js';
import storageWgsl from '../../shaders/storage.wgsl.js';
import unpackWgsl from '../../shaders/unpack4.wgsl.js';
import { sparseVariant } from '../block_sparse/common.js';
import { raggedSequences } from '../block_sparse/ragged.js';
import { BlockListPlan, raggedSearchTrips } from '../attention/lists.js';
import { planTopK, type TopKPlan } from '../topk/index.js';
import { planLoopLimit, segmentUniforms, withLoopLimit } from '../../src/gpu/segments.js';
import {
  DSA_INDEXER_PARAMS,
  SCORE_CHUNK_BYTES,
  indexerSegments,
  validateDsaOptions,
  type DsaOptions,
  type DsaTensors,
} from './dsa.js';
import indexerWgsl from './varlen_indexer.wgsl.js';
import indexerCoreWgsl from './indexer_core.wgsl.js';
import raggedSeqWgsl from '../../shaders/ragged_seq.wgsl.js';
import raggedTableWgsl from '../../shaders/ragged_table.wgsl.js';

export interface DsaVarlenOptions extends Omit<DsaOptions, 'Tq' | 'T' | 'rowChunk'> {
  /** `[N + 1]` cumulative sequence lengths, starting at 0, non-decreasing. */
  cuSeqlens: readonly number[];
  /**
   * Rows of the batch per chunk (default: as many as keep the `[rows, longest sequence]` f32
   * index scores within 64 MiB); chunks may cut through sequences.
   */
  rowChunk?: number;
}

const INDEXER_PROGRAM = wgslProgram('dsa/varlen_indexer', [
  storageWgsl,
  unpackWgsl,
  DSA_INDEXER_PARAMS.wgsl,
  indexerWgsl,
  raggedTableWgsl,
  raggedSeqWgsl,
  indexerCoreWgsl,
]);
const WG = 64;

/** The batched indexer's bindings (as dsa/indexer, plus the sequence table `seqs`). */
const VARLEN_INDEXER = bindingTable('dsa/varlen_indexer', {
  qi_buf: 'read',
  ki_buf: 'read',
  w_buf: 'read',
  scores: 'rw',
  params: 'uniform',
  seqs: 'read',
});
type VarlenIndexerPipeline = Pipeline<VariantOf<typeof VARLEN_INDEXER>>;

function varlenIndexerSpec(dtype: FloatDType, DI: number): PipelineSpec<VariantOf<typeof VARLEN_INDEXER>> {
  return {
    shader: INDEXER_PROGRAM,
    bindings: VARLEN_INDEXER.variant({}),
    constants: { WG, IN_DTYPE: dtypeCode(dtype), DI },
  };
}
registerPasses('dsa/varlen', () => [varlenIndexerSpec('f32', 64), varlenIndexerSpec('bf16', 128)]);

type Resolved = ReturnType<typeof validateDsaOptions>;

interface Chunk {
  T0: number;
  rows: number;
  indexer: GPUBuffer[];
  topk: TopKPlan;
  core: BlockListPlan;
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
export class DsaVarlenPlan extends KernelPlan<DsaTensors> {
  readonly total: number;
  /** Row chunks of the batch (one set of dispatches each; 1 unless the index scores pass 64 MiB). */
  readonly chunks: number;
  /** Dispatches per chunk: the indexer's segments and the attention's parts (1 each off llvmpipe). */
  readonly segments: { indexer: number; attention: number };
  private readonly o: Resolved;
  private readonly indexer?: VarlenIndexerPipeline;
  private readonly list: Chunk[];
  private readonly table: GPUBuffer;
  private readonly scores: GPUBuffer;
  private readonly sel: GPUBuffer;

  private constructor(
    ctx: TesseraDevice,
    o: Resolved,
    total: number,
    table: Uint32Array<ArrayBuffer>,
    chunks: { T0: number; rows: number; topk: TopKPlan; core: BlockListPlan }[],
    indexer: {
      pipeline?: VarlenIndexerPipeline;
      segs: ReturnType<typeof indexerSegments>;
      width: number;
      rowChunk: number;
    },
  ) {
    super(ctx);
    this.o = o;
    this.total = total;
    this.indexer = indexer.pipeline;
    this.chunks = chunks.length;
    this.segments = {
      indexer: chunks.length ? indexer.segs.length : 0,
      attention: Math.max(0, ...chunks.map((c) => c.core.split.parts)),
    };
    this.table = this.workspace(table.byteLength, 'dsa.varlen.seqs');
    ctx.device.queue.writeBuffer(this.table, 0, table);
    this.scores = this.workspace(indexer.rowChunk * indexer.width * 4, 'dsa.varlen.scores');
    this.sel = this.workspace(indexer.rowChunk * o.S * 4, 'dsa.varlen.selection');
    this.list = chunks.map((c) => ({
      ...c,
      indexer: indexer.segs.map((seg) =>
        this.uniform(DSA_INDEXER_PARAMS, {
          rows: c.rows,
          T0: c.T0,
          Tk: indexer.width,
          HI: o.HI,
          POSOFF: 0,
          ...segmentUniforms(seg),
        }),
      ),
    }));
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
    const variant = sparseVariant(ctx, o.target);
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
        variant,
        // the sequences of the chunk; a row's list is row t - T0 of the chunk's selection
        seqs: seqs
          .filter((s) => s.start < T0 + rows && s.start + s.len > T0)
          .map((s) => ({ q0: s.start, Tq: s.len, kv0: s.start, Tk: s.len, posOff: 0, base: (s.start - T0) * o.S })),
      }),
    );
    const results = await Promise.allSettled([
      getPipeline(ctx, varlenIndexerSpec(o.dtype, o.DI)),
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
      pipeline: value<VarlenIndexerPipeline>(0),
      segs,
      width,
      rowChunk,
    });
  }

  override dispose(): void {
    const topks = new Set(this.list.map((c) => c.topk));
    for (const t of topks) t.dispose();
    for (const c of this.list) c.core.dispose();
    super.dispose();
  }

  run(encoder: GPUCommandEncoder, t: DsaTensors): void {
    this.assertUsable();
    if (t === null || typeof t !== 'object')
      fail('E_ARG', 'tensors', 'is not an object;', t, '{ q, k, v, qI, kI, w, o, lse? }');
    if (t.indices !== undefined)
      fail(
        'E_UNSUPPORTED',
        'indices',
        'is not offered for ragged batches;',
        'a tensor',
        'no indices (plan each sequence with planDsa to get them)',
      );
    const { Hq, Hkv, D, Dv, HI, DI, S, dtype, outDtype } = this.o;
    const T = this.total;
    const f = (x: unknown, name: string, row: number[], dt: DType) =>
      checkTensor(x, name, { rank: 1 + row.length, shape: [T, ...row], dtypes: [dt] });
    const q = f(t.q, 'q', [Hq, D], dtype);
    const k = f(t.k, 'k', [Hkv, D], dtype);
    const v = f(t.v, 'v', [Hkv, Dv], dtype);
    const qI = f(t.qI, 'qI', [HI, DI], dtype);
    const kI = f(t.kI, 'kI', [DI], dtype);
    const w = f(t.w, 'w', [HI], dtype);
    const o = f(t.o, 'o', [Hq, Dv], outDtype);
    const lse = t.lse === undefined ? undefined : f(t.lse, 'lse', [Hq], 'f32');
    for (const [x, n] of [
      [q, 'q'],
      [k, 'k'],
      [v, 'v'],
      [qI, 'qI'],
      [o, 'o'],
    ] as const)
      checkBindingSize(this.ctx, x, n);
    for (const c of this.list) {
      const n = c.topk.options.n;
      const scores = { buffer: this.scores, shape: [c.rows, n], dtype: 'f32' as const };
      const sel = { buffer: this.sel, shape: [c.rows, S], dtype: 'i32' as const };
      for (const u of c.indexer)
        this.dispatch(
          encoder,
          this.indexer!,
          {
            qi_buf: res(qI),
            ki_buf: res(kI),
            w_buf: res(w),
            scores: res(scores),
            params: { buffer: u },
            seqs: { buffer: this.table },
          },
          grid2d(this.ctx, Math.ceil((c.rows * Math.ceil(n / 4)) / WG)),
        );
      c.topk.run(encoder, { scores, indices: sel });
      c.core.run(encoder, { q, k, v, lists: { buffer: this.sel, size: c.rows * S * 4 }, o, lse });
    }
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
