/**
 * Per-page key summaries with one summary level (`summaryLevels: 1`): the channel-wise min / max
 * (rounded outward to f16, so Quest's score stays an upper bound) and mean of each page's keys,
 * computed on the host as pages are written, kept in a host mirror and uploaded to GPU chunks of at
 * most `summaryChunkPages` pages (grown with 25% headroom, the pool shrinking to make room within
 * the budget). With two levels the page summaries go to `SummaryTiers` (summaries.ts) instead.
 */
import { f32ToF16Bits } from '../tensor.js';
import { GPUBufferUsageFlags } from '../gpu/flags.js';
import { bf16Table, f16Down, f16Table, f16Up, readHeadRows } from './codec.js';
import type { KvCache } from './cache.js';
import { internals, type CacheInternals } from './internals.js';

/** Summary chunk capacity for `pages` pages: 25% headroom in steps of 64 pages (reallocations stay rare). */
function chunkCapFor(c: CacheInternals, pages: number): number {
  return Math.min(Math.max(64, Math.ceil((pages * 1.25) / 64) * 64), c.summaryChunkPages);
}

/** GPU bytes the summaries take for `pages` pages (with room to grow). */
export function summaryBytesFor(cache: KvCache, pages: number): number {
  const c = internals(cache);
  if (c.tiers) return c.tiers.bytesFor(pages);
  let total = 0;
  const per = c.minmaxBytesPerPage + (c.meanSummaries ? c.meanBytesPerPage : 0);
  let left = pages;
  while (left > 0) {
    const inChunk = Math.min(left, c.summaryChunkPages);
    total += chunkCapFor(c, inChunk) * per;
    left -= inChunk;
  }
  return total;
}

/** GPU bytes the summary buffers hold now (both levels). */
export function summaryGpuBytes(cache: KvCache): number {
  const c = internals(cache);
  let b = 0;
  for (const x of [...c.minmaxGpu, ...c.meanGpu]) b += x.size;
  return b + (c.tiers?.gpuBytes ?? 0);
}

/**
 * Computes the summaries of page `page` (its first `len` rows, from the stored bytes) into the host
 * mirror, growing it as needed; with a `summaryStore` the page's record is written there instead.
 */
export function summarize(cache: KvCache, page: number, bytes: Uint8Array, len: number): void {
  const c = internals(cache);
  const D = c.D;
  const Hkv = c.Hkv;
  const need = (page + 1) * Hkv * 2 * D;
  // Page summaries held in the tiers' store: this page's record is filled, then written there.
  const rec = c.tiers?.store ? c.tiers.record : undefined;
  const at = rec ? 0 : page;
  if (!rec && need > c.minmaxHost.length) {
    const cap = Math.max(need, c.minmaxHost.length * 2, 64 * Hkv * 2 * D);
    const a = new Uint16Array(cap);
    a.set(c.minmaxHost);
    c.minmaxHost = a;
    if (c.meanSummaries) {
      const b = new Uint16Array(cap / 2);
      b.set(c.meanHost);
      c.meanHost = b;
    }
  }
  const mmDst = rec ?? c.minmaxHost; // after the mirror grew
  const meanDst = rec ? rec.subarray(Hkv * 2 * D) : c.meanHost;
  const mn = new Float32Array(D);
  const mx = new Float32Array(D);
  const sm = new Float64Array(D);
  const rows = new Float32Array(len * D);
  const fast16 = c.dtype === 'f16' || c.dtype === 'bf16';
  const lut = c.dtype === 'f16' ? f16Table() : c.dtype === 'bf16' ? bf16Table() : undefined;
  for (let h = 0; h < Hkv; h++) {
    mn.fill(Infinity);
    mx.fill(-Infinity);
    sm.fill(0);
    if (fast16) {
      const u = new Uint16Array(bytes.buffer, bytes.byteOffset + h * c.layout.kHeadBytes, len * D);
      for (let r = 0, i = 0; r < len; r++) {
        for (let d = 0; d < D; d++, i++) {
          const x = lut![u[i]!]!;
          if (x < mn[d]!) mn[d] = x;
          if (x > mx[d]!) mx[d] = x;
          sm[d] += x;
        }
      }
    } else {
      readHeadRows(bytes, c.layout, 0, h, len, rows);
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
    if (c.meanSummaries) {
      const m = (at * Hkv + h) * D;
      for (let d = 0; d < D; d++) meanDst[m + d] = f32ToF16Bits(Math.max(-65504, Math.min(65504, sm[d]! / len)));
    }
  }
  if (rec) c.tiers!.putPage(page);
}

/** Uploads the summaries of pages [lo, hi) to the GPU chunks, growing them as needed. */
export function uploadSummaries(cache: KvCache, lo: number, hi: number): void {
  const c = internals(cache);
  if (c.tiers) return; // two levels: page summaries stay on the host (SummaryTiers.update)
  const C = c.summaryChunkPages;
  for (let ch = Math.floor(lo / C); ch * C < hi; ch++) {
    const inChunk = Math.min(c.pageCount - ch * C, C);
    if ((c.summaryCap[ch] ?? 0) < inChunk) {
      const cap = chunkCapFor(c, inChunk);
      // Make room inside the budget: shrink the pool if needed (it keeps at least one tile).
      const extra =
        (cap - (c.summaryCap[ch] ?? 0)) * (c.minmaxBytesPerPage + (c.meanSummaries ? c.meanBytesPerPage : 0));
      while (
        c.summaryBytes + c.pool.bytes + extra > c.gpuBudgetBytes &&
        c.pool.buffers.length > 1 &&
        c.pool.removeBuffer()
      );
      c.ctx.destroyBuffer(c.minmaxGpu[ch]);
      c.ctx.destroyBuffer(c.meanGpu[ch]);
      const usage = GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST | GPUBufferUsageFlags.COPY_SRC;
      c.minmaxGpu[ch] = c.ctx.createBuffer({
        size: cap * c.minmaxBytesPerPage,
        usage,
        label: `tessera.kv.minmax${ch}`,
      });
      if (c.meanSummaries)
        c.meanGpu[ch] = c.ctx.createBuffer({
          size: cap * c.meanBytesPerPage,
          usage,
          label: `tessera.kv.mean${ch}`,
        });
      c.summaryCap[ch] = cap;
      // Rewrite the whole chunk from the host mirror.
      writeSummaryRange(c, ch, ch * C, ch * C + inChunk);
    } else {
      writeSummaryRange(c, ch, Math.max(lo, ch * C), Math.min(hi, (ch + 1) * C));
    }
  }
}

function writeSummaryRange(c: CacheInternals, ch: number, lo: number, hi: number): void {
  const C = c.summaryChunkPages;
  const q = c.ctx.device.queue;
  const mmHalves = c.minmaxBytesPerPage / 2;
  q.writeBuffer(
    c.minmaxGpu[ch]!,
    (lo - ch * C) * c.minmaxBytesPerPage,
    c.minmaxHost,
    lo * mmHalves,
    (hi - lo) * mmHalves,
  );
  if (c.meanSummaries) {
    const mh = c.meanBytesPerPage / 2;
    q.writeBuffer(c.meanGpu[ch]!, (lo - ch * C) * c.meanBytesPerPage, c.meanHost, lo * mh, (hi - lo) * mh);
  }
}

/** The host mirror of the summaries: min/max `[pages, Hkv, 2, D]` and mean `[pages, Hkv, D]`, f16 bits. */
export function summariesHost(cache: KvCache): { minmax: Uint16Array; mean?: Uint16Array } {
  const c = internals(cache);
  if (c.tiers?.store) return c.tiers.readAll(c.pageCount); // read back from the disk tier (a copy)
  return {
    minmax: c.minmaxHost.subarray(0, c.pageCount * c.Hkv * 2 * c.D),
    mean: c.meanSummaries ? c.meanHost.subarray(0, c.pageCount * c.Hkv * c.D) : undefined,
  };
}
