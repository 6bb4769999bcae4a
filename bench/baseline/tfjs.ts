/**
 * The TensorFlow.js WebGPU baseline: dense attention written as a TensorFlow.js user would
 * (`matMul(q, k^T) * scale`, causal mask, `softmax`, `matMul` with v), on the same adapter as
 * Tessera, in the same process.
 *
 * In Node, TensorFlow.js's WebGPU backend registers on import when `navigator.gpu` exists, so we
 * create a Dawn `GPU` with the same adapter selection as Tessera's device layer (SwiftShader when
 * there is no GPU), expose it as `globalThis.navigator.gpu`, then import the backend. The `GPU`
 * object is kept reachable for the life of the process (Dawn crashes if it is collected).
 *
 * Timing: wall clock around the ops and `await out.data()` (TensorFlow.js submits its own
 * command buffers; the readback of the `[T, H, D]` output is < 0.1% of the time at these sizes).
 */
import { TesseraError } from '../../src/errors.js';
import { timeWall, type Timing } from '../harness.js';
import { optionalImport } from '../../src/cli-common.js';

type Tf = typeof import('@tensorflow/tfjs-core');

let loaded: Promise<{ tf: Tf; adapter: string }> | undefined;
const keepAlive: unknown[] = [];

/**
 * Loads TensorFlow.js with its WebGPU backend on this process's adapter (once).
 *
 * @example
 * const { tf, adapter } = await loadTfjsWebGpu();
 */
export function loadTfjsWebGpu(
  opts: { dawnFlags?: string[]; adapter?: 'auto' | 'swiftshader' } = {},
): Promise<{ tf: Tf; adapter: string }> {
  loaded ??= (async () => {
    const g = globalThis as { navigator?: { gpu?: GPU } };
    if (!g.navigator?.gpu) {
      const { createNodeGpu } = await import('../../src/gpu/node.js');
      const { gpu } = await createNodeGpu({
        dawnFlags: opts.dawnFlags,
        forceSwiftShader: opts.adapter === 'swiftshader',
      });
      keepAlive.push(gpu);
      if (g.navigator) Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true });
      else Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
    }
    const tf = await optionalImport<Tf>('@tensorflow/tfjs-core', '--baseline tfjs', '--baseline none');
    await optionalImport('@tensorflow/tfjs-backend-webgpu', '--baseline tfjs', '--baseline none');
    const ok = await tf.setBackend('webgpu');
    if (!ok) throw new TesseraError('E_NO_ADAPTER', 'TensorFlow.js could not start its WebGPU backend');
    await tf.ready();
    const backend = tf.backend() as unknown as {
      adapterInfo?: { architecture?: string; vendor?: string; description?: string };
    };
    const info = backend.adapterInfo;
    return { tf, adapter: String(info?.architecture || info?.description || info?.vendor || 'unknown') };
  })();
  return loaded;
}

export interface TfjsAttentionOptions {
  T: number;
  D: number;
  /** Heads (query = key/value heads). Default 1. */
  H?: number;
  causal?: boolean;
  warmup?: number;
  runs?: number;
  seed?: number;
}

/**
 * Times TensorFlow.js dense attention on `[H, T, D]` f32 inputs: scores `[H, T, T]`, the causal
 * mask added as a precomputed `[T, T]` bias (0 / -1e30), softmax over keys, then `@ v`.
 *
 * @example
 * const t = await timeTfjsAttention({ T: 1024, D: 64, runs: 3 });
 * console.log(t.median_ms);
 */
export async function timeTfjsAttention(o: TfjsAttentionOptions): Promise<Timing & { adapter: string }> {
  const { tf, adapter } = await loadTfjsWebGpu();
  const H = o.H ?? 1;
  const { T, D } = o;
  const scale = 1 / Math.sqrt(D);
  const q = tf.randomNormal([H, T, D], 0, 1, 'float32', o.seed ?? 1);
  const k = tf.randomNormal([H, T, D], 0, 1, 'float32', (o.seed ?? 1) + 1);
  const v = tf.randomNormal([H, T, D], 0, 1, 'float32', (o.seed ?? 1) + 2);
  // The causal mask as an additive bias, built once (as a model would cache it).
  const bias =
    o.causal === false
      ? undefined
      : tf.tidy(() => {
          const ones = tf.ones([T, T]);
          const lower = tf.linalg.bandPart(ones, -1, 0);
          return tf.mul(tf.sub(1, lower), -1e30);
        });
  try {
    await tf.tidy(() => tf.add(q, 0)).data(); // inputs materialised before timing
    const run = async () => {
      const out = tf.tidy(() => {
        let s = tf.mul(tf.matMul(q, k, false, true), scale);
        if (bias) s = tf.add(s, bias);
        return tf.matMul(tf.softmax(s, -1), v);
      });
      await out.data();
      out.dispose();
    };
    const t = await timeWall(run, { warmup: o.warmup ?? 1, runs: o.runs ?? 3 });
    return { ...t, adapter };
  } finally {
    q.dispose();
    k.dispose();
    v.dispose();
    bias?.dispose();
  }
}

/**
 * TensorFlow.js's attention output for given inputs (to check the baseline computes attention).
 *
 * @example
 * const o = await tfjsAttention(q, k, v, { T: 4, D: 2 });
 */
export async function tfjsAttention(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  o: { T: number; D: number; H?: number; causal?: boolean },
): Promise<Float32Array> {
  const { tf } = await loadTfjsWebGpu();
  const H = o.H ?? 1;
  const shape: [number, number, number] = [H, o.T, o.D];
  const out = tf.tidy(() => {
    const s0 = tf.mul(tf.matMul(tf.tensor3d(q, shape), tf.tensor3d(k, shape), false, true), 1 / Math.sqrt(o.D));
    const s =
      o.causal === false ? s0 : tf.add(s0, tf.mul(tf.sub(1, tf.linalg.bandPart(tf.ones([o.T, o.T]), -1, 0)), -1e30));
    return tf.matMul(tf.softmax(s, -1), tf.tensor3d(v, shape));
  });
  const data = (await out.data()) as Float32Array;
  out.dispose();
  return data;
}
