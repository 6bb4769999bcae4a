export { planMerge, merge, MergePlan, MERGE_PARAMS, type MergeOptions, type MergeTensors } from './merge.js';
