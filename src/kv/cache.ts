/**
 * The chunked KV cache: pages of `pageSize` tokens for `Hkv` heads, page tables in CSR form,
 * three tiers (GPU working set under a byte budget, host slabs, disk), per-page summaries on the
 * GPU (channel-wise min/max/mean of the keys, f16) and per-page checksums. See `README.md`.
 *
 * This file is the cache's public surface and state; the work is beside it, one concern per file:
 * `options.ts` (validation), `append.ts` (the append path), `pages.ts` (host/disk pages and
 * checksums), `page-summaries.ts` (summaries), `residency.ts` (the GPU working set), `refs.ts`
 * (shared pages) and `session.ts` (persistence), reaching this state through `internals.ts`.
 */
import { TesseraError, check, checkInt, fail } from '../errors.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../gpu/device.js';
import { readHeadRows, type KvDType, type PageLayout } from './codec.js';
import { claimStore, releaseStore } from './claims.js';
import { appendRawRows, appendValues } from './append.js';
import type { SeqState } from './internals.js';
import { resolveKvCacheOptions, type KvCacheOptions } from './options.js';
import { checkPage, readHostPage } from './pages.js';
import { summariesHost, summaryGpuBytes, uploadSummaries } from './page-summaries.js';
import { GpuPagePool } from './pool.js';
import { planLoopLimit, withLoopLimit } from '../gpu/segments.js';
import { makeResident, verifyResidentPage, verifyStorePages } from './residency.js';
import { MemoryStore, type Store } from './store.js';
import { SummaryTiers } from './summaries.js';
import { adoptRefState, forkSequence, freeSequence, refCount, truncateSequence } from './refs.js';

export type { KvCacheOptions } from './options.js';

/** FlashInfer's paged-KV vocabulary: `indptr[n+1]`, `indices` (page ids), `lastPageLen[n]`. */
export interface PageTable {
  indptr: Int32Array;
  indices: Int32Array;
  lastPageLen: Int32Array;
}

/** Raw rows already encoded in the cache's dtype, `[T, Hkv, D]` / `[T, Hkv, Dv]`. */
export interface RawRows {
  /** Must equal the cache's dtype (f32: Float32Array; f16/bf16: Uint16Array of bits). */
  dtype: KvDType;
  k: Float32Array | Uint16Array;
  v: Float32Array | Uint16Array;
}

export interface KvCacheStats {
  tokens: number;
  pages: number;
  /** Bytes of all pages (the KV bytes). */
  kvBytes: number;
  /** GPU bytes held by summaries. */
  summaryBytes: number;
  /** GPU bytes held by the page pool. */
  poolBytes: number;
  residentPages: number;
  evictions: number;
  pagesUploaded: number;
  bytesUploaded: number;
  hostBytes: number;
  hostBytesPeak: number;
}

/**
 * Creates a KV cache on `device`.
 *
 * @example
 * const cache = createKvCache(dev, { Hkv: 2, D: 64, dtype: 'f16', gpuBudgetBytes: 64 << 20 });
 * const seq = cache.addSequence();
 * cache.append(seq, k, v); // k: [T, 2, 64], v: [T, 2, 64] host arrays
 * const { indptr, indices, lastPageLen } = cache.pageTable();
 */
export function createKvCache(device: DeviceLike, opts: KvCacheOptions): KvCache {
  return new KvCache(ctxOf(device), opts);
}

export class KvCache {
  readonly ctx: TesseraDevice;
  readonly Hkv: number;
  readonly D: number;
  readonly Dv: number;
  readonly pageSize: number;
  readonly dtype: KvDType;
  readonly layout: PageLayout;
  readonly pageBytes: number;
  readonly gpuBudgetBytes: number;
  readonly sinkPages: number;
  readonly recentPages: number;
  readonly meanSummaries: boolean;
  readonly debug: boolean;
  readonly store: Store;
  readonly pool: GpuPagePool;
  readonly summaryLevels: 1 | 2;
  /** The two-level summaries (`summaryLevels: 2`). */
  readonly tiers?: SummaryTiers;
  /** Pages per summary buffer (each within the binding limit). */
  readonly summaryChunkPages: number;
  /** Bytes of one page's min/max summary (`Hkv * 2 * D` halves). */
  readonly minmaxBytesPerPage: number;
  /** Bytes of one page's mean summary (`Hkv * D` halves). */
  readonly meanBytesPerPage: number;
  // The private state below is used by the modules beside this one through internals.ts.
  private readonly seqs: SeqState[] = [];
  private pageCount = 0;
  private sums: Uint32Array = new Uint32Array(0);
  /** Host mirror of the summaries: `[pages, Hkv, 2, D]` f16 bits (min then max). */
  private minmaxHost = new Uint16Array(0);
  /** Host mirror of the means: `[pages, Hkv, D]` f16 bits. */
  private meanHost = new Uint16Array(0);
  /** GPU summary buffers: chunk c holds pages [c * summaryChunkPages, ...). */
  readonly minmaxGpu: GPUBuffer[] = [];
  readonly meanGpu: GPUBuffer[] = [];
  /** Capacity (pages) of each GPU summary chunk. */
  private summaryCap: number[] = [];
  private disposed = false;
  private staging?: Uint8Array;
  private hostPeak = 0;
  private readonly options: KvCacheOptions;
  pagesUploaded = 0;
  bytesUploaded = 0;

  constructor(ctx: TesseraDevice, opts: KvCacheOptions) {
    // plans on the cache see the cache's loop cap (the device's, or lower: the loopLimit option)
    this.ctx = withLoopLimit(ctx, planLoopLimit(ctx, opts?.loopLimit));
    const o = resolveKvCacheOptions(ctx.limits, opts);
    this.options = { ...opts };
    this.Hkv = o.Hkv;
    this.D = o.D;
    this.Dv = o.Dv;
    this.pageSize = o.pageSize;
    this.dtype = o.dtype;
    this.layout = o.layout;
    this.pageBytes = o.pageBytes;
    this.gpuBudgetBytes = o.gpuBudgetBytes;
    this.sinkPages = o.sinkPages;
    this.recentPages = o.recentPages;
    this.meanSummaries = o.meanSummaries;
    this.debug = o.debug;
    this.minmaxBytesPerPage = o.minmaxBytesPerPage;
    this.meanBytesPerPage = o.meanBytesPerPage;
    this.summaryChunkPages = o.summaryChunkPages;
    this.store = opts.store ?? new MemoryStore({ slabBytes: opts.slabBytes, align: this.pageBytes });
    claimStore(this.store, this); // one live cache per store (E_STATE naming `store`)
    try {
      this.pool = new GpuPagePool(ctx, this.pageBytes, o.tilePages, this.pageSize);
      this.pool.addBuffer();
      this.summaryLevels = opts.summaryLevels ?? 1;
      check(this.summaryLevels === 1 || this.summaryLevels === 2, 'summaryLevels', '1 or 2', this.summaryLevels);
      if (this.summaryLevels === 2)
        this.tiers = new SummaryTiers(this, {
          superPages: opts.superPages,
          candidatePages: opts.candidatePages,
          store: opts.summaryStore,
        });
    } catch (e) {
      releaseStore(this.store, this);
      throw e;
    }
  }

  /** Pages per streaming tile (= slots per pool buffer). */
  get tilePages(): number {
    return this.pool.slotsPerBuffer;
  }

  get numPages(): number {
    return this.pageCount;
  }

  get numSequences(): number {
    return this.seqs.length;
  }

  private assertUsable(): void {
    if (this.disposed) throw new TesseraError('E_STATE', 'KvCache used after dispose()');
  }

  /** Starts a new, empty sequence; returns its id (0, 1, 2, ...). */
  addSequence(): number {
    this.assertUsable();
    const s: SeqState = { pages: [], length: 0, tail: new Uint8Array(this.pageBytes) };
    if (this.dtype === 'int8') {
      s.tailK = new Float32Array(this.Hkv * this.pageSize * this.D);
      s.tailV = new Float32Array(this.Hkv * this.pageSize * this.Dv);
    }
    this.seqs.push(s);
    return this.seqs.length - 1;
  }

  private seq(id: number, argument = 'seq'): SeqState {
    checkInt(id, argument, { min: 0 });
    const s = this.seqs[id];
    if (s?.freed) fail('E_STATE', argument, 'was freed;', id, 'a live sequence');
    if (!s) fail('E_ARG', argument, 'is not a sequence of this cache;', id, `0..${this.seqs.length - 1}`);
    return s;
  }

  /** Tokens in sequence `seq`. */
  length(seq: number): number {
    return this.seq(seq).length;
  }

  /** Page ids of sequence `seq`, in token order. */
  pages(seq: number): readonly number[] {
    return this.seq(seq).pages;
  }

  /** The page table of `seqs` (default: all sequences), CSR as in FlashInfer. */
  pageTable(seqs: readonly number[] = this.seqs.flatMap((s, i) => (s.freed ? [] : [i]))): PageTable {
    const indptr = new Int32Array(seqs.length + 1);
    seqs.forEach((id, i) => (indptr[i + 1] = indptr[i]! + this.seq(id, `seqs[${i}]`).pages.length));
    const indices = new Int32Array(indptr[seqs.length]!);
    const lastPageLen = new Int32Array(seqs.length);
    seqs.forEach((id, i) => {
      const s = this.seqs[id]!;
      indices.set(s.pages, indptr[i]!);
      lastPageLen[i] = s.pages.length ? s.length - (s.pages.length - 1) * this.pageSize : 0;
    });
    return { indptr, indices, lastPageLen };
  }

  get summaryBytes(): number {
    return summaryGpuBytes(this);
  }

  /**
   * Appends `T` tokens to sequence `seq`. `k` is `[T, Hkv, D]`, `v` is `[T, Hkv, Dv]` row-major host
   * values, encoded to the cache's dtype. Everything is validated before anything changes, and the
   * append is atomic: if the store fails part-way (`E_IO`), the cache is exactly as before.
   *
   * @example
   * cache.append(seq, new Float32Array(T * Hkv * D), new Float32Array(T * Hkv * Dv));
   */
  append(seq: number, k: ArrayLike<number>, v: ArrayLike<number>): void {
    this.assertUsable();
    appendValues(this, this.seq(seq), k, v);
  }

  /**
   * Appends rows already encoded in the cache's dtype (fast path for f32/f16/bf16: no conversion).
   * `raw.dtype` must equal the cache's dtype (`E_DTYPE` otherwise; int8 takes values, use `append`).
   *
   * @example
   * cache.appendRaw(seq, { dtype: 'f16', k: kBits, v: vBits }); // Uint16Array, [T, Hkv, D]
   */
  appendRaw(seq: number, raw: RawRows): void {
    this.assertUsable();
    appendRawRows(this, this.seq(seq), raw);
  }

  /**
   * A new sequence sharing every full page of `seq` (copy-on-write: only the partial last page is
   * copied); both append independently afterwards. Returns its id. See `refs.ts`.
   *
   * @example
   * const agent = cache.fork(context);
   */
  fork(seq: number): number {
    this.assertUsable();
    return forkSequence(this, seq, this.seq(seq));
  }

  /**
   * Rewinds sequence `seq` to its first `length` tokens: pages past it are released, the new last
   * page is trimmed (summaries and checksum recomputed). Nothing changes if it fails.
   *
   * @example
   * cache.truncate(seq, cache.length(seq) - 512); // undo the last tool call
   */
  truncate(seq: number, length: number): void {
    this.assertUsable();
    truncateSequence(this, seq, this.seq(seq), length);
  }

  /** Frees sequence `seq`: pages no other sequence uses are freed (their ids reused by later appends). */
  freeSequence(seq: number): void {
    this.assertUsable();
    freeSequence(this, this.seq(seq));
  }

  /** Sequences referencing page `page` (0: a free page id). */
  refCount(page: number): number {
    return refCount(this, page);
  }

  /** The host mirror of the summaries: min/max `[pages, Hkv, 2, D]` and mean `[pages, Hkv, D]`, f16 bits. */
  summariesHost(): { minmax: Uint16Array; mean?: Uint16Array } {
    return summariesHost(this);
  }

  /** Checksum of page `page` as written. */
  checksum(page: number): number {
    checkPage(this, page);
    return this.sums[page]!;
  }

  /**
   * The bytes of a page from the host or disk tier (verified against its checksum when read from
   * disk or in debug mode: `E_CORRUPT` on mismatch). The returned view is valid until the next call.
   */
  hostPage(page: number, verify = this.debug || this.store.kind !== 'memory'): Uint8Array {
    return readHostPage(this, page, verify);
  }

  /**
   * Reads tokens `[start, start + count)` of sequence `seq` back as f32 values (from the host or disk
   * tier), `k` `[count, Hkv, D]`, `v` `[count, Hkv, Dv]`.
   *
   * @example
   * const { k, v } = cache.read(seq, 0, cache.length(seq));
   */
  read(seq: number, start: number, count: number): { k: Float32Array; v: Float32Array } {
    this.assertUsable();
    const s = this.seq(seq);
    checkInt(start, 'start', { min: 0 });
    checkInt(count, 'count', { min: 0 });
    if (start + count > s.length)
      fail('E_ARG', 'count', `reads past the end of sequence ${seq};`, start + count, `start + count <= ${s.length}`);
    const { Hkv, D, Dv, pageSize: P } = this;
    const k = new Float32Array(count * Hkv * D);
    const v = new Float32Array(count * Hkv * Dv);
    const hk = new Float32Array(P * D);
    const hv = new Float32Array(P * Dv);
    for (let t = start; t < start + count;) {
      const pi = Math.floor(t / P);
      const r0 = t - pi * P;
      const n = Math.min(P - r0, start + count - t);
      const bytes = this.hostPage(s.pages[pi]!);
      for (let h = 0; h < Hkv; h++) {
        readHeadRows(bytes, this.layout, 0, h, r0 + n, hk);
        readHeadRows(bytes, this.layout, 1, h, r0 + n, hv);
        for (let r = 0; r < n; r++) {
          k.set(hk.subarray((r0 + r) * D, (r0 + r + 1) * D), ((t - start + r) * Hkv + h) * D);
          v.set(hv.subarray((r0 + r) * Dv, (r0 + r + 1) * Dv), ((t - start + r) * Hkv + h) * Dv);
        }
      }
      t += n;
    }
    return { k, v };
  }

  /**
   * Makes `pages` resident on the GPU (uploading those that are not, evicting least recently used
   * unpinned pages) and returns their slots. All of `pages` must fit in the pool at once.
   */
  ensureResident(pages: ArrayLike<number>): Int32Array {
    this.assertUsable();
    return makeResident(this, pages);
  }

  /**
   * Reads a resident page back from the GPU and checks it against its checksum (`E_CORRUPT` on
   * mismatch). Returns false when the page is not resident.
   */
  async verifyGpuPage(page: number): Promise<boolean> {
    return verifyResidentPage(this, page);
  }

  /** Checks every page in the host/disk tier against its checksum; returns the pages checked. */
  verifyStore(): number {
    return verifyStorePages(this);
  }

  get hostBytes(): number {
    const seqBytes = this.seqs.length * this.pageBytes;
    return (
      this.store.hostBytes + this.summaryHostBytes + this.sums.byteLength + seqBytes + (this.staging?.byteLength ?? 0)
    );
  }

  stats(): KvCacheStats {
    let tokens = 0;
    for (const s of this.seqs) tokens += s.length;
    return {
      tokens,
      pages: this.pageCount,
      kvBytes: this.pageCount * this.pageBytes,
      summaryBytes: this.summaryBytes,
      poolBytes: this.pool.bytes,
      residentPages: this.pool.resident,
      evictions: this.pool.evictions,
      pagesUploaded: this.pagesUploaded,
      bytesUploaded: this.bytesUploaded,
      hostBytes: this.hostBytes,
      hostBytesPeak: Math.max(this.hostPeak, this.hostBytes),
    };
  }

  /**
   * Rebuilds this cache's GPU tier on another device from the host and disk tiers, which a lost
   * device never touches: pages come back from the store as they are needed, the summaries from
   * their host mirror. Use it to resume after `E_DEVICE_LOST` (or to move a cache between
   * devices). The returned cache owns the store and every sequence; this one is disposed (its GPU
   * buffers freed, its store left open for the new cache).
   *
   * @example
   * try { await exact.run(seq, q, out); }
   * catch (e) { if (e.code === 'E_DEVICE_LOST') cache = cache.moveTo(await requestDevice()); }
   */
  moveTo(device: DeviceLike): KvCache {
    this.assertUsable();
    releaseStore(this.store, this); // handed to the new cache
    let next: KvCache;
    try {
      next = new KvCache(ctxOf(device), { ...this.options, store: this.store });
    } catch (e) {
      claimStore(this.store, this);
      throw e;
    }
    for (const s of this.seqs) {
      next.seqs.push({
        pages: [...s.pages],
        length: s.length,
        tail: s.tail.slice(),
        tailK: s.tailK?.slice(),
        tailV: s.tailV?.slice(),
        freed: s.freed,
      });
    }
    adoptRefState(this, next);
    next.pageCount = this.pageCount;
    next.sums = this.sums.slice();
    next.minmaxHost = this.minmaxHost.slice();
    next.meanHost = this.meanHost.slice();
    next.hostPeak = this.hostPeak;
    if (next.pageCount > 0) uploadSummaries(next, 0, next.pageCount);
    next.seqs.forEach((s, i) => s.pages.length > 0 && next.tiers?.update(i, 0, s.pages.length - 1));
    this.releaseGpu();
    return next;
  }

  /** Host bytes the summaries hold: the page-summary mirror (empty with a `summaryStore`) plus the super-page copies. */
  get summaryHostBytes(): number {
    return this.minmaxHost.byteLength + this.meanHost.byteLength + (this.tiers?.hostBytes ?? 0);
  }

  private releaseGpu(): void {
    this.disposed = true;
    this.pool.destroy();
    this.tiers?.destroy();
    for (const b of [...this.minmaxGpu, ...this.meanGpu]) this.ctx.destroyBuffer(b);
    this.minmaxGpu.length = 0;
    this.meanGpu.length = 0;
  }

  /** Frees the GPU buffers and closes the store. Idempotent. */
  dispose(): void {
    if (this.disposed) return;
    this.releaseGpu();
    releaseStore(this.store, this);
    this.store.close();
    this.tiers?.store?.close();
  }
}
