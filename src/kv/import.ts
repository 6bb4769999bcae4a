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
import type { PageLayout } from './codec.js';

/**
 * Reads the pages of the pool sequences `seqs` back from the GPU (one readback per pool buffer
 * they touch) and appends their tokens to new cache sequences, returned in order. Pages that
 * several of them share (a `PagePool.fork`) are stored once: a sequence whose first full pages are
 * an earlier one's is made by `cache.fork` of it, so the cache's reference counts and the
 * manifest count them once. The pool sequences are left as they are (remove them when done).
 * Encode and submit nothing that writes their pages until the returned promise settles.
 * `E_STATE` for a sequence with pages a window layer released. An int8 cache takes values (its
 * codec requantises a partial page as it fills), so int8 rows go in decoded, `q / 127 * s` in
 * f32, which the codec encodes back to the same codes and scale; each row is checked for that
 * first, and one that would not come back bit for bit (a nonzero scale with no code of ±127,
 * or a scale below 127 subnormal steps, 1.8e-43, where decoding rounds codes away) is
 * `E_UNSUPPORTED`, with nothing changed.
 *
 * @example
 * const [saved] = await importPoolSequences(cache, [engineSeq]);
 * persistKvCache(cache, store.manifest()); // or commitKvCache(cache) on a persistent cache
 */
export async function importPoolSequences(cache: KvCache, seqs: readonly number[]): Promise<number[]> {
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
  const int8 = cache.dtype === 'int8';
  const view = (u: Uint8Array) => (cache.dtype === 'f32' ? new Float32Array(u.buffer) : new Uint16Array(u.buffer));
  const out: number[] = [];
  const done: { pages: number[]; length: number; seq: number }[] = [];
  try {
    for (const [i, l] of lists.entries()) {
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
      const T = l.length - best * P;
      // int8 rows are decoded (and checked) before the cache changes.
      let rows: { k: Float32Array; v: Float32Array } | undefined;
      if (T > 0 && int8) {
        rows = { k: new Float32Array(T * L.Hkv * L.D), v: new Float32Array(T * L.Hkv * L.Dv) };
        for (let t = 0; t < T; t++) {
          const pos = best * P + t;
          const page = pageBytes(l.pages[Math.floor(pos / P)]!);
          for (let h = 0; h < L.Hkv; h++) {
            decodeInt8Row(page, L, 0, h, pos % P, rows.k, (t * L.Hkv + h) * L.D, i, pos);
            decodeInt8Row(page, L, 1, h, pos % P, rows.v, (t * L.Hkv + h) * L.Dv, i, pos);
          }
        }
      }
      const seq = best > 0 ? cache.fork(from) : cache.addSequence();
      out.push(seq);
      if (best > 0) cache.truncate(seq, best * P);
      if (rows) {
        cache.append(seq, rows.k, rows.v);
      } else if (T > 0) {
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

/**
 * Decodes row `r` of head `h` of an int8 page (K when `which` is 0, else V) into `out` at `at` as
 * the host codec reads it (`q / 127 * s`, f32), after checking that the codec's quantiser
 * (`quantizePageInt8`: `s = max |x|`, `round(x * 127 / s)`) gives back exactly these codes and
 * this scale; `E_UNSUPPORTED` naming `seqs[i]` and the token otherwise.
 */
function decodeInt8Row(
  page: Uint8Array,
  L: PageLayout,
  which: 0 | 1,
  h: number,
  r: number,
  out: Float32Array,
  at: number,
  i: number,
  pos: number,
): void {
  const width = which ? L.Dv : L.D;
  const o = (which ? L.vOffset + h * L.vHeadBytes : h * L.kHeadBytes) + r * width;
  const q = new Int8Array(page.buffer, page.byteOffset + o, width);
  const s = new DataView(page.buffer, page.byteOffset, page.byteLength).getFloat32(
    L.scaleOffset + 4 * ((which * L.Hkv + h) * L.pageSize + r),
    true,
  );
  let m = 0;
  for (let j = 0; j < width; j++) {
    out[at + j] = (q[j]! / 127) * s;
    m = Math.max(m, Math.abs(out[at + j]!));
  }
  let same = m === s;
  for (let j = 0; same && j < width; j++)
    same = (m > 0 ? Math.max(-127, Math.min(127, Math.round((out[at + j]! * 127) / m))) : 0) === q[j];
  if (!same)
    throw new TesseraError(
      'E_UNSUPPORTED',
      `seqs[${i}]: token ${pos}, KV head ${h}: its int8 ${which ? 'V' : 'K'} codes and scale ${s} do not come back bit for bit through the cache's int8 codec (a nonzero scale with no code of ±127, or a scale below 1.8e-43, where decoding rounds codes away)`,
      { argument: `seqs[${i}]`, actual: pos },
    );
}
