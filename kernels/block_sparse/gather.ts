/**
 * The gathered-block attention core (`gather.wgsl`) shared by block_sparse, MoBA, NSA and DSA:
 * pipelines, the uniform layout and launch geometry. Internal to the sparse families; the public
 * entry points are the families' plan functions.
 *
 * Variants (chosen per `ctx.adapterClass`, overridable with `target` for tests):
 * - `gpu`: entry `main`, one invocation per query row, 64 per workgroup.
 * - `cpu`: entry `main_cpu`, a 4-lane workgroup per tile of 16 rows sharing a key list and a KV
 *   head, K/V loads shared by subgroupBroadcast when the device has subgroups. What the software
 *   adapter wants (see ../shared/reference/platform.md): one gather feeds 4 rows x 16 keys.
 */
import { fail } from '../../src/errors.js';
import type { TesseraDevice } from '../../src/gpu/device.js';
import { getPipeline, grid2d, wgslProgram, type BindingResource, type Pipeline, type ShaderSource } from '../../src/gpu/pipeline.js';
import { uniformLayout } from '../../src/gpu/uniforms.js';
import { checkPlannedSize, res } from '../../src/plan.js';
import { dtypeCode, type FloatDType, type GpuTensor } from '../../src/tensor.js';
import { planMerge, type MergePlan } from '../merge/index.js';
import { loopBudget } from '../topk/topk.js';
import storageWgsl from '../../shaders/storage.wgsl.js';
import unpackWgsl from '../../shaders/unpack4.wgsl.js';
import gatherWgsl from './gather.wgsl.js';
import sgWgsl from './gather_sg.wgsl.js';
import nosgWgsl from './gather_nosg.wgsl.js';

export const GATHER_PARAMS = uniformLayout('GatherParams', [
  ['Tq', 'u32'],
  ['Tk', 'u32'],
  ['Hq', 'u32'],
  ['Hkv', 'u32'],
  ['NG', 'u32'],
  ['NGH', 'u32'],
  ['T0', 'u32'],
  ['S', 'u32'],
  ['BS', 'u32'],
  ['MB', 'u32'],
  ['P', 'u32'],
  ['W', 'u32'],
  ['KSTRIDE', 'u32'],
  ['KOFF', 'u32'],
  ['POSOFF', 'i32'],
  ['scale', 'f32'],
  ['WRITE_LSE', 'u32'],
  ['LDIV', 'u32'],
  ['KS', 'u32'],
  ['NTILES', 'u32'],
  ['E0', 'u32'], // segment: list entries [E0, E1) of each group ...
  ['E1', 'u32'],
  ['K0', 'u32'], // ... keys [lo + K0, lo + K1) of each entry's visible range [lo, hi) ...
  ['K1', 'u32'],
  ['LOAD', 'u32'], // ... continuing from the partial (o, lse) in the outputs (see gatherSegments)
] as const);

export type GatherParamValues = Parameters<typeof GATHER_PARAMS.pack>[0];
/** One launch of the gather core: a share of every group's work (see {@link gatherSegments}). */
export interface GatherSegment {
  /** List entries [E0, E1) of each group (relative to the group's list). */
  E0: number;
  E1: number;
  /** Keys [lo + K0, lo + K1) of each entry, where [lo, hi) is what the row or tile may see. */
  K0: number;
  K1: number;
  /** 1: continue from the partial (o, lse) the previous segment left in the outputs. */
  LOAD: number;
}

/** The segment that covers everything (the only one where loops are not capped). */
export const GATHER_WHOLE: GatherSegment = { E0: 0, E1: 0xffffffff, K0: 0, K1: 0x7fffffff, LOAD: 0 };

/** Defaults for the rarely used fields. */
export const GATHER_DEFAULTS = { T0: 0, S: 0, MB: 0, P: 1, W: 0, KSTRIDE: 1, KOFF: 0, POSOFF: 0, WRITE_LSE: 0, LDIV: 1, KS: 1, NTILES: 0, ...GATHER_WHOLE } as const;

/**
 * Head-dim capacity tiers (vec4 slots of the private q / accumulator arrays).
 *
 * @example
 * headDimTier(64, 64); // 16 (vec4 slots for D <= 64)
 */
export function headDimTier(D: number, Dv: number): number {
  const m = Math.max(D, Dv);
  return m <= 64 ? 16 : m <= 128 ? 32 : 64;
}

const programs = new Map<string, ShaderSource>();
function program(tier: number, subgroups: boolean): ShaderSource {
  const key = `${tier}-${subgroups}`;
  let p = programs.get(key);
  if (!p) {
    const header = `const MAXD4: u32 = ${tier}u;\nconst MAXDV4: u32 = ${tier}u;\n`;
    p = wgslProgram(
      `block_sparse/gather-d${tier * 4}${subgroups ? '-sg' : ''}`,
      [storageWgsl, unpackWgsl, GATHER_PARAMS.wgsl, header, gatherWgsl, subgroups ? sgWgsl : nosgWgsl],
      subgroups ? ['subgroups'] : [],
    );
    programs.set(key, p);
  }
  return p;
}

export type GatherTarget = 'auto' | 'cpu' | 'gpu';

export interface GatherSpec {
  mode: 0 | 1 | 2 | 3;
  /** Storage of q. */
  inDtype: FloatDType;
  /** Storage of k and v (default `inDtype`). */
  kvDtype?: FloatDType;
  outDtype: FloatDType;
  D: number;
  Dv: number;
  causal: boolean;
  /** Rows per group. */
  NR: number;
  /** Variant: `auto` (default) follows the adapter class. */
  target?: GatherTarget;
}

export interface GatherKernel {
  readonly pipeline: Pipeline;
  readonly cpu: boolean;
  readonly NR: number;
  readonly mode: 0 | 1 | 2 | 3;
}

export const GATHER_WG = 64;
/** Rows per tile of the CPU variant. */
export const GATHER_CPU_TILE = 16;

/**
 * Resolves `target` against the adapter.
 *
 * @example
 * gatherUsesCpu(ctx, 'auto'); // true on SwiftShader
 */
export function gatherUsesCpu(ctx: TesseraDevice, target: GatherTarget = 'auto'): boolean {
  return target === 'cpu' || (target === 'auto' && ctx.adapterClass === 'cpu');
}

/**
 * The compiled gather pipeline for a specialisation (cached per device).
 *
 * @example
 * const k = await gatherKernel(ctx, { mode: 1, inDtype: 'f32', outDtype: 'f32', D: 64, Dv: 64, causal: true, NR: 64 });
 */
export async function gatherKernel(ctx: TesseraDevice, s: GatherSpec): Promise<GatherKernel> {
  const cpu = gatherVariantIsCpu(ctx, s);
  const subgroups = cpu && ctx.features.subgroups;
  const pipeline = await getPipeline(ctx, {
    shader: program(headDimTier(s.D, s.Dv), subgroups),
    entryPoint: cpu ? 'main_cpu' : 'main',
    bindings: ['read', 'read', 'read', 'read', 'read', 'rw', 'rw', 'uniform'],
    constants: {
      WG: GATHER_WG,
      Q_DTYPE: dtypeCode(s.inDtype),
      KV_DTYPE: dtypeCode(s.kvDtype ?? s.inDtype),
      OUT_DTYPE: dtypeCode(s.outDtype),
      D: s.D,
      DV: s.Dv,
      MODE: s.mode,
      CAUSAL: s.causal ? 1 : 0,
      NR: s.NR,
    },
  });
  return { pipeline, cpu, NR: s.NR, mode: s.mode };
}

/**
 * Whether a specialisation runs the `cpu` variant (`main_cpu`). On CPU adapters the tile variant
 * pays off when rows share keys: list modes need groups of at least 4 rows (MoBA's per-row
 * lists, NSA/DSA with tiny GQA groups take the per-row variant).
 *
 * @example
 * gatherVariantIsCpu(ctx, { mode: 0, NR: 1, target: 'auto' }); // false: per-row lists
 */
export function gatherVariantIsCpu(ctx: TesseraDevice, s: Pick<GatherSpec, 'mode' | 'NR' | 'target'>): boolean {
  const smallGroups = (s.mode === 0 || s.mode === 1) && s.NR < 4;
  return s.mode === 3 || s.target === 'cpu' || (gatherUsesCpu(ctx, s.target) && !(smallGroups && (s.target ?? 'auto') === 'auto'));
}

/** The work of one group of a gather launch, for its loop bound. */
export interface GatherWork {
  /** Most list entries (key blocks) a group walks: `S`, a BSR row's length, 1 for all-keys. */
  entries: number;
  /** Most keys of one entry that a row (on `cpu`: a tile's rows together) may see. */
  keys: number;
}

/**
 * Upper bound of the loop iterations one invocation of the gather core runs over `work`
 * (`gather.wgsl`, counted as `loopBudget` in kernels/topk says: a loop of n trips costs n + 1, a
 * call of a function holding a loop or an early return 1 more; D4 = D / 4, DV4 = Dv / 4):
 * - per list entry, both variants: the list step, the block call and the range call (3) and the
 *   key loop's exit (1), then per step of 4 keys (`gpu`, `main`) or 16 keys (`cpu`,
 *   `main_cpu`): 1 + the score loop (D4 + 1) + the value loop (DV4 + 1);
 * - once: `gpu`: q load D4 + 1, zeroing, storing and `load`ing the accumulator DV4 + 1 each, the
 *   list loop's exit and the entry's early return; `cpu`: the tile's position scan 16, q loads
 *   D4 + 1, four row stores and four `load`s (DV4 + 2 each), exit and return.
 * Measured on llvmpipe (D = Dv = 64, one-key blocks): an invocation stops after 1,680 entries
 * (39 each, as counted here); at D = 16 after 21,845 (3 each: the head-dim loops unrolled).
 * Unsegmented, at D = Dv = 64 one invocation passes 65,535 at about 7,500 keys of one block
 * (gpu) or 29,900 (cpu), or 1,679 one-key blocks (DSA's selected tokens).
 *
 * @example
 * gatherLoopIterations({ cpu: false, D: 64, Dv: 64 }, { entries: 3, keys: 4096 }, false); // 107,585
 */
export function gatherLoopIterations(k: { cpu: boolean; D: number; Dv: number }, work: GatherWork, load: boolean): number {
  const D4 = k.D / 4;
  const DV4 = k.Dv / 4;
  const perStep = 3 + D4 + DV4;
  const perEntry = (steps: number) => 4 + steps * perStep;
  if (!k.cpu) return D4 + 1 + 2 * (DV4 + 1) + (load ? DV4 + 1 : 0) + 2 + work.entries * perEntry(Math.ceil(work.keys / 4));
  return 16 + D4 + 1 + 4 * (DV4 + 2) + (load ? 4 * (DV4 + 2) : 0) + 2 + work.entries * perEntry(Math.ceil(work.keys / 16));
}

/**
 * The launches a gather needs under a loop budget (see `loopBudget`): one ({@link GATHER_WHOLE})
 * when {@link gatherLoopIterations} fits, else segments, each within the budget: groups of whole
 * list entries when one entry fits, else single entries cut into key ranges (a multiple of the
 * variant's step: 4 keys on gpu, 16 on cpu). Segments after the first continue from the partial
 * the previous one left (f32 o and lse, so the launch must write them). `undefined` when not
 * even one step fits (a head dim too large for the device's loop limit).
 *
 * @example
 * gatherSegments(58981, { cpu: false, D: 64, Dv: 64 }, { entries: 3, keys: 4096 }).length; // 3
 */
export function gatherSegments(budget: number, k: { cpu: boolean; D: number; Dv: number }, work: GatherWork): GatherSegment[] | undefined {
  const entries = Math.max(1, work.entries);
  const keys = Math.max(1, work.keys);
  if (gatherLoopIterations(k, { entries, keys }, false) <= budget) return [GATHER_WHOLE];
  const step = k.cpu ? 16 : 4;
  const fixed = gatherLoopIterations(k, { entries: 0, keys }, true);
  const perEntry = gatherLoopIterations(k, { entries: 1, keys }, true) - fixed;
  let E = 1;
  let K = keys;
  if (fixed + perEntry <= budget) {
    E = Math.floor((budget - fixed) / perEntry);
  } else {
    const perStep = 3 + k.D / 4 + k.Dv / 4;
    K = Math.floor((budget - fixed - 4) / perStep) * step;
    if (K < step) return undefined;
  }
  const segs: GatherSegment[] = [];
  for (let e0 = 0; e0 < entries; e0 += E) {
    for (let k0 = 0; k0 < keys; k0 += K) {
      segs.push({ E0: e0, E1: e0 + E, K0: k0, K1: K >= keys ? 0x7fffffff : k0 + K, LOAD: segs.length > 0 ? 1 : 0 });
    }
  }
  return segs;
}

/**
 * The largest {@link gatherLoopIterations} over the launches `segs` of `work`.
 *
 * @example
 * plan.loopIterations = gatherSegmentsIterations({ cpu, D, Dv }, work, segs);
 */
export function gatherSegmentsIterations(k: { cpu: boolean; D: number; Dv: number }, work: GatherWork, segs: readonly GatherSegment[]): number {
  return Math.max(
    ...segs.map((g) =>
      gatherLoopIterations(k, { entries: Math.min(g.E1, Math.max(1, work.entries)) - g.E0, keys: Math.min(g.K1, Math.max(1, work.keys)) - g.K0 }, g.LOAD === 1),
    ),
  );
}

/**
 * {@link gatherSegments} or `E_LIMIT` naming `argument` (the head dim) when nothing fits.
 *
 * @example
 * const segs = gatherSegmentsOrThrow(ctx, { cpu: kernelIsCpu, D, Dv }, { entries: S, keys: BS }, 'D');
 */
export function gatherSegmentsOrThrow(ctx: TesseraDevice, k: { cpu: boolean; D: number; Dv: number }, work: GatherWork, argument = 'D'): GatherSegment[] {
  const budget = loopBudget(ctx);
  const segs = gatherSegments(budget, k, work);
  if (!segs) {
    fail('E_LIMIT', argument, `one step of the sparse attention core (head dims ${k.D}/${k.Dv}) runs more loop iterations than this device allows one invocation (${budget});`, k.D, 'a smaller head dim, or a device with a larger loop limit');
  }
  return segs;
}

/**
 * Tiles of the CPU variant for `NG` groups (0 for the GPU variant). In all-keys mode with groups
 * smaller than a tile, a tile packs 16 / NR tokens of one of the `NGH` groups per token.
 *
 * @example
 * const NTILES = gatherTiles(kernel, T * Hkv, Hkv);
 */
export function gatherTiles(k: GatherKernel, NG: number, NGH = 1): number {
  if (!k.cpu) return 0;
  if (k.mode === 2 && k.NR < GATHER_CPU_TILE && GATHER_CPU_TILE % k.NR === 0) return Math.ceil(NG / NGH / (GATHER_CPU_TILE / k.NR)) * NGH;
  return NG * Math.ceil(k.NR / GATHER_CPU_TILE);
}

/**
 * Dispatch grid for `NG` groups (modes 0-2), `NGH` groups per token.
 *
 * @example
 * pass.dispatchWorkgroups(...gatherGrid(ctx, kernel, T * Hkv, Hkv));
 */
export function gatherGrid(ctx: TesseraDevice, k: GatherKernel, NG: number, NGH = 1): [number, number] {
  return grid2d(ctx, k.cpu ? gatherTiles(k, NG, NGH) : Math.ceil((NG * k.NR) / GATHER_WG));
}

/**
 * Head dims the gather core accepts: multiples of 4 up to 256, and of 8 for 16-bit storage (the
 * kernels read four elements at a time through `array<vec4<u32>>` bindings, which must cover
 * whole 16-byte words).
 *
 * @example
 * const D = checkHeadDim(opts.D, 'D', 'f16'); // throws E_UNSUPPORTED for 18 or 36
 */
export function checkHeadDim(v: number, argument: string, dtype: FloatDType = 'f32'): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 4 || v > 256) fail('E_ARG', argument, 'invalid head dim;', v, 'an integer in [4, 256]');
  if (v % 4 !== 0) fail('E_UNSUPPORTED', argument, 'head dims must be multiples of 4 in the sparse kernels;', v, 'a multiple of 4');
  if (dtype !== 'f32' && v % 8 !== 0) fail('E_UNSUPPORTED', argument, `head dims must be multiples of 8 with ${dtype} storage in the sparse kernels;`, v, 'a multiple of 8');
  return v;
}

/**
 * The outputs of a gather launch split into segments: the partial (o, lse) between segments
 * must be f32, so it lives in the caller's `o` when that is f32 (else an f32 workspace) and in
 * the caller's `lse` when given (else a workspace); {@link GatherStaging.finish} then writes a
 * workspace `o` into the caller's dtype with `kernels/merge` (one part: the values unchanged,
 * rounded once). Rows are `[rows, Dv]` as the kernel writes them (token * Hq + head).
 */
export class GatherStaging {
  private constructor(
    private readonly rows: number,
    private readonly Dv: number,
    private readonly o32?: GPUBuffer,
    private readonly lse32?: GPUBuffer,
    private readonly lseOut?: GPUBuffer,
    private readonly merge?: MergePlan,
  ) {}

  /**
   * `alloc` is the owning plan's workspace allocator (freed with the plan); dispose the staging
   * with the plan too (it owns a merge plan when the output dtype is not f32).
   *
   * @example
   * this.staging = await GatherStaging.create(ctx, (b, l) => this.workspace(b, l), { rows: Tq * Hq, Dv, outDtype });
   */
  static async create(ctx: TesseraDevice, alloc: (bytes: number, label: string) => GPUBuffer, o: { rows: number; Dv: number; outDtype: FloatDType }): Promise<GatherStaging> {
    const { rows, Dv } = o;
    if (o.outDtype === 'f32') return new GatherStaging(rows, Dv, undefined, alloc(rows * 4, 'gather.lse32'));
    checkPlannedSize(ctx, 'o', [rows, Dv], 'f32');
    const merge = await planMerge(ctx, { parts: 1, rows, D: Dv, outDtype: o.outDtype });
    return new GatherStaging(rows, Dv, alloc(rows * Dv * 4, 'gather.o32'), alloc(rows * 4, 'gather.lse32'), alloc(rows * 4, 'gather.lseOut'), merge);
  }

  /** Where the segments write (and read back) their partial. */
  targets(o: GpuTensor, lse?: GpuTensor): { o: BindingResource; lse: BindingResource } {
    return {
      o: this.o32 ? { buffer: this.o32, size: this.rows * this.Dv * 4 } : res(o),
      lse: lse ? res(lse) : { buffer: this.lse32!, size: this.rows * 4 },
    };
  }

  /** After the last segment: the caller's `o` in its dtype (nothing to do when it was f32). */
  finish(encoder: GPUCommandEncoder, o: GpuTensor, lse?: GpuTensor): void {
    if (!this.merge) return;
    this.merge.run(encoder, {
      oParts: { buffer: this.o32!, shape: [1, this.rows, this.Dv], dtype: 'f32' },
      lseParts: lse ? { ...lse, shape: [1, this.rows] } : { buffer: this.lse32!, shape: [1, this.rows], dtype: 'f32' },
      o: { ...o, shape: [this.rows, this.Dv] },
      lse: { buffer: this.lseOut!, shape: [this.rows], dtype: 'f32' },
    });
  }

  dispose(): void {
    this.merge?.dispose();
  }
}
