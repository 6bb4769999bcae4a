export { planMerge, merge, MergePlan, MERGE_PARAMS, createMergeState, mergeStateBytes, type MergeOptions, type MergeTensors, type MergeState } from './merge.js';
