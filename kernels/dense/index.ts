/**
 * Dense flash attention (prefill and split-K decode), with causal/bottom-right masks, GQA,
 * sliding windows with sink tokens and per-head sink logits. See README.md in this folder.
 */
export {
  planAttention,
  attention,
  AttentionPlan,
  type AttentionPlanOptions,
  type AttentionTensors,
} from './prefill.js';
export type { AttentionOptions, AttentionTuning } from './options.js';
export { attentionReference, keyVisible, type AttentionReferenceOptions } from './reference.js';
export {
  planDecode,
  decodeAttention,
  DecodePlan,
  defaultKvChunk,
  type DecodeOptions,
  type DecodeTensors,
} from './decode.js';
