/**
 * The page layout of the KV pool: the one definition that the attention core (kernels/attention),
 * the append kernel, the GPU page pool and the tiered `KvCache` (src/kv) all use, so that the
 * 10M-token path and the engine path share one pool.
 *
 * A pool is one GPU buffer of `maxPages` pages of `pageBytes` each; page `slot` starts at byte
 * `slot * pageBytes`. Inside a page (bytes, little-endian; `P` = page size in tokens, `eb` = bytes
 * per element of the storage dtype):
 * ```
 *   K: [Hkv, P, D]  eb bytes each        (head-major inside the page: one head's keys are contiguous)
 *   V: [Hkv, P, Dv] eb bytes each
 *   int8 only: scales [2, Hkv, P] f32    (K scales then V scales: max |x| of that token's row)
 *   padding to a multiple of 16 bytes
 * ```
 * int8 stores round(x / s * 127) with s the max |x| of that token's row (one scale per token, head
 * and K/V block); x = q / 127 * s. A token's scale depends on its own values only, so appending a
 * token never changes the bytes of earlier tokens (a per-page scale would requantise them when a
 * larger value arrives). Non-finite values are rejected by the cache (`E_NAN`) before anything is
 * written.
 * f16/bf16 are IEEE half / bfloat16 bits, two per 32-bit word, element 2i in the low half
 * (the same packing as `GpuTensor`). Token `t` of a sequence whose page list is
 * `indices` lives in page `indices[floor(t / P)]`, row `t % P`.
 */

/** Storage dtypes of KV pages. */
export type KvDType = 'f32' | 'f16' | 'bf16' | 'int8';

export const KV_DTYPES: readonly KvDType[] = ['f32', 'f16', 'bf16', 'int8'];

/** Bytes per element of each KV storage dtype. */
export const KV_DTYPE_BYTES: Readonly<Record<KvDType, number>> = { f32: 4, f16: 2, bf16: 2, int8: 1 };

/**
 * Shader code of a KV dtype (`KV_DT` override): 0 f32, 1 f16, 2 bf16, 3 int8.
 *
 * @example
 * kvDtypeCode('int8'); // 3
 */
export function kvDtypeCode(d: KvDType): number {
  return d === 'f32' ? 0 : d === 'f16' ? 1 : d === 'bf16' ? 2 : 3;
}

/** Byte geometry of one page. */
export interface PageLayout {
  pageSize: number;
  Hkv: number;
  D: number;
  Dv: number;
  dtype: KvDType;
  /** Bytes of one head's keys in a page (`P * D * eb`). */
  kHeadBytes: number;
  /** Bytes of one head's values in a page. */
  vHeadBytes: number;
  /** Byte offset of the V block. */
  vOffset: number;
  /** Byte offset of the int8 scales (`pageBytes` when the dtype has none). */
  scaleOffset: number;
  /** Bytes per page (a multiple of 16, so pages start on 16-byte words). */
  pageBytes: number;
}

/**
 * The byte geometry of a page.
 *
 * @example
 * pageLayout(64, 1, 128, 128, 'f16').pageBytes; // 32768
 */
export function pageLayout(pageSize: number, Hkv: number, D: number, Dv: number, dtype: KvDType): PageLayout {
  const eb = KV_DTYPE_BYTES[dtype];
  const kHeadBytes = pageSize * D * eb;
  const vHeadBytes = pageSize * Dv * eb;
  const vOffset = Hkv * kHeadBytes;
  const scaleOffset = vOffset + Hkv * vHeadBytes;
  const pageBytes = scaleOffset + (dtype === 'int8' ? 8 * Hkv * pageSize : 0);
  return {
    pageSize,
    Hkv,
    D,
    Dv,
    dtype,
    kHeadBytes,
    vHeadBytes,
    vOffset,
    scaleOffset,
    pageBytes: Math.ceil(pageBytes / 16) * 16,
  };
}

/** The layout of a pool's Quest page summaries (per page and KV head: the keys' channel min and max). */
export const SUMMARIES_LAYOUT = '[maxPages, Hkv, 2, D] f16';

/** Bytes of the page summaries of `maxPages` pages ({@link SUMMARIES_LAYOUT}). */
export function summariesBytes(maxPages: number, Hkv: number, D: number): number {
  return maxPages * Hkv * 2 * D * 2;
}
