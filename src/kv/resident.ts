/**
 * The cache's sequences as an engine's attention core sees them: page tables in pool slots of the
 * cache's working set (`cache.pool.buffers[0]`), the same slots an engine's own sequences
 * (`cache.pool.slots`) were appended into, so one batch of the attention core (kernels/attention)
 * or one Quest selection reads pages streamed in from host or disk and pages written on the GPU
 * alike.
 */
import { checkInt, fail } from '../errors.js';
import type { KvCache } from './cache.js';

/** CSR tables in pool slots (FlashInfer's vocabulary, as `PagePool.tables`). */
export interface ResidentTables {
  kvIndptr: Int32Array;
  kvIndices: Int32Array;
  kvLastPageLen: Int32Array;
  kvLens: Int32Array;
}

/**
 * Makes every page of `seqs` resident (uploading from the host or disk tier what is not; a page
 * shared by several of them is uploaded once) and returns their page tables in pool slots. The
 * slots must lie in the pool's first buffer, the one an engine binds (`E_LIMIT` otherwise: give
 * the cache `pool.maxBuffers = 1`, or a budget of one tile). The tables stay valid until the
 * cache uploads other pages (an upload may reuse an unpinned page's slot): submit the work that
 * reads them first.
 *
 * @example
 * const t = residentPageTable(cache, [seq]);
 * attn.schedule({ ...t, qoIndptr: [0, 1] });
 * attn.run(encoder, { q, o, pages: cache.pool.buffers[0]! });
 */
export function residentPageTable(cache: KvCache, seqs: readonly number[]): ResidentTables {
  if (!Array.isArray(seqs)) fail('E_ARG', 'seqs', 'is not an array;', typeof seqs, 'sequence ids');
  const B = seqs.length;
  const kvIndptr = new Int32Array(B + 1);
  const kvLastPageLen = new Int32Array(B);
  const kvLens = new Int32Array(B);
  const lists = seqs.map((s, i) => {
    checkInt(s, `seqs[${i}]`, { min: 0 });
    return cache.pages(s);
  });
  const distinct = [...new Set(lists.flat())];
  const slots = cache.ensureResident(distinct);
  const slotOf = new Map<number, number>();
  distinct.forEach((p, i) => slotOf.set(p, slots[i]!));
  const per = cache.pool.slotsPerBuffer;
  for (let i = 0; i < distinct.length; i++) {
    if (slots[i]! >= per) {
      fail(
        'E_LIMIT',
        'seqs',
        `page ${distinct[i]} is resident in pool buffer ${Math.floor(slots[i]! / per)}; an engine binds buffer 0 only;`,
        seqs,
        `a cache whose working set is one buffer (cache.pool.maxBuffers = 1 before it grows)`,
      );
    }
  }
  const kvIndices = new Int32Array(distinct.length === 0 ? 0 : lists.reduce((n, l) => n + l.length, 0));
  let k = 0;
  lists.forEach((l, b) => {
    for (const p of l) kvIndices[k++] = slotOf.get(p)!;
    kvIndptr[b + 1] = k;
    const len = cache.length(seqs[b]!);
    kvLens[b] = len;
    kvLastPageLen[b] = l.length ? len - (l.length - 1) * cache.pageSize : 0;
  });
  return { kvIndptr, kvIndices, kvLastPageLen, kvLens };
}
