/**
 * The one GPU fixture every test uses: one shared device per test worker (vitest
 * runs the files of a worker without module isolation, see vitest.config.ts, so the device and its
 * pipeline cache outlive a file and each kernel compiles once per run, not once per file), `track()`
 * for per-test buffers that are destroyed after the test, and a check that no uncaptured GPU error
 * happened during the file.
 */
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { adapterFromEnv, requestDevice, type RequestDeviceOptions, type TesseraDevice } from '../../src/gpu/device.js';
import { byteSize, decode, encode, type DType, type GpuTensor } from '../../src/tensor.js';
import { planLoopLimit, withLoopLimit } from '../../src/gpu/segments.js';

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

/** Options of {@link useGpu}: device options, and `fresh` for a file that needs a device of its own. */
export interface GpuFixtureOptions extends Partial<RequestDeviceOptions> {
  /**
   * A new device for this file, destroyed after it (instead of the worker's shared one): for
   * files that change the device itself (lose it, track its buffers differently).
   */
  fresh?: boolean;
}

// On globalThis, so that the devices are shared even if this module were evaluated once per file.
const KEY = Symbol.for('tessera.test.sharedDevices');
const g = globalThis as unknown as Record<symbol, Map<string, Promise<TesseraDevice>> | undefined>;
const shared = (g[KEY] ??= new Map());

/**
 * The worker's shared device for these options (created on first use, never destroyed: it lives
 * as long as the worker). Only plain options are shared; a lost device is replaced.
 */
async function sharedDevice(opts: Partial<RequestDeviceOptions>): Promise<TesseraDevice> {
  const key = JSON.stringify(opts);
  let p = shared.get(key);
  if (p) {
    const d = await p;
    if (!d.isLost) return d;
  }
  p = requestDevice({
    ...adapterFromEnv(),
    label: 'tessera-test',
    ...opts,
  });
  shared.set(key, p);
  p.catch(() => shared.delete(key));
  return p;
}

/**
 * `opts` adds device options. `{ loopLimit: 4096 }` (for the kernels that size their splits from
 * the device alone; every other plan takes a `loopLimit` option) is a view of the worker's shared
 * device with that cap (`withLoopLimit`, src/gpu/segments.ts), not a second device.
 */
export function useGpu(opts: GpuFixtureOptions = {}): GpuFixture {
  const { fresh, ...devOpts } = opts;
  let dev: TesseraDevice | undefined;
  const created: GpuTensor[] = [];
  const uncaptured: string[] = [];
  const onError = (ev: Event) => {
    uncaptured.push((ev as GPUUncapturedErrorEvent).error.message);
  };
  beforeAll(async () => {
    const { loopLimit, ...plain } = devOpts;
    if (fresh) dev = await requestDevice({ ...adapterFromEnv(), label: 'tessera-test-fresh', ...devOpts });
    else {
      const base = await sharedDevice(plain);
      dev = loopLimit === undefined ? base : withLoopLimit(base, planLoopLimit(base, loopLimit));
    }
    dev.device.addEventListener('uncapturederror', onError);
    // what an earlier file held is not this file's peak
    dev.resetPeak();
  });
  afterEach(() => {
    for (const t of created) dev?.destroyBuffer(t.buffer);
    created.length = 0;
  });
  afterAll(async () => {
    if (dev) {
      if (!dev.isLost) await dev.device.queue.onSubmittedWorkDone();
      dev.device.removeEventListener('uncapturederror', onError);
      expect(uncaptured, 'uncaptured GPU errors').toEqual([]);
      if (fresh) dev.destroy();
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

/**
 * Replaces `obj[key]` (a device's `createBuffer`, say) with `wrap(original)` and returns the undo,
 * which puts back exactly what was there: the file's shared device must not keep an own property
 * that a later file would see (test/device.test.ts checks that an untracked device has none).
 */
export function patchMethod<T extends object, K extends keyof T>(
  obj: T,
  key: K,
  wrap: (original: T[K]) => T[K],
): () => void {
  const had = Object.getOwnPropertyDescriptor(obj, key);
  const original = obj[key];
  Object.defineProperty(obj, key, { value: wrap(original), configurable: true, writable: true });
  return () => {
    if (had) Object.defineProperty(obj, key, had);
    else delete obj[key];
  };
}
