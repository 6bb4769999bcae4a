/**
 * Block-sparse attention with an arbitrary BSR block mask (FlashInfer's `indptr`/`indices` for
 * (R, C) blocks), per-head patterns allowed, causal masking inside diagonal blocks, GQA, f32 /
 * f16 / bf16 storage. One dispatch of the attention core (kernels/attention, key source 3: block
 * lists): the R rows of a block row read its CSR list of key blocks in place.
 */
import { check, checkInt, fail } from '../../src/errors.js';
import { resolveTarget } from '../../src/options.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { planLoopLimit, withLoopLimit } from '../../src/gpu/segments.js';
import {
  KernelPlan,
  checkAttentionSizes,
  runOnceAndDispose,
  attentionSizesOf,
  type AttentionSizes,
} from '../../src/plan.js';
import { type FloatDType, type GpuTensor } from '../../src/tensor.js';
import { BlockListPlan } from '../attention/lists.js';
import { checkBindings, checkRows, validateSparseCommon, type GatherTarget } from './common.js';

export interface BlockSparseOptions {
  /** Query rows. */
  Tq: number;
  /** Keys (default Tq). With `causal`, query row t sits at key position t + Tk − Tq. */
  Tk?: number;
  Hq: number;
  Hkv: number;
  /** q/k head dim, a multiple of 4 up to 256. */
  D: number;
  /** v/o head dim (default D). */
  Dv?: number;
  /** Rows per query block (FlashInfer's R), 1..256. */
  R: number;
  /** Keys per key block (FlashInfer's C), >= 1. */
  C: number;
  /**
   * BSR row pointers: `[ceil(Tq/R) + 1]` for one pattern shared by all heads, or a list of P such
   * arrays (P = Hkv: per KV head; P = Hq: per query head). Each starts at 0 and ends at the
   * length of its `indices`.
   */
  indptr: ArrayLike<number> | ArrayLike<number>[];
  /** BSR column block ids in [0, ceil(Tk/C)), no repeats within a block row; one list per pattern. */
  indices: ArrayLike<number> | ArrayLike<number>[];
  /** Mask keys after the query position inside the listed blocks (default true). */
  causal?: boolean;
  /** Softmax scale (default 1/sqrt(D)). */
  scale?: number;
  /** Storage of q, k, v (default f32). */
  dtype?: FloatDType;
  /** Storage of o (default `dtype`). */
  outDtype?: FloatDType;
  /** Kernel shape: `auto` (default) follows the adapter class; `cpu`/`gpu` force one (tests). */
  target?: GatherTarget;
  /**
   * Size the parts for this loop cap (lower than the device's only; an integer >= 256): tests run
   * the split paths llvmpipe needs on any adapter with it. Default: the device's.
   */
  loopLimit?: number;
}

export interface BlockSparseTensors {
  /** `[Tq, Hq, D]`. */
  q: GpuTensor;
  /** `[Tk, Hkv, D]`. */
  k: GpuTensor;
  /** `[Tk, Hkv, Dv]`. */
  v: GpuTensor;
  /** `[Tq, Hq, Dv]` out. */
  o: GpuTensor;
  /** `[Tq, Hq]` f32 out, natural log; -inf for rows that see no key (optional). */
  lse?: GpuTensor;
}

interface Resolved extends AttentionSizes {
  R: number;
  C: number;
  causal: boolean;
  scale: number;
  dtype: FloatDType;
  outDtype: FloatDType;
  target: GatherTarget;
  P: number;
  MB: number;
  indptr: Uint32Array<ArrayBuffer>;
  indices: Int32Array<ArrayBuffer>;
  maxEntries: number;
}

/**
 * @internal What both block-sparse plans share: the list buffer (written once, at plan time), the
 * tensor checks and the encode (one core dispatch reading the lists in place). BlockSparsePlan
 * (one mask) and BlockSparseVarlenPlan (a mask per sequence, kernels/block_sparse/varlen.ts)
 * differ only in how they plan.
 */
export abstract class BlockSparseEncoder extends KernelPlan<BlockSparseTensors> {
  private rows!: AttentionSizes;
  private core?: BlockListPlan;
  private listBuf!: GPUBuffer;

  /** Uploads the list words; `core` undefined: nothing to encode (a batch without query rows). */
  protected initLists(
    rows: AttentionSizes,
    words: Uint32Array<ArrayBuffer>,
    core: BlockListPlan | undefined,
    label: string,
  ) {
    this.rows = rows;
    this.core = core;
    this.listBuf = this.workspace(words.byteLength, label);
    this.ctx.device.queue.writeBuffer(this.listBuf, 0, words);
  }

  override dispose(): void {
    this.core?.dispose();
    super.dispose();
  }

  run(encoder: GPUCommandEncoder, t: BlockSparseTensors): void {
    this.assertUsable();
    const { Tq, Tk, Hq, Hkv, D, Dv, dtype, outDtype } = this.rows;
    const q = checkRows(t?.q, 'q', Tq, [Hq, D], dtype);
    const k = checkRows(t.k, 'k', Tk, [Hkv, D], dtype);
    const v = checkRows(t.v, 'v', Tk, [Hkv, Dv], dtype);
    const o = checkRows(t.o, 'o', Tq, [Hq, Dv], outDtype);
    const lse = t.lse === undefined ? undefined : checkRows(t.lse, 'lse', Tq, [Hq], 'f32');
    checkBindings(this.ctx, { q, k, v, o });
    this.core?.run(encoder, { q, k, v, lists: { buffer: this.listBuf }, o, lse });
  }
}

/**
 * Attention over a BSR block mask.
 * Planned once by `planBlockSparse`; `run` records it into your encoder and allocates
 * nothing; `dispose()` frees what the plan holds.
 *
 * @example
 * const plan = await planBlockSparse(dev, { Tq: 128, Hq: 4, Hkv: 2, D: 64, R: 64, C: 64, indptr: [0, 1, 3], indices: [0, 0, 1] });
 * plan.run(encoder, { q, k, v, o, lse });
 * plan.dispose();
 */
export class BlockSparsePlan extends BlockSparseEncoder {
  readonly options: Readonly<Resolved>;
  /**
   * Parts of each row's block list per run: 1, or more on a loop-capped device (llvmpipe) when
   * one invocation would walk too many keys (the longest block row's blocks x C keys); the parts
   * are merged by kernels/merge.
   */
  readonly segments: number;
  /** Upper bound of the loop iterations of one invocation. */
  readonly loopIterations: number;

  private constructor(ctx: TesseraDevice, o: Resolved, core: BlockListPlan) {
    super(ctx);
    this.options = o;
    // The core's CSR list: the table [P, MB + 1] then the block ids, one buffer.
    const ptrWords = o.indptr.length;
    const words = new Uint32Array(ptrWords + o.indices.length);
    words.set(o.indptr);
    words.set(new Uint32Array(o.indices.buffer, o.indices.byteOffset, o.indices.length), ptrWords);
    this.initLists(o, words, core, 'block_sparse.lists');
    this.segments = core.split.parts;
    this.loopIterations = core.split.loopIterations;
  }

  /** @internal use {@link planBlockSparse}. */
  static async create(device: DeviceLike, opts: BlockSparseOptions): Promise<BlockSparsePlan> {
    const ctx = ctxOf(device);
    const o = validateBlockSparseOptions(opts);
    checkAttentionSizes(ctx, o);
    const ptrWords = o.indptr.length;
    const core = await BlockListPlan.create(withLoopLimit(ctx, planLoopLimit(ctx, opts.loopLimit)), {
      Tq: o.Tq,
      Tk: o.Tk,
      Hq: o.Hq,
      Hkv: o.Hkv,
      D: o.D,
      Dv: o.Dv,
      rows: o.R,
      heads: o.P,
      stride: 0,
      mb: o.MB,
      ptr: 0,
      base: ptrWords,
      block: o.C,
      maxEntries: o.maxEntries,
      posOff: o.Tk - o.Tq,
      causal: o.causal,
      scale: o.scale,
      qDtype: o.dtype,
      kvDtype: o.dtype,
      oDtype: o.outDtype,
      target: resolveTarget(ctx, o.target),
    });
    return new BlockSparsePlan(ctx, o, core);
  }
}

function validateBlockSparseOptions(opts: BlockSparseOptions): Resolved {
  if (opts === null || typeof opts !== 'object') fail('E_ARG', 'options', 'missing;', opts, 'an options object');
  const Tq = checkInt(opts.Tq, 'Tq', { min: 1 });
  const Tk = checkInt(opts.Tk ?? Tq, 'Tk', { min: 1 });
  const c = validateBlockSparseCommon(opts);
  const m = validateBsrMask(opts.indptr, opts.indices, { Tq, Tk, R: c.R, C: c.C, Hq: c.Hq, Hkv: c.Hkv });
  return { Tq, Tk, ...c, ...m };
}

/** @internal The options of every block-sparse plan besides the sizes and the mask (also the varlen plan's). */
export function validateBlockSparseCommon(opts: Omit<BlockSparseOptions, 'Tq' | 'Tk' | 'indptr' | 'indices'>) {
  const Hq = checkInt(opts.Hq, 'Hq', { min: 1 });
  const Hkv = checkInt(opts.Hkv, 'Hkv', { min: 1 });
  check(Hq % Hkv === 0, 'Hq', `a multiple of Hkv = ${Hkv}`, Hq);
  const R = checkInt(opts.R, 'R', { min: 1 });
  if (R > 256) fail('E_UNSUPPORTED', 'R', 'query block sizes above 256 are not supported;', R, 'at most 256');
  const C = checkInt(opts.C, 'C', { min: 1 });
  const causal = opts.causal ?? true;
  check(typeof causal === 'boolean', 'causal', 'a boolean', causal);
  return { Hq, Hkv, R, C, causal, ...validateSparseCommon(opts) };
}

/** One validated BSR mask: the core's CSR table `[P, MB + 1]` (offsets into `indices`) and the block ids. */
export interface BsrMask {
  P: number;
  MB: number;
  indptr: Uint32Array<ArrayBuffer>;
  indices: Int32Array<ArrayBuffer>;
  /** The longest block row over all patterns (the list loop's bound). */
  maxEntries: number;
}

/**
 * @internal Validates one BSR mask (one pattern, or P = Hkv / Hq patterns) for `Tq` query rows and
 * `Tk` keys; errors name `name` (`indptr`, or `indptr[n]` for sequence n of a batch) and the
 * matching `indices` argument.
 */
export function validateBsrMask(
  indptrIn: ArrayLike<number> | ArrayLike<number>[],
  indicesIn: ArrayLike<number> | ArrayLike<number>[],
  s: { Tq: number; Tk: number; R: number; C: number; Hq: number; Hkv: number; name?: string; P?: number },
): BsrMask {
  const { Tq, Tk, R, C, Hq, Hkv } = s;
  const ptrName = `indptr${s.name ?? ''}`;
  const idxName = `indices${s.name ?? ''}`;
  const MB = Math.ceil(Tq / R);
  const NBk = Math.ceil(Tk / C);
  const perHead = Array.isArray(indptrIn) && indptrIn.length > 0 && typeof (indptrIn as unknown[])[0] === 'object';
  const ptrs = (perHead ? indptrIn : [indptrIn]) as ArrayLike<number>[];
  const idxs = (perHead ? indicesIn : [indicesIn]) as ArrayLike<number>[];
  const P = ptrs.length;
  check(P === 1 || P === Hkv || P === Hq, ptrName, `one pattern, Hkv = ${Hkv} or Hq = ${Hq} patterns`, P);
  if (s.P !== undefined) check(P === s.P, ptrName, `${s.P} patterns, as the first sequence`, P);
  check(
    Array.isArray(idxs) && idxs.length === P,
    idxName,
    `${P} index lists (one per indptr pattern)`,
    Array.isArray(idxs) ? idxs.length : typeof idxs,
  );
  const indptr = new Uint32Array(P * (MB + 1));
  let total = 0;
  let maxEntries = 0;
  for (let p = 0; p < P; p++) {
    const ip = ptrs[p];
    const ix = idxs[p];
    const nm = P > 1 ? `${ptrName}[${p}]` : ptrName;
    const nx = P > 1 ? `${idxName}[${p}]` : idxName;
    if (!ip || typeof ip.length !== 'number' || ip.length !== MB + 1)
      fail('E_SHAPE', nm, 'has the wrong length;', ip?.length, `ceil(Tq / R) + 1 = ${MB + 1}`);
    if (!ix || typeof ix.length !== 'number') fail('E_ARG', nx, 'is not an array;', typeof ix, 'an array of block ids');
    if (ip[0] !== 0) fail('E_ARG', `${nm}[0]`, 'must be 0;', ip[0], '0');
    if (ip[MB] !== ix.length)
      fail('E_ARG', `${nm}[${MB}]`, 'must equal the number of indices;', ip[MB], `${ix.length}`);
    for (let r = 0; r < MB; r++) {
      const a = ip[r]!;
      const b = ip[r + 1]!;
      if (!Number.isInteger(b) || b < a)
        fail('E_ARG', `${nm}[${r + 1}]`, 'must be a non-decreasing integer;', b, `>= ${a}`);
      maxEntries = Math.max(maxEntries, b - a);
      const seen = new Set<number>();
      for (let j = a; j < b; j++) {
        const x = ix[j]!;
        if (!Number.isInteger(x) || x < 0 || x >= NBk)
          fail('E_ARG', `${nx}[${j}]`, 'is out of range;', x, `a key block id in [0, ${NBk})`);
        if (seen.has(x))
          fail('E_ARG', `${nx}[${j}]`, `repeats block ${x} in block row ${r};`, x, 'distinct block ids per block row');
        seen.add(x);
      }
    }
    for (let r = 0; r <= MB; r++) indptr[p * (MB + 1) + r] = total + ip[r]!;
    total += ix.length;
  }
  const indices = new Int32Array(total);
  let off = 0;
  for (const ix of idxs) {
    for (let j = 0; j < ix.length; j++) indices[off + j] = ix[j]!;
    off += ix.length;
  }
  return { P, MB, indptr, indices, maxEntries };
}

/**
 * Plans block-sparse attention over a BSR mask (validated and uploaded once here).
 *
 * @example
 * // 2 query blocks of 64 rows; block row 0 sees key block 0, block row 1 sees key blocks 0 and 1
 * const plan = await planBlockSparse(dev, { Tq: 128, Hq: 4, Hkv: 2, D: 64, R: 64, C: 64, indptr: [0, 1, 3], indices: [0, 0, 1] });
 * plan.run(encoder, { q, k, v, o, lse });
 */
export function planBlockSparse(device: DeviceLike, opts: BlockSparseOptions): Promise<BlockSparsePlan> {
  return BlockSparsePlan.create(device, opts);
}

/**
 * Block-sparse attention in one call; sizes come from the tensors.
 *
 * @example
 * await blockSparseAttention(dev, { q, k, v, o }, { R: 64, C: 64, indptr, indices });
 */
export async function blockSparseAttention(
  device: DeviceLike,
  t: BlockSparseTensors,
  opts: Omit<BlockSparseOptions, 'Tq' | 'Tk' | 'Hq' | 'Hkv' | 'D' | 'Dv'>,
): Promise<void> {
  const ctx = ctxOf(device);
  const plan = await planBlockSparse(ctx, { ...opts, ...attentionSizesOf(t, opts) });
  await runOnceAndDispose(ctx, plan, t, 'block_sparse');
}
