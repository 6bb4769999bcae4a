/**
 * THE attention core: a ragged batch of queries against keys named by a CSR table, from pages of
 * one pool buffer or from contiguous ragged K/V; prefill chunks and decode in one kernel.
 *
 * API (stable; later additions only add):
 *
 * - `planBatchAttention(device, options): Promise<BatchAttentionPlan>` compiles once and allocates
 *   the plan's small buffers once. Options ({@link BatchAttentionOptions}):
 *   `source` ('paged' | 'ragged', default 'paged'), capacities `maxBatch`, `maxQTokens` (query
 *   tokens per step, all sequences), `maxPages` (paged: page-table entries per step), `poolPages`
 *   (paged: pages in the pool buffer, default maxPages), `maxKvTokens` (ragged: keys per step),
 *   `maxKvLen` (ragged: keys of the longest sequence, default maxKvTokens);
 *   shapes `Hq`, `Hkv`, `D` (<= 576), `Dv` (<= 512, default D), `pageSize`; dtypes `kvDtype`
 *   (f32/f16/bf16/int8 paged, default f16), `qDtype` (default f32), `oDtype` (default qDtype);
 *   masks `causal` (default true, bottom-right), `earlyQueries` (allow more new queries than keys:
 *   the first n - L see none), `window`, `sinks`, `sinkLogit`; `scale`
 *   (default 1/sqrt(D)); `target` ('auto' | 'cpu' | 'gpu'); `maxSplits`, `kvChunk` (split-K);
 *   `scheduleSlots` (default 4); `rows` (1, 2, 4 or 8 query heads of one token and KV head packed
 *   per invocation/workgroup, sharing each K/V load; default `attentionPackRows` of Hq / Hkv).
 * - `plan.schedule({ qoIndptr [B+1], kvIndptr [B+1], kvIndices [nnz], kvLastPageLen [B] }):
 *   ScheduleInfo` per step: validates (typed errors naming the argument) and writes the tables
 *   into the next slot of the plan's ring with `queue.writeBuffer`; picks split-K parts from the
 *   lengths. Ragged: kvIndptr is cuSeqlens of k/v, no kvIndices/kvLastPageLen.
 * - `plan.run(encoder, { q [T, Hq, D], o [T, Hq, Dv], lse? [T, Hq] f32, pages | k, v,
 *   sinkLogits? [Hq] f32 })` per layer: encodes into the caller's encoder, creates no GPU
 *   buffer, caches bind groups by the buffers bound. Runs keep the schedule that was current when
 *   they were encoded; `schedule()` throws `E_STATE` instead of overwriting a slot that a run
 *   encoded since the last `queue.submit` still binds.
 * - `plan.scheduleLayout` and `plan.useSchedule(buffer)`: a schedule buffer the engine fills on the
 *   GPU itself (same word layout as the plan's slots; dispatches sized for the capacities).
 * - `batchAttention(device, tensors, options & schedule)`: plan + schedule + run + submit + wait.
 * - `pageLayout`, `kvDtypeCode`, `KV_DTYPES`, `KV_DTYPE_BYTES` (page.ts): THE page layout.
 * - `batchAttentionReference`, `readPagedSequence` (reference.ts): float64 references.
 * - `attentionLoopCost`, `attentionKeysPerPart`: the llvmpipe loop-cap sizing (by pack);
 *   `attentionPackRows`: the default pack.
 */
export {
  planBatchAttention,
  batchAttention,
  BatchAttentionPlan,
  CORE_PARAMS,
  ATTENTION_PARTIALS_BYTES,
  attentionLoopCost,
  attentionKeysPerPart,
  attentionListLoopCost,
  attentionProgram,
  attentionPackRows,
  attentionRowsCap,
  ATTENTION_ROWS,
  ATTENTION_WG,
  type BatchAttentionOptions,
  type BatchAttentionTensors,
  type BatchSchedule,
  type ScheduleInfo,
  type ScheduleLayout,
} from './attention.js';
export { pageLayout, kvDtypeCode, KV_DTYPES, KV_DTYPE_BYTES, type KvDType, type PageLayout } from './page.js';
export { batchAttentionReference, readPagedSequence, type BatchReferenceOptions } from './reference.js';
