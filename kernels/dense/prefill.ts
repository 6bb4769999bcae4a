/**
 * Dense flash attention, prefill: plan/run wrapper around `prefill.wgsl`.
 *
 * Layouts: `q [Tq, Hq, D]`, `k [Tk, Hkv, D]`, `v [Tk, Hkv, Dv]`, `o [Tq, Hq, Dv]`, `lse [Tq, Hq]`
 * f32 natural log. A ragged batch concatenates its sequences along the token axis, described by
 * `cuSeqlensQ`/`cuSeqlensK` (host arrays `[N+1]`, FlashInfer/fla style).
 */
import { check, checkInt, fail, checkF32 } from '../../src/errors.js';
import { kernelTarget, type KernelTarget } from '../../src/options.js';
import { ctxOf, loopBudget, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { planLoopLimit } from '../../src/gpu/segments.js';
import {
  getPipeline,
  grid2d,
  wgslProgram,
  type Pipeline,
  type PipelineSpec,
  type ResourcesFor,
  type ShaderSource,
} from '../../src/gpu/pipeline.js';
import { uniformLayout } from '../../src/gpu/uniforms.js';
import { bindingTable, optional, registerPasses, type VariantOf } from '../../src/gpu/bindings.js';
import {
  KernelPlan,
  checkAttentionSizes,
  checkBindingSize,
  checkPlannedSize,
  res,
  runOnceAndDispose,
} from '../../src/plan.js';
import {
  DTYPE_BYTES,
  checkTensor,
  dtypeCode,
  isFloatDType,
  type FloatDType,
  type GpuTensor,
} from '../../src/tensor.js';
import { planMerge, type MergePlan } from '../merge/index.js';
import storageWgsl from '../../shaders/storage.wgsl.js';
import prefillWgsl from './prefill.wgsl.js';
import sgWgsl from './prefill_sg.wgsl.js';
import nosgWgsl from './prefill_nosg.wgsl.js';

/** Options of dense attention (the cross-team contract; see kernels/dense/README.md). */
export interface AttentionOptions {
  /** Query heads. */
  Hq: number;
  /** Key/value heads; `Hq % Hkv == 0`. Query head h uses kv head floor(h / (Hq / Hkv)). */
  Hkv: number;
  /** q/k head dim, 1..256. */
  D: number;
  /** v/o head dim, 1..256 (default D). */
  Dv?: number;
  /** Default true; bottom-right aligned when Tq != Tk: query i sits at position Tk - Tq + i. */
  causal?: boolean;
  /** Default 1/sqrt(D). */
  scale?: number;
  /** Sliding window W: key j visible iff pos - W < j <= pos (0/undefined = none; causal only). */
  window?: number;
  /** With a window, the first S keys stay visible (still causal). Default 0. */
  sinks?: number;
  /** Per-query-head learned sink logit (MiMo): input `sinkLogits [Hq]` f32. Default false. */
  sinkLogit?: boolean;
  /** Storage dtype of q, k, v (default 'f32'). */
  dtype?: FloatDType;
  /** Storage dtype of o (default = dtype). lse is always f32. */
  outDtype?: FloatDType;
}

/**
 * Kernel selection, for tests and benchmarks. Defaults: `variant` from `ctx.adapterClass`
 * (`cpu` on SwiftShader/llvmpipe, else `gpu`), `subgroups` from `ctx.features.subgroups`.
 */
export interface AttentionTuning {
  /** Kernel shape: `cpu` (invocation per row), `gpu` (workgroup per row), `auto` (by adapter class; default). */
  target?: KernelTarget;
  /** @deprecated Use `target` (same values): the kernel shape's old name in this family. */
  variant?: 'auto' | 'cpu' | 'gpu';
  subgroups?: boolean;
  /**
   * Compile the head dims into the pipeline as constants. Default: true for the gpu variant
   * (its compilers unroll the dim loops), false for the cpu variant (one pipeline per dtype pair
   * serves every head dim; SwiftShader unrolls nothing, so constants do not speed it up).
   */
  constDims?: boolean;
  /**
   * Prefill only: bound on the f32 partials a split call keeps at once (default
   * {@link PREFILL_PARTIALS_BYTES}, 32 MiB). Splits happen only on devices with a loop cap
   * (`ctx.loopLimit`); the queries are then processed in groups of 128-token blocks that fit.
   */
  partialBytes?: number;
}

export type AttentionPlanOptions = AttentionOptions &
  AttentionTuning & {
    /**
     * Size the KV splits for this loop cap instead of the device's (lower only; an integer >=
     * 256): runs the split path that Mesa's llvmpipe needs on any adapter (src/gpu/segments.ts).
     */
    loopLimit?: number;
  } & (
    | { Tq: number; Tk?: number; cuSeqlensQ?: undefined; cuSeqlensK?: undefined }
    | { cuSeqlensQ: readonly number[]; cuSeqlensK?: readonly number[]; Tq?: undefined; Tk?: undefined }
  );

export interface AttentionTensors {
  /** `[Tq, Hq, D]` in `dtype`. */
  q: GpuTensor;
  /** `[Tk, Hkv, D]` in `dtype`. */
  k: GpuTensor;
  /** `[Tk, Hkv, Dv]` in `dtype`. */
  v: GpuTensor;
  /** `[Tq, Hq, Dv]` in `outDtype`. */
  o: GpuTensor;
  /** `[Tq, Hq]` f32, natural log (optional). */
  lse?: GpuTensor;
  /** `[Hq]` f32, required iff `sinkLogit`. */
  sinkLogits?: GpuTensor;
}

export const ATTN_PARAMS = uniformLayout('AttnParams', [
  ['num_tiles', 'u32'],
  ['num_work', 'u32'],
  ['hq', 'u32'],
  ['hkv', 'u32'],
  ['group', 'u32'],
  ['scale_log2', 'f32'],
  ['window', 'u32'],
  ['sinks', 'u32'],
  ['kv_chunk', 'u32'],
  ['o_split_stride', 'u32'],
  ['lse_split_stride', 'u32'],
  ['write_lse', 'u32'],
  ['d', 'u32'],
  ['dv', 'u32'],
  ['causal', 'u32'],
  ['has_sink', 'u32'],
] as const);

// One program holds both entry points (main_cpu, main_gpu); only the entry a
// pipeline names is compiled. The subgroup flavour exists only where the device has subgroups.
/**
 * `ld4_q`, `ld4_k`, `ld4_v` of prefill.wgsl: 4 consecutive elements from element index i of one
 * input, n of them valid (the rest read as 0). One template, since WGSL cannot pass a storage
 * array to a function.
 */
const LOADS = (['q', 'k', 'v'] as const)
  .map(
    (a) => `
fn ld4_${a}(i: u32, n: u32) -> vec4<f32> {
  if (IN_DTYPE == 0u) {
    if (n >= 4u) {
      return vec4<f32>(bitcast<f32>(${a}[i]), bitcast<f32>(${a}[i + 1u]), bitcast<f32>(${a}[i + 2u]), bitcast<f32>(${a}[i + 3u]));
    }
  } else if (n >= 4u && (i & 1u) == 0u) {
    return vec4<f32>(st_pair(${a}[i >> 1u], IN_DTYPE), st_pair(${a}[(i >> 1u) + 1u], IN_DTYPE));
  }
  // Element by element, without a loop (Mesa's llvmpipe counts every loop iteration against its
  // per-invocation cap, see flashLoopIterations); elements past n read as 0.
  var r = vec4<f32>(st_value(${a}[st_word(i, IN_DTYPE)], i, IN_DTYPE), 0.0, 0.0, 0.0);
  if (n > 1u) {
    r.y = st_value(${a}[st_word(i + 1u, IN_DTYPE)], i + 1u, IN_DTYPE);
  }
  if (n > 2u) {
    r.z = st_value(${a}[st_word(i + 2u, IN_DTYPE)], i + 2u, IN_DTYPE);
  }
  if (n > 3u) {
    r.w = st_value(${a}[st_word(i + 3u, IN_DTYPE)], i + 3u, IN_DTYPE);
  }
  return r;
}
`,
  )
  .join('');
const PROGRAM_SG: ShaderSource = wgslProgram(
  'dense/flash+sg',
  [storageWgsl, ATTN_PARAMS.wgsl, prefillWgsl, LOADS, sgWgsl],
  ['subgroups'],
);
const PROGRAM_NOSG: ShaderSource = wgslProgram('dense/flash', [
  storageWgsl,
  ATTN_PARAMS.wgsl,
  prefillWgsl,
  LOADS,
  nosgWgsl,
]);

/** Packed rows per workgroup of each variant (main_cpu: 4 lanes x 4 rows; main_gpu: WG_GPU). */
export const CPU_TILE_ROWS = 16;
export const GPU_TILE_ROWS = 64;
/**
 * The kernel entry points of the flash program, plus `main_decode_cpu`: the split sizing that
 * dense decode's `kvChunk` keeps on the cpu shape (costed as `main_cpu`; decode itself runs on
 * the attention core, kernels/attention, since the decode entry was removed).
 */
export type FlashEntry = 'main_cpu' | 'main_gpu' | 'main_decode_cpu';

function entryOf(r: Pick<ResolvedAttention, 'variant'>): 'main_cpu' | 'main_gpu' {
  return r.variant === 'gpu' ? 'main_gpu' : 'main_cpu';
}

/** main_gpu's keys per workgroup-memory tile: 32 for D <= 64, halved until both tiles fit 16 KiB. */
export function gpuKeyBlock(D: number, Dv: number): number {
  const nc = Math.max(Math.ceil(D / 4), Math.ceil(Dv / 4));
  let bkg = 32;
  while (bkg > 1 && bkg * nc > 512) bkg >>= 1;
  return bkg;
}

/**
 * The loop cost of one invocation of the flash kernel, read off the WGSL and counted the way
 * Mesa's gallivm counts (every back-edge of every loop, all loops together; a loop entered for n
 * trips counts n + 1): `setup` for the q loads, the segment loop and the output stores, and
 * `perBlock` for one key block of `blockKeys` keys with its dim loops.
 *
 * - `main_cpu`, `main_decode_cpu` (16-key blocks): `nc + 1` (the q . K chunks) + `ncv + 1` (the
 *   P V chunks) + 1 (the block loop), with `nc = ceil(D/4)`, `ncv = ceil(Dv/4)`.
 * - `main_gpu` (BKG-key blocks, 64 invocations): the two staging loops
 *   `ceil(BKG nc / 64) + 1` and `ceil(BKG ncv / 64) + 1`, the score loop `(BKG + 1) + BKG (nc + 1)`,
 *   the softmax loop `BKG + 1`, the accumulator loop `(ncv + 1) + ncv (BKG + 1)`, and 1. (Its dim
 *   loops have constant trip counts that compilers unroll; the bound does not rely on that.)
 *
 * The setup is counted twice plus 8 (an allowance for what the compiler adds). Measured on
 * llvmpipe (main_cpu, f32, non-causal, one tile): D = 128 stops after 976 blocks (bound: 67 per
 * block), D = 32 after 3447 (bound: 19 per block); the loads and stores have no loops of their own.
 */
export function flashLoopCost(
  entry: FlashEntry,
  D: number,
  Dv: number,
): { blockKeys: number; setup: number; perBlock: number } {
  const nc = Math.ceil(D / 4);
  const ncv = Math.ceil(Dv / 4);
  const setup = 2 * (nc + 1 + 3 + 2 + ncv + 1) + 8;
  if (entry !== 'main_gpu') return { blockKeys: 16, setup, perBlock: nc + ncv + 3 };
  const bkg = gpuKeyBlock(D, Dv);
  const wg = GPU_TILE_ROWS;
  const perBlock =
    1 +
    (Math.ceil((bkg * nc) / wg) + 1) +
    (Math.ceil((bkg * ncv) / wg) + 1) +
    (bkg + 1) +
    bkg * (nc + 1) +
    (bkg + 1) +
    (ncv + 1) +
    ncv * (bkg + 1);
  return { blockKeys: bkg, setup, perBlock };
}

/**
 * Upper bound of the loop iterations one invocation runs when its work item visits `keys` keys
 * in at most two segments (the sinks and the visible range, each cut to a KV split), i.e. at most
 * `ceil(keys / blockKeys) + 1` blocks.
 *
 * @example
 * flashLoopIterations('main_cpu', 128, 128, 1000); // 64 blocks x 67 + 150 = 4438
 */
export function flashLoopIterations(entry: FlashEntry, D: number, Dv: number, keys: number): number {
  const c = flashLoopCost(entry, D, Dv);
  return c.setup + (Math.ceil(keys / c.blockKeys) + 1) * c.perBlock;
}

/**
 * The largest KV split (keys per work item, a multiple of the entry's key block) whose work items
 * stay within 90% of `loopLimit` by {@link flashLoopIterations}; `Infinity` without a cap. Throws
 * `E_LIMIT` (naming `D`) when not even one key block fits.
 */
export function maxFlashKvChunk(loopLimit: number, entry: FlashEntry, D: number, Dv: number): number {
  if (!Number.isFinite(loopLimit)) return Number.POSITIVE_INFINITY;
  const c = flashLoopCost(entry, D, Dv);
  const blocks = Math.floor((loopBudget(loopLimit) - c.setup) / c.perBlock) - 1;
  if (blocks < 1) {
    fail(
      'E_LIMIT',
      'D',
      "makes one key block of the flash kernel longer than the device's loop limit allows;",
      D,
      `a smaller head dim (loopLimit ${loopLimit})`,
    );
  }
  return blocks * c.blockKeys;
}
export const MAX_HEAD_DIM = 256;

/** Validated, defaulted attention options. */
export interface ResolvedAttention {
  Hq: number;
  Hkv: number;
  D: number;
  Dv: number;
  causal: boolean;
  scale: number;
  window: number;
  sinks: number;
  sinkLogit: boolean;
  dtype: FloatDType;
  outDtype: FloatDType;
  variant: 'cpu' | 'gpu';
  subgroups: boolean;
  constDims: boolean;
  partialBytes: number;
}

/** Validates the shared options (throws TesseraError naming the argument). */
export function resolveAttention(ctx: TesseraDevice, opts: AttentionOptions & AttentionTuning): ResolvedAttention {
  if (opts === null || typeof opts !== 'object')
    fail('E_ARG', 'options', 'is not an object;', opts, 'AttentionOptions');
  const Hq = checkInt(opts.Hq, 'Hq', { min: 1, max: 65535 });
  const Hkv = checkInt(opts.Hkv, 'Hkv', { min: 1, max: 65535 });
  check(Hq % Hkv === 0, 'Hq', `a multiple of Hkv = ${Hkv}`, Hq);
  const D = opts.D;
  if (typeof D !== 'number' || !Number.isInteger(D) || D < 1 || D > MAX_HEAD_DIM) {
    fail('E_UNSUPPORTED', 'D', 'head dim not supported;', D, `an integer in [1, ${MAX_HEAD_DIM}]`);
  }
  const Dv = opts.Dv ?? D;
  if (typeof Dv !== 'number' || !Number.isInteger(Dv) || Dv < 1 || Dv > MAX_HEAD_DIM) {
    fail('E_UNSUPPORTED', 'Dv', 'head dim not supported;', Dv, `an integer in [1, ${MAX_HEAD_DIM}]`);
  }
  const causal = opts.causal ?? true;
  check(typeof causal === 'boolean', 'causal', 'a boolean', causal);
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  checkF32(scale, 'scale');
  const window = opts.window ?? 0;
  checkInt(window, 'window', { min: 0 });
  check(window === 0 || causal, 'window', 'no window with causal = false (a sliding window is causal)', window);
  const sinks = opts.sinks ?? 0;
  checkInt(sinks, 'sinks', { min: 0 });
  const sinkLogit = opts.sinkLogit ?? false;
  check(typeof sinkLogit === 'boolean', 'sinkLogit', 'a boolean', sinkLogit);
  const dtype = opts.dtype ?? 'f32';
  if (!isFloatDType(dtype)) fail('E_DTYPE', 'dtype', 'is not a float storage dtype;', dtype, 'one of f32, f16, bf16');
  const outDtype = opts.outDtype ?? dtype;
  if (!isFloatDType(outDtype))
    fail('E_DTYPE', 'outDtype', 'is not a float storage dtype;', outDtype, 'one of f32, f16, bf16');
  if (outDtype !== 'f32' && Dv % 2 !== 0)
    fail('E_UNSUPPORTED', 'Dv', 'must be even for 16-bit outputs;', Dv, 'an even head dim (or outDtype f32)');
  const v = kernelTarget(opts);
  const variant = v === 'auto' ? (ctx.adapterClass === 'cpu' ? 'cpu' : 'gpu') : v;
  const subgroups = opts.subgroups ?? ctx.features.subgroups;
  if (subgroups && !ctx.features.subgroups)
    fail('E_UNSUPPORTED', 'subgroups', 'the device has no subgroups feature;', true, 'false on this device');
  const constDims = opts.constDims ?? variant === 'gpu';
  check(typeof constDims === 'boolean', 'constDims', 'a boolean', constDims);
  const partialBytes = checkInt(opts.partialBytes ?? PREFILL_PARTIALS_BYTES, 'partialBytes', {
    min: 1,
    max: Number.MAX_SAFE_INTEGER,
  });
  return {
    Hq,
    Hkv,
    D,
    Dv,
    causal,
    scale,
    window,
    sinks,
    sinkLogit,
    dtype,
    outDtype,
    variant,
    subgroups,
    constDims,
    partialBytes,
  };
}

/** One sequence of a batch: where its queries and keys start and how many there are. */
export interface SeqSpan {
  qOff: number;
  tq: number;
  kOff: number;
  tk: number;
}

function checkCu(cu: unknown, argument: string): number[] {
  if (!Array.isArray(cu) || cu.length < 2)
    fail('E_ARG', argument, 'is not a cumulative length list;', cu, 'an array [N+1] starting at 0');
  const a = cu as number[];
  for (let i = 0; i < a.length; i++) {
    const x = a[i];
    if (typeof x !== 'number' || !Number.isInteger(x) || x < 0 || (i === 0 && x !== 0) || (i > 0 && x < a[i - 1]!)) {
      fail(
        'E_ARG',
        `${argument}[${i}]`,
        'invalid value;',
        x,
        i === 0 ? '0' : `an integer >= ${argument}[${i - 1}] = ${a[i - 1]}`,
      );
    }
  }
  return a;
}

/** The sequences of a prefill call, validated. */
export function resolveSpans(opts: {
  Tq?: number;
  Tk?: number;
  cuSeqlensQ?: readonly number[];
  cuSeqlensK?: readonly number[];
}): SeqSpan[] {
  if (opts.cuSeqlensQ !== undefined) {
    const cq = checkCu(opts.cuSeqlensQ, 'cuSeqlensQ');
    const ck = opts.cuSeqlensK === undefined ? cq : checkCu(opts.cuSeqlensK, 'cuSeqlensK');
    if (ck.length !== cq.length)
      fail(
        'E_SHAPE',
        'cuSeqlensK',
        'has a different number of sequences than cuSeqlensQ;',
        ck.length,
        `length ${cq.length}`,
      );
    if (cq[cq.length - 1] === 0)
      fail('E_ARG', 'cuSeqlensQ', 'holds no query token;', cq, 'at least one token (T = 0 is not a call)');
    const spans: SeqSpan[] = [];
    for (let n = 0; n + 1 < cq.length; n++)
      spans.push({ qOff: cq[n]!, tq: cq[n + 1]! - cq[n]!, kOff: ck[n]!, tk: ck[n + 1]! - ck[n]! });
    return spans;
  }
  const Tq = checkInt(opts.Tq, 'Tq', { min: 1 });
  const Tk = opts.Tk === undefined ? Tq : checkInt(opts.Tk, 'Tk', { min: 1 });
  return [{ qOff: 0, tq: Tq, kOff: 0, tk: Tk }];
}

/**
 * The engine shared by prefill and decode: one pipeline, a tile table over the sequences, and a
 * uniform block per lse mode. `splits > 1` writes f32 partials `[splits][rows, Dv]` for a merge.
 * @internal
 */
export class FlashCore {
  readonly pipeline: Pipeline<VariantOf<typeof FLASH>>;
  readonly workgroups: [number, number];
  readonly tileBuf: GPUBuffer;
  readonly paramsLse: GPUBuffer;
  readonly paramsNoLse: GPUBuffer;
  /**
   * Stand-in for an absent lse output (never written: `write_lse` is 0). Whether a run writes lse
   * is a uniform, so one pipeline serves runs with and without it (a second variant would cost a
   * compile); a writable binding cannot alias `o`, hence this 16-byte buffer.
   */
  readonly dummy: GPUBuffer;

  private constructor(
    pipeline: Pipeline<VariantOf<typeof FLASH>>,
    workgroups: [number, number],
    buffers: {
      tileBuf: GPUBuffer;
      paramsLse: GPUBuffer;
      paramsNoLse: GPUBuffer;
      dummy: GPUBuffer;
    },
  ) {
    this.pipeline = pipeline;
    this.workgroups = workgroups;
    this.tileBuf = buffers.tileBuf;
    this.paramsLse = buffers.paramsLse;
    this.paramsNoLse = buffers.paramsNoLse;
    this.dummy = buffers.dummy;
  }

  /** Pipeline spec of a configuration (exported so benchmarks can report compile time). */
  static spec(r: FlashSpecOptions, splitOut: boolean): PipelineSpec<VariantOf<typeof FLASH>> {
    const nc = Math.ceil(r.D / 4);
    const ncv = Math.ceil(r.Dv / 4);
    const bkg = gpuKeyBlock(r.D, r.Dv);
    const constants: Record<string, number | boolean> = {
      IN_DTYPE: dtypeCode(r.dtype),
      OUT_DTYPE: splitOut ? 0 : dtypeCode(r.outDtype),
    };
    // main_gpu: head dims as constants (GPU compilers unroll the dim loops into registers).
    // main_cpu: head dims, causal and the sink flag are uniforms, so one pipeline per dtype pair
    // serves every shape (SwiftShader does not unroll either way, and compiles take ~1 s each).
    if (r.constDims) Object.assign(constants, { HEAD_D: r.D, HEAD_DV: r.Dv });
    if (r.variant === 'gpu')
      Object.assign(constants, { WG_GPU: GPU_TILE_ROWS, BKG: bkg, KS_LEN: bkg * nc, VS_LEN: bkg * ncv });
    return {
      shader: r.variant === 'cpu' && r.subgroups ? PROGRAM_SG : PROGRAM_NOSG,
      entryPoint: entryOf(r),
      bindings: FLASH.variant({ sink_logits: r.sinkLogit }),
      constants,
    };
  }

  /**
   * The kernel's bindings: `o` / `lse` are the outputs (no lse: nothing written) or, for a split
   * plan, the f32 partials (lse always written).
   */
  bindings(t: {
    q: GpuTensor;
    k: GpuTensor;
    v: GpuTensor;
    o: GpuTensor;
    lse?: GpuTensor;
    sinkLogits?: GpuTensor;
  }): ResourcesFor<VariantOf<typeof FLASH>> {
    return {
      q: res(t.q),
      k: res(t.k),
      v: res(t.v),
      o: res(t.o),
      lse: t.lse ? res(t.lse) : { buffer: this.dummy },
      sink_logits: t.sinkLogits && res(t.sinkLogits),
      tiles: { buffer: this.tileBuf },
      params: { buffer: t.lse ? this.paramsLse : this.paramsNoLse },
    };
  }

  static async create(
    ctx: TesseraDevice,
    r: ResolvedAttention,
    spans: readonly SeqSpan[],
    split: { splits: number; kvChunk: number; oStride: number; lseStride: number } | undefined,
    alloc: {
      uniform: (values: Record<string, number>) => GPUBuffer;
      buffer: (words: Uint32Array, label: string) => GPUBuffer;
    },
  ): Promise<FlashCore> {
    const G = r.Hq / r.Hkv;
    const rows = entryOf(r) === 'main_cpu' ? CPU_TILE_ROWS : GPU_TILE_ROWS;
    // Tiles, heaviest first (longest-processing-time order): with causal masks the last tiles of
    // a sequence see the most keys, and starting them first evens out the end of the dispatch.
    const list: { t: number[]; work: number }[] = [];
    for (const s of spans) {
      const packed = s.tq * G;
      for (let p0 = 0; p0 < packed; p0 += rows) {
        const posFirst = s.tk - s.tq + Math.floor(p0 / G);
        const posLast = s.tk - s.tq + Math.floor((Math.min(p0 + rows, packed) - 1) / G);
        let work = s.tk;
        if (r.causal) {
          const hi = Math.max(0, Math.min(s.tk, posLast + 1));
          const lo = r.window > 0 ? Math.min(hi, Math.max(0, posFirst - r.window + 1)) : 0;
          work = hi - lo + Math.min(r.sinks, lo);
        }
        list.push({ t: [s.qOff, s.tq, s.kOff, s.tk, p0, 0, 0, 0], work });
      }
    }
    list.sort((a, b) => b.work - a.work);
    const tiles = list.flatMap((x) => x.t);
    const numTiles = list.length;
    const splits = split?.splits ?? 1;
    const numWork = numTiles * r.Hkv * splits;
    const workgroups = grid2d(ctx, Math.max(1, numWork));
    const pipeline = await getPipeline(ctx, FlashCore.spec(r, split !== undefined));
    const values = {
      num_tiles: Math.max(1, numTiles),
      num_work: numWork,
      hq: r.Hq,
      hkv: r.Hkv,
      group: G,
      scale_log2: r.scale * Math.LOG2E,
      window: r.window,
      sinks: r.sinks,
      kv_chunk: split?.kvChunk ?? 0xffffffff,
      o_split_stride: split?.oStride ?? 0,
      lse_split_stride: split?.lseStride ?? 0,
      d: r.D,
      dv: r.Dv,
      causal: r.causal ? 1 : 0,
      has_sink: r.sinkLogit ? 1 : 0,
    };
    const tileBuf = alloc.buffer(Uint32Array.from(tiles.length ? tiles : [0, 0, 0, 0, 0, 0, 0, 0]), 'dense.tiles');
    return new FlashCore(pipeline, workgroups, {
      tileBuf,
      paramsLse: alloc.uniform({ ...values, write_lse: 1 }),
      paramsNoLse: alloc.uniform({ ...values, write_lse: 0 }),
      dummy: alloc.buffer(new Uint32Array(4), 'dense.dummy'),
    });
  }
}

/**
 * FlashCore's bindings (src/gpu/bindings.ts). `sink_logits` is bound only by plans with
 * `sinkLogit` (the kernel reads it where params.has_sink, set to match); `lse` is always bound
 * (see FlashCore.dummy).
 */
const FLASH = bindingTable('dense/flash', {
  q: 'read',
  k: 'read',
  v: 'read',
  o: 'rw',
  lse: 'rw',
  sink_logits: optional('read', 'array<f32>'),
  tiles: 'read',
  params: 'uniform',
});

/** What {@link FlashCore.spec} reads of the resolved options. */
type FlashSpecOptions = Pick<
  ResolvedAttention,
  'D' | 'Dv' | 'dtype' | 'outDtype' | 'constDims' | 'variant' | 'subgroups' | 'sinkLogit'
>;

registerPasses('dense', () => {
  const specs: PipelineSpec[] = [];
  for (const variant of ['cpu', 'gpu'] as const)
    for (const sinkLogit of [false, true])
      for (const subgroups of variant === 'cpu' ? [false, true] : [false]) {
        const r: FlashSpecOptions = {
          D: 64,
          Dv: 64,
          dtype: 'f32',
          outDtype: 'f32',
          constDims: variant === 'gpu',
          variant,
          subgroups,
          sinkLogit,
        };
        specs.push(FlashCore.spec(r, false), FlashCore.spec(r, true));
      }
  return specs;
});

/**
 * The most keys one work item of an unsplit call visits: over every tile of `rows` packed rows,
 * the visible range `[lo, hi)` plus the sinks before it (what FlashCore's work items loop over).
 */
export function maxTileKeys(r: ResolvedAttention, spans: readonly SeqSpan[], rows: number): number {
  const G = r.Hq / r.Hkv;
  let most = 0;
  for (const s of spans) {
    const packed = s.tq * G;
    for (let p0 = 0; p0 < packed; p0 += rows) {
      let keys = s.tk;
      if (r.causal) {
        const posFirst = s.tk - s.tq + Math.floor(p0 / G);
        const posLast = s.tk - s.tq + Math.floor((Math.min(p0 + rows, packed) - 1) / G);
        const hi = Math.max(0, Math.min(s.tk, posLast + 1));
        const lo = r.window > 0 ? Math.min(hi, Math.max(0, posFirst - r.window + 1)) : 0;
        keys = hi - lo + Math.min(r.sinks, lo);
      }
      most = Math.max(most, keys);
      if (!r.causal) break; // every tile of a non-causal sequence sees all its keys
    }
  }
  return most;
}

/**
 * The sequences of a prefill restricted to the query tokens `[t0, t1)` of the batch, with query
 * offsets relative to `t0` (the group's q/o/lse are bound from token t0). A causal sequence cut
 * after its query b keeps the keys up to b's position (`tk - tq + b`), so every kept query sits at
 * the same position as in the whole call; a non-causal one keeps all its keys.
 */
export function spansInQueryRange(spans: readonly SeqSpan[], t0: number, t1: number, causal: boolean): SeqSpan[] {
  const out: SeqSpan[] = [];
  for (const s of spans) {
    const a = Math.max(0, t0 - s.qOff);
    const b = Math.min(s.tq, t1 - s.qOff);
    if (b <= a) continue;
    const tk = causal ? Math.min(s.tk, Math.max(0, s.tk - s.tq + b)) : s.tk;
    out.push({ qOff: s.qOff + a - t0, tq: b - a, kOff: s.kOff, tk });
  }
  return out;
}

/**
 * The KV split of a prefill on a device with loop cap `loopLimit`: none (`splits` 1) unless the
 * plan's largest tile could loop past 90% of it ({@link flashLoopIterations}); then the fewest
 * splits of at most {@link maxFlashKvChunk} keys, balanced (a multiple of the key block).
 */
export function planKvSplit(
  loopLimit: number,
  r: ResolvedAttention,
  spans: readonly SeqSpan[],
): { splits: number; kvChunk: number } {
  const entry = entryOf(r);
  const cap = maxFlashKvChunk(loopLimit, entry, r.D, r.Dv);
  const maxKeys = maxTileKeys(r, spans, entry === 'main_cpu' ? CPU_TILE_ROWS : GPU_TILE_ROWS);
  if (flashLoopIterations(entry, r.D, r.Dv, maxKeys) <= loopBudget(loopLimit))
    return { splits: 1, kvChunk: Number.POSITIVE_INFINITY };
  const maxTk = Math.max(...spans.map((x) => x.tk));
  const block = flashLoopCost(entry, r.D, r.Dv).blockKeys;
  const kvChunk = Math.min(cap, block * Math.ceil(maxTk / Math.ceil(maxTk / cap) / block));
  return { splits: Math.ceil(maxTk / kvChunk), kvChunk };
}

/** Bytes of prefill partials (`oParts`) a split plan keeps per query group (at most). */
export const PREFILL_PARTIALS_BYTES = 32 * 2 ** 20;

/** A tensor view of rows `[t0, t0 + n)` of the leading axis (offset in bytes). */
function rowsOf(t: GpuTensor, t0: number, n: number): GpuTensor {
  const per = t.shape.slice(1).reduce((a, b) => a * b, 1);
  return {
    buffer: t.buffer,
    offset: (t.offset ?? 0) + t0 * per * DTYPE_BYTES[t.dtype],
    shape: [n, ...t.shape.slice(1)],
    dtype: t.dtype,
  };
}

/** Checks q/k/v/sinkLogits against the plan and the device limits. */
export function checkInputs(
  ctx: TesseraDevice,
  r: ResolvedAttention,
  t: { q: unknown; k: unknown; v: unknown; sinkLogits?: unknown },
  Tq: number,
  Tk: number,
): { q: GpuTensor; k: GpuTensor; v: GpuTensor; sinkLogits?: GpuTensor } {
  if (t === null || typeof t !== 'object') fail('E_ARG', 'tensors', 'is not an object;', t, '{ q, k, v, o, lse? }');
  const q = checkTensor(t.q, 'q', { rank: 3, shape: [Tq, r.Hq, r.D], dtypes: [r.dtype] });
  const k = checkTensor(t.k, 'k', { rank: 3, shape: [Tk, r.Hkv, r.D], dtypes: [r.dtype] });
  const v = checkTensor(t.v, 'v', { rank: 3, shape: [Tk, r.Hkv, r.Dv], dtypes: [r.dtype] });
  let sinkLogits: GpuTensor | undefined;
  if (r.sinkLogit) {
    if (t.sinkLogits === undefined)
      fail('E_ARG', 'sinkLogits', 'is required with sinkLogit: true;', undefined, `a [${r.Hq}] f32 tensor`);
    sinkLogits = checkTensor(t.sinkLogits, 'sinkLogits', { rank: 1, shape: [r.Hq], dtypes: ['f32'] });
  } else if (t.sinkLogits !== undefined) {
    fail(
      'E_ARG',
      'sinkLogits',
      'was given but the plan has sinkLogit: false;',
      'a tensor',
      'no sinkLogits, or plan with sinkLogit: true',
    );
  }
  checkBindingSize(ctx, q, 'q');
  checkBindingSize(ctx, k, 'k');
  checkBindingSize(ctx, v, 'v');
  return { q, k, v, sinkLogits };
}

/** Checks o `[rows, Hq, Dv]` (outDtype) and the optional lse `[rows, Hq]` f32 against the plan. */
export function checkOutputs(
  ctx: TesseraDevice,
  r: ResolvedAttention,
  t: { o: unknown; lse?: unknown },
  rows: number,
): { o: GpuTensor; lse?: GpuTensor } {
  const o = checkTensor(t.o, 'o', { rank: 3, shape: [rows, r.Hq, r.Dv], dtypes: [r.outDtype] });
  checkBindingSize(ctx, o, 'o');
  if (t.lse === undefined) return { o };
  const lse = checkTensor(t.lse, 'lse', { rank: 2, shape: [rows, r.Hq], dtypes: ['f32'] });
  checkBindingSize(ctx, lse, 'lse');
  return { o, lse };
}

/** One query group of a split prefill: its tokens, its flash dispatch and its merge. */
interface QueryGroup {
  tok0: number;
  tokens: number;
  core: FlashCore;
  merger?: MergePlan;
}

/**
 * A planned dense (prefill) attention call: options validated, pipeline compiled, workspaces
 * allocated. `run` encodes into the caller's encoder and allocates nothing. Create with
 * {@link planAttention}; `dispose()` frees its workspaces.
 *
 * @example
 * const plan = await planAttention(dev, { Tq: 300, Hq: 4, Hkv: 2, D: 64, causal: true });
 * const enc = dev.device.createCommandEncoder();
 * plan.run(enc, { q, k, v, o });
 * dev.device.queue.submit([enc.finish()]);
 */
export class AttentionPlan extends KernelPlan<AttentionTensors> {
  readonly options: ResolvedAttention;
  readonly Tq: number;
  readonly Tk: number;
  readonly spans: readonly SeqSpan[];
  /**
   * KV splits per work item: 1 (the kernel writes `o`/`lse` directly) unless a work item would
   * loop past 90% of the loop cap (`ctx.loopLimit`, Mesa's llvmpipe, or the plan's `loopLimit`), see
   * {@link flashLoopIterations}; then each split of `kvChunk` keys writes f32 partials that
   * `kernels/merge` combines exactly.
   */
  readonly splits: number;
  /** Keys per split (`Infinity` when unsplit). */
  readonly kvChunk: number;
  /** The loop cap the splits were sized for: the device's, or the plan's lower `loopLimit`. */
  loopLimit = Number.POSITIVE_INFINITY;
  private groups: QueryGroup[] = [];
  private oParts?: GPUBuffer;
  private lseParts?: GPUBuffer;
  private lseScratch?: GPUBuffer;

  private constructor(
    ctx: TesseraDevice,
    r: ResolvedAttention,
    spans: SeqSpan[],
    split: { splits: number; kvChunk: number },
  ) {
    super(ctx);
    this.options = r;
    this.spans = spans;
    this.splits = split.splits;
    this.kvChunk = split.kvChunk;
    const last = spans[spans.length - 1]!;
    this.Tq = last.qOff + last.tq;
    this.Tk = last.kOff + last.tk;
  }

  /** Milliseconds spent compiling this plan's pipeline (0 when it was cached). */
  get compileMs(): number {
    return this.groups[0]!.core.pipeline.compileMs;
  }

  /**
   * Query groups encoded one after another (each a flash dispatch and a merge), so that a split
   * call's partials stay within {@link PREFILL_PARTIALS_BYTES}; 1 when unsplit.
   */
  get queryGroups(): number {
    return this.groups.length;
  }

  /** The kernel variant in use (`cpu`/`gpu`, with or without subgroups). */
  get variant(): string {
    return `${this.options.variant}${this.options.variant === 'cpu' ? (this.options.subgroups ? '+subgroups' : '-nosubgroups') : ''}`;
  }

  /** @internal use {@link planAttention}. */
  static async create(device: DeviceLike, opts: AttentionPlanOptions): Promise<AttentionPlan> {
    const ctx = ctxOf(device);
    const r = resolveAttention(ctx, opts);
    const spans = resolveSpans(opts);
    const limit = planLoopLimit(ctx, opts.loopLimit);
    const plan = new AttentionPlan(ctx, r, spans, planKvSplit(limit, r, spans));
    plan.loopLimit = limit;
    checkAttentionSizes(ctx, { ...r, Tq: plan.Tq, Tk: plan.Tk });
    try {
      if (plan.splits === 1) {
        plan.groups = [
          { tok0: 0, tokens: plan.Tq, core: await FlashCore.create(ctx, r, spans, undefined, plan.allocator()) },
        ];
      } else {
        await plan.planSplit(r, spans);
      }
    } catch (e) {
      plan.dispose();
      throw e;
    }
    return plan;
  }

  /**
   * The split path: query groups of whole 128-token blocks (so every group's q/o/lse binding
   * offset stays 256-byte aligned in every dtype) small enough that the f32 partials
   * `[splits, tokens * Hq, Dv]` fit {@link PREFILL_PARTIALS_BYTES}; one workspace serves them all.
   */
  private async planSplit(r: ResolvedAttention, spans: readonly SeqSpan[]): Promise<void> {
    const ctx = this.ctx;
    const { splits, kvChunk } = this;
    const perToken = splits * r.Hq * r.Dv * 4;
    const budget = Math.min(r.partialBytes, ctx.limits.maxStorageBufferBindingSize);
    let tokens = Math.max(128, 128 * Math.floor(budget / perToken / 128));
    if (tokens >= this.Tq) tokens = this.Tq;
    checkPlannedSize(ctx, 'workspace (partials)', [splits, tokens * r.Hq, r.Dv], 'f32');
    const rowsMax = tokens * r.Hq;
    this.oParts = this.workspace(splits * rowsMax * r.Dv * 4, 'dense.prefill.oParts');
    this.lseParts = this.workspace(splits * rowsMax * 4, 'dense.prefill.lseParts');
    this.lseScratch = this.workspace(rowsMax * 4, 'dense.prefill.lse');
    const mergers = new Map<number, MergePlan>();
    for (let t0 = 0; t0 < this.Tq; t0 += tokens) {
      const n = Math.min(tokens, this.Tq - t0);
      const rows = n * r.Hq;
      const split = { splits, kvChunk, oStride: rows * r.Dv, lseStride: rows };
      const core = await FlashCore.create(
        ctx,
        r,
        spansInQueryRange(spans, t0, t0 + n, r.causal),
        split,
        this.allocator(),
      );
      let merger = mergers.get(rows);
      if (!merger) {
        merger = await planMerge(ctx, {
          parts: splits,
          rows,
          D: r.Dv,
          outDtype: r.outDtype,
          loopLimit: Number.isFinite(this.loopLimit) ? this.loopLimit : undefined,
        });
        mergers.set(rows, merger);
        this.mergers.push(merger);
      }
      this.groups.push({ tok0: t0, tokens: n, core, merger });
    }
  }

  private readonly mergers: MergePlan[] = [];

  override dispose(): void {
    for (const m of this.mergers) m.dispose();
    super.dispose();
  }

  /** @internal buffers owned by this plan. */
  allocator(): {
    uniform: (values: Record<string, number>) => GPUBuffer;
    buffer: (words: Uint32Array, label: string) => GPUBuffer;
  } {
    return {
      uniform: (values) => this.uniform(ATTN_PARAMS, values as Record<(typeof ATTN_PARAMS.fields)[number][0], number>),
      buffer: (words, label) => {
        const b = this.workspace(words.byteLength, label);
        this.ctx.device.queue.writeBuffer(b, 0, words.buffer as ArrayBuffer, words.byteOffset, words.byteLength);
        return b;
      },
    };
  }

  run(encoder: GPUCommandEncoder, t: AttentionTensors): void {
    this.assertUsable();
    const r = this.options;
    const { q, k, v, sinkLogits } = checkInputs(this.ctx, r, t, this.Tq, this.Tk);
    const { o, lse } = checkOutputs(this.ctx, r, t, this.Tq);
    if (this.splits === 1) {
      const c = this.groups[0]!.core;
      this.dispatch(encoder, c.pipeline, c.bindings({ q, k, v, o, lse, sinkLogits }), c.workgroups);
      return;
    }
    // Split: per query group, partials over KV chunks, then the exact merge into o / lse.
    const S = this.splits;
    for (const g of this.groups) {
      const c = g.core;
      const rows = g.tokens * r.Hq;
      const oParts: GpuTensor = { buffer: this.oParts!, shape: [S, rows, r.Dv], dtype: 'f32' };
      const lseParts: GpuTensor = { buffer: this.lseParts!, shape: [S, rows], dtype: 'f32' };
      this.dispatch(
        encoder,
        c.pipeline,
        c.bindings({ q: rowsOf(q, g.tok0, g.tokens), k, v, o: oParts, lse: lseParts, sinkLogits }),
        c.workgroups,
      );
      const og = rowsOf(o, g.tok0, g.tokens);
      g.merger!.run(encoder, {
        oParts,
        lseParts,
        o: { buffer: og.buffer, offset: og.offset, shape: [rows, r.Dv], dtype: o.dtype },
        lse: lse
          ? { ...rowsOf(lse, g.tok0, g.tokens), shape: [rows] }
          : { buffer: this.lseScratch!, shape: [rows], dtype: 'f32' },
      });
    }
  }
}

/**
 * Plans dense flash attention over one sequence (`Tq`, `Tk`) or a ragged batch (`cuSeqlensQ`,
 * `cuSeqlensK`). Validates everything and compiles (or fetches) the pipeline.
 *
 * @example
 * const plan = await planAttention(dev, { Tq: 300, Hq: 4, Hkv: 2, D: 64 });
 * const enc = dev.device.createCommandEncoder();
 * plan.run(enc, { q, k, v, o, lse });
 * dev.device.queue.submit([enc.finish()]);
 */
export function planAttention(device: DeviceLike, opts: AttentionPlanOptions): Promise<AttentionPlan> {
  return AttentionPlan.create(device, opts);
}

/**
 * Dense attention in one call: plans from the tensor shapes, runs, submits and waits.
 * `q [Tq, Hq, D]`, `k [Tk, Hkv, D]`, `v [Tk, Hkv, Dv]`, `o [Tq, Hq, Dv]`, `lse? [Tq, Hq]`.
 *
 * @example
 * await attention(dev, { q, k, v, o, lse }, { causal: true });
 */
export async function attention(
  device: DeviceLike,
  t: AttentionTensors,
  opts: Partial<AttentionOptions> &
    AttentionTuning & { cuSeqlensQ?: readonly number[]; cuSeqlensK?: readonly number[] } = {},
): Promise<void> {
  const ctx = ctxOf(device);
  const q = checkTensor(t?.q, 'q', { rank: 3 });
  const k = checkTensor(t.k, 'k', { rank: 3 });
  const v = checkTensor(t.v, 'v', { rank: 3 });
  const [Tq, Hq, D] = q.shape as [number, number, number];
  const [Tk, Hkv] = k.shape as [number, number, number];
  const base = {
    Hq,
    Hkv,
    D,
    Dv: v.shape[2],
    dtype: q.dtype as FloatDType,
    outDtype: (t.o?.dtype ?? q.dtype) as FloatDType,
    sinkLogit: t.sinkLogits !== undefined,
    ...opts,
  };
  const plan = await planAttention(
    ctx,
    opts.cuSeqlensQ
      ? { ...base, cuSeqlensQ: opts.cuSeqlensQ, cuSeqlensK: opts.cuSeqlensK }
      : { ...base, Tq, Tk, cuSeqlensQ: undefined, cuSeqlensK: undefined },
  );
  await runOnceAndDispose(ctx, plan, t, 'attention');
}
