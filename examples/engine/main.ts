/**
 * Example `engine`: a small transformer whose attention and KV cache run on Tessera's engine path,
 * entirely from the GPU, inside the engine's own command encoders.
 *
 * The engine owns a raw `GPUDevice`, its buffers and its WGSL (a fused q/k/v projection, the
 * output projection with the residual, the next-token mix: `QKV_WGSL`, `ENGINE_WGSL` below). Tessera gives it:
 * - `src/pool` (host bookkeeping): pages, per-sequence page lists, window release, the step tables;
 * - `kernels/append`: K/V rows into pool pages with RoPE fused on K, Quest summaries on the GPU;
 *   `planRope` for q;
 * - `kernels/attention`: one attention core over CSR page tables, a batch of sequences per run
 *   (prefill chunks and decode), window + sinks;
 * - `kernels/quest/batch`: Quest page selection on the GPU from the summaries.
 *
 * Model (`model.ts`): 3 layers (full attention, sliding window + sinks, Quest-sparse), GQA 8/2,
 * head dim 64, RoPE, a batch of 4 sequences with different prompt lengths: one prefill step, then
 * `steps` decode steps in which each step's K/V come from the previous step's GPU output. Every
 * step is planned once (compile) and scheduled per step (host tables written into the plans' own
 * buffers); a step is 1 submit, creates no GPU buffer, and nothing is read back until the end,
 * when the last layer's outputs are compared with the float64 mirror of the whole model.
 *
 * Run: `npx tsx examples/engine/main.ts [--small]`.
 */
import { pathToFileURL } from 'node:url';
import { wrapDevice, submitEpoch, type TesseraDevice } from '../../src/gpu/device.js';
import { createPagePool, type StepTables } from '../../src/pool/index.js';
import { planAppend, planRope } from '../../kernels/append/index.js';
import { planBatchAttention, pageLayout } from '../../kernels/attention/index.js';
import { planQuestBatch } from '../../kernels/quest/index.js';
import { planDecode } from '../../kernels/dense/index.js';
import { compare } from '../../src/testing.js';
import { defaultConfig, makeWeights, mirror, type ModelConfig } from './model.js';

export interface EngineOptions {
  /** Short form for CI: 4 short prompts, 6 decode steps, 8-token pages. */
  small?: boolean;
  /** Overrides of the model configuration (layers, steps, prompts, ...). */
  config?: Partial<ModelConfig>;
  /** The engine's device (default: its own, made with plain WebGPU calls and destroyed at the end). */
  device?: GPUDevice;
  /** Also time today's way (a new decode plan per step and layer) in the same run (default false). */
  baseline?: boolean;
  /** Skip the float64 mirror (relRms is then NaN). */
  skipMirror?: boolean;
}

export interface EngineResult {
  adapter: string;
  adapterClass: 'cpu' | 'gpu';
  layers: number;
  layerKinds: string[];
  batch: number;
  prompts: number[];
  steps: number;
  kvDtype: 'f32';
  /** Host time per decode step (pool tables, schedules, encoding, submit), microseconds. */
  hostUsPerStep: { median: number; p90: number };
  /** Medians of the host time's parts: pool step tables, the plans' schedules, encoding the layers, encoder finish, queue.submit. */
  hostUsBreakdown: { poolTables: number; schedules: number; encode: number; finish: number; submit: number };
  /** Wall time from submit to onSubmittedWorkDone of one decode step submitted alone (no timestamp queries). */
  gpuMsPerStep: { median: number };
  /** Over the decode steps after the warm-up (the first `warmupSteps`, which fill bind-group caches). */
  buffersCreatedPerStep: number;
  bindGroupsCreatedPerStep: number;
  submitsPerStep: number;
  /** Readbacks before the end of the loop (0) and in all (1: the final one). */
  readbacks: number;
  readbacksTotal: number;
  warmupSteps: number;
  /** Bind groups created during the warm-up steps (cache fill: schedule slots, split-K merge). */
  bindGroupsWarmup: number;
  /** Rel RMS of the last layer's outputs (prefill's last token and every decode step) vs the float64 mirror. */
  relRms: number;
  maxAbs: number;
  /** Smallest Quest score margin in the mirror (a near-tie could select differently). */
  questMargin: number;
  questSelections: number;
  /** Pages released by the window layer's pool, and pages in use at the end (full / window pools). */
  windowPagesReleased: number;
  pagesInUse: { full: number; window: number };
  planMs: number;
  loopMs: number;
  baseline?: { hostUsPerStep: { median: number }; buffersCreatedPerStep: number };
}

/** The engine's own kernels: projections (with the pre-norm folded in), residual add, the next-token mix. */
const ENGINE_WGSL = /* wgsl */ `
struct Step { rows: u32, eOff: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> step: Step;
override K: u32 = 128;
override N: u32 = 128;
override NORM: bool = true;
override ACC: bool = false;
override EPS: f32 = 1e-6;
override ALPHA: f32 = 0.5;

// y[r, n] (+)= inv_r * sum_k x[r, k] w[k, n]; inv_r = 1 / sqrt(mean_k x[r, k]^2 + eps) with NORM.
@compute @workgroup_size(64)
fn matmul(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n = gid.x;
  let r = gid.y;
  if (n >= N || r >= step.rows) {
    return;
  }
  var inv = 1.0;
  if (NORM) {
    var ss = 0.0;
    for (var k = 0u; k < K; k++) {
      let a = x[r * K + k];
      ss += a * a;
    }
    inv = 1.0 / sqrt(ss / f32(K) + EPS);
  }
  var s = 0.0;
  for (var k = 0u; k < K; k++) {
    s += x[r * K + k] * w[k * N + n];
  }
  if (ACC) {
    y[r * N + n] = y[r * N + n] + s * inv;
  } else {
    y[r * N + n] = s * inv;
  }
}

// The next input of each sequence: y[r] = ALPHA * norm(y[r]) + (1 - ALPHA) * e[eOff + r] (x = e here).
@compute @workgroup_size(64)
fn mix(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r = gid.x;
  if (r >= step.rows) {
    return;
  }
  var ss = 0.0;
  for (var k = 0u; k < K; k++) {
    let a = y[r * K + k];
    ss += a * a;
  }
  let inv = 1.0 / sqrt(ss / f32(K) + EPS);
  for (var k = 0u; k < K; k++) {
    y[r * K + k] = ALPHA * (y[r * K + k] * inv) + (1.0 - ALPHA) * x[step.eOff + r * K + k];
  }
}
`;

/**
 * The engine's fused q/k/v projection: one dispatch per layer writes q, k and v (columns of one
 * concatenated weight `[Wq | Wk | Wv]`), each column computed as `matmul` computes it.
 */
const QKV_WGSL = /* wgsl */ `
struct Step { rows: u32, eOff: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> q_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> k_out: array<f32>;
@group(0) @binding(4) var<storage, read_write> v_out: array<f32>;
@group(0) @binding(5) var<uniform> step: Step;
override K: u32 = 128;
override NQ: u32 = 512;
override NKV: u32 = 128;
override EPS: f32 = 1e-6;

// [q | k | v][r, n] = inv_r * sum_k x[r, k] w[k, n]; inv_r = 1 / sqrt(mean_k x[r, k]^2 + eps).
@compute @workgroup_size(64)
fn qkv(@builtin(global_invocation_id) gid: vec3<u32>) {
  let N = NQ + 2u * NKV;
  let n = gid.x;
  let r = gid.y;
  if (n >= N || r >= step.rows) {
    return;
  }
  var ss = 0.0;
  for (var k = 0u; k < K; k++) {
    let a = x[r * K + k];
    ss += a * a;
  }
  let inv = 1.0 / sqrt(ss / f32(K) + EPS);
  var s = 0.0;
  for (var k = 0u; k < K; k++) {
    s += x[r * K + k] * w[k * N + n];
  }
  if (n < NQ) {
    q_out[r * NQ + n] = s * inv;
  } else if (n < NQ + NKV) {
    k_out[r * NKV + n - NQ] = s * inv;
  } else {
    v_out[r * NKV + n - NQ - NKV] = s * inv;
  }
}
`;

interface Counters {
  buffers: number;
  groups: number;
  submits: number;
  active: boolean;
}

/** Counts buffers, bind groups and submits made on the device while `active` (wrappers on the instance). */
function instrument(device: GPUDevice): { c: Counters; restore: () => void } {
  const c: Counters = { buffers: 0, groups: 0, submits: 0, active: false };
  const cb = device.createBuffer;
  const cg = device.createBindGroup;
  const qs = device.queue.submit;
  const def = (o: object, k: string, v: unknown) =>
    Object.defineProperty(o, k, { value: v, configurable: true, writable: true, enumerable: false });
  // what restore() puts back: the own property if there was one, else none (the prototype's method)
  const own = ([o, k]: [object, string]) => [o, k, Object.getOwnPropertyDescriptor(o, k)] as const;
  const saved = (
    [
      [device, 'createBuffer'],
      [device, 'createBindGroup'],
      [device.queue, 'submit'],
    ] as [object, string][]
  ).map(own);
  def(device, 'createBuffer', function (this: GPUDevice, d: GPUBufferDescriptor) {
    if (c.active) c.buffers++;
    return cb.call(device, d);
  });
  def(device, 'createBindGroup', function (this: GPUDevice, d: GPUBindGroupDescriptor) {
    if (c.active) c.groups++;
    return cg.call(device, d);
  });
  def(device.queue, 'submit', function (this: GPUQueue, cmds: Iterable<GPUCommandBuffer>) {
    if (c.active) c.submits++;
    return qs.call(device.queue, cmds);
  });
  return {
    c,
    restore: () => {
      for (const [o, k, d] of saved) {
        if (d) Object.defineProperty(o, k, d);
        else delete (o as Record<string, unknown>)[k];
      }
    },
  };
}

async function engineDevice(): Promise<{ device: GPUDevice; release: () => void }> {
  let gpu: GPU;
  let release = () => {};
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu && !globalThis.process?.versions?.node) gpu = nav.gpu;
  else {
    const { createNodeGpu } = await import('../../src/gpu/node.js');
    ({ gpu, release } = await createNodeGpu());
  }
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new Error('engine: no WebGPU adapter');
  const device = await adapter.requestDevice({ label: 'example.engine' });
  return { device, release };
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))]! : NaN;
}

/**
 * Runs the engine and returns its numbers (see {@link EngineResult}).
 *
 * @example
 * const r = await main({ small: true });
 * console.log(r.relRms, r.submitsPerStep, r.buffersCreatedPerStep);
 */
export async function main(opts: EngineOptions = {}): Promise<EngineResult> {
  const cfg: ModelConfig = { ...defaultConfig(opts.small ?? false), ...opts.config };
  const { Hq, Hkv, D, Dm, pageSize: P, steps: S } = cfg;
  const B = cfg.prompts.length;
  const L = cfg.layers.length;
  const totalPrompt = cfg.prompts.reduce((a, b) => a + b, 0);
  const maxRows = Math.max(totalPrompt, B);
  const maxLen = Math.max(...cfg.prompts) + S;
  const maxPagesPerSeq = Math.ceil(maxLen / P);
  const capFull = B * maxPagesPerSeq;
  const capWindow =
    B *
    Math.min(
      maxPagesPerSeq,
      Math.ceil(cfg.sinks / P) + Math.ceil(Math.max(...cfg.prompts) / P) + Math.ceil(cfg.window / P) + 2,
    );
  const K = cfg.questBudgetPages;
  const weights = makeWeights(cfg);

  let owned: { device: GPUDevice; release: () => void } | undefined;
  if (!opts.device) owned = await engineDevice();
  const device = opts.device ?? owned!.device;
  const ctx: TesseraDevice = wrapDevice(device);
  submitEpoch(ctx); // the attention core's submit counter sits under the instrumentation below
  const buffers: GPUBuffer[] = [];
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  const buffer = (bytes: number, label: string, u = usage) => {
    const b = device.createBuffer({ size: Math.max(16, Math.ceil(bytes / 16) * 16), usage: u, label });
    buffers.push(b);
    return b;
  };
  const plans: { dispose(): void }[] = [];
  const { c, restore } = instrument(device);
  try {
    const t0 = performance.now();
    // --- The engine's buffers.
    const layout = pageLayout(P, Hkv, D, D, 'f32');
    const x = buffer(maxRows * Dm * 4, 'engine.x');
    const qb = buffer(maxRows * Hq * D * 4, 'engine.q');
    const kb = buffer(maxRows * Hkv * D * 4, 'engine.k');
    const vb = buffer(maxRows * Hkv * D * 4, 'engine.v');
    const ob = buffer(maxRows * Hq * D * 4, 'engine.o');
    const hb = buffer(B * Dm * 4, 'engine.h');
    const history = buffer((S + 1) * B * Dm * 4, 'engine.history');
    const eDec = buffer(weights.eDecode.byteLength, 'engine.eDecode');
    const stepU = buffer(16, 'engine.step', GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
    const mixU = buffer(16, 'engine.mix', GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
    device.queue.writeBuffer(x, 0, weights.ePrompt);
    device.queue.writeBuffer(eDec, 0, weights.eDecode);
    // Per layer: the concatenated [Wq | Wk | Wv] (row k: Wq's row k, then Wk's, then Wv's) and Wo.
    const Nqkv = (Hq + 2 * Hkv) * D;
    const W = weights.layers.map((w, l) => {
      const cat = new Float32Array(Dm * Nqkv);
      for (let r = 0; r < Dm; r++) {
        cat.set(w.wq.subarray(r * Hq * D, (r + 1) * Hq * D), r * Nqkv);
        cat.set(w.wk.subarray(r * Hkv * D, (r + 1) * Hkv * D), r * Nqkv + Hq * D);
        cat.set(w.wv.subarray(r * Hkv * D, (r + 1) * Hkv * D), r * Nqkv + (Hq + Hkv) * D);
      }
      const wqkv = buffer(cat.byteLength, `engine.wqkv${l}`);
      const wo = buffer(w.wo.byteLength, `engine.wo${l}`);
      device.queue.writeBuffer(wqkv, 0, cat);
      device.queue.writeBuffer(wo, 0, w.wo);
      return { wqkv, wo };
    });
    // Page pools: full and Quest layers share one page table (same page ids in each layer's pool
    // buffer); window layers have their own, from which pages that left the window are released.
    const poolFull = createPagePool({ capacity: capFull, pageSize: P });
    const poolWin = createPagePool({ capacity: capWindow, pageSize: P });
    const seqsFull = cfg.prompts.map(() => poolFull.addSequence());
    const seqsWin = cfg.prompts.map(() => poolWin.addSequence());
    const pages = cfg.layers.map((kind, l) =>
      buffer((kind === 'window' ? capWindow : capFull) * layout.pageBytes, `engine.pages${l}`),
    );
    const questLayer = cfg.layers.indexOf('quest');
    const summaries = buffer(capFull * Hkv * 2 * D * 2, 'engine.summaries');

    // --- Plans: compile once, for capacities.
    const rope = { style: 'half' as const, theta: cfg.theta, maxPosition: maxLen };
    const appendFull = await planAppend(ctx, {
      Hkv,
      D,
      pageSize: P,
      pageDtype: 'f32',
      inputDtype: 'f32',
      maxPages: capFull,
      maxBatch: B,
      maxRows,
      rope,
    });
    // The window table keeps one entry per logical page (released ones name a placeholder).
    const appendWin = await planAppend(ctx, {
      Hkv,
      D,
      pageSize: P,
      pageDtype: 'f32',
      inputDtype: 'f32',
      maxPages: capWindow,
      maxTableEntries: capFull,
      maxBatch: B,
      maxRows,
      rope,
      summaries: false,
    });
    const ropeQ = await planRope(ctx, { H: Hq, D, maxRows, ...rope });
    // kvChunk = the longest sequence: one part per sequence where the device allows it, so the
    // split-K decision (and the bind groups it needs) does not change in the middle of the run.
    const common = {
      maxBatch: B,
      maxQTokens: maxRows,
      Hq,
      Hkv,
      D,
      pageSize: P,
      kvDtype: 'f32' as const,
      qDtype: 'f32' as const,
      kvChunk: maxLen,
    };
    const attnFull = await planBatchAttention(ctx, { ...common, maxPages: capFull, poolPages: capFull });
    const attnWin = await planBatchAttention(ctx, {
      ...common,
      maxPages: capFull,
      poolPages: capWindow,
      window: cfg.window,
      sinks: cfg.sinks,
    });
    // The Quest layer's attention reads a schedule the GPU fills: the selection writes the page
    // ids straight into its kvIndices; the host writes the rest (lengths are known on the host).
    const attnQuest = await planBatchAttention(ctx, { ...common, maxQTokens: B, maxPages: B * K, poolPages: capFull });
    const qLayout = attnQuest.scheduleLayout;
    const questSchedule = buffer(qLayout.words * 4, 'engine.questSchedule');
    const questHost = new Uint32Array(qLayout.kvIndices);
    questHost.set(qLayout.header);
    attnQuest.useSchedule(questSchedule);
    const quest = await planQuestBatch(ctx, {
      Hq,
      Hkv,
      D,
      budgetPages: K,
      sinkPages: cfg.questSinkPages,
      maxBatch: B,
      maxPagesPerSeq,
      maxPages: capFull,
      selectedOffset: qLayout.kvIndices,
    });
    plans.push(appendFull, appendWin, ropeQ, attnFull, attnWin, attnQuest, quest);
    // The engine's pipelines and bind groups (made once).
    const module = device.createShaderModule({ code: ENGINE_WGSL, label: 'engine' });
    const bgl = device.createBindGroupLayout({
      entries: [0, 1, 2, 3].map((i) => ({
        binding: i,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: i === 3 ? 'uniform' : i === 2 ? 'storage' : 'read-only-storage' } as GPUBufferBindingLayout,
      })),
    });
    const layoutP = device.createPipelineLayout({ bindGroupLayouts: [bgl] });
    const pipe = (entryPoint: string, constants: Record<string, number>) =>
      device.createComputePipeline({ layout: layoutP, compute: { module, entryPoint, constants } });
    const group = (xs: GPUBuffer, ws: GPUBuffer, ys: GPUBuffer, u: GPUBuffer) =>
      device.createBindGroup({
        layout: bgl,
        entries: [xs, ws, ys, u].map((b, i) => ({ binding: i, resource: { buffer: b } })),
      });
    const po = pipe('matmul', { K: Hq * D, N: Dm, NORM: 0, ACC: 1 });
    const pmix = pipe('mix', { K: Dm, EPS: cfg.eps, ALPHA: cfg.alpha });
    const bglQkv = device.createBindGroupLayout({
      entries: [0, 1, 2, 3, 4, 5].map((i) => ({
        binding: i,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: i === 5 ? 'uniform' : i >= 2 ? 'storage' : 'read-only-storage' } as GPUBufferBindingLayout,
      })),
    });
    const pqkv = device.createComputePipeline({
      layout: device.createPipelineLayout({ bindGroupLayouts: [bglQkv] }),
      compute: {
        module: device.createShaderModule({ code: QKV_WGSL, label: 'engine.qkv' }),
        entryPoint: 'qkv',
        constants: { K: Dm, NQ: Hq * D, NKV: Hkv * D, EPS: cfg.eps },
      },
    });
    const G = W.map((w) => ({
      qkv: device.createBindGroup({
        layout: bglQkv,
        entries: [x, w.wqkv, qb, kb, vb, stepU].map((b, i) => ({ binding: i, resource: { buffer: b } })),
      }),
      o: group(ob, w.wo, x, stepU),
    }));
    const gMix = group(eDec, eDec, x, mixU);
    const planMs = performance.now() - t0;

    const dispatch = (pass: GPUComputePassEncoder, p: GPUComputePipeline, g: GPUBindGroup, wx: number, wy = 1) => {
      pass.setPipeline(p);
      pass.setBindGroup(0, g);
      pass.dispatchWorkgroups(wx, wy);
    };
    // The step's tensors, made once: shapes name the buffers' capacity so bind groups stay the
    // same from step to step; the Quest layer's GPU schedule sizes its dispatches for B query rows.
    const q = { buffer: qb, shape: [maxRows, Hq, D], dtype: 'f32' as const };
    const o = { buffer: ob, shape: [maxRows, Hq, D], dtype: 'f32' as const };
    const k = { buffer: kb, shape: [maxRows, Hkv, D], dtype: 'f32' as const };
    const v = { buffer: vb, shape: [maxRows, Hkv, D], dtype: 'f32' as const };
    const qDec = { buffer: qb, shape: [B, Hq, D], dtype: 'f32' as const };
    const oDec = { buffer: ob, shape: [B, Hq, D], dtype: 'f32' as const };
    const tq = { x: q };
    const appendT = cfg.layers.map((kind, l) =>
      kind === 'quest' ? { k, v, pages: pages[l]!, summaries } : { k, v, pages: pages[l]! },
    );
    const attnT = pages.map((p) => ({ q, o, pages: p }));
    const attnQuestT = pages.map((p) => ({ q: qDec, o: oDec, pages: p }));
    const questT = { q, summaries, selected: questSchedule };
    const stepWords = new Uint32Array(4);
    let scheduledAt = 0;
    const mixWords = new Uint32Array(4);
    /** One step: the layers over `rows` new rows (tables from the pools), into one encoder. */
    const encodeLayers = (enc: GPUCommandEncoder, tf: StepTables, tw: StepTables, rows: number, decode: boolean) => {
      appendFull.schedule(tf);
      appendWin.schedule(tw);
      ropeQ.schedule(tf);
      attnFull.schedule(tf);
      attnWin.schedule(tw);
      if (decode && questLayer >= 0) {
        const sel = quest.schedule(tf);
        questHost[0] = B; // totalQ (one query per sequence), then B
        questHost[1] = B;
        for (let b = 0; b <= B; b++) {
          questHost[qLayout.qoIndptr + b] = b;
          questHost[qLayout.kvIndptr + b] = sel.selIndptr[b]!;
        }
        for (let b = 0; b < B; b++) questHost[qLayout.kvLastPageLen + b] = sel.selLastPageLen[b]!;
        device.queue.writeBuffer(questSchedule, 0, questHost);
      }
      if (stepWords[0] !== rows) {
        stepWords[0] = rows; // decode steps keep B rows: written once, not every step
        device.queue.writeBuffer(stepU, 0, stepWords);
      }
      scheduledAt = performance.now();
      // All layers of a step are one compute pass (a dispatch sees the writes of the dispatches
      // before it): projections, RoPE, append, Quest selection and the attention core encode into
      // the engine's open pass.
      const pass = enc.beginComputePass({ label: 'engine.step' });
      for (let l = 0; l < L; l++) {
        const kind = cfg.layers[l]!;
        const g = G[l]!;
        dispatch(pass, pqkv, g.qkv, Math.ceil(Nqkv / 64), rows);
        ropeQ.run(pass, tq);
        if (kind === 'window') {
          appendWin.run(pass, appendT[l]!);
          attnWin.run(pass, attnT[l]!);
        } else if (kind === 'quest' && decode) {
          appendFull.run(pass, appendT[l]!);
          quest.run(pass, questT);
          attnQuest.run(pass, attnQuestT[l]!);
        } else {
          appendFull.run(pass, appendT[l]!);
          attnFull.run(pass, attnT[l]!);
        }
        dispatch(pass, po, g.o, Math.ceil(Dm / 64), rows);
      }
      pass.end();
    };
    const mix = (enc: GPUCommandEncoder, s: number) => {
      mixWords[0] = B;
      mixWords[1] = s * B * Dm;
      device.queue.writeBuffer(mixU, 0, mixWords);
      const pass = enc.beginComputePass({ label: 'engine.mix' });
      dispatch(pass, pmix, gMix, 1);
      pass.end();
    };
    const windowSpan = { window: cfg.window, sinkTokens: cfg.sinks };
    const releaseWindow = () => {
      let n = 0;
      for (const s of seqsWin) n += poolWin.releaseOutsideWindow(s, windowSpan);
      return n;
    };

    // --- Prefill: all prompts in one step (ragged), then the first decode input.
    const t1 = performance.now();
    let released = 0;
    {
      const tf = poolFull.step(seqsFull.map((seq, b) => ({ seq, tokens: cfg.prompts[b]! })));
      const tw = poolWin.step(seqsWin.map((seq, b) => ({ seq, tokens: cfg.prompts[b]! })));
      const enc = device.createCommandEncoder({ label: 'engine.prefill' });
      encodeLayers(enc, tf, tw, totalPrompt, false);
      for (let b = 0; b < B; b++) enc.copyBufferToBuffer(x, (tf.qoIndptr[b + 1]! - 1) * Dm * 4, hb, b * Dm * 4, Dm * 4);
      enc.copyBufferToBuffer(hb, 0, history, 0, B * Dm * 4);
      enc.copyBufferToBuffer(hb, 0, x, 0, B * Dm * 4);
      if (S > 0) mix(enc, 0);
      device.queue.submit([enc.finish()]);
      released += releaseWindow();
    }
    // --- Decode: 1 submit per step, no readback, no buffer created.
    const warmupSteps = Math.min(8, Math.floor(S / 2));
    const hostUs: number[] = [];
    const parts: number[][] = [];
    let last: { tf: StepTables; tw: StepTables } | undefined;
    const decodeEntries = (seqs: number[]) => seqs.map((seq) => ({ seq, tokens: 1 }));
    const entriesFull = decodeEntries(seqsFull);
    const entriesWin = decodeEntries(seqsWin);
    let warmGroups = 0;
    let warmBuffers = 0;
    for (let s = 0; s < S; s++) {
      if (s === warmupSteps) {
        warmGroups = c.groups;
        warmBuffers = c.buffers;
        c.groups = c.buffers = c.submits = 0;
      }
      c.active = true;
      const h0 = performance.now();
      const tf = poolFull.step(entriesFull);
      const tw = poolWin.step(entriesWin);
      const h1 = performance.now();
      last = { tf, tw };
      const enc = device.createCommandEncoder();
      encodeLayers(enc, tf, tw, B, true);
      const h2 = performance.now();
      enc.copyBufferToBuffer(x, 0, history, (s + 1) * B * Dm * 4, B * Dm * 4);
      if (s + 1 < S) mix(enc, s + 1);
      const cb = enc.finish();
      const h3 = performance.now();
      device.queue.submit([cb]);
      const h4 = performance.now();
      released += releaseWindow();
      hostUs.push((performance.now() - h0) * 1000);
      parts.push([h1 - h0, scheduledAt - h1, h2 - scheduledAt, h3 - h2, h4 - h3].map((x) => x * 1000));
      c.active = false;
    }
    const measured = Math.max(1, S - warmupSteps);
    const counts = { ...c };
    void warmBuffers;
    // --- The one readback.
    const staging = buffer((S + 1) * B * Dm * 4, 'engine.staging', GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
    const enc = device.createCommandEncoder({ label: 'engine.readback' });
    enc.copyBufferToBuffer(history, 0, staging, 0, staging.size);
    device.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const got = new Float32Array(staging.getMappedRange().slice(0));
    staging.unmap();
    const loopMs = performance.now() - t1;
    // GPU time: after the check's data is read, the last step is encoded again a few times, each
    // submitted and awaited alone (it rewrites the same pages: the state no longer matters).
    const gpuMs: number[] = [];
    for (let i = 0; i < (last ? 8 : 0); i++) {
      const e = device.createCommandEncoder();
      encodeLayers(e, last!.tf, last!.tw, B, true);
      const cmd = e.finish();
      const g0 = performance.now();
      device.queue.submit([cmd]);
      await device.queue.onSubmittedWorkDone();
      gpuMs.push(performance.now() - g0);
    }
    const partsMedian = [0, 1, 2, 3, 4].map((i) =>
      quantile(
        parts.slice(warmupSteps).map((p) => p[i]!),
        0.5,
      ),
    );

    // --- Today's way, same run: a new decode plan per step and layer (contiguous K/V).
    let baseline: EngineResult['baseline'];
    if (opts.baseline) {
      const lens = cfg.prompts.map((p) => p + 1);
      const kvRows = lens.reduce((a, b) => a + b, 0) + B * S;
      const kc = buffer(kvRows * Hkv * D * 4, 'baseline.k');
      const vc = buffer(kvRows * Hkv * D * 4, 'baseline.v');
      const us: number[] = [];
      c.buffers = 0;
      const n = Math.min(S, 32);
      for (let s = 0; s < n; s++) {
        c.active = true;
        const h0 = performance.now();
        const e = device.createCommandEncoder();
        const step: { dispose(): void }[] = [];
        const kvLens = lens.map((l) => l + s);
        const total = kvLens.reduce((a, b) => a + b, 0);
        for (let l = 0; l < L; l++) {
          const p = await planDecode(ctx, { Hq, Hkv, D, kvLens });
          p.run(e, {
            q: { buffer: qb, shape: [B, Hq, D], dtype: 'f32' },
            k: { buffer: kc, shape: [total, Hkv, D], dtype: 'f32' },
            v: { buffer: vc, shape: [total, Hkv, D], dtype: 'f32' },
            o: { buffer: ob, shape: [B, Hq, D], dtype: 'f32' },
          });
          step.push(p);
        }
        device.queue.submit([e.finish()]);
        us.push((performance.now() - h0) * 1000);
        c.active = false;
        await device.queue.onSubmittedWorkDone();
        for (const p of step) p.dispose();
      }
      baseline = { hostUsPerStep: { median: quantile(us, 0.5) }, buffersCreatedPerStep: c.buffers / n };
    }

    // --- The float64 mirror of the whole model.
    let relRms = NaN;
    let maxAbs = NaN;
    let questMargin = NaN;
    let questSelections = 0;
    if (!opts.skipMirror) {
      const m = mirror(cfg, weights);
      const cmp = compare(got, m.history);
      relRms = cmp.badCount ? Infinity : cmp.relRms;
      maxAbs = cmp.maxAbs;
      questMargin = m.questMargin;
      questSelections = m.questSelections;
    }
    return {
      adapter: ctx.adapterName,
      adapterClass: ctx.adapterClass,
      layers: L,
      layerKinds: [...cfg.layers],
      batch: B,
      prompts: [...cfg.prompts],
      steps: S,
      kvDtype: 'f32',
      hostUsPerStep: {
        median: quantile(hostUs.slice(warmupSteps), 0.5),
        p90: quantile(hostUs.slice(warmupSteps), 0.9),
      },
      hostUsBreakdown: {
        poolTables: partsMedian[0]!,
        schedules: partsMedian[1]!,
        encode: partsMedian[2]!,
        finish: partsMedian[3]!,
        submit: partsMedian[4]!,
      },
      gpuMsPerStep: { median: quantile(gpuMs, 0.5) },
      buffersCreatedPerStep: counts.buffers / measured,
      bindGroupsCreatedPerStep: counts.groups / measured,
      submitsPerStep: counts.submits / measured,
      readbacks: 0,
      readbacksTotal: 1,
      warmupSteps,
      bindGroupsWarmup: warmGroups,
      relRms,
      maxAbs,
      questMargin,
      questSelections,
      windowPagesReleased: released,
      pagesInUse: { full: poolFull.used, window: poolWin.used },
      planMs,
      loopMs,
      baseline,
    };
  } finally {
    restore();
    for (const p of plans) p.dispose();
    for (const b of buffers) b.destroy();
    if (owned) {
      owned.device.destroy();
      owned.release();
    }
  }
}

/** Prints the summary of a result. */
export function summary(r: EngineResult): string {
  return [
    `engine example on ${r.adapter} (${r.adapterClass} kernels): ${r.layers} layers (${r.layerKinds.join(', ')}), batch ${r.batch} (prompts ${r.prompts.join(', ')}), ${r.steps} decode steps, f32 KV pages`,
    `  per decode step: ${r.submitsPerStep} submit, ${r.buffersCreatedPerStep} GPU buffers and ${r.bindGroupsCreatedPerStep} bind groups created (after ${r.warmupSteps} warm-up steps: ${r.bindGroupsWarmup} bind groups), ${r.readbacks} readbacks until the end`,
    `  host ${r.hostUsPerStep.median.toFixed(0)} us/step median (p90 ${r.hostUsPerStep.p90.toFixed(0)}), GPU ${r.gpuMsPerStep.median.toFixed(2)} ms/step`,
    `  window pool released ${r.windowPagesReleased} pages; Quest selections ${r.questSelections} (min margin ${r.questMargin.toExponential(2)})`,
    `  final hidden states vs float64 mirror: rel RMS ${r.relRms.toExponential(2)}, max abs ${r.maxAbs.toExponential(2)}: ${r.relRms <= 1e-5 ? 'PASS' : 'FAIL'} (<= 1e-5)`,
    r.baseline
      ? `  baseline (a new decode plan per step and layer): host ${r.baseline.hostUsPerStep.median.toFixed(0)} us/step, ${r.baseline.buffersCreatedPerStep} buffers/step`
      : '',
  ]
    .filter(Boolean)
    .join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const r = await main({ small: process.argv.includes('--small'), baseline: process.argv.includes('--baseline') });
  console.log(summary(r));
  process.exitCode = r.relRms <= 1e-5 ? 0 : 1;
}
