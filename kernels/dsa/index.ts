export { planDsa, dsa, DsaPlan, type DsaOptions, type DsaTensors } from './dsa.js';
