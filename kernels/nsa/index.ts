export { planNsa, nsa, NsaPlan, NSA_MAX_BLOCK_COUNT, type NsaOptions, type NsaTensors } from './nsa.js';
export type { NsaVariant } from './reference.js';
export { planNsaVarlen, nsaVarlen, NsaVarlenPlan, type NsaVarlenOptions } from './varlen.js';
