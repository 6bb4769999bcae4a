export {
  planDeltaRule,
  deltaRule,
  planGatedDeltaRule,
  gatedDeltaRule,
  planKda,
  kda,
  type DeltaOptions,
  type DeltaRuleTensors,
  type GatedDeltaTensors,
} from './ops.js';
