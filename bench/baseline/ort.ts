/**
 * The ONNX Runtime WebGPU baseline: a one-node `com.microsoft.GroupQueryAttention` model (built in
 * code by bench/baseline/onnx.ts, no model file) run by `onnxruntime-node`'s WebGPU execution
 * provider, the path transformers.js-style users get from ONNX Runtime.
 *
 * Adapter: the WebGPU EP carries its own Dawn and picks its adapter through the Vulkan loader, so
 * it runs on the adapter `VK_ICD_FILENAMES` names. Tessera's Node device layer sets that variable
 * to SwiftShader on a machine without a GPU before the first device is created, and this module
 * does the same when it loads first: both then use the same adapter. (Mesa llvmpipe through
 * OpenGL ES is Tessera-only: the EP has no OpenGL backend.)
 *
 * Subgroups: the EP turns on every feature the adapter has and picks its subgroup flash-attention
 * path whenever `subgroups` is present; it has no option to turn that off, so in Node ORT always
 * runs with subgroups where the adapter offers them (each row records `subgroups`). Tessera's
 * side can run either way (`--subgroups` of `bench dense`).
 *
 * Timing: wall clock around `session.run` with CPU tensors in and out (the EP uploads q, k, v and
 * reads the output back each run: 4 x T x H x D x 4 bytes, a few MB at T = 2048, well under 1% of
 * the attention time on a software adapter), as `bench/baseline/tfjs.ts` times TensorFlow.js.
 */
import { existsSync } from 'node:fs';
import { TesseraError } from '../../src/errors.js';
import { SWIFTSHADER_ICD_PATHS } from '../../src/gpu/node.js';
import { timeWall, type Timing } from '../harness.js';
import { gqaModel } from './onnx.js';

type Ort = typeof import('onnxruntime-node');
type Session = import('onnxruntime-node').InferenceSession;

let loaded: Promise<Ort> | undefined;

/**
 * Loads `onnxruntime-node` (once) and checks that its WebGPU EP is bundled.
 *
 * @example
 * const ort = await loadOrtNode();
 */
export function loadOrtNode(): Promise<Ort> {
  loaded ??= (async () => {
    if (
      process.platform === 'linux' &&
      !process.env.VK_ICD_FILENAMES &&
      !process.env.VK_DRIVER_FILES &&
      !existsSync('/dev/nvidia0') &&
      !existsSync('/dev/dri')
    ) {
      const icd = SWIFTSHADER_ICD_PATHS.find((p) => existsSync(p));
      if (icd) process.env.VK_ICD_FILENAMES = icd;
    }
    let mod: Ort;
    try {
      const m = (await import('onnxruntime-node')) as Ort & { default?: Ort };
      mod = (m.default ?? m) as Ort;
    } catch (e) {
      throw new TesseraError(
        'E_UNSUPPORTED',
        'the ONNX Runtime baseline needs `onnxruntime-node` (a devDependency: `npm install`)',
        { argument: '--baseline', actual: 'ort', cause: e },
      );
    }
    const backends =
      (
        mod as unknown as { listSupportedBackends?: () => { name: string; bundled: boolean }[] }
      ).listSupportedBackends?.() ?? [];
    if (backends.length && !backends.some((b) => b.name === 'webgpu')) {
      throw new TesseraError('E_UNSUPPORTED', 'this onnxruntime-node build has no WebGPU execution provider', {
        argument: '--baseline',
        actual: backends.map((b) => b.name).join(', '),
      });
    }
    return mod;
  })();
  loaded.catch(() => (loaded = undefined));
  return loaded;
}

export interface OrtAttentionOptions {
  T: number;
  D: number;
  /** Query heads (default 1). */
  H?: number;
  /** Key/value heads (default H). */
  Hkv?: number;
  /** Inputs `[T, H, D]` / `[T, Hkv, D]` f32 (the same layout as Tessera's). */
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  warmup?: number;
  runs?: number;
}

/** A GroupQueryAttention session on the WebGPU EP for one shape. Dispose with `release()`. */
export async function ortAttentionSession(o: {
  T: number;
  D: number;
  H?: number;
  Hkv?: number;
}): Promise<{ ort: Ort; session: Session }> {
  const ort = await loadOrtNode();
  const H = o.H ?? 1;
  const model = gqaModel({ T: o.T, Hq: H, Hkv: o.Hkv ?? H, D: o.D });
  try {
    const session = await ort.InferenceSession.create(model, {
      executionProviders: ['webgpu'],
      graphOptimizationLevel: 'all',
    });
    return { ort, session };
  } catch (e) {
    throw new TesseraError(
      'E_UNSUPPORTED',
      `ONNX Runtime's WebGPU EP could not create the GroupQueryAttention session: ${String((e as Error)?.message ?? e)}`,
      { argument: '--baseline', actual: 'ort', cause: e },
    );
  }
}

/**
 * Runs ONNX Runtime's GroupQueryAttention (causal) on the given inputs: returns the output of the
 * first run (`[T, H, D]` f32) and the wall-clock timing of `runs` more after `warmup`.
 *
 * @example
 * const { output, timing } = await timeOrtAttention({ T: 512, D: 64, q, k, v, runs: 3 });
 */
export async function timeOrtAttention(o: OrtAttentionOptions): Promise<{ output: Float32Array; timing: Timing }> {
  const H = o.H ?? 1;
  const Hkv = o.Hkv ?? H;
  const { ort, session } = await ortAttentionSession({ T: o.T, D: o.D, H, Hkv });
  try {
    const feeds = {
      query: new ort.Tensor('float32', o.q, [1, o.T, H * o.D]),
      key: new ort.Tensor('float32', o.k, [1, o.T, Hkv * o.D]),
      value: new ort.Tensor('float32', o.v, [1, o.T, Hkv * o.D]),
    };
    const first = await session.run(feeds, ['output']);
    const output = Float32Array.from(first.output!.data as Float32Array);
    first.output!.dispose?.();
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
