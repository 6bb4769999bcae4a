/**
 * Float64 CPU references: the definition of every kernel's math (`tessera/reference`).
 */
export { mergeReference } from '../kernels/merge/reference.js';
export { topKReference } from '../kernels/topk/reference.js';
export {
  linearScanReference,
  linearAttnReference,
  simpleGlaReference,
  glaReference,
  retentionGamma,
  lightningGamma,
  GATE_MIN,
  type GateMode,
  type LinearScanRefOptions,
  type LinearScanRefInputs,
  type LinearScanRefResult,
} from '../kernels/linear/reference.js';
export { deltaRuleReference, gatedDeltaRuleReference, kdaReference } from '../kernels/delta/reference.js';
export { mobaReference, mobaBlockMeansReference, type MobaReferenceOptions } from '../kernels/moba/reference.js';
export { nsaReference, type NsaReferenceOptions, type NsaVariant } from '../kernels/nsa/reference.js';
export { blockSparseReference, type BlockSparseReferenceOptions } from '../kernels/block_sparse/reference.js';
export { attentionReference, keyVisible, type AttentionReferenceOptions } from '../kernels/dense/reference.js';
export { slidingWindowReference } from '../kernels/sliding_window/reference.js';
export { dsaReference, dsaIndexerReference, type DsaReferenceOptions } from '../kernels/dsa/reference.js';
export { streamAttentionReference, type AttnRefOptions } from '../kernels/paged/reference.js';
export { questScoresReference, questSelectReference, type QuestRefOptions } from '../kernels/quest/reference.js';
export {
  batchAttentionReference,
  readPagedSequence,
  type BatchReferenceOptions,
} from '../kernels/attention/reference.js';
export { questBatchReference } from '../kernels/quest/batch.js';
export { questBlockScoresReference } from '../kernels/quest/reference.js';
export {
  ropeReference,
  ropeFrequencies,
  appendReference,
  pageSummaryReference,
  f16Bound,
} from '../kernels/append/reference.js';
