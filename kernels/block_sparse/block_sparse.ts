/**
 * Block-sparse attention with an arbitrary BSR block mask (FlashInfer's `indptr`/`indices` for
 * (R, C) blocks), per-head patterns allowed, causal masking inside diagonal blocks, GQA, f32 /
 * f16 / bf16 storage. One dispatch of the gather core in BSR mode: a group is one block row of
 * one query head, its R rows share the block row's key blocks.
 */
import { check, checkInt, fail, checkF32 } from '../../src/errors.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { KernelPlan, checkAttentionSizes, checkBindingSize, res, runOnceAndDispose, attentionSizesOf } from '../../src/plan.js';
import { checkTensor, isFloatDType, type FloatDType, type GpuTensor } from '../../src/tensor.js';
import {
  GATHER_DEFAULTS, GATHER_PARAMS, GatherStaging, checkHeadDim, gatherGrid, gatherKernel, gatherSegmentsIterations, gatherSegmentsOrThrow, gatherTiles, gatherVariantIsCpu,
  type GatherKernel, type GatherSegment, type GatherTarget,
} from './gather.js';

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
  /** Kernel variant: `auto` (default) follows the adapter class; `cpu`/`gpu` force one (tests). */
  target?: GatherTarget;
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

interface Resolved {
  Tq: number; Tk: number; Hq: number; Hkv: number; D: number; Dv: number; R: number; C: number;
  causal: boolean; scale: number; dtype: FloatDType; outDtype: FloatDType; target: GatherTarget;
  P: number; MB: number; indptr: Uint32Array<ArrayBuffer>; indices: Int32Array<ArrayBuffer>;
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
export class BlockSparsePlan extends KernelPlan<BlockSparseTensors> {
  readonly options: Readonly<Resolved>;
  private readonly kernel: GatherKernel;
  private readonly indptrBuf: GPUBuffer;
  private readonly indicesBuf: GPUBuffer;
  private readonly pLse: GPUBuffer;
  private readonly pNoLse: GPUBuffer;
  private readonly dummy: GPUBuffer;
  /** Per-segment uniforms when the device's loop limit splits the launch (else empty). */
  private readonly pSegs: GPUBuffer[] = [];
  private staging?: GatherStaging;
  /**
   * Launches of the gather core per run: 1, or more on a loop-capped device (llvmpipe) when one
   * invocation would walk too many keys (the longest block row's blocks x C keys).
   */
  readonly segments: number;
  /** Upper bound of the loop iterations of one invocation of one launch. */
  readonly loopIterations: number;

  private constructor(ctx: TesseraDevice, o: Resolved, kernel: GatherKernel, segs: GatherSegment[], work: { entries: number; keys: number }) {
    super(ctx);
    this.options = o;
    this.kernel = kernel;
    this.segments = segs.length;
    const info = { cpu: kernel.cpu, D: o.D, Dv: o.Dv };
    this.loopIterations = gatherSegmentsIterations(info, work, segs);
    this.indptrBuf = this.workspace(o.indptr.byteLength, 'block_sparse.indptr');
    ctx.device.queue.writeBuffer(this.indptrBuf, 0, o.indptr);
    this.indicesBuf = this.workspace(Math.max(4, o.indices.byteLength), 'block_sparse.indices');
    if (o.indices.length) ctx.device.queue.writeBuffer(this.indicesBuf, 0, o.indices);
    const g = {
      ...GATHER_DEFAULTS, Tq: o.Tq, Tk: o.Tk, Hq: o.Hq, Hkv: o.Hkv, NG: o.MB * o.Hq, NGH: o.Hq, BS: o.C, MB: o.MB, P: o.P,
      POSOFF: o.Tk - o.Tq, scale: o.scale, NTILES: gatherTiles(kernel, o.MB * o.Hq),
    };
    this.pLse = this.uniform(GATHER_PARAMS, { ...g, WRITE_LSE: 1 });
    this.pNoLse = this.uniform(GATHER_PARAMS, { ...g, WRITE_LSE: 0 });
    if (segs.length > 1) this.pSegs = segs.map((seg) => this.uniform(GATHER_PARAMS, { ...g, ...seg, WRITE_LSE: 1 }));
    this.dummy = this.workspace(16, 'block_sparse.dummy');
  }

  override dispose(): void {
    this.staging?.dispose();
    super.dispose();
  }

  /** @internal use {@link planBlockSparse}. */
  static async create(device: DeviceLike, opts: BlockSparseOptions): Promise<BlockSparsePlan> {
    const ctx = ctxOf(device);
    const o = validateBlockSparseOptions(opts);
    checkAttentionSizes(ctx, o);
    // The work of one group: the longest block row (over all patterns) of C keys per block.
    let entries = 0;
    for (let p = 0; p < o.P; p++) for (let r = 0; r < o.MB; r++) entries = Math.max(entries, o.indptr[p * (o.MB + 1) + r + 1]! - o.indptr[p * (o.MB + 1) + r]!);
    const work = { entries, keys: Math.min(o.C, o.Tk) };
    const spec = { mode: 1 as const, inDtype: o.dtype, outDtype: o.outDtype, D: o.D, Dv: o.Dv, causal: o.causal, NR: o.R, target: o.target };
    const segs = gatherSegmentsOrThrow(ctx, { cpu: gatherVariantIsCpu(ctx, spec), D: o.D, Dv: o.Dv }, work);
    // segments chain through f32 partials: the kernel writes f32, GatherStaging converts
    const kernel = await gatherKernel(ctx, segs.length > 1 ? { ...spec, outDtype: 'f32' } : spec);
    const plan = new BlockSparsePlan(ctx, o, kernel, segs, work);
    if (segs.length > 1) plan.staging = await GatherStaging.create(ctx, (b, l) => plan.workspace(b, l), { rows: o.Tq * o.Hq, Dv: o.Dv, outDtype: o.outDtype });
    return plan;
  }

  run(encoder: GPUCommandEncoder, t: BlockSparseTensors): void {
    this.assertUsable();
    const { Tq, Tk, Hq, Hkv, D, Dv, dtype, outDtype, MB } = this.options;
    const q = checkTensor(t?.q, 'q', { rank: 3, shape: [Tq, Hq, D], dtypes: [dtype] });
    const k = checkTensor(t.k, 'k', { rank: 3, shape: [Tk, Hkv, D], dtypes: [dtype] });
    const v = checkTensor(t.v, 'v', { rank: 3, shape: [Tk, Hkv, Dv], dtypes: [dtype] });
    const o = checkTensor(t.o, 'o', { rank: 3, shape: [Tq, Hq, Dv], dtypes: [outDtype] });
    const lse = t.lse === undefined ? undefined : checkTensor(t.lse, 'lse', { rank: 2, shape: [Tq, Hq], dtypes: ['f32'] });
    for (const [x, n] of [[q, 'q'], [k, 'k'], [v, 'v'], [o, 'o']] as const) checkBindingSize(this.ctx, x, n);
    const grid = gatherGrid(this.ctx, this.kernel, MB * Hq);
    const lists = [res(q), res(k), res(v), { buffer: this.indicesBuf }, { buffer: this.indptrBuf }];
    if (this.staging) {
      const out = this.staging.targets(o, lse);
      for (const u of this.pSegs) this.dispatch(encoder, this.kernel.pipeline, [...lists, out.o, out.lse, { buffer: u }], grid);
      this.staging.finish(encoder, o, lse);
      return;
    }
    this.dispatch(encoder, this.kernel.pipeline, [...lists, res(o), lse ? res(lse) : { buffer: this.dummy, size: 16 }, { buffer: lse ? this.pLse : this.pNoLse }], grid);
  }
}

function validateBlockSparseOptions(opts: BlockSparseOptions): Resolved {
  if (opts === null || typeof opts !== 'object') fail('E_ARG', 'options', 'missing;', opts, 'an options object');
  const Tq = checkInt(opts.Tq, 'Tq', { min: 1 });
  const Tk = checkInt(opts.Tk ?? Tq, 'Tk', { min: 1 });
  const Hq = checkInt(opts.Hq, 'Hq', { min: 1 });
  const Hkv = checkInt(opts.Hkv, 'Hkv', { min: 1 });
  check(Hq % Hkv === 0, 'Hq', `a multiple of Hkv = ${Hkv}`, Hq);
  const R = checkInt(opts.R, 'R', { min: 1 });
  if (R > 256) fail('E_UNSUPPORTED', 'R', 'query block sizes above 256 are not supported;', R, 'at most 256');
  const C = checkInt(opts.C, 'C', { min: 1 });
  const MB = Math.ceil(Tq / R);
  const NBk = Math.ceil(Tk / C);
  const perHead = Array.isArray(opts.indptr) && opts.indptr.length > 0 && typeof (opts.indptr as unknown[])[0] === 'object';
  const ptrs = (perHead ? opts.indptr : [opts.indptr]) as ArrayLike<number>[];
  const idxs = (perHead ? opts.indices : [opts.indices]) as ArrayLike<number>[];
  const P = ptrs.length;
  check(P === 1 || P === Hkv || P === Hq, 'indptr', `one pattern, Hkv = ${Hkv} or Hq = ${Hq} patterns`, P);
  check(Array.isArray(idxs) && idxs.length === P, 'indices', `${P} index lists (one per indptr pattern)`, Array.isArray(idxs) ? idxs.length : typeof idxs);
  const indptr = new Uint32Array(P * (MB + 1));
  let total = 0;
  for (let p = 0; p < P; p++) {
    const ip = ptrs[p];
    const ix = idxs[p];
    const nm = P > 1 ? `indptr[${p}]` : 'indptr';
    const nx = P > 1 ? `indices[${p}]` : 'indices';
    if (!ip || typeof ip.length !== 'number' || ip.length !== MB + 1) fail('E_SHAPE', nm, 'has the wrong length;', ip?.length, `ceil(Tq / R) + 1 = ${MB + 1}`);
    if (!ix || typeof ix.length !== 'number') fail('E_ARG', nx, 'is not an array;', typeof ix, 'an array of block ids');
    if (ip[0] !== 0) fail('E_ARG', `${nm}[0]`, 'must be 0;', ip[0], '0');
    if (ip[MB] !== ix.length) fail('E_ARG', `${nm}[${MB}]`, 'must equal the number of indices;', ip[MB], `${ix.length}`);
    for (let r = 0; r < MB; r++) {
      const a = ip[r]!;
      const b = ip[r + 1]!;
      if (!Number.isInteger(b) || b < a) fail('E_ARG', `${nm}[${r + 1}]`, 'must be a non-decreasing integer;', b, `>= ${a}`);
      const seen = new Set<number>();
      for (let s = a; s < b; s++) {
        const x = ix[s]!;
        if (!Number.isInteger(x) || x < 0 || x >= NBk) fail('E_ARG', `${nx}[${s}]`, 'is out of range;', x, `a key block id in [0, ${NBk})`);
        if (seen.has(x)) fail('E_ARG', `${nx}[${s}]`, `repeats block ${x} in block row ${r};`, x, 'distinct block ids per block row');
        seen.add(x);
      }
    }
    for (let r = 0; r <= MB; r++) indptr[p * (MB + 1) + r] = total + ip[r]!;
    total += ix.length;
  }
  const indices = new Int32Array(total);
  let off = 0;
  for (const ix of idxs) {
    for (let s = 0; s < ix.length; s++) indices[off + s] = ix[s]!;
    off += ix.length;
  }
  const causal = opts.causal ?? true;
  check(typeof causal === 'boolean', 'causal', 'a boolean', causal);
  const dtype = opts.dtype ?? 'f32';
  check(isFloatDType(dtype), 'dtype', 'one of f32, f16, bf16', dtype, 'E_DTYPE');
  const outDtype = opts.outDtype ?? dtype;
  check(isFloatDType(outDtype), 'outDtype', 'one of f32, f16, bf16', outDtype, 'E_DTYPE');
  const D = checkHeadDim(opts.D, 'D', dtype);
  const Dv = checkHeadDim(opts.Dv ?? D, 'Dv', dtype);
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  check(checkF32(scale, 'scale', 'a positive finite number') > 0, 'scale', 'a positive finite number', scale);
  const target = opts.target ?? 'auto';
  check(target === 'auto' || target === 'cpu' || target === 'gpu', 'target', "'auto', 'cpu' or 'gpu'", target);
  return { Tq, Tk, Hq, Hkv, D, Dv, R, C, causal, scale, dtype, outDtype, target, P, MB, indptr, indices };
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
  const s = attentionSizesOf(t);
  const plan = await planBlockSparse(ctx, {
    ...opts,
    ...s,
    dtype: opts?.dtype ?? s.dtype,
    outDtype: opts?.outDtype ?? s.outDtype,
  });
  await runOnceAndDispose(ctx, plan, t, 'block_sparse');
}
