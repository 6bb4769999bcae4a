/**
 * The GPU tensor view and storage dtypes.
 *
 * A tensor is a caller-owned `GPUBuffer` plus a byte offset, a shape and a storage dtype. Data is
 * row-major (C-contiguous) in the listed shape. Storage dtypes:
 * - `f32`: 4 bytes per element.
 * - `f16`: IEEE half, 2 bytes per element, two per 32-bit word, element `2i` in the low half.
 *   This is bit-identical to `array<f16>`, so the same buffer serves devices with and without
 *   `shader-f16`; kernels read it with `unpack2x16float` and compute in f32.
 * - `bf16`: the upper 16 bits of an f32, packed the same way (element `2i` in the low half).
 * - `i32`, `u32`: 4-byte integers (indices, lengths).
 * Kernels always accumulate in f32.
 */
import { TesseraError, fail } from './errors.js';
import { checkBuffer, type TesseraDevice } from './gpu/device.js';
import { GPUBufferUsageFlags } from './gpu/flags.js';

export type FloatDType = 'f32' | 'f16' | 'bf16';
export type DType = FloatDType | 'i32' | 'u32';

export const DTYPE_BYTES: Readonly<Record<DType, number>> = { f32: 4, f16: 2, bf16: 2, i32: 4, u32: 4 };

/** A view of a caller-owned GPU buffer. `offset` is in bytes (default 0). */
export interface GpuTensor {
  buffer: GPUBuffer;
  offset?: number;
  shape: readonly number[];
  dtype: DType;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}

/** Bytes a tensor of this shape and dtype occupies, rounded up to whole 32-bit words. */
export function byteSize(shape: readonly number[], dtype: DType): number {
  return Math.ceil((numel(shape) * DTYPE_BYTES[dtype]) / 4) * 4;
}

/** The 32-bit word count of a tensor (packed dtypes hold two elements per word). */
export function wordCount(shape: readonly number[], dtype: DType): number {
  return byteSize(shape, dtype) / 4;
}

export function isFloatDType(d: unknown): d is FloatDType {
  return d === 'f32' || d === 'f16' || d === 'bf16';
}

/** Storage code used by shaders (override constant `*_DTYPE`): 0 = f32, 1 = f16, 2 = bf16. */
export function dtypeCode(d: FloatDType): number {
  return d === 'f32' ? 0 : d === 'f16' ? 1 : 2;
}

/**
 * Checks that `t` is a tensor of the given rank/shape/dtype and that its buffer is large enough
 * and has STORAGE usage (or `spec.usage`), is not known to be destroyed and, given
 * `spec.device`, is not known to belong to another device. `shape` entries that are `-1` are free
 * (the caller checks them). Returns the tensor for convenience.
 */
export function checkTensor(
  t: unknown,
  argument: string,
  spec: { rank?: number; shape?: readonly number[]; dtypes?: readonly DType[]; usage?: number; device?: TesseraDevice },
): GpuTensor {
  if (t === null || typeof t !== 'object')
    fail('E_ARG', argument, 'is not a tensor;', t === null ? 'null' : typeof t, '{ buffer, shape, dtype, offset? }');
  const x = t as GpuTensor;
  if (!x.buffer || typeof (x.buffer as GPUBuffer).size !== 'number') {
    fail('E_BUFFER', `${argument}.buffer`, 'is not a GPUBuffer;', typeof x.buffer, 'a GPUBuffer');
  }
  checkBuffer(spec.device, x.buffer, `${argument}.buffer`);
  if (!Array.isArray(x.shape) || x.shape.some((s) => !Number.isInteger(s) || s < 0)) {
    fail('E_SHAPE', `${argument}.shape`, 'is not a list of non-negative integers;', x.shape);
  }
  if (spec.rank !== undefined && x.shape.length !== spec.rank) {
    fail('E_SHAPE', `${argument}.shape`, `has rank ${x.shape.length};`, x.shape, `rank ${spec.rank}`);
  }
  if (spec.shape) {
    for (let i = 0; i < spec.shape.length; i++) {
      const want = spec.shape[i]!;
      if (want >= 0 && x.shape[i] !== want) {
        fail(
          'E_SHAPE',
          `${argument}.shape[${i}]`,
          'does not match;',
          x.shape,
          `[${spec.shape.map((s) => (s < 0 ? '*' : s)).join(', ')}]`,
        );
      }
    }
  }
  if (spec.dtypes && !spec.dtypes.includes(x.dtype)) {
    fail('E_DTYPE', `${argument}.dtype`, 'is not accepted here;', x.dtype, `one of ${spec.dtypes.join(', ')}`);
  }
  if (!(x.dtype in DTYPE_BYTES))
    fail('E_DTYPE', `${argument}.dtype`, 'is unknown;', x.dtype, Object.keys(DTYPE_BYTES).join(', '));
  const offset = x.offset ?? 0;
  if (!Number.isInteger(offset) || offset < 0 || offset % 256 !== 0) {
    fail(
      'E_ARG',
      `${argument}.offset`,
      'is not a valid binding offset;',
      offset,
      'a non-negative multiple of 256 bytes',
    );
  }
  const need = offset + byteSize(x.shape, x.dtype);
  if (x.buffer.size < need) {
    fail(
      'E_BUFFER',
      `${argument}.buffer`,
      `is too small for shape [${x.shape.join(', ')}] ${x.dtype} at offset ${offset};`,
      `${x.buffer.size} bytes`,
      `at least ${need} bytes`,
    );
  }
  const usage = spec.usage ?? GPUBufferUsageFlags.STORAGE;
  if ((x.buffer.usage & usage) !== usage) {
    fail(
      'E_BUFFER',
      `${argument}.buffer`,
      'lacks a needed usage flag;',
      `usage ${x.buffer.usage}`,
      `usage including ${usage} (STORAGE = 128)`,
    );
  }
  return x;
}

/** GPUBufferUsage values, usable before `globalThis.GPUBufferUsage` exists (see src/gpu/flags.ts). */
export { GPUBufferUsageFlags };

// ---------------------------------------------------------------------------------------------
// Host-side conversion between numbers and storage words.

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** f32 -> IEEE half bits, round to nearest even; overflow saturates to +-Inf, NaN stays NaN. */
export function f32ToF16Bits(x: number): number {
  f32buf[0] = x;
  const f = u32buf[0]!;
  const sign = (f >>> 16) & 0x8000;
  const exp = (f >>> 23) & 0xff;
  let mant = f & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
  return sign | h;
}

export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 0x1f) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

/** f32 -> bf16 bits, round to nearest even. */
export function f32ToBf16Bits(x: number): number {
  f32buf[0] = x;
  const f = u32buf[0]!;
  if ((f & 0x7f800000) === 0x7f800000 && f & 0x7fffff) return (f >>> 16) | 0x40;
  const r = f + 0x7fff + ((f >>> 16) & 1);
  return (r >>> 16) & 0xffff;
}

export function bf16BitsToF32(h: number): number {
  u32buf[0] = (h & 0xffff) << 16;
  return f32buf[0]!;
}

/** Encodes numbers into the storage words of `dtype` (what a GPU buffer of that dtype holds). */
export function encode(values: ArrayLike<number>, dtype: DType): Uint32Array {
  const n = values.length;
  if (dtype === 'f32') {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = values[i]!;
    return new Uint32Array(out.buffer);
  }
  if (dtype === 'i32') return new Uint32Array(Int32Array.from(values as ArrayLike<number>).buffer);
  if (dtype === 'u32') return Uint32Array.from(values as ArrayLike<number>);
  const halves = new Uint16Array(n + (n & 1));
  const conv = dtype === 'f16' ? f32ToF16Bits : f32ToBf16Bits;
  for (let i = 0; i < n; i++) halves[i] = conv(values[i]!);
  return new Uint32Array(halves.buffer);
}

/** Decodes `count` elements of `dtype` from storage words into f64 numbers. */
export function decode(
  words: Uint32Array,
  dtype: DType,
  count = words.length * (DTYPE_BYTES[dtype] === 2 ? 2 : 1),
): Float64Array {
  const out = new Float64Array(count);
  if (dtype === 'f32') {
    const f = new Float32Array(words.buffer, words.byteOffset, words.length);
    for (let i = 0; i < count; i++) out[i] = f[i]!;
  } else if (dtype === 'i32') {
    const f = new Int32Array(words.buffer, words.byteOffset, words.length);
    for (let i = 0; i < count; i++) out[i] = f[i]!;
  } else if (dtype === 'u32') {
    for (let i = 0; i < count; i++) out[i] = words[i]!;
  } else {
    const h = new Uint16Array(words.buffer, words.byteOffset, words.length * 2);
    const conv = dtype === 'f16' ? f16BitsToF32 : bf16BitsToF32;
    for (let i = 0; i < count; i++) out[i] = conv(h[i]!);
  }
  return out;
}

/** Rounds values to what `dtype` storage holds (the inputs a reference should see). */
export function roundTo(values: ArrayLike<number>, dtype: FloatDType): Float64Array {
  return decode(encode(values, dtype), dtype, values.length);
}

export { TesseraError };

/**
 * Host values for a tensor: a typed array of numbers, or an array whose every element is a number.
 * A string (whose characters would convert to NaN), a BigInt array, an object with a `length`, or
 * an array holding non-numbers is `E_ARG` naming `argument`. Returns the values.
 *
 * @example
 * checkHostValues(k, 'k'); // before converting k to the cache's dtype
 */
export function checkHostValues(values: unknown, argument: string): ArrayLike<number> {
  if (ArrayBuffer.isView(values) && !(values instanceof DataView)) {
    if (values instanceof BigInt64Array || values instanceof BigUint64Array)
      fail(
        'E_ARG',
        argument,
        'is a BigInt array;',
        values.constructor.name,
        'a typed array of numbers or an array of numbers',
      );
    return values as unknown as ArrayLike<number>;
  }
  if (Array.isArray(values)) {
    const bad = values.findIndex((x) => typeof x !== 'number');
    if (bad >= 0) fail('E_ARG', argument, `element ${bad} is not a number;`, typeof values[bad], 'an array of numbers');
    return values;
  }
  return fail(
    'E_ARG',
    argument,
    'is not an array of numbers;',
    typeof values === 'string' ? 'a string' : typeof values,
    'a typed array of numbers or an array of numbers',
  );
}
