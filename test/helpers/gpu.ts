/**
 * The one GPU fixture every test uses: a shared device per test file (pipelines stay cached, so
 * the suite compiles each kernel once per file), `track()` for per-test buffers that are
 * destroyed after the test, and a check that no uncaptured GPU error happened.
 */
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { adapterFromEnv, requestDevice, type RequestDeviceOptions, type TesseraDevice } from '../../src/gpu/device.js';
import { byteSize, decode, encode, type DType, type GpuTensor } from '../../src/tensor.js';

export interface GpuFixture {
  readonly dev: TesseraDevice;
  /** A tensor filled from host values (encoded to `dtype`). */
  tensor(values: ArrayLike<number>, shape: readonly number[], dtype?: DType): GpuTensor;
  /** A tensor filled with NaN (f32/f16/bf16), so an element never written fails the comparison. */
  nanTensor(shape: readonly number[], dtype?: DType): GpuTensor;
  /** Reads a tensor back as f64 values. */
  read(t: GpuTensor): Promise<Float64Array>;
  uncaptured: string[];
}

/** `opts` adds device options, e.g. `{ loopLimit: 4096 }` to run the segmented paths llvmpipe needs. */
export function useGpu(opts: Partial<RequestDeviceOptions> = {}): GpuFixture {
  let dev: TesseraDevice | undefined;
  const created: GpuTensor[] = [];
  const uncaptured: string[] = [];
  beforeAll(async () => {
    dev = await requestDevice({ ...adapterFromEnv(), label: 'tessera-test', ...opts });
    dev.device.addEventListener('uncapturederror', (ev) => {
      uncaptured.push((ev as GPUUncapturedErrorEvent).error.message);
    });
  });
  afterEach(() => {
    for (const t of created) dev?.destroyBuffer(t.buffer);
    created.length = 0;
  });
  afterAll(async () => {
    if (dev) {
      await dev.device.queue.onSubmittedWorkDone();
      expect(uncaptured, 'uncaptured GPU errors').toEqual([]);
      dev.destroy();
    }
  });
  const fx: GpuFixture = {
    get dev() {
      if (!dev) throw new Error('GPU fixture used outside a test');
      return dev;
    },
    tensor(values, shape, dtype = 'f32') {
      const words = encode(values, dtype);
      const buffer = fx.dev.upload(words, { size: byteSize(shape, dtype), label: 'test.tensor' });
      const t = { buffer, shape: [...shape], dtype };
      created.push(t);
      return t;
    },
    nanTensor(shape, dtype = 'f32') {
      const n = shape.reduce((a, b) => a * b, 1);
      const t = fx.tensor(new Float64Array(n).fill(NaN), shape, dtype);
      return t;
    },
    async read(t) {
      const n = t.shape.reduce((a, b) => a * b, 1);
      const bytes = await fx.dev.readback(t.buffer, byteSize(t.shape, t.dtype), t.offset ?? 0);
      return decode(new Uint32Array(bytes), t.dtype, n);
    },
    uncaptured,
  };
  return fx;
}
