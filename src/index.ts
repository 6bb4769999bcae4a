/**
 * Tessera: WebGPU kernels for long-context attention. The main entry holds what an application
 * uses: devices, tensors, errors, every plan with its convenience call and their option and tensor
 * types, the KV cache, the page pool and persistence. Lower-level pieces live in the tiers:
 * `tessera/advanced` (pipelines, uniform layouts, loop budgets and cost functions, buffer
 * tracking, timing), `tessera/testing` (comparison, tolerances, seeded RNG) and
 * `tessera/reference` (float64 CPU references). The exported surface is recorded in
 * api/tessera.api.md (`npm run api-report`).
 *
 * The lists below are explicit (no `export *`), so a new export of a kernel module reaches the
 * public API only when it is named here, and the API report shows it.
 *
 * @example
 * import { requestDevice, attention } from 'tessera';
 * const dev = await requestDevice();
 */
export { TesseraError, type TesseraErrorCode, type TesseraErrorDetails } from './errors.js';
export {
  requestDevice,
  wrapDevice,
  adapterFromEnv,
  TesseraDevice,
  DEFAULT_LIMITS,
  type DeviceLike,
  type RequestDeviceOptions,
  type WrapDeviceOptions,
  type TesseraLimits,
  type DeviceFeatures,
  type AdapterClass,
  type MemoryStats,
} from './gpu/device.js';
export {
  type GpuTensor,
  type DType,
  type FloatDType,
  DTYPE_BYTES,
  byteSize,
  numel,
  encode,
  decode,
  roundTo,
  f32ToF16Bits,
  f16BitsToF32,
  f32ToBf16Bits,
  bf16BitsToF32,
} from './tensor.js';
export { planMerge, merge, MergePlan, createMergeState, mergeStateBytes, type MergeOptions, type MergeTensors, type MergeState } from '../kernels/merge/index.js';
export { planTopK, topK, TopKPlan, TOPK_MAX_K, type TopKOptions, type TopKTensors, type TopKCallOptions, type TopKVariant } from '../kernels/topk/index.js';
export {
  planLinearScan,
  LinearScanPlan,
  type LinearScanOptions,
  type LinearScanTensors,
  type ScanMode,
  type GateMode,
  planLinearAttn,
  linearAttn,
  planSimpleGla,
  simpleGla,
  planGla,
  gla,
  retentionPreset,
  lightningPreset,
  type LinearOpOptions,
  type LinearAttnOptions,
  type LinearAttnTensors,
  type SimpleGlaOptions,
  type SimpleGlaTensors,
  type GlaOptions,
  type GlaTensors,
  type ConvenienceOptions,
  GATE_MIN,
  retentionGamma,
  lightningGamma,
  LinearStream,
  type LinearStreamOptions,
  type StreamSegment,
} from '../kernels/linear/index.js';
export { planDeltaRule, deltaRule, planGatedDeltaRule, gatedDeltaRule, planKda, kda, type DeltaOptions, type DeltaRuleTensors, type GatedDeltaTensors } from '../kernels/delta/index.js';
export { planMoba, planMobaDecode, moba, MobaPlan, MOBA_MAX_TOPK, type MobaOptions, type MobaTensors, planMobaVarlen, mobaVarlen, MobaVarlenPlan, type MobaVarlenOptions } from '../kernels/moba/index.js';
export { planNsa, nsa, NsaPlan, NSA_MAX_BLOCK_COUNT, type NsaOptions, type NsaTensors, type NsaVariant, planNsaVarlen, nsaVarlen, NsaVarlenPlan, type NsaVarlenOptions } from '../kernels/nsa/index.js';
export { planBlockSparse, blockSparseAttention, BlockSparsePlan, type BlockSparseOptions, type BlockSparseTensors } from '../kernels/block_sparse/index.js';
export {
  planAttention,
  attention,
  AttentionPlan,
  type AttentionOptions,
  type AttentionTuning,
  type AttentionPlanOptions,
  type AttentionTensors,
  planDecode,
  decodeAttention,
  DecodePlan,
  type DecodeOptions,
  type DecodeTensors,
} from '../kernels/dense/index.js';
export { planSlidingWindow, slidingWindowAttention, planSlidingWindowDecode, type SlidingWindowOptions } from '../kernels/sliding_window/index.js';
export { planDsa, dsa, DsaPlan, type DsaOptions, type DsaTensors, planDsaVarlen, dsaVarlen, DsaVarlenPlan, type DsaVarlenOptions } from '../kernels/dsa/index.js';
export { planSparseSwitch, sparseSwitch, SwitchPlan, SWITCH_DEFAULTS, type SparseMethod, type SwitchOptions, type SwitchTensors } from '../kernels/switch/index.js';
export {
  createKvCache,
  KvCache,
  type KvCacheOptions,
  type KvCacheStats,
  type PageTable,
  type RawRows,
  MemoryStore,
  OpfsStore,
  type Store,
  type MemoryStoreOptions,
  type SyncAccessHandleLike,
  GpuPagePool,
  type SlotLocation,
  KV_DTYPES,
  KV_DTYPE_BYTES,
  pageLayout,
  type KvDType,
  type PageLayout,
  pageCounts,
  persistKvCache,
  openKvCache,
  commitKvCache,
  verifyKvCache,
  manifestOf,
  type PersistOptions,
  type OpenKvCacheOptions,
  MANIFEST_VERSION,
  MemoryManifest,
  OpfsManifest,
  type ManifestStore,
  type Manifest,
} from './kv/index.js';
export {
  planStreamAttention,
  streamAttention,
  StreamAttentionPlan,
  type StreamAttentionOptions,
  type StreamRunOptions,
  type StreamStats,
  planQuestDecode,
  QuestDecodePlan,
  type QuestDecodeOptions,
  type QuestStats,
  planCascadeDecode,
  CascadeDecodePlan,
  sharedPrefixPages,
  questSharedSelection,
  type CascadeOptions,
  type CascadeRunOptions,
  type CascadeStats,
  planSparsePrefill,
  SparsePrefillPlan,
  type SparsePrefillOptions,
  type SparsePrefillRunOptions,
  type SparsePrefillStats,
  createSplitKvCache,
  planSplitDecode,
  SplitDecodePlan,
  SplitKvCache,
  type SplitDecodeStats,
  type SplitKvCacheOptions,
  type SplitRange,
} from './stream/index.js';
export {
  planBatchAttention,
  batchAttention,
  BatchAttentionPlan,
  type BatchAttentionOptions,
  type BatchAttentionTensors,
  type BatchSchedule,
  type ScheduleInfo,
  type ScheduleLayout,
} from '../kernels/attention/index.js';
export { planPaged, PagedPlan, ALL_HEADS, type PagedOptions, type PagedTensors, type PagedCall } from '../kernels/paged/index.js';
export {
  planQuestScore,
  QuestScorePlan,
  type QuestScoreOptions,
  type QuestScoreTensors,
  type QuestScoreCall,
  type QuestScoreMode,
  type GroupReduce,
  planQuestBatch,
  QuestBatchPlan,
  type QuestBatchOptions,
  type QuestBatchTensors,
  type QuestBatchStep,
} from '../kernels/quest/index.js';
export {
  planAppend,
  planRope,
  AppendPlan,
  RopePlan,
  type AppendOptions,
  type AppendTensors,
  type AppendSchedule,
  type RopePlanOptions,
  type RopeTensors,
  type RopeSpec,
  type RopeOptions,
  type RopeStyle,
  ropeCosSinTable,
} from '../kernels/append/index.js';
export { PagePool, createPagePool, type PagePoolOptions, type StepEntry, type StepTables } from './pool/index.js';
