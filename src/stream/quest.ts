/**
 * Quest sparse decode over a {@link KvCache}: score every page of a sequence from the GPU summaries
 * (kernels/quest), select the top pages within a token budget (always the sink pages and the newest
 * page), fetch only the selected pages that are not resident, attend them (kernels/paged) and merge
 * the partials exactly (kernels/merge).
 *
 * GQA: a KV head's group of query heads shares one page set, scored by the max over the group of
 * each query head's bound (`groupReduce: 'max'`, default; `sum` is the other choice). The max keeps
 * Quest's guarantee per query head (a page that could matter to any head of the group scores at
 * least that head's bound), and one set per KV head means each page is read once for the group
 * (Quest's per-query-head selection reads the union; NSA's criticism).
 */
import { check, checkInt, fail } from '../errors.js';
import { kernelTarget, type KernelTarget } from '../options.js';
import { observe, type TesseraDevice } from '../gpu/device.js';
import { planLoopLimit } from '../gpu/segments.js';
import { exclusiveRuns } from '../exclusive.js';
import { checkTensor, type GpuTensor } from '../tensor.js';
import type { KvCache } from '../kv/cache.js';
import { planMerge, type MergePlan } from '../../kernels/merge/merge.js';
import { PAGED_ENTRY_WORDS, planPaged, type PagedCall, type PagedPlan } from '../../kernels/paged/paged.js';
import {
  planQuestScore,
  type GroupReduce,
  type QuestScoreCall,
  type QuestScoreMode,
  type QuestScorePlan,
} from '../../kernels/quest/score.js';
import { questSelectReference } from '../../kernels/quest/reference.js';
import { planTopK, type TopKPlan } from '../../kernels/topk/topk.js';
import { TwoLevelSelector, type LevelSelectOptions, type LevelStats } from './quest-levels.js';
import { GPUBufferUsageFlags } from '../gpu/flags.js';

export interface QuestDecodeOptions {
  /** Query heads (a multiple of the cache's Hkv). */
  Hq: number;
  /** Tokens attended per KV head, sink and newest pages included (default 2048). */
  budgetTokens?: number;
  /** `quest` (min/max bound, default) or `mean` (MoBA-style mean-key gate). */
  mode?: QuestScoreMode;
  /** How a group's query heads share one selection (default `max`). */
  groupReduce?: GroupReduce;
  /** First pages always selected (default: the cache's `sinkPages`). */
  sinkPages?: number;
  /** Softmax scale (default 1/sqrt(D)). */
  scale?: number;
  /**
   * Where the top-k runs: `gpu` (default: kernels/topk over the `[Hkv, pages]` scores, only the
   * `[Hkv, k]` indices come back) or `host` (the scores come back and the float64 reference rule
   * selects; for checking).
   */
  selector?: 'gpu' | 'host';
  /** Paged kernel shape (`kernels/paged`): `auto` (default, by adapter class), `cpu` or `gpu`. */
  target?: KernelTarget;
  /** @deprecated Use `target` (same values): the kernel shape's old name in this family. */
  variant?: 'auto' | 'cpu' | 'gpu';
  /** Two-level summaries (a cache with `summaryLevels: 2`): see src/stream/quest-levels.ts. */
  levels?: LevelSelectOptions;
  /**
   * Size the scoring, the parts, the merge and the top-k for this loop cap (lower than the cache's
   * only; an integer >= 256): tests run the split paths llvmpipe needs on any adapter with it.
   * Default: the cache's (`cache.ctx.loopLimit`); `plan.options.loopLimit` is the cap in use.
   */
  loopLimit?: number;
}

export interface QuestStats {
  /** Pages in the sequence. */
  pages: number;
  /** Selected page indices (within the sequence) per KV head, ascending. */
  selected: Int32Array[];
  /** Summary bytes the scoring pass read. */
  summaryBytesRead: number;
  /** KV bytes of the selected pages the attention read (per KV head, K and V of that head). */
  pageBytesRead: number;
  /** summaryBytesRead + pageBytesRead. */
  kvBytesRead: number;
  pagesUploaded: number;
  bytesUploaded: number;
  scoreMs: number;
  attendMs: number;
  ms: number;
  /** Two-level selection details (a cache with `summaryLevels: 2`). */
  levels?: LevelStats;
}

/**
 * Quest sparse decode over a chunked KV cache.
 * Planned once by `planQuestDecode`; each `run` decodes one step of a sequence and resolves with
 * its statistics; `dispose()` frees what the plan holds.
 *
 * @example
 * const plan = await planQuestDecode(cache, { Hq: 8, budgetTokens: 2048 });
 * const stats = await plan.run(seq, q, { o, lse });
 * plan.dispose();
 */
export class QuestDecodePlan {
  readonly cache: KvCache;
  readonly ctx: TesseraDevice;
  readonly options: Required<Omit<QuestDecodeOptions, 'variant'>>;
  readonly budgetPages: number;
  readonly parts: number;
  private readonly scorer: QuestScorePlan;
  private readonly paged: PagedPlan;
  private readonly merger: MergePlan;
  private readonly oParts: GPUBuffer;
  private readonly lseParts: GPUBuffer;
  private readonly entries: GPUBuffer;
  private list?: GPUBuffer;
  private listFor = { seq: -1, count: 0 };
  private scores?: GPUBuffer;
  private disposed = false;
  private levels?: TwoLevelSelector;

  private constructor(
    cache: KvCache,
    o: Required<Omit<QuestDecodeOptions, 'variant'>>,
    scorer: QuestScorePlan,
    paged: PagedPlan,
    merger: MergePlan,
    parts: number,
  ) {
    this.cache = cache;
    this.ctx = cache.ctx;
    this.options = o;
    this.budgetPages = Math.max(1, Math.floor(o.budgetTokens / cache.pageSize));
    this.scorer = scorer;
    this.paged = paged;
    this.merger = merger;
    this.parts = parts;
    const usage = GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST | GPUBufferUsageFlags.COPY_SRC;
    this.oParts = this.ctx.createBuffer({ size: parts * o.Hq * cache.Dv * 4, usage, label: 'tessera.quest.oParts' });
    this.lseParts = this.ctx.createBuffer({ size: parts * o.Hq * 4, usage, label: 'tessera.quest.lseParts' });
    this.entries = this.ctx.createBuffer({
      size: this.budgetPages * cache.Hkv * PAGED_ENTRY_WORDS * 4,
      usage,
      label: 'tessera.quest.entries',
    });
    // One run at a time: partials, entry list, page list and scores are this plan's (E_STATE otherwise).
    exclusiveRuns(this, 'QuestDecodePlan', ['run']);
    if (cache.tiers) this.levels = new TwoLevelSelector(cache, scorer, o.levels);
  }

  /** @internal use {@link planQuestDecode}. */
  static async create(cache: KvCache, opts: QuestDecodeOptions): Promise<QuestDecodePlan> {
    if (!cache || typeof cache.ensureResident !== 'function') fail('E_ARG', 'cache', 'is not a KvCache;', typeof cache);
    const Hq = checkInt(opts?.Hq, 'Hq', { min: 1 });
    check(Hq % cache.Hkv === 0, 'Hq', `a multiple of the cache's Hkv = ${cache.Hkv}`, Hq, 'E_SHAPE');
    const budgetTokens = checkInt(opts.budgetTokens ?? 2048, 'budgetTokens', { min: cache.pageSize });
    const mode = opts.mode ?? 'quest';
    if (mode === 'mean' && !cache.meanSummaries)
      fail(
        'E_UNSUPPORTED',
        'mode',
        'needs a cache with meanSummaries;',
        mode,
        '"quest", or a cache created with meanSummaries: true',
      );
    const o: Required<Omit<QuestDecodeOptions, 'variant'>> = {
      Hq,
      budgetTokens,
      mode,
      groupReduce: opts.groupReduce ?? 'max',
      sinkPages: checkInt(opts.sinkPages ?? cache.sinkPages, 'sinkPages', { min: 0 }),
      scale: opts.scale ?? 1 / Math.sqrt(cache.D),
      selector: opts.selector ?? 'gpu',
      target: kernelTarget(opts),
      levels: opts.levels ?? {},
      loopLimit: planLoopLimit(cache.ctx, opts.loopLimit),
    };
    if (cache.tiers && mode !== 'quest')
      fail(
        'E_UNSUPPORTED',
        'mode',
        'needs single-level summaries (two-level summaries keep only min/max);',
        mode,
        '"quest", or a cache with summaryLevels: 1',
      );
    check(o.selector === 'host' || o.selector === 'gpu', 'selector', '"gpu" or "host"', o.selector);
    const budgetPages = Math.max(1, Math.floor(budgetTokens / cache.pageSize));
    const maxBuffers = Math.max(1, Math.floor(cache.gpuBudgetBytes / cache.pool.bufferBytes));
    if (budgetPages > Math.floor((cache.gpuBudgetBytes - cache.summaryBytes) / cache.pageBytes)) {
      fail(
        'E_LIMIT',
        'budgetTokens',
        'selects more pages than the GPU working set holds;',
        budgetTokens,
        'a smaller budget or a larger gpuBudgetBytes',
      );
    }
    const groups = Math.min(maxBuffers, budgetPages * cache.Hkv);
    const parts = budgetPages * cache.Hkv + groups;
    const scorer = await planQuestScore(cache.ctx, {
      Hq,
      Hkv: cache.Hkv,
      D: cache.D,
      mode,
      groupReduce: o.groupReduce,
      maxCalls: 16,
      loopLimit: opts.loopLimit,
    });
    const paged = await planPaged(cache.ctx, {
      Hq,
      Hkv: cache.Hkv,
      D: cache.D,
      Dv: cache.Dv,
      Tq: 1,
      pageSize: cache.pageSize,
      dtype: cache.dtype,
      causal: true,
      scale: o.scale,
      maxCalls: groups,
      target: o.target,
      loopLimit: opts.loopLimit,
    });
    const merger = await planMerge(cache.ctx, {
      parts,
      rows: Hq,
      D: cache.Dv,
      outDtype: 'f32',
      loopLimit: opts.loopLimit,
    });
    if (o.selector === 'gpu' && !cache.tiers) {
      // Compile the multi-workgroup top-k pipelines now, so that the first decode does not pay for it
      // (the per-length plan made at run time then comes from the pipeline cache).
      const k = Math.max(1, budgetPages - Math.min(o.sinkPages, budgetPages) - 1);
      (await planTopK(cache.ctx, { rows: cache.Hkv, n: 65536, k, loopLimit: opts.loopLimit })).dispose();
    }
    return new QuestDecodePlan(cache, o, scorer, paged, merger, parts);
  }

  private ensureList(seq: number, pages: readonly number[]): GPUBuffer {
    const n = pages.length;
    const usage = GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST;
    if (!this.list || this.list.size < n * 4) {
      this.ctx.destroyBuffer(this.list);
      this.list = this.ctx.createBuffer({
        size: Math.max(256, 2 ** Math.ceil(Math.log2(n * 4))),
        usage,
        label: 'tessera.quest.pageList',
      });
      this.listFor = { seq: -1, count: 0 };
    }
    const from = this.listFor.seq === seq ? this.listFor.count : 0;
    if (n > from) this.ctx.device.queue.writeBuffer(this.list, from * 4, Uint32Array.from(pages.slice(from, n)));
    this.listFor = { seq, count: n };
    return this.list;
  }

  private ensureScores(bytes: number): GPUBuffer {
    if (!this.scores || this.scores.size < bytes) {
      this.ctx.destroyBuffer(this.scores);
      this.scores = this.ctx.createBuffer({
        size: Math.max(256, 2 ** Math.ceil(Math.log2(bytes))),
        usage: GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_SRC,
        label: 'tessera.quest.scores',
      });
    }
    return this.scores;
  }

  /**
   * Sparse decode of `q` (`[1, Hq, D]` f32, the query after the sequence's last token) against
   * sequence `seq`; writes `o` (`[1, Hq, Dv]` f32) and optionally `lse` (`[1, Hq]`).
   */
  async run(seq: number, q: GpuTensor, out: { o: GpuTensor; lse?: GpuTensor }): Promise<QuestStats> {
    if (this.disposed) fail('E_STATE', 'plan', 'was disposed;', 'disposed');
    const { cache, ctx } = this;
    const { Hq } = this.options;
    // The newest page always counts; sink pages fill at most the rest of the budget.
    const sinkPages = Math.min(this.options.sinkPages, this.budgetPages - 1);
    const { Hkv, D, Dv, pageSize: P } = cache;
    checkTensor(q, 'q', { rank: 3, shape: [1, Hq, D], dtypes: ['f32'], device: ctx });
    checkTensor(out?.o, 'o', { rank: 3, shape: [1, Hq, Dv], dtypes: ['f32'], device: ctx });
    if (out.lse) checkTensor(out.lse, 'lse', { rank: 2, shape: [1, Hq], dtypes: ['f32'], device: ctx });
    const len = cache.length(seq);
    const pages = cache.pages(seq);
    const n = pages.length;
    const t0 = performance.now();
    const up0 = cache.pagesUploaded;
    const bu0 = cache.bytesUploaded;
    const queue = ctx.device.queue;
    let selected: Int32Array[];
    let summaryBytesRead = 0;
    let scoreMs = 0;
    let levelStats: LevelStats | undefined;
    // Every submit is encoded in one synchronous error-scope section (no scope is held across an
    // await, so concurrent calls keep their own errors); the sections' checks are observed at once.
    const checks: Promise<void>[] = [];
    const section = (fn: () => void) => checks.push(observe(ctx.section('questDecode', fn).errors));
    {
      if (n <= this.budgetPages) {
        selected = Array.from({ length: Hkv }, () => Int32Array.from({ length: n }, (_, i) => i));
      } else if (this.levels) {
        // Two-level summaries: super-pages first, then the pages of the best ones.
        const forcedLo = Math.min(sinkPages, n);
        const k = Math.max(0, this.budgetPages - forcedLo - (n - 1 >= forcedLo ? 1 : 0));
        const r = await this.levels.select(seq, q, k, forcedLo);
        levelStats = r.stats;
        summaryBytesRead = r.stats.summaryBytesRead;
        selected = r.top.map((t) => {
          const set = new Set<number>(t);
          for (let i = 0; i < forcedLo; i++) set.add(i);
          set.add(n - 1);
          return Int32Array.from([...set].sort((a, b) => a - b));
        });
        scoreMs = performance.now() - t0;
      } else {
        // 1. Scores from the summaries, one dispatch per summary chunk.
        const list = this.ensureList(seq, pages);
        const scores = this.ensureScores(Hkv * n * 4);
        const C = cache.summaryChunkPages;
        const bufs = this.options.mode === 'quest' ? cache.minmaxGpu : cache.meanGpu;
        const calls: QuestScoreCall[] = [];
        const ranges = this.chunkRanges(seq, pages, C, bufs.length);
        for (let c = 0; c < bufs.length; c++) {
          const [lo, hi] = ranges[c]!;
          calls.push({
            n,
            first: lo,
            count: Math.max(0, hi - lo),
            chunkFirst: c * C,
            chunkPages: C,
            forcedLo: Math.min(sinkPages, n),
            forcedHi: n - 1,
          });
        }
        for (let i = 0; i < calls.length; i += 16) {
          // One dispatch per chunk; chunks are few (128 MiB of summaries each). The scorer's uniform
          // ring holds 16 calls: one submit per 16, so no slot is rewritten before its dispatch ran.
          section(() => {
            const enc = ctx.device.createCommandEncoder({ label: 'tessera.quest.score' });
            for (const [j, call] of calls.slice(i, i + 16).entries()) {
              this.scorer.run(enc, {
                q: { buffer: q.buffer, offset: q.offset, shape: [Hq, D], dtype: 'f32' },
                summaries: bufs[i + j]!,
                list,
                scores: { buffer: scores, shape: [Hkv, n], dtype: 'f32' },
                calls: [call],
              });
            }
            queue.submit([enc.finish()]);
          });
        }
        summaryBytesRead = n * (this.options.mode === 'quest' ? cache.minmaxBytesPerPage : cache.meanBytesPerPage);
        // 2. Selection: the forced pages plus the top k of the others.
        const forcedLo = Math.min(sinkPages, n);
        const k = Math.max(0, this.budgetPages - forcedLo - (n - 1 >= forcedLo ? 1 : 0));
        if (this.options.selector === 'host' || k === 0) {
          const s = new Float32Array(await ctx.readback(scores, Hkv * n * 4));
          selected = questSelectReference(s, Hkv, n, this.budgetPages, sinkPages);
        } else {
          const topk = await this.topkFor(n, k);
          const idx = this.ensureIndices(Hkv * k * 4);
          section(() => {
            const enc2 = ctx.device.createCommandEncoder({ label: 'tessera.quest.topk' });
            topk.run(enc2, {
              scores: { buffer: scores, shape: [Hkv, n], dtype: 'f32' },
              indices: { buffer: idx, shape: [Hkv, k], dtype: 'i32' },
            });
            queue.submit([enc2.finish()]);
          });
          const got = new Int32Array(await ctx.readback(idx, Hkv * k * 4));
          selected = [];
          for (let h = 0; h < Hkv; h++) {
            const set = new Set<number>();
            for (let i = 0; i < forcedLo; i++) set.add(i);
            set.add(n - 1);
            for (let j = 0; j < k; j++) {
              const x = got[h * k + j]!;
              if (x >= 0) set.add(x);
            }
            selected.push(Int32Array.from([...set].sort((a, b) => a - b)));
          }
        }
        scoreMs = performance.now() - t0;
      }
      // 3. Fetch the selected pages that are not resident; 4. attend them (one section).
      section(() => {
        const union = [...new Set(selected!.flatMap((x) => [...x]))].sort((a, b) => a - b);
        const slotsU = cache.ensureResident(union.map((i) => pages[i]!));
        const slotOf = new Map<number, number>();
        union.forEach((i, j) => slotOf.set(i, slotsU[j]!));
        // 4. Entries per (KV head, page), grouped by pool buffer; one part per entry.
        const byBuf = new Map<number, number[][]>();
        for (let h = 0; h < Hkv; h++) {
          for (const i of selected![h]!) {
            const loc = cache.pool.location(slotOf.get(i)!);
            let g = byBuf.get(loc.bufferIndex);
            if (!g) byBuf.set(loc.bufferIndex, (g = []));
            g.push([loc.index, i * P, Math.min(P, len - i * P), h]);
          }
        }
        const words = new Uint32Array(this.budgetPages * Hkv * PAGED_ENTRY_WORDS);
        const enc = ctx.device.createCommandEncoder({ label: 'tessera.quest.attend' });
        const groups = [...byBuf.entries()];
        let e = 0;
        let partBase = 0;
        const oPartsT = { buffer: this.oParts, shape: [this.parts, Hq, Dv], dtype: 'f32' as const };
        const lsePartsT = { buffer: this.lseParts, shape: [this.parts, Hq], dtype: 'f32' as const };
        groups.forEach(([bi, ents], gi) => {
          const listBase = e;
          for (const x of ents) words.set(x, 4 * e++);
          const partCount = gi === groups.length - 1 ? this.parts - partBase : ents.length;
          const call: PagedCall = {
            qPos0: Math.max(0, len - 1),
            listBase,
            nEntries: ents.length,
            ePer: 1,
            partBase,
            partCount,
          };
          this.paged.run(enc, {
            q: { buffer: q.buffer, offset: q.offset, shape: [1, Hq, D], dtype: 'f32' },
            pages: cache.pool.buffers[bi]!,
            list: this.entries,
            oParts: oPartsT,
            lseParts: lsePartsT,
            calls: [call],
          });
          partBase += ents.length;
        });
        if (groups.length === 0) queue.writeBuffer(this.lseParts, 0, new Float32Array(this.parts * Hq).fill(-Infinity));
        queue.writeBuffer(this.entries, 0, words, 0, e * PAGED_ENTRY_WORDS);
        const lse = out.lse ?? { buffer: this.ensureScratchLse(), shape: [1, Hq], dtype: 'f32' as const };
        this.merger.run(enc, {
          oParts: oPartsT,
          lseParts: lsePartsT,
          o: { buffer: out.o.buffer, offset: out.o.offset, shape: [Hq, Dv], dtype: 'f32' },
          lse: { buffer: lse.buffer, offset: lse.offset, shape: [Hq], dtype: 'f32' },
        });
        queue.submit([enc.finish()]);
      });
      await Promise.all([...checks, ctx.raceLost(queue.onSubmittedWorkDone())]);
    }
    const perHead =
      cache.layout.kHeadBytes + cache.layout.vHeadBytes + (cache.dtype === 'int8' ? 8 * cache.pageSize : 0);
    let pageBytesRead = 0;
    for (const x of selected!) pageBytesRead += x.length * perHead;
    const ms = performance.now() - t0;
    return {
      pages: n,
      selected: selected!,
      summaryBytesRead,
      pageBytesRead,
      kvBytesRead: summaryBytesRead + pageBytesRead,
      pagesUploaded: cache.pagesUploaded - up0,
      bytesUploaded: cache.bytesUploaded - bu0,
      scoreMs,
      attendMs: ms - scoreMs,
      ms,
      levels: levelStats,
    };
  }

  private ranges = { seq: -1, n: 0, r: [] as [number, number][] };
  /** Per summary chunk, the range of list indices whose pages live in it (cached per sequence length). */
  private chunkRanges(seq: number, pages: readonly number[], C: number, chunks: number): [number, number][] {
    const n = pages.length;
    if (this.ranges.seq === seq && this.ranges.n === n && this.ranges.r.length === chunks) return this.ranges.r;
    const r: [number, number][] = Array.from({ length: chunks }, () => [n, 0] as [number, number]);
    for (let i = 0; i < n; i++) {
      const c = Math.floor(pages[i]! / C);
      const x = r[c]!;
      if (i < x[0]) x[0] = i;
      if (i + 1 > x[1]) x[1] = i + 1;
    }
    this.ranges = { seq, n, r };
    return r;
  }

  private topkPlan?: { n: number; k: number; plan: TopKPlan };
  private async topkFor(n: number, k: number): Promise<TopKPlan> {
    if (this.topkPlan && this.topkPlan.n === n && this.topkPlan.k === k) return this.topkPlan.plan;
    this.topkPlan?.plan.dispose();
    const limit = this.options.loopLimit;
    const plan = await planTopK(this.ctx, {
      rows: this.cache.Hkv,
      n,
      k,
      loopLimit: Number.isFinite(limit) ? limit : undefined,
    });
    this.topkPlan = { n, k, plan };
    return plan;
  }

  private indices?: GPUBuffer;
  private ensureIndices(bytes: number): GPUBuffer {
    if (!this.indices || this.indices.size < bytes) {
      this.ctx.destroyBuffer(this.indices);
      this.indices = this.ctx.createBuffer({
        size: Math.max(256, bytes),
        usage: GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_SRC,
        label: 'tessera.quest.indices',
      });
    }
    return this.indices;
  }

  private scratchLse?: GPUBuffer;
  private ensureScratchLse(): GPUBuffer {
    if (!this.scratchLse)
      this.scratchLse = this.ctx.createBuffer({
        size: Math.max(16, this.options.Hq * 4),
        usage: GPUBufferUsageFlags.STORAGE,
        label: 'tessera.quest.lse',
      });
    return this.scratchLse;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.scorer.dispose();
    this.paged.dispose();
    this.merger.dispose();
    this.topkPlan?.plan.dispose();
    this.levels?.dispose();
    for (const b of [this.oParts, this.lseParts, this.entries, this.list, this.scores, this.scratchLse, this.indices])
      this.ctx.destroyBuffer(b);
  }
}

/**
 * Plans Quest sparse decode over `cache`.
 *
 * @example
 * const plan = await planQuestDecode(cache, { Hq: 8, budgetTokens: 2048 });
 * const stats = await plan.run(seq, q, { o, lse }); // q [1, 8, D] f32
 * console.log(stats.selected[0], stats.kvBytesRead);
 */
export function planQuestDecode(cache: KvCache, opts: QuestDecodeOptions): Promise<QuestDecodePlan> {
  return QuestDecodePlan.create(cache, opts);
}
