/**
 * The gathered-block attention core (`gather.wgsl`) shared by block_sparse, MoBA, NSA and DSA:
 * pipelines, the uniform layout and the host-side parameter computation. Internal to the sparse
 * families; the public entry points are the families' plan functions.
 */
import { fail } from '../../src/errors.js';
import type { TesseraDevice } from '../../src/gpu/device.js';
import { getPipeline, wgslProgram, type Pipeline, type ShaderSource } from '../../src/gpu/pipeline.js';
import { uniformLayout } from '../../src/gpu/uniforms.js';
import { dtypeCode, type FloatDType } from '../../src/tensor.js';
import storageWgsl from '../../shaders/storage.wgsl.js';
import unpackWgsl from '../../shaders/unpack4.wgsl.js';
import gatherWgsl from './gather.wgsl.js';

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
] as const);

export type GatherParamValues = Parameters<typeof GATHER_PARAMS.pack>[0];

/** Head-dim capacity tiers (vec4 slots of the private q / accumulator arrays). */
export function headDimTier(D: number, Dv: number): number {
  const m = Math.max(D, Dv);
  return m <= 64 ? 16 : m <= 128 ? 32 : 64;
}

const programs = new Map<number, ShaderSource>();
function program(tier: number): ShaderSource {
  let p = programs.get(tier);
  if (!p) {
    const header = `const MAXD4: u32 = ${tier}u;\nconst MAXDV4: u32 = ${tier}u;\n`;
    p = wgslProgram(`block_sparse/gather-d${tier * 4}`, [storageWgsl, unpackWgsl, GATHER_PARAMS.wgsl, header, gatherWgsl]);
    programs.set(tier, p);
  }
  return p;
}

export interface GatherSpec {
  mode: 0 | 1 | 2;
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
}

export const GATHER_WG = 64;

/** The compiled gather pipeline for a specialisation (cached per device). */
export function gatherPipeline(ctx: TesseraDevice, s: GatherSpec): Promise<Pipeline> {
  return getPipeline(ctx, {
    shader: program(headDimTier(s.D, s.Dv)),
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
}

/** Workgroup count for `NG` groups of `NR` rows. */
export function gatherWorkgroups(NG: number, NR: number): number {
  return Math.ceil((NG * NR) / GATHER_WG);
}

/** Head dims the gather core accepts: multiples of 4 up to 256. */
export function checkHeadDim(v: number, argument: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 4 || v > 256) fail('E_ARG', argument, 'invalid head dim;', v, 'an integer in [4, 256]');
  if (v % 4 !== 0) fail('E_UNSUPPORTED', argument, 'head dims must be multiples of 4 in the sparse kernels;', v, 'a multiple of 4');
  return v;
}
