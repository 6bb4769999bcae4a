/**
 * The GPU working set of the cache: making pages resident in the pool (uploading the missing ones
 * from the host or disk tier in coalesced writes, growing the pool within the budget, evicting
 * least recently used unpinned pages), refreshing resident pages an append changed, and checking
 * resident or stored pages against their checksums.
 */
import { fail } from '../errors.js';
import type { KvCache } from './cache.js';
import { internals } from './internals.js';
import { checkPage, verifyBytes } from './pages.js';
import { refState } from './refs.js';

/**
 * Makes `pages` resident on the GPU and returns their slots (see `KvCache.ensureResident`). All of
 * `pages` must fit in the pool at once (`E_LIMIT` otherwise, before any slot changes).
 */
export function makeResident(cache: KvCache, pages: ArrayLike<number>): Int32Array {
  const c = internals(cache);
  const n = pages.length;
  const slots = new Int32Array(n);
  const missing: number[] = [];
  for (let i = 0; i < n; i++) {
    const p = pages[i]!;
    const s = c.pool.slotOf(p);
    slots[i] = s;
    if (s >= 0) c.pool.touch(p);
    else missing.push(i);
  }
  if (missing.length === 0) return slots;
  // Grow the pool within the budget when nothing is free.
  const per = c.pool.bufferBytes;
  // Resident, unpinned pages of this request sit in the LRU list but must not be evicted.
  let inUse = 0;
  for (let i = 0; i < n; i++) if (slots[i]! >= 0 && !c.pool.isPinned(pages[i]!)) inUse++;
  const room = () => c.pool.available - inUse;
  while (room() < missing.length && c.summaryBytes + c.pool.bytes + per <= c.gpuBudgetBytes && c.pool.addBuffer());
  if (room() < missing.length) {
    // Last resort before E_LIMIT: pinned pages outside this request give way (see evictPinned),
    // so any request of at most one pool's capacity always makes progress under the budget.
    const keep = new Set<number>(Array.from(pages));
    while (room() < missing.length && c.pool.evictPinned(keep));
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
  for (const i of missing) slots[i] = c.pool.assign(pages[i]!);
  // Upload, coalescing runs of consecutive pages that land in consecutive slots of one buffer.
  const q = c.ctx.device.queue;
  let r = 0;
  while (r < missing.length) {
    let e = r + 1;
    const i0 = missing[r]!;
    const p0 = pages[i0]!;
    const loc = c.pool.location(slots[i0]!);
    while (
      e < missing.length &&
      pages[missing[e]!] === p0 + (e - r) &&
      slots[missing[e]!] === slots[i0]! + (e - r) &&
      loc.index + (e - r) < c.pool.slotsPerBuffer
    )
      e++;
    const count = e - r;
    const bytes = count * c.pageBytes;
    let src = c.store.view?.(p0 * c.pageBytes, bytes);
    if (!src) {
      if (!c.staging || c.staging.byteLength < bytes) c.staging = new Uint8Array(Math.max(bytes, c.pageBytes));
      src = c.staging.subarray(0, bytes);
      c.store.read(p0 * c.pageBytes, src);
    }
    if (c.debug || c.store.kind !== 'memory') {
      for (let j = 0; j < count; j++)
        verifyBytes(
          cache,
          p0 + j,
          src.subarray(j * c.pageBytes, (j + 1) * c.pageBytes),
          c.store.kind === 'memory' ? 'host' : 'disk',
        );
    }
    q.writeBuffer(loc.buffer, loc.byteOffset, src as Uint8Array<ArrayBuffer>);
    c.pagesUploaded += count;
    c.bytesUploaded += bytes;
    r = e;
  }
  return slots;
}

/** Re-uploads those of `pages` that are resident (their bytes changed in the store). */
export function refreshResident(cache: KvCache, pages: readonly number[]): void {
  const c = internals(cache);
  for (const p of pages) {
    const slot = c.pool.slotOf(p);
    if (slot >= 0) {
      const loc = c.pool.location(slot);
      c.ctx.device.queue.writeBuffer(loc.buffer, loc.byteOffset, c.hostPage(p) as Uint8Array<ArrayBuffer>);
    }
  }
}

/** Reads resident page `page` back from the GPU and checks it (false: not resident). */
export async function verifyResidentPage(cache: KvCache, page: number): Promise<boolean> {
  const c = internals(cache);
  checkPage(cache, page);
  const slot = c.pool.slotOf(page);
  if (slot < 0) return false;
  const loc = c.pool.location(slot);
  const bytes = new Uint8Array(await c.ctx.readback(loc.buffer, c.pageBytes, loc.byteOffset));
  verifyBytes(cache, page, bytes, 'GPU');
  return true;
}

/** Checks every live page in the host/disk tier against its checksum; returns the pages checked. */
export function verifyStorePages(cache: KvCache): number {
  const c = internals(cache);
  const refs = refState(cache).refs;
  let n = 0;
  for (let p = 0; p < c.pageCount; p++) {
    if (!refs[p]) continue;
    c.hostPage(p, true);
    n++;
  }
  return n;
}
