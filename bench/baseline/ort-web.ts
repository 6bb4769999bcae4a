/**
 * The ONNX Runtime baseline in the browser page: `onnxruntime-web/webgpu` (ORT's WebGPU EP
 * compiled to WebAssembly) runs the same one-node GroupQueryAttention model as the Node baseline
 * (bench/baseline/ort.ts, model from bench/baseline/onnx.ts), on the page's adapter. One wasm
 * thread (the page is not cross-origin isolated). Timing: wall clock around `session.run` with
 * CPU tensors, as in Node.
 */
import { timeWall, type Timing } from '../harness.js';
import { gqaModel } from './onnx.js';

type OrtWeb = typeof import('onnxruntime-web');

let loaded: Promise<OrtWeb> | undefined;

/** Loads `onnxruntime-web/webgpu` once (a dynamic import: the page fetches it only when asked). */
export function loadOrtWeb(): Promise<OrtWeb> {
  loaded ??= (async () => {
    const ort = (await import('onnxruntime-web/webgpu')) as unknown as OrtWeb;
    ort.env.wasm.numThreads = 1;
    ort.env.wasm.proxy = false;
    return ort;
  })();
  loaded.catch(() => (loaded = undefined));
  return loaded;
}

/**
 * Runs GroupQueryAttention (causal, `[T, H, D]` f32 inputs) in ORT Web on WebGPU: returns the
 * output of the first run and the timing of `runs` more.
 *
 * @example
 * const { output, timing } = await timeOrtWebAttention({ T: 256, D: 64, q, k, v, runs: 3 });
 */
export async function timeOrtWebAttention(o: {
  T: number;
  D: number;
  H?: number;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  warmup?: number;
  runs?: number;
}): Promise<{ output: Float32Array; timing: Timing }> {
  const ort = await loadOrtWeb();
  const H = o.H ?? 1;
  const session = await ort.InferenceSession.create(gqaModel({ T: o.T, Hq: H, Hkv: H, D: o.D }), {
    executionProviders: ['webgpu'],
  });
  try {
    const feeds = {
      query: new ort.Tensor('float32', o.q, [1, o.T, H * o.D]),
      key: new ort.Tensor('float32', o.k, [1, o.T, H * o.D]),
      value: new ort.Tensor('float32', o.v, [1, o.T, H * o.D]),
    };
    const first = await session.run(feeds, ['output']);
    const output = Float32Array.from(first.output!.data as Float32Array);
    const timing = await timeWall(
      async () => {
        const r = await session.run(feeds, ['output']);
        r.output!.dispose?.();
      },
      { warmup: Math.max(0, (o.warmup ?? 1) - 1), runs: o.runs ?? 3 },
    );
    return { output, timing };
  } finally {
    await session.release();
  }
}
