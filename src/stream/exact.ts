/**
 * Streaming exact attention: a query (decode) or a block of queries (a prefill chunk) against a
 * sequence of any length in a {@link KvCache}. Pages flow host -> GPU tile by tile through the
 * cache's working set; each tile yields `(o, lse)` partials (kernels/paged, one part per group of
 * pages: decode split-K) that merge exactly into a running state (kernels/merge: compensated sums
 * carried in two f32 between tiles, so the error does not grow with the number of tiles). The host
 * uploads tile i+1 while the GPU attends tile i (tile i is submitted before tile i+1 is written).
 */
import { TesseraError, check, checkInt, fail } from '../errors.js';
import { kernelTarget, type KernelTarget } from '../options.js';
import { observe, submitEpoch, type TesseraDevice } from '../gpu/device.js';
import { exclusiveRuns } from '../exclusive.js';
import { checkHostValues, checkTensor, type GpuTensor } from '../tensor.js';
import type { KvCache } from '../kv/cache.js';
import { createMergeState, planMerge, type MergePlan, type MergeState } from '../../kernels/merge/merge.js';
import { planLoopLimit } from '../gpu/segments.js';
import { ALL_HEADS, PAGED_ENTRY_WORDS, planPaged, type PagedCall, type PagedPlan } from '../../kernels/paged/paged.js';
import { GPUBufferUsageFlags } from '../gpu/flags.js';

export interface StreamAttentionOptions {
  /** Query heads (a multiple of the cache's Hkv). */
  Hq: number;
  /** Queries per call (default 1: decode). */
  Tq?: number;
  /** Causal by absolute position (default true). */
  causal?: boolean;
  /** Softmax scale (default 1/sqrt(D)). */
  scale?: number;
  /**
   * Pages per tile (default: the cache's `tilePages`, one pool buffer). On a device with a loop
   * cap (`ctx.loopLimit`, Mesa's llvmpipe) the plan may use fewer, so that no part of a tile gives
   * one invocation more pages than the cap allows; `plan.options.tilePages` is the value in use.
   */
  tilePages?: number;
  /** Bound on the partials workspace in bytes (default 8 MiB); sets how many pages each part covers. */
  partialBytes?: number;
  /** Tiles in flight before the host waits (default 2). */
  inflight?: number;
  /** Paged kernel shape (`kernels/paged`): `auto` (default, by adapter class), `cpu` or `gpu`. */
  target?: KernelTarget;
  /** @deprecated Use `target` (same values): the kernel shape's old name in this family. */
  variant?: 'auto' | 'cpu' | 'gpu';
  /**
   * Size the parts and the merge for this loop cap (lower than the cache's only; an integer >=
   * 256): tests run the split paths llvmpipe needs on any adapter with it. Default: the cache's
   * (`cache.ctx.loopLimit`); `plan.options.loopLimit` is the cap in use.
   */
  loopLimit?: number;
}

export interface StreamRunOptions {
  /** Absolute position of query 0 (default `length - Tq`: the queries are the newest tokens). */
  qPos0?: number;
  /** Called after each tile with (tokens done, tokens total). */
  onProgress?: (done: number, total: number) => void;
  /**
   * Before the pass, time up to this many tiles three ways (pipelined, transfers alone, compute
   * alone) and report {@link StreamStats.overlap} (default 0: off). For benchmarks, not decoding.
   */
  measureOverlap?: number;
}

/** How much of the transfer time (read from the host/disk tier + upload) compute hides. */
export interface OverlapStats {
  tiles: number;
  /** Reading and uploading the tiles alone. */
  transferMs: number;
  /** Attending and merging the tiles alone (resident). */
  computeMs: number;
  /** Both, pipelined as the pass runs them. */
  overlappedMs: number;
  /** (transferMs + computeMs - overlappedMs) / transferMs, clamped to [0, 1]. */
  fraction: number;
}

export interface StreamStats {
  tiles: number;
  pages: number;
  /** Pages uploaded host -> GPU during this call. */
  pagesUploaded: number;
  bytesUploaded: number;
  /** KV bytes the attention read (every page once). */
  kvBytesRead: number;
  ms: number;
  /** With `measureOverlap`: the overlap measurement (its time is not in `ms`). */
  overlap?: OverlapStats;
}

type TileQuery = { buffer: GPUBuffer; offset?: number; shape: readonly number[]; dtype: 'f32' };

/** A plan for streaming exact attention over one cache. */
export class StreamAttentionPlan {
  readonly cache: KvCache;
  readonly ctx: TesseraDevice;
  readonly options: Required<Omit<StreamAttentionOptions, 'variant'>>;
  readonly rows: number;
  /** Parts per tile. */
  readonly parts: number;
  readonly pagesPerPart: number;
  private readonly paged: PagedPlan;
  private readonly merger: MergePlan;
  private readonly oParts: GPUBuffer;
  private readonly lseParts: GPUBuffer;
  /** Running merge states, used in turn tile by tile. */
  private readonly states: MergeState[];
  private readonly lseScratch: GPUBuffer;
  private readonly emptyState: Float32Array<ArrayBuffer>;
  private readonly list: GPUBuffer;
  private readonly listWords: Uint32Array<ArrayBuffer>;
  private disposed = false;
  /** A run() in progress (encode() is refused meanwhile: they share the scratch). */
  private running = false;
  /** Submit epoch of the last encode() (-2: none pending). */
  private encodedEpoch = -2;

  private constructor(
    cache: KvCache,
    o: Required<Omit<StreamAttentionOptions, 'variant'>>,
    paged: PagedPlan,
    merger: MergePlan,
    parts: number,
    ePer: number,
  ) {
    this.cache = cache;
    this.ctx = cache.ctx;
    this.options = o;
    this.rows = o.Tq * o.Hq;
    this.paged = paged;
    this.merger = merger;
    this.parts = parts;
    this.pagesPerPart = ePer;
    const ctx = this.ctx;
    const usage = GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST | GPUBufferUsageFlags.COPY_SRC;
    const Dv = cache.Dv;
    this.oParts = ctx.createBuffer({ size: parts * this.rows * Dv * 4, usage, label: 'tessera.stream.oParts' });
    this.lseParts = ctx.createBuffer({ size: parts * this.rows * 4, usage, label: 'tessera.stream.lseParts' });
    this.states = [0, 1].map((i) => createMergeState(ctx, this.rows, Dv, `tessera.stream.state${i}`));
    this.lseScratch = ctx.createBuffer({ size: this.rows * 4, usage, label: 'tessera.stream.lse' });
    this.emptyState = new Float32Array(this.rows * 4).map((_, i) => (i % 4 === 0 ? -Infinity : 0));
    this.list = ctx.createBuffer({ size: o.tilePages * PAGED_ENTRY_WORDS * 4, usage, label: 'tessera.stream.list' });
    this.listWords = new Uint32Array(o.tilePages * PAGED_ENTRY_WORDS);
    // One run at a time: the merge states and the page list are this plan's (E_STATE otherwise).
    exclusiveRuns(this, 'StreamAttentionPlan', ['run']);
  }

  /** @internal use {@link planStreamAttention}. */
  static async create(cache: KvCache, opts: StreamAttentionOptions): Promise<StreamAttentionPlan> {
    if (!cache || typeof cache.ensureResident !== 'function') fail('E_ARG', 'cache', 'is not a KvCache;', typeof cache);
    const Hq = checkInt(opts?.Hq, 'Hq', { min: 1 });
    check(Hq % cache.Hkv === 0, 'Hq', `a multiple of the cache's Hkv = ${cache.Hkv}`, Hq, 'E_SHAPE');
    const Tq = checkInt(opts.Tq ?? 1, 'Tq', { min: 1 });
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
    const partialBytes = checkInt(opts.partialBytes ?? 8 * 2 ** 20, 'partialBytes', {
      min: 1,
      max: Number.MAX_SAFE_INTEGER,
    });
    const inflight = checkInt(opts.inflight ?? 2, 'inflight', { min: 1, max: 8 });
    const o: Required<Omit<StreamAttentionOptions, 'variant'>> = {
      Hq,
      Tq,
      causal: opts.causal ?? true,
      scale: opts.scale ?? 1 / Math.sqrt(cache.D),
      tilePages,
      partialBytes,
      inflight,
      target: kernelTarget(opts),
      loopLimit: planLoopLimit(cache.ctx, opts.loopLimit),
    };
    const rows = Tq * Hq;
    const perPart = rows * (cache.Dv + 1) * 4;
    // Pool buffers a tile can touch: at most one part is lost to rounding per buffer.
    const groups = Math.min(tilePages, Math.max(1, Math.floor(cache.gpuBudgetBytes / cache.pool.bufferBytes)));
    const paged = await planPaged(cache.ctx, {
      Hq,
      Hkv: cache.Hkv,
      D: cache.D,
      Dv: cache.Dv,
      Tq,
      pageSize: cache.pageSize,
      dtype: cache.dtype,
      causal: o.causal,
      scale: o.scale,
      maxCalls: groups,
      target: o.target,
      loopLimit: opts.loopLimit,
    });
    try {
      const maxParts = Math.max(1, Math.floor(partialBytes / perPart) - groups - 1);
      // A part's pages run in one invocation, which Mesa's llvmpipe stops after o.loopLimit loop
      // iterations: with few parts allowed (large Tq * Hq rows, small partialBytes) the tile shrinks
      // so that no part covers more than paged.maxEntriesPerPart pages.
      o.tilePages = Math.min(tilePages, maxParts * paged.maxEntriesPerPart);
      const ePer = Math.max(1, Math.ceil(o.tilePages / maxParts));
      const parts = Math.ceil(o.tilePages / ePer) + groups;
      const merger = await planMerge(cache.ctx, {
        parts,
        rows,
        D: cache.Dv,
        outDtype: 'f32',
        loopLimit: opts.loopLimit,
      });
      return new StreamAttentionPlan(cache, o, paged, merger, parts, ePer);
    } catch (e) {
      paged.dispose();
      throw e;
    }
  }

  /**
   * Attends `q` (`[Tq, Hq, D]` f32) to all of sequence `seq` and writes `o` (`[Tq, Hq, Dv]` f32) and
   * optionally `lse` (`[Tq, Hq]` f32, natural log). Resolves when the GPU is done.
   */
  async run(
    seq: number,
    q: GpuTensor,
    out: { o: GpuTensor; lse?: GpuTensor },
    ro: StreamRunOptions = {},
  ): Promise<StreamStats> {
    if (this.disposed) fail('E_STATE', 'plan', 'was disposed;', 'disposed');
    this.checkEncodeSubmitted('run');
    this.running = true;
    try {
      return await this.runInner(seq, q, out, ro);
    } finally {
      this.running = false;
    }
  }

  /** An encode() whose encoder is not submitted yet still reads this plan's page list and states. */
  private checkEncodeSubmitted(what: string): void {
    const epoch = submitEpoch(this.ctx);
    if (epoch >= 0 && this.encodedEpoch === epoch) {
      throw new TesseraError(
        'E_STATE',
        `StreamAttentionPlan.${what}: an encode() since the last queue.submit still reads this plan's page list and merge state; submit that encoder first (or use a second plan)`,
        { argument: 'plan' },
      );
    }
  }

  /**
   * Encodes exact attention of `q` against sequence `seq` into the caller's `encoder`: no await,
   * no submit, no GPU buffer created. For sequences whose pages the queries see are all resident
   * on the GPU (a recent window, a sequence an engine just wrote, one a previous `run` left
   * resident) and fit one tile (`options.tilePages`). Otherwise it throws before encoding
   * anything: `E_STATE` (argument `seq`) when a page is on the host or disk tier only (moving
   * pages is the async `run`'s job; `cache.ensureResident(cache.pages(seq))` makes them resident),
   * `E_LIMIT` when the pages exceed one tile. Submit the encoder before this plan's next `encode`
   * or `run` (`E_STATE` otherwise: they share the plan's page list and merge state), and before
   * the cache uploads other pages (an upload may reuse an unpinned page's slot).
   *
   * @example
   * cache.ensureResident(cache.pages(seq));             // once, or pages pinned by the window
   * const enc = dev.device.createCommandEncoder();
   * plan.encode(enc, seq, q, { o, lse });               // into the engine's own encoder
   * dev.device.queue.submit([enc.finish()]);
   */
  encode(
    encoder: GPUCommandEncoder,
    seq: number,
    q: GpuTensor,
    out: { o: GpuTensor; lse?: GpuTensor },
    ro: { qPos0?: number } = {},
  ): void {
    if (this.disposed) fail('E_STATE', 'plan', 'was disposed;', 'disposed');
    if (this.running)
      throw new TesseraError(
        'E_STATE',
        'StreamAttentionPlan.encode: a run() of this plan is still in progress (they share its scratch); await it first',
        { argument: 'plan' },
      );
    this.checkEncodeSubmitted('encode');
    if (!encoder || typeof (encoder as GPUCommandEncoder).beginComputePass !== 'function')
      fail('E_ARG', 'encoder', 'is not a GPUCommandEncoder;', typeof encoder, 'device.createCommandEncoder()');
    const { cache, ctx, rows } = this;
    const { Tq, Hq } = this.options;
    const Dv = cache.Dv;
    const { len, qPos0, all, nPages } = this.checkCall(seq, q, out, ro);
    if (nPages > this.options.tilePages) {
      fail(
        'E_LIMIT',
        'seq',
        `needs ${nPages} pages, more than one tile of this plan;`,
        seq,
        `at most tilePages = ${this.options.tilePages} pages for encode() (run() streams any length)`,
      );
    }
    let missing = 0;
    for (let i = 0; i < nPages; i++) if (cache.pool.slotOf(all[i]!) < 0) missing++;
    if (missing > 0) {
      throw new TesseraError(
        'E_STATE',
        `seq: ${missing} of the ${nPages} pages of sequence ${seq} are not resident on the GPU; encode() moves no pages (await run(), or cache.ensureResident(cache.pages(seq)) first)`,
        {
          argument: 'seq',
          actual: seq,
          expected: 'a sequence whose pages are all resident',
        },
      );
    }
    const qT = { buffer: q.buffer, offset: q.offset, shape: q.shape, dtype: 'f32' as const };
    const queue = ctx.device.queue;
    if (nPages > 0) this.encodeTile(encoder, all, 0, nPages, len, qPos0, qT, 0);
    else queue.writeBuffer(this.states[1]!.s.buffer, 0, this.emptyState);
    const tiles = nPages > 0 ? 1 : 0;
    const lse = out.lse ?? { buffer: this.lseScratch, shape: [Tq, Hq], dtype: 'f32' as const };
    this.merger.finish(encoder, {
      state: this.states[(tiles + 1) % 2]!,
      o: { buffer: out.o.buffer, offset: out.o.offset, shape: [rows, Dv], dtype: 'f32' },
      lse: { buffer: lse.buffer, offset: lse.offset, shape: [rows], dtype: 'f32' },
    });
    this.encodedEpoch = submitEpoch(ctx);
  }

  /** Checks one call's tensors and finds the query position and the pages it reads (run and encode alike). */
  private checkCall(
    seq: number,
    q: GpuTensor,
    out: { o: GpuTensor; lse?: GpuTensor },
    ro: { qPos0?: number },
  ): { len: number; qPos0: number; all: readonly number[]; nPages: number } {
    const { cache, ctx } = this;
    const { Tq, Hq } = this.options;
    checkTensor(q, 'q', { rank: 3, shape: [Tq, Hq, cache.D], dtypes: ['f32'], device: ctx });
    checkTensor(out?.o, 'o', { rank: 3, shape: [Tq, Hq, cache.Dv], dtypes: ['f32'], device: ctx });
    if (out.lse) checkTensor(out.lse, 'lse', { rank: 2, shape: [Tq, Hq], dtypes: ['f32'], device: ctx });
    const len = cache.length(seq);
    const qPos0 = ro.qPos0 ?? Math.max(0, len - Tq);
    checkInt(qPos0, 'qPos0', { min: 0 });
    const all = cache.pages(seq);
    const nPages = this.options.causal
      ? Math.min(all.length, Math.floor((qPos0 + Tq - 1) / cache.pageSize) + 1)
      : all.length;
    return { len, qPos0, all, nPages };
  }

  private async runInner(
    seq: number,
    q: GpuTensor,
    out: { o: GpuTensor; lse?: GpuTensor },
    ro: StreamRunOptions,
  ): Promise<StreamStats> {
    const { cache, ctx, rows } = this;
    const { Tq, Hq } = this.options;
    const Dv = cache.Dv;
    const { len, qPos0, all, nPages } = this.checkCall(seq, q, out, ro);
    const P = cache.pageSize;
    let t0 = performance.now();
    let up0 = cache.pagesUploaded;
    let bu0 = cache.bytesUploaded;
    const queue = ctx.device.queue;
    const tp = this.options.tilePages;
    const pending: Promise<unknown>[] = [];
    const qT = { buffer: q.buffer, offset: q.offset, shape: q.shape, dtype: 'f32' as const };
    if (ro.measureOverlap !== undefined) checkInt(ro.measureOverlap, 'measureOverlap', { min: 0 });
    let tiles = 0;
    let overlap: OverlapStats | undefined;
    // Each tile is encoded and submitted in one synchronous error-scope section (never a scope held
    // across an await: concurrent calls on the device keep their own errors), and every tile's
    // promise is observed from the start, so a lost device is one E_DEVICE_LOST to the caller and
    // never an unhandled rejection of a tile still in flight.
    {
      if (ro.measureOverlap) {
        overlap = await this.measureOverlap(all, nPages, len, qPos0, qT, ro.measureOverlap);
        t0 = performance.now();
        up0 = cache.pagesUploaded;
        bu0 = cache.bytesUploaded;
      }
      for (let a = 0; a < nPages; a += tp) {
        const b = Math.min(nPages, a + tp);
        const index = tiles++;
        const { errors } = ctx.section('streamAttention', () => this.submitTile(all, a, b, len, qPos0, qT, index));
        pending.push(observe(Promise.all([errors, ctx.raceLost(queue.onSubmittedWorkDone())])));
        if (pending.length >= this.options.inflight) await pending.shift();
        ro.onProgress?.(Math.min(len, b * P), Math.min(len, nPages * P));
      }
      const { errors } = ctx.section('streamAttention', () => {
        const enc = ctx.device.createCommandEncoder({ label: 'tessera.stream.out' });
        // No page (an empty sequence): finish from an empty state (o = 0, lse = -inf).
        if (tiles === 0) queue.writeBuffer(this.states[1]!.s.buffer, 0, this.emptyState);
        const lse = out.lse ?? { buffer: this.lseScratch, shape: [Tq, Hq], dtype: 'f32' as const };
        this.merger.finish(enc, {
          state: this.states[(tiles + 1) % 2]!,
          o: { buffer: out.o.buffer, offset: out.o.offset, shape: [rows, Dv], dtype: 'f32' },
          lse: { buffer: lse.buffer, offset: lse.offset, shape: [rows], dtype: 'f32' },
        });
        queue.submit([enc.finish()]);
      });
      pending.push(observe(Promise.all([errors, ctx.raceLost(queue.onSubmittedWorkDone())])));
      await Promise.all(pending);
    }
    return {
      tiles,
      pages: nPages,
      pagesUploaded: cache.pagesUploaded - up0,
      bytesUploaded: cache.bytesUploaded - bu0,
      kvBytesRead: nPages * cache.pageBytes,
      ms: performance.now() - t0,
      overlap,
    };
  }

  /**
   * Makes pages [a, b) of `all` resident (reading and uploading those that are not) and submits
   * their attention and the merge into running state `index % 2` (from `(index - 1) % 2`).
   */
  private submitTile(
    all: readonly number[],
    a: number,
    b: number,
    len: number,
    qPos0: number,
    qT: TileQuery,
    index: number,
  ): void {
    const ctx = this.ctx;
    const queue = ctx.device.queue;
    const enc = ctx.device.createCommandEncoder({ label: 'tessera.stream.tile' });
    this.encodeTile(enc, all, a, b, len, qPos0, qT, index);
    queue.submit([enc.finish()]);
  }

  /** Makes pages [a, b) of `all` resident and encodes their attention and merge into `enc`. */
  private encodeTile(
    enc: GPUCommandEncoder,
    all: readonly number[],
    a: number,
    b: number,
    len: number,
    qPos0: number,
    qT: TileQuery,
    index: number,
  ): void {
    const { cache, ctx, rows } = this;
    const P = cache.pageSize;
    const Dv = cache.Dv;
    const queue = ctx.device.queue;
    const listWords = this.listWords;
    const oPartsT = { buffer: this.oParts, shape: [this.parts, rows, Dv], dtype: 'f32' as const };
    const lsePartsT = { buffer: this.lseParts, shape: [this.parts, rows], dtype: 'f32' as const };
    const pages = all.slice(a, b);
    const slots = cache.ensureResident(pages);
    // Group the tile's pages by pool buffer.
    const byBuf = new Map<number, number[]>();
    for (let i = 0; i < pages.length; i++) {
      const bi = cache.pool.location(slots[i]!).bufferIndex;
      let g = byBuf.get(bi);
      if (!g) byBuf.set(bi, (g = []));
      g.push(i);
    }
    let e = 0;
    let partBase = 0;
    const groups = [...byBuf.entries()];
    groups.forEach(([bi, idx], gi) => {
      const listBase = e;
      for (const i of idx) {
        const w = e * PAGED_ENTRY_WORDS;
        listWords[w] = cache.pool.location(slots[i]!).index;
        listWords[w + 1] = (a + i) * P;
        listWords[w + 2] = Math.min(P, len - (a + i) * P);
        listWords[w + 3] = ALL_HEADS;
        e++;
      }
      const need = Math.ceil(idx.length / this.pagesPerPart);
      const partCount = gi === groups.length - 1 ? this.parts - partBase : need;
      const call: PagedCall = { qPos0, listBase, nEntries: idx.length, ePer: this.pagesPerPart, partBase, partCount };
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
    queue.writeBuffer(this.list, 0, listWords, 0, e * PAGED_ENTRY_WORDS);
    this.merger.run(enc, {
      oParts: oPartsT,
      lseParts: lsePartsT,
      stateIn: index > 0 ? this.states[(index - 1) % 2] : undefined,
      stateOut: this.states[index % 2],
    });
  }

  /**
   * Overlap of transfer and compute on the first `want` tiles (as many as the working set holds
   * at once): the pipelined loop the pass uses (read + upload of tile i + 1 while tile i is
   * attended, `inflight` tiles in flight), then the same tiles' transfers alone (read + upload,
   * waiting for the queue) and their compute alone (the tiles resident). The tiles are made
   * non-resident before each timed transfer. The pass that follows starts its merge afresh.
   */
  private async measureOverlap(
    all: readonly number[],
    nPages: number,
    len: number,
    qPos0: number,
    qT: TileQuery,
    want: number,
  ): Promise<OverlapStats> {
    const { cache, ctx } = this;
    const queue = ctx.device.queue;
    const tp = this.options.tilePages;
    // Grow the working set (within the budget) so that the sampled tiles are resident together.
    const pool = cache.pool;
    const wantTiles = Math.min(Math.ceil(nPages / tp), want);
    while (
      pool.capacity < (wantTiles + 1) * tp &&
      cache.summaryBytes + pool.bytes + pool.bufferBytes <= cache.gpuBudgetBytes &&
      pool.addBuffer()
    );
    const tiles = Math.max(1, Math.min(wantTiles, Math.floor(pool.capacity / tp) - 1));
    const end = Math.min(nPages, tiles * tp);
    const evict = () => {
      for (let i = 0; i < end; i++) {
        const s = cache.pool.slotOf(all[i]!);
        if (s >= 0 && !cache.pool.isPinned(all[i]!)) cache.pool.drop(s);
      }
    };
    await ctx.raceLost(queue.onSubmittedWorkDone());
    // The sampled tiles as the pass submits them (inflight at a time), until the GPU is idle.
    const pass = async () => {
      const pending: Promise<unknown>[] = [];
      for (let a = 0, i = 0; a < end; a += tp, i++) {
        const { errors } = ctx.section('streamAttention.overlap', () =>
          this.submitTile(all, a, Math.min(end, a + tp), len, qPos0, qT, i),
        );
        pending.push(observe(Promise.all([errors, ctx.raceLost(queue.onSubmittedWorkDone())])));
        if (pending.length >= this.options.inflight) await pending.shift();
      }
      await Promise.all(pending);
      await ctx.raceLost(queue.onSubmittedWorkDone());
    };
    // 1. Pipelined, as the pass runs.
    evict();
    let t = performance.now();
    await pass();
    const overlappedMs = performance.now() - t;
    // 2. Transfers alone.
    evict();
    t = performance.now();
    for (let a = 0; a < end; a += tp) {
      cache.ensureResident(all.slice(a, Math.min(end, a + tp)));
      await ctx.raceLost(queue.onSubmittedWorkDone());
    }
    const transferMs = performance.now() - t;
    // 3. Compute alone (every page resident: nothing is read or uploaded).
    const up = cache.pagesUploaded;
    t = performance.now();
    await pass();
    const computeMs = performance.now() - t;
    if (cache.pagesUploaded !== up)
      fail(
        'E_STATE',
        'measureOverlap',
        'uploaded pages during the compute-only run;',
        cache.pagesUploaded - up,
        'a working set that holds the sampled tiles',
      );
    const hidden = transferMs + computeMs - overlappedMs;
    return { tiles, transferMs, computeMs, overlappedMs, fraction: Math.max(0, Math.min(1, hidden / transferMs)) };
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.paged.dispose();
    this.merger.dispose();
    for (const b of [
      this.oParts,
      this.lseParts,
      this.lseScratch,
      this.list,
      ...this.states.flatMap((x) => [x.o.buffer, x.s.buffer]),
    ])
      this.ctx.destroyBuffer(b);
  }
}

/**
 * Plans streaming exact attention over `cache`.
 *
 * @example
 * const plan = await planStreamAttention(cache, { Hq: 8 });
 * await plan.run(seq, q, { o, lse }); // q [1, 8, D] f32 -> o [1, 8, Dv] f32, lse [1, 8]
 */
export function planStreamAttention(cache: KvCache, opts: StreamAttentionOptions): Promise<StreamAttentionPlan> {
  return StreamAttentionPlan.create(cache, opts);
}

/**
 * Convenience: exact attention of host queries `q` (`[Tq, Hq, D]`) against sequence `seq`, returned
 * to the host as f64 arrays.
 *
 * @example
 * const { o, lse } = await streamAttention(cache, seq, q, { Hq: 4 });
 */
export async function streamAttention(
  cache: KvCache,
  seq: number,
  q: ArrayLike<number>,
  opts: StreamAttentionOptions & StreamRunOptions,
): Promise<{ o: Float64Array; lse: Float64Array; stats: StreamStats }> {
  const Tq = opts.Tq ?? 1;
  checkInt(opts?.Hq, 'Hq', { min: 1 });
  checkHostValues(q, 'q');
  if (q.length !== Tq * opts.Hq * cache.D)
    fail('E_SHAPE', 'q', 'has the wrong length;', q.length, `Tq*Hq*D = ${Tq * opts.Hq * cache.D}`);
  const plan = await planStreamAttention(cache, opts);
  const ctx = cache.ctx;
  const qb = ctx.upload(Float32Array.from(q), { label: 'tessera.stream.q' });
  const ob = ctx.createBuffer({
    size: Tq * opts.Hq * cache.Dv * 4,
    usage: GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST | GPUBufferUsageFlags.COPY_SRC,
    label: 'tessera.stream.out',
  });
  const lb = ctx.createBuffer({
    size: Tq * opts.Hq * 4,
    usage: GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST | GPUBufferUsageFlags.COPY_SRC,
    label: 'tessera.stream.lseOut',
  });
  try {
    const stats = await plan.run(
      seq,
      { buffer: qb, shape: [Tq, opts.Hq, cache.D], dtype: 'f32' },
      {
        o: { buffer: ob, shape: [Tq, opts.Hq, cache.Dv], dtype: 'f32' },
        lse: { buffer: lb, shape: [Tq, opts.Hq], dtype: 'f32' },
      },
      opts,
    );
    const o = Float64Array.from(new Float32Array(await ctx.readback(ob)));
    const lse = Float64Array.from(new Float32Array(await ctx.readback(lb)));
    return { o, lse, stats };
  } finally {
    plan.dispose();
    for (const b of [qb, ob, lb]) ctx.destroyBuffer(b);
  }
}
