export { planMerge, merge, MergePlan, MERGE_PARAMS, getMergePipeline, type MergeOptions, type MergeTensors } from './merge.js';
