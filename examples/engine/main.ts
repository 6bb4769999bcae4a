/**
 * Example `engine`: Tessera's raw GPUBuffer plan/run API inside an inference engine that owns its
 * device, its buffers and its command encoders.
 *
 * The "engine" below holds a raw `GPUDevice` (Tessera only wraps it, `wrapDevice`), creates every
 * buffer itself with `device.createBuffer`, and runs one sequence through:
 *
 * 1. a prefill chunk of `prompt` tokens (`planAttention`, causal, GQA), and
 * 2. `steps` decode steps (`planDecode`, one query over the growing KV cache).
 *
 * Everything is planned before the loop. Each step encodes, into the engine's OWN
 * `GPUCommandEncoder`, the engine's own work (a `copyBufferToBuffer` that appends the new token's
 * K/V rows to the cache, standing in for the engine's projection kernels) followed by Tessera's
 * dispatches, and submits once. The only readback is at the end; the outputs of every step are
 * then checked against the float64 reference (`attentionReference`, causal over all tokens).
 *
 * Run: `npx tsx examples/engine/main.ts [--small]`.
 */
import { pathToFileURL } from 'node:url';
import { planAttention, planDecode, attentionReference, type DecodePlan } from '../../kernels/dense/index.js';
import { wrapDevice } from '../../src/gpu/device.js';
import { compare, passes, Rng, TOLERANCE } from '../../src/testing.js';

export interface EngineOptions {
  /** Short form for CI: a 64-token prompt and 4 decode steps. */
  small?: boolean;
  /** Prompt tokens (default 512; small 64). */
  prompt?: number;
  /** Decode steps (default 16; small 4). */
  steps?: number;
  /** Query heads (default 8), KV heads (default 2), head dim (default 64). */
  Hq?: number;
  Hkv?: number;
  D?: number;
  /**
   * The engine's device. Default: the engine makes its own, the plain WebGPU way
   * (`navigator.gpu` in a browser, Dawn's `create()` in Node; `requestAdapter`, `requestDevice`),
   * and destroys it at the end.
   */
  device?: GPUDevice;
  seed?: number;
}

export interface EngineResult {
  adapter: string;
  /** What Tessera made of the engine's device: 'cpu' (software adapter) or 'gpu'; picks kernel variants. */
  adapterClass: 'cpu' | 'gpu';
  prompt: number;
  steps: number;
  Hq: number;
  Hkv: number;
  D: number;
  /** Command buffers submitted by the engine (1 prefill + 1 per step). */
  submits: number;
  /** Host readbacks (mapAsync) done by the engine: 1, at the end. */
  readbacks: number;
  /** Relative RMS / max-abs error of the prefill rows and of the decode rows vs float64. */
  prefillRelRms: number;
  prefillMaxAbs: number;
  decodeRelRms: number;
  decodeMaxAbs: number;
  /** Both pass the f32 tolerance of the tests (`TOLERANCE.f32`). */
  ok: boolean;
  /** Wall time of planning (pipelines compile here) and of the loop incl. the final wait. */
  planMs: number;
  loopMs: number;
}

/**
 * The engine's own device, created with plain WebGPU calls: `navigator.gpu` in a browser; in Node
 * a `GPU` from the `webgpu` package (Dawn) via `createNodeGpu`, which only prepares the environment
 * (e.g. finds SwiftShader where there is no GPU) and keeps Dawn's instance alive.
 */
async function engineDevice(): Promise<{ device: GPUDevice; release: () => void }> {
  let gpu: GPU;
  let release = () => {};
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu && !globalThis.process?.versions?.node) {
    gpu = nav.gpu;
  } else {
    const { createNodeGpu } = await import('../../src/gpu/node.js');
    ({ gpu, release } = await createNodeGpu());
  }
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new Error('engine: no WebGPU adapter');
  const device = await adapter.requestDevice({ label: 'example.engine' });
  return { device, release };
}

/** A toy engine: owns a raw GPUDevice and its buffers; Tessera only encodes into its encoders. */
class ToyEngine {
  readonly buffers: GPUBuffer[] = [];
  constructor(readonly device: GPUDevice) {}

  buffer(size: number, usage: number, label: string): GPUBuffer {
    const b = this.device.createBuffer({ size: Math.max(4, Math.ceil(size / 4) * 4), usage, label });
    this.buffers.push(b);
    return b;
  }

  /** Uploads host data into a new STORAGE | COPY_SRC | COPY_DST buffer. */
  upload(data: Float32Array, label: string): GPUBuffer {
    const b = this.buffer(data.byteLength, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST, label);
    this.device.queue.writeBuffer(b, 0, data as Float32Array<ArrayBuffer>);
    return b;
  }

  /** The engine's one readback: copy into a MAP_READ buffer, map, copy out. */
  async read(src: GPUBuffer, bytes: number): Promise<Float32Array> {
    const staging = this.buffer(bytes, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, 'engine.staging');
    const enc = this.device.createCommandEncoder({ label: 'engine.readback' });
    enc.copyBufferToBuffer(src, 0, staging, 0, bytes);
    this.device.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const out = new Float32Array(staging.getMappedRange(0, bytes).slice(0));
    staging.unmap();
    return out;
  }

  dispose(): void {
    for (const b of this.buffers) b.destroy();
    this.buffers.length = 0;
  }
}

/**
 * Runs the engine example and returns its numbers.
 *
 * @example
 * const r = await main({ small: true });
 * console.log(r.decodeRelRms, r.ok);
 */
export async function main(opts: EngineOptions = {}): Promise<EngineResult> {
  const small = opts.small ?? false;
  const P = opts.prompt ?? (small ? 64 : 512);
  const S = opts.steps ?? (small ? 4 : 16);
  const Hq = opts.Hq ?? 8;
  const Hkv = opts.Hkv ?? 2;
  const D = opts.D ?? 64;
  const N = P + S; // tokens in the sequence at the end (cache capacity)
  let owned: { device: GPUDevice; release: () => void } | undefined;
  if (!opts.device) owned = await engineDevice();
  const device = opts.device ?? owned!.device;
  // Tessera's view of the engine's device (its pipeline cache, limits, adapter class). Kernels
  // also accept the raw GPUDevice directly, as below; both give this same context.
  const ctx = wrapDevice(device);
  const engine = new ToyEngine(device);
  try {
    // The engine's "projection outputs" for all N tokens (in a real engine, its own kernels write
    // these per step); q [N, Hq, D], k/v [N, Hkv, D].
    const rng = new Rng(opts.seed ?? 7);
    const q = Float32Array.from(rng.normals(N * Hq * D));
    const k = Float32Array.from(rng.normals(N * Hkv * D));
    const v = Float32Array.from(rng.normals(N * Hkv * D));
    const qBuf = engine.upload(q, 'engine.q');
    const kNew = engine.upload(k, 'engine.kProj');
    const vNew = engine.upload(v, 'engine.vProj');
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    const rowK = Hkv * D * 4; // bytes of one token's K (or V) row
    const rowQ = Hq * D * 4;
    // Per-step q/o views start at token offsets: storage bindings need 256-byte aligned offsets.
    if (rowQ % 256 !== 0) throw new Error(`engine example: Hq * D * 4 = ${rowQ} bytes is not a multiple of 256 (minStorageBufferOffsetAlignment); use e.g. Hq * D = 64k`);
    // The KV cache [N, Hkv, D] (filled by the engine's copies) and the output [N, Hq, D].
    const kCache = engine.buffer(N * rowK, usage, 'engine.kCache');
    const vCache = engine.buffer(N * rowK, usage, 'engine.vCache');
    const out = engine.buffer(N * rowQ, usage, 'engine.out');

    // Plan once, before the loop: the prefill chunk, and one decode plan per cache length (a
    // DecodePlan bakes its kvLens in; pipelines are shared, so each extra plan is a few small
    // uniform/tile buffers). `plan.run` allocates nothing.
    const t0 = performance.now();
    const prefill = await planAttention(device, { Tq: P, Tk: P, Hq, Hkv, D });
    const decodes: DecodePlan[] = [];
    for (let s = 0; s < S; s++) decodes.push(await planDecode(device, { Hq, Hkv, D, kvLens: [P + s + 1] }));
    await device.queue.onSubmittedWorkDone();
    const planMs = performance.now() - t0;

    const t1 = performance.now();
    let submits = 0;
    // Prefill: the engine appends the prompt's K/V to the cache, then Tessera attends, all in
    // one encoder and one submit.
    {
      const enc = device.createCommandEncoder({ label: 'engine.prefill' });
      enc.copyBufferToBuffer(kNew, 0, kCache, 0, P * rowK);
      enc.copyBufferToBuffer(vNew, 0, vCache, 0, P * rowK);
      prefill.run(enc, {
        q: { buffer: qBuf, shape: [P, Hq, D], dtype: 'f32' },
        k: { buffer: kCache, shape: [P, Hkv, D], dtype: 'f32' },
        v: { buffer: vCache, shape: [P, Hkv, D], dtype: 'f32' },
        o: { buffer: out, shape: [P, Hq, D], dtype: 'f32' },
      });
      device.queue.submit([enc.finish()]);
      submits++;
    }
    // Decode loop: one encoder, one submit per step; no readback.
    for (let s = 0; s < S; s++) {
      const t = P + s; // the new token's position
      const enc = device.createCommandEncoder({ label: `engine.step${s}` });
      // The engine's own work: append token t's K/V rows to the cache.
      enc.copyBufferToBuffer(kNew, t * rowK, kCache, t * rowK, rowK);
      enc.copyBufferToBuffer(vNew, t * rowK, vCache, t * rowK, rowK);
      // Tessera: one query over the t + 1 cached keys. Tensors are views into the engine's
      // buffers (offsets are multiples of 256 bytes here: a storage-binding requirement).
      decodes[s]!.run(enc, {
        q: { buffer: qBuf, offset: t * rowQ, shape: [1, Hq, D], dtype: 'f32' },
        k: { buffer: kCache, shape: [t + 1, Hkv, D], dtype: 'f32' },
        v: { buffer: vCache, shape: [t + 1, Hkv, D], dtype: 'f32' },
        o: { buffer: out, offset: t * rowQ, shape: [1, Hq, D], dtype: 'f32' },
      });
      device.queue.submit([enc.finish()]);
      submits++;
    }
    const got = await engine.read(out, N * rowQ); // the one readback
    const loopMs = performance.now() - t1;
    prefill.dispose();
    for (const d of decodes) d.dispose();

    // Float64 reference: causal attention of all N tokens; row t is what step t - P computed.
    const ref = attentionReference(q, k, v, { Tq: N, Tk: N, Hq, Hkv, D, causal: true }).o;
    const split = P * Hq * D;
    const cp = compare(got.subarray(0, split), ref.subarray(0, split));
    const cd = compare(got.subarray(split), ref.subarray(split));
    return {
      adapter: ctx.adapterName,
      adapterClass: ctx.adapterClass,
      prompt: P,
      steps: S,
      Hq,
      Hkv,
      D,
      submits,
      readbacks: 1,
      prefillRelRms: cp.relRms,
      prefillMaxAbs: cp.maxAbs,
      decodeRelRms: cd.relRms,
      decodeMaxAbs: cd.maxAbs,
      ok: passes(cp, TOLERANCE.f32) && passes(cd, TOLERANCE.f32),
      planMs,
      loopMs,
    };
  } finally {
    engine.dispose();
    if (owned) {
      owned.device.destroy();
      owned.release();
    }
  }
}

/** Prints the summary of a result. */
export function summary(r: EngineResult): string {
  return [
    `engine example on ${r.adapter} (${r.adapterClass} kernels; the engine's own raw GPUDevice): prompt ${r.prompt} tokens + ${r.steps} decode steps, Hq=${r.Hq} Hkv=${r.Hkv} D=${r.D}, f32`,
    `  ${r.submits} submits (1 per step, Tessera encoded into the engine's encoders), ${r.readbacks} readback (at the end)`,
    `  prefill vs float64: rel RMS ${r.prefillRelRms.toExponential(2)}, max abs ${r.prefillMaxAbs.toExponential(2)}`,
    `  decode  vs float64: rel RMS ${r.decodeRelRms.toExponential(2)}, max abs ${r.decodeMaxAbs.toExponential(2)}`,
    `  ${r.ok ? 'PASS' : 'FAIL'} (f32 tolerance); plan ${r.planMs.toFixed(0)} ms, loop ${r.loopMs.toFixed(0)} ms`,
  ].join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const r = await main({ small: process.argv.includes('--small') });
  console.log(summary(r));
  process.exitCode = r.ok ? 0 : 1;
}
