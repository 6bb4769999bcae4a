/**
 * Block-sparse attention over a ragged batch (`cuSeqlens`, the varlen layout of MoBA, NSA and
 * DSA): sequence n is query rows `[cuSeqlens[n], cuSeqlens[n+1])` of q, o and lse and key rows
 * `[cuSeqlensK[n], cuSeqlensK[n+1])` of k and v (default: the same rows), with its own BSR mask in
 * the layout `planBlockSparse` takes for one sequence (its query blocks of R rows and key blocks of
 * C keys start at the sequence's first row). The masks are validated and uploaded once, at plan
 * time, into one list buffer (per sequence its CSR table, then its block ids); one dispatch of the
 * attention core (kernels/attention, key source 3, lists.ts `seqs`) attends every sequence,
 * reading and writing the batch tensors in place at the sequence's own rows: no staging copies,
 * however many sequences, whatever their alignment.
 */
import { check, fail } from '../../src/errors.js';
import { resolveTarget } from '../../src/options.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { planLoopLimit, withLoopLimit } from '../../src/gpu/segments.js';
import { checkAttentionSizes, runOnceAndDispose } from '../../src/plan.js';
import { BlockListPlan, type BlockListSeq } from '../attention/lists.js';
import {
  BlockSparseEncoder,
  validateBlockSparseCommon,
  validateBsrMask,
  type BlockSparseOptions,
  type BlockSparseTensors,
} from './block_sparse.js';
import { raggedSequences } from './ragged.js';

/** One sequence's BSR mask, as `planBlockSparse` takes it: one pattern, or a list of P (= Hkv or Hq). */
export type BsrPattern = ArrayLike<number> | ArrayLike<number>[];

export interface BlockSparseVarlenOptions extends Omit<BlockSparseOptions, 'Tq' | 'Tk' | 'indptr' | 'indices'> {
  /** `[N + 1]` cumulative query lengths, starting at 0, non-decreasing (flash-attn / fla layout). */
  cuSeqlens: readonly number[];
  /**
   * `[N + 1]` cumulative key lengths (default `cuSeqlens`: each sequence attends its own rows).
   * With `causal`, query row i of a sequence of Tq rows and Tk keys sits at key position
   * i + Tk − Tq (bottom-right, as `planBlockSparse`).
   */
  cuSeqlensK?: readonly number[];
  /**
   * Per sequence, its BSR row pointers: `[ceil(Tq_n / R) + 1]` (one pattern) or P such arrays, P
   * the same for every sequence (an empty sequence: `[0]`, or P of them).
   */
  indptr: readonly BsrPattern[];
  /** Per sequence, its block ids in `[0, ceil(Tk_n / C))` (the key blocks of that sequence). */
  indices: readonly BsrPattern[];
}

interface Resolved extends ReturnType<typeof validateBlockSparseCommon> {
  totalQ: number;
  totalK: number;
}

/**
 * Block-sparse attention over a ragged batch (`cuSeqlens`), one BSR mask per sequence.
 * Planned once by `planBlockSparseVarlen`; `run` records one dispatch set for the whole batch
 * into your encoder and allocates nothing; `dispose()` frees what the plan holds.
 *
 * @example
 * // two sequences of 100 and 28 rows, blocks of 64: the first has 2 block rows, the second 1
 * const plan = await planBlockSparseVarlen(dev, { cuSeqlens: [0, 100, 128], Hq: 4, Hkv: 2, D: 64, R: 64, C: 64, indptr: [[0, 1, 3], [0, 1]], indices: [[0, 0, 1], [0]] });
 * plan.run(encoder, { q, k, v, o, lse });   // q, o: the 128 rows of both sequences
 * plan.dispose();
 */
export class BlockSparseVarlenPlan extends BlockSparseEncoder {
  readonly options: Readonly<Resolved>;
  /**
   * Parts of each row's block list per run: 1, or more on a loop-capped device (llvmpipe) when
   * one invocation would walk too many keys; the parts are merged by kernels/merge. 0 when every
   * sequence is empty (nothing to run).
   */
  readonly segments: number;

  private constructor(ctx: TesseraDevice, o: Resolved, words: Uint32Array<ArrayBuffer>, core?: BlockListPlan) {
    super(ctx);
    this.options = o;
    this.segments = core?.split.parts ?? 0;
    this.initLists({ ...o, Tq: o.totalQ, Tk: o.totalK }, words, core, 'block_sparse.varlen.lists');
  }

  /** @internal use {@link planBlockSparseVarlen}. */
  static async create(device: DeviceLike, opts: BlockSparseVarlenOptions): Promise<BlockSparseVarlenPlan> {
    const ctx = ctxOf(device);
    if (opts === null || typeof opts !== 'object') fail('E_ARG', 'options', 'missing;', opts, 'an options object');
    const qs = raggedSequences(opts.cuSeqlens);
    const ks = opts.cuSeqlensK === undefined ? qs : raggedSequences(opts.cuSeqlensK, 'cuSeqlensK');
    check(ks.length === qs.length, 'cuSeqlensK', `${qs.length + 1} entries, as cuSeqlens`, ks.length + 1);
    const c = validateBlockSparseCommon(opts);
    const N = qs.length;
    for (const name of ['indptr', 'indices'] as const)
      check(
        Array.isArray(opts[name]) && opts[name].length === N,
        name,
        `one mask per sequence (${N})`,
        Array.isArray(opts[name]) ? opts[name].length : typeof opts[name],
      );
    const totalQ = qs.length ? qs[N - 1]!.start + qs[N - 1]!.len : 0;
    const totalK = ks.length ? ks[N - 1]!.start + ks[N - 1]!.len : 0;
    const o: Resolved = { ...c, totalQ, totalK };
    if (totalQ > 0) checkAttentionSizes(ctx, { ...c, Tq: totalQ, Tk: Math.max(1, totalK) });
    // The list buffer: per sequence its CSR table [P, MB + 1] (offsets into its block ids), then the ids.
    const chunks: Uint32Array[] = [];
    const seqs: BlockListSeq[] = [];
    let words = 0;
    let P: number | undefined;
    let maxEntries = 0;
    for (let n = 0; n < N; n++) {
      const { start: q0, len: Tq } = qs[n]!;
      const { start: kv0, len: Tk } = ks[n]!;
      const m = validateBsrMask(opts.indptr[n]!, opts.indices[n]!, {
        Tq,
        Tk,
        R: c.R,
        C: c.C,
        Hq: c.Hq,
        Hkv: c.Hkv,
        name: `[${n}]`,
        P,
      });
      P ??= m.P;
      maxEntries = Math.max(maxEntries, m.maxEntries);
      const ptr = words;
      const base = ptr + m.indptr.length;
      chunks.push(m.indptr, new Uint32Array(m.indices.buffer, m.indices.byteOffset, m.indices.length));
      words = base + m.indices.length;
      seqs.push({ q0, Tq, kv0, Tk, posOff: Tk - Tq, base, ptr, mb: m.MB });
    }
    const all = new Uint32Array(Math.max(1, words));
    let at = 0;
    for (const x of chunks) {
      all.set(x, at);
      at += x.length;
    }
    if (totalQ === 0) return new BlockSparseVarlenPlan(ctx, o, all);
    const core = await BlockListPlan.create(withLoopLimit(ctx, planLoopLimit(ctx, opts.loopLimit)), {
      Tq: totalQ,
      Tk: totalK,
      Hq: c.Hq,
      Hkv: c.Hkv,
      D: c.D,
      Dv: c.Dv,
      rows: c.R,
      heads: P!,
      stride: 0,
      base: 0,
      block: c.C,
      maxEntries,
      posOff: 0,
      causal: c.causal,
      scale: c.scale,
      qDtype: c.dtype,
      kvDtype: c.dtype,
      oDtype: c.outDtype,
      target: resolveTarget(ctx, c.target),
      seqs,
    });
    return new BlockSparseVarlenPlan(ctx, o, all, core);
  }
}

/**
 * Plans block-sparse attention over a ragged batch (`cuSeqlens`), one BSR mask per sequence
 * (validated and uploaded once here).
 *
 * @example
 * const plan = await planBlockSparseVarlen(dev, { cuSeqlens: [0, 100, 128], Hq: 4, Hkv: 2, D: 64, R: 64, C: 64, indptr: [[0, 1, 3], [0, 1]], indices: [[0, 0, 1], [0]] });
 * plan.run(encoder, { q, k, v, o, lse });
 */
export function planBlockSparseVarlen(
  device: DeviceLike,
  opts: BlockSparseVarlenOptions,
): Promise<BlockSparseVarlenPlan> {
  return BlockSparseVarlenPlan.create(device, opts);
}

/**
 * Block-sparse attention over a ragged batch in one call (plan, run, submit, wait).
 *
 * @example
 * await blockSparseVarlen(dev, { q, k, v, o }, { cuSeqlens: [0, 100, 128], Hq: 4, Hkv: 2, D: 64, R: 64, C: 64, indptr: [[0, 1, 3], [0, 1]], indices: [[0, 0, 1], [0]] });
 */
export async function blockSparseVarlen(
  device: DeviceLike,
  t: BlockSparseTensors,
  opts: BlockSparseVarlenOptions,
): Promise<void> {
  const ctx = ctxOf(device);
  const plan = await planBlockSparseVarlen(ctx, opts);
  await runOnceAndDispose(ctx, plan, t, 'block_sparse.varlen');
}
