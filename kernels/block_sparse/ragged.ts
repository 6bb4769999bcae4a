/**
 * Ragged batches of the sparse families (MoBA, NSA, DSA varlen): sequence n is rows
 * `[cuSeqlens[n], cuSeqlens[n+1])` of every `[T, ...]` tensor. The varlen plans run one set of
 * dispatches over the whole batch, each kernel finding a row's sequence in a small table written
 * at plan time (the attention core: kernels/attention/lists.ts `seqs`), so rows are read and
 * written in place (no staging copies). Internal helpers.
 */
import { check, fail } from '../../src/errors.js';

/**
 * Validates `cuSeqlens` (`[0, ..., total]`, non-decreasing integers) and returns the sequences;
 * errors name `name` (default `cuSeqlens`).
 *
 * @example
 * raggedSequences([0, 300, 812]); // [{ start: 0, len: 300 }, { start: 300, len: 512 }]
 */
export function raggedSequences(
  cu: readonly number[] | undefined,
  name = 'cuSeqlens',
): { start: number; len: number }[] {
  check(Array.isArray(cu) && cu.length >= 2, name, 'an array [0, ..., total] of at least 2 entries', cu);
  if (cu[0] !== 0) fail('E_ARG', `${name}[0]`, 'must be 0;', cu[0], '0');
  const out: { start: number; len: number }[] = [];
  for (let n = 1; n < cu.length; n++) {
    if (!Number.isInteger(cu[n]) || cu[n]! < cu[n - 1]!)
      fail('E_ARG', `${name}[${n}]`, 'must be a non-decreasing integer;', cu[n], `>= ${cu[n - 1]}`);
    out.push({ start: cu[n - 1]!, len: cu[n]! - cu[n - 1]! });
  }
  return out;
}
