/**
 * Shared pages for the KV cache: per-page reference counts, a free list of page ids, fork
 * (copy-on-write of the partial last page only), truncate (rewind) and freeing a sequence.
 *
 * The cache's page ids are global and positional in its store (page `p` sits at `p * pageBytes`),
 * so a page shared by several sequences is stored once, uploaded once and holds one GPU slot.
 * A page is released when its count drops to 0: unpinned, dropped from the GPU working set and its
 * id put on the free list for a later append (after the next manifest commit when the cache is
 * durable, since the last committed manifest may still name it; see `session.ts`).
 *
 * This module reaches into the cache's private state through `internals` (internals.ts), so the
 * logic stays out of `cache.ts` (whose methods delegate here).
 */
import { TesseraError, checkInt, fail } from '../errors.js';
import { readHeadRows, quantizePageInt8, type PageLayout } from './codec.js';
import type { KvCache } from './cache.js';
import { internals, type CacheInternals, type SeqState } from './internals.js';
import { commitPage } from './pages.js';
import { uploadSummaries } from './page-summaries.js';

/** Durability state installed by `session.ts` (moves with the reference state on `moveTo`). */
export interface Durability {
  autoCommit: boolean;
  /** Writes the manifest of `cache` (session.ts `commitKvCache`). */
  commit(cache: KvCache): void;
  /** Where the manifest goes (a `ManifestStore`). */
  manifest: { write(bytes: Uint8Array): void };
  /** Generation of the last manifest written. */
  generation: number;
}

/** Reference counts and the free list of one cache. */
export interface RefState {
  refs: Uint32Array;
  /** Page ids free for reuse now. */
  free: number[];
  /** Page ids released since the last manifest commit (reusable once it lands). */
  pending: number[];
  durable?: Durability;
  /** Bytes copied by fork / copy-on-write so far. */
  bytesCopied: number;
}

const STATE = new WeakMap<object, RefState>();

/** The reference state of `cache` (created on first use: every page of every sequence counted). */
export function refState(cache: KvCache): RefState {
  let st = STATE.get(cache);
  if (!st) {
    const c = internals(cache);
    st = { refs: new Uint32Array(Math.max(64, c.pageCount)), free: [], pending: [], bytesCopied: 0 };
    for (const s of c.seqs) for (const p of s.pages) st.refs[p]!++;
    STATE.set(cache, st);
  }
  return st;
}

/** Moves the reference state to a new cache object (`moveTo`, reopen). */
export function adoptRefState(from: KvCache, to: KvCache): void {
  const st = STATE.get(from);
  if (st) STATE.set(to, st);
}

export function setRefState(cache: KvCache, st: RefState): void {
  STATE.set(cache, st);
}

function growRefs(st: RefState, n: number): void {
  if (n <= st.refs.length) return;
  const a = new Uint32Array(Math.max(n, st.refs.length * 2));
  a.set(st.refs);
  st.refs = a;
}

/** A page id for a new page (a freed one if any, else the next new id), with count 1. */
export function allocPage(cache: KvCache): number {
  const st = refState(cache);
  const c = internals(cache);
  const id = st.free.length ? st.free.pop()! : c.pageCount++;
  growRefs(st, id + 1);
  st.refs[id] = 1;
  return id;
}

/** Gives back an id from {@link allocPage} that was never used (a failed write). */
function unalloc(cache: KvCache, id: number): void {
  const st = refState(cache);
  st.refs[id] = 0;
  st.free.push(id);
}

/**
 * Gives back the ids {@link allocPage} handed to an append that then failed, newest first: ids at or
 * past `pageCount` (the count before the append, which the caller restores) are forgotten, reused
 * ids go back to the free list in the order they left it.
 */
export function unallocPages(cache: KvCache, ids: readonly number[], pageCount: number): void {
  const st = refState(cache);
  for (let i = ids.length - 1; i >= 0; i--) {
    const id = ids[i]!;
    st.refs[id] = 0;
    if (id < pageCount) st.free.push(id);
  }
}

/** Drops one reference to each of `pages`; a page at 0 leaves the GPU and goes to the free list. */
export function releasePages(cache: KvCache, pages: readonly number[]): void {
  const st = refState(cache);
  const c = internals(cache);
  for (const p of pages) {
    if (st.refs[p]! === 0) throw new TesseraError('E_STATE', `page ${p} released more often than referenced`);
    if (--st.refs[p]! > 0) continue;
    c.pool.unpin(p);
    const slot = c.pool.slotOf(p);
    if (slot >= 0) c.pool.drop(slot);
    (st.durable ? st.pending : st.free).push(p);
  }
}

/** References to page `page` (0: free). */
export function refCount(cache: KvCache, page: number): number {
  checkInt(page, 'page', { min: 0 });
  return refState(cache).refs[page] ?? 0;
}

/** Pages referenced by more than one sequence, and live pages (referenced at all). */
export function pageCounts(cache: KvCache): { live: number; shared: number; free: number } {
  const st = refState(cache);
  const n = internals(cache).pageCount;
  let live = 0;
  let shared = 0;
  for (let p = 0; p < n; p++) {
    const r = st.refs[p]!;
    if (r > 0) live++;
    if (r > 1) shared++;
  }
  return { live, shared, free: n - live };
}

/**
 * Before an append writes into sequence `s`: a partial last page that another sequence shares, or
 * any partial last page of a durable cache (the last manifest names it with its old checksum), is
 * moved to a fresh page id, so the append never rewrites a page someone else (or a crash
 * recovery) still needs. The bytes are rewritten by the append anyway, so this copies nothing.
 * Returns an undo for a failed append.
 */
export function beforeAppend(cache: KvCache, s: SeqState): () => void {
  const c = internals(cache);
  const st = refState(cache);
  if (s.length % c.pageSize === 0 || s.pages.length === 0) return () => {};
  const i = s.pages.length - 1;
  const old = s.pages[i]!;
  if (!st.durable && st.refs[old]! <= 1) return () => {};
  const countBefore = c.pageCount;
  const id = allocPage(cache);
  s.pages[i] = id;
  if (c.recentPages > 0 || i < c.sinkPages) c.pool.pin(id);
  releasePages(cache, [old]);
  return () => {
    s.pages[i] = old;
    for (const list of [st.free, st.pending]) {
      const j = list.lastIndexOf(old);
      if (j >= 0) list.splice(j, 1);
    }
    st.refs[old]!++;
    c.pool.unpin(id);
    unallocPages(cache, [id], countBefore);
    c.pageCount = Math.min(c.pageCount, countBefore);
  };
}

/** After a successful mutation: commit the manifest when the cache is durable with autoCommit. */
export function afterMutate(cache: KvCache): void {
  const st = refState(cache);
  if (st.durable?.autoCommit) st.durable.commit(cache);
}

function pinRecent(c: CacheInternals, s: SeqState): void {
  const np = s.pages.length;
  for (let i = 0; i < Math.min(np, c.sinkPages); i++) c.pool.pin(s.pages[i]!);
  for (let i = Math.max(0, np - c.recentPages); i < np; i++) c.pool.pin(s.pages[i]!);
}

/**
 * A new sequence sharing every full page of `parent`; the partial last page (if any) is copied to a
 * new page. Returns the new sequence id. Nothing changes if the copy's write fails.
 */
export function forkSequence(cache: KvCache, parent: number, s: SeqState): number {
  const c = internals(cache);
  const st = refState(cache);
  const P = c.pageSize;
  const full = Math.floor(s.length / P);
  const r = s.length - full * P;
  let copy = -1;
  if (r > 0) {
    copy = allocPage(cache);
    try {
      commitPage(cache, copy, s.tail, r);
    } catch (e) {
      unalloc(cache, copy);
      throw e;
    }
    uploadSummaries(cache, copy, copy + 1);
    st.bytesCopied += c.pageBytes;
  }
  const id = c.addSequence();
  const child = c.seqs[id]!;
  child.pages = s.pages.slice(0, full);
  for (const p of child.pages) st.refs[p]!++;
  if (copy >= 0) child.pages.push(copy);
  child.length = s.length;
  child.tail.set(s.tail);
  if (s.tailK) child.tailK!.set(s.tailK);
  if (s.tailV) child.tailV!.set(s.tailV);
  pinRecent(c, child);
  void parent;
  afterMutate(cache);
  return id;
}

/**
 * The bytes of a page holding only its first `len` rows (rows past it zeroed, int8 requantised),
 * plus the f32 tails an int8 page keeps.
 */
export function trimPage(
  L: PageLayout,
  bytes: Uint8Array,
  len: number,
): { page: Uint8Array; tailK?: Float32Array; tailV?: Float32Array } {
  const page = new Uint8Array(L.pageBytes);
  const P = L.pageSize;
  if (L.dtype === 'int8') {
    const tailK = new Float32Array(L.Hkv * P * L.D);
    const tailV = new Float32Array(L.Hkv * P * L.Dv);
    for (let h = 0; h < L.Hkv; h++) {
      tailK.set(readHeadRows(bytes, L, 0, h, len), h * P * L.D);
      tailV.set(readHeadRows(bytes, L, 1, h, len), h * P * L.Dv);
    }
    quantizePageInt8(page, L, tailK, tailV, len);
    return { page, tailK, tailV };
  }
  const eb = L.dtype === 'f32' ? 4 : 2;
  for (let h = 0; h < L.Hkv; h++) {
    const k0 = h * L.kHeadBytes;
    page.set(bytes.subarray(k0, k0 + len * L.D * eb), k0);
    const v0 = L.vOffset + h * L.vHeadBytes;
    page.set(bytes.subarray(v0, v0 + len * L.Dv * eb), v0);
  }
  return { page };
}

/**
 * Rewinds sequence `s` to `length` tokens: whole pages past it are released; a partial new last
 * page is rewritten (trimmed, its checksum and summaries recomputed) to a fresh page id, so a page
 * shared with another sequence or named by the last manifest is never changed in place. Nothing
 * changes if that write fails.
 */
export function truncateSequence(cache: KvCache, seq: number, s: SeqState, length: number): void {
  const c = internals(cache);
  checkInt(length, 'length', { min: 0 });
  if (length > s.length) fail('E_ARG', 'length', `is past the end of sequence ${seq};`, length, `0..${s.length}`);
  if (length === s.length) return;
  const P = c.pageSize;
  const keep = Math.ceil(length / P);
  const r = length % P;
  let fresh = -1;
  let trimmed: ReturnType<typeof trimPage> | undefined;
  if (r > 0) {
    trimmed = trimPage(c.layout, c.hostPage(s.pages[keep - 1]!, true), r);
    fresh = allocPage(cache);
    try {
      commitPage(cache, fresh, trimmed.page, r);
    } catch (e) {
      unalloc(cache, fresh);
      throw e;
    }
    uploadSummaries(cache, fresh, fresh + 1);
  }
  const dropped = s.pages.slice(r > 0 ? keep - 1 : keep);
  s.pages.length = keep;
  if (r > 0) s.pages[keep - 1] = fresh;
  s.length = length;
  s.tail.fill(0);
  s.tailK?.fill(0);
  s.tailV?.fill(0);
  if (trimmed) {
    s.tail.set(trimmed.page);
    if (trimmed.tailK) s.tailK!.set(trimmed.tailK);
    if (trimmed.tailV) s.tailV!.set(trimmed.tailV);
  }
  releasePages(cache, dropped);
  pinRecent(c, s);
  afterMutate(cache);
}

/** Frees sequence `s`: its pages lose one reference each (pages no other sequence uses are freed). */
export function freeSequence(cache: KvCache, s: SeqState): void {
  const pages = s.pages;
  s.pages = [];
  s.length = 0;
  s.freed = true;
  releasePages(cache, pages);
  afterMutate(cache);
}
