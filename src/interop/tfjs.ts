/**
 * TensorFlow.js interop (`tessera/tfjs`): run Tessera kernels on tensors of TensorFlow.js's
 * WebGPU backend and hand the results back as TensorFlow.js tensors, on TensorFlow.js's own
 * `GPUDevice`, with no readback in between.
 *
 * - {@link tfjsDevice}: the backend's `GPUDevice` wrapped as a Tessera device (`wrapDevice`), so
 *   Tessera's buffers, pipelines and TensorFlow.js's tensors live on one device.
 * - {@link fromTfjs}: a tensor's GPU buffer (`tensor.dataToGPU()`) as a {@link GpuTensor}; release
 *   it when done (that disposes TensorFlow.js's reference, which keeps the buffer alive).
 * - {@link toTfjs}: a Tessera output buffer as a TensorFlow.js tensor,
 *   `tf.tensor({ buffer, zeroCopy: true }, shape, dtype)`: the tensor aliases the buffer, so
 *   the buffer must stay alive (not destroyed) while the tensor is used; with `zeroCopy: false`
 *   TensorFlow.js copies it on the GPU and the buffer may be freed right away.
 *
 * TensorFlow.js is not a dependency: pass your `tf` module. Call {@link prepareTfjs} once after
 * `tf.setBackend('webgpu')`: it turns `WEBGPU_CPU_FORWARD` off, without which TensorFlow.js
 * computes tiny tensors on the CPU and `dataToGPU()` then has to upload them first.
 * In Node, `@tensorflow/tfjs-backend-webgpu` registers only if `globalThis.navigator.gpu` exists
 * when it is imported: create it from the `webgpu` package first (see docs/browser.md).
 *
 * @example
 * import * as tf from '@tensorflow/tfjs-core';
 * import '@tensorflow/tfjs-backend-webgpu';
 * import { tfjsDevice, fromTfjs, toTfjs, prepareTfjs } from 'tessera/tfjs';
 * import { merge } from 'tessera';
 * await tf.setBackend('webgpu'); prepareTfjs(tf);
 * const dev = tfjsDevice(tf);
 * const oParts = fromTfjs(tf, oPartsTensor), lseParts = fromTfjs(tf, lsePartsTensor);
 * const o = dev.createBuffer({ size: rows * D * 4, usage: TFJS_BUFFER_USAGE });
 * const lse = dev.createBuffer({ size: rows * 4, usage: TFJS_BUFFER_USAGE });
 * await merge(dev, { oParts: oParts.tensor, lseParts: lseParts.tensor, o: { buffer: o, shape: [rows, D], dtype: 'f32' }, lse: { buffer: lse, shape: [rows], dtype: 'f32' } });
 * oParts.release(); lseParts.release();
 * const oT = toTfjs(tf, { buffer: o, shape: [rows, D], dtype: 'f32' });   // a tf.Tensor, no readback
 */
import { TesseraError, fail } from '../errors.js';
import { wrapDevice, type TesseraDevice } from '../gpu/device.js';
import { byteSize, type DType, type GpuTensor } from '../tensor.js';

/** The parts of a TensorFlow.js tensor this module uses. */
export interface TfjsTensorLike {
  dataId?: object;
  shape: number[];
  dtype: string;
  dataToGPU(options?: unknown): {
    tensorRef: { dispose(): void };
    buffer?: GPUBuffer;
    bufSize?: number;
    texture?: unknown;
  };
  dispose(): void;
}

/** The parts of the TensorFlow.js module (`import * as tf from '@tensorflow/tfjs-core'`) used. */
export interface TfjsLike {
  backend(): unknown;
  getBackend(): string | undefined | null;
  env(): { set(flag: string, value: unknown): void; get?(flag: string): unknown };
  tensor(values: unknown, shape?: number[], dtype?: string): unknown;
}

/** Usage flags a buffer needs to be both a Tessera output and a TensorFlow.js zero-copy input. */
export const TFJS_BUFFER_USAGE = 0x0080 | 0x0004 | 0x0008; // STORAGE | COPY_SRC | COPY_DST

const TF_TO_TESSERA: Record<string, DType> = { float32: 'f32', int32: 'i32' };
const TESSERA_TO_TF: Partial<Record<DType, string>> = { f32: 'float32', i32: 'int32' };

function requireWebGpuBackend(tf: TfjsLike): { device: GPUDevice } {
  if (!tf || typeof tf.backend !== 'function')
    fail(
      'E_ARG',
      'tf',
      'is not the TensorFlow.js module;',
      typeof tf,
      "the module from import * as tf from '@tensorflow/tfjs-core'",
    );
  const name = tf.getBackend();
  const be = tf.backend() as { device?: GPUDevice } | undefined;
  if (name !== 'webgpu' || !be?.device || typeof be.device.createBuffer !== 'function') {
    throw new TesseraError(
      'E_UNSUPPORTED',
      `TensorFlow.js backend is "${name}"; Tessera interop needs the WebGPU backend`,
      {
        argument: 'tf',
        actual: name,
        expected: "await tf.setBackend('webgpu') (import '@tensorflow/tfjs-backend-webgpu' first)",
      },
    );
  }
  return be as { device: GPUDevice };
}

/**
 * Turns off TensorFlow.js's CPU forwarding of tiny tensors (`WEBGPU_CPU_FORWARD`), so that every
 * tensor lives on the GPU and `dataToGPU()` never uploads. Call once after `setBackend('webgpu')`.
 *
 * @example
 * await tf.setBackend('webgpu'); prepareTfjs(tf);
 */
export function prepareTfjs(tf: TfjsLike): void {
  requireWebGpuBackend(tf);
  tf.env().set('WEBGPU_CPU_FORWARD', false);
}

/**
 * TensorFlow.js's `GPUDevice` as a Tessera device (the same context every call: pipelines are
 * cached on it). Tessera never destroys this device.
 *
 * @example
 * const dev = tfjsDevice(tf);
 * const plan = await planTopK(dev, { rows, n, k });
 */
export function tfjsDevice(tf: TfjsLike): TesseraDevice {
  return wrapDevice(requireWebGpuBackend(tf).device);
}

/** A TensorFlow.js tensor's GPU buffer as a Tessera tensor, plus its release. */
export interface TfjsGpuView {
  tensor: GpuTensor;
  /** Disposes TensorFlow.js's reference that keeps the buffer alive. Call after the GPU work is encoded/submitted. */
  release(): void;
}

/**
 * The GPU buffer of a TensorFlow.js WebGPU tensor (`dataToGPU()`, no readback) as a
 * {@link GpuTensor} of the same shape; float32 -> f32, int32 -> i32.
 *
 * @example
 * const q = fromTfjs(tf, qTensor);   // q.tensor: { buffer, shape, dtype: 'f32' }
 * plan.run(encoder, { q: q.tensor, ... });
 * device.queue.submit([encoder.finish()]); q.release();
 */
export function fromTfjs(tf: TfjsLike, t: TfjsTensorLike, argument = 'tensor'): TfjsGpuView {
  requireWebGpuBackend(tf);
  if (!t || typeof t.dataToGPU !== 'function')
    fail('E_ARG', argument, 'is not a TensorFlow.js tensor;', typeof t, 'a tf.Tensor');
  const dtype = TF_TO_TESSERA[t.dtype];
  if (!dtype) fail('E_DTYPE', `${argument}.dtype`, 'has no Tessera storage dtype;', t.dtype, 'float32 or int32');
  // A tensor made from host values stays on the CPU until an op needs it; dataToGPU() refuses
  // those, so upload it first (a host-to-GPU copy, not a readback).
  const be = tf.backend() as { uploadToGPU?: (dataId: object) => void };
  if (t.dataId && typeof be.uploadToGPU === 'function') be.uploadToGPU(t.dataId);
  // dataToGPU() copies the tensor into a fresh buffer and submits TensorFlow.js's pending work,
  // so the copy is complete before any Tessera submit that follows.
  const d = t.dataToGPU();
  if (!d.buffer) {
    d.tensorRef.dispose();
    throw new TesseraError(
      'E_UNSUPPORTED',
      `${argument}: dataToGPU() returned a texture, not a GPUBuffer (is the backend webgpu?)`,
      { argument },
    );
  }
  const shape = [...t.shape];
  const need = byteSize(shape, dtype);
  if (d.buffer.size < need) {
    d.tensorRef.dispose();
    fail('E_BUFFER', `${argument}.buffer`, 'is smaller than the tensor;', d.buffer.size, `at least ${need} bytes`);
  }
  return { tensor: { buffer: d.buffer, shape, dtype }, release: () => d.tensorRef.dispose() };
}

export interface ToTfjsOptions {
  /**
   * `true` (default): the TensorFlow.js tensor aliases the buffer (no copy); keep the buffer
   * alive while the tensor is in use, and destroy it yourself after disposing the tensor.
   * `false`: TensorFlow.js copies the buffer on the GPU, and you may destroy it at once.
   */
  zeroCopy?: boolean;
}

/**
 * A Tessera result as a TensorFlow.js tensor, with no readback: `tf.tensor({buffer, zeroCopy},
 * shape, dtype)`. The buffer must come from TensorFlow.js's device ({@link tfjsDevice}) with
 * usage {@link TFJS_BUFFER_USAGE} and offset 0.
 *
 * @example
 * const oT = toTfjs(tf, o) as tf.Tensor2D;   // then use oT in TensorFlow.js ops
 */
export function toTfjs(tf: TfjsLike, t: GpuTensor, opts: ToTfjsOptions = {}): unknown {
  requireWebGpuBackend(tf);
  const dtype = TESSERA_TO_TF[t?.dtype];
  if (!t || !t.buffer) fail('E_ARG', 'tensor', 'is not a tensor;', typeof t, '{ buffer, shape, dtype }');
  if (!dtype) fail('E_DTYPE', 'tensor.dtype', 'has no TensorFlow.js dtype;', t.dtype, 'f32 or i32');
  if ((t.offset ?? 0) !== 0) fail('E_ARG', 'tensor.offset', 'must be 0 for TensorFlow.js;', t.offset, '0');
  const need = byteSize(t.shape, t.dtype);
  if (t.buffer.size < need)
    fail('E_BUFFER', 'tensor.buffer', 'is smaller than the shape;', t.buffer.size, `at least ${need} bytes`);
  const usage = TFJS_BUFFER_USAGE;
  if ((t.buffer.usage & usage) !== usage)
    fail(
      'E_BUFFER',
      'tensor.buffer',
      'lacks usage flags TensorFlow.js needs;',
      t.buffer.usage,
      `usage including ${usage} (STORAGE | COPY_SRC | COPY_DST)`,
    );
  return tf.tensor({ buffer: t.buffer, zeroCopy: opts.zeroCopy ?? true }, [...t.shape], dtype);
}
