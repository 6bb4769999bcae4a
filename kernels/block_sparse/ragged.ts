/**
 * Ragged batches of the sparse families (MoBA, NSA, DSA varlen): sequence n is rows
 * `[cuSeqlens[n], cuSeqlens[n+1])` of every `[T, ...]` tensor. The varlen plans run one set of
 * dispatches over the whole batch, each kernel finding a row's sequence in a small table written
 * at plan time (the attention core: kernels/attention/lists.ts `seqs`), so rows are read and
 * written in place (no staging copies). Internal helpers, and the two forms of a family's
 * selection pass (`raggedPass`).
 */
import { check, fail } from '../../src/errors.js';
import {
  bindingTable,
  optional,
  type BindingEntries,
  type OptionalBinding,
  type BindingTable,
  type BindingVariant,
  type VariantFlags,
} from '../../src/gpu/bindings.js';
import { wgslProgram, type PipelineSpec, type ShaderSource } from '../../src/gpu/pipeline.js';
import raggedSeqWgsl from '../../shaders/ragged_seq.wgsl.js';
import selectSmallWgsl from '../../shaders/select_small.wgsl.js';
import storageWgsl from '../../shaders/storage.wgsl.js';
import unpackWgsl from '../../shaders/unpack4.wgsl.js';
import raggedTableWgsl from '../../shaders/ragged_table.wgsl.js';

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

/** One form of a {@link raggedPass}: its WGSL program, its binding table and its pipeline spec. */
export interface PassForm<E extends BindingEntries> {
  readonly program: ShaderSource;
  readonly table: BindingTable<E>;
  /** The pipeline spec of the table's variant `flags` with `override` constants `constants`. */
  spec(flags: VariantFlags<E>, constants: Readonly<Record<string, number>>): PipelineSpec<BindingVariant<E>>;
}

/** The batch form's bindings: the pass's own, then the ragged sequence table `seqs`. */
export type RaggedEntries<E extends BindingEntries> = E & { readonly seqs: 'read' };

/**
 * A selection-style pass of a sparse family (MoBA and NSA selection, the DSA indexer) in its two
 * forms: over one sequence (`one`, named `name`) and over a ragged batch (`batch`, named
 * `family/varlen_pass`). Both programs are `head`, their entry file, then `core`; the batch form
 * puts the ragged tables (shaders/ragged_table.wgsl, ragged_seq.wgsl) before `core`, and binds
 * the sequence table `seqs` after the pass's own bindings.
 *
 * @example
 * const SELECT = raggedPass('nsa/select', { head, entry: selectWgsl, batchEntry: varlenSelectWgsl, core: [coreWgsl] }, { q_buf: 'read', out: 'rw', params: 'uniform' });
 * getPipeline(ctx, SELECT.batch.spec({}, { WG: 64, D }));
 */
export function raggedPass<const E extends BindingEntries>(
  name: string,
  wgsl: { head: readonly string[]; entry: string; batchEntry: string; core: readonly string[] },
  entries: E,
): { readonly one: PassForm<E>; readonly batch: PassForm<RaggedEntries<E>> } {
  const slash = name.indexOf('/');
  const batchName = `${name.slice(0, slash)}/varlen_${name.slice(slash + 1)}`;
  return {
    one: passForm(wgslProgram(name, [...wgsl.head, wgsl.entry, ...wgsl.core]), bindingTable(name, entries)),
    batch: passForm(
      wgslProgram(batchName, [...wgsl.head, wgsl.batchEntry, raggedTableWgsl, raggedSeqWgsl, ...wgsl.core]),
      bindingTable(batchName, { ...entries, seqs: 'read' } as RaggedEntries<E>),
    ),
  };
}

function passForm<E extends BindingEntries>(program: ShaderSource, table: BindingTable<E>): PassForm<E> {
  return {
    program,
    table,
    spec: (flags, constants) => ({ shader: program, bindings: table.variant(flags), constants }),
  };
}

/**
 * The top-k block selection of MoBA and NSA as a {@link raggedPass}: the shared prologue (storage
 * and unpack helpers, shaders/select_small.wgsl, the pass's `params` struct), the entry, the
 * family's `core`, and after `entries` the optional `carry`: bound only by plans of several
 * segments (a loop-capped device), the kernel reads and writes it where params.seg_carry /
 * seg_last say so.
 *
 * @example
 * const SELECT = selectionPass('moba/select', MOBA_SELECT_PARAMS, { entry, batchEntry, core }, { q_buf: 'read', sel: 'rw', params: 'uniform' });
 */
export function selectionPass<const E extends BindingEntries>(
  name: string,
  params: { readonly wgsl: string },
  wgsl: { entry: string; batchEntry: string; core: string },
  entries: E,
): ReturnType<typeof raggedPass<E & { readonly carry: OptionalBinding }>> {
  const head = [storageWgsl, unpackWgsl, selectSmallWgsl, params.wgsl];
  const withCarry = { ...entries, carry: optional('rw', 'array<f32>') } as E & { readonly carry: OptionalBinding };
  return raggedPass(name, { head, entry: wgsl.entry, batchEntry: wgsl.batchEntry, core: [wgsl.core] }, withCarry);
}
