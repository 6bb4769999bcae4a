/**
 * The adapter's roofline, measured in the same process: a vec4 copy kernel's bandwidth and the best
 * register-blocked f32 matmul we have for the adapter class; and a result as a percentage of it.
 * Probe shaders are the `*.wgsl` beside this file.
 */
import { TesseraError } from '../../src/errors.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { bindGroup, getPipeline, grid2d, wgslProgram, type Pipeline } from '../../src/gpu/pipeline.js';
import type { TimingSource } from '../../src/gpu/timer.js';
import { uniformLayout } from '../../src/gpu/uniforms.js';
import { timeGpu } from '../timing.js';
import type { Roofline } from '../types.js';
import copyWgsl from './copy.wgsl.js';
import matmulRegWgsl from './matmul_reg.wgsl.js';
import matmulTiledWgsl from './matmul_tiled.wgsl.js';
import matmulQuadWgsl from './matmul_quad.wgsl.js';

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
      const params = ctx.createBuffer({
        size: COPY_PARAMS.size,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
        label: 'bench.copy.params',
      });
      ctx.device.queue.writeBuffer(params, 0, COPY_PARAMS.pack({ n }));
      const bg = bindGroup(ctx, pipeline, [
        { buffer: src, size: n * 16 },
        { buffer: dst, size: n * 16 },
        { buffer: params },
      ]);
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
  if (v.kind === 'quad')
    return M % (4 * v.rows) === 0 && N % v.cols === 0 && K % 4 === 0 && ((M * N) / (v.rows * v.cols)) % v.wg === 0;
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
    throw new TesseraError(
      'E_UNSUPPORTED',
      `matmul variant ${variant.name} does not run on this device (needs ${variant.wg} invocations per workgroup${variant.kind === 'quad' ? ' and subgroups of >= 4' : ''})`,
      { argument: 'variant', actual: variant.name },
    );
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
        throw new TesseraError('E_SHAPE', `matmul ${variant.name}: M=${M} N=${N} K=${K} do not fit its blocking`, {
          argument: 'M,N,K',
          actual: [M, N, K],
        });
      }
      const params = ctx.createBuffer({
        size: MATMUL_PARAMS.size,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
        label: 'bench.matmul.params',
      });
      ctx.device.queue.writeBuffer(params, 0, MATMUL_PARAMS.pack({ M, N, K }));
      const bg = bindGroup(ctx, pipeline, [
        { buffer: a, size: M * K * 4 },
        { buffer: b, size: K * N * 4 },
        { buffer: c, size: M * N * 4 },
        { buffer: params },
      ]);
      const groups: [number, number] =
        variant.kind === 'tiled'
          ? [N / 64, M / 64]
          : grid2d(ctx, Math.ceil((M * N) / (variant.rows * variant.cols) / variant.wg));
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
  const quick =
    (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.TESSERA_BENCH_QUICK ===
    '1';
  if (quick) opts = { copyBytes: 8 * 2 ** 20, matmulSize: 256, runs: 2, ...opts };
  const warmup = opts.warmup ?? 1;
  const runs = opts.runs ?? 7;
  const log = opts.log ?? (() => {});

  // Copy: every candidate of the adapter class, keep the fastest.
  const maxBinding = Math.min(ctx.limits.maxStorageBufferBindingSize, ctx.limits.maxBufferSize);
  const copyBytes = Math.min(opts.copyBytes ?? (cls === 'cpu' ? 64 : 128) * 2 ** 20, maxBinding);
  const n = Math.floor(copyBytes / 16);
  const src = ctx.createBuffer({
    size: n * 16,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
    label: 'bench.copy.src',
  });
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
        log(
          `roofline: copy ${cv.name} ${((2 * n * 16) / 2 ** 20).toFixed(0)} MiB moved in ${t.min_ms.toFixed(2)} ms (best; median ${t.median_ms.toFixed(2)}): ${rate.toFixed(2)} GB/s`,
        );
        if (!copy || t.min_ms < copy.min_ms)
          copy = {
            variant: cv.name,
            bytes: 2 * n * 16,
            median_ms: t.median_ms,
            min_ms: t.min_ms,
            max_ms: t.max_ms,
            runs: t.runs,
            variants: copyRates,
            cpu_share: t.cpu_share,
          };
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
  const a = ctx.createBuffer({
    size: S * S * 4,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
    label: 'bench.matmul.a',
  });
  const b = ctx.createBuffer({
    size: S * S * 4,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
    label: 'bench.matmul.b',
  });
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
      if (!v)
        throw new TesseraError('E_ARG', `unknown matmul variant ${name}`, {
          argument: 'matmulVariants',
          actual: name,
          expected: Object.keys(MATMUL_VARIANTS).join(', '),
        });
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
        log(
          `roofline: matmul ${name} ${S}^3 in ${t.min_ms.toFixed(2)} ms (best; median ${t.median_ms.toFixed(2)}): ${rate.toFixed(2)} GFLOP/s (compile ${probe.pipeline.compileMs.toFixed(0)} ms)`,
        );
        if (!best || rate > flops / (best.min_ms * 1e6)) {
          best = {
            variant: name,
            M: S,
            N: S,
            K: S,
            median_ms: t.median_ms,
            min_ms: t.min_ms,
            max_ms: t.max_ms,
            runs: t.runs,
            variants: rates,
            cpu_share: t.cpu_share,
          };
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
  if (!best)
    throw new TesseraError('E_UNSUPPORTED', 'no matmul probe variant runs on this adapter', {
      argument: 'matmulVariants',
      actual: names,
    });
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
export function pctRoofline(
  roofline: Pick<Roofline, 'copy_gbps' | 'matmul_gflops'>,
  w: { flops: number; bytes: number; ms: number },
): number {
  if (!(w.ms > 0))
    throw new TesseraError('E_ARG', 'pctRoofline: time must be positive', {
      argument: 'ms',
      actual: w.ms,
      expected: '> 0',
    });
  const flopRate = w.flops / (w.ms * 1e6); // GFLOP/s
  const byteRate = w.bytes / (w.ms * 1e6); // GB/s
  const f = roofline.matmul_gflops > 0 ? flopRate / roofline.matmul_gflops : 0;
  const b = roofline.copy_gbps > 0 ? byteRate / roofline.copy_gbps : 0;
  return Math.max(f, b) * 100;
}
