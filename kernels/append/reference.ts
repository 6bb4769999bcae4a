/**
 * Float64 references of `kernels/append`: RoPE (rotate-half and interleaved, linear scaling,
 * partial rotary dims), the cos/sin table the kernels read, the host page encoding of an append
 * through a CSR page table, and the Quest min/max summaries of a page.
 */
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from '../../src/tensor.js';
import { KV_DTYPE_BYTES, type KvDType, type PageLayout } from '../attention/page.js';

/** RoPE convention: `half` = rotate-half (Llama, NeoX), `interleaved` = GPT-J. */
export type RopeStyle = 'half' | 'interleaved';

export interface RopeOptions {
  /** `half` (default) or `interleaved`. */
  style?: RopeStyle;
  /** Base of the frequencies, `rope_theta` (default 10000). */
  theta?: number;
  /** Linear position scaling: the angle is `p / scale * theta_i` (default 1). */
  scale?: number;
  /** Rotated leading dims (default: all `D`); a multiple of 4. The rest pass unchanged. */
  rotaryDim?: number;
}

/** `theta_i = base^(-2i / rotaryDim) / scale` for i < rotaryDim / 2, in float64. */
export function ropeFrequencies(rotaryDim: number, theta = 10000, scale = 1): Float64Array {
  const f = new Float64Array(rotaryDim / 2);
  for (let i = 0; i < rotaryDim / 2; i++) f[i] = theta ** (-(2 * i) / rotaryDim) / scale;
  return f;
}

/**
 * The `(cos, sin)` table the kernels read, `[positions, rotaryDim / 2, 2]` f32, computed in float64
 * then rounded (so the GPU's rotation is as exact as f32 allows at any position).
 *
 * @example
 * const t = ropeCosSinTable(4096, 64); // positions 0..4095, 32 pairs each
 */
export function ropeCosSinTable(
  positions: number,
  rotaryDim: number,
  theta = 10000,
  scale = 1,
): Float32Array<ArrayBuffer> {
  const f = ropeFrequencies(rotaryDim, theta, scale);
  const half = rotaryDim / 2;
  const out = new Float32Array(positions * half * 2);
  for (let p = 0; p < positions; p++) {
    for (let i = 0; i < half; i++) {
      const a = p * f[i]!;
      out[2 * (p * half + i)] = Math.cos(a);
      out[2 * (p * half + i) + 1] = Math.sin(a);
    }
  }
  return out;
}

/**
 * RoPE in float64 on rows `x [rows, H, D]` at `positions [rows]`.
 *
 * @example
 * const qr = ropeReference(q, [5, 6], 8, 64, { style: 'half', theta: 1e4 });
 */
export function ropeReference(
  x: ArrayLike<number>,
  positions: ArrayLike<number>,
  H: number,
  D: number,
  o: RopeOptions = {},
): Float64Array {
  const rd = o.rotaryDim ?? D;
  const f = ropeFrequencies(rd, o.theta ?? 10000, o.scale ?? 1);
  const out = Float64Array.from(x as ArrayLike<number>);
  const rows = positions.length;
  for (let r = 0; r < rows; r++) {
    const p = positions[r]!;
    for (let h = 0; h < H; h++) {
      const b = (r * H + h) * D;
      for (let i = 0; i < rd / 2; i++) {
        const c = Math.cos(p * f[i]!);
        const s = Math.sin(p * f[i]!);
        const [ia, ib] = o.style === 'interleaved' ? [b + 2 * i, b + 2 * i + 1] : [b + i, b + i + rd / 2];
        const xa = x[ia]!;
        const xb = x[ib]!;
        out[ia] = xa * c - xb * s;
        out[ib] = xb * c + xa * s;
      }
    }
  }
  return out;
}

/** A CSR page table and the rows of one append step (FlashInfer's vocabulary). */
export interface AppendSchedule {
  /** `[B + 1]` start of each sequence's page list in `kvIndices`. */
  kvIndptr: ArrayLike<number>;
  /** Pool page ids, in order. */
  kvIndices: ArrayLike<number>;
  /** `[nnz]` sequence of each new row. */
  batchIndices: ArrayLike<number>;
  /** `[nnz]` position of each new row in its sequence. */
  positions: ArrayLike<number>;
}

/** Writes one value into page bytes at element `e` of the page's K or V block, as the host codec does. */
function put(dv: DataView, byte: number, x: number, dtype: KvDType): void {
  if (dtype === 'f32') dv.setFloat32(byte, x, true);
  else if (dtype === 'f16') dv.setUint16(byte, f32ToF16Bits(Math.min(65504, Math.max(-65504, x))), true);
  else if (dtype === 'bf16') dv.setUint16(byte, f32ToBf16Bits(x), true);
  else throw new Error(`appendReference: ${dtype} values are written per row (quantizeRowInt8)`);
}

function get(dv: DataView, byte: number, dtype: KvDType, scale = 1): number {
  if (dtype === 'f32') return dv.getFloat32(byte, true);
  if (dtype === 'int8') return Math.fround((dv.getInt8(byte) / 127) * scale);
  const h = dv.getUint16(byte, true);
  return dtype === 'f16' ? f16BitsToF32(h) : bf16BitsToF32(h);
}

/**
 * The host encoding of an append: writes rows `k [nnz, Hkv, D]`, `v [nnz, Hkv, Dv]` (values,
 * RoPE already applied to k if any) into the page bytes `pool` (pages of layout `L`) through the
 * page table. f16 saturates finite values to +-65504 and rounds to nearest even; bf16 rounds to
 * nearest even; int8 quantises each row of each head with its own scale (max |x|) into the page's
 * scales `[2, Hkv, P]`. Returns the pool (modified in place).
 */
export function appendReference(
  pool: Uint8Array,
  L: PageLayout,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  s: AppendSchedule,
): Uint8Array {
  const n = s.positions.length;
  const eb = KV_DTYPE_BYTES[L.dtype];
  const dv = new DataView(pool.buffer, pool.byteOffset, pool.byteLength);
  for (let i = 0; i < n; i++) {
    const b = s.batchIndices[i]!;
    const p = s.positions[i]!;
    const page = s.kvIndices[s.kvIndptr[b]! + Math.floor(p / L.pageSize)]!;
    const r = p % L.pageSize;
    if (L.dtype === 'int8') {
      for (let h = 0; h < L.Hkv; h++) {
        quantizeRowInt8(
          dv,
          page * L.pageBytes + (h * L.pageSize + r) * L.D,
          page * L.pageBytes + L.scaleOffset + 4 * (h * L.pageSize + r),
          k,
          (i * L.Hkv + h) * L.D,
          L.D,
        );
        quantizeRowInt8(
          dv,
          page * L.pageBytes + L.vOffset + (h * L.pageSize + r) * L.Dv,
          page * L.pageBytes + L.scaleOffset + 4 * ((L.Hkv + h) * L.pageSize + r),
          v,
          (i * L.Hkv + h) * L.Dv,
          L.Dv,
        );
      }
      continue;
    }
    for (let h = 0; h < L.Hkv; h++) {
      for (let d = 0; d < L.D; d++)
        put(dv, page * L.pageBytes + ((h * L.pageSize + r) * L.D + d) * eb, k[(i * L.Hkv + h) * L.D + d]!, L.dtype);
      for (let d = 0; d < L.Dv; d++)
        put(
          dv,
          page * L.pageBytes + L.vOffset + ((h * L.pageSize + r) * L.Dv + d) * eb,
          v[(i * L.Hkv + h) * L.Dv + d]!,
          L.dtype,
        );
    }
  }
  return pool;
}

/**
 * One int8 row: scale s = max |x| of the row's f32 values, codes round(x * 127 / s) (ties up, as
 * `Math.round`), written at byte `at`, the scale (f32) at byte `scaleAt`.
 */
function quantizeRowInt8(
  dv: DataView,
  at: number,
  scaleAt: number,
  x: ArrayLike<number>,
  from: number,
  width: number,
): void {
  let s = 0;
  for (let d = 0; d < width; d++) s = Math.max(s, Math.abs(Math.fround(x[from + d]!)));
  dv.setFloat32(scaleAt, s, true);
  for (let d = 0; d < width; d++) dv.setInt8(at + d, s > 0 ? Math.round((Math.fround(x[from + d]!) * 127) / s) : 0);
}

/** The f16 bits of the largest half <= x (`up`: the smallest half >= x). */
export function f16Bound(x: number, up: boolean): number {
  let h = f32ToF16Bits(x);
  const v = f16BitsToF32(h);
  if (Number.isNaN(v) || (up ? v >= x : v <= x)) return h;
  const neg = (h & 0x8000) !== 0;
  const mag = h & 0x7fff;
  if (mag === 0) return up ? 0x0001 : 0x8001;
  if (neg === up) h = (h & 0x8000) | (mag - 1);
  else if (mag < 0x7c00) h = (h & 0x8000) | (mag + 1);
  return h;
}

/**
 * Quest min/max summary of the first `len` rows of a page: per KV head and channel, the min and
 * max of the stored keys, rounded outwards to f16; `[Hkv, 2, D]` f16 bits (min then max).
 */
export function pageSummaryReference(page: Uint8Array, L: PageLayout, len: number): Uint16Array {
  const out = new Uint16Array(L.Hkv * 2 * L.D);
  const eb = KV_DTYPE_BYTES[L.dtype];
  const dv = new DataView(page.buffer, page.byteOffset, page.byteLength);
  for (let h = 0; h < L.Hkv; h++) {
    for (let d = 0; d < L.D; d++) {
      let mn = Infinity;
      let mx = -Infinity;
      for (let r = 0; r < len; r++) {
        const scale = L.dtype === 'int8' ? dv.getFloat32(L.scaleOffset + 4 * (h * L.pageSize + r), true) : 1;
        const x = get(dv, ((h * L.pageSize + r) * L.D + d) * eb, L.dtype, scale);
        if (x < mn) mn = x;
        if (x > mx) mx = x;
      }
      out[h * 2 * L.D + d] = f16Bound(mn, false);
      out[(h * 2 + 1) * L.D + d] = f16Bound(mx, true);
    }
  }
  return out;
}

export type { KvDType };
