/**
 * NSA (Native Sparse Attention) prefill on the GPU: compression, selection and sliding-window
 * branches with per-head gates. Dispatches:
 *   1. `moba/pool.wgsl` twice: compressed keys and values (block sums / blockSize for the
 *      native-sparse-attention variant, means over real tokens for fla's);
 *   2. the attention core (kernels/attention, key source 3: block lists) over the compressed keys
 *      as one block (key c at position (c+1)·bs − 1, so a query sees block c iff
 *      (c+1)·bs − 1 ≤ t): o_cmp and its lse;
 *   3. `select.wgsl`: block scores from the compressed probabilities, shared per GQA group,
 *      forced blocks, in-register top-S: blockIndices `[T, Hkv, S]`;
 *   4. the attention core reading blockIndices in place as each (token, KV head)'s block list
 *      (every query head of the group): o_slc;
 *   5. the attention core, all keys as one block cut by the window: o_swa (when `window > 0`);
 *   6. `combine.wgsl`: o = g_cmp·o_cmp + g_slc·o_slc (+ g_swa·o_swa).
 */
import { check, checkInt, fail, checkF32 } from '../../src/errors.js';
import { aliasedOption, optionName, resolveTarget } from '../../src/options.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { getPipeline, grid2d, wgslProgram, type Pipeline, type PipelineSpec } from '../../src/gpu/pipeline.js';
import type { BindingResource } from '../../src/gpu/pipeline.js';
import { bindingTable, optional, registerPasses, type VariantOf } from '../../src/gpu/bindings.js';
import { uniformLayout } from '../../src/gpu/uniforms.js';
import {
  KernelPlan,
  checkAttentionSizes,
  checkBindingSize,
  res,
  runOnceAndDispose,
  attentionSizesOf,
} from '../../src/plan.js';
import { checkTensor, dtypeCode, isFloatDType, type DType, type FloatDType, type GpuTensor } from '../../src/tensor.js';
import storageWgsl from '../../shaders/storage.wgsl.js';
import { checkBindings, checkRows, validateSparseCommon, type GatherTarget } from '../block_sparse/common.js';
import { selectionPass } from '../block_sparse/ragged.js';
import { BlockListPlan } from '../attention/lists.js';
import { POOL_PARAMS, poolLoopIterations, poolSegments, poolSpec, poolWorkgroups } from '../moba/pool.js';
import {
  loops,
  planLoopLimit,
  segment,
  segmentUniforms,
  SEGMENT_FIELDS,
  withLoopLimit,
  type Segment,
} from '../../src/gpu/segments.js';
import type { NsaVariant } from './reference.js';
import selectWgsl from './select.wgsl.js';
import varlenSelectWgsl from './varlen_select.wgsl.js';
import selectCoreWgsl from './select_core.wgsl.js';
import combineWgsl from './combine.wgsl.js';

export const NSA_SELECT_PARAMS = uniformLayout('NsaSelectParams', [
  ['T', 'u32'],
  ['Hq', 'u32'],
  ['Hkv', 'u32'],
  ['S', 'u32'],
  ['BS', 'u32'],
  ['scale', 'f32'],
  ['POSOFF', 'u32'],
  // segment: candidate blocks [seg_begin, seg_end), continuing the list carried in out + carry
  // (seg_carry), which the last segment stops carrying (seg_last; see nsaSelectSegments)
  ...SEGMENT_FIELDS,
] as const);
export const NSA_COMBINE_PARAMS = uniformLayout('NsaCombineParams', [
  ['rows', 'u32'],
  ['Dv', 'u32'],
] as const);

/** @internal the gate combine (also the varlen plan's). */
export const COMBINE_PROGRAM = wgslProgram('nsa/combine', [storageWgsl, NSA_COMBINE_PARAMS.wgsl, combineWgsl]);
const WG = 64;

/** The block selection over one sequence (`one`) and over a ragged batch (`batch`, varlen.ts). */
const SELECT = selectionPass(
  'nsa/select',
  NSA_SELECT_PARAMS,
  { entry: selectWgsl, batchEntry: varlenSelectWgsl, core: selectCoreWgsl },
  { q_buf: 'read', kc: 'read', lse_cmp: 'read', out: 'rw', params: 'uniform' },
);
export const SELECT_PROGRAM = SELECT.one.program;

/** @internal The selection pass's pipeline spec (bindings by name; carry declared where the plan has several segments). */
export function nsaSelectSpec(dtype: FloatDType, D: number, fla: boolean, carry: boolean) {
  return SELECT.one.spec({ carry }, selectConstants(dtype, D, fla));
}
/** @internal {@link nsaSelectSpec} over a ragged batch (the varlen plan's). */
export function nsaVarlenSelectSpec(dtype: FloatDType, D: number, fla: boolean, carry: boolean) {
  return SELECT.batch.spec({ carry }, selectConstants(dtype, D, fla));
}
function selectConstants(dtype: FloatDType, D: number, fla: boolean) {
  return { WG, IN_DTYPE: dtypeCode(dtype), D, FLA: fla ? 1 : 0 };
}

/** The gate combine's bindings: the window branch's output and gate only where SWA (window > 0). */
const COMBINE = bindingTable('nsa/combine', {
  o_cmp: 'read',
  o_slc: 'read',
  o_swa: optional('read', 'array<vec4<f32>>'),
  g_cmp: 'read',
  g_slc: 'read',
  g_swa: optional('read', 'array<u32>'),
  o_buf: 'rw',
  params: 'uniform',
});
/** @internal A combine pipeline (bound by name). */
export type CombinePipeline = Pipeline<VariantOf<typeof COMBINE>>;

/** @internal The combine's spec (also used by the varlen plan). */
export function combineSpec(
  gateDtype: FloatDType,
  outDtype: FloatDType,
  swa: boolean,
): PipelineSpec<VariantOf<typeof COMBINE>> {
  return {
    shader: COMBINE_PROGRAM,
    bindings: COMBINE.variant({ o_swa: swa, g_swa: swa }),
    constants: { WG, GATE_DTYPE: dtypeCode(gateDtype), OUT_DTYPE: dtypeCode(outDtype), SWA: swa ? 1 : 0 },
  };
}
registerPasses('nsa', () => [
  nsaSelectSpec('f32', 64, false, false),
  nsaSelectSpec('bf16', 64, true, true),
  nsaVarlenSelectSpec('f32', 64, false, false),
  nsaVarlenSelectSpec('bf16', 64, true, true),
  combineSpec('f32', 'f32', false),
  combineSpec('bf16', 'f16', true),
]);
/** Largest selected-block count the in-register selection keeps. */
export const NSA_MAX_BLOCK_COUNT = 64;

/**
 * Upper bound of the loop iterations one invocation of `select.wgsl` runs over `nc` candidate
 * blocks, in the counting rules of src/gpu/segments.ts (G = Hq / Hkv query heads per KV head,
 * D4 = D / 4, S = blockCount): the early return, a carried list read back (a loop of S), per
 * candidate the group loop (G) of dot products (D4 each) and the insertion call (`sel_offer`: a
 * loop of at most S - 1 shifts), and the S outputs. Unsegmented nc = ceil(Tk / blockSize): with
 * G = 16, D = 64, S = 16 it passes 65,535 at 214 blocks (Tk = 13.7K with blockSize 64).
 *
 * @example
 * nsaSelectLoopIterations(256, 16, 64, 16, false); // 78,611
 */
export function nsaSelectLoopIterations(nc: number, G: number, D: number, S: number, load: boolean): number {
  return (
    loops.ret +
    (load ? loops.loop(S) : 0) +
    loops.loop(nc, loops.loop(G, loops.loop(D / 4)) + loops.call(loops.loop(S - 1))) +
    loops.loop(S)
  );
}

/**
 * The selection dispatches under loop cap `limit` (`segment()` of src/gpu/segments.ts): all `NC`
 * candidates at once when that fits, else segments of as many as fit, the list carried between
 * them. Throws `E_LIMIT` naming `Hq` when not even one candidate fits (a GQA group too large for
 * the loop limit).
 *
 * @example
 * nsaSelectSegments(65535, 1024, 16, 64, 16).length; // 6 on llvmpipe (Tk = 64K, blockSize 64)
 */
export function nsaSelectSegments(
  limit: number,
  NC: number,
  G: number,
  D: number,
  S: number,
  extra = 0,
): readonly Segment[] {
  const s = segment(NC, (n) => nsaSelectLoopIterations(n, G, D, S, n < NC) + extra, limit, {
    op: 'nsa',
    what: `one selection candidate of a group of ${G} query heads`,
    argument: 'Hq',
    actual: G,
    expected: 'fewer query heads per KV head (or a larger loopLimit)',
  });
  return s.segments;
}

/** How a plan splits its dispatches under the device's loop limit (one each elsewhere). */
interface Splits {
  pool: readonly Segment[];
  select: readonly Segment[];
  loopIterations: number;
}

export interface NsaOptions {
  /** Query rows (prefill: the sequence's tokens); required (or its deprecated alias `T`). */
  Tq?: number;
  /** @deprecated Use `Tq` (the query length's name in every family). */
  T?: number;
  /**
   * Keys (default Tq). With Tk > Tq the rows are the newest tokens (bottom-right: row t sits at key
   * position t + Tk − Tq); `Tq: 1` is one decode step over a cache of Tk tokens.
   */
  Tk?: number;
  Hq: number;
  Hkv: number;
  /** q/k head dim, a multiple of 4 up to 256. */
  D: number;
  /** v/o head dim (default D). */
  Dv?: number;
  /** Compression = selection block size (l = d = l'), 1..4096 (fla default 64). */
  blockSize: number;
  /** Selected blocks per token and KV head, forced ones included (fla default 16), 1..64. */
  blockCount: number;
  /** Sliding-window branch: keys in (t − W, t]; 0 = no window branch (default 0). */
  window?: number;
  /** `'nsa'` (native-sparse-attention reference, default) or `'fla'` (flash-linear-attention naive). */
  variant?: NsaVariant;
  /** Softmax scale of every branch (default 1/sqrt(D)). */
  scale?: number;
  /** Storage of q, k, v (default f32). */
  dtype?: FloatDType;
  /** Storage of the gates (default f32). */
  gateDtype?: FloatDType;
  /** Storage of o (default `dtype`). */
  outDtype?: FloatDType;
  /** Kernel shape: `auto` (default) follows the adapter class; `cpu`/`gpu` force one (tests). */
  target?: GatherTarget;
  /**
   * Size the splits for this loop cap (lower than the device's only; an integer >= 256): tests
   * run the segmented paths llvmpipe needs on any adapter with it. Default: the device's.
   */
  loopLimit?: number;
}

export interface NsaTensors {
  /** `[T, Hq, D]`. */
  q: GpuTensor;
  /** `[Tk, Hkv, D]`. */
  k: GpuTensor;
  /** `[Tk, Hkv, Dv]`. */
  v: GpuTensor;
  /** `[T, Hq]` gate of the compression branch. */
  gCmp: GpuTensor;
  /** `[T, Hq]` gate of the selection branch. */
  gSlc: GpuTensor;
  /** `[T, Hq]` gate of the window branch (required iff `window > 0`). */
  gSwa?: GpuTensor;
  /** `[T, Hq, Dv]` out. */
  o: GpuTensor;
  /** `[T, Hkv, blockCount]` i32 out (optional): chosen blocks by descending score, -1 unused. */
  blockIndices?: GpuTensor;
}

type Resolved = Required<Omit<NsaOptions, 'Tk' | 'T' | 'loopLimit'>> & { Tk: number; /** = Tq */ T: number };

/** A pipeline of any binding table (the pool and selection passes of either plan, bound by name). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyPipeline = Pipeline<any>;

/** @internal The compiled passes of an NSA plan: the single-sequence ones, or the ragged batch's (kernels/nsa/varlen.ts). */
export interface NsaPasses {
  /** Compressed keys and values: moba/pool, or moba/varlen_pool over the batch table. */
  pool: AnyPipeline;
  /** Block scores and top-S: nsa/select or nsa/varlen_select. */
  select: AnyPipeline;
  combine: CombinePipeline;
  /** The attention branches on the core: compression, selected blocks, window (window > 0). */
  cmp: BlockListPlan;
  slc: BlockListPlan;
  swa?: BlockListPlan;
}

/** @internal The sizes an NSA plan encodes: T query rows over Tk keys (a ragged batch: Tk = T, the batch's rows) and NC compressed blocks. */
export interface NsaSizes {
  T: number;
  Tk: number;
  NC: number;
}

/**
 * @internal What every NSA plan shares: its uniforms and workspaces, the tensor checks and the
 * encode of the six steps. NsaPlan (one sequence) and NsaVarlenPlan (a ragged batch, whose pool and
 * selection passes also bind the block table `seqs`) differ only in how they plan.
 */
export abstract class NsaEncoder extends KernelPlan<NsaTensors> {
  private nsaOpts!: Resolved;
  private sizes!: NsaSizes;
  private passes?: NsaPasses;
  private seqs?: GPUBuffer;
  private u!: { poolK: GPUBuffer[]; poolV: GPUBuffer[]; select: GPUBuffer[]; combine: GPUBuffer };
  private ws!: Record<'kc' | 'vc' | 'oCmp' | 'lseCmp' | 'oSlc' | 'sel' | 'all', GPUBuffer> & {
    oSwa?: GPUBuffer;
    carry?: GPUBuffer;
  };

  /**
   * Allocates the uniforms (one per pool / selection segment) and workspaces for `n`; `passes`
   * undefined: nothing to encode (a batch of empty sequences); `seqs`: the batch table.
   */
  protected initNsa(
    o: Resolved,
    n: NsaSizes,
    segs: { pool: readonly Segment[]; select: readonly Segment[] },
    passes?: NsaPasses,
    seqs?: GPUBuffer,
  ): void {
    this.nsaOpts = o;
    this.sizes = n;
    this.passes = passes;
    this.seqs = seqs;
    const { Hq, Hkv, D, Dv, blockSize: BS, blockCount: S, window } = o;
    const { T, Tk, NC } = n;
    this.u = {
      poolK: segs.pool.map((seg) =>
        this.uniform(POOL_PARAMS, { T: Tk, H: Hkv, D, BS, NB: NC, ...segmentUniforms(seg) }),
      ),
      poolV: segs.pool.map((seg) =>
        this.uniform(POOL_PARAMS, { T: Tk, H: Hkv, D: Dv, BS, NB: NC, ...segmentUniforms(seg) }),
      ),
      select: segs.select.map((seg) =>
        this.uniform(NSA_SELECT_PARAMS, {
          T,
          Hq,
          Hkv,
          S,
          BS,
          scale: o.scale,
          POSOFF: Tk - T,
          ...segmentUniforms(seg),
        }),
      ),
      combine: this.uniform(NSA_COMBINE_PARAMS, { rows: T * Hq, Dv }),
    };
    this.ws = {
      kc: this.workspace(NC * Hkv * D * 4, 'nsa.kc'),
      vc: this.workspace(NC * Hkv * Dv * 4, 'nsa.vc'),
      oCmp: this.workspace(T * Hq * Dv * 4, 'nsa.oCmp'),
      lseCmp: this.workspace(T * Hq * 4, 'nsa.lseCmp'),
      oSlc: this.workspace(T * Hq * Dv * 4, 'nsa.oSlc'),
      oSwa: window > 0 ? this.workspace(T * Hq * Dv * 4, 'nsa.oSwa') : undefined,
      sel: this.workspace(T * Hkv * S * 4, 'nsa.blockIndices'),
      carry: segs.select.length > 1 ? this.workspace(T * Hkv * S * 4, 'nsa.selCarry') : undefined,
      // the list of the one-block branches (compression, window): block 0, all keys (of a sequence)
      all: this.workspace(16, 'nsa.allKeys'),
    };
    this.ctx.device.queue.writeBuffer(this.ws.all, 0, new Uint32Array(4));
  }

  /** A dispatch of the pool or selection pass of either plan (`seqs` bound only by the batch's). */
  private dispatchAny(
    encoder: GPUCommandEncoder,
    p: AnyPipeline,
    resources: Readonly<Record<string, BindingResource | undefined>>,
    grid: [number, number],
  ): void {
    this.dispatch(encoder, p, resources as never, grid);
  }

  override dispose(): void {
    this.passes?.cmp.dispose();
    this.passes?.slc.dispose();
    this.passes?.swa?.dispose();
    super.dispose();
  }

  run(encoder: GPUCommandEncoder, t: NsaTensors): void {
    this.assertUsable();
    if (t === null || typeof t !== 'object')
      fail('E_ARG', 'tensors', 'is not an object;', t, '{ q, k, v, gCmp, gSlc, gSwa?, o, blockIndices? }');
    const { Hq, Hkv, D, Dv, dtype, gateDtype, outDtype, blockCount: S, window } = this.nsaOpts;
    const { T, Tk, NC } = this.sizes;
    const rows = checkRows;
    const q = rows(t.q, 'q', T, [Hq, D], dtype);
    const k = rows(t.k, 'k', Tk, [Hkv, D], dtype);
    const v = rows(t.v, 'v', Tk, [Hkv, Dv], dtype);
    const gCmp = rows(t.gCmp, 'gCmp', T, [Hq], gateDtype);
    const gSlc = rows(t.gSlc, 'gSlc', T, [Hq], gateDtype);
    let gSwa: GpuTensor | undefined;
    if (window > 0) gSwa = rows(t.gSwa, 'gSwa', T, [Hq], gateDtype);
    else if (t.gSwa !== undefined)
      fail('E_ARG', 'gSwa', 'given but the plan has no window branch;', 'a tensor', 'no gSwa when window = 0');
    const o = rows(t.o, 'o', T, [Hq, Dv], outDtype);
    const bi = t.blockIndices === undefined ? undefined : rows(t.blockIndices, 'blockIndices', T, [Hkv, S], 'i32');
    checkBindings(this.ctx, { q, k, v, o });
    const p = this.passes;
    if (!p) return; // every sequence of the batch empty
    const { ws, u } = this;
    const w = (b: GPUBuffer, bytes: number) => ({ buffer: b, size: bytes });
    const f32 = (buffer: GPUBuffer, shape: number[]): GpuTensor => ({ buffer, shape, dtype: 'f32' });
    const kc = w(ws.kc, NC * Hkv * D * 4);
    const vc = w(ws.vc, NC * Hkv * Dv * 4);
    const sel = bi ? res(bi) : w(ws.sel, T * Hkv * S * 4);
    const all = w(ws.all, 16);
    const seqs = this.seqs && { buffer: this.seqs };
    // one dispatch per segment (several only on a loop-capped device)
    for (const [x, n, hd, params] of [
      [k, kc, D, u.poolK],
      [v, vc, Dv, u.poolV],
    ] as const)
      for (const b of params)
        this.dispatchAny(
          encoder,
          p.pool,
          { x_buf: res(x), out: n, params: { buffer: b }, seqs },
          grid2d(this.ctx, poolWorkgroups(NC, Hkv, hd)),
        );
    p.cmp.run(encoder, {
      q,
      k: f32(ws.kc, [NC, Hkv, D]),
      v: f32(ws.vc, [NC, Hkv, Dv]),
      lists: all,
      o: f32(ws.oCmp, [T, Hq, Dv]),
      lse: f32(ws.lseCmp, [T, Hq]),
    });
    const carry = ws.carry && w(ws.carry, T * Hkv * S * 4);
    const lseCmp = w(ws.lseCmp, T * Hq * 4);
    for (const b of u.select)
      this.dispatchAny(
        encoder,
        p.select,
        { q_buf: res(q), kc, lse_cmp: lseCmp, out: sel, params: { buffer: b }, carry, seqs },
        grid2d(this.ctx, Math.ceil((T * Hkv) / WG)),
      );
    p.slc.run(encoder, { q, k, v, lists: sel, o: f32(ws.oSlc, [T, Hq, Dv]) });
    p.swa?.run(encoder, { q, k, v, lists: all, o: f32(ws.oSwa!, [T, Hq, Dv]) });
    this.dispatch(
      encoder,
      p.combine,
      {
        o_cmp: w(ws.oCmp, T * Hq * Dv * 4),
        o_slc: w(ws.oSlc, T * Hq * Dv * 4),
        o_swa: ws.oSwa && w(ws.oSwa, T * Hq * Dv * 4),
        g_cmp: res(gCmp),
        g_slc: res(gSlc),
        g_swa: gSwa && res(gSwa),
        o_buf: res(o),
        params: { buffer: u.combine },
      },
      grid2d(this.ctx, Math.ceil((T * Hq * (Dv / 4)) / WG)),
    );
  }
}

/**
 * Native sparse attention (compression, selected blocks, sliding window, gated).
 * Planned once by `planNsa`; `run` records it into your encoder and allocates
 * nothing; `dispose()` frees what the plan holds.
 *
 * @example
 * const plan = await planNsa(dev, { Tq: 4096, Hq: 32, Hkv: 2, D: 64, blockSize: 64, blockCount: 16, window: 512 });
 * plan.run(encoder, { q, k, v, gCmp, gSlc, gSwa, o, blockIndices });
 * plan.dispose();
 */
export class NsaPlan extends NsaEncoder {
  readonly options: Resolved;
  readonly numBlocks: number;
  /**
   * Dispatches of each step per run: 1 each, more on a loop-capped device (llvmpipe) where one
   * invocation would run too many loop iterations (long sequences: many compressed blocks); for
   * the attention branches (cmp, slc, swa), the parts each row's keys are split into.
   */
  readonly segments: { pool: number; cmp: number; select: number; slc: number; swa: number };
  /** Upper bound of the loop iterations of one invocation of any of the plan's dispatches. */
  readonly loopIterations: number;

  private constructor(ctx: TesseraDevice, o: Resolved, p: NsaPasses, splits: Splits) {
    super(ctx);
    this.options = o;
    this.loopIterations = Math.max(
      splits.loopIterations,
      p.cmp.split.loopIterations,
      p.slc.split.loopIterations,
      p.swa?.split.loopIterations ?? 0,
    );
    this.segments = {
      pool: splits.pool.length,
      cmp: p.cmp.split.parts,
      select: splits.select.length,
      slc: p.slc.split.parts,
      swa: p.swa?.split.parts ?? 0,
    };
    const NC = (this.numBlocks = Math.ceil(o.Tk / o.blockSize));
    this.initNsa(o, { T: o.T, Tk: o.Tk, NC }, splits, p);
  }

  /** @internal use {@link planNsa}. */
  static async create(device: DeviceLike, opts: NsaOptions): Promise<NsaPlan> {
    const ctx = ctxOf(device);
    const o = validateNsaOptions(opts);
    checkAttentionSizes(ctx, { ...o, Tq: o.T });
    const G = o.Hq / o.Hkv;
    // Splits under the device's loop limit (llvmpipe): pooling and selection here, the attention
    // branches inside their BlockListPlans (parts merged by kernels/merge).
    const limit = planLoopLimit(ctx, opts.loopLimit);
    const NC = Math.ceil(o.Tk / o.blockSize);
    const selSegs = nsaSelectSegments(limit, NC, G, o.D, o.blockCount);
    const pool = poolSegments(limit, o.blockSize, o.Tk);
    const splits: Splits = {
      pool,
      select: selSegs,
      loopIterations: Math.max(
        ...pool.map((g) => poolLoopIterations(g.end - g.begin)),
        ...selSegs.map((g) => nsaSelectLoopIterations(g.end - g.begin, G, o.D, o.blockCount, g.carry)),
      ),
    };
    // The three attention branches on the core (f32 outputs, combined below).
    const core = {
      Tq: o.T,
      Hq: o.Hq,
      Hkv: o.Hkv,
      D: o.D,
      Dv: o.Dv,
      posOff: o.Tk - o.T,
      causal: true,
      scale: o.scale,
      qDtype: o.dtype,
      oDtype: 'f32' as const,
      target: resolveTarget(ctx, o.target),
    };
    const one = { rows: o.T, heads: 1, stride: 1, base: 0, maxEntries: 1 };
    const capped = withLoopLimit(ctx, limit);
    const [pool0, cmp, select, slc, swa, combine] = await Promise.all([
      getPipeline(ctx, poolSpec(o.dtype, o.variant === 'fla' ? 'count' : 'blockSize')),
      BlockListPlan.create(capped, { ...core, ...one, Tk: NC, block: NC, keyStride: o.blockSize, kvDtype: 'f32' }),
      getPipeline(ctx, nsaSelectSpec(o.dtype, o.D, o.variant === 'fla', selSegs.length > 1)),
      BlockListPlan.create(capped, {
        ...core,
        Tk: o.Tk,
        rows: 1,
        heads: o.Hkv,
        stride: o.blockCount,
        base: 0,
        block: o.blockSize,
        maxEntries: o.blockCount,
        kvDtype: o.dtype,
      }),
      o.window > 0
        ? BlockListPlan.create(capped, {
            ...core,
            ...one,
            Tk: o.Tk,
            block: o.Tk,
            entryKeys: Math.min(o.Tk, o.window),
            window: o.window,
            kvDtype: o.dtype,
          })
        : Promise.resolve(undefined),
      getPipeline(ctx, combineSpec(o.gateDtype, o.outDtype, o.window > 0)),
    ]);
    return new NsaPlan(ctx, o, { pool: pool0, cmp, select, slc, swa, combine }, splits);
  }
}

/** @internal the option rules of every NSA plan (also the varlen plan's). */
export function validateNsaOptions(opts: NsaOptions): Resolved {
  if (opts === null || typeof opts !== 'object') fail('E_ARG', 'options', 'missing;', opts, 'an options object');
  const T = checkInt(aliasedOption(opts, 'Tq', 'T'), optionName(opts, 'Tq', 'T'), { min: 1 });
  const Tk = checkInt(opts.Tk ?? T, 'Tk', { min: T });
  const Hq = checkInt(opts.Hq, 'Hq', { min: 1 });
  const Hkv = checkInt(opts.Hkv, 'Hkv', { min: 1 });
  check(Hq % Hkv === 0, 'Hq', `a multiple of Hkv = ${Hkv}`, Hq);
  const blockSize = checkInt(opts.blockSize, 'blockSize', { min: 1 });
  if (blockSize > 4096)
    fail('E_UNSUPPORTED', 'blockSize', 'is larger than the NSA kernels support;', blockSize, 'at most 4096');
  const blockCount = checkInt(opts.blockCount, 'blockCount', { min: 1 });
  if (blockCount > NSA_MAX_BLOCK_COUNT)
    fail(
      'E_UNSUPPORTED',
      'blockCount',
      'exceeds what the in-register selection keeps;',
      blockCount,
      `at most ${NSA_MAX_BLOCK_COUNT}`,
    );
  const window = checkInt(opts.window ?? 0, 'window', { min: 0 });
  const variant = opts.variant ?? 'nsa';
  check(variant === 'nsa' || variant === 'fla', 'variant', "'nsa' or 'fla'", variant);
  if (variant === 'fla') check(blockCount >= 1, 'blockCount', 'at least 1', blockCount);
  const { dtype, outDtype, D, Dv, scale, target } = validateSparseCommon(opts);
  const gateDtype = opts.gateDtype ?? 'f32';
  check(isFloatDType(gateDtype), 'gateDtype', 'one of f32, f16, bf16', gateDtype, 'E_DTYPE');
  return {
    Tq: T,
    T,
    Tk,
    Hq,
    Hkv,
    D,
    Dv,
    blockSize,
    blockCount,
    window,
    variant,
    scale,
    dtype,
    gateDtype,
    outDtype,
    target,
  };
}

/**
 * Plans NSA prefill for one sequence of `Tq` tokens.
 *
 * @example
 * const plan = await planNsa(dev, { Tq: 4096, Hq: 32, Hkv: 2, D: 64, blockSize: 64, blockCount: 16, window: 512 });
 * plan.run(encoder, { q, k, v, gCmp, gSlc, gSwa, o, blockIndices });
 */
export function planNsa(device: DeviceLike, opts: NsaOptions): Promise<NsaPlan> {
  return NsaPlan.create(device, opts);
}

/**
 * NSA in one call (plan, run, submit, wait); sizes come from the tensors.
 *
 * @example
 * await nsa(dev, { q, k, v, gCmp, gSlc, o }, { blockSize: 32, blockCount: 6, variant: 'fla' });
 */
export async function nsa(
  device: DeviceLike,
  t: NsaTensors,
  opts: Omit<NsaOptions, 'Tq' | 'T' | 'Tk' | 'Hq' | 'Hkv' | 'D' | 'Dv'>,
): Promise<void> {
  const ctx = ctxOf(device);
  const plan = await planNsa(ctx, {
    ...opts,
    ...attentionSizesOf(t, opts),
    gateDtype: opts?.gateDtype ?? (t.gCmp?.dtype as FloatDType),
  });
  await runOnceAndDispose(ctx, plan, t, 'nsa');
}
