/**
 * Sparse prefill over a long cache: a chunk of `Tq` new queries (the newest `Tq` tokens of a
 * sequence, e.g. 4,096 of them after a tool output) attends to
 *
 * - the earlier context through per-query-block page selection: the chunk is cut into blocks of
 *   `blockSize` queries; for each block and KV head the pages of the earlier context are scored
 *   from the cache's GPU summaries (Quest's min/max upper bound, or MoBA's mean-key gate), the
 *   block's score of a page being the max over the block's queries and the KV head's query heads
 *   (one GQA-shared selection per block and KV head), and the top pages within `budgetTokens`
 *   (sink pages included) are kept; plus
 * - the chunk's own part, causally (every page from the one holding the chunk's first token to
 *   the block's last query, with causal masking by absolute position: exact).
 *
 * Scoring (`blockScore`): `bound` (default) scores each page once per block and KV head with
 * `kernels/quest/block`: the block's query box (per-channel min and max over its queries and the
 * KV head's query heads) against the page's key min/max (or mean), an upper bound of the block's
 * largest q . k in the page (at least every query's own Quest bound), one pass over D per page and
 * block, for all blocks of a pass in one dispatch per summary chunk; `rows` is the tighter and
 * B * group times dearer per-query scoring (`kernels/quest/score`: a block of B queries x `group`
 * heads is one "group" of B * group rows reduced by max). Selection: `kernels/topk` over `[blocks x Hkv, pages]`,
 * attention `kernels/paged` (one block of queries per call, its own page list) and merging
 * `kernels/merge`. With a budget that covers the whole earlier context it equals exact streaming
 * attention (`src/stream/exact.ts`) to f32 rounding.
 */
import { check, checkInt, fail } from '../errors.js';
import { kernelTarget, type KernelTarget } from '../options.js';
import { type TesseraDevice } from '../gpu/device.js';
import { loopBudget, planLoopLimit } from '../gpu/segments.js';
import { checkTensor, type GpuTensor } from '../tensor.js';
import type { KvCache } from '../kv/cache.js';
import { planMerge, type MergePlan } from '../../kernels/merge/merge.js';
import { ALL_HEADS, PAGED_ENTRY_WORDS, planPaged, type PagedCall, type PagedPlan } from '../../kernels/paged/paged.js';
import {
  planQuestScore,
  questScoreLoopIterations,
  type QuestScoreMode,
  type QuestScorePlan,
} from '../../kernels/quest/score.js';
import { planTopK, type TopKPlan } from '../../kernels/topk/topk.js';
import { planQuestBlock, questBlockLoopIterations, QuestBlockPlan } from '../../kernels/quest/block.js';
import { GPUBufferUsageFlags } from '../gpu/flags.js';

export interface SparsePrefillOptions {
  /** Query heads (a multiple of the cache's Hkv). */
  Hq: number;
  /** Queries per call: the chunk (e.g. 4096). */
  Tq: number;
  /** Queries per selection block (a multiple of 16; default 64). */
  blockSize?: number;
  /** Tokens of the earlier context attended per block and KV head, sink pages included (default 2048). */
  budgetTokens?: number;
  /** `quest` (min/max upper bound, default) or `mean` (MoBA's mean-key gate; needs meanSummaries). */
  mode?: QuestScoreMode;
  /**
   * How a block scores a page: `bound` (default: the block's query box against the page's
   * summaries, one pass over D per block and page, `kernels/quest/block`) or `rows` (the max of
   * every query row's own score, `kernels/quest/score`: B * group passes over D).
   */
  blockScore?: 'bound' | 'rows';
  /** First pages of the context always selected (default: the cache's `sinkPages`). */
  sinkPages?: number;
  /** Softmax scale (default 1/sqrt(D)). */
  scale?: number;
  /** Pages one part of the paged kernel covers (default 4; capped by the device's loop limit). */
  pagesPerPart?: number;
  /** Bound on the `[blocks x Hkv, pages]` score buffer of one scoring pass (default 16 MiB). */
  scoreBytes?: number;
  /** Paged kernel shape (`kernels/paged`): `auto` (default, by adapter class), `cpu` or `gpu`. */
  target?: KernelTarget;
  /** @deprecated Use `target` (same values): the kernel shape's old name in this family. */
  variant?: 'auto' | 'cpu' | 'gpu';
  /**
   * Size the scoring, the parts and the merge for this loop cap (lower than the cache's only; an
   * integer >= 256): tests run the split paths llvmpipe needs on any adapter with it. Default: the
   * cache's (`cache.ctx.loopLimit`); `plan.options.loopLimit` is the cap in use.
   */
  loopLimit?: number;
}

export interface SparsePrefillRunOptions {
  /**
   * The chunk's keys and values (`[Tq, Hkv, D]`, `[Tq, Hkv, Dv]` host values): appended to the
   * sequence first (after every argument is checked). Without them the chunk must already be the
   * newest `Tq` tokens of the sequence.
   */
  k?: ArrayLike<number>;
  v?: ArrayLike<number>;
}

export interface SparsePrefillStats {
  /** Query blocks. */
  blocks: number;
  /** Pages of the earlier context (the selection candidates). */
  contextPages: number;
  /** Pages of the chunk's own part (attended causally by the blocks that reach them). */
  ownPages: number;
  /** Selected context pages per block and KV head (`selected[block][h]`, ascending page indices). */
  selected: Int32Array[][];
  /** Summary bytes the scoring read (one pass over the context's summaries per block). */
  summaryBytesRead: number;
  /** KV bytes the attention read: selected pages (per KV head) plus the chunk's own pages. */
  pageBytesRead: number;
  pagesUploaded: number;
  bytesUploaded: number;
  appendMs: number;
  scoreMs: number;
  ms: number;
}

const MiB = 2 ** 20;

/** A plan for sparse prefill over one cache. */
export class SparsePrefillPlan {
  readonly cache: KvCache;
  readonly ctx: TesseraDevice;
  readonly options: Required<Omit<SparsePrefillOptions, 'variant'>>;
  readonly budgetPages: number;
  /** Blocks per scoring pass (bounded by `scoreBytes`). */
  private readonly blocksMax: number;
  private readonly maxEntries: number;
  private readonly parts: number;
  private readonly ePer: number;
  private readonly scorer: QuestScorePlan | QuestBlockPlan;
  private readonly paged: PagedPlan;
  private readonly merger: MergePlan;
  private readonly qAttn: GPUBuffer;
  private readonly qScore: GPUBuffer;
  private readonly oParts: GPUBuffer;
  private readonly lseParts: GPUBuffer;
  private readonly oTmp: GPUBuffer;
  private readonly lseTmp: GPUBuffer;
  private readonly entries: GPUBuffer;
  private readonly words: Uint32Array<ArrayBuffer>;
  private list?: GPUBuffer;
  private scores?: GPUBuffer;
  private indices?: GPUBuffer;
  private readonly topk = new Map<string, TopKPlan>();
  private disposed = false;

  private constructor(
    cache: KvCache,
    o: Required<Omit<SparsePrefillOptions, 'variant'>>,
    scorer: QuestScorePlan | QuestBlockPlan,
    paged: PagedPlan,
    merger: MergePlan,
    maxEntries: number,
    parts: number,
    ePer: number,
  ) {
    this.cache = cache;
    this.ctx = cache.ctx;
    this.options = o;
    this.budgetPages = Math.max(1, Math.floor(o.budgetTokens / cache.pageSize));
    this.scorer = scorer;
    this.paged = paged;
    this.merger = merger;
    this.maxEntries = maxEntries;
    this.parts = parts;
    this.ePer = ePer;
    const nb = Math.ceil(o.Tq / o.blockSize);
    this.blocksMax = nb;
    const usage = GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST | GPUBufferUsageFlags.COPY_SRC;
    const B = o.blockSize;
    const { D, Dv } = cache;
    this.qAttn = this.ctx.createBuffer({ size: nb * B * o.Hq * D * 4, usage, label: 'tessera.prefill.q' });
    this.qScore =
      cache.Hkv === 1 || o.blockScore === 'bound'
        ? this.qAttn
        : this.ctx.createBuffer({ size: nb * B * o.Hq * D * 4, usage, label: 'tessera.prefill.qScore' });
    const rows = B * o.Hq;
    this.oParts = this.ctx.createBuffer({ size: parts * rows * Dv * 4, usage, label: 'tessera.prefill.oParts' });
    this.lseParts = this.ctx.createBuffer({ size: parts * rows * 4, usage, label: 'tessera.prefill.lseParts' });
    this.oTmp = this.ctx.createBuffer({ size: rows * Dv * 4, usage, label: 'tessera.prefill.o' });
    this.lseTmp = this.ctx.createBuffer({ size: rows * 4, usage, label: 'tessera.prefill.lse' });
    this.entries = this.ctx.createBuffer({
      size: maxEntries * PAGED_ENTRY_WORDS * 4,
      usage,
      label: 'tessera.prefill.entries',
    });
    this.words = new Uint32Array(maxEntries * PAGED_ENTRY_WORDS);
  }

  /** @internal use {@link planSparsePrefill}. */
  static async create(cache: KvCache, opts: SparsePrefillOptions): Promise<SparsePrefillPlan> {
    if (!cache || typeof cache.ensureResident !== 'function') fail('E_ARG', 'cache', 'is not a KvCache;', typeof cache);
    const Hq = checkInt(opts?.Hq, 'Hq', { min: 1 });
    check(Hq % cache.Hkv === 0, 'Hq', `a multiple of the cache's Hkv = ${cache.Hkv}`, Hq, 'E_SHAPE');
    // Per-block scoring reads every page summary on the GPU; a two-level cache keeps them on the host.
    if (cache.tiers)
      fail(
        'E_UNSUPPORTED',
        'cache',
        'has two summary levels (page summaries on the host); sparse prefill scores page summaries on the GPU;',
        cache.summaryLevels,
        'a cache with summaryLevels: 1',
      );
    const Tq = checkInt(opts.Tq, 'Tq', { min: 1 });
    const blockSize = checkInt(opts.blockSize ?? 64, 'blockSize', { min: 16 });
    check(blockSize % 16 === 0, 'blockSize', 'a multiple of 16', blockSize);
    const budgetTokens = checkInt(opts.budgetTokens ?? 2048, 'budgetTokens', { min: cache.pageSize });
    const mode = opts.mode ?? 'quest';
    check(mode === 'quest' || mode === 'mean', 'mode', '"quest" or "mean"', mode);
    if (mode === 'mean' && !cache.meanSummaries)
      fail(
        'E_UNSUPPORTED',
        'mode',
        'needs a cache with meanSummaries;',
        mode,
        '"quest", or a cache created with meanSummaries: true',
      );
    const blockScore = opts.blockScore ?? 'bound';
    check(blockScore === 'bound' || blockScore === 'rows', 'blockScore', '"bound" or "rows"', blockScore);
    const target = kernelTarget(opts);
    const limit = planLoopLimit(cache.ctx, opts.loopLimit);
    const o: Required<Omit<SparsePrefillOptions, 'variant'>> = {
      loopLimit: limit,
      Hq,
      Tq,
      blockSize,
      budgetTokens,
      mode,
      blockScore,
      sinkPages: checkInt(opts.sinkPages ?? cache.sinkPages, 'sinkPages', { min: 0 }),
      scale: opts.scale ?? 1 / Math.sqrt(cache.D),
      pagesPerPart: checkInt(opts.pagesPerPart ?? 4, 'pagesPerPart', { min: 1 }),
      scoreBytes: checkInt(opts.scoreBytes ?? 16 * MiB, 'scoreBytes', { min: 1 }),
      target,
    };
    check(Number.isFinite(o.scale), 'scale', 'a finite number', o.scale);
    const P = cache.pageSize;
    const budgetPages = Math.max(1, Math.floor(budgetTokens / P));
    if (budgetPages > 4096 + o.sinkPages)
      fail(
        'E_LIMIT',
        'budgetTokens',
        'selects more pages per block than the top-k takes;',
        budgetTokens,
        `at most ${(4096 + o.sinkPages) * P} tokens`,
      );
    // Pages one block needs at once: its selection for every KV head plus the chunk's own pages.
    const ownMax = Math.ceil(Tq / P) + 1;
    const maxEntries = budgetPages * cache.Hkv + ownMax;
    const maxResident = Math.floor((cache.gpuBudgetBytes - cache.summaryBytes) / cache.pageBytes);
    if (budgetPages * cache.Hkv + ownMax > maxResident) {
      fail(
        'E_LIMIT',
        'budgetTokens',
        'with the chunk needs more pages at once than the GPU working set holds;',
        budgetTokens,
        `(budget pages x Hkv + ${ownMax} chunk pages) <= ${maxResident} (raise gpuBudgetBytes or cut Tq)`,
      );
    }
    // One page score loops over the block's rows (blockSize x group) and D: Mesa's llvmpipe stops
    // an invocation after ctx.loopLimit loop iterations (or the plan's lower loopLimit).
    const loops =
      blockScore === 'bound'
        ? questBlockLoopIterations(blockSize, Hq / cache.Hkv, cache.D)
        : questScoreLoopIterations(blockSize * (Hq / cache.Hkv), cache.D);
    if (loops > loopBudget(limit)) {
      fail(
        'E_LIMIT',
        'blockSize',
        "gives one page score more query rows x channels than the device's loop limit allows;",
        blockSize,
        `blockSize * Hq / Hkv * (D / 4 + 2) within 90% of loopLimit ${limit}`,
      );
    }
    const groups = Math.max(1, Math.min(maxEntries, Math.floor(cache.gpuBudgetBytes / cache.pool.bufferBytes) + 1));
    const nb = Math.ceil(Tq / blockSize);
    const scorer =
      blockScore === 'bound'
        ? await planQuestBlock(cache.ctx, {
            Hq,
            Hkv: cache.Hkv,
            D: cache.D,
            blockSize,
            maxBlocks: nb,
            mode,
            maxCalls: 16,
            loopLimit: opts.loopLimit,
          })
        : await planQuestScore(cache.ctx, {
            Hq: blockSize * Hq,
            Hkv: cache.Hkv,
            D: cache.D,
            mode,
            groupReduce: 'max',
            maxCalls: 16,
            loopLimit: opts.loopLimit,
          });
    let paged: PagedPlan | undefined;
    try {
      paged = await planPaged(cache.ctx, {
        Hq,
        Hkv: cache.Hkv,
        D: cache.D,
        Dv: cache.Dv,
        Tq: blockSize,
        pageSize: P,
        dtype: cache.dtype,
        causal: true,
        scale: o.scale,
        maxCalls: groups,
        target,
        loopLimit: opts.loopLimit,
      });
      const ePer = Math.max(1, Math.min(o.pagesPerPart, paged.maxEntriesPerPart));
      const parts = Math.ceil(maxEntries / ePer) + groups;
      const merger = await planMerge(cache.ctx, {
        parts,
        rows: blockSize * Hq,
        D: cache.Dv,
        outDtype: 'f32',
        loopLimit: opts.loopLimit,
      });
      return new SparsePrefillPlan(cache, o, scorer, paged, merger, maxEntries, parts, ePer);
    } catch (e) {
      scorer.dispose();
      paged?.dispose();
      throw e;
    }
  }

  private buffer(
    old: GPUBuffer | undefined,
    bytes: number,
    label: string,
    usage = GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST | GPUBufferUsageFlags.COPY_SRC,
  ): GPUBuffer {
    if (old && old.size >= bytes) return old;
    this.ctx.destroyBuffer(old);
    return this.ctx.createBuffer({ size: Math.max(256, 2 ** Math.ceil(Math.log2(bytes))), usage, label });
  }

  private async topkFor(rows: number, n: number, k: number): Promise<TopKPlan> {
    const key = `${rows}x${n}x${k}`;
    let p = this.topk.get(key);
    if (!p) {
      if (this.topk.size >= 4) {
        for (const x of this.topk.values()) x.dispose();
        this.topk.clear();
      }
      p = await planTopK(this.ctx, { rows, n, k });
      this.topk.set(key, p);
    }
    return p;
  }

  /**
   * Attends `q` (`[Tq, Hq, D]` f32: the queries of the newest `Tq` tokens of `seq`) to the
   * sequence as described in the module docs and writes `o` (`[Tq, Hq, Dv]` f32) and optionally
   * `lse` (`[Tq, Hq]`). With `ro.k`/`ro.v` the chunk's keys and values are appended first.
   */
  async run(
    seq: number,
    q: GpuTensor,
    out: { o: GpuTensor; lse?: GpuTensor },
    ro: SparsePrefillRunOptions = {},
  ): Promise<SparsePrefillStats> {
    if (this.disposed) fail('E_STATE', 'plan', 'was disposed;', 'disposed');
    const { cache, ctx } = this;
    const { Tq, Hq, blockSize: B } = this.options;
    const { Hkv, D, Dv, pageSize: P } = cache;
    const group = Hq / Hkv;
    checkTensor(q, 'q', { rank: 3, shape: [Tq, Hq, D], dtypes: ['f32'], device: ctx });
    checkTensor(out?.o, 'o', { rank: 3, shape: [Tq, Hq, Dv], dtypes: ['f32'], device: ctx });
    if (out.lse) checkTensor(out.lse, 'lse', { rank: 2, shape: [Tq, Hq], dtypes: ['f32'], device: ctx });
    for (const [t, name] of [
      [out.o, 'o'],
      [out.lse, 'lse'],
    ] as const) {
      if (t && !(t.buffer.usage & GPUBufferUsageFlags.COPY_DST))
        fail('E_BUFFER', name, 'needs COPY_DST usage (blocks are copied into it);', t.buffer.usage);
    }
    if ((ro.k === undefined) !== (ro.v === undefined))
      fail('E_ARG', ro.k === undefined ? 'k' : 'v', 'is missing; pass both k and v, or neither;', 'undefined');
    const len0 = cache.length(seq);
    if (ro.k !== undefined) {
      if (!ro.k || typeof ro.k.length !== 'number')
        fail('E_ARG', 'k', 'is not an array;', typeof ro.k, '[Tq, Hkv, D] values');
      if (ro.k.length !== Tq * Hkv * D)
        fail('E_SHAPE', 'k', `must hold the chunk's Tq = ${Tq} tokens;`, ro.k.length, `Tq*Hkv*D = ${Tq * Hkv * D}`);
      if (!ro.v || ro.v.length !== Tq * Hkv * Dv)
        fail('E_SHAPE', 'v', `must hold the chunk's Tq = ${Tq} tokens;`, ro.v?.length, `Tq*Hkv*Dv = ${Tq * Hkv * Dv}`);
    } else if (len0 < Tq) {
      fail('E_ARG', 'seq', `holds fewer tokens than the chunk (pass k and v to append it);`, len0, `>= Tq = ${Tq}`);
    }
    const t0 = performance.now();
    if (ro.k !== undefined) cache.append(seq, ro.k, ro.v!);
    const appendMs = performance.now() - t0;
    const len = cache.length(seq);
    const qPos0 = len - Tq;
    const pages = cache.pages(seq);
    const nPages = pages.length;
    const c = Math.floor(qPos0 / P); // context pages: entirely before the chunk
    const nb = Math.ceil(Tq / B);
    const up0 = cache.pagesUploaded;
    const bu0 = cache.bytesUploaded;
    const queue = ctx.device.queue;
    const budget = this.budgetPages;
    const sinks = Math.min(this.options.sinkPages, c, budget);
    const selected: Int32Array[][] = [];
    let summaryBytesRead = 0;
    let pageBytesRead = 0;
    let scoreMs = 0;
    const perHeadBytes = cache.layout.kHeadBytes + cache.layout.vHeadBytes + (cache.dtype === 'int8' ? 8 : 0);
    await ctx.scoped('sparsePrefill', async () => {
      // 0. The queries, padded to whole blocks with copies of the last row (a copy never changes a
      //    block's max), in [block, B, Hq, D] for attention and [block, Hkv, B, group, D] for scoring.
      const rowBytes = Hq * D * 4;
      const enc0 = ctx.device.createCommandEncoder({ label: 'tessera.prefill.q' });
      enc0.copyBufferToBuffer(q.buffer, q.offset ?? 0, this.qAttn, 0, Tq * rowBytes);
      for (let t = Tq; t < nb * B; t++)
        enc0.copyBufferToBuffer(q.buffer, (q.offset ?? 0) + (Tq - 1) * rowBytes, this.qAttn, t * rowBytes, rowBytes);
      if (Hkv > 1 && c > budget && this.options.blockScore === 'rows') {
        const gb = group * D * 4;
        for (let t = 0; t < nb * B; t++) {
          const b = Math.floor(t / B);
          const tl = t - b * B;
          for (let h = 0; h < Hkv; h++)
            enc0.copyBufferToBuffer(
              this.qAttn,
              t * rowBytes + h * gb,
              this.qScore,
              b * B * rowBytes + (h * B + tl) * gb,
              gb,
            );
        }
      }
      queue.submit([enc0.finish()]);
      // 1. Scores and selection, a pass of blocks at a time (scores bounded by scoreBytes).
      const nPad = Math.ceil(Math.max(c, 1) / 64) * 64;
      const perBlock = Hkv * nPad * 4;
      const passBlocks = Math.max(1, Math.min(nb, Math.floor(this.options.scoreBytes / perBlock)));
      const k = Math.max(0, budget - sinks);
      const C = cache.summaryChunkPages;
      const bufs = this.options.mode === 'quest' ? cache.minmaxGpu : cache.meanGpu;
      const sumPerPage = this.options.mode === 'quest' ? cache.minmaxBytesPerPage : cache.meanBytesPerPage;
      let ranges: [number, number][] = [];
      if (c > budget) {
        this.list = this.buffer(this.list, nPad * 4, 'tessera.prefill.pageList');
        const ids = new Uint32Array(nPad).fill(pages[0]!);
        for (let i = 0; i < c; i++) ids[i] = pages[i]!;
        queue.writeBuffer(this.list, 0, ids);
        ranges = Array.from({ length: bufs.length }, () => [nPad, 0] as [number, number]);
        for (let i = 0; i < nPad; i++) {
          const r = ranges[Math.floor(ids[i]! / C)]!;
          if (i < r[0]) r[0] = i;
          if (i + 1 > r[1]) r[1] = i + 1;
        }
      }
      for (let b0 = 0; b0 < nb; b0 += passBlocks) {
        const nbp = Math.min(passBlocks, nb - b0);
        const ts = performance.now();
        if (c <= budget) {
          const all = Int32Array.from({ length: c }, (_, i) => i);
          for (let b = 0; b < nbp; b++) selected.push(Array.from({ length: Hkv }, () => all));
        } else {
          this.scores = this.buffer(
            this.scores,
            passBlocks * perBlock,
            'tessera.prefill.scores',
            GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_SRC,
          );
          let calls = 0;
          let enc = ctx.device.createCommandEncoder({ label: 'tessera.prefill.score' });
          const scorer = this.scorer;
          if (scorer instanceof QuestBlockPlan) {
            // One box for the pass's blocks, then one dispatch per summary chunk over every block.
            let boxed = false;
            for (let ci = 0; ci < bufs.length; ci++) {
              const [lo, hi] = ranges[ci]!;
              if (hi <= lo) continue;
              if (calls >= 15) {
                queue.submit([enc.finish()]);
                enc = ctx.device.createCommandEncoder({ label: 'tessera.prefill.score' });
                calls = 0;
              }
              scorer.run(enc, {
                q: boxed
                  ? undefined
                  : { buffer: this.qAttn, offset: b0 * B * Hq * D * 4, shape: [nbp * B, Hq, D], dtype: 'f32' },
                summaries: bufs[ci]!,
                list: this.list!,
                scores: { buffer: this.scores, shape: [nbp * Hkv, nPad], dtype: 'f32' },
                calls: [{ first: lo, count: hi - lo, chunkFirst: ci * C, chunkPages: C, forcedLo: sinks, forcedHi: c }],
              });
              calls += boxed ? 1 : 2;
              boxed = true;
            }
          } else {
            for (let b = 0; b < nbp; b++) {
              for (let ci = 0; ci < bufs.length; ci++) {
                const [lo, hi] = ranges[ci]!;
                if (hi <= lo) continue;
                if (calls === 16) {
                  queue.submit([enc.finish()]);
                  enc = ctx.device.createCommandEncoder({ label: 'tessera.prefill.score' });
                  calls = 0;
                }
                scorer.run(enc, {
                  q: { buffer: this.qScore, offset: (b0 + b) * B * Hq * D * 4, shape: [B * Hq, D], dtype: 'f32' },
                  summaries: bufs[ci]!,
                  list: this.list!,
                  scores: { buffer: this.scores, offset: b * perBlock, shape: [Hkv, nPad], dtype: 'f32' },
                  calls: [
                    {
                      n: nPad,
                      first: lo,
                      count: hi - lo,
                      chunkFirst: ci * C,
                      chunkPages: C,
                      forcedLo: sinks,
                      forcedHi: c,
                    },
                  ],
                });
                calls++;
              }
            }
          }
          queue.submit([enc.finish()]);
          summaryBytesRead += nbp * c * sumPerPage;
          let got: Int32Array | undefined;
          if (k > 0) {
            const topk = await this.topkFor(nbp * Hkv, nPad, k);
            this.indices = this.buffer(
              this.indices,
              passBlocks * Hkv * k * 4,
              'tessera.prefill.indices',
              GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_SRC,
            );
            const enc2 = ctx.device.createCommandEncoder({ label: 'tessera.prefill.topk' });
            topk.run(enc2, {
              scores: { buffer: this.scores, shape: [nbp * Hkv, nPad], dtype: 'f32' },
              indices: { buffer: this.indices, shape: [nbp * Hkv, k], dtype: 'i32' },
            });
            queue.submit([enc2.finish()]);
            got = new Int32Array(await ctx.readback(this.indices, nbp * Hkv * k * 4));
          }
          for (let b = 0; b < nbp; b++) {
            const perHead: Int32Array[] = [];
            for (let h = 0; h < Hkv; h++) {
              const set = new Set<number>();
              for (let i = 0; i < sinks; i++) set.add(i);
              for (let j = 0; j < k; j++) {
                const x = got![(b * Hkv + h) * k + j]!;
                if (x >= 0 && x < c) set.add(x);
              }
              perHead.push(Int32Array.from([...set].sort((x, y) => x - y)));
            }
            selected.push(perHead);
          }
        }
        scoreMs += performance.now() - ts;
        // 2. Attend each block of the pass: its selection plus the chunk's pages up to its last query.
        for (let b = b0; b < b0 + nbp; b++) this.attendBlock(b, selected[b]!, pages, c, len, qPos0, out);
      }
      for (const sel of selected) for (const s of sel) pageBytesRead += s.length * perHeadBytes;
      for (let b = 0; b < nb; b++) pageBytesRead += (this.ownEnd(b, qPos0, len) - c) * cache.pageBytes;
      await ctx.raceLost(queue.onSubmittedWorkDone());
    });
    return {
      blocks: nb,
      contextPages: c,
      ownPages: nPages - c,
      selected,
      summaryBytesRead,
      pageBytesRead,
      pagesUploaded: cache.pagesUploaded - up0,
      bytesUploaded: cache.bytesUploaded - bu0,
      appendMs,
      scoreMs,
      ms: performance.now() - t0,
    };
  }

  /** One past the last page block `b` reaches. */
  private ownEnd(b: number, qPos0: number, len: number): number {
    const last = Math.min(len - 1, qPos0 + (b + 1) * this.options.blockSize - 1);
    return Math.floor(last / this.cache.pageSize) + 1;
  }

  private attendBlock(
    b: number,
    sel: Int32Array[],
    pages: readonly number[],
    c: number,
    len: number,
    qPos0: number,
    out: { o: GpuTensor; lse?: GpuTensor },
  ): void {
    const { cache, ctx } = this;
    const { Hq, Tq, blockSize: B } = this.options;
    const { Hkv, Dv, pageSize: P } = cache;
    const rows = B * Hq;
    const own0 = c;
    const own1 = this.ownEnd(b, qPos0, len);
    const union = new Set<number>();
    for (const s of sel) for (const i of s) union.add(i);
    for (let i = own0; i < own1; i++) union.add(i);
    const idx = [...union].sort((x, y) => x - y);
    const slots = cache.ensureResident(idx.map((i) => pages[i]!));
    const slotOf = new Map<number, number>();
    idx.forEach((i, j) => slotOf.set(i, slots[j]!));
    const byBuf = new Map<number, number[][]>();
    const add = (i: number, head: number) => {
      const loc = cache.pool.location(slotOf.get(i)!);
      let g = byBuf.get(loc.bufferIndex);
      if (!g) byBuf.set(loc.bufferIndex, (g = []));
      g.push([loc.index, i * P, Math.min(P, len - i * P), head]);
    };
    for (let h = 0; h < Hkv; h++) for (const i of sel[h]!) add(i, h);
    for (let i = own0; i < own1; i++) add(i, ALL_HEADS);
    const words = this.words;
    const enc = ctx.device.createCommandEncoder({ label: 'tessera.prefill.attend' });
    const oPartsT = { buffer: this.oParts, shape: [this.parts, rows, Dv], dtype: 'f32' as const };
    const lsePartsT = { buffer: this.lseParts, shape: [this.parts, rows], dtype: 'f32' as const };
    const qT = { buffer: this.qAttn, offset: b * rows * cache.D * 4, shape: [B, Hq, cache.D], dtype: 'f32' as const };
    const groups = [...byBuf.entries()];
    let e = 0;
    let partBase = 0;
    groups.forEach(([bi, ents], gi) => {
      const listBase = e;
      for (const x of ents) words.set(x, PAGED_ENTRY_WORDS * e++);
      const need = Math.ceil(ents.length / this.ePer);
      const partCount = gi === groups.length - 1 ? this.parts - partBase : need;
      const call: PagedCall = {
        qPos0: qPos0 + b * B,
        listBase,
        nEntries: ents.length,
        ePer: this.ePer,
        partBase,
        partCount,
      };
      this.paged.run(enc, {
        q: qT,
        pages: cache.pool.buffers[bi]!,
        list: this.entries,
        oParts: oPartsT,
        lseParts: lsePartsT,
        calls: [call],
      });
      partBase += need;
    });
    ctx.device.queue.writeBuffer(this.entries, 0, words, 0, e * PAGED_ENTRY_WORDS);
    this.merger.run(enc, {
      oParts: oPartsT,
      lseParts: lsePartsT,
      o: { buffer: this.oTmp, shape: [rows, Dv], dtype: 'f32' },
      lse: { buffer: this.lseTmp, shape: [rows], dtype: 'f32' },
    });
    const valid = Math.min(B, Tq - b * B) * Hq;
    enc.copyBufferToBuffer(this.oTmp, 0, out.o.buffer, (out.o.offset ?? 0) + b * rows * Dv * 4, valid * Dv * 4);
    if (out.lse)
      enc.copyBufferToBuffer(this.lseTmp, 0, out.lse.buffer, (out.lse.offset ?? 0) + b * rows * 4, valid * 4);
    ctx.device.queue.submit([enc.finish()]);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.scorer.dispose();
    this.paged.dispose();
    this.merger.dispose();
    for (const p of this.topk.values()) p.dispose();
    this.topk.clear();
    const bufs = new Set([
      this.qAttn,
      this.qScore,
      this.oParts,
      this.lseParts,
      this.oTmp,
      this.lseTmp,
      this.entries,
      this.list,
      this.scores,
      this.indices,
    ]);
    for (const b of bufs) this.ctx.destroyBuffer(b);
  }
}

/**
 * Plans sparse prefill of `Tq`-query chunks over `cache`.
 *
 * @example
 * const plan = await planSparsePrefill(cache, { Hq: 8, Tq: 4096, budgetTokens: 2048 });
 * const stats = await plan.run(seq, q, { o, lse }, { k, v }); // appends the chunk's K/V, then attends
 * console.log(stats.selected[0][0], stats.pageBytesRead);
 */
export function planSparsePrefill(cache: KvCache, opts: SparsePrefillOptions): Promise<SparsePrefillPlan> {
  return SparsePrefillPlan.create(cache, opts);
}
