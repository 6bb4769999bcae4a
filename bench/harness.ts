/**
 * The benchmark harness every suite uses (the "Bench harness" contract of the cross-team API):
 *
 * - {@link timeGpu}: warm-up, then `runs` timed runs of GPU work a suite encodes; GPU timestamp
 *   queries where the adapter has them, else wall clock around `onSubmittedWorkDone` (the result's
 *   `source` says which); median, min and max.
 * - {@link measureRoofline}: the adapter's roofline, measured in the same process: a vec4 copy
 *   kernel's bandwidth and the best register-blocked f32 matmul we have for the adapter class.
 * - {@link pctRoofline}: a result as a percentage of that roofline.
 * - {@link writeResults}: `bench/results/<adapter>/<suite>.json`, a Markdown table and SVG plots
 *   (Vega-Lite rendered headless by Vega, no canvas needed).
 * - {@link measureCpu}: CPU-side timings (plan, encode) with Benchmark.js.
 *
 * Probe shaders live in `bench/roofline/*.wgsl` and load like kernel shaders.
 */
import { TesseraError } from '../src/errors.js';
import { ctxOf, requestDevice, adapterFromEnv, type DeviceLike, type TesseraDevice } from '../src/gpu/device.js';
import { bindGroup, getPipeline, grid2d, wgslProgram, type Pipeline } from '../src/gpu/pipeline.js';
import { GpuTimer, type TimingSource } from '../src/gpu/timer.js';
import { uniformLayout } from '../src/gpu/uniforms.js';
import copyWgsl from './roofline/copy.wgsl.js';
import matmulRegWgsl from './roofline/matmul_reg.wgsl.js';
import matmulTiledWgsl from './roofline/matmul_tiled.wgsl.js';
import matmulQuadWgsl from './roofline/matmul_quad.wgsl.js';
import { optionalImport } from '../src/cli-common.js';

export type { TimingSource };

/**
 * The default results folder, `<repo>/bench/results` (Node only; the harness itself also loads in
 * a browser: file output is imported lazily).
 */
export async function resultsDir(): Promise<string> {
  // TESSERA_BENCH_DIR (the GPU bundle's run.sh sets it to $OUT) moves every suite's output.
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.TESSERA_BENCH_DIR;
  if (env) return env;
  const { fileURLToPath } = await import('node:url');
  return fileURLToPath(new URL('./results', import.meta.url));
}

// ---------------------------------------------------------------------------------------------
// Results

/** One measured configuration. The JSON shape every suite shares. */
export interface BenchResult {
  suite: string;
  /** `tessera`, `tfjs`, or a labelled variant (`tessera-norobust`). */
  impl: 'tessera' | 'tfjs' | string;
  T: number;
  D: number;
  H: number;
  dtype: string;
  median_ms: number;
  min_ms: number;
  max_ms: number;
  runs: number;
  /** Floating-point operations of one run (a multiply-add counts 2). */
  flops: number;
  /** Bytes one run must move at least (inputs read once, outputs written once). */
  bytes: number;
  /** {@link pctRoofline} of the median. */
  pct_roofline: number;
  /** Sub-variant within a suite (`prefill`, `decode`, `chunk`, ...). */
  mode?: string;
  [extra: string]: unknown;
}

/** The adapter's roofline, measured in the same run as the results it judges. */
export interface Roofline {
  /**
   * Bandwidth of the copy probe, GB/s (10^9 bytes/s), counting bytes read + bytes written, from
   * the best (minimum) time of its runs, as STREAM reports: a ceiling, which other processes on
   * the machine can only lower.
   */
  copy_gbps: number;
  /** Rate of the matmul probe, GFLOP/s (10^9 flop/s, a multiply-add is 2), from its best time. */
  matmul_gflops: number;
  /** How the probes were timed. */
  source: TimingSource;
  /** The copy probe: variant, bytes per run, timing. */
  copy: { variant: string; bytes: number; median_ms: number; min_ms: number; max_ms: number; runs: number; variants?: Record<string, number>; cpu_share?: number };
  /** The matmul probe that won, its size, timing, and every variant tried (GFLOP/s). */
  matmul: { variant: string; M: number; N: number; K: number; median_ms: number; min_ms: number; max_ms: number; runs: number; variants: Record<string, number>; cpu_share?: number };
  adapter: string;
  adapter_class: 'cpu' | 'gpu';
  [extra: string]: unknown;
}

/** What {@link writeResults} writes: `{adapter, roofline, results}` plus optional metadata. */
export interface BenchReport {
  adapter: string;
  roofline: Roofline;
  results: BenchResult[];
  [extra: string]: unknown;
}

// ---------------------------------------------------------------------------------------------
// Statistics and timing

/** Median, min and max of samples (median of an even count: mean of the middle two). */
export function stats(samples: readonly number[]): { median: number; min: number; max: number } {
  if (samples.length === 0) throw new TesseraError('E_ARG', 'stats: no samples', { argument: 'samples', actual: 0, expected: 'at least one sample' });
  const s = [...samples].sort((a, b) => a - b);
  const m = s.length >> 1;
  const median = s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
  return { median, min: s[0]!, max: s[s.length - 1]! };
}

export interface Timing {
  median_ms: number;
  min_ms: number;
  max_ms: number;
  runs: number;
  samples: number[];
  source: TimingSource;
  /**
   * Node only: CPU time this process used per timed run (median, ms), over wall time per run
   * times the CPU count. On a software adapter, which runs the GPU work on this process's
   * threads, a share well below 1 means other processes were taking the CPU: the times are
   * slower than the adapter can do.
   */
  cpu_share?: number;
}

export interface TimeOptions {
  /** Untimed runs first (pipeline warm-up, page faults in the software adapter). Default 1. */
  warmup?: number;
  /** Timed runs (at least 1; suites use >= 5 unless a run takes seconds). Default 5. */
  runs?: number;
  /** Wall clock even where timestamps exist (for comparison). */
  forceWallclock?: boolean;
}

function timingFrom(samples: number[], source: TimingSource): Timing {
  const s = stats(samples);
  return { median_ms: s.median, min_ms: s.min, max_ms: s.max, runs: samples.length, samples, source };
}

function checkRuns(o: TimeOptions): { warmup: number; runs: number } {
  const warmup = o.warmup ?? 1;
  const runs = o.runs ?? 5;
  if (!Number.isInteger(warmup) || warmup < 0) throw new TesseraError('E_ARG', 'warmup must be an integer >= 0', { argument: 'warmup', actual: warmup, expected: 'an integer >= 0' });
  if (!Number.isInteger(runs) || runs < 1) throw new TesseraError('E_ARG', 'runs must be an integer >= 1', { argument: 'runs', actual: runs, expected: 'an integer >= 1' });
  return { warmup, runs };
}

/**
 * Times GPU work: `encode` records it into a fresh encoder each run; `warmup` untimed runs, then
 * `runs` timed ones. With timestamp queries the time is between an empty pass before the work
 * and one after it, on the GPU's clock; otherwise wall clock from submit to
 * `onSubmittedWorkDone` (includes submit overhead; `source: 'wallclock'` says so).
 *
 * @example
 * const t = await timeGpu(dev, (enc) => plan.run(enc, tensors), { warmup: 1, runs: 5 });
 * console.log(`${t.median_ms.toFixed(2)} ms (${t.source})`);
 */
export async function timeGpu(dev: DeviceLike, encode: (enc: GPUCommandEncoder) => void, opts: TimeOptions = {}): Promise<Timing> {
  const ctx = ctxOf(dev);
  const { warmup, runs } = checkRuns(opts);
  const timer = new GpuTimer(ctx, { forceWallclock: opts.forceWallclock });
  try {
    return await ctx.scoped('timeGpu', async () => {
      for (let i = 0; i < warmup; i++) await timer.time(encode);
      const samples: number[] = [];
      const shares: number[] = [];
      for (let i = 0; i < runs; i++) {
        const c0 = cpuNow();
        const w0 = performance.now();
        samples.push(await timer.time(encode));
        const c1 = cpuNow();
        if (c0 !== undefined && c1 !== undefined) shares.push((c1 - c0) / ((performance.now() - w0) * cpuCount()));
      }
      const t = timingFrom(samples, timer.source);
      return shares.length ? { ...t, cpu_share: Math.round(stats(shares).median * 100) / 100 } : t;
    });
  } finally {
    timer.destroy();
  }
}

/** Process CPU time in ms (Node), else undefined. */
function cpuNow(): number | undefined {
  const p = (globalThis as { process?: { cpuUsage?: () => { user: number; system: number } } }).process;
  if (!p?.cpuUsage) return undefined;
  const u = p.cpuUsage();
  return (u.user + u.system) / 1000;
}

let cpus: number | undefined;
/** Logical CPUs available to this process (Node: os.availableParallelism; browser: hardwareConcurrency). */
export function cpuCount(): number {
  if (cpus === undefined) {
    const g = globalThis as { navigator?: { hardwareConcurrency?: number } };
    cpus = g.navigator?.hardwareConcurrency ?? 1;
    try {
      const req = (globalThis as { process?: { getBuiltinModule?: (m: string) => { availableParallelism?: () => number } } }).process?.getBuiltinModule?.('node:os');
      if (req?.availableParallelism) cpus = req.availableParallelism();
    } catch {
      /* keep the fallback */
    }
  }
  return cpus;
}

/**
 * Times an async host-driven operation by wall clock (for baselines that submit their own work,
 * such as TensorFlow.js: `fn` must wait for its GPU work to finish).
 *
 * @example
 * const t = await timeWall(async () => { const y = f(x); await y.data(); y.dispose(); }, { runs: 3 });
 */
export async function timeWall(fn: () => Promise<void>, opts: TimeOptions = {}): Promise<Timing> {
  const { warmup, runs } = checkRuns(opts);
  for (let i = 0; i < warmup; i++) await fn();
  const samples: number[] = [];
  const shares: number[] = [];
  for (let i = 0; i < runs; i++) {
    const c0 = cpuNow();
    const t0 = performance.now();
    await fn();
    const ms = performance.now() - t0;
    const c1 = cpuNow();
    samples.push(ms);
    if (c0 !== undefined && c1 !== undefined) shares.push((c1 - c0) / (ms * cpuCount()));
  }
  const t = timingFrom(samples, 'wallclock');
  return shares.length ? { ...t, cpu_share: Math.round(stats(shares).median * 100) / 100 } : t;
}

/** A CPU-side measurement by Benchmark.js. */
export interface CpuTiming {
  mean_us: number;
  /** Relative margin of error, percent. */
  rme_pct: number;
  samples: number;
}

/**
 * Measures a synchronous CPU-side operation (planning with a warm cache, encoding a plan into a
 * command encoder) with Benchmark.js, which picks the iteration count for a stable mean.
 *
 * @example
 * const enc = await measureCpu('encode', () => { const e = dev.device.createCommandEncoder(); plan.run(e, t); e.finish(); });
 * console.log(enc.mean_us);
 */
export async function measureCpu(name: string, fn: () => void, opts: { maxTime?: number } = {}): Promise<CpuTiming> {
  const { default: Benchmark } = (await import('benchmark')) as unknown as { default: BenchmarkCtor };
  return new Promise<CpuTiming>((resolveP, reject) => {
    const b = new Benchmark(name, fn, {
      maxTime: opts.maxTime ?? 0.5,
      minSamples: 5,
      onComplete() {
        if (b.error) reject(b.error);
        else resolveP({ mean_us: b.stats.mean * 1e6, rme_pct: b.stats.rme, samples: b.stats.sample.length });
      },
      onError(ev: { target?: { error?: unknown } }) {
        reject(ev?.target?.error ?? new Error(`benchmark ${name} failed`));
      },
    });
    b.run({ async: false });
  });
}

interface BenchmarkInstance {
  error?: unknown;
  stats: { mean: number; rme: number; sample: number[] };
  run(o: { async: boolean }): void;
}
type BenchmarkCtor = new (name: string, fn: () => void, o: Record<string, unknown>) => BenchmarkInstance;

// ---------------------------------------------------------------------------------------------
// Roofline probes

const COPY_PARAMS = uniformLayout('CopyParams', [['n', 'u32']] as const);
const MATMUL_PARAMS = uniformLayout('MatmulParams', [
  ['M', 'u32'],
  ['N', 'u32'],
  ['K', 'u32'],
] as const);

const COPY_PROGRAM = wgslProgram('bench/copy', [COPY_PARAMS.wgsl, copyWgsl]);
const MATMUL_REG_PROGRAM = wgslProgram('bench/matmul_reg', [MATMUL_PARAMS.wgsl, matmulRegWgsl]);
const MATMUL_QUAD_PROGRAM = wgslProgram('bench/matmul_quad', [MATMUL_PARAMS.wgsl, matmulQuadWgsl], ['subgroups']);
const MATMUL_TILED_PROGRAM = wgslProgram('bench/matmul_tiled', [MATMUL_PARAMS.wgsl, matmulTiledWgsl]);

/** A copy-probe variant: workgroup size, vec4s per invocation, contiguous or strided. */
export interface CopyVariant {
  name: string;
  wg: number;
  items: number;
  contiguous: boolean;
}

/** Copy variants per adapter class; `measureRoofline` times each and keeps the fastest. */
export const COPY_VARIANTS: Record<'cpu' | 'gpu', CopyVariant[]> = {
  cpu: [
    { name: 'wg64-items16-contiguous', wg: 64, items: 16, contiguous: true },
    { name: 'wg64-items16-strided', wg: 64, items: 16, contiguous: false },
  ],
  gpu: [{ name: 'wg256-items4-strided', wg: 256, items: 4, contiguous: false }],
};

/** A matmul-probe variant. */
export interface MatmulVariant {
  name: string;
  /**
   * Register-blocked without workgroup memory (`reg`, bench/roofline/matmul_reg.wgsl), the same
   * with quads sharing B by `quadBroadcast` (`quad`, matmul_quad.wgsl), or shared-memory tiled
   * (`tiled`, matmul_tiled.wgsl).
   */
  kind: 'reg' | 'quad' | 'tiled';
  /** Rows x columns of C per invocation. */
  rows: number;
  cols: number;
  /** Invocations per workgroup. */
  wg: number;
}

export const MATMUL_VARIANTS: Record<string, MatmulVariant> = {
  reg4x4: { name: 'reg4x4', kind: 'reg', rows: 4, cols: 4, wg: 64 },
  reg8x4: { name: 'reg8x4', kind: 'reg', rows: 8, cols: 4, wg: 64 },
  reg16x4: { name: 'reg16x4', kind: 'reg', rows: 16, cols: 4, wg: 64 },
  reg8x8: { name: 'reg8x8', kind: 'reg', rows: 8, cols: 8, wg: 64 },
  quad8x8: { name: 'quad8x8', kind: 'quad', rows: 8, cols: 8, wg: 64 },
  quad4x16: { name: 'quad4x16', kind: 'quad', rows: 4, cols: 16, wg: 64 },
  tiled64: { name: 'tiled64', kind: 'tiled', rows: 4, cols: 4, wg: 256 },
};

/**
 * The matmul variants tried per adapter class (see bench/README.md for what was measured);
 * `measureRoofline` times each and keeps the fastest.
 */
export const MATMUL_CANDIDATES: Record<'cpu' | 'gpu', string[]> = {
  cpu: ['quad8x8', 'quad4x16', 'reg8x8'],
  gpu: ['tiled64', 'reg8x8'],
};

/** A compiled copy probe over `n` vec4s. */
export async function copyProbe(dev: DeviceLike, variant: CopyVariant) {
  const ctx = ctxOf(dev);
  const pipeline = await getPipeline(ctx, {
    shader: COPY_PROGRAM,
    bindings: ['read', 'rw', 'uniform'],
    constants: { WG: variant.wg, ITEMS: variant.items, CONTIGUOUS: variant.contiguous ? 1 : 0 },
  });
  return {
    pipeline,
    /** Encodes dst[0..n) = src[0..n) (vec4 units). Returns a disposer for its uniform buffer. */
    bind(src: GPUBuffer, dst: GPUBuffer, n: number) {
      const params = ctx.createBuffer({ size: COPY_PARAMS.size, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: 'bench.copy.params' });
      ctx.device.queue.writeBuffer(params, 0, COPY_PARAMS.pack({ n }));
      const bg = bindGroup(ctx, pipeline, [{ buffer: src, size: n * 16 }, { buffer: dst, size: n * 16 }, { buffer: params }]);
      const groups = grid2d(ctx, Math.ceil(n / (variant.wg * variant.items)));
      return {
        encode(enc: GPUCommandEncoder) {
          const pass = enc.beginComputePass({ label: 'bench.copy' });
          pass.setPipeline(pipeline.pipeline);
          pass.setBindGroup(0, bg);
          pass.dispatchWorkgroups(groups[0], groups[1]);
          pass.end();
        },
        dispose: () => ctx.destroyBuffer(params),
      };
    },
  };
}

/** Checks a matmul size against a variant's divisibility rules. */
export function matmulSizeOk(v: MatmulVariant, M: number, N: number, K: number): boolean {
  if (v.kind === 'tiled') return M % 64 === 0 && N % 64 === 0 && K % 16 === 0;
  if (v.kind === 'quad') return M % (4 * v.rows) === 0 && N % v.cols === 0 && K % 4 === 0 && ((M * N) / (v.rows * v.cols)) % v.wg === 0;
  return M % v.rows === 0 && N % v.cols === 0 && K % 4 === 0;
}

/** Whether a variant can run on the device (quad: the subgroups feature with subgroups of >= 4). */
export function matmulVariantSupported(ctx: TesseraDevice, v: MatmulVariant): boolean {
  if (ctx.limits.maxComputeInvocationsPerWorkgroup < v.wg) return false;
  if (v.kind === 'quad') return ctx.features.subgroups && (ctx.adapter.subgroupMinSize ?? 4) >= 4;
  return true;
}

/** A compiled matmul probe C[M,N] = A[M,K] B[K,N] (row-major f32). */
export async function matmulProbe(dev: DeviceLike, variant: MatmulVariant) {
  const ctx = ctxOf(dev);
  if (!matmulVariantSupported(ctx, variant)) {
    throw new TesseraError('E_UNSUPPORTED', `matmul variant ${variant.name} does not run on this device (needs ${variant.wg} invocations per workgroup${variant.kind === 'quad' ? ' and subgroups of >= 4' : ''})`, { argument: 'variant', actual: variant.name });
  }
  let pipeline: Pipeline;
  if (variant.kind === 'tiled') {
    pipeline = await getPipeline(ctx, { shader: MATMUL_TILED_PROGRAM, bindings: ['read', 'read', 'rw', 'uniform'] });
  } else {
    pipeline = await getPipeline(ctx, {
      shader: variant.kind === 'quad' ? MATMUL_QUAD_PROGRAM : MATMUL_REG_PROGRAM,
      entryPoint: `main_${variant.rows}x${variant.cols}`,
      bindings: ['read', 'read', 'rw', 'uniform'],
      constants: { WG: variant.wg },
    });
  }
  return {
    pipeline,
    bind(a: GPUBuffer, b: GPUBuffer, c: GPUBuffer, M: number, N: number, K: number) {
      if (!matmulSizeOk(variant, M, N, K)) {
        throw new TesseraError('E_SHAPE', `matmul ${variant.name}: M=${M} N=${N} K=${K} do not fit its blocking`, { argument: 'M,N,K', actual: [M, N, K] });
      }
      const params = ctx.createBuffer({ size: MATMUL_PARAMS.size, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: 'bench.matmul.params' });
      ctx.device.queue.writeBuffer(params, 0, MATMUL_PARAMS.pack({ M, N, K }));
      const bg = bindGroup(ctx, pipeline, [{ buffer: a, size: M * K * 4 }, { buffer: b, size: K * N * 4 }, { buffer: c, size: M * N * 4 }, { buffer: params }]);
      const groups: [number, number] = variant.kind === 'tiled' ? [N / 64, M / 64] : grid2d(ctx, Math.ceil((M * N) / (variant.rows * variant.cols) / variant.wg));
      return {
        encode(enc: GPUCommandEncoder) {
          const pass = enc.beginComputePass({ label: `bench.matmul.${variant.name}` });
          pass.setPipeline(pipeline.pipeline);
          pass.setBindGroup(0, bg);
          pass.dispatchWorkgroups(groups[0], groups[1]);
          pass.end();
        },
        dispose: () => ctx.destroyBuffer(params),
      };
    },
  };
}

export interface RooflineOptions {
  /** Bytes of the copy source (default: 64 MiB on CPU adapters, 128 MiB on GPUs). */
  copyBytes?: number;
  /** Square matmul size (default: 512 on CPU adapters, 2048 on GPUs). */
  matmulSize?: number;
  /** Matmul variants to try (default {@link MATMUL_CANDIDATES} of the adapter class). */
  matmulVariants?: string[];
  /** Untimed runs per probe (default 1). */
  warmup?: number;
  /** Timed runs per probe (default 7); the rate is taken from the best. */
  runs?: number;
  /** Progress lines. */
  log?: (line: string) => void;
}

/**
 * Measures the adapter's roofline: the copy probe's bandwidth (bytes read + written per second)
 * and the best matmul probe's rate. Takes a few seconds on a software adapter.
 *
 * @example
 * const roof = await measureRoofline(dev);
 * console.log(`${roof.copy_gbps.toFixed(2)} GB/s, ${roof.matmul_gflops.toFixed(2)} GFLOP/s`);
 */
export async function measureRoofline(dev: DeviceLike, opts: RooflineOptions = {}): Promise<Roofline> {
  const ctx = ctxOf(dev);
  const cls = ctx.adapterClass;
  // TESSERA_BENCH_QUICK=1 (the GPU bundle's `run.sh --quick`, CI-sized): small probes, 2 runs.
  const quick = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.TESSERA_BENCH_QUICK === '1';
  if (quick) opts = { copyBytes: 8 * 2 ** 20, matmulSize: 256, runs: 2, ...opts };
  const warmup = opts.warmup ?? 1;
  const runs = opts.runs ?? 7;
  const log = opts.log ?? (() => {});

  // Copy: every candidate of the adapter class, keep the fastest.
  const maxBinding = Math.min(ctx.limits.maxStorageBufferBindingSize, ctx.limits.maxBufferSize);
  const copyBytes = Math.min(opts.copyBytes ?? (cls === 'cpu' ? 64 : 128) * 2 ** 20, maxBinding);
  const n = Math.floor(copyBytes / 16);
  const src = ctx.createBuffer({ size: n * 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST, label: 'bench.copy.src' });
  const dst = ctx.createBuffer({ size: n * 16, usage: GPUBufferUsage.STORAGE, label: 'bench.copy.dst' });
  let copy: Roofline['copy'] | undefined;
  const copyRates: Record<string, number> = {};
  try {
    for (const cv of COPY_VARIANTS[cls]) {
      const probe = await copyProbe(ctx, cv);
      const bound = probe.bind(src, dst, n);
      try {
        const t = await timeGpu(ctx, bound.encode, { warmup, runs });
        const rate = (2 * n * 16) / (t.min_ms * 1e6);
        copyRates[cv.name] = rate;
        log(`roofline: copy ${cv.name} ${((2 * n * 16) / 2 ** 20).toFixed(0)} MiB moved in ${t.min_ms.toFixed(2)} ms (best; median ${t.median_ms.toFixed(2)}): ${rate.toFixed(2)} GB/s`);
        if (!copy || t.min_ms < copy.min_ms) copy = { variant: cv.name, bytes: 2 * n * 16, median_ms: t.median_ms, min_ms: t.min_ms, max_ms: t.max_ms, runs: t.runs, variants: copyRates, cpu_share: t.cpu_share };
      } finally {
        bound.dispose();
      }
    }
  } finally {
    ctx.destroyBuffer(src);
    ctx.destroyBuffer(dst);
  }
  const copy_gbps = copy!.bytes / (copy!.min_ms * 1e6);

  // Matmul: every candidate, keep the fastest.
  const S = opts.matmulSize ?? (cls === 'cpu' ? 512 : 2048);
  const names = opts.matmulVariants ?? MATMUL_CANDIDATES[cls];
  const a = ctx.createBuffer({ size: S * S * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST, label: 'bench.matmul.a' });
  const b = ctx.createBuffer({ size: S * S * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST, label: 'bench.matmul.b' });
  const c = ctx.createBuffer({ size: S * S * 4, usage: GPUBufferUsage.STORAGE, label: 'bench.matmul.c' });
  const flops = 2 * S * S * S;
  const rates: Record<string, number> = {};
  let best: Roofline['matmul'] | undefined;
  let source: TimingSource = 'wallclock';
  try {
    // Finite inputs (zero-filled buffers would do, but keep denormal/zero shortcuts out of it).
    const fill = new Float32Array(S * S);
    for (let i = 0; i < fill.length; i++) fill[i] = ((i * 2654435761) % 1000) / 1000 - 0.5;
    ctx.device.queue.writeBuffer(a, 0, fill);
    ctx.device.queue.writeBuffer(b, 0, fill);
    for (const name of names) {
      const v = MATMUL_VARIANTS[name];
      if (!v) throw new TesseraError('E_ARG', `unknown matmul variant ${name}`, { argument: 'matmulVariants', actual: name, expected: Object.keys(MATMUL_VARIANTS).join(', ') });
      if (!matmulVariantSupported(ctx, v) || !matmulSizeOk(v, S, S, S)) {
        log(`roofline: matmul ${name} skipped (not supported here)`);
        continue;
      }
      const probe = await matmulProbe(ctx, v);
      const bound = probe.bind(a, b, c, S, S, S);
      try {
        const t = await timeGpu(ctx, bound.encode, { warmup, runs });
        source = t.source;
        const rate = flops / (t.min_ms * 1e6);
        rates[name] = rate;
        log(`roofline: matmul ${name} ${S}^3 in ${t.min_ms.toFixed(2)} ms (best; median ${t.median_ms.toFixed(2)}): ${rate.toFixed(2)} GFLOP/s (compile ${probe.pipeline.compileMs.toFixed(0)} ms)`);
        if (!best || rate > flops / (best.min_ms * 1e6)) {
          best = { variant: name, M: S, N: S, K: S, median_ms: t.median_ms, min_ms: t.min_ms, max_ms: t.max_ms, runs: t.runs, variants: rates, cpu_share: t.cpu_share };
        }
      } finally {
        bound.dispose();
      }
    }
  } finally {
    ctx.destroyBuffer(a);
    ctx.destroyBuffer(b);
    ctx.destroyBuffer(c);
  }
  if (!best) throw new TesseraError('E_UNSUPPORTED', 'no matmul probe variant runs on this adapter', { argument: 'matmulVariants', actual: names });
  return {
    copy_gbps,
    matmul_gflops: flops / (best.min_ms * 1e6),
    source,
    copy: copy!,
    matmul: best,
    adapter: ctx.adapterName,
    adapter_class: cls,
  };
}

/**
 * A result as a percentage of the roofline: the larger of its flop rate over the matmul rate and
 * its byte rate over the copy bandwidth, times 100 (the bound it is closer to).
 *
 * @example
 * const pct = pctRoofline(roof, { flops: 2 * 64 * 2048 * 2049, bytes: 4 * 2048 * 64 * 4, ms: 150 });
 */
export function pctRoofline(roofline: Pick<Roofline, 'copy_gbps' | 'matmul_gflops'>, w: { flops: number; bytes: number; ms: number }): number {
  if (!(w.ms > 0)) throw new TesseraError('E_ARG', 'pctRoofline: time must be positive', { argument: 'ms', actual: w.ms, expected: '> 0' });
  const flopRate = w.flops / (w.ms * 1e6); // GFLOP/s
  const byteRate = w.bytes / (w.ms * 1e6); // GB/s
  const f = roofline.matmul_gflops > 0 ? flopRate / roofline.matmul_gflops : 0;
  const b = roofline.copy_gbps > 0 ? byteRate / roofline.copy_gbps : 0;
  return Math.max(f, b) * 100;
}

/** Builds a {@link BenchResult} from a timing and the work it did. */
export function makeResult(
  roofline: Roofline,
  base: { suite: string; impl: string; T: number; D: number; H: number; dtype: string; flops: number; bytes: number; mode?: string; [k: string]: unknown },
  t: Pick<Timing, 'median_ms' | 'min_ms' | 'max_ms' | 'runs'> & { source?: TimingSource; cpu_share?: number },
): BenchResult {
  const { source, cpu_share, ...timing } = t;
  return {
    ...base,
    median_ms: timing.median_ms,
    min_ms: timing.min_ms,
    max_ms: timing.max_ms,
    runs: timing.runs,
    pct_roofline: pctRoofline(roofline, { flops: base.flops, bytes: base.bytes, ms: timing.median_ms }),
    gflops: base.flops / (timing.median_ms * 1e6),
    ...(source ? { timing: source } : {}),
    ...(cpu_share !== undefined ? { cpu_share } : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// Bench device

export interface BenchDeviceOptions {
  adapter?: string;
  dawnFlags?: string[];
  /** `false`: Dawn's robustness off (`disable_robustness`), for a labelled comparison only. */
  robustness?: boolean;
  /** Features not to request even where the adapter has them (`['subgroups']`: the path devices without subgroups get). */
  withoutFeatures?: GPUFeatureName[];
}

/**
 * The device benchmarks run on: `requestDevice` with timestamp quantization off (ns ticks instead
 * of SwiftShader's 65.5 us steps) and, only when asked, robustness off.
 *
 * @example
 * const dev = await benchDevice({ robustness: true });
 */
export async function benchDevice(opts: BenchDeviceOptions = {}): Promise<TesseraDevice> {
  const env = adapterFromEnv();
  const adapter = (opts.adapter ?? env.adapter) as 'auto' | 'swiftshader' | 'llvmpipe';
  const flags = [...(env.dawnFlags ?? []), ...(opts.dawnFlags ?? []), 'disable-dawn-features=timestamp_quantization'];
  if (opts.robustness === false) flags.push('enable-dawn-features=disable_robustness');
  return requestDevice({ adapter, dawnFlags: flags, withoutFeatures: opts.withoutFeatures, label: opts.robustness === false ? 'tessera-bench-norobust' : 'tessera-bench' });
}

// ---------------------------------------------------------------------------------------------
// Output: table, JSON, Markdown, plots

const fmt = (x: number, d = 2) => (Number.isFinite(x) ? (Math.abs(x) >= 1000 ? x.toFixed(0) : x.toFixed(d)) : String(x));

/** The key results are matched on for speedups (same T, D, H, dtype, mode). */
function configKey(r: BenchResult): string {
  return `${r.mode ?? ''}|${r.T}|${r.D}|${r.H}|${r.dtype}`;
}

/**
 * Speedup of each result over `baseline` (same configuration), or undefined. Where both rows say
 * whether they used subgroups (`subgroups: boolean`), only rows that agree are compared.
 */
export function speedups(results: readonly BenchResult[], baseline = 'tfjs'): Map<BenchResult, number> {
  const base = new Map<string, BenchResult[]>();
  for (const r of results) if (r.impl === baseline) base.set(configKey(r), [...(base.get(configKey(r)) ?? []), r]);
  const out = new Map<BenchResult, number>();
  for (const r of results) {
    const b = base.get(configKey(r))?.find((x) => typeof x.subgroups !== 'boolean' || typeof r.subgroups !== 'boolean' || x.subgroups === r.subgroups);
    if (b && r.impl !== baseline) out.set(r, b.median_ms / r.median_ms);
  }
  return out;
}

/**
 * Impl names that get a speedup column when present in the results: `tfjs` (the TensorFlow.js
 * baseline), `ort` (ONNX Runtime WebGPU) and `dense` (Tessera's dense flash attention, as sparse
 * and linear suites label it).
 */
export const BASELINES = ['tfjs', 'ort', 'dense'];

/** Rows of the results table (shared by the terminal and the Markdown output). */
export function tableRows(results: readonly BenchResult[], baselines: readonly string[] = BASELINES): { header: string[]; rows: string[][] } {
  const present = baselines.filter((b) => results.some((r) => r.impl === b));
  const sps = present.map((b) => speedups(results, b));
  const hasMode = results.some((r) => r.mode !== undefined);
  // suites that report several ops (bench linear: suite = op name) get a column for it
  const hasSuites = new Set(results.map((r) => r.suite)).size > 1;
  // subgroups on/off (bench dense --subgroups) and baselines' error against Tessera, when present
  const hasSg = results.some((r) => typeof r.subgroups === 'boolean');
  const hasDiff = results.some((r) => typeof r.max_abs_diff === 'number');
  const header = [...(hasSuites ? ['suite'] : []), 'impl', ...(hasMode ? ['mode'] : []), ...(hasSg ? ['subgroups'] : []), 'T', 'D', 'H', 'dtype', 'median ms', 'min ms', 'max ms', 'runs', 'GFLOP/s', 'GB/s', '% roofline', ...(hasDiff ? ['max abs diff'] : []), ...present.map((b) => `vs ${b}`)];
  const rows = results.map((r) => [
    ...(hasSuites ? [r.suite] : []),
    r.impl,
    ...(hasMode ? [r.mode ?? ''] : []),
    ...(hasSg ? [typeof r.subgroups === 'boolean' ? (r.subgroups ? 'on' : 'off') : ''] : []),
    String(r.T),
    String(r.D),
    String(r.H),
    r.dtype,
    fmt(r.median_ms),
    fmt(r.min_ms),
    fmt(r.max_ms),
    String(r.runs),
    fmt(r.flops / (r.median_ms * 1e6)),
    fmt(r.bytes / (r.median_ms * 1e6), 3),
    fmt(r.pct_roofline, 1),
    ...(hasDiff ? [typeof r.max_abs_diff === 'number' ? r.max_abs_diff.toExponential(1) : ''] : []),
    ...sps.map((sp) => (sp.has(r) ? `${fmt(sp.get(r)!, 1)}x` : '')),
  ]);
  return { header, rows };
}

/** A plain-text table for the terminal. */
export function formatTable(results: readonly BenchResult[], baselines: readonly string[] = BASELINES): string {
  const { header, rows } = tableRows(results, baselines);
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ');
  return [line(header), ...rows.map(line)].join('\n');
}

/** One-line summary of a roofline. */
export function describeRoofline(r: Roofline): string {
  return `copy ${fmt(r.copy_gbps, 3)} GB/s (${r.copy.variant}, ${(r.copy.bytes / 2 ** 20).toFixed(0)} MiB moved), matmul ${fmt(r.matmul_gflops, 3)} GFLOP/s (${r.matmul.variant}, ${r.matmul.M}x${r.matmul.N}x${r.matmul.K}), timed by ${r.source}`;
}

/** The Markdown page of a report: roofline, then the table. */
export function markdownReport(suite: string, report: BenchReport, plots: string[] = []): string {
  const { header, rows } = tableRows(report.results);
  const meta = Object.entries(report)
    .filter(([k]) => !['adapter', 'roofline', 'results'].includes(k))
    .map(([k, v]) => `- ${k}: ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`);
  return [
    `# ${suite} on ${report.adapter}`,
    '',
    `Roofline (same run): ${describeRoofline(report.roofline)}.`,
    '',
    `| ${header.join(' | ')} |`,
    `|${header.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
    '',
    ...(meta.length ? [...meta, ''] : []),
    ...plots.map((p) => `![${p}](${p})`),
    '',
  ].join('\n');
}

/** A line plot to render. */
export interface PlotSpec {
  /** File name stem: `<suite>` + (`-` + name). Empty for the main plot. */
  name: string;
  title: string;
  /** Field of BenchResult on x (log scale). */
  x: string;
  /** Field on y (log scale). */
  y: string;
  xTitle?: string;
  yTitle?: string;
  /** Only these results. */
  filter?: (r: BenchResult) => boolean;
}

/** The series label of a result in plots: impl, plus mode and D/H/dtype when they vary. */
function seriesLabel(r: BenchResult, varying: Set<string>): string {
  const parts = [r.impl];
  if (r.mode !== undefined && varying.has('mode')) parts.push(String(r.mode));
  if (r.subgroups === false && varying.has('subgroups')) parts.push('no subgroups');
  for (const k of ['D', 'H', 'dtype'] as const) if (varying.has(k)) parts.push(`${k}=${r[k]}`);
  return parts.join(' ');
}

/**
 * Renders a log-log line plot of results to an SVG string with Vega-Lite (compiled to Vega and
 * rendered by Vega's headless View, no canvas).
 *
 * @example
 * const svg = await plotSvg(results, { name: '', title: 'dense: time vs T', x: 'T', y: 'median_ms' });
 */
export async function plotSvg(results: readonly BenchResult[], spec: PlotSpec, rule?: { y: number; label: string }): Promise<string> {
  const vega = await optionalImport<typeof import('vega')>('vega', '--write (the SVG plots)', '--no-write');
  const vl = await optionalImport<typeof import('vega-lite')>('vega-lite', '--write (the SVG plots)', '--no-write');
  const rs = results.filter((r) => (spec.filter ? spec.filter(r) : true) && Number(r[spec.x]) > 0 && Number(r[spec.y]) > 0);
  const varying = new Set<string>();
  for (const k of ['mode', 'subgroups', 'D', 'H', 'dtype']) if (new Set(rs.map((r) => String(r[k]))).size > 1) varying.add(k);
  const values = rs.map((r) => ({ x: Number(r[spec.x]), y: Number(r[spec.y]), series: seriesLabel(r, varying) }));
  const xs = [...new Set(values.map((v) => v.x))].sort((a, b) => a - b);
  const lines = {
    data: { values },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'x', type: 'quantitative', scale: { type: 'log', nice: false, padding: 12 }, axis: xs.length <= 12 ? { values: xs } : {}, title: spec.xTitle ?? spec.x },
      y: { field: 'y', type: 'quantitative', scale: { type: 'log' }, title: spec.yTitle ?? spec.y },
      color: { field: 'series', type: 'nominal', title: 'method' },
    },
  };
  const layers: unknown[] = [lines];
  if (rule && rule.y > 0) {
    layers.push({
      data: { values: [{ y: rule.y, label: rule.label }] },
      layer: [
        { mark: { type: 'rule', strokeDash: [4, 4], color: 'gray' }, encoding: { y: { field: 'y', type: 'quantitative' } } },
        { mark: { type: 'text', align: 'right', dx: -4, dy: -6, color: 'gray' }, encoding: { y: { field: 'y', type: 'quantitative' }, x: { value: 'width' }, text: { field: 'label' } } },
      ],
    });
  }
  const vlSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: spec.title,
    width: 420,
    height: 280,
    background: 'white',
    layer: layers,
  };
  const compiled = vl.compile(vlSpec as never).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** The default plots of a suite: time against T, and the achieved rate against T. */
export function defaultPlots(suite: string): PlotSpec[] {
  return [
    { name: '', title: `${suite}: time vs T (log-log)`, x: 'T', y: 'median_ms', xTitle: 'T (tokens)', yTitle: 'median time (ms)' },
    { name: 'gflops', title: `${suite}: GFLOP/s vs T`, x: 'T', y: 'gflops', xTitle: 'T (tokens)', yTitle: 'GFLOP/s' },
  ];
}

export interface WriteOptions {
  /** Also write the JSON report to this path. */
  json?: string;
  /** Results root (default `<repo>/bench/results`). */
  dir?: string;
  /** Plots to render (default {@link defaultPlots}); `false` for none. */
  plots?: PlotSpec[] | false;
}

/**
 * Writes a suite's report: `<dir>/<adapter>/<suite>.json` (`{adapter, roofline, results, ...}`),
 * `<suite>.md` (Markdown table) and SVG plots `<suite>.svg`, `<suite>-<plot>.svg`; and the JSON
 * again to `opts.json` when given. Returns the paths written.
 *
 * @example
 * await writeResults(dev, 'dense', { adapter: dev.adapterName, roofline, results }, { json: 'out.json' });
 */
export async function writeResults(dev: DeviceLike | undefined, suiteName: string, report: BenchReport, opts: WriteOptions = {}): Promise<string[]> {
  if (!/^[a-z0-9][a-z0-9._-]*$/i.test(suiteName)) throw new TesseraError('E_ARG', 'suite name must be a plain file name', { argument: 'suiteName', actual: suiteName });
  const adapter = (report.adapter || (dev ? ctxOf(dev).adapterName : 'unknown')).replace(/[^a-z0-9._-]+/gi, '-');
  const { mkdirSync, writeFileSync } = await import('node:fs');
  const { dirname, join, resolve } = await import('node:path');
  const dir = join(opts.dir ?? (await resultsDir()), adapter);
  mkdirSync(dir, { recursive: true });
  const written: string[] = [];
  const json = JSON.stringify(report, null, 2) + '\n';
  const jsonPath = join(dir, `${suiteName}.json`);
  writeFileSync(jsonPath, json);
  written.push(jsonPath);
  if (opts.json) {
    mkdirSync(dirname(resolve(opts.json)), { recursive: true });
    writeFileSync(opts.json, json);
    written.push(opts.json);
  }
  const plotFiles: string[] = [];
  for (const p of opts.plots === false ? [] : (opts.plots ?? defaultPlots(suiteName))) {
    const file = `${suiteName}${p.name ? `-${p.name}` : ''}.svg`;
    const rule = p.y === 'gflops' ? { y: report.roofline.matmul_gflops, label: `roofline matmul ${report.roofline.matmul_gflops.toFixed(2)} GFLOP/s` } : undefined;
    const svg = await plotSvg(report.results, p, rule);
    writeFileSync(join(dir, file), svg);
    plotFiles.push(file);
    written.push(join(dir, file));
  }
  const mdPath = join(dir, `${suiteName}.md`);
  writeFileSync(mdPath, markdownReport(suiteName, report, plotFiles));
  written.push(mdPath);
  return written;
}
