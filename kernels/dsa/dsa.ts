/**
 * DSA (DeepSeek-V3.2 sparse attention) prefill on the GPU, in row chunks so that the index
 * scores `[rows, T]` stay within one storage binding:
 *   1. `indexer.wgsl`: I[t, s] = Σ_j w[t, j]·ReLU(qI[t, j]·kI[s]) for s ≤ t, -inf after;
 *   2. `kernels/topk` (`planTopK`): the top min(k, t+1) tokens per row (ties: lower index;
 *      -inf never selected, so rows near the start get -1 in the spare slots);
 *   3. the attention core (kernels/attention, key source 3) reading the selection in place as
 *      token lists: every query head of the token attends the same selected tokens (MQA style;
 *      with Hkv > 1 each head reads its KV head).
 * Rows t < topk keep every causal token, so they skip 1-2 and attend all causal keys as one
 * block (the indexer and top-k still run for them when the caller asks for `indices`).
 */
import { check, checkInt, fail, checkF32 } from '../../src/errors.js';
import { aliasedOption, optionName, resolveTarget } from '../../src/options.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { getPipeline, grid2d, type Pipeline } from '../../src/gpu/pipeline.js';
import { registerPasses, type VariantOf } from '../../src/gpu/bindings.js';
import { uniformLayout } from '../../src/gpu/uniforms.js';
import {
  KernelPlan,
  attentionSizesOf,
  checkAttentionSizes,
  checkBindingSize,
  res,
  runOnceAndDispose,
} from '../../src/plan.js';
import { checkTensor, dtypeCode, isFloatDType, type FloatDType, type GpuTensor } from '../../src/tensor.js';
import storageWgsl from '../../shaders/storage.wgsl.js';
import unpackWgsl from '../../shaders/unpack4.wgsl.js';
import { checkBindings, checkHeadDim, checkRows, type GatherTarget } from '../block_sparse/common.js';
import { BlockListPlan } from '../attention/lists.js';
import { raggedPass } from '../block_sparse/ragged.js';
import { planTopK, TOPK_MAX_K, type TopKPlan } from '../topk/index.js';
import {
  loops,
  planLoopLimit,
  segment,
  segmentUniforms,
  SEGMENT_FIELDS,
  withLoopLimit,
  type Segment,
} from '../../src/gpu/segments.js';
import indexerWgsl from './indexer.wgsl.js';
import varlenIndexerWgsl from './varlen_indexer.wgsl.js';
import indexerCoreWgsl from './indexer_core.wgsl.js';

export const DSA_INDEXER_PARAMS = uniformLayout('IndexerParams', [
  ['rows', 'u32'],
  ['T0', 'u32'],
  ['Tk', 'u32'],
  ['HI', 'u32'],
  ['POSOFF', 'i32'],
  // segment: index heads [seg_begin, seg_end), added to the partial sums left in the scores
  // (seg_carry; seg_last unused, see indexerSegments)
  ...SEGMENT_FIELDS,
] as const);

/** The indexer over one sequence (`one`) and over a ragged batch (`batch`, varlen.ts; its sequence table `seqs` bound last). */
const INDEXER = raggedPass(
  'dsa/indexer',
  {
    head: [storageWgsl, unpackWgsl, DSA_INDEXER_PARAMS.wgsl],
    entry: indexerWgsl,
    batchEntry: varlenIndexerWgsl,
    core: [indexerCoreWgsl],
  },
  { qi_buf: 'read', ki_buf: 'read', w_buf: 'read', scores: 'rw', params: 'uniform' },
);
export const INDEXER_PROGRAM = INDEXER.one.program;
const WG = 64;
type IndexerPipeline = Pipeline<VariantOf<typeof INDEXER.one.table>>;
/** @internal The batch indexer's pipeline (the varlen plan's). */
export type DsaVarlenIndexerPipeline = Pipeline<VariantOf<typeof INDEXER.batch.table>>;

function indexerSpec(dtype: FloatDType, DI: number) {
  return INDEXER.one.spec({}, { WG, IN_DTYPE: dtypeCode(dtype), DI });
}
/** @internal The indexer's spec over a ragged batch (the varlen plan's). */
export function dsaVarlenIndexerSpec(dtype: FloatDType, DI: number) {
  return INDEXER.batch.spec({}, { WG, IN_DTYPE: dtypeCode(dtype), DI });
}
registerPasses('dsa', () => [
  indexerSpec('f32', 64),
  indexerSpec('bf16', 128),
  dsaVarlenIndexerSpec('f32', 64),
  dsaVarlenIndexerSpec('bf16', 128),
]);
/** Default bytes of index scores per row chunk. */
export const SCORE_CHUNK_BYTES = 64 * 1024 * 1024;

/**
 * Upper bound of the loop iterations one invocation of `indexer.wgsl` runs over `heads` index
 * heads, in the counting rules of src/gpu/segments.ts: the early return, the head loop with the
 * dot products of four keys (a loop of DI / 4) per head, and the four stores. Over 65,535 when
 * HI (DI / 4 + 2) is: DeepSeek-V3.2's 64 x 128 is 2,183; HI = DI = 1024, 264,199.
 *
 * @example
 * indexerLoopIterations(64, 128); // 2,183
 */
export function indexerLoopIterations(heads: number, DI: number): number {
  return loops.ret + loops.loop(heads, loops.loop(DI / 4)) + loops.loop(4);
}

/**
 * The indexer dispatches under loop cap `limit` (`segment()` of src/gpu/segments.ts): all HI heads
 * at once when they fit, else groups of heads, each adding to the partial sums the previous one
 * left (same order of additions).
 *
 * @example
 * indexerSegments(65535, 1024, 1024).length; // 5 on llvmpipe
 */
export function indexerSegments(limit: number, HI: number, DI: number, extra = 0): readonly Segment[] {
  const s = segment(HI, (n) => indexerLoopIterations(n, DI) + extra, limit, {
    op: 'dsa',
    what: 'one index head of the indexer',
    argument: 'DI',
    actual: DI,
    expected: 'a smaller DI (or a larger loopLimit)',
  });
  return s.segments;
}

export interface DsaOptions {
  /** Query rows (prefill: the sequence's tokens); required (or its deprecated alias `T`). */
  Tq?: number;
  /** @deprecated Use `Tq` (the query length's name in every family). */
  T?: number;
  /**
   * Keys (default Tq). With Tk > Tq the Tq query rows are the newest tokens (bottom-right: row t
   * sits at key position t + Tk − Tq); `Tq: 1` is decode over a cache of Tk tokens.
   */
  Tk?: number;
  /** Attention query heads. */
  Hq: number;
  /** KV heads (default 1: MLA in MQA mode). */
  Hkv?: number;
  /** q/k head dim, a multiple of 4 up to 576 (MLA latents: 576). */
  D: number;
  /** v/o head dim, up to 512 (default min(D, 512); MLA latents: 512). */
  Dv?: number;
  /** Index query heads (DeepSeek-V3.2: 64). */
  HI: number;
  /** Index head dim, a multiple of 4 up to 1024 (DeepSeek-V3.2: 128). */
  DI: number;
  /** Tokens kept per query (default 2048), at most 4096; a row keeps min(topk, t + 1). */
  topk?: number;
  /** Softmax scale (default 1/sqrt(D)). */
  scale?: number;
  /** Storage of q, k, v, qI, kI, w (default f32). */
  dtype?: FloatDType;
  /** Storage of o (default `dtype`). */
  outDtype?: FloatDType;
  /** Query rows per chunk (default: as many as keep the `[rows, T]` f32 scores within 64 MiB). */
  rowChunk?: number;
  /** Kernel shape of the attention step (default `auto`: follows the adapter class). */
  target?: GatherTarget;
  /**
   * Size the splits for this loop cap (lower than the device's only; an integer >= 256): tests
   * run the segmented paths llvmpipe needs on any adapter with it. Default: the device's.
   */
  loopLimit?: number;
}

export interface DsaTensors {
  /** `[T, Hq, D]`. */
  q: GpuTensor;
  /** `[Tk, Hkv, D]`. */
  k: GpuTensor;
  /** `[Tk, Hkv, Dv]`. */
  v: GpuTensor;
  /** `[T, HI, DI]` index queries. */
  qI: GpuTensor;
  /** `[Tk, DI]` index keys (one per token, shared by the index heads). */
  kI: GpuTensor;
  /** `[T, HI]` index head weights (may be negative). */
  w: GpuTensor;
  /** `[T, Hq, Dv]` out. */
  o: GpuTensor;
  /** `[T, Hq]` f32 out (optional). */
  lse?: GpuTensor;
  /** `[T, min(topk, Tk)]` i32 out (optional): selected tokens by descending index score, -1 unused. */
  indices?: GpuTensor;
}

interface Resolved {
  T: number;
  Tk: number;
  Hq: number;
  Hkv: number;
  D: number;
  Dv: number;
  HI: number;
  DI: number;
  topk: number;
  S: number;
  scale: number;
  dtype: FloatDType;
  outDtype: FloatDType;
  rowChunk: number;
  target: GatherTarget;
}

/**
 * A row chunk; `all`: every row keeps all its causal tokens (t < topk), so no selection is
 * needed. `indexer`: one uniform per indexer segment; `core`: the chunk's attention (its token
 * lists, or all causal keys as one block for `all`).
 */
interface Chunk {
  T0: number;
  rows: number;
  all: boolean;
  indexer: GPUBuffer[];
  core: BlockListPlan;
  topk: TopKPlan;
}

/** How a plan splits its dispatches under the device's loop limit. */
interface Splits {
  indexer: readonly Segment[];
  loopIterations: number;
}

/** A pipeline of either indexer (bound by name; the batch's also binds `seqs`). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyPipeline = Pipeline<any>;

/**
 * @internal The sizes a DSA plan encodes: T query rows over Tk key rows, index scores `width`
 * wide (one sequence: Tk; a ragged batch: its longest sequence), keys at position
 * t + posOff for row t (one sequence: Tk - T; a batch: 0, per sequence).
 */
export interface DsaSizes {
  T: number;
  Tk: number;
  width: number;
  posOff: number;
}

/**
 * @internal What every DSA plan shares: the score and selection workspaces, the chunks' indexer
 * uniforms, the tensor checks and the encode (per row chunk: indexer, top-k, attention).
 * DsaPlan (one sequence) and DsaVarlenPlan (a ragged batch, whose indexer also binds the sequence
 * table `seqs` and whose chunks never keep every token) differ only in how they plan.
 */
export abstract class DsaEncoder extends KernelPlan<DsaTensors> {
  private dsaOpts!: Resolved;
  private sizes!: DsaSizes;
  private indexer?: AnyPipeline;
  private chunkList!: Chunk[];
  private scores!: GPUBuffer;
  private sel!: GPUBuffer;
  private allList!: GPUBuffer;
  private seqs?: GPUBuffer;

  /**
   * Allocates the workspaces (scores and selection of one chunk of `rowChunk` rows) and one
   * indexer uniform per chunk and segment; `seqs`: the batch table (then `indices` is refused).
   */
  protected initDsa(
    o: Resolved,
    n: DsaSizes,
    rowChunk: number,
    chunks: readonly { T0: number; rows: number; all: boolean; core: BlockListPlan; topk: TopKPlan }[],
    indexer: { pipeline?: AnyPipeline; segs: readonly Segment[] },
    seqs?: GPUBuffer,
  ): void {
    this.dsaOpts = o;
    this.sizes = n;
    this.indexer = indexer.pipeline;
    this.seqs = seqs;
    this.scores = this.workspace(rowChunk * n.width * 4, 'dsa.scores');
    this.sel = this.workspace(rowChunk * o.S * 4, 'dsa.selection');
    this.allList = this.workspace(16, 'dsa.allKeys');
    this.ctx.device.queue.writeBuffer(this.allList, 0, new Uint32Array(4));
    this.chunkList = chunks.map((c) => ({
      ...c,
      indexer: indexer.segs.map((seg) =>
        this.uniform(DSA_INDEXER_PARAMS, {
          rows: c.rows,
          T0: c.T0,
          Tk: n.width,
          HI: o.HI,
          POSOFF: n.posOff,
          ...segmentUniforms(seg),
        }),
      ),
    }));
  }

  override dispose(): void {
    for (const t of new Set(this.chunkList?.map((c) => c.topk))) t.dispose();
    for (const c of this.chunkList ?? []) c.core.dispose();
    super.dispose();
  }

  run(encoder: GPUCommandEncoder, t: DsaTensors): void {
    this.assertUsable();
    if (t === null || typeof t !== 'object')
      fail('E_ARG', 'tensors', 'is not an object;', t, '{ q, k, v, qI, kI, w, o, lse?, indices? }');
    if (this.seqs && t.indices !== undefined)
      fail(
        'E_UNSUPPORTED',
        'indices',
        'is not offered for ragged batches;',
        'a tensor',
        'no indices (plan each sequence with planDsa to get them)',
      );
    const { Hq, Hkv, D, Dv, HI, DI, S, dtype, outDtype } = this.dsaOpts;
    const { T, Tk, width } = this.sizes;
    const rows = checkRows;
    const q = rows(t.q, 'q', T, [Hq, D], dtype);
    const k = rows(t.k, 'k', Tk, [Hkv, D], dtype);
    const v = rows(t.v, 'v', Tk, [Hkv, Dv], dtype);
    const qI = rows(t.qI, 'qI', T, [HI, DI], dtype);
    const kI = rows(t.kI, 'kI', Tk, [DI], dtype);
    const w = rows(t.w, 'w', T, [HI], dtype);
    const o = rows(t.o, 'o', T, [Hq, Dv], outDtype);
    const lse = t.lse === undefined ? undefined : rows(t.lse, 'lse', T, [Hq], 'f32');
    const idx = t.indices === undefined ? undefined : rows(t.indices, 'indices', T, [S], 'i32');
    checkBindings(this.ctx, { q, k, v, qI, o });
    if (idx) checkBindingSize(this.ctx, idx, 'indices');
    const seqs = this.seqs && { buffer: this.seqs };
    for (const c of this.chunkList) {
      const scores = { buffer: this.scores, shape: [c.rows, width], dtype: 'f32' as const };
      const sel = { buffer: this.sel, shape: [c.rows, S], dtype: 'i32' as const };
      // rows that keep every causal token need the index scores only for the optional output
      if (!c.all || idx) {
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
              seqs,
            } as never,
            grid2d(this.ctx, Math.ceil((c.rows * Math.ceil(width / 4)) / WG)),
          );
        c.topk.run(encoder, { scores, indices: sel });
        if (idx) encoder.copyBufferToBuffer(this.sel, 0, idx.buffer, (idx.offset ?? 0) + c.T0 * S * 4, c.rows * S * 4);
      }
      c.core.run(encoder, {
        q,
        k,
        v,
        lists: c.all ? { buffer: this.allList, size: 16 } : { buffer: this.sel, size: c.rows * S * 4 },
        o,
        lse,
      });
    }
  }
}

/**
 * Row chunks: rows whose position t + posOff is below S keep every causal token (`all`), then the
 * rest, each cut to `rowChunk`.
 */
function chunkRows(
  T: number,
  S: number,
  rowChunk: number,
  posOff: number,
): { T0: number; rows: number; all: boolean }[] {
  const out: { T0: number; rows: number; all: boolean }[] = [];
  const A = Math.max(0, Math.min(T, S - posOff));
  for (let T0 = 0; T0 < A; T0 += rowChunk) out.push({ T0, rows: Math.min(rowChunk, A - T0), all: true });
  for (let T0 = A; T0 < T; T0 += rowChunk) out.push({ T0, rows: Math.min(rowChunk, T - T0), all: false });
  return out;
}

/**
 * DeepSeek sparse attention (lightning indexer, top-k tokens).
 * Planned once by `planDsa`; `run` records it into your encoder and allocates
 * nothing; `dispose()` frees what the plan holds.
 *
 * @example
 * const plan = await planDsa(dev, { T: 8192, Hq: 16, D: 64, HI: 8, DI: 64, topk: 2048 });
 * plan.run(encoder, { q, k, v, qI, kI, w, o });
 * plan.dispose();
 */
export class DsaPlan extends DsaEncoder {
  readonly options: Readonly<Resolved>;
  /**
   * Dispatches per row chunk: 1 each, more on a loop-capped device (llvmpipe) where one
   * invocation would run too many loop iterations (many index heads); for the attention, the
   * parts each row's tokens are split into (merged by kernels/merge), selected rows and
   * keep-everything rows.
   */
  readonly segments: { indexer: number; attention: number; attentionAll: number };
  /** Upper bound of the loop iterations of one invocation of any of the plan's dispatches (top-k included). */
  readonly loopIterations: number;

  private constructor(
    ctx: TesseraDevice,
    o: Resolved,
    indexer: IndexerPipeline,
    cores: BlockListPlan[],
    topks: Map<number, TopKPlan>,
    splits: Splits,
  ) {
    super(ctx);
    this.options = o;
    const chunkList = chunkRows(o.T, o.S, o.rowChunk, o.Tk - o.T);
    const parts = (all: boolean) =>
      Math.max(0, ...cores.filter((_, i) => chunkList[i]!.all === all).map((c) => c.split.parts));
    this.segments = { indexer: splits.indexer.length, attention: parts(false), attentionAll: parts(true) };
    this.loopIterations = Math.max(
      splits.loopIterations,
      ...cores.map((c) => c.split.loopIterations),
      ...[...topks.values()].map((t) => t.loopIterations),
    );
    this.initDsa(
      o,
      { T: o.T, Tk: o.Tk, width: o.Tk, posOff: o.Tk - o.T },
      o.rowChunk,
      chunkList.map((c, i) => ({ ...c, core: cores[i]!, topk: topks.get(c.rows)! })),
      { pipeline: indexer, segs: splits.indexer },
    );
  }

  /** @internal use {@link planDsa}. */
  static async create(device: DeviceLike, opts: DsaOptions): Promise<DsaPlan> {
    const ctx = ctxOf(device);
    const o = validateDsaOptions(ctx, opts);
    checkAttentionSizes(ctx, { ...o, Tq: o.T });
    const chunks = chunkRows(o.T, o.S, o.rowChunk, o.Tk - o.T);
    const rowCounts = new Set(chunks.map((c) => c.rows));
    const topks = new Map<number, TopKPlan>();
    // Splits under the device's loop limit (llvmpipe): the indexer over index heads here, the
    // attention over runs of selected tokens (or keys) inside each chunk's BlockListPlan.
    const limit = planLoopLimit(ctx, opts.loopLimit);
    const capped = withLoopLimit(ctx, limit);
    const indexerSegs = indexerSegments(limit, o.HI, o.DI);
    const splits: Splits = {
      indexer: indexerSegs,
      loopIterations: Math.max(...indexerSegs.map((g) => indexerLoopIterations(g.end - g.begin, o.DI))),
    };
    // Per chunk: rows t0 .. t0 + rows of the core, the chunk's selection [rows, S] as token lists
    // (one per token, shared by its heads), or for keep-everything rows all causal keys as one block.
    const common = {
      Tk: o.Tk,
      Hq: o.Hq,
      Hkv: o.Hkv,
      D: o.D,
      Dv: o.Dv,
      heads: 1,
      base: 0,
      posOff: o.Tk - o.T,
      causal: true,
      scale: o.scale,
      qDtype: o.dtype,
      kvDtype: o.dtype,
      oDtype: o.outDtype,
      target: resolveTarget(ctx, o.target),
    };
    const coreOf = (c: { T0: number; rows: number; all: boolean }) =>
      BlockListPlan.create(capped, {
        ...common,
        Tq: c.rows,
        t0: c.T0,
        rows: 1,
        ...(c.all
          ? { stride: 1, block: o.Tk, maxEntries: 1, entryKeys: Math.min(o.S, o.Tk) }
          : { stride: o.S, block: 0, maxEntries: o.S }),
      });
    const [indexer, ...cores] = await Promise.all([
      getPipeline(ctx, indexerSpec(o.dtype, o.DI)),
      ...chunks.map(coreOf),
      ...[...rowCounts].map(
        async (rows) => void topks.set(rows, await planTopK(ctx, { rows, n: o.Tk, k: o.S, loopLimit: opts.loopLimit })),
      ),
    ]);
    return new DsaPlan(
      ctx,
      o,
      indexer as IndexerPipeline,
      cores.slice(0, chunks.length) as BlockListPlan[],
      topks,
      splits,
    );
  }
}

/** @internal the option rules of every DSA plan (also the varlen plan's). */
export function validateDsaOptions(ctx: TesseraDevice, opts: DsaOptions): Resolved {
  if (opts === null || typeof opts !== 'object') fail('E_ARG', 'options', 'missing;', opts, 'an options object');
  const T = checkInt(aliasedOption(opts, 'Tq', 'T'), optionName(opts, 'Tq', 'T'), { min: 1 });
  const Tk = checkInt(opts.Tk ?? T, 'Tk', { min: T });
  const Hq = checkInt(opts.Hq, 'Hq', { min: 1 });
  const Hkv = checkInt(opts.Hkv ?? 1, 'Hkv', { min: 1 });
  check(Hq % Hkv === 0, 'Hq', `a multiple of Hkv = ${Hkv}`, Hq);
  const HI = checkInt(opts.HI, 'HI', { min: 1, max: 1024 });
  const DI = checkInt(opts.DI, 'DI', { min: 4, max: 1024 });
  const topk = checkInt(opts.topk ?? 2048, 'topk', { min: 1 });
  if (topk > TOPK_MAX_K)
    fail('E_UNSUPPORTED', 'topk', 'exceeds what the GPU top-k keeps;', topk, `at most ${TOPK_MAX_K}`);
  const S = Math.min(topk, Tk);
  const fit = Math.max(1, Math.floor(Math.min(SCORE_CHUNK_BYTES, ctx.limits.maxStorageBufferBindingSize) / (4 * Tk)));
  const rowChunk = checkInt(opts.rowChunk ?? Math.min(T, fit), 'rowChunk', { min: 1 });
  if (rowChunk * Tk * 4 > ctx.limits.maxStorageBufferBindingSize)
    fail(
      'E_LIMIT',
      'rowChunk',
      'makes the score chunk exceed a storage binding;',
      rowChunk,
      `at most ${Math.floor(ctx.limits.maxStorageBufferBindingSize / (4 * Tk))}`,
    );
  const dtype = opts.dtype ?? 'f32';
  check(isFloatDType(dtype), 'dtype', 'one of f32, f16, bf16', dtype, 'E_DTYPE');
  const outDtype = opts.outDtype ?? dtype;
  check(isFloatDType(outDtype), 'outDtype', 'one of f32, f16, bf16', outDtype, 'E_DTYPE');
  // up to MLA latents (DeepSeek-V3.2: one KV head, Dqk 576, Dv 512), which the attention core takes
  const D = checkHeadDim(opts.D, 'D', dtype, 576);
  const Dv = checkHeadDim(opts.Dv ?? Math.min(D, 512), 'Dv', dtype, 512);
  const step = dtype === 'f32' ? 4 : 8;
  if (DI % step !== 0)
    fail(
      'E_UNSUPPORTED',
      'DI',
      `index head dims must be multiples of ${step} with ${dtype} storage;`,
      DI,
      `a multiple of ${step}`,
    );
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  check(checkF32(scale, 'scale', 'a positive finite number') > 0, 'scale', 'a positive finite number', scale);
  const target = opts.target ?? 'auto';
  check(target === 'auto' || target === 'cpu' || target === 'gpu', 'target', "'auto', 'cpu' or 'gpu'", target);
  return { T, Tk, Hq, Hkv, D, Dv, HI, DI, topk, S, scale, dtype, outDtype, rowChunk: Math.min(rowChunk, T), target };
}

/**
 * Plans DSA for one sequence: prefill (`T` tokens) or the newest `T` rows over `Tk` keys (decode: `T: 1`).
 *
 * @example
 * const plan = await planDsa(dev, { T: 8192, Hq: 16, D: 64, HI: 8, DI: 64, topk: 2048 });
 * plan.run(encoder, { q, k, v, qI, kI, w, o });
 */
export function planDsa(device: DeviceLike, opts: DsaOptions): Promise<DsaPlan> {
  return DsaPlan.create(device, opts);
}

/**
 * DSA in one call (plan, run, submit, wait); sizes come from the tensors.
 *
 * @example
 * await dsa(dev, { q, k, v, qI, kI, w, o }, { topk: 2048 });
 */
export async function dsa(
  device: DeviceLike,
  t: DsaTensors,
  opts: Omit<DsaOptions, 'Tq' | 'T' | 'Tk' | 'Hq' | 'Hkv' | 'D' | 'Dv' | 'HI' | 'DI'> = {},
): Promise<void> {
  const ctx = ctxOf(device);
  const sizes = attentionSizesOf(t, opts);
  const qI = checkTensor(t.qI, 'qI', { rank: 3 });
  const plan = await planDsa(ctx, { ...opts, ...sizes, HI: qI.shape[1]!, DI: qI.shape[2]! });
  await runOnceAndDispose(ctx, plan, t, 'dsa');
}
