/**
 * Tessera: WebGPU kernels for long-context attention.
 *
 * @example
 * import { requestDevice, attention } from 'tessera';
 * const dev = await requestDevice();
 */
export { TesseraError, type TesseraErrorCode, type TesseraErrorDetails } from './errors.js';
export {
  requestDevice,
  wrapDevice,
  adapterFromEnv,
  TesseraDevice,
  DEFAULT_LIMITS,
  GALLIVM_LOOP_LIMIT,
  adapterLoopLimit,
  loopBudget,
  type DeviceLike,
  type RequestDeviceOptions,
  type WrapDeviceOptions,
  type BufferTracking,
  checkBuffer,
  bufferProblem,
  type TesseraLimits,
  type DeviceFeatures,
  type AdapterClass,
  type MemoryStats,
} from './gpu/device.js';
export { getPipeline, pipelineKey, compileTimeMs, wgslProgram, type PipelineSpec, type ShaderSource } from './gpu/pipeline.js';
export { GpuTimer, type TimingSource } from './gpu/timer.js';
export { KernelPlan } from './plan.js';
export {
  type GpuTensor,
  type DType,
  type FloatDType,
  DTYPE_BYTES,
  byteSize,
  numel,
  encode,
  decode,
  roundTo,
  f32ToF16Bits,
  f16BitsToF32,
  f32ToBf16Bits,
  bf16BitsToF32,
} from './tensor.js';
export { compare, passes, TOLERANCE, Rng, type Comparison, type Tolerance } from './testing.js';
export * from '../kernels/merge/index.js';
export * from '../kernels/topk/index.js';
export * from '../kernels/linear/index.js';
export * from '../kernels/delta/index.js';
export * from '../kernels/moba/index.js';
export * from '../kernels/nsa/index.js';
export * from '../kernels/block_sparse/index.js';
export * from '../kernels/dense/index.js';
export * from '../kernels/sliding_window/index.js';
export * from '../kernels/dsa/index.js';
export * from '../kernels/switch/index.js';
export * from './kv/index.js';
export * from './stream/index.js';
export * from '../kernels/attention/index.js';
export * from '../kernels/paged/index.js';
export * from '../kernels/quest/index.js';
export * from '../kernels/append/index.js';
export * from '../kernels/pool/index.js';
export * from './pool/index.js';
