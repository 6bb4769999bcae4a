export {
  planMerge,
  merge,
  MergePlan,
  MERGE_PARAMS,
  getMergePipeline,
  type MergePipeline,
  createMergeState,
  mergeStateBytes,
  type MergeOptions,
  type MergeTensors,
  type MergeState,
} from './merge.js';
