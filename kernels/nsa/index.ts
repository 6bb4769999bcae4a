export { planNsa, nsa, NsaPlan, NSA_MAX_BLOCK_COUNT, type NsaOptions, type NsaTensors } from './nsa.js';
export type { NsaVariant } from './reference.js';
