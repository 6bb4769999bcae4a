export { planMoba, planMobaDecode, moba, MobaPlan, MOBA_MAX_TOPK, type MobaOptions, type MobaTensors } from './moba.js';
export { planMobaVarlen, mobaVarlen, MobaVarlenPlan, type MobaVarlenOptions } from './varlen.js';
