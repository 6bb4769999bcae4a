/**
 * The dense flash kernel (prefill.wgsl): the fallback of dense prefill and decode for what the
 * attention core cannot take (head dims that are not multiples of 4, K/V whose byte size is not a
 * multiple of 16, split prefills whose partials need query groups); see prefill_core.ts. Its
 * program, bindings, loop-cost model (llvmpipe's cap) and the engine `FlashCore`.
 */
import { fail } from '../../src/errors.js';
import { loopBudget, type TesseraDevice } from '../../src/gpu/device.js';
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
import { res } from '../../src/plan.js';
import { dtypeCode, type GpuTensor } from '../../src/tensor.js';
import storageWgsl from '../../shaders/storage.wgsl.js';
import prefillWgsl from './prefill.wgsl.js';
import sgWgsl from './prefill_sg.wgsl.js';
import nosgWgsl from './prefill_nosg.wgsl.js';
import type { ResolvedAttention, SeqSpan } from './options.js';

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
