export { planDsa, dsa, DsaPlan, type DsaOptions, type DsaTensors } from './dsa.js';
export { planDsaVarlen, dsaVarlen, DsaVarlenPlan, type DsaVarlenOptions } from './varlen.js';
