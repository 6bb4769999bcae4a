/**
 * Shared-prefix (cascade) decode: several sequences of one {@link KvCache} that share their first
 * pages (forks of one context) decode one token each. The shared pages are attended once for all
 * their queries together: the n sequences' queries are the n query rows of one paged pass (like
 * GQA with the sequences as extra query heads; no causal mask, every shared key precedes every
 * query). Each sequence's private suffix is attended separately, and the two `(o, lse)` partials of
 * each sequence merge exactly (kernels/merge). The shared bytes are read (uploaded, checksummed and
 * attended) once per step instead of once per sequence.
 *
 * Sparse (Quest) cascade: `select` picks the shared pages to attend per KV head from the host
 * mirror of the min/max summaries, once for all the sequences (the max of every sequence's and
 * every group head's Quest bound), so the shared selection is read once too; the private suffix is
 * attended densely. `selectionRecall` measures how much of each sequence's own Quest selection the
 * shared one covers.
 */
import { check, checkInt, fail } from '../errors.js';
import { kernelTarget, resolveTarget, type KernelTarget } from '../options.js';
import type { TesseraDevice } from '../gpu/device.js';
import { checkTensor, type GpuTensor } from '../tensor.js';
import type { KvCache } from '../kv/cache.js';
import { planMerge, type MergePlan } from '../../kernels/merge/merge.js';
import { ALL_HEADS, PAGED_ENTRY_WORDS, planPaged, type PagedCall, type PagedPlan } from '../../kernels/paged/paged.js';
import { ATTENTION_ROWS, attentionPackRows, attentionRowsCap } from '../../kernels/attention/attention.js';
import { GPUBufferUsageFlags } from '../gpu/flags.js';

export interface CascadeOptions {
  /** Query heads (a multiple of the cache's Hkv). */
  Hq: number;
  /** Sequences decoded together (the rows of the shared pass). */
  seqs: number;
  /** Softmax scale (default 1/sqrt(D)). */
  scale?: number;
  /** Pages per tile (default: the cache's `tilePages`). */
  tilePages?: number;
  /** Bound on the partials workspace of a one-sequence pass in bytes (default 8 MiB; the shared pass gets this times min(seqs, 16)). */
  partialBytes?: number;
  /** Tiles in flight before the host waits (default 2). */
  inflight?: number;
  /**
   * Kernel shape of the passes (the attention core through kernels/paged; the shared pass has the
   * sequences' queries as its rows): `auto` (default), `cpu` or `gpu`.
   */
  target?: KernelTarget;
  /** @deprecated Use `target` (same values): the kernel shape's old name in this family. */
  variant?: 'auto' | 'cpu' | 'gpu';
  /**
   * Most query rows packed per invocation (cpu) or workgroup (gpu), sharing each K/V load (1, 2,
   * 4 or 8; default 8, and on loop-capped adapters such as llvmpipe, whose compiler takes
   * minutes over large packs, `attentionRowsCap`: 4 for D = 64). The shared pass packs the rows of all sequences (every query sees
   * every shared key), so its K/V are loaded once per pack of `rows` rows instead of once per row;
   * the private passes pack the G = Hq / Hkv query heads of their one query.
   */
  rows?: number;
}

export interface CascadeRunOptions {
  /**
   * Shared pages to attend (page indices within the shared prefix) per KV head, for sparse decode
   * (from {@link questSharedSelection}); default: every shared page for every head (dense).
   */
  sharedSelection?: readonly Int32Array[];
  /** Attend this many leading pages as shared (default: the longest common prefix of full pages). */
  sharedPages?: number;
}

export interface CascadeStats {
  /** Pages in the shared prefix. */
  sharedPages: number;
  /** Shared page entries attended (pages x heads / Hkv when sparse). */
  sharedEntries: number;
  /** Private pages attended, all sequences together. */
  privatePages: number;
  /** KV bytes the step read: each shared page once, plus every private page. */
  kvBytesRead: number;
  pagesUploaded: number;
  bytesUploaded: number;
  tiles: number;
  ms: number;
}

/** One list entry: a page of the cache, its first token position, tokens in it, KV head (or all). */
interface Entry {
  page: number;
  start: number;
  len: number;
  head: number;
}

/**
 * Streams list entries through the cache's GPU working set tile by tile, accumulating the `(o, lse)`
 * of `rows` query rows into part 0 of its partials (the exact tile loop of `exact.ts`, over any page
 * list).
 */
class PageStreamer {
  readonly oParts: GPUBuffer;
  readonly lseParts: GPUBuffer;
  private readonly oTmp: GPUBuffer;
  private readonly lseTmp: GPUBuffer;
  private readonly list: GPUBuffer;
  private readonly listWords: Uint32Array<ArrayBuffer>;
  private readonly negInf: Float32Array<ArrayBuffer>;
  private readonly zeros: Float32Array<ArrayBuffer>;

  constructor(
    readonly cache: KvCache,
    readonly paged: PagedPlan,
    readonly merger: MergePlan,
    readonly rows: number,
    readonly parts: number,
    readonly ePer: number,
    readonly tilePages: number,
  ) {
    const ctx = cache.ctx;
    const usage = GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST | GPUBufferUsageFlags.COPY_SRC;
    const Dv = cache.Dv;
    this.oParts = ctx.createBuffer({ size: (parts + 1) * rows * Dv * 4, usage, label: 'tessera.cascade.oParts' });
    this.lseParts = ctx.createBuffer({ size: (parts + 1) * rows * 4, usage, label: 'tessera.cascade.lseParts' });
    this.oTmp = ctx.createBuffer({ size: rows * Dv * 4, usage, label: 'tessera.cascade.o' });
    this.lseTmp = ctx.createBuffer({ size: rows * 4, usage, label: 'tessera.cascade.lse' });
    this.list = ctx.createBuffer({ size: tilePages * PAGED_ENTRY_WORDS * 4, usage, label: 'tessera.cascade.list' });
    this.listWords = new Uint32Array(tilePages * PAGED_ENTRY_WORDS);
    this.negInf = new Float32Array(rows).fill(-Infinity);
    this.zeros = new Float32Array(rows * Dv);
  }

  static async create(cache: KvCache, o: Required<Omit<CascadeOptions, 'variant'>>, Tq: number): Promise<PageStreamer> {
    const rows = Tq * o.Hq;
    const perPart = rows * (cache.Dv + 1) * 4;
    // The shared pass gets the per-row budget of a single sequence's pass times its rows (up to
    // 16 sequences), so it splits tiles into the same parts as one sequence would: the same
    // partial sums, merged the same way.
    const partialBytes = o.partialBytes * Math.min(Tq, 16);
    const groups = Math.min(o.tilePages, Math.max(1, Math.floor(cache.gpuBudgetBytes / cache.pool.bufferBytes)));
    // Packed rows: every row of this pass sees the same keys of its KV head (no causal mask).
    const target = resolveTarget(cache.ctx, o.target);
    const packRows = attentionPackRows(
      target,
      Tq * (o.Hq / cache.Hkv),
      cache.D,
      o.rows,
      cache.ctx.limits.maxComputeWorkgroupStorageSize,
    );
    const po = {
      Hq: o.Hq,
      Hkv: cache.Hkv,
      D: cache.D,
      Dv: cache.Dv,
      Tq,
      pageSize: cache.pageSize,
      dtype: cache.dtype,
      causal: false,
      scale: o.scale,
      maxCalls: groups,
      target,
      rows: packRows,
    };
    const paged = await planPaged(cache.ctx, po);
    try {
      const maxParts = Math.max(1, Math.floor(partialBytes / perPart) - groups - 1);
      const tilePages = Math.min(o.tilePages, maxParts * paged.maxEntriesPerPart);
      const ePer = Math.max(1, Math.ceil(tilePages / maxParts));
      const parts = Math.ceil(tilePages / ePer) + groups;
      const merger = await planMerge(cache.ctx, { parts: parts + 1, rows, D: cache.Dv, outDtype: 'f32' });
      return new PageStreamer(cache, paged, merger, rows, parts, ePer, tilePages);
    } catch (e) {
      paged.dispose();
      throw e;
    }
  }

  /** Part 0 = empty (o = 0, lse = -inf). */
  reset(): void {
    const q = this.cache.ctx.device.queue;
    q.writeBuffer(this.lseParts, 0, this.negInf);
    q.writeBuffer(this.oParts, 0, this.zeros);
  }

  /**
   * Attends `entries` with queries `q` (`[Tq, Hq, D]`), accumulating into part 0. `before(enc)` is
   * encoded ahead of the first tile (a query copy). Returns the tiles submitted.
   */
  async stream(
    entries: readonly Entry[],
    q: GPUBuffer,
    pending: Promise<unknown>[],
    inflight: number,
    before?: (enc: GPUCommandEncoder) => void,
  ): Promise<number> {
    const { cache, rows, listWords } = this;
    const ctx = cache.ctx;
    const queue = ctx.device.queue;
    const Dv = cache.Dv;
    const o = this.paged.options;
    const qT = { buffer: q, shape: [o.Tq, o.Hq, cache.D], dtype: 'f32' as const };
    const oPartsT = { buffer: this.oParts, shape: [this.parts + 1, rows, Dv], dtype: 'f32' as const };
    const lsePartsT = { buffer: this.lseParts, shape: [this.parts + 1, rows], dtype: 'f32' as const };
    let tiles = 0;
    if (entries.length === 0 && before) {
      const enc = ctx.device.createCommandEncoder({ label: 'tessera.cascade.before' });
      before(enc);
      queue.submit([enc.finish()]);
    }
    for (let a = 0; a < entries.length;) {
      // A tile: up to tilePages entries (a page's entries for several heads are adjacent; a page
      // split across two tiles is still resident for the second).
      const pageIds: number[] = [];
      let b = a;
      while (b < entries.length && b - a < this.tilePages) {
        const p = entries[b]!.page;
        if (pageIds.length === 0 || pageIds[pageIds.length - 1] !== p) {
          if (pageIds.length === this.tilePages) break;
          pageIds.push(p);
        }
        b++;
      }
      const slots = cache.ensureResident(pageIds);
      const slotOf = new Map<number, number>();
      pageIds.forEach((p, i) => slotOf.set(p, slots[i]!));
      const byBuf = new Map<number, Entry[]>();
      for (let i = a; i < b; i++) {
        const e = entries[i]!;
        const bi = cache.pool.location(slotOf.get(e.page)!).bufferIndex;
        let g = byBuf.get(bi);
        if (!g) byBuf.set(bi, (g = []));
        g.push(e);
      }
      const enc = ctx.device.createCommandEncoder({ label: 'tessera.cascade.tile' });
      if (a === 0) before?.(enc);
      let w = 0;
      let partBase = 1;
      const groups = [...byBuf.entries()];
      groups.forEach(([bi, list], gi) => {
        const listBase = w;
        for (const e of list) {
          const x = w * PAGED_ENTRY_WORDS;
          listWords[x] = cache.pool.location(slotOf.get(e.page)!).index;
          listWords[x + 1] = e.start;
          listWords[x + 2] = e.len;
          listWords[x + 3] = e.head;
          w++;
        }
        const need = Math.ceil(list.length / this.ePer);
        const partCount = gi === groups.length - 1 ? this.parts + 1 - partBase : need;
        const call: PagedCall = { qPos0: 0, listBase, nEntries: list.length, ePer: this.ePer, partBase, partCount };
        this.paged.run(enc, {
          q: qT,
          pages: cache.pool.buffers[bi]!,
          list: this.list,
          oParts: oPartsT,
          lseParts: lsePartsT,
          calls: [call],
        });
        partBase += need;
      });
      queue.writeBuffer(this.list, 0, listWords, 0, w * PAGED_ENTRY_WORDS);
      this.merger.run(enc, {
        oParts: oPartsT,
        lseParts: lsePartsT,
        o: { buffer: this.oTmp, shape: [rows, Dv], dtype: 'f32' },
        lse: { buffer: this.lseTmp, shape: [rows], dtype: 'f32' },
      });
      enc.copyBufferToBuffer(this.oTmp, 0, this.oParts, 0, rows * Dv * 4);
      enc.copyBufferToBuffer(this.lseTmp, 0, this.lseParts, 0, rows * 4);
      queue.submit([enc.finish()]);
      tiles++;
      pending.push(ctx.raceLost(queue.onSubmittedWorkDone()));
      if (pending.length >= inflight) await pending.shift();
      a = b;
    }
    return tiles;
  }

  dispose(): void {
    this.paged.dispose();
    this.merger.dispose();
    for (const b of [this.oParts, this.lseParts, this.oTmp, this.lseTmp, this.list]) this.cache.ctx.destroyBuffer(b);
  }
}

/** Longest common prefix of full pages of `seqs` (page ids equal at the same index in every one). */
export function sharedPrefixPages(cache: KvCache, seqs: readonly number[]): number {
  if (seqs.length === 0) return 0;
  const P = cache.pageSize;
  const lists = seqs.map((s) => cache.pages(s));
  let n = Math.min(...seqs.map((s) => Math.floor(cache.length(s) / P)));
  for (let i = 0; i < n; i++) {
    const p = lists[0]![i];
    if (lists.some((l) => l[i] !== p)) {
      n = i;
      break;
    }
  }
  return n;
}

/** A plan for shared-prefix decode of `seqs` sequences of one cache. */
export class CascadeDecodePlan {
  readonly cache: KvCache;
  readonly ctx: TesseraDevice;
  readonly options: Required<Omit<CascadeOptions, 'variant'>>;
  private readonly shared: PageStreamer;
  private readonly priv: PageStreamer;
  private readonly final: MergePlan;
  private readonly qPriv: GPUBuffer;
  /** `[2, n * Hq, Dv]` / `[2, n * Hq]`: part 0 the shared partial, part 1 the private ones. */
  private readonly oFinal: GPUBuffer;
  private readonly lseFinal: GPUBuffer;
  private disposed = false;

  private constructor(
    cache: KvCache,
    o: Required<Omit<CascadeOptions, 'variant'>>,
    shared: PageStreamer,
    priv: PageStreamer,
    final: MergePlan,
  ) {
    this.cache = cache;
    this.ctx = cache.ctx;
    this.options = o;
    this.shared = shared;
    this.priv = priv;
    this.final = final;
    const usage = GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST | GPUBufferUsageFlags.COPY_SRC;
    const rows = o.seqs * o.Hq;
    this.qPriv = this.ctx.createBuffer({ size: o.Hq * cache.D * 4, usage, label: 'tessera.cascade.qPriv' });
    this.oFinal = this.ctx.createBuffer({ size: 2 * rows * cache.Dv * 4, usage, label: 'tessera.cascade.oFinal' });
    this.lseFinal = this.ctx.createBuffer({ size: 2 * rows * 4, usage, label: 'tessera.cascade.lseFinal' });
  }

  /** @internal use {@link planCascadeDecode}. */
  static async create(cache: KvCache, opts: CascadeOptions): Promise<CascadeDecodePlan> {
    if (!cache || typeof cache.ensureResident !== 'function') fail('E_ARG', 'cache', 'is not a KvCache;', typeof cache);
    const Hq = checkInt(opts?.Hq, 'Hq', { min: 1 });
    check(Hq % cache.Hkv === 0, 'Hq', `a multiple of the cache's Hkv = ${cache.Hkv}`, Hq, 'E_SHAPE');
    const n = checkInt(opts.seqs, 'seqs', { min: 1, max: 4096 });
    const tilePages = checkInt(opts.tilePages ?? cache.tilePages, 'tilePages', { min: 1 });
    const maxPages = Math.floor((cache.gpuBudgetBytes - cache.summaryBytes) / cache.pageBytes);
    if (tilePages > maxPages)
      fail(
        'E_LIMIT',
        'tilePages',
        'is larger than the GPU working set;',
        tilePages,
        `at most ${maxPages} pages within gpuBudgetBytes`,
      );
    const o: Required<Omit<CascadeOptions, 'variant'>> = {
      Hq,
      seqs: n,
      scale: opts.scale ?? 1 / Math.sqrt(cache.D),
      tilePages,
      partialBytes: checkInt(opts.partialBytes ?? 8 * 2 ** 20, 'partialBytes', { min: 1 }),
      inflight: checkInt(opts.inflight ?? 2, 'inflight', { min: 1, max: 8 }),
      target: kernelTarget(opts),
      rows: checkInt(opts.rows ?? attentionRowsCap(cache.ctx.loopLimit, cache.D, cache.Dv) ?? 8, 'rows', {
        min: 1,
        max: 8,
      }),
    };
    check((ATTENTION_ROWS as readonly number[]).includes(o.rows), 'rows', '1, 2, 4 or 8', o.rows, 'E_UNSUPPORTED');
    const shared = await PageStreamer.create(cache, o, n);
    let priv: PageStreamer | undefined;
    try {
      priv = await PageStreamer.create(cache, o, 1);
      const final = await planMerge(cache.ctx, { parts: 2, rows: n * Hq, D: cache.Dv, outDtype: 'f32' });
      return new CascadeDecodePlan(cache, o, shared, priv, final);
    } catch (e) {
      shared.dispose();
      priv?.dispose();
      throw e;
    }
  }

  /**
   * Decodes one query per sequence: `q` `[n, Hq, D]` f32 (row i for `seqs[i]`), writes `o`
   * `[n, Hq, Dv]` f32 and optionally `lse` `[n, Hq]`. Every query sees its whole sequence.
   */
  async run(
    seqs: readonly number[],
    q: GpuTensor,
    out: { o: GpuTensor; lse?: GpuTensor },
    ro: CascadeRunOptions = {},
  ): Promise<CascadeStats> {
    if (this.disposed) fail('E_STATE', 'plan', 'was disposed;', 'disposed');
    const { cache, ctx } = this;
    const { Hq, seqs: n, inflight } = this.options;
    const { D, Dv, Hkv, pageSize: P } = cache;
    check(Array.isArray(seqs) && seqs.length === n, 'seqs', `${n} sequence ids (the plan's seqs)`, seqs?.length);
    seqs.forEach((s, i) => cache.length(checkInt(s, `seqs[${i}]`, { min: 0 })));
    checkTensor(q, 'q', { rank: 3, shape: [n, Hq, D], dtypes: ['f32'], device: ctx });
    checkTensor(out?.o, 'o', { rank: 3, shape: [n, Hq, Dv], dtypes: ['f32'], device: ctx });
    if (out.lse) checkTensor(out.lse, 'lse', { rank: 2, shape: [n, Hq], dtypes: ['f32'], device: ctx });
    const common = sharedPrefixPages(cache, seqs);
    const m = ro.sharedPages ?? common;
    checkInt(m, 'sharedPages', { min: 0, max: common });
    const sel = ro.sharedSelection;
    if (sel) {
      check(
        Array.isArray(sel) && sel.length === Hkv,
        'sharedSelection',
        `one Int32Array per KV head (${Hkv})`,
        sel?.length,
      );
      sel.forEach((s, h) => s.forEach((x: number) => checkInt(x, `sharedSelection[${h}]`, { min: 0, max: m - 1 })));
    }
    const t0 = performance.now();
    const up0 = cache.pagesUploaded;
    const bu0 = cache.bytesUploaded;
    const queue = ctx.device.queue;
    const rows = n * Hq;
    const pending: Promise<unknown>[] = [];
    let tiles = 0;
    let privatePages = 0;
    let sharedEntries = 0;
    const shared0 = cache.pages(seqs[0]!);
    await ctx.scoped('cascadeDecode', async () => {
      // 1. The shared prefix, once, all n queries as rows.
      const entries: Entry[] = [];
      if (sel) {
        // Entries per (page, head), page-major so a page's heads share one upload.
        const byPage = new Map<number, number[]>();
        sel.forEach((s, h) => s.forEach((i: number) => (byPage.get(i) ?? byPage.set(i, []).get(i)!).push(h)));
        for (const i of [...byPage.keys()].sort((a, b) => a - b))
          for (const h of byPage.get(i)!) entries.push({ page: shared0[i]!, start: i * P, len: P, head: h });
      } else {
        for (let i = 0; i < m; i++) entries.push({ page: shared0[i]!, start: i * P, len: P, head: ALL_HEADS });
      }
      sharedEntries = entries.length;
      this.shared.reset();
      tiles += await this.shared.stream(entries, q.buffer, pending, inflight);
      // Part 0 of the final partials: the shared result for all rows.
      {
        const enc = ctx.device.createCommandEncoder({ label: 'tessera.cascade.shared' });
        enc.copyBufferToBuffer(this.shared.oParts, 0, this.oFinal, 0, rows * Dv * 4);
        enc.copyBufferToBuffer(this.shared.lseParts, 0, this.lseFinal, 0, rows * 4);
        queue.submit([enc.finish()]);
      }
      // 2. Each sequence's private suffix, its own query row.
      for (let i = 0; i < n; i++) {
        const s = seqs[i]!;
        const pages = cache.pages(s);
        const len = cache.length(s);
        const priv: Entry[] = [];
        for (let j = m; j < pages.length; j++)
          priv.push({ page: pages[j]!, start: j * P, len: Math.min(P, len - j * P), head: ALL_HEADS });
        privatePages += priv.length;
        this.priv.reset();
        const qOff = (q.offset ?? 0) + i * Hq * D * 4;
        tiles += await this.priv.stream(priv, this.qPriv, pending, inflight, (enc) =>
          enc.copyBufferToBuffer(q.buffer, qOff, this.qPriv, 0, Hq * D * 4),
        );
        const enc = ctx.device.createCommandEncoder({ label: 'tessera.cascade.private' });
        enc.copyBufferToBuffer(this.priv.oParts, 0, this.oFinal, (rows + i * Hq) * Dv * 4, Hq * Dv * 4);
        enc.copyBufferToBuffer(this.priv.lseParts, 0, this.lseFinal, (rows + i * Hq) * 4, Hq * 4);
        queue.submit([enc.finish()]);
      }
      // 3. Merge shared and private per query row.
      const enc = ctx.device.createCommandEncoder({ label: 'tessera.cascade.merge' });
      this.final.run(enc, {
        oParts: { buffer: this.oFinal, shape: [2, rows, Dv], dtype: 'f32' },
        lseParts: { buffer: this.lseFinal, shape: [2, rows], dtype: 'f32' },
        o: { buffer: out.o.buffer, offset: out.o.offset, shape: [rows, Dv], dtype: 'f32' },
        lse: out.lse
          ? { buffer: out.lse.buffer, offset: out.lse.offset, shape: [rows], dtype: 'f32' }
          : { buffer: this.shared.lseParts, offset: 0, shape: [rows], dtype: 'f32' },
      });
      queue.submit([enc.finish()]);
      await Promise.all(pending);
      await ctx.raceLost(queue.onSubmittedWorkDone());
    });
    const sharedPageCount = sel ? new Set(sel.flatMap((s) => Array.from(s))).size : m;
    // Sparse: a page entry for one KV head reads that head's K and V only.
    const sharedBytes = sel ? (sharedEntries / Hkv) * cache.pageBytes : m * cache.pageBytes;
    return {
      sharedPages: sharedPageCount,
      sharedEntries,
      privatePages,
      kvBytesRead: sharedBytes + privatePages * cache.pageBytes,
      pagesUploaded: cache.pagesUploaded - up0,
      bytesUploaded: cache.bytesUploaded - bu0,
      tiles,
      ms: performance.now() - t0,
    };
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.shared.dispose();
    this.priv.dispose();
    this.final.dispose();
    for (const b of [this.qPriv, this.oFinal, this.lseFinal]) this.ctx.destroyBuffer(b);
  }
}

/**
 * Plans shared-prefix decode of `seqs` sequences.
 *
 * @example
 * const plan = await planCascadeDecode(cache, { Hq: 8, seqs: agents.length });
 * await plan.run(agents, q, { o, lse }); // q [n, 8, D] -> o [n, 8, Dv], lse [n, 8]
 */
export function planCascadeDecode(cache: KvCache, opts: CascadeOptions): Promise<CascadeDecodePlan> {
  return CascadeDecodePlan.create(cache, opts);
}

/**
 * Quest bound of query `q` (`[Hq, D]`) against shared page `i` for KV head `h` (max over the
 * head's group): sum over channels of max(q * min, q * max), from the host mirror of the summaries.
 */
function questBound(
  minmax: Uint16Array,
  f16: (x: number) => number,
  page: number,
  h: number,
  q: ArrayLike<number>,
  qRow: number,
  Hq: number,
  Hkv: number,
  D: number,
): number {
  const g = Hq / Hkv;
  const o = (page * Hkv + h) * 2 * D;
  let best = -Infinity;
  for (let j = 0; j < g; j++) {
    const qb = (qRow * Hq + h * g + j) * D;
    let s = 0;
    for (let d = 0; d < D; d++) {
      const x = q[qb + d]!;
      s += Math.max(x * f16(minmax[o + d]!), x * f16(minmax[o + D + d]!));
    }
    if (s > best) best = s;
  }
  return best;
}

function topK(scores: Float64Array, k: number, always: readonly number[]): Int32Array {
  const idx = Array.from(scores.keys()).filter((i) => !always.includes(i));
  idx.sort((a, b) => scores[b]! - scores[a]! || a - b);
  return Int32Array.from([...always, ...idx.slice(0, Math.max(0, k - always.length))].sort((a, b) => a - b));
}

/**
 * Quest selection over the first `sharedPages` pages of `seqs` for queries `q` (`[n, Hq, D]` host
 * values), one page set per KV head that all n sequences attend (read once for all):
 *
 * - `mode: 'max'` (default): the `budgetPages` pages with the highest max over the sequences of
 *   their Quest bounds: the budget of one sequence, shared. `recall` is the fraction of each
 *   sequence's own top `budgetPages` pages the shared set holds (averaged): what sharing costs
 *   when the queries differ.
 * - `mode: 'union'`: the union of every sequence's own top `budgetPages` (recall 1 by
 *   construction; each sequence attends a superset of its own selection, read once for all).
 *
 * Sink pages are always included. `perSeq` holds each sequence's own selections.
 */
export function questSharedSelection(
  cache: KvCache,
  seqs: readonly number[],
  q: ArrayLike<number>,
  opts: {
    Hq: number;
    budgetPages: number;
    sharedPages: number;
    sinkPages?: number;
    mode?: 'max' | 'union';
    f16ToF32: (bits: number) => number;
  },
): { shared: Int32Array[]; perSeq: Int32Array[][]; recall: number } {
  checkInt(opts?.budgetPages, 'budgetPages', { min: 1 });
  const mode = opts.mode ?? 'max';
  check(mode === 'max' || mode === 'union', 'mode', '"max" or "union"', mode);
  const { Hq, budgetPages, sharedPages: m } = opts;
  const { Hkv, D } = cache;
  const n = seqs.length;
  const mm = cache.summariesHost().minmax;
  const base = cache.pages(seqs[0]!);
  const sinks = Array.from({ length: Math.min(m, opts.sinkPages ?? cache.sinkPages) }, (_, i) => i);
  const shared: Int32Array[] = [];
  const perSeq: Int32Array[][] = seqs.map(() => []);
  let hit = 0;
  let want = 0;
  for (let h = 0; h < Hkv; h++) {
    const all = Array.from({ length: n }, () => new Float64Array(m));
    const mx = new Float64Array(m).fill(-Infinity);
    for (let i = 0; i < m; i++) {
      for (let r = 0; r < n; r++) {
        const b = questBound(mm, opts.f16ToF32, base[i]!, h, q, r, Hq, Hkv, D);
        all[r]![i] = b;
        if (b > mx[i]!) mx[i] = b;
      }
    }
    const own = all.map((a) => topK(a, budgetPages, sinks));
    own.forEach((o, r) => perSeq[r]!.push(o));
    const sh =
      mode === 'max'
        ? topK(mx, budgetPages, sinks)
        : Int32Array.from(new Set(own.flatMap((o) => Array.from(o)))).sort();
    shared.push(sh);
    const inShared = new Set(sh);
    for (const o of own) {
      for (const x of o) if (inShared.has(x)) hit++;
      want += o.length;
    }
  }
  return { shared, perSeq, recall: want ? hit / want : 1 };
}
