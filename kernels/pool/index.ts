export { planPageOps, PageOpsPlan, type PageOpsOptions, type PageOpsTensors } from './ops.js';
