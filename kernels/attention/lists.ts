/**
 * Key source 3 of the attention core: per-query-block key lists (block_sparse's BSR masks, MoBA's
 * and NSA's selected blocks, DSA's selected tokens) over contiguous K/V `[Tk, Hkv, D]`. The lists
 * are a GPU buffer the family fills (its selection kernel, or an upload at plan time); the core
 * reads them in place, so a run makes no host round trip. Internal to the sparse families: each
 * owns a {@link BlockListPlan} and calls `run` from its own `run`.
 *
 * List layout (see `load_row_lists` in attention.wgsl): row t * Hq + hq of the Tq query tokens
 * uses the list of query block t / `rows` and pattern hq / (Hq / `heads`), either `stride` words
 * per list (unused slots -1) or, with `stride` 0, a CSR table (`ptr` words [heads, mb + 1] then
 * the words). A word b names keys [b * block, min((b + 1) * block, Tk)); the row at position
 * t + posOff sees those <= its position (causal) and > position - window (window > 0).
 *
 * Ragged batches (`seqs`): one plan attends every sequence of a batch in one dispatch (plus the
 * merge when split). Each sequence names its first query row, first key row, key count, position
 * offset and the word offset of its lists; the table is a small storage buffer written once at plan
 * time and bound as the core's `seq_table` (a row finds its sequence with shaders/ragged_seq.wgsl,
 * the varlen kernels' search), so q, k, v, o and lse are read and written in place at every
 * sequence's own rows (no staging copies, whatever the row alignment).
 *
 * On loop-capped adapters (llvmpipe) one invocation may walk only part of a row's list: the plan
 * splits each list into parts of whole entries (or of key ranges inside one long entry) under
 * `loopBudget`, writes f32 partials and merges them with `kernels/merge`.
 */
import { fail } from '../../src/errors.js';
import { loopBudget, type TesseraDevice } from '../../src/gpu/device.js';
import { getPipeline, grid2d, type BindingResource } from '../../src/gpu/pipeline.js';
import { KernelPlan, checkPlannedSize, res } from '../../src/plan.js';
import { dtypeCode, type FloatDType, type GpuTensor } from '../../src/tensor.js';
import { planMerge, type MergePlan } from '../merge/index.js';
import {
  ATTENTION_BK,
  ATTENTION_WG,
  CORE_LIST_DEFAULTS,
  CORE_PARAMS,
  attentionListLoopCost,
  coreSpec,
  type CorePipeline,
} from './attention.js';

export type BlockListTarget = 'cpu' | 'gpu';

const BYTES: Record<FloatDType, number> = { f32: 4, f16: 2, bf16: 2 };
/** Loop trips per list word beyond `attentionListLoopCost` (see blockListParts). */
const ENTRY_SLACK = 12;

/** One sequence of a ragged batch (see {@link BlockListOptions.seqs}). */
export interface BlockListSeq {
  /** First query row of the sequence in q, o and lse; its Tq rows follow. */
  q0: number;
  Tq: number;
  /** First key row in k and v; its `Tk` keys follow (list words are relative to it). */
  kv0: number;
  Tk: number;
  /** Query token i of the sequence sits at key position i + posOff. */
  posOff: number;
  /** Word offset of the sequence's lists (CSR: of the words its table points into). */
  base: number;
  /** CSR: word offset of the sequence's ptr table and its query blocks per pattern. */
  ptr?: number;
  mb?: number;
}

/** Words per sequence of the batch table (SEQ_WORDS in attention.wgsl). */
const SEQ_WORDS = 8;

export interface BlockListOptions {
  /** Query tokens this plan attends: tokens [t0, t0 + Tq) of q, o and lse. */
  Tq: number;
  /** First query token (default 0); the lists are addressed from it (a chunk's own lists). */
  t0?: number;
  Tk: number;
  Hq: number;
  Hkv: number;
  D: number;
  Dv: number;
  /** Query tokens per list (a query block; 1 for per-token lists). */
  rows: number;
  /** Lists per query block: 1 (shared by all heads), Hkv or Hq. */
  heads: number;
  /** Words per list (fixed-size lists, -1 = unused), or 0 for a CSR table. */
  stride: number;
  /** CSR: query blocks per pattern (the table has heads x (mb + 1) words). */
  mb?: number;
  /** CSR: word offset of the table in the list buffer (default 0). */
  ptr?: number;
  /** Word offset of the lists (CSR: of the words the table points into). */
  base: number;
  /**
   * Keys per list word; 0: token lists (every word a key index the row sees: no -1, none after
   * the row's position), attended as one run of keys.
   */
  block: number;
  /** The most words of one list (its loop bound). */
  maxEntries: number;
  /** The most keys a row sees of one word (default min(block, Tk); less with a window). */
  entryKeys?: number;
  /** Query token t sits at key position t + posOff. */
  posOff: number;
  /**
   * Key positions: key c at position (c + 1) * keyStride - 1 (default 1: key j at position j;
   * NSA's compressed keys: the block size).
   */
  keyStride?: number;
  causal: boolean;
  window?: number;
  scale: number;
  qDtype: FloatDType;
  kvDtype: FloatDType;
  oDtype: FloatDType;
  target: BlockListTarget;
  /**
   * A ragged batch: the sequences (by increasing q0, together covering query rows [t0, t0 + Tq))
   * that one dispatch attends, each with its own lists, keys and position offset; `posOff`,
   * `base`, `ptr` and `mb` are then taken from each sequence (`base` may be negative: a sequence
   * that starts before t0 in a chunk's lists) and `Tk` is the rows of k and v.
   */
  seqs?: readonly BlockListSeq[];
}

export interface BlockListTensors {
  q: GpuTensor;
  k: GpuTensor;
  v: GpuTensor;
  /** The list buffer (u32 / i32 words). */
  lists: BindingResource;
  o: GpuTensor;
  /** `[Tq, Hq]` f32 (optional). */
  lse?: GpuTensor;
}

/** How a row's list is split over invocations (one part: no split). */
export interface BlockListParts {
  /** Entries of one part. */
  ePer: number;
  /** Keys of one entry per part (the whole block when `keyChunks` is 1). */
  kPer: number;
  keyChunks: number;
  parts: number;
  /** Upper bound of one invocation's loop iterations. */
  loopIterations: number;
}

/**
 * The parts a list of `entries` words of `keys` keys each needs under `budget` loop iterations
 * (`undefined` when not even one key block of the shape fits). `keys` 0: token lists, one run
 * of `entries` keys, split into runs of `ePer` words.
 *
 * @example
 * blockListParts(3686, 'gpu', 32, 32, 2, 3000).parts; // 6: two entries, three key ranges each
 */
export function blockListParts(
  budget: number,
  target: BlockListTarget,
  D: number,
  Dv: number,
  entries: number,
  keys: number,
): BlockListParts | undefined {
  const E = Math.max(1, entries);
  const K = Math.max(1, keys);
  // attentionListLoopCost plus ENTRY_SLACK per list word: on llvmpipe a row of 4,000 one-key
  // blocks (D = 4, cpu shape) passed the cap at 2,563 words per part with the bare bound
  const cost = (e: number, k: number) => {
    const c = attentionListLoopCost(target, D, Dv, k);
    return c.setup + e * (c.perEntry + ENTRY_SLACK);
  };
  if (keys === 0) {
    // one segment of ePer keys per part
    if (cost(1, E) <= budget) return { ePer: E, kPer: 1, keyChunks: 1, parts: 1, loopIterations: cost(1, E) };
    let ePer = 0;
    for (let step = 1 << 24; step > 0; step >>= 1) if (ePer + step <= E && cost(1, ePer + step) <= budget) ePer += step;
    if (ePer === 0) return undefined;
    return { ePer, kPer: 1, keyChunks: 1, parts: Math.ceil(E / ePer), loopIterations: cost(1, ePer) };
  }
  if (cost(E, K) <= budget) return { ePer: E, kPer: K, keyChunks: 1, parts: 1, loopIterations: cost(E, K) };
  if (cost(1, K) <= budget) {
    let ePer = 1;
    while (ePer * 2 <= E && cost(ePer * 2, K) <= budget) ePer *= 2;
    for (let step = ePer >> 1; step > 0; step >>= 1)
      if (ePer + step <= E && cost(ePer + step, K) <= budget) ePer += step;
    return { ePer, kPer: K, keyChunks: 1, parts: Math.ceil(E / ePer), loopIterations: cost(ePer, K) };
  }
  const unit = target === 'cpu' ? ATTENTION_BK : ATTENTION_WG;
  let kPer = 0;
  while (kPer + unit < K && cost(1, kPer + unit) <= budget) kPer += unit;
  if (kPer === 0) return undefined;
  const keyChunks = Math.ceil(K / kPer);
  return { ePer: 1, kPer, keyChunks, parts: E * keyChunks, loopIterations: cost(1, kPer) };
}

/**
 * Loop trips one invocation of a batched kernel spends finding its sequence among `n` by binary
 * search (shaders/ragged_seq.wgsl: the core's block lists here and the varlen selection kernels).
 *
 * @example
 * raggedSearchTrips(7); // 5
 */
export function raggedSearchTrips(n: number): number {
  return Math.ceil(Math.log2(n + 1)) + 2;
}

/** Attention of query rows over their key lists (key source 3 of the core). */
export class BlockListPlan extends KernelPlan<BlockListTensors> {
  readonly options: Readonly<BlockListOptions>;
  readonly split: Readonly<BlockListParts>;
  private readonly pipeline: CorePipeline;
  private readonly params: GPUBuffer;
  private readonly rowsN: number;
  private readonly lseScratch: GPUBuffer;
  /** The batch table (`seqs`): the core's `seq_table`, bound only by the batch variant. */
  private readonly seqTable?: GPUBuffer;
  private readonly oParts?: GPUBuffer;
  private readonly lseParts?: GPUBuffer;
  /** Split and t0 > 0: the merge writes here, then copies to the rows of o and lse. */
  private readonly stageO?: GPUBuffer;
  private readonly stageLse?: GPUBuffer;
  private merge?: MergePlan;

  private constructor(ctx: TesseraDevice, o: BlockListOptions, split: BlockListParts, pipeline: CorePipeline) {
    super(ctx);
    this.options = o;
    this.split = split;
    this.pipeline = pipeline;
    this.rowsN = o.Tq * o.Hq;
    this.params = this.uniform(CORE_PARAMS, {
      hq: o.Hq,
      group: o.Hq / o.Hkv,
      hkv: o.Hkv,
      scale_log2: o.scale * Math.LOG2E,
      causal: o.causal ? 1 : 0,
      window: o.window ?? 0,
      sinks: 0,
      has_sink: 0,
      page: 1,
      page_elems: 0,
      page_words: 0,
      k_head: 0,
      v_off: 0,
      v_head: 0,
      scale_off: 0,
      off_qo: 0,
      off_kv: 0,
      off_last: 0,
      off_idx: 0,
      lse_off: 0,
      l_rows: this.rowsN,
      q_pos0: 0,
      list_base: o.base,
      n_entries: 0,
      e_per: split.ePer,
      part_base: 0,
      part_count: split.parts,
      ...CORE_LIST_DEFAULTS,
      b_rows: o.rows,
      b_heads: o.heads,
      b_stride: o.stride,
      b_ptr: o.ptr ?? 0,
      b_mb: o.mb ?? 0,
      b_block: o.block,
      b_keys: o.Tk,
      b_posoff: o.posOff,
      b_qdiv: o.keyStride ?? 1,
      b_t0: o.seqs ? 0xffffffff : (o.t0 ?? 0),
      b_kper: split.keyChunks > 1 ? split.kPer : 0x7fffffff,
      b_nkc: split.keyChunks,
    });
    this.lseScratch = this.workspace(this.rowsN * 4, 'lists.lse');
    if (o.seqs) {
      const seqs = o.seqs.filter((x) => x.Tq > 0);
      const words = new Uint32Array(2 + SEQ_WORDS * seqs.length);
      const signed = new Int32Array(words.buffer);
      words[0] = seqs.length;
      words[1] = o.t0 ?? 0;
      seqs.forEach((x, i) => {
        const e = 2 + i * SEQ_WORDS;
        words.set([x.q0, x.kv0, x.Tk], e);
        signed[e + 3] = x.posOff;
        words.set([x.base >>> 0, x.ptr ?? 0, x.mb ?? 0], e + 4);
      });
      this.seqTable = this.workspace(words.byteLength, 'lists.seqs');
      ctx.device.queue.writeBuffer(this.seqTable, 0, words);
    }
    if (split.parts > 1) {
      this.oParts = this.workspace(split.parts * this.rowsN * o.Dv * 4, 'lists.oParts');
      this.lseParts = this.workspace(split.parts * this.rowsN * 4, 'lists.lseParts');
      if (o.t0) {
        this.stageO = this.workspace(this.rowsN * o.Dv * BYTES[o.oDtype], 'lists.stageO');
        this.stageLse = this.workspace(this.rowsN * 4, 'lists.stageLse');
      }
    }
  }

  override dispose(): void {
    this.merge?.dispose();
    super.dispose();
  }

  /**
   * Compiles the core for the options; `argument` names the head dim in the `E_LIMIT` thrown when
   * not even one key block fits the device's loop limit.
   *
   * @example
   * const core = await BlockListPlan.create(ctx, { ...sizes, rows: R, heads: P, stride: 0, mb: MB, base, block: C, maxEntries, posOff: Tk - Tq, causal, scale, qDtype, kvDtype, oDtype, target });
   */
  static async create(ctx: TesseraDevice, o: BlockListOptions, argument = 'D'): Promise<BlockListPlan> {
    // a batch: the row's sequence is found by a binary search (log2 n + 2 loop trips)
    const search = o.seqs ? raggedSearchTrips(o.seqs.length) : 0;
    const budget = loopBudget(ctx.loopLimit) - search;
    const maxKeys = o.seqs ? Math.max(1, ...o.seqs.map((x) => x.Tk)) : o.Tk;
    let split = blockListParts(
      budget,
      o.target,
      o.D,
      o.Dv,
      o.maxEntries,
      o.block === 0 ? 0 : Math.max(1, o.entryKeys ?? Math.min(o.block, maxKeys)),
    );
    if (split && search) split = { ...split, loopIterations: split.loopIterations + search };
    if (!split) {
      fail(
        'E_LIMIT',
        argument,
        `one key block of the attention core (head dims ${o.D}/${o.Dv}) runs more loop iterations than this device allows one invocation (${budget});`,
        o.D,
        'a smaller head dim, or a device with a larger loop limit',
      );
    }
    if (split.parts > 1) checkPlannedSize(ctx, 'o', [split.parts, o.Tq * o.Hq, o.Dv], 'f32');
    // SRC 3 writes its parts to o itself (no `work`) and reads no sink logits
    const pipeline = await getPipeline(
      ctx,
      coreSpec(
        { D: o.D, Dv: o.Dv, target: o.target },
        {
          SRC: 3,
          KV_DT: dtypeCode(o.kvDtype),
          Q_DT: dtypeCode(o.qDtype),
          O_DT: split.parts > 1 ? 0 : dtypeCode(o.oDtype),
        },
        { work: false, sink_logits: false, seq_table: o.seqs !== undefined },
      ),
    );
    const plan = new BlockListPlan(ctx, o, split, pipeline);
    if (split.parts > 1)
      plan.merge = await planMerge(ctx, { parts: split.parts, rows: o.Tq * o.Hq, D: o.Dv, outDtype: o.oDtype });
    return plan;
  }

  /** Encodes the attention (and the merge of the parts); the caller has checked the tensors. */
  run(encoder: GPUCommandEncoder, t: BlockListTensors): void {
    this.assertUsable();
    const o = this.options;
    const n = this.split.parts * this.rowsN;
    const grid = grid2d(this.ctx, o.target === 'cpu' ? Math.ceil(n / ATTENTION_WG) : n);
    const lseOut: BindingResource = t.lse ? res(t.lse) : { buffer: this.lseScratch, size: this.rowsN * 4 };
    const rest = {
      q: res(t.q),
      k: res(t.k),
      v: res(t.v),
      sched: t.lists,
      params: { buffer: this.params },
      seq_table: this.seqTable && { buffer: this.seqTable },
    };
    if (!this.merge) {
      this.dispatch(encoder, this.pipeline, { ...rest, o: res(t.o), lse: lseOut }, grid);
      return;
    }
    const P = this.split.parts;
    this.dispatch(
      encoder,
      this.pipeline,
      { ...rest, o: { buffer: this.oParts! }, lse: { buffer: this.lseParts! } },
      grid,
    );
    const parts = {
      oParts: { buffer: this.oParts!, shape: [P, this.rowsN, o.Dv], dtype: 'f32' as const },
      lseParts: { buffer: this.lseParts!, shape: [P, this.rowsN], dtype: 'f32' as const },
    };
    if (this.stageO) {
      // rows [t0, t0 + Tq) of o and lse: merged here, then copied (4-byte aligned: Dv is a
      // multiple of 8 with 16-bit outputs)
      const ob = this.rowsN * o.Dv * BYTES[o.oDtype];
      this.merge.run(encoder, {
        ...parts,
        o: { buffer: this.stageO, shape: [this.rowsN, o.Dv], dtype: o.oDtype },
        lse: { buffer: this.stageLse!, shape: [this.rowsN], dtype: 'f32' },
      });
      encoder.copyBufferToBuffer(
        this.stageO,
        0,
        t.o.buffer,
        (t.o.offset ?? 0) + (o.t0 ?? 0) * o.Hq * o.Dv * BYTES[o.oDtype],
        ob,
      );
      if (t.lse)
        encoder.copyBufferToBuffer(
          this.stageLse!,
          0,
          t.lse.buffer,
          (t.lse.offset ?? 0) + (o.t0 ?? 0) * o.Hq * 4,
          this.rowsN * 4,
        );
      return;
    }
    this.merge.run(encoder, {
      ...parts,
      o: { ...t.o, shape: [this.rowsN, o.Dv] },
      lse: t.lse ? { ...t.lse, shape: [this.rowsN] } : { buffer: this.lseScratch, shape: [this.rowsN], dtype: 'f32' },
    });
  }
}
