/**
 * Pages in the host or disk tier (the cache's `Store`): writing a page (its checksum and summaries
 * recorded with it), reading one back, and checking bytes against the checksum (`E_CORRUPT`).
 */
import { TesseraError, checkInt, fail } from '../errors.js';
import { hash32 } from './codec.js';
import type { KvCache } from './cache.js';
import { internals } from './internals.js';
import { summarize } from './page-summaries.js';

/** Writes a page to the store and refreshes its checksum and summary mirror. */
export function commitPage(cache: KvCache, page: number, bytes: Uint8Array, len: number): void {
  const c = internals(cache);
  c.store.write(page * c.pageBytes, bytes);
  if (page >= c.sums.length) {
    const a = new Uint32Array(Math.max(page + 1, c.sums.length * 2, 1024));
    a.set(c.sums);
    c.sums = a;
  }
  c.sums[page] = hash32(bytes);
  summarize(cache, page, bytes, len);
}

/** `page` must be an id below the cache's page count (`E_ARG` naming `argument`). */
export function checkPage(cache: KvCache, page: number, argument = 'page'): void {
  const n = internals(cache).pageCount;
  checkInt(page, argument, { min: 0 });
  if (page >= n) fail('E_ARG', argument, 'is past the last page;', page, `0..${n - 1}`);
}

/**
 * The bytes of a page from the host or disk tier, verified against its checksum when `verify`.
 * The returned view is valid until the next read.
 */
export function readHostPage(cache: KvCache, page: number, verify: boolean): Uint8Array {
  const c = internals(cache);
  checkPage(cache, page);
  let bytes = c.store.view?.(page * c.pageBytes, c.pageBytes);
  if (!bytes) {
    if (!c.staging || c.staging.byteLength < c.pageBytes) c.staging = new Uint8Array(c.pageBytes);
    bytes = c.staging.subarray(0, c.pageBytes);
    c.store.read(page * c.pageBytes, bytes);
  }
  if (verify) verifyBytes(cache, page, bytes, c.store.kind === 'memory' ? 'host' : 'disk');
  return bytes;
}

/** `E_CORRUPT` unless `bytes` match page `page`'s checksum (`tier` names where they came from). */
export function verifyBytes(cache: KvCache, page: number, bytes: Uint8Array, tier: string): void {
  const sums = internals(cache).sums;
  const h = hash32(bytes);
  if (h !== sums[page]) {
    throw new TesseraError(
      'E_CORRUPT',
      `page ${page} failed its checksum on the ${tier} tier (0x${h.toString(16)} != 0x${sums[page]!.toString(16)})`,
      {
        argument: 'page',
        actual: page,
      },
    );
  }
}
