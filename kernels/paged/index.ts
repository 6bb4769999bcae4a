export {
  planPaged,
  PagedPlan,
  PAGED_PARAMS,
  PAGED_ENTRY_WORDS,
  ALL_HEADS,
  type PagedOptions,
  type PagedTensors,
  type PagedCall,
} from './paged.js';
