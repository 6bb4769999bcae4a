/**
 * From the engine path to the tiered path: sequences an engine wrote on the GPU into the cache's
 * own pool (`cache.pool.slots`, kernels/append) become cache sequences on the host or disk tier,
 * which `persistKvCache` / `commitKvCache` then make durable and `openKvCache` reopens. The pool's
 * page layout is the cache's (kernels/attention/page.ts) and kernels/append encodes rows as the
 * cache's host codec does, so the tokens move bit for bit.
 */
import { TesseraError, checkInt, fail } from '../errors.js';
import { KV_DTYPE_BYTES } from './codec.js';
import type { KvCache } from './cache.js';

/**
 * Reads the pages of the pool sequences `seqs` back from the GPU (one readback per pool buffer
 * they touch) and appends their tokens to new cache sequences, returned in order. Pages that
 * several of them share (a `PagePool.fork`) are stored once: a sequence whose first full pages are
 * an earlier one's is made by `cache.fork` of it, so the cache's reference counts and the
 * manifest count them once. The pool sequences are left as they are (remove them when done).
 * Encode and submit nothing that writes their pages until the returned promise settles.
 * `E_UNSUPPORTED` for an int8 cache (the GPU writes no int8 pages), `E_STATE` for a sequence
 * with pages a window layer released.
 *
 * @example
 * const [saved] = await importPoolSequences(cache, [engineSeq]);
 * persistKvCache(cache, store.manifest()); // or commitKvCache(cache) on a persistent cache
 */
export async function importPoolSequences(cache: KvCache, seqs: readonly number[]): Promise<number[]> {
  if (cache.dtype === 'int8')
    fail(
      'E_UNSUPPORTED',
      'cache',
      'is int8; importing int8 pool pages (codes with per-token scales) is not supported yet;',
      cache.dtype,
      'an f32, f16 or bf16 cache',
    );
  if (!Array.isArray(seqs)) fail('E_ARG', 'seqs', 'is not an array;', typeof seqs, 'pool sequence ids');
  const pool = cache.pool.slots;
  const P = cache.pageSize;
  // Snapshot the page lists now: the readback below is awaited.
  const lists = seqs.map((s, i) => {
    checkInt(s, `seqs[${i}]`, { min: 0 });
    if (!pool.sequences.includes(s)) fail('E_ARG', `seqs[${i}]`, 'is not a live sequence of cache.pool.slots;', s);
    const pages = [...pool.pages(s)];
    if (pages.includes(-1)) {
      throw new TesseraError(
        'E_STATE',
        `seqs[${i}]: pool sequence ${s} has pages a window layer released; only whole sequences move to the cache`,
        { argument: `seqs[${i}]`, actual: s },
      );
    }
    return { pages, length: pool.length(s) };
  });
  const per = cache.pool.slotsPerBuffer;
  const buffers = new Map<number, Promise<ArrayBuffer>>();
  for (const l of lists) {
    for (const p of l.pages) {
      const b = Math.floor(p / per);
      if (!buffers.has(b)) buffers.set(b, cache.ctx.readback(cache.pool.buffers[b]!));
    }
  }
  const bytes = new Map<number, Uint8Array>();
  await Promise.all([...buffers].map(async ([b, pr]) => bytes.set(b, new Uint8Array(await pr))));
  const pageBytes = (p: number) => {
    const o = (p % per) * cache.pageBytes;
    return bytes.get(Math.floor(p / per))!.subarray(o, o + cache.pageBytes);
  };
  const L = cache.layout;
  const eb = KV_DTYPE_BYTES[cache.dtype];
  const view = (u: Uint8Array) => (cache.dtype === 'f32' ? new Float32Array(u.buffer) : new Uint16Array(u.buffer));
  const out: number[] = [];
  const done: { pages: number[]; length: number; seq: number }[] = [];
  try {
    for (const l of lists) {
      // The longest run of full first pages shared with a sequence already moved.
      let best = 0;
      let from = -1;
      for (const d of done) {
        let j = 0;
        while (
          j < l.pages.length &&
          j < d.pages.length &&
          l.pages[j] === d.pages[j] &&
          (j + 1) * P <= Math.min(l.length, d.length)
        )
          j++;
        if (j > best) {
          best = j;
          from = d.seq;
        }
      }
      const seq = best > 0 ? cache.fork(from) : cache.addSequence();
      out.push(seq);
      if (best > 0) cache.truncate(seq, best * P);
      const T = l.length - best * P;
      if (T > 0) {
        const kb = new Uint8Array(T * L.Hkv * L.D * eb);
        const vb = new Uint8Array(T * L.Hkv * L.Dv * eb);
        for (let t = 0; t < T; t++) {
          const pos = best * P + t;
          const page = pageBytes(l.pages[Math.floor(pos / P)]!);
          const r = pos % P;
          for (let h = 0; h < L.Hkv; h++) {
            const k0 = h * L.kHeadBytes + r * L.D * eb;
            kb.set(page.subarray(k0, k0 + L.D * eb), (t * L.Hkv + h) * L.D * eb);
            const v0 = L.vOffset + h * L.vHeadBytes + r * L.Dv * eb;
            vb.set(page.subarray(v0, v0 + L.Dv * eb), (t * L.Hkv + h) * L.Dv * eb);
          }
        }
        cache.appendRaw(seq, { dtype: cache.dtype, k: view(kb), v: view(vb) });
      }
      done.push({ pages: l.pages, length: l.length, seq });
    }
  } catch (e) {
    // All or nothing: the sequences made so far are freed (their ids stay taken, as freeSequence's).
    for (const s of out) cache.freeSequence(s);
    throw e;
  }
  return out;
}
