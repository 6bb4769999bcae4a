/**
 * Block mean pooling (`pool.wgsl`), shared by MoBA (gate keys) and NSA (compressed keys and
 * values). Internal.
 */
import { wgslProgram, type Pipeline, type PipelineSpec } from '../../src/gpu/pipeline.js';
import { bindingTable, registerPasses, type VariantOf } from '../../src/gpu/bindings.js';
import { uniformLayout } from '../../src/gpu/uniforms.js';
import { loops, segment, SEGMENT_FIELDS, type Segment } from '../../src/gpu/segments.js';
import { dtypeCode, type FloatDType } from '../../src/tensor.js';
import storageWgsl from '../../shaders/storage.wgsl.js';
import unpackWgsl from '../../shaders/unpack4.wgsl.js';
import poolWgsl from './pool.wgsl.js';
import poolCoreWgsl from './pool_core.wgsl.js';

export const POOL_PARAMS = uniformLayout('PoolParams', [
  ['T', 'u32'],
  ['H', 'u32'],
  ['D', 'u32'],
  ['BS', 'u32'],
  ['NB', 'u32'],
  // segment: tokens [seg_begin, seg_end) of every block, added to the running sum left in out
  // (seg_carry) and divided by the last segment (seg_last; see poolSegments)
  ...SEGMENT_FIELDS,
] as const);

export const POOL_PROGRAM = wgslProgram('moba/pool', [
  storageWgsl,
  unpackWgsl,
  POOL_PARAMS.wgsl,
  poolWgsl,
  poolCoreWgsl,
]);
export const POOL_WG = 64;

/**
 * The pooling's bindings (src/gpu/bindings.ts): bind by name with
 * `bindGroup(ctx, await getPipeline(ctx, poolSpec(...)), { x_buf, out, params })` (MoBA and NSA).
 */
export const POOL_BINDINGS = bindingTable('moba/pool', { x_buf: 'read', out: 'rw', params: 'uniform' });

/** A pooling pipeline (bound by name: `{ x_buf, out, params }`). */
export type PoolPipeline = Pipeline<VariantOf<typeof POOL_BINDINGS>>;

/**
 * The pooling pipeline's spec with the named binding table. `divisor`: `count` = mean over the
 * block's real tokens, `blockSize` = sum / block size.
 *
 * @example
 * const p = await getPipeline(ctx, poolSpec('f32', 'count'));
 */
export function poolSpec(
  inDtype: FloatDType,
  divisor: 'count' | 'blockSize',
): PipelineSpec<VariantOf<typeof POOL_BINDINGS>> {
  return { shader: POOL_PROGRAM, bindings: POOL_BINDINGS.variant({}), constants: poolConstants(inDtype, divisor) };
}
registerPasses('moba/pool', () => [poolSpec('f32', 'count'), poolSpec('bf16', 'blockSize')]);

function poolConstants(inDtype: FloatDType, divisor: 'count' | 'blockSize') {
  return { WG: POOL_WG, IN_DTYPE: dtypeCode(inDtype), DIV_MODE: divisor === 'count' ? 0 : 1 };
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

/**
 * Upper bound of the loop iterations one pooling invocation runs over `tokens` tokens of its block
 * (segment), in the counting rules of src/gpu/segments.ts (`loops`): the token loop and the early
 * return. Unsegmented that is min(blockSize, T) + 2: over 65,535 only for MoBA blocks past 64K
 * tokens (its blockSize goes to 2^20).
 *
 * @example
 * poolLoopIterations(4096); // 4098
 */
export function poolLoopIterations(tokens: number): number {
  return loops.ret + loops.loop(tokens);
}

/**
 * The pooling dispatches under loop cap `limit` (`segment()` of src/gpu/segments.ts): one for whole
 * blocks when a block fits, else segments of the block's tokens, the running sum carried in the
 * output (same order of additions, so the same result).
 *
 * @example
 * poolSegments(65535, 1 << 20, 1 << 20).length; // 18 on llvmpipe
 */
export function poolSegments(limit: number, blockSize: number, T: number, extra = 0): readonly Segment[] {
  const len = Math.min(blockSize, T);
  const s = segment(len, (n) => poolLoopIterations(n) + extra, limit, {
    op: 'pool',
    what: 'one token of a block mean',
    argument: 'loopLimit',
    actual: limit,
    expected: 'a larger loop limit',
  });
  return s.segments;
}
