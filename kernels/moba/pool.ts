/**
 * Block mean pooling (`pool.wgsl`), shared by MoBA (gate keys) and NSA (compressed keys and
 * values). Internal.
 */
import type { TesseraDevice } from '../../src/gpu/device.js';
import { getPipeline, wgslProgram, type Pipeline } from '../../src/gpu/pipeline.js';
import { uniformLayout } from '../../src/gpu/uniforms.js';
import { dtypeCode, type FloatDType } from '../../src/tensor.js';
import storageWgsl from '../../shaders/storage.wgsl.js';
import unpackWgsl from '../../shaders/unpack4.wgsl.js';
import poolWgsl from './pool.wgsl.js';

export const POOL_PARAMS = uniformLayout('PoolParams', [
  ['T', 'u32'],
  ['H', 'u32'],
  ['D', 'u32'],
  ['BS', 'u32'],
  ['NB', 'u32'],
] as const);

const PROGRAM = wgslProgram('moba/pool', [storageWgsl, unpackWgsl, POOL_PARAMS.wgsl, poolWgsl]);
export const POOL_WG = 64;

/**
 * `divisor`: `count` = mean over the block's real tokens, `blockSize` = sum / block size.
 *
 * @example
 * const p = await poolPipeline(ctx, 'f32', 'count');
 */
export function poolPipeline(ctx: TesseraDevice, inDtype: FloatDType, divisor: 'count' | 'blockSize'): Promise<Pipeline> {
  return getPipeline(ctx, {
    shader: PROGRAM,
    bindings: ['read', 'rw', 'uniform'],
    constants: { WG: POOL_WG, IN_DTYPE: dtypeCode(inDtype), DIV_MODE: divisor === 'count' ? 0 : 1 },
  });
}

/**
 * Workgroups of a pooling dispatch over `NB` blocks, `H` heads, `D` channels.
 *
 * @example
 * grid2d(ctx, poolWorkgroups(NB, Hkv, D));
 */
export function poolWorkgroups(NB: number, H: number, D: number): number {
  return Math.ceil((NB * H * (D / 4)) / POOL_WG);
}
