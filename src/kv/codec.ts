/**
 * Page codecs: how K/V rows are stored in a page, in each storage dtype, and the helpers the
 * cache uses on the host (f16/bf16 lookup tables, conservative f16 rounding for summaries, the
 * per-page checksum).
 *
 * The page layout itself (`pageLayout`, `kvDtypeCode`, the KV dtypes) is defined by the attention
 * core that reads it, in kernels/attention/page.ts, and re-exported here.
 */
import { f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, bf16BitsToF32 } from '../tensor.js';

import { KV_DTYPE_BYTES, type PageLayout } from '../../kernels/attention/page.js';
export {
  KV_DTYPES,
  KV_DTYPE_BYTES,
  kvDtypeCode,
  pageLayout,
  type KvDType,
  type PageLayout,
} from '../../kernels/attention/page.js';

let f16Lut: Float32Array | undefined;
let bf16Lut: Float32Array | undefined;

/** f16 bits -> f32 value for all 65,536 patterns (built once). */
export function f16Table(): Float32Array {
  if (!f16Lut) {
    f16Lut = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Lut[h] = f16BitsToF32(h);
  }
  return f16Lut;
}

/** bf16 bits -> f32 value for all 65,536 patterns (built once). */
export function bf16Table(): Float32Array {
  if (!bf16Lut) {
    bf16Lut = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) bf16Lut[h] = bf16BitsToF32(h);
  }
  return bf16Lut;
}

/** The f16 pattern of the largest half <= x (for a min that must stay a lower bound). */
export function f16Down(x: number): number {
  const t = f16Table();
  let h = f32ToF16Bits(x);
  const v = t[h]!;
  if (Number.isNaN(v)) return h;
  if (v > x) h = stepF16(h, -1);
  return h;
}

/** The f16 pattern of the smallest half >= x (for a max that must stay an upper bound). */
export function f16Up(x: number): number {
  const t = f16Table();
  let h = f32ToF16Bits(x);
  const v = t[h]!;
  if (Number.isNaN(v)) return h;
  if (v < x) h = stepF16(h, 1);
  return h;
}

/** Moves a finite half one ulp up (dir 1) or down (dir -1). */
function stepF16(h: number, dir: 1 | -1): number {
  const neg = (h & 0x8000) !== 0;
  const mag = h & 0x7fff;
  if (mag === 0) return dir > 0 ? 0x0001 : 0x8001;
  if (neg === dir > 0) return (h & 0x8000) | (mag - 1);
  return mag >= 0x7c00 ? h : (h & 0x8000) | (mag + 1);
}

/**
 * Writes rows of host values into page bytes. `src` holds `rows` rows of `[Hkv, width]` starting at
 * `srcRow`; they go to page rows `dstRow..` of the K (`which = 0`) or V (`which = 1`) block.
 * int8 is not handled here (the cache requantises whole pages, see {@link quantizePageInt8}).
 */
export function writeRows(
  page: Uint8Array,
  L: PageLayout,
  which: 0 | 1,
  src: ArrayLike<number>,
  srcRow: number,
  rows: number,
  dstRow: number,
): void {
  const width = which === 0 ? L.D : L.Dv;
  const base = which === 0 ? 0 : L.vOffset;
  const headBytes = which === 0 ? L.kHeadBytes : L.vHeadBytes;
  const dv = new DataView(page.buffer, page.byteOffset, page.byteLength);
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < L.Hkv; h++) {
      const s = ((srcRow + r) * L.Hkv + h) * width;
      const rowOff = base + h * headBytes + (dstRow + r) * width * KV_DTYPE_BYTES[L.dtype];
      if (L.dtype === 'f32') {
        for (let d = 0; d < width; d++) dv.setFloat32(rowOff + 4 * d, src[s + d]!, true);
      } else if (L.dtype === 'f16') {
        for (let d = 0; d < width; d++)
          dv.setUint16(rowOff + 2 * d, f32ToF16Bits(Math.min(65504, Math.max(-65504, src[s + d]!))), true);
      } else if (L.dtype === 'bf16') {
        for (let d = 0; d < width; d++) dv.setUint16(rowOff + 2 * d, f32ToBf16Bits(src[s + d]!), true);
      }
    }
  }
}

/**
 * Quantises the first `len` rows of a page from f32 values `[Hkv, P, width]` (K then V) into int8
 * with one scale per token, head and block (rows past `len` are zero, scale 0). Row r's bytes
 * depend only on row r's values: requantising a page after an append leaves earlier rows as they were.
 */
export function quantizePageInt8(
  page: Uint8Array,
  L: PageLayout,
  kVals: Float32Array,
  vVals: Float32Array,
  len: number,
): void {
  const dv = new DataView(page.buffer, page.byteOffset, page.byteLength);
  const i8 = new Int8Array(page.buffer, page.byteOffset, page.byteLength);
  for (const [which, vals, width, base, headBytes] of [
    [0, kVals, L.D, 0, L.kHeadBytes],
    [1, vVals, L.Dv, L.vOffset, L.vHeadBytes],
  ] as const) {
    for (let h = 0; h < L.Hkv; h++) {
      const o = h * L.pageSize * width;
      for (let r = 0; r < L.pageSize; r++) {
        let s = 0;
        const ro = o + r * width;
        if (r < len) for (let i = 0; i < width; i++) s = Math.max(s, Math.abs(vals[ro + i]!));
        dv.setFloat32(L.scaleOffset + 4 * ((which * L.Hkv + h) * L.pageSize + r), s, true);
        const bo = base + h * headBytes + r * width;
        // round(x * 127 / s) evaluated exactly (x * 127 is exact in float64; one correctly rounded
        // division never crosses a half), so the GPU append (kernels/append/int8.wgsl) matches it.
        for (let i = 0; i < width; i++)
          i8[bo + i] = r < len && s > 0 ? Math.max(-127, Math.min(127, Math.round((vals[ro + i]! * 127) / s))) : 0;
      }
    }
  }
}

/**
 * Reads the first `len` rows of one head of a page back as f32 values `[len, width]`.
 */
export function readHeadRows(
  page: Uint8Array,
  L: PageLayout,
  which: 0 | 1,
  h: number,
  len: number,
  out = new Float32Array(len * (which === 0 ? L.D : L.Dv)),
): Float32Array {
  const width = which === 0 ? L.D : L.Dv;
  const off = page.byteOffset + (which === 0 ? 0 : L.vOffset) + h * (which === 0 ? L.kHeadBytes : L.vHeadBytes);
  const n = len * width;
  if (L.dtype === 'f32') {
    out.set(new Float32Array(page.buffer.slice(off, off + 4 * n)));
  } else if (L.dtype === 'int8') {
    const dv = new DataView(page.buffer, page.byteOffset, page.byteLength);
    const q = new Int8Array(page.buffer, off, n);
    for (let r = 0; r < len; r++) {
      const s = dv.getFloat32(L.scaleOffset + 4 * ((which * L.Hkv + h) * L.pageSize + r), true);
      for (let i = r * width; i < (r + 1) * width; i++) out[i] = (q[i]! / 127) * s;
    }
  } else {
    const t = L.dtype === 'f16' ? f16Table() : bf16Table();
    const u = new Uint16Array(page.buffer, off, n);
    for (let i = 0; i < n; i++) out[i] = t[u[i]!]!;
  }
  return out;
}

/**
 * A fast 32-bit hash of a byte range whose length is a multiple of 4 (a multiply-xorshift over
 * 32-bit words, murmur3's finaliser at the end). It catches flipped bits and lost or reordered
 * words; it is not cryptographic.
 *
 * @example
 * const sum = hash32(pageBytes);
 */
export function hash32(bytes: Uint8Array): number {
  const w = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2);
  let h = 0x9e3779b9 ^ bytes.byteLength;
  const n = w.length;
  for (let i = 0; i < n; i++) {
    h = Math.imul(h ^ w[i]!, 0x85ebca6b);
    h ^= h >>> 13;
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
