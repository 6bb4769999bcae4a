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
import { getPipeline, grid2d, wgslProgram, type Pipeline, type ShaderSource } from '../../src/gpu/pipeline.js';
import { uniformLayout } from '../../src/gpu/uniforms.js';
import { dtypeCode, type FloatDType } from '../../src/tensor.js';
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
] as const);

export type GatherParamValues = Parameters<typeof GATHER_PARAMS.pack>[0];
/** Defaults for the rarely used fields. */
export const GATHER_DEFAULTS = { T0: 0, S: 0, MB: 0, P: 1, W: 0, KSTRIDE: 1, KOFF: 0, POSOFF: 0, WRITE_LSE: 0, LDIV: 1, KS: 1, NTILES: 0 } as const;

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
  // On CPU adapters the tile variant pays off when rows share keys: list modes need groups of at
  // least 4 rows (MoBA's per-row lists, NSA/DSA with tiny GQA groups take the per-row variant).
  const smallGroups = (s.mode === 0 || s.mode === 1) && s.NR < 4;
  const cpu = s.mode === 3 || s.target === 'cpu' || (gatherUsesCpu(ctx, s.target) && !(smallGroups && (s.target ?? 'auto') === 'auto'));
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
