/**
 * `tessera/advanced`: the pieces below the plans, for code that writes its own kernels or tunes
 * Tessera's: the pipeline cache and WGSL program assembly, the uniform layouts the kernels use,
 * the per-invocation loop budget of CPU adapters with each kernel's loop-cost function, buffer
 * tracking, GPU timing, the `KernelPlan` base class, and per-family choices the plans make
 * themselves (kernel variants, chunk sizes, page formats). These may change between minor
 * versions; the main entry `tessera` is the stable surface.
 *
 * @example
 * import { getPipeline, compileTimeMs, loopBudget } from 'tessera/advanced';
 */
export {
  GALLIVM_LOOP_LIMIT,
  adapterLoopLimit,
  loopBudget,
  type BufferTracking,
  checkBuffer,
  bufferProblem,
} from './gpu/device.js';
export {
  getPipeline,
  pipelineKey,
  compileTimeMs,
  wgslProgram,
  type PipelineSpec,
  type ShaderSource,
  bindGroup,
  pipelineShader,
  type Pipeline,
  type PipelineBindings,
  type ResourcesFor,
  type TablePipeline,
} from './gpu/pipeline.js';
export {
  bindingTable,
  optional,
  type BindingTable,
  type BindingVariant,
  type BindingResources,
  type VariantOf,
} from './gpu/bindings.js';
export { wgslConstants, type WgslConstants, type ConstType } from './gpu/specialize.js';
export { GpuTimer, type TimingSource } from './gpu/timer.js';
export { KernelPlan } from './plan.js';
export { MERGE_PARAMS, getMergePipeline, type MergePipeline } from '../kernels/merge/index.js';
export {
  chooseTopKVariant,
  TOPK_SMALL_MAX_K,
  TOPK_SMALL_MAX_N,
  TOPK_PARAMS,
  TOPK_SMALL_PARAMS,
} from '../kernels/topk/index.js';
export { checkGateValues, resolveScanOptions, CHUNK, LIN_PARAMS } from '../kernels/linear/index.js';
export { defaultKvChunk } from '../kernels/dense/index.js';
export { denseGoldenHandler } from './verify/golden/dense.js';
export { kvDtypeCode, hash32, encodeManifest, decodeManifest } from './kv/index.js';
export {
  CORE_PARAMS,
  ATTENTION_PARTIALS_BYTES,
  attentionLoopCost,
  attentionKeysPerPart,
  attentionListLoopCost,
  attentionProgram,
  ATTENTION_WG,
} from '../kernels/attention/index.js';
export { PAGED_PARAMS, PAGED_ENTRY_WORDS } from '../kernels/paged/index.js';
export {
  QUEST_PARAMS,
  QUEST_BATCH_PARAMS,
  questBatchLoopIterations,
  QUEST_BLOCK_PARAMS,
  questBlockLoopIterations,
} from '../kernels/quest/index.js';
export { APPEND_PARAMS } from '../kernels/append/index.js';
