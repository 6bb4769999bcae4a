export {
  planAppend,
  planRope,
  AppendPlan,
  RopePlan,
  APPEND_PARAMS,
  type AppendOptions,
  type AppendTensors,
  type RopePlanOptions,
  type RopeTensors,
  type RopeSpec,
} from './append.js';
export {
  ropeReference,
  ropeFrequencies,
  ropeCosSinTable,
  appendReference,
  pageSummaryReference,
  f16Bound,
  type RopeOptions,
  type RopeStyle,
  type AppendSchedule,
} from './reference.js';
