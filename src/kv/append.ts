/**
 * The append path of the KV cache: host values (`append`, encoded to the cache's dtype) or rows
 * already encoded (`appendRaw`) are written page by page through the sequence's page under
 * construction. Everything is validated before anything changes, and an append is atomic: a store
 * failure part-way restores the sequence, page ids, reference counts, pins and the partial page.
 */
import { TesseraError, check, fail } from '../errors.js';
import { checkHostValues } from '../tensor.js';
import { KV_DTYPE_BYTES, quantizePageInt8, writeRows } from './codec.js';
import type { KvCache, RawRows } from './cache.js';
import { internals, type CacheInternals, type SeqState } from './internals.js';
import { commitPage } from './pages.js';
import { summaryBytesFor, uploadSummaries } from './page-summaries.js';
import { afterMutate, allocPage, beforeAppend, unallocPages } from './refs.js';
import { refreshResident } from './residency.js';

/** Fills rows `[dstRow, dstRow + n)` of the page under construction from source rows `[rowsDone, rowsDone + n)`. */
type FillRows = (page: Uint8Array, rowsDone: number, n: number, dstRow: number) => void;

/** `KvCache.append`: `k` `[T, Hkv, D]`, `v` `[T, Hkv, Dv]` host values, encoded to the cache's dtype. */
export function appendValues(cache: KvCache, s: SeqState, k: ArrayLike<number>, v: ArrayLike<number>): void {
  const c = internals(cache);
  const T = rowsOf(c, k, v);
  if (c.dtype === 'int8') checkFiniteRows(k, v); // NaN / Inf have no int8 code (E_NAN, before anything changes)
  appendRows(cache, s, T, (page, rowsDone, n, dstRow) => {
    if (c.dtype === 'int8') {
      copyHeadMajor(s.tailK!, k, rowsDone, n, dstRow, c.Hkv, c.D, c.pageSize);
      copyHeadMajor(s.tailV!, v, rowsDone, n, dstRow, c.Hkv, c.Dv, c.pageSize);
      quantizePageInt8(page, c.layout, s.tailK!, s.tailV!, dstRow + n);
    } else {
      writeRows(page, c.layout, 0, k, rowsDone, n, dstRow);
      writeRows(page, c.layout, 1, v, rowsDone, n, dstRow);
    }
  });
}

/** `KvCache.appendRaw`: rows already encoded in the cache's dtype (f32/f16/bf16), copied as they are. */
export function appendRawRows(cache: KvCache, s: SeqState, raw: RawRows): void {
  const c = internals(cache);
  if (!raw || raw.dtype !== c.dtype || c.dtype === 'int8') {
    fail(
      'E_DTYPE',
      'raw.dtype',
      'does not match the cache;',
      raw?.dtype,
      c.dtype === 'int8' ? 'values through append() for an int8 cache' : `"${c.dtype}"`,
    );
  }
  const want = c.dtype === 'f32' ? Float32Array : Uint16Array;
  check(raw.k instanceof want, 'raw.k', `a ${want.name} for ${c.dtype}`, raw.k?.constructor?.name, 'E_DTYPE');
  check(raw.v instanceof want, 'raw.v', `a ${want.name} for ${c.dtype}`, raw.v?.constructor?.name, 'E_DTYPE');
  const T = rowsOf(c, raw.k, raw.v);
  const { Hkv, D, Dv } = c;
  const eb = KV_DTYPE_BYTES[c.dtype];
  const kb = new Uint8Array(raw.k.buffer, raw.k.byteOffset, raw.k.byteLength);
  const vb = new Uint8Array(raw.v.buffer, raw.v.byteOffset, raw.v.byteLength);
  const L = c.layout;
  appendRows(cache, s, T, (page, rowsDone, n, dstRow) => {
    for (let h = 0; h < Hkv; h++) {
      if (Hkv === 1) {
        page.set(kb.subarray(rowsDone * D * eb, (rowsDone + n) * D * eb), dstRow * D * eb);
        page.set(vb.subarray(rowsDone * Dv * eb, (rowsDone + n) * Dv * eb), L.vOffset + dstRow * Dv * eb);
        continue;
      }
      for (let r = 0; r < n; r++) {
        const ks = ((rowsDone + r) * Hkv + h) * D * eb;
        page.set(kb.subarray(ks, ks + D * eb), h * L.kHeadBytes + (dstRow + r) * D * eb);
        const vs = ((rowsDone + r) * Hkv + h) * Dv * eb;
        page.set(vb.subarray(vs, vs + Dv * eb), L.vOffset + h * L.vHeadBytes + (dstRow + r) * Dv * eb);
      }
    }
  });
}

/** Tokens in `k` / `v` (whole `[Hkv, D]` / `[Hkv, Dv]` rows, the same count in both), else `E_SHAPE`. */
function rowsOf(c: CacheInternals, k: ArrayLike<number>, v: ArrayLike<number>): number {
  checkHostValues(k, 'k'); // a string's characters would be stored as NaN
  checkHostValues(v, 'v');
  return tokenRows(c, k, v);
}

/**
 * Tokens in host rows `k` `[T, Hkv, D]` and `v` `[T, Hkv, Dv]`: `E_SHAPE` naming `k` when its
 * length is not whole rows, naming `v` when it holds another number of tokens (the KV cache's
 * appends and the split cache's, src/stream/split.ts).
 *
 * @example
 * tokenRows({ Hkv: 2, D: 4, Dv: 4 }, new Float32Array(24), new Float32Array(24)); // 3
 */
export function tokenRows(
  g: { readonly Hkv: number; readonly D: number; readonly Dv: number },
  k: ArrayLike<number>,
  v: ArrayLike<number>,
): number {
  const rowK = g.Hkv * g.D;
  const rowV = g.Hkv * g.Dv;
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

/** Tokens held in page `i` of sequence `s` (1..pageSize). */
function pageLen(c: CacheInternals, s: SeqState, i: number): number {
  return i < s.pages.length - 1 ? c.pageSize : s.length - i * c.pageSize;
}

function appendRows(cache: KvCache, s: SeqState, T: number, fill: FillRows): void {
  if (T === 0) return;
  const c = internals(cache);
  const P = c.pageSize;
  const newPages = Math.ceil((s.length + T) / P) - s.pages.length;
  // Budget check for the summaries before anything changes.
  const needSummary = summaryBytesFor(cache, c.pageCount + newPages);
  if (needSummary + c.pool.bufferBytes > c.gpuBudgetBytes) {
    fail(
      'E_LIMIT',
      'gpuBudgetBytes',
      `cannot hold the summaries of ${c.pageCount + newPages} pages plus one tile;`,
      c.gpuBudgetBytes,
      `at least ${needSummary + c.pool.bufferBytes} bytes`,
    );
  }
  const firstTouched = s.length % P === 0 ? s.pages.length : s.pages.length - 1;
  // Atomic: the store writes come first, the page already holding tokens (a partial last page,
  // rewritten in place) after every new page; if any write (or the fill) throws, the sequence,
  // page ids, reference counts and pins are restored and that page's old bytes written back, so
  // the cache is exactly as before and every earlier token reads back bit-exactly.
  const undoCow = beforeAppend(cache, s); // copy-on-write of a shared (or committed, durable) partial last page
  const undo = {
    pages: s.pages.length,
    length: s.length,
    pageCount: c.pageCount,
    tail: s.length % P ? saveTail(s) : undefined,
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
        const id = allocPage(cache);
        fresh.push(id);
        s.pages.push(id);
        s.tail.fill(0);
        if (s.tailK) {
          s.tailK.fill(0);
          s.tailV!.fill(0);
        }
        if (s.pages.length <= c.sinkPages) c.pool.pin(id);
      }
      const n = Math.min(T - done, P - dstRow);
      fill(s.tail, done, n, dstRow);
      s.length += n;
      done += n;
      const idx = s.pages.length - 1;
      const page = s.pages[idx]!;
      if (!fresh.includes(page)) inPlace = { page, len: pageLen(c, s, idx) };
      else commitPage(cache, page, s.tail, pageLen(c, s, idx));
      touched.push(page);
    }
    if (inPlace) {
      inPlaceTried = true;
      commitPage(cache, inPlace.page, inPlace.bytes ?? s.tail, inPlace.len);
    }
  } catch (e) {
    for (const p of fresh) c.pool.unpin(p);
    s.pages.length = undo.pages;
    s.length = undo.length;
    unallocPages(cache, fresh, undo.pageCount);
    c.pageCount = undo.pageCount;
    if (undo.tail) {
      restoreTail(s, undo.tail);
      if (inPlaceTried) {
        try {
          c.store.write(s.pages[s.pages.length - 1]! * c.pageBytes, s.tail);
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
  for (let i = Math.max(c.sinkPages, firstTouched - c.recentPages); i < np - c.recentPages; i++)
    c.pool.unpin(s.pages[i]!);
  for (let i = Math.max(0, np - c.recentPages); i < np; i++) c.pool.pin(s.pages[i]!);
  let lo = touched[0]!;
  let hi = lo;
  // reused page ids are not in order
  for (const p of touched) {
    lo = Math.min(lo, p);
    hi = Math.max(hi, p);
  }
  uploadSummaries(cache, lo, hi + 1);
  c.tiers?.update(c.seqs.indexOf(s), firstTouched, np - 1);
  // A resident page that changed is re-uploaded.
  refreshResident(cache, touched);
  c.hostPeak = Math.max(c.hostPeak, c.hostBytes);
  afterMutate(cache);
}

/** A copy of the sequence's partial page (and its int8 values), for an append to undo. */
function saveTail(s: SeqState): { tail: Uint8Array; k?: Float32Array; v?: Float32Array } {
  return { tail: s.tail.slice(), k: s.tailK?.slice(), v: s.tailV?.slice() };
}

function restoreTail(s: SeqState, t: { tail: Uint8Array; k?: Float32Array; v?: Float32Array }): void {
  s.tail.set(t.tail);
  if (t.k) s.tailK!.set(t.k);
  if (t.v) s.tailV!.set(t.v);
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

/** Copies `n` token rows `[Hkv, W]` of `src` into the head-major `[Hkv, P, W]` page values `dst`. */
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
      const si = ((srcRow + r) * Hkv + h) * W;
      const d = (h * P + dstRow + r) * W;
      for (let i = 0; i < W; i++) dst[d + i] = src[si + i]!;
    }
  }
}
