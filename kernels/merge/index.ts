export {
  planMerge,
  merge,
  MergePlan,
  MERGE_PARAMS,
  getMergePipeline,
  createMergeState,
  mergeStateBytes,
  type MergeOptions,
  type MergeTensors,
  type MergeState,
} from './merge.js';
