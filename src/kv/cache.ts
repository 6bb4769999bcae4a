/**
 * The chunked KV cache: pages of `pageSize` tokens for `Hkv` heads, page tables in CSR form,
 * three tiers (GPU working set under a byte budget, host slabs, disk), per-page summaries on the
 * GPU (channel-wise min/max/mean of the keys, f16) and per-page checksums. See `README.md`.
 */
import { TesseraError, check, checkInt, fail } from '../errors.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../gpu/device.js';
import { checkHostValues, f32ToF16Bits } from '../tensor.js';
import {
  KV_DTYPES,
  KV_DTYPE_BYTES,
  bf16Table,
  f16Down,
  f16Table,
  f16Up,
  hash32,
  pageLayout,
  quantizePageInt8,
  readHeadRows,
  writeRows,
  type KvDType,
  type PageLayout,
} from './codec.js';
import { claimStore, releaseStore } from './claims.js';
import { GpuPagePool } from './pool.js';
import { MemoryStore, type Store } from './store.js';
import { SummaryTiers } from './summaries.js';
import {
  adoptRefState,
  afterMutate,
  allocPage,
  beforeAppend,
  forkSequence,
  freeSequence,
  refCount,
  refState,
  truncateSequence,
  unallocPages,
} from './refs.js';
import { GPUBufferUsageFlags } from '../gpu/flags.js';
import { planLoopLimit, withLoopLimit } from '../gpu/segments.js';

export interface KvCacheOptions {
  /** KV heads. */
  Hkv: number;
  /** Key head dim (a multiple of 4, at most 256). */
  D: number;
  /** Value head dim (default `D`; a multiple of 4, at most 256). */
  Dv?: number;
  /**
   * Tokens per page: a multiple of 16 in [16, 256]. Default 64: the Quest summaries cost
   * `1 / pageSize` of the KV bytes per scoring pass (1.6% at 64, 6% at 16), which is what a
   * 10M-token decode reads on top of its selected pages, while a 64-token page is still a fine
   * grain for selection (Quest uses 16, MoBA blocks are 512 to 4096).
   */
  pageSize?: number;
  /**
   * Storage dtype (default `f16`). `int8` keeps one scale per token, head and K/V block, so an
   * append never changes earlier tokens, and rejects NaN / Inf values with `E_NAN`.
   */
  dtype?: KvDType;
  /**
   * GPU bytes the cache may hold: summaries plus the page pool (default 256 MiB). Must hold the
   * summaries and at least one tile (one pool buffer) of pages, else `E_LIMIT`.
   */
  gpuBudgetBytes?: number;
  /** Pages per pool buffer = pages per streaming tile (default: 16 MiB worth, within the binding limit). */
  tilePages?: number;
  /** First pages of each sequence kept pinned on the GPU once loaded (attention sinks; default 1). */
  sinkPages?: number;
  /** Newest pages of each sequence kept pinned (the recent window; default 1). */
  recentPages?: number;
  /** Where pages live off the GPU: host slabs (default) or a disk store (`FileStore`, `OpfsStore`). */
  store?: Store;
  /** Host slab size of the default memory store (default 64 MiB). */
  slabBytes?: number;
  /** Largest GPU buffer of min/max summaries (default 128 MiB, capped by the binding limit); more pages use more buffers. */
  summaryChunkBytes?: number;
  /** Keep the per-page key mean (MoBA scoring) besides min/max (default true). */
  meanSummaries?: boolean;
  /**
   * 1 (default): every page's summaries on the GPU. 2: only super-page summaries (`superPages`
   * pages each) on the GPU, page summaries in the host tier (or `summaryStore`), brought up for the selected
   * super-pages (`src/kv/summaries.ts`; Quest mode only). GPU summary bytes shrink by `superPages`.
   */
  summaryLevels?: 1 | 2;
  /** Pages per super-page with `summaryLevels: 2` (default 64). */
  superPages?: number;
  /** Page summaries the GPU candidate buffer holds with `summaryLevels: 2` (default 4 MiB worth). */
  candidatePages?: number;
  /**
   * With `summaryLevels: 2`: a store for the page summaries (e.g. a second `FileStore`: the disk
   * tier), so host RAM holds only the super-page summaries (`src/kv/summaries.ts`). Closed with the cache.
   */
  summaryStore?: Store;
  /**
   * Verify page checksums on every host -> GPU upload (default false; pages read from a disk store
   * are always verified).
   */
  debug?: boolean;
  /**
   * Size every plan on this cache for this loop cap (lower than the device's only; an integer >=
   * 256): tests run the split paths llvmpipe needs (streaming, Quest, prefill) on any adapter with
   * it. Default: the device's `loopLimit`.
   */
  loopLimit?: number;
}

/** FlashInfer's paged-KV vocabulary: `indptr[n+1]`, `indices` (page ids), `lastPageLen[n]`. */
export interface PageTable {
  indptr: Int32Array;
  indices: Int32Array;
  lastPageLen: Int32Array;
}

interface Sequence {
  pages: number[];
  length: number;
  /** The page under construction (bytes), for the last, partial page. */
  tail: Uint8Array;
  /** int8 only: f32 values of the partial page `[Hkv, P, D]`, `[Hkv, P, Dv]`. */
  tailK?: Float32Array;
  tailV?: Float32Array;
  /** Set by `freeSequence` (refs.ts). */
  freed?: boolean;
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

const MiB = 2 ** 20;

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
  private readonly seqs: Sequence[] = [];
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
    if (!opts || typeof opts !== 'object') fail('E_ARG', 'options', 'is required;', opts, '{ Hkv, D, ... }');
    this.options = { ...opts };
    this.Hkv = checkInt(opts.Hkv, 'Hkv', { min: 1, max: 256 });
    this.D = checkInt(opts.D, 'D', { min: 4, max: 256 });
    this.Dv = checkInt(opts.Dv ?? opts.D, 'Dv', { min: 4, max: 256 });
    check(this.D % 4 === 0, 'D', 'a multiple of 4', this.D, 'E_UNSUPPORTED');
    check(this.Dv % 4 === 0, 'Dv', 'a multiple of 4', this.Dv, 'E_UNSUPPORTED');
    const P = opts.pageSize ?? 64;
    if (!Number.isInteger(P) || P < 16 || P > 256 || P % 16 !== 0) {
      fail('E_UNSUPPORTED', 'pageSize', 'is not a supported page size;', P, 'a multiple of 16 in [16, 256]');
    }
    this.pageSize = P;
    const dtype = opts.dtype ?? 'f16';
    check(KV_DTYPES.includes(dtype), 'dtype', `one of ${KV_DTYPES.join(', ')}`, dtype, 'E_DTYPE');
    this.dtype = dtype;
    this.layout = pageLayout(P, this.Hkv, this.D, this.Dv, dtype);
    this.pageBytes = this.layout.pageBytes;
    this.gpuBudgetBytes = checkInt(opts.gpuBudgetBytes ?? 256 * MiB, 'gpuBudgetBytes', {
      min: 1,
      max: Number.MAX_SAFE_INTEGER,
    });
    this.sinkPages = checkInt(opts.sinkPages ?? 1, 'sinkPages', { min: 0 });
    this.recentPages = checkInt(opts.recentPages ?? 1, 'recentPages', { min: 0 });
    this.meanSummaries = opts.meanSummaries ?? true;
    this.debug = opts.debug ?? false;
    const maxBind = Math.min(ctx.limits.maxStorageBufferBindingSize, ctx.limits.maxBufferSize);
    const tilePages =
      opts.tilePages ?? Math.max(1, Math.floor(Math.min(16 * MiB, maxBind, this.gpuBudgetBytes / 4) / this.pageBytes));
    checkInt(tilePages, 'tilePages', { min: 1 });
    if (tilePages * this.pageBytes > maxBind) {
      fail(
        'E_LIMIT',
        'tilePages',
        'makes a pool buffer larger than the device allows;',
        tilePages,
        `at most ${Math.floor(maxBind / this.pageBytes)} pages of ${this.pageBytes} bytes`,
      );
    }
    this.minmaxBytesPerPage = this.Hkv * 2 * this.D * 2;
    this.meanBytesPerPage = this.Hkv * this.D * 2;
    const chunkBytes = checkInt(opts.summaryChunkBytes ?? 128 * MiB, 'summaryChunkBytes', {
      min: this.minmaxBytesPerPage,
      max: Number.MAX_SAFE_INTEGER,
    });
    this.summaryChunkPages = Math.floor(Math.min(maxBind, chunkBytes) / this.minmaxBytesPerPage);
    if (tilePages * this.pageBytes > this.gpuBudgetBytes) {
      fail(
        'E_LIMIT',
        'gpuBudgetBytes',
        'is smaller than one tile of pages;',
        this.gpuBudgetBytes,
        `at least ${tilePages * this.pageBytes} bytes (tilePages ${tilePages} x ${this.pageBytes} bytes) plus the summaries`,
      );
    }
    if (opts.summaryStore !== undefined)
      check(
        opts.summaryLevels === 2 && typeof opts.summaryStore?.read === 'function',
        'summaryStore',
        'a Store, with summaryLevels: 2',
        typeof opts.summaryStore,
      );
    this.store = opts.store ?? new MemoryStore({ slabBytes: opts.slabBytes, align: this.pageBytes });
    claimStore(this.store, this); // one live cache per store (E_STATE naming `store`)
    try {
      this.pool = new GpuPagePool(ctx, this.pageBytes, tilePages, P);
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
    const s: Sequence = { pages: [], length: 0, tail: new Uint8Array(this.pageBytes) };
    if (this.dtype === 'int8') {
      s.tailK = new Float32Array(this.Hkv * this.pageSize * this.D);
      s.tailV = new Float32Array(this.Hkv * this.pageSize * this.Dv);
    }
    this.seqs.push(s);
    return this.seqs.length - 1;
  }

  private seq(id: number, argument = 'seq'): Sequence {
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

  /** Tokens held in page `page` (1..pageSize), from its sequence. */
  private pageLen(s: Sequence, i: number): number {
    return i < s.pages.length - 1 ? this.pageSize : s.length - i * this.pageSize;
  }

  /** GPU bytes the summaries take for `pages` pages (with room to grow). */
  private summaryBytesFor(pages: number): number {
    if (this.tiers) return this.tiers.bytesFor(pages);
    let total = 0;
    const per = this.minmaxBytesPerPage + (this.meanSummaries ? this.meanBytesPerPage : 0);
    let left = pages;
    while (left > 0) {
      const inChunk = Math.min(left, this.summaryChunkPages);
      total += this.chunkCapFor(inChunk) * per;
      left -= inChunk;
    }
    return total;
  }

  /** Summary chunk capacity for `pages` pages: 25% headroom in steps of 64 pages (reallocations stay rare). */
  private chunkCapFor(pages: number): number {
    return Math.min(Math.max(64, Math.ceil((pages * 1.25) / 64) * 64), this.summaryChunkPages);
  }

  get summaryBytes(): number {
    let b = 0;
    for (const x of [...this.minmaxGpu, ...this.meanGpu]) b += x.size;
    return b + (this.tiers?.gpuBytes ?? 0);
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
    const s = this.seq(seq);
    const T = this.rowsOf(k, v);
    if (this.dtype === 'int8') checkFiniteRows(k, v); // NaN / Inf have no int8 code (E_NAN, before anything changes)
    this.appendRows(s, T, (page, rowsDone, n, dstRow) => {
      if (this.dtype === 'int8') {
        copyHeadMajor(s.tailK!, k, rowsDone, n, dstRow, this.Hkv, this.D, this.pageSize);
        copyHeadMajor(s.tailV!, v, rowsDone, n, dstRow, this.Hkv, this.Dv, this.pageSize);
        quantizePageInt8(page, this.layout, s.tailK!, s.tailV!, dstRow + n);
      } else {
        writeRows(page, this.layout, 0, k, rowsDone, n, dstRow);
        writeRows(page, this.layout, 1, v, rowsDone, n, dstRow);
      }
    });
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
    const s = this.seq(seq);
    if (!raw || raw.dtype !== this.dtype || this.dtype === 'int8') {
      fail(
        'E_DTYPE',
        'raw.dtype',
        'does not match the cache;',
        raw?.dtype,
        this.dtype === 'int8' ? 'values through append() for an int8 cache' : `"${this.dtype}"`,
      );
    }
    const want = this.dtype === 'f32' ? Float32Array : Uint16Array;
    check(raw.k instanceof want, 'raw.k', `a ${want.name} for ${this.dtype}`, raw.k?.constructor?.name, 'E_DTYPE');
    check(raw.v instanceof want, 'raw.v', `a ${want.name} for ${this.dtype}`, raw.v?.constructor?.name, 'E_DTYPE');
    const T = this.rowsOf(raw.k, raw.v);
    const eb = KV_DTYPE_BYTES[this.dtype];
    const kb = new Uint8Array(raw.k.buffer, raw.k.byteOffset, raw.k.byteLength);
    const vb = new Uint8Array(raw.v.buffer, raw.v.byteOffset, raw.v.byteLength);
    const L = this.layout;
    this.appendRows(s, T, (page, rowsDone, n, dstRow) => {
      for (let h = 0; h < this.Hkv; h++) {
        if (this.Hkv === 1) {
          page.set(kb.subarray(rowsDone * this.D * eb, (rowsDone + n) * this.D * eb), dstRow * this.D * eb);
          page.set(
            vb.subarray(rowsDone * this.Dv * eb, (rowsDone + n) * this.Dv * eb),
            L.vOffset + dstRow * this.Dv * eb,
          );
          continue;
        }
        for (let r = 0; r < n; r++) {
          const ks = ((rowsDone + r) * this.Hkv + h) * this.D * eb;
          page.set(kb.subarray(ks, ks + this.D * eb), h * L.kHeadBytes + (dstRow + r) * this.D * eb);
          const vs = ((rowsDone + r) * this.Hkv + h) * this.Dv * eb;
          page.set(vb.subarray(vs, vs + this.Dv * eb), L.vOffset + h * L.vHeadBytes + (dstRow + r) * this.Dv * eb);
        }
      }
    });
  }

  private rowsOf(k: ArrayLike<number>, v: ArrayLike<number>): number {
    checkHostValues(k, 'k'); // a string's characters would be stored as NaN
    checkHostValues(v, 'v');
    const rowK = this.Hkv * this.D;
    const rowV = this.Hkv * this.Dv;
    if (k.length % rowK !== 0)
      fail(
        'E_SHAPE',
        'k',
        `length ${k.length} is not a whole number of [Hkv, D] rows;`,
        k.length,
        `a multiple of Hkv*D = ${rowK}`,
      );
    const T = k.length / rowK;
    if (v.length !== T * rowV)
      fail('E_SHAPE', 'v', `length ${v.length} does not match k's ${T} tokens;`, v.length, `T*Hkv*Dv = ${T * rowV}`);
    return T;
  }

  private appendRows(
    s: Sequence,
    T: number,
    fill: (page: Uint8Array, rowsDone: number, n: number, dstRow: number) => void,
  ): void {
    if (T === 0) return;
    const P = this.pageSize;
    const newPages = Math.ceil((s.length + T) / P) - s.pages.length;
    // Budget check for the summaries before anything changes.
    const needSummary = this.summaryBytesFor(this.pageCount + newPages);
    if (needSummary + this.pool.bufferBytes > this.gpuBudgetBytes) {
      fail(
        'E_LIMIT',
        'gpuBudgetBytes',
        `cannot hold the summaries of ${this.pageCount + newPages} pages plus one tile;`,
        this.gpuBudgetBytes,
        `at least ${needSummary + this.pool.bufferBytes} bytes`,
      );
    }
    const firstTouched = s.length % P === 0 ? s.pages.length : s.pages.length - 1;
    // Atomic: the store writes come first, the page already holding tokens (a partial last page,
    // rewritten in place) after every new page; if any write (or the fill) throws, the sequence,
    // page ids, reference counts and pins are restored and that page's old bytes written back, so
    // the cache is exactly as before and every earlier token reads back bit-exactly.
    const undoCow = beforeAppend(this, s); // copy-on-write of a shared (or committed, durable) partial last page
    const undo = {
      pages: s.pages.length,
      length: s.length,
      pageCount: this.pageCount,
      tail: s.length % P ? this.saveTail(s) : undefined,
    };
    const fresh: number[] = [];
    let inPlace: { page: number; len: number; bytes?: Uint8Array } | undefined;
    let inPlaceTried = false;
    let done = 0;
    const touched: number[] = [];
    try {
      while (done < T) {
        const dstRow = s.length % P;
        if (dstRow === 0) {
          if (inPlace && !inPlace.bytes) inPlace.bytes = s.tail.slice();
          const id = allocPage(this);
          fresh.push(id);
          s.pages.push(id);
          s.tail.fill(0);
          if (s.tailK) {
            s.tailK.fill(0);
            s.tailV!.fill(0);
          }
          if (s.pages.length <= this.sinkPages) this.pool.pin(id);
        }
        const n = Math.min(T - done, P - dstRow);
        fill(s.tail, done, n, dstRow);
        s.length += n;
        done += n;
        const idx = s.pages.length - 1;
        const page = s.pages[idx]!;
        if (!fresh.includes(page)) inPlace = { page, len: this.pageLen(s, idx) };
        else this.commitPage(page, s.tail, this.pageLen(s, idx));
        touched.push(page);
      }
      if (inPlace) {
        inPlaceTried = true;
        this.commitPage(inPlace.page, inPlace.bytes ?? s.tail, inPlace.len);
      }
    } catch (e) {
      for (const p of fresh) this.pool.unpin(p);
      s.pages.length = undo.pages;
      s.length = undo.length;
      unallocPages(this, fresh, undo.pageCount);
      this.pageCount = undo.pageCount;
      if (undo.tail) {
        this.restoreTail(s, undo.tail);
        if (inPlaceTried) {
          try {
            this.store.write(s.pages[s.pages.length - 1]! * this.pageBytes, s.tail);
          } catch {
            // The store refuses even the old bytes: the first error is the one to report, and the
            // page's checksum (unchanged) makes any read of it E_CORRUPT, never wrong values.
          }
        }
      }
      undoCow();
      throw e;
    }
    // The recent window: pin the newest pages, release those that left it (sinks stay).
    const np = s.pages.length;
    for (let i = Math.max(this.sinkPages, firstTouched - this.recentPages); i < np - this.recentPages; i++)
      this.pool.unpin(s.pages[i]!);
    for (let i = Math.max(0, np - this.recentPages); i < np; i++) this.pool.pin(s.pages[i]!);
    let lo = touched[0]!;
    let hi = lo;
    // reused page ids are not in order
    for (const p of touched) {
      lo = Math.min(lo, p);
      hi = Math.max(hi, p);
    }
    this.uploadSummaries(lo, hi + 1);
    this.tiers?.update(this.seqs.indexOf(s), firstTouched, np - 1);
    // A resident page that changed is re-uploaded.
    for (const p of touched) {
      const slot = this.pool.slotOf(p);
      if (slot >= 0) {
        const loc = this.pool.location(slot);
        this.ctx.device.queue.writeBuffer(loc.buffer, loc.byteOffset, this.hostPage(p) as Uint8Array<ArrayBuffer>);
      }
    }
    this.hostPeak = Math.max(this.hostPeak, this.hostBytes);
    afterMutate(this);
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

  /** A copy of the sequence's partial page (and its int8 values), for an append to undo. */
  private saveTail(s: Sequence): { tail: Uint8Array; k?: Float32Array; v?: Float32Array } {
    return { tail: s.tail.slice(), k: s.tailK?.slice(), v: s.tailV?.slice() };
  }

  private restoreTail(s: Sequence, t: { tail: Uint8Array; k?: Float32Array; v?: Float32Array }): void {
    s.tail.set(t.tail);
    if (t.k) s.tailK!.set(t.k);
    if (t.v) s.tailV!.set(t.v);
  }

  /** Writes a page to the store and refreshes its checksum and summary mirror. */
  private commitPage(page: number, bytes: Uint8Array, len: number): void {
    this.store.write(page * this.pageBytes, bytes);
    if (page >= this.sums.length) {
      const a = new Uint32Array(Math.max(page + 1, this.sums.length * 2, 1024));
      a.set(this.sums);
      this.sums = a;
    }
    this.sums[page] = hash32(bytes);
    this.summarize(page, bytes, len);
  }

  private summarize(page: number, bytes: Uint8Array, len: number): void {
    const D = this.D;
    const Hkv = this.Hkv;
    const need = (page + 1) * Hkv * 2 * D;
    // Page summaries held in the tiers' store: this page's record is filled, then written there.
    const rec = this.tiers?.store ? this.tiers.record : undefined;
    const at = rec ? 0 : page;
    if (!rec && need > this.minmaxHost.length) {
      const cap = Math.max(need, this.minmaxHost.length * 2, 64 * Hkv * 2 * D);
      const a = new Uint16Array(cap);
      a.set(this.minmaxHost);
      this.minmaxHost = a;
      if (this.meanSummaries) {
        const b = new Uint16Array(cap / 2);
        b.set(this.meanHost);
        this.meanHost = b;
      }
    }
    const mmDst = rec ?? this.minmaxHost; // after the mirror grew
    const meanDst = rec ? rec.subarray(Hkv * 2 * D) : this.meanHost;
    const mn = new Float32Array(D);
    const mx = new Float32Array(D);
    const sm = new Float64Array(D);
    const rows = new Float32Array(len * D);
    const fast16 = this.dtype === 'f16' || this.dtype === 'bf16';
    const lut = this.dtype === 'f16' ? f16Table() : this.dtype === 'bf16' ? bf16Table() : undefined;
    for (let h = 0; h < Hkv; h++) {
      mn.fill(Infinity);
      mx.fill(-Infinity);
      sm.fill(0);
      if (fast16) {
        const u = new Uint16Array(bytes.buffer, bytes.byteOffset + h * this.layout.kHeadBytes, len * D);
        for (let r = 0, i = 0; r < len; r++) {
          for (let d = 0; d < D; d++, i++) {
            const x = lut![u[i]!]!;
            if (x < mn[d]!) mn[d] = x;
            if (x > mx[d]!) mx[d] = x;
            sm[d] += x;
          }
        }
      } else {
        readHeadRows(bytes, this.layout, 0, h, len, rows);
        for (let r = 0, i = 0; r < len; r++) {
          for (let d = 0; d < D; d++, i++) {
            const x = rows[i]!;
            if (x < mn[d]!) mn[d] = x;
            if (x > mx[d]!) mx[d] = x;
            sm[d] += x;
          }
        }
      }
      const o = (at * Hkv + h) * 2 * D;
      for (let d = 0; d < D; d++) {
        mmDst[o + d] = f16Down(mn[d]!);
        mmDst[o + D + d] = f16Up(mx[d]!);
      }
      if (this.meanSummaries) {
        const m = (at * Hkv + h) * D;
        for (let d = 0; d < D; d++) meanDst[m + d] = f32ToF16Bits(Math.max(-65504, Math.min(65504, sm[d]! / len)));
      }
    }
    if (rec) this.tiers!.putPage(page);
  }

  /** Uploads the summaries of pages [lo, hi) to the GPU chunks, growing them as needed. */
  private uploadSummaries(lo: number, hi: number): void {
    if (this.tiers) return; // two levels: page summaries stay on the host (SummaryTiers.update)
    const C = this.summaryChunkPages;
    for (let c = Math.floor(lo / C); c * C < hi; c++) {
      const inChunk = Math.min(this.pageCount - c * C, C);
      if ((this.summaryCap[c] ?? 0) < inChunk) {
        const cap = this.chunkCapFor(inChunk);
        // Make room inside the budget: shrink the pool if needed (it keeps at least one tile).
        const extra =
          (cap - (this.summaryCap[c] ?? 0)) *
          (this.minmaxBytesPerPage + (this.meanSummaries ? this.meanBytesPerPage : 0));
        while (
          this.summaryBytes + this.pool.bytes + extra > this.gpuBudgetBytes &&
          this.pool.buffers.length > 1 &&
          this.pool.removeBuffer()
        );
        this.ctx.destroyBuffer(this.minmaxGpu[c]);
        this.ctx.destroyBuffer(this.meanGpu[c]);
        const usage = GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST | GPUBufferUsageFlags.COPY_SRC;
        this.minmaxGpu[c] = this.ctx.createBuffer({
          size: cap * this.minmaxBytesPerPage,
          usage,
          label: `tessera.kv.minmax${c}`,
        });
        if (this.meanSummaries)
          this.meanGpu[c] = this.ctx.createBuffer({
            size: cap * this.meanBytesPerPage,
            usage,
            label: `tessera.kv.mean${c}`,
          });
        this.summaryCap[c] = cap;
        // Rewrite the whole chunk from the host mirror.
        this.writeSummaryRange(c, c * C, c * C + inChunk);
      } else {
        this.writeSummaryRange(c, Math.max(lo, c * C), Math.min(hi, (c + 1) * C));
      }
    }
  }

  private writeSummaryRange(c: number, lo: number, hi: number): void {
    const C = this.summaryChunkPages;
    const q = this.ctx.device.queue;
    const mmHalves = this.minmaxBytesPerPage / 2;
    q.writeBuffer(
      this.minmaxGpu[c]!,
      (lo - c * C) * this.minmaxBytesPerPage,
      this.minmaxHost,
      lo * mmHalves,
      (hi - lo) * mmHalves,
    );
    if (this.meanSummaries) {
      const mh = this.meanBytesPerPage / 2;
      q.writeBuffer(this.meanGpu[c]!, (lo - c * C) * this.meanBytesPerPage, this.meanHost, lo * mh, (hi - lo) * mh);
    }
  }

  /** The host mirror of the summaries: min/max `[pages, Hkv, 2, D]` and mean `[pages, Hkv, D]`, f16 bits. */
  summariesHost(): { minmax: Uint16Array; mean?: Uint16Array } {
    if (this.tiers?.store) return this.tiers.readAll(this.pageCount); // read back from the disk tier (a copy)
    return {
      minmax: this.minmaxHost.subarray(0, this.pageCount * this.Hkv * 2 * this.D),
      mean: this.meanSummaries ? this.meanHost.subarray(0, this.pageCount * this.Hkv * this.D) : undefined,
    };
  }

  /** Checksum of page `page` as written. */
  checksum(page: number): number {
    this.checkPage(page);
    return this.sums[page]!;
  }

  private checkPage(page: number, argument = 'page'): void {
    checkInt(page, argument, { min: 0 });
    if (page >= this.pageCount) fail('E_ARG', argument, 'is past the last page;', page, `0..${this.pageCount - 1}`);
  }

  /**
   * The bytes of a page from the host or disk tier (verified against its checksum when read from
   * disk or in debug mode: `E_CORRUPT` on mismatch). The returned view is valid until the next call.
   */
  hostPage(page: number, verify = this.debug || this.store.kind !== 'memory'): Uint8Array {
    this.checkPage(page);
    let bytes = this.store.view?.(page * this.pageBytes, this.pageBytes);
    if (!bytes) {
      if (!this.staging || this.staging.byteLength < this.pageBytes) this.staging = new Uint8Array(this.pageBytes);
      bytes = this.staging.subarray(0, this.pageBytes);
      this.store.read(page * this.pageBytes, bytes);
    }
    if (verify) this.verifyBytes(page, bytes, this.store.kind === 'memory' ? 'host' : 'disk');
    return bytes;
  }

  private verifyBytes(page: number, bytes: Uint8Array, tier: string): void {
    const h = hash32(bytes);
    if (h !== this.sums[page]) {
      throw new TesseraError(
        'E_CORRUPT',
        `page ${page} failed its checksum on the ${tier} tier (0x${h.toString(16)} != 0x${this.sums[page]!.toString(16)})`,
        {
          argument: 'page',
          actual: page,
        },
      );
    }
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
    const n = pages.length;
    const slots = new Int32Array(n);
    const missing: number[] = [];
    for (let i = 0; i < n; i++) {
      const p = pages[i]!;
      const s = this.pool.slotOf(p);
      slots[i] = s;
      if (s >= 0) this.pool.touch(p);
      else missing.push(i);
    }
    if (missing.length === 0) return slots;
    // Grow the pool within the budget when nothing is free.
    const per = this.pool.bufferBytes;
    // Resident, unpinned pages of this request sit in the LRU list but must not be evicted.
    let inUse = 0;
    for (let i = 0; i < n; i++) if (slots[i]! >= 0 && !this.pool.isPinned(pages[i]!)) inUse++;
    const room = () => this.pool.available - inUse;
    while (
      room() < missing.length &&
      this.summaryBytes + this.pool.bytes + per <= this.gpuBudgetBytes &&
      this.pool.addBuffer()
    );
    if (room() < missing.length) {
      // Last resort before E_LIMIT: pinned pages outside this request give way (see evictPinned),
      // so any request of at most one pool's capacity always makes progress under the budget.
      const keep = new Set<number>(Array.from(pages));
      while (room() < missing.length && this.pool.evictPinned(keep));
    }
    if (room() < missing.length) {
      fail(
        'E_LIMIT',
        'pages',
        `${missing.length} new pages do not fit in the GPU working set (${room()} slots free or evictable);`,
        n,
        `at most ${room()} new pages at once (raise gpuBudgetBytes)`,
      );
    }
    for (const i of missing) slots[i] = this.pool.assign(pages[i]!);
    // Upload, coalescing runs of consecutive pages that land in consecutive slots of one buffer.
    const q = this.ctx.device.queue;
    let r = 0;
    while (r < missing.length) {
      let e = r + 1;
      const i0 = missing[r]!;
      const p0 = pages[i0]!;
      const loc = this.pool.location(slots[i0]!);
      while (
        e < missing.length &&
        pages[missing[e]!] === p0 + (e - r) &&
        slots[missing[e]!] === slots[i0]! + (e - r) &&
        loc.index + (e - r) < this.pool.slotsPerBuffer
      )
        e++;
      const count = e - r;
      const bytes = count * this.pageBytes;
      let src = this.store.view?.(p0 * this.pageBytes, bytes);
      if (!src) {
        if (!this.staging || this.staging.byteLength < bytes)
          this.staging = new Uint8Array(Math.max(bytes, this.pageBytes));
        src = this.staging.subarray(0, bytes);
        this.store.read(p0 * this.pageBytes, src);
      }
      if (this.debug || this.store.kind !== 'memory') {
        for (let j = 0; j < count; j++)
          this.verifyBytes(
            p0 + j,
            src.subarray(j * this.pageBytes, (j + 1) * this.pageBytes),
            this.store.kind === 'memory' ? 'host' : 'disk',
          );
      }
      q.writeBuffer(loc.buffer, loc.byteOffset, src as Uint8Array<ArrayBuffer>);
      this.pagesUploaded += count;
      this.bytesUploaded += bytes;
      r = e;
    }
    return slots;
  }

  /**
   * Reads a resident page back from the GPU and checks it against its checksum (`E_CORRUPT` on
   * mismatch). Returns false when the page is not resident.
   */
  async verifyGpuPage(page: number): Promise<boolean> {
    this.checkPage(page);
    const slot = this.pool.slotOf(page);
    if (slot < 0) return false;
    const loc = this.pool.location(slot);
    const bytes = new Uint8Array(await this.ctx.readback(loc.buffer, this.pageBytes, loc.byteOffset));
    this.verifyBytes(page, bytes, 'GPU');
    return true;
  }

  /** Checks every page in the host/disk tier against its checksum; returns the pages checked. */
  verifyStore(): number {
    const refs = refState(this).refs;
    let n = 0;
    for (let p = 0; p < this.pageCount; p++) {
      if (!refs[p]) continue;
      this.hostPage(p, true);
      n++;
    }
    return n;
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
    if (next.pageCount > 0) next.uploadSummaries(0, next.pageCount);
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

/** int8 pages: every value of `k` and `v` must be finite (`E_NAN` naming the argument and index). */
function checkFiniteRows(k: ArrayLike<number>, v: ArrayLike<number>): void {
  for (const [x, name] of [
    [k, 'k'],
    [v, 'v'],
  ] as const) {
    for (let i = 0; i < x.length; i++) {
      const e = x[i];
      if (typeof e !== 'number' || !Number.isFinite(e)) {
        throw new TesseraError(
          'E_NAN',
          `${name}[${i}]: is ${String(e)}; an int8 cache stores finite values only (the page scales could not hold it)`,
          {
            argument: name,
            actual: e,
            expected: 'finite numbers for an int8 cache',
          },
        );
      }
    }
  }
}

function copyHeadMajor(
  dst: Float32Array,
  src: ArrayLike<number>,
  srcRow: number,
  n: number,
  dstRow: number,
  Hkv: number,
  W: number,
  P: number,
): void {
  for (let r = 0; r < n; r++) {
    for (let h = 0; h < Hkv; h++) {
      const s = ((srcRow + r) * Hkv + h) * W;
      const d = (h * P + dstRow + r) * W;
      for (let i = 0; i < W; i++) dst[d + i] = src[s + i]!;
    }
  }
}
