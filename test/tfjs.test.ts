/**
 * TensorFlow.js interop: tensors of the WebGPU backend go into Tessera kernels (dataToGPU) and
 * come back as tensors (zeroCopy), on TensorFlow.js's own device, with no readback in between:
 * every GPUBuffer.mapAsync call is counted, and the count must not move until the final data().
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type * as TF from '@tensorflow/tfjs-core';
import { merge } from '../kernels/merge/index.js';
import { mergeReference } from '../kernels/merge/reference.js';
import { topK } from '../kernels/topk/index.js';
import { topKReference } from '../kernels/topk/reference.js';
import { attention, attentionReference } from '../kernels/dense/index.js';
import type { TesseraDevice } from '../src/gpu/device.js';
import {
  TFJS_BUFFER_USAGE,
  fromTfjs,
  prepareTfjs,
  tfjsDevice,
  toTfjs,
  type TfjsLike,
  type TfjsTensorLike,
} from '../src/interop/tfjs.js';
import { compare, passes, Rng, TOLERANCE } from '../src/testing.js';
import type { GpuTensor } from '../src/tensor.js';

let tf: typeof TF;
let dev: TesseraDevice;
let maps = 0;
let T: TfjsLike;
const keep: unknown[] = [];

beforeAll(async () => {
  // tfjs-backend-webgpu registers only if navigator.gpu exists when it is imported.
  const { createNodeGpu } = await import('../src/gpu/node.js');
  const { gpu } = await createNodeGpu();
  keep.push(gpu);
  const g = globalThis as { navigator?: { gpu?: GPU } };
  if (g.navigator) Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true });
  else Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
  tf = await import('@tensorflow/tfjs-core');
  await import('@tensorflow/tfjs-backend-webgpu');
  expect(await tf.setBackend('webgpu')).toBe(true);
  await tf.ready();
  T = tf as unknown as TfjsLike;
  prepareTfjs(T);
  dev = tfjsDevice(T);
  // Count readbacks: every host read of a GPUBuffer goes through mapAsync.
  const probe = dev.device.createBuffer({ size: 4, usage: GPUBufferUsage.STORAGE });
  const proto = Object.getPrototypeOf(probe) as { mapAsync: (...a: unknown[]) => Promise<void> };
  probe.destroy();
  const orig = proto.mapAsync;
  proto.mapAsync = function (this: unknown, ...a: unknown[]) {
    maps++;
    return orig.apply(this, a);
  };
});

afterAll(() => {
  tf?.disposeVariables();
});

function out(shape: number[], dtype: 'f32' | 'i32' = 'f32'): GpuTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return { buffer: dev.createBuffer({ size: n * 4, usage: TFJS_BUFFER_USAGE, label: 'test.tfjs.out' }), shape, dtype };
}

describe('tessera/tfjs', () => {
  it('shares the TensorFlow.js device', () => {
    const be = tf.backend() as unknown as { device: GPUDevice };
    expect(dev.device).toBe(be.device);
    expect(tfjsDevice(tf as unknown as TfjsLike)).toBe(dev);
  });

  it('merge: tf tensors in, tf tensors out, values equal, no readback inside', async () => {
    const P = 3;
    const rows = 5;
    const D = 16;
    const rng = new Rng(11);
    const oParts = Float32Array.from(rng.normals(P * rows * D));
    const lseParts = Float32Array.from(rng.normals(P * rows, 2));
    lseParts[0] = -Infinity;
    const ref = mergeReference(oParts, lseParts, P, rows, D);
    const oPartsT = tf.tensor3d(oParts, [P, rows, D]);
    const lsePartsT = tf.tensor2d(lseParts, [P, rows]);
    const before = maps;
    const a = fromTfjs(T, oPartsT as unknown as TfjsTensorLike, 'oParts');
    const b = fromTfjs(T, lsePartsT as unknown as TfjsTensorLike, 'lseParts');
    expect(a.tensor.dtype).toBe('f32');
    const o = out([rows, D]);
    const lse = out([rows]);
    await merge(dev, { oParts: a.tensor, lseParts: b.tensor, o, lse });
    a.release();
    b.release();
    const oT = toTfjs(T, o) as TF.Tensor2D;
    const lseT = toTfjs(T, lse) as TF.Tensor1D;
    // Keep going in TensorFlow.js on the GPU: o * 2 and lse + 1.
    const o2 = tf.mul(oT, 2);
    const lse1 = tf.add(lseT, 1);
    expect(maps - before, 'no mapAsync (readback) between dataToGPU and the final data()').toBe(0);
    const gotO = await o2.data();
    const gotL = await lse1.data();
    expect(
      passes(
        compare(
          gotO,
          ref.o.map((x) => 2 * x),
        ),
        TOLERANCE.f32,
      ),
    ).toBe(true);
    expect(
      passes(
        compare(
          gotL,
          ref.lse.map((x) => x + 1),
        ),
        TOLERANCE.f32,
      ),
    ).toBe(true);
    for (const t of [oPartsT, lsePartsT, oT, lseT, o2, lse1]) t.dispose();
    dev.destroyBuffer(o.buffer);
    dev.destroyBuffer(lse.buffer);
  });

  it('topK on a tf tensor gives int32 indices as a tf tensor', async () => {
    const rows = 4;
    const n = 300;
    const k = 7;
    const rng = new Rng(5);
    const s = new Float32Array(rows * n);
    for (let i = 0; i < s.length; i++) s[i] = Math.floor(rng.next() * 20);
    const ref = topKReference(s, rows, n, k);
    const sT = tf.tensor2d(s, [rows, n]);
    const before = maps;
    const sv = fromTfjs(T, sT as unknown as TfjsTensorLike, 'scores');
    const indices = out([rows, k], 'i32');
    const values = out([rows, k]);
    await topK(dev, { scores: sv.tensor, indices, values });
    sv.release();
    const iT = toTfjs(T, indices) as TF.Tensor2D;
    const vT = toTfjs(T, values) as TF.Tensor2D;
    expect(iT.dtype).toBe('int32');
    // Gather the selected scores back in TensorFlow.js: they must equal the values output.
    const gathered = tf.gather(sT, iT, 1, 1);
    expect(maps - before).toBe(0);
    expect(Array.from(await iT.data())).toEqual(Array.from(ref.indices));
    expect(Array.from(await vT.data())).toEqual(Array.from(ref.values));
    expect(Array.from(await gathered.data())).toEqual(Array.from(ref.values));
    for (const t of [sT, iT, vT, gathered]) t.dispose();
    dev.destroyBuffer(indices.buffer);
    dev.destroyBuffer(values.buffer);
  });

  it('dense attention on tf tensors equals the float64 reference', async () => {
    const Tq = 65;
    const Hq = 4;
    const Hkv = 2;
    const D = 32;
    const rng = new Rng(3);
    const q = Float32Array.from(rng.normals(Tq * Hq * D));
    const k = Float32Array.from(rng.normals(Tq * Hkv * D));
    const v = Float32Array.from(rng.normals(Tq * Hkv * D));
    const ref = attentionReference(q, k, v, { Tq, Hq, Hkv, D });
    const qT = tf.tensor3d(q, [Tq, Hq, D]);
    const kT = tf.tensor3d(k, [Tq, Hkv, D]);
    const vT = tf.tensor3d(v, [Tq, Hkv, D]);
    const before = maps;
    const views = [
      fromTfjs(T, qT as unknown as TfjsTensorLike, 'q'),
      fromTfjs(T, kT as unknown as TfjsTensorLike, 'k'),
      fromTfjs(T, vT as unknown as TfjsTensorLike, 'v'),
    ];
    const o = out([Tq, Hq, D]);
    const lse = out([Tq, Hq]);
    await attention(dev, { q: views[0]!.tensor, k: views[1]!.tensor, v: views[2]!.tensor, o, lse });
    for (const x of views) x.release();
    const oT = toTfjs(T, o) as TF.Tensor3D;
    expect(maps - before).toBe(0);
    expect(passes(compare(await oT.data(), ref.o), TOLERANCE.f32)).toBe(true);
    for (const t of [qT, kT, vT, oT]) t.dispose();
    dev.destroyBuffer(o.buffer);
    dev.destroyBuffer(lse.buffer);
  });

  it('rejects what it cannot take, naming the argument', () => {
    const b = tf.tensor1d([true, false], 'bool');
    expect(() => fromTfjs(T, b as unknown as TfjsTensorLike, 'mask')).toThrow(
      expect.objectContaining({ code: 'E_DTYPE', argument: 'mask.dtype' }),
    );
    b.dispose();
    const noCopy = {
      buffer: dev.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE }),
      shape: [4],
      dtype: 'f32' as const,
    };
    expect(() => toTfjs(T, noCopy)).toThrow(expect.objectContaining({ code: 'E_BUFFER', argument: 'tensor.buffer' }));
    expect(() => toTfjs(T, { ...noCopy, dtype: 'f16' })).toThrow(expect.objectContaining({ code: 'E_DTYPE' }));
    dev.destroyBuffer(noCopy.buffer);
    expect(() => tfjsDevice({} as TfjsLike)).toThrow(expect.objectContaining({ argument: 'tf' }));
  });
});
