export {
  planStreamAttention,
  streamAttention,
  StreamAttentionPlan,
  type StreamAttentionOptions,
  type StreamRunOptions,
  type StreamStats,
} from './exact.js';
export { planQuestDecode, QuestDecodePlan, type QuestDecodeOptions, type QuestStats } from './quest.js';
export {
  planCascadeDecode,
  CascadeDecodePlan,
  sharedPrefixPages,
  questSharedSelection,
  type CascadeOptions,
  type CascadeRunOptions,
  type CascadeStats,
} from './cascade.js';
export {
  planSparsePrefill,
  SparsePrefillPlan,
  type SparsePrefillOptions,
  type SparsePrefillRunOptions,
  type SparsePrefillStats,
} from './prefill.js';
export {
  createSplitKvCache,
  planSplitDecode,
  SplitDecodePlan,
  SplitKvCache,
  type SplitDecodeStats,
  type SplitKvCacheOptions,
  type SplitRange,
} from './split.js';
export { LinearStream, type LinearStreamOptions, type StreamSegment } from './linear.js';
export {
  planSparseSwitch,
  sparseSwitch,
  SwitchPlan,
  SWITCH_DEFAULTS,
  type SparseMethod,
  type SwitchOptions,
  type SwitchTensors,
} from './switch.js';
