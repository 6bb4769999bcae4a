/**
 * Block pooling over a ragged batch in one dispatch (`varlen_pool.wgsl`), shared by the varlen
 * plans of MoBA (gate keys) and NSA (compressed keys and values): each sequence's blocks start at
 * its first token and are numbered after the previous sequence's. Internal.
 */
import type { TesseraDevice } from '../../src/gpu/device.js';
import { getPipeline, wgslProgram, type Pipeline, type PipelineSpec } from '../../src/gpu/pipeline.js';
import { bindingTable, registerPasses, type VariantOf } from '../../src/gpu/bindings.js';
import { dtypeCode, type FloatDType } from '../../src/tensor.js';
import storageWgsl from '../../shaders/storage.wgsl.js';
import unpackWgsl from '../../shaders/unpack4.wgsl.js';
import { POOL_PARAMS, POOL_WG } from './pool.js';
import poolWgsl from './varlen_pool.wgsl.js';
import poolCoreWgsl from './pool_core.wgsl.js';
import raggedSeqWgsl from '../../shaders/ragged_seq.wgsl.js';
import raggedTableWgsl from '../../shaders/ragged_table.wgsl.js';

const PROGRAM = wgslProgram('moba/varlen_pool', [
  storageWgsl,
  unpackWgsl,
  POOL_PARAMS.wgsl,
  poolWgsl,
  raggedTableWgsl,
  raggedSeqWgsl,
  poolCoreWgsl,
]);

/** The batched pooling's bindings (src/gpu/bindings.ts); `seqs` is the table of {@link raggedBlocks}. */
const RAGGED_POOL = bindingTable('moba/varlen_pool', { x_buf: 'read', out: 'rw', params: 'uniform', seqs: 'read' });
/** A batched pooling pipeline (bound by name: `{ x_buf, out, params, seqs }`). */
export type RaggedPoolPipeline = Pipeline<VariantOf<typeof RAGGED_POOL>>;

function raggedPoolSpec(
  inDtype: FloatDType,
  divisor: 'count' | 'blockSize',
): PipelineSpec<VariantOf<typeof RAGGED_POOL>> {
  return {
    shader: PROGRAM,
    bindings: RAGGED_POOL.variant({}),
    constants: { WG: POOL_WG, IN_DTYPE: dtypeCode(inDtype), DIV_MODE: divisor === 'count' ? 0 : 1 },
  };
}
registerPasses('moba/varlen_pool', () => [raggedPoolSpec('f32', 'count'), raggedPoolSpec('bf16', 'blockSize')]);

/** A non-empty sequence of a batch and the global index of its first block. */
export interface RaggedBlocks {
  start: number;
  len: number;
  blk0: number;
}

/**
 * The non-empty sequences with their first blocks, the batch's block count and the table the
 * batched kernels read (`[n, then start, len, blk0, 0 per sequence]`, u32).
 *
 * @example
 * raggedBlocks([{ start: 0, len: 300 }, { start: 300, len: 0 }, { start: 300, len: 70 }], 64).NB; // 5 + 2
 */
export function raggedBlocks(
  seqs: readonly { start: number; len: number }[],
  blockSize: number,
): { seqs: RaggedBlocks[]; NB: number; table: Uint32Array<ArrayBuffer> } {
  const out: RaggedBlocks[] = [];
  let NB = 0;
  for (const s of seqs)
    if (s.len > 0) {
      out.push({ start: s.start, len: s.len, blk0: NB });
      NB += Math.ceil(s.len / blockSize);
    }
  const table = new Uint32Array(1 + 4 * out.length);
  table[0] = out.length;
  out.forEach((s, i) => table.set([s.start, s.len, s.blk0, 0], 1 + 4 * i));
  return { seqs: out, NB, table };
}

/**
 * The batched pooling pipeline; bound by name: `x_buf`, `out` `[NB, H, D]` f32, `params`
 * (POOL_PARAMS, NB = the batch's blocks), `seqs` (the table of {@link raggedBlocks}). `divisor` as `poolSpec`.
 *
 * @example
 * const p = await raggedPoolPipeline(ctx, 'f32', 'count');
 */
export function raggedPoolPipeline(
  ctx: TesseraDevice,
  inDtype: FloatDType,
  divisor: 'count' | 'blockSize',
): Promise<RaggedPoolPipeline> {
  return getPipeline(ctx, raggedPoolSpec(inDtype, divisor));
}
