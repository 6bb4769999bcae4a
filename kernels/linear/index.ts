export {
  planLinearScan,
  LinearScanPlan,
  checkGateValues,
  resolveScanOptions,
  CHUNK,
  LIN_PARAMS,
  type LinearScanOptions,
  type LinearScanTensors,
  type ScanMode,
  type GateMode,
} from './scan.js';
export {
  planLinearAttn,
  linearAttn,
  planSimpleGla,
  simpleGla,
  planGla,
  gla,
  retentionPreset,
  lightningPreset,
  type LinearOpOptions,
  type LinearAttnOptions,
  type LinearAttnTensors,
  type SimpleGlaOptions,
  type SimpleGlaTensors,
  type GlaOptions,
  type GlaTensors,
  type ConvenienceOptions,
} from './ops.js';
export { GATE_MIN, retentionGamma, lightningGamma } from './reference.js';
export { LinearStream, type LinearStreamOptions, type StreamSegment } from './stream.js';
