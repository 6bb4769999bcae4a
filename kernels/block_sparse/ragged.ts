/**
 * Ragged batches for the single-sequence sparse plans (NSA, DSA, MoBA): sequence n is rows
 * `[cuSeqlens[n], cuSeqlens[n+1])` of every `[T, ...]` tensor. A wrapper plan runs one plan per
 * sequence on plan-owned staging tensors: the sequence's rows are copied in before and the
 * outputs copied back after (tensor views must start at 256-byte offsets, sequence boundaries
 * need not). Internal helpers.
 */
import { check, fail } from '../../src/errors.js';
import {
  DTYPE_BYTES,
  GPUBufferUsageFlags as U,
  byteSize,
  checkTensor,
  type DType,
  type GpuTensor,
} from '../../src/tensor.js';

/**
 * Validates `cuSeqlens` (`[0, ..., total]`, non-decreasing integers) and returns the sequences.
 *
 * @example
 * raggedSequences([0, 300, 812]); // [{ start: 0, len: 300 }, { start: 300, len: 512 }]
 */
export function raggedSequences(cu: readonly number[] | undefined): { start: number; len: number }[] {
  check(Array.isArray(cu) && cu.length >= 2, 'cuSeqlens', 'an array [0, ..., total] of at least 2 entries', cu);
  if (cu[0] !== 0) fail('E_ARG', 'cuSeqlens[0]', 'must be 0;', cu[0], '0');
  const out: { start: number; len: number }[] = [];
  for (let n = 1; n < cu.length; n++) {
    if (!Number.isInteger(cu[n]) || cu[n]! < cu[n - 1]!)
      fail('E_ARG', `cuSeqlens[${n}]`, 'must be a non-decreasing integer;', cu[n], `>= ${cu[n - 1]}`);
    out.push({ start: cu[n - 1]!, len: cu[n]! - cu[n - 1]! });
  }
  return out;
}

/** One staged tensor: its per-row shape (after the token axis) and dtype. */
export interface RaggedField {
  row: readonly number[];
  dtype: DType;
}

/**
 * Allocates staging tensors `[len, ...row]` for each field of one sequence.
 *
 * @example
 * const staged = stageTensors((bytes, label) => this.workspace(bytes, label), 300, { q: { row: [Hq, D], dtype: 'f32' } });
 */
export function stageTensors<K extends string>(
  alloc: (bytes: number, label: string) => GPUBuffer,
  len: number,
  fields: Record<K, RaggedField>,
): Record<K, GpuTensor> {
  const out = {} as Record<K, GpuTensor>;
  for (const key of Object.keys(fields) as K[]) {
    const f = fields[key];
    const shape = [len, ...f.row];
    out[key] = { buffer: alloc(byteSize(shape, f.dtype), `ragged.${key}`), shape, dtype: f.dtype };
  }
  return out;
}

/**
 * Checks a caller tensor of the whole batch (`[total, ...row]`) and the copy usage it needs:
 * COPY_SRC for inputs, COPY_DST for outputs.
 *
 * @example
 * const q = checkRagged(t.q, 'q', total, { row: [Hq, D], dtype: 'f32' }, 'in');
 */
export function checkRagged(t: unknown, argument: string, total: number, f: RaggedField, dir: 'in' | 'out'): GpuTensor {
  const rowBytes = f.row.reduce((a, b) => a * b, 1) * DTYPE_BYTES[f.dtype];
  if (rowBytes % 4 !== 0)
    fail(
      'E_UNSUPPORTED',
      `${argument}.shape`,
      'ragged batches need rows of whole 32-bit words;',
      [total, ...f.row],
      `an even number of ${f.dtype} values per row`,
    );
  return checkTensor(t, argument, {
    rank: 1 + f.row.length,
    shape: [total, ...f.row],
    dtypes: [f.dtype],
    usage: U.STORAGE | (dir === 'in' ? U.COPY_SRC : U.COPY_DST),
  });
}

/**
 * Copies rows `[start, start + len)` of a batch tensor into a staging tensor (`in`) or back (`out`).
 *
 * @example
 * copyRows(encoder, q, staged.q, seq.start, seq.len, 'in');
 */
export function copyRows(
  encoder: GPUCommandEncoder,
  batch: GpuTensor,
  staged: GpuTensor,
  start: number,
  len: number,
  dir: 'in' | 'out',
): void {
  if (len === 0) return;
  const rowBytes = batch.shape.slice(1).reduce((a, b) => a * b, 1) * DTYPE_BYTES[batch.dtype];
  const at = (batch.offset ?? 0) + start * rowBytes;
  if (dir === 'in') encoder.copyBufferToBuffer(batch.buffer, at, staged.buffer, staged.offset ?? 0, len * rowBytes);
  else encoder.copyBufferToBuffer(staged.buffer, staged.offset ?? 0, batch.buffer, at, len * rowBytes);
}
