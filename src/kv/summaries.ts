/**
 * Two-level page summaries (`summaryLevels: 2`): the per-page min/max summaries stay in the host
 * tier (the cache's host mirror, f16) or, with a `summaryStore`, in that store (a file beside the
 * pages: the disk tier, one record per page id), and only super-page summaries live on the GPU
 * (and, 1 / G of the page summaries' bytes, on the host): super-page
 * j of a sequence bounds its pages [jG, jG + G) channel by channel (min of the pages' mins, max of
 * their maxes, still f16 values). Quest scores super-pages first; the page summaries of the
 * selected super-pages are brought to the GPU into a fixed candidate buffer and scored there. GPU
 * summary bytes are `1 / G` of the single-level ones plus the candidate buffer, inside the
 * cache's `gpuBudgetBytes`.
 *
 * Exactness: a super-page's Quest bound sum_d max(q_d max_d, q_d min_d) is at least the bound of
 * each of its pages (every term is monotone in min and max, and f32 rounding is monotone, so this
 * holds for the f32 scores the kernel computes too). Selection that visits super-pages in
 * descending score until the k-th best page score found is at least the best unvisited
 * super-page's score is exactly single-level Quest's selection (`src/stream/quest-levels.ts`).
 */
import { checkInt } from '../errors.js';
import type { TesseraDevice } from '../gpu/device.js';
import { f16Table } from './codec.js';
import type { KvCache } from './cache.js';
import { GPUBufferUsageFlags } from '../gpu/flags.js';
import type { Store } from './store.js';

const MiB = 2 ** 20;

export interface SummaryTiersOptions {
  /** Pages per super-page (default 64). */
  superPages?: number;
  /** Page summaries the GPU candidate buffer holds (default: 4 MiB worth, a multiple of `superPages`). */
  candidatePages?: number;
  /**
   * Where the page summaries live: a {@link Store} (e.g. a `FileStore` beside the pages' file)
   * holding one record per page id (`[Hkv, 2, D]` min/max f16, then `[Hkv, D]` mean f16 with
   * `meanSummaries`) at `pageId * recordBytes`; host RAM then holds only the super-page summaries
   * and one candidate batch. Default: the cache's host mirror. The cache closes it on `dispose()`.
   */
  store?: Store;
}

interface SeqSupers {
  /** `[supers, Hkv, 2, D]` f16 bits (min then max), host. */
  host: Uint16Array<ArrayBuffer>;
  count: number;
  gpu?: GPUBuffer;
  cap: number;
}

export class SummaryTiers {
  readonly superPages: number;
  readonly candidatePages: number;
  /** `[candidatePages, Hkv, 2, D]` f16: page summaries brought up for scoring. */
  readonly candidates: GPUBuffer;
  private readonly cache: KvCache;
  private readonly ctx: TesseraDevice;
  private readonly seqs: SeqSupers[] = [];
  private bytesNow = 0;
  /** Largest GPU bytes the summaries (super-pages and candidates) have held. */
  bytesPeak = 0;
  /** Page-summary bytes written to the candidate buffer so far. */
  candidateBytesUploaded = 0;
  /** The page summaries' store (`undefined`: the cache's host mirror). */
  readonly store?: Store;
  /** Bytes of one page's record in `store` (min/max, then mean with meanSummaries). */
  readonly recordBytes: number;
  /** The record `summarize` fills for one page before {@link putPage} (u16 words: min/max, then mean). */
  readonly record: Uint16Array<ArrayBuffer>;
  /** Page-summary bytes read from `store` so far (super-page rebuilds and candidates). */
  storeBytesRead = 0;
  private readBuf: Uint16Array<ArrayBuffer> = new Uint16Array(0);

  constructor(cache: KvCache, opts: SummaryTiersOptions = {}) {
    this.cache = cache;
    this.ctx = cache.ctx;
    this.superPages = checkInt(opts.superPages ?? 64, 'superPages', { min: 2, max: 4096 });
    const per = cache.minmaxBytesPerPage;
    const G = this.superPages;
    const dflt = Math.max(G, Math.floor((4 * MiB) / per / G) * G);
    this.candidatePages = checkInt(opts.candidatePages ?? dflt, 'candidatePages', { min: 1 });
    const maxBind = Math.min(this.ctx.limits.maxStorageBufferBindingSize, this.ctx.limits.maxBufferSize);
    this.candidatePages = Math.min(this.candidatePages, Math.floor(maxBind / per));
    this.candidates = this.ctx.createBuffer({
      size: this.candidatePages * per,
      usage: GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST,
      label: 'tessera.kv.summaryCandidates',
    });
    this.bytesNow = this.candidates.size;
    this.bytesPeak = this.bytesNow;
    this.store = opts.store;
    this.recordBytes = per + (cache.meanSummaries ? cache.meanBytesPerPage : 0);
    this.record = new Uint16Array(this.store ? this.recordBytes / 2 : 0);
  }

  /** Host bytes the summary tiers hold: super-page copies and scratch (not the cache's host mirror). */
  get hostBytes(): number {
    let b = this.record.byteLength + this.readBuf.byteLength;
    for (const s of this.seqs) b += s.host.byteLength;
    return b;
  }

  /** Writes {@link record} (filled by the cache for page id `page`) to the store. */
  putPage(page: number): void {
    this.store!.write(page * this.recordBytes, new Uint8Array(this.record.buffer));
  }

  /**
   * The min/max summaries of `pageIds` (global page ids) as `[n, Hkv, 2, D]` f16 bits in `dst`,
   * from the host mirror or the store (contiguous ids in one read each).
   */
  private rows(pageIds: ArrayLike<number>, dst: Uint16Array): void {
    const w = this.cache.Hkv * 2 * this.cache.D;
    const n = pageIds.length;
    if (!this.store) {
      const mm = this.cache.summariesHost().minmax;
      for (let i = 0; i < n; i++) dst.set(mm.subarray(pageIds[i]! * w, (pageIds[i]! + 1) * w), i * w);
      return;
    }
    const rw = this.recordBytes / 2;
    for (let i = 0; i < n;) {
      let j = i + 1;
      while (j < n && pageIds[j] === pageIds[j - 1]! + 1) j++;
      const need = (j - i) * rw;
      if (this.readBuf.length < need) this.readBuf = new Uint16Array(Math.max(need, 64 * rw));
      this.store.read(pageIds[i]! * this.recordBytes, new Uint8Array(this.readBuf.buffer, 0, need * 2));
      this.storeBytesRead += need * 2;
      for (let t = 0; t < j - i; t++) dst.set(this.readBuf.subarray(t * rw, t * rw + w), (i + t) * w);
      i = j;
    }
  }

  /** Every page's summaries read back (min/max `[pages, Hkv, 2, D]`, mean `[pages, Hkv, D]`): for a store-held tier's `summariesHost()`. */
  readAll(pages: number): { minmax: Uint16Array; mean?: Uint16Array } {
    const { Hkv, D } = this.cache;
    const w = Hkv * 2 * D;
    const minmax = new Uint16Array(pages * w);
    const mean = this.cache.meanSummaries ? new Uint16Array(pages * Hkv * D) : undefined;
    const rw = this.recordBytes / 2;
    const batch = 4096;
    const buf = new Uint16Array(batch * rw);
    for (let p = 0; p < pages; p += batch) {
      const m = Math.min(batch, pages - p);
      this.store!.read(p * this.recordBytes, new Uint8Array(buf.buffer, 0, m * rw * 2));
      for (let t = 0; t < m; t++) {
        minmax.set(buf.subarray(t * rw, t * rw + w), (p + t) * w);
        mean?.set(buf.subarray(t * rw + w, (t + 1) * rw), (p + t) * Hkv * D);
      }
    }
    return { minmax, mean };
  }

  /** GPU bytes the summaries hold now. */
  get gpuBytes(): number {
    return this.bytesNow;
  }

  /** GPU bytes for a sequence of `pages` pages' super-pages (with headroom) plus the candidate buffer: a bound for budget checks. */
  bytesFor(pages: number): number {
    const supers = Math.ceil(pages / this.superPages);
    return this.capFor(supers) * this.cache.minmaxBytesPerPage + this.candidatePages * this.cache.minmaxBytesPerPage;
  }

  private capFor(supers: number): number {
    return Math.max(64, Math.ceil((supers * 1.25) / 64) * 64);
  }

  /** Super-pages of sequence `seq` now. */
  count(seq: number): number {
    return this.seqs[seq]?.count ?? 0;
  }

  /** The GPU buffer of sequence `seq`'s super-page summaries `[supers, Hkv, 2, D]` (f16). */
  gpu(seq: number): GPUBuffer | undefined {
    return this.seqs[seq]?.gpu;
  }

  /** Host copy of super-page `j` of `seq` (f16 bits `[Hkv, 2, D]`). */
  hostSuper(seq: number, j: number): Uint16Array {
    const s = this.seqs[seq]!;
    const w = this.cache.Hkv * 2 * this.cache.D;
    return s.host.subarray(j * w, (j + 1) * w);
  }

  /**
   * Recomputes the super-pages that hold pages [firstIndex, lastIndex] of sequence `seq` (indices
   * within the sequence) from the host page summaries and writes them to the GPU.
   */
  update(seq: number, firstIndex: number, lastIndex: number): void {
    const { Hkv, D } = this.cache;
    const G = this.superPages;
    const pages = this.cache.pages(seq);
    const n = pages.length;
    while (this.seqs.length <= seq) this.seqs.push({ host: new Uint16Array(0), count: 0, cap: 0 });
    const s = this.seqs[seq]!;
    const supers = Math.ceil(n / G);
    const w = Hkv * 2 * D;
    if (s.host.length < supers * w) {
      const a = new Uint16Array(Math.max(supers * w, s.host.length * 2, 64 * w));
      a.set(s.host);
      s.host = a;
    }
    s.count = supers;
    const lut = f16Table();
    const j0 = Math.floor(firstIndex / G);
    const j1 = Math.floor(lastIndex / G);
    const mm = new Uint16Array(G * w);
    for (let j = j0; j <= j1; j++) {
      const out = s.host.subarray(j * w, (j + 1) * w);
      this.rows(pages.slice(j * G, Math.min(n, (j + 1) * G)), mm);
      for (let h = 0; h < Hkv; h++) {
        for (let d = 0; d < D; d++) {
          let mn = Infinity;
          let mnBits = 0x7c00;
          let mx = -Infinity;
          let mxBits = 0xfc00;
          for (let i = 0; i < Math.min(n, (j + 1) * G) - j * G; i++) {
            const o = (i * Hkv + h) * 2 * D;
            const a = mm[o + d]!;
            const b = mm[o + D + d]!;
            if (lut[a]! < mn) {
              mn = lut[a]!;
              mnBits = a;
            }
            if (lut[b]! > mx) {
              mx = lut[b]!;
              mxBits = b;
            }
          }
          out[h * 2 * D + d] = mnBits;
          out[h * 2 * D + D + d] = mxBits;
        }
      }
    }
    const per = this.cache.minmaxBytesPerPage;
    if (s.cap < supers) {
      const cap = this.capFor(supers);
      this.ctx.destroyBuffer(s.gpu);
      this.bytesNow -= s.cap * per;
      s.gpu = this.ctx.createBuffer({
        size: cap * per,
        usage: GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST,
        label: `tessera.kv.supers${seq}`,
      });
      s.cap = cap;
      this.bytesNow += cap * per;
      this.bytesPeak = Math.max(this.bytesPeak, this.bytesNow);
      this.ctx.device.queue.writeBuffer(s.gpu, 0, s.host, 0, supers * w);
    } else {
      this.ctx.device.queue.writeBuffer(s.gpu!, j0 * per, s.host, j0 * w, (j1 - j0 + 1) * w);
    }
  }

  /**
   * Writes the page summaries of `pageIds` (global page ids) into candidate slots
   * [slot0, slot0 + pageIds.length) of the candidate buffer, from the host or disk tier.
   */
  uploadCandidates(pageIds: ArrayLike<number>, slot0: number, scratch: Uint16Array<ArrayBuffer>): void {
    const { Hkv, D } = this.cache;
    const w = Hkv * 2 * D;
    const n = pageIds.length;
    this.rows(pageIds, scratch);
    this.ctx.device.queue.writeBuffer(this.candidates, slot0 * w * 2, scratch, 0, n * w);
    this.candidateBytesUploaded += n * w * 2;
  }

  destroy(): void {
    for (const s of this.seqs) this.ctx.destroyBuffer(s.gpu);
    this.ctx.destroyBuffer(this.candidates);
    this.seqs.length = 0;
    this.bytesNow = 0;
  }
}
