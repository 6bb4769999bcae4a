export { planMoba, planMobaDecode, moba, MobaPlan, MOBA_MAX_TOPK, type MobaOptions, type MobaTensors } from './moba.js';
