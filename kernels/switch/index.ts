export { planSparseSwitch, sparseSwitch, SwitchPlan, SWITCH_DEFAULTS, type SparseMethod, type SwitchOptions, type SwitchTensors } from './switch.js';
