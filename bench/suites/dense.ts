/**
 * `tessera bench dense`: causal dense attention, Tessera's attention core against TensorFlow.js
 * WebGPU on the same adapter in the same run, each as a % of the roofline measured first.
 *
 *   npm run bench -- dense [--T 512,1024,2048] [--D 64] [--H 1] [--dtype f32]
 *                          [--baseline tfjs|none] [--runs 5] [--robustness on|off|both] [--json FILE]
 *
 * Work per run (one sequence, H query heads = H kv heads, causal, Tq = Tk = T):
 * - flops = H * 2 * 2 * D * T(T+1)/2 (q k^T and p v over the T(T+1)/2 visible pairs; a
 *   multiply-add is 2). Non-causal: H * 4 * D * T^2. The same useful flops are credited to the
 *   baseline, which computes the full T x T square.
 * - bytes = q, k, v read once + o written once (T * H * D elements each, in the storage dtype) +
 *   lse written (T * H f32).
 */
import { Command, Option } from 'commander';
import { TesseraError } from '../../src/errors.js';
import type { TesseraDevice } from '../../src/gpu/device.js';
import { planAttention } from '../../kernels/dense/index.js';
import { compileTimeMs } from '../../src/gpu/pipeline.js';
import { byteSize, decode, encode, type FloatDType, type GpuTensor } from '../../src/tensor.js';
import { Rng } from '../../src/testing.js';
import { intList, intOption } from '../../src/cli-common.js';
import {
  benchDevice,
  describeRoofline,
  formatTable,
  makeResult,
  measureCpu,
  measureRoofline,
  timeGpu,
  writeResults,
  type BenchResult,
  type Roofline,
} from '../harness.js';
import { NO_WRITE_HELP, SAVE_HELP, shouldSave } from '../save.js';

/** Flops and bytes of one dense attention run (see the file comment). */
export function denseWork(c: { T: number; D: number; H: number; dtype: FloatDType; causal?: boolean }): {
  flops: number;
  bytes: number;
} {
  const pairs = c.causal === false ? c.T * c.T : (c.T * (c.T + 1)) / 2;
  const flops = c.H * 4 * c.D * pairs;
  const bytes = 4 * byteSize([c.T, c.H, c.D], c.dtype) + c.T * c.H * 4;
  return { flops, bytes };
}

/** The inputs `benchTesseraDense` uses for a configuration (`[T, H, D]` each, seeded by T), for baselines to run on the same data. */
export function denseInputs(c: { T: number; H: number; D: number }): {
  q: Float64Array;
  k: Float64Array;
  v: Float64Array;
} {
  const rng = new Rng(1234 + c.T);
  const n = c.T * c.H * c.D;
  return { q: rng.normals(n), k: rng.normals(n), v: rng.normals(n) };
}

export interface DenseConfig {
  T: number;
  D: number;
  H: number;
  dtype: FloatDType;
  causal: boolean;
  warmup: number;
  runs: number;
  /** Kernel shape (default: the dense family's choice for the adapter class). */
  target?: 'auto' | 'cpu' | 'gpu';
}

/**
 * Times Tessera's dense attention for one configuration on `dev` and returns a result (with
 * plan compile time and CPU encode time). Other suites call this for their ratio to dense flash,
 * with `impl: 'dense'` and their own suite name, so their table gets a `vs dense` column.
 *
 * @example
 * const r = await benchTesseraDense(dev, roofline, { T: 1024, D: 64, H: 1, dtype: 'f32', causal: true, warmup: 1, runs: 5 });
 * const ref = await benchTesseraDense(dev, roofline, cfg, { impl: 'dense', suite: 'moba' });
 */
export async function benchTesseraDense(
  dev: TesseraDevice,
  roofline: Roofline,
  c: DenseConfig,
  label: string | { impl?: string; suite?: string } = {},
  /** Called with the output `o` ([T, H, D], decoded) after timing, to check baselines against it. */
  onOutput?: (o: Float32Array) => void,
): Promise<BenchResult> {
  const impl = typeof label === 'string' ? label : (label.impl ?? 'tessera');
  const suite = typeof label === 'string' ? 'dense' : (label.suite ?? 'dense');
  const shape = [c.T, c.H, c.D];
  const n = c.T * c.H * c.D;
  const inputs = denseInputs(c);
  const bufs: GPUBuffer[] = [];
  const tensor = (values: ArrayLike<number> | null, shp: number[], dtype: FloatDType | 'f32'): GpuTensor => {
    const size = byteSize(shp, dtype);
    const buffer = values
      ? dev.upload(encode(values, dtype), { size, label: 'bench.dense' })
      : dev.createBuffer({ size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC, label: 'bench.dense.out' });
    bufs.push(buffer);
    return { buffer, shape: shp, dtype };
  };
  const t = {
    q: tensor(inputs.q, shape, c.dtype),
    k: tensor(inputs.k, shape, c.dtype),
    v: tensor(inputs.v, shape, c.dtype),
    o: tensor(null, shape, c.dtype),
    lse: tensor(null, [c.T, c.H], 'f32'),
  };
  const c0 = compileTimeMs();
  const p0 = performance.now();
  const plan = await planAttention(dev, {
    Tq: c.T,
    Hq: c.H,
    Hkv: c.H,
    D: c.D,
    causal: c.causal,
    dtype: c.dtype,
    target: c.target ?? 'auto',
  });
  const planMs = performance.now() - p0;
  const compileMs = compileTimeMs() - c0;
  try {
    const timing = await timeGpu(dev, (enc) => plan.run(enc, t), { warmup: c.warmup, runs: c.runs });
    const cpu = await measureCpu(
      'dense.encode',
      () => {
        const enc = dev.device.createCommandEncoder();
        plan.run(enc, t);
        enc.finish();
      },
      { maxTime: 0.2 },
    );
    if (onOutput) onOutput(Float32Array.from(decode(new Uint32Array(await dev.readback(t.o.buffer)), c.dtype, n)));
    const work = denseWork(c);
    return makeResult(
      roofline,
      {
        suite,
        impl,
        T: c.T,
        D: c.D,
        H: c.H,
        dtype: c.dtype,
        ...work,
        causal: c.causal,
        target: c.target ?? 'auto',
        plan_ms: round(planMs),
        compile_ms: round(compileMs),
        encode_us: round(cpu.mean_us),
      },
      timing,
    );
  } finally {
    plan.dispose();
    for (const b of bufs) dev.destroyBuffer(b);
  }
}

/** Times the TensorFlow.js baseline for one configuration. */
export async function benchTfjsDense(
  roofline: Roofline,
  c: DenseConfig & { baselineRuns: number },
): Promise<BenchResult> {
  const { timeTfjsAttention } = await import('../baseline/tfjs.js');
  if (c.dtype !== 'f32')
    throw new TesseraError('E_UNSUPPORTED', 'the TensorFlow.js baseline runs in f32 only', {
      argument: '--dtype',
      actual: c.dtype,
    });
  const t = await timeTfjsAttention({ T: c.T, D: c.D, H: c.H, causal: c.causal, warmup: 1, runs: c.baselineRuns });
  return makeResult(
    roofline,
    { suite: 'dense', impl: 'tfjs', T: c.T, D: c.D, H: c.H, dtype: c.dtype, ...denseWork(c), causal: c.causal },
    t,
  );
}

const round = (x: number) => Math.round(x * 100) / 100;

/** Largest |a - b| over two equal-length arrays (NaN anywhere gives NaN). */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length)
    throw new TesseraError('E_SHAPE', 'maxAbsDiff: lengths differ', {
      argument: 'b',
      actual: b.length,
      expected: `length ${a.length}`,
    });
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = d; // NaN propagates
  }
  return m;
}

/** `[H, T, D]` (TensorFlow.js's layout here) to `[T, H, D]` (Tessera's and ONNX Runtime's). */
function htdToThd(x: Float32Array, T: number, H: number, D: number): Float32Array {
  if (H === 1) return x;
  const out = new Float32Array(x.length);
  for (let h = 0; h < H; h++)
    for (let t = 0; t < T; t++) out.set(x.subarray((h * T + t) * D, (h * T + t + 1) * D), (t * H + h) * D);
  return out;
}

/** Parses `--baseline`: `tfjs`, `ort`, `tfjs,ort` or `none`. */
export function parseBaselines(s: string): ('tfjs' | 'ort')[] {
  const names = s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  if (names.length === 1 && names[0] === 'none') return [];
  for (const n of names)
    if (n !== 'tfjs' && n !== 'ort')
      throw new TesseraError('E_ARG', 'unknown --baseline', {
        argument: '--baseline',
        actual: s,
        expected: 'tfjs, ort, tfjs,ort or none',
      });
  return [...new Set(names)] as ('tfjs' | 'ort')[];
}

/** The CLI entry of the suite (registered in bench/cli.ts). */
export async function runDenseSuite(argv: string[]): Promise<void> {
  const collect = (v: string, prev: string[] = []) => [...prev, v];
  const cmd = new Command('dense')
    .description('causal dense attention: Tessera vs TensorFlow.js WebGPU and ONNX Runtime WebGPU, with the roofline')
    .option('--T <list>', 'sequence lengths', '512,1024,2048')
    .option('--D <n>', 'head dim', '64')
    .option('--H <n>', 'heads (query = kv heads)', '1')
    .option('--dtype <dtype>', 'storage dtype of q, k, v, o (f32 | f16)', 'f32')
    .option('--no-causal', 'full (non-causal) attention')
    .option(
      '--baseline <list>',
      'tfjs | ort | tfjs,ort | none (ort: onnxruntime-node WebGPU EP, GroupQueryAttention; causal f32 only)',
      'tfjs',
    )
    .option('--runs <n>', 'timed runs of Tessera (after 1 warm-up)', '5')
    .option('--baseline-runs <n>', 'timed runs of each baseline (after 1 warm-up; it takes seconds at T=2048)', '3')
    .option(
      '--target <t>',
      'kernel shape: auto (default: per adapter class) | cpu | gpu; non-auto rows are labelled tessera-<t>',
      'auto',
    )
    .addOption(new Option('--variant <t>', 'deprecated name of --target').hideHelp())
    .option(
      '--subgroups <mode>',
      "on (default: use the adapter's subgroups) | off (a device without them) | both",
      'on',
    )
    .option('--robustness <mode>', 'on (default) | off | both: Dawn robustness; off is labelled tessera-norobust', 'on')
    .option('--adapter <name>', 'auto | swiftshader | llvmpipe')
    .option('--dawn-flag <flag>', 'extra Dawn flag (repeatable)', collect)
    .option('--json <file>', 'also write the JSON report here')
    .option('--save', SAVE_HELP)
    .option('--no-write', NO_WRITE_HELP);
  cmd.parse(argv, { from: 'user' });
  const o = cmd.opts<{
    T: string;
    D: string;
    H: string;
    dtype: string;
    causal: boolean;
    baseline: string;
    runs: string;
    baselineRuns: string;
    robustness: string;
    subgroups: string;
    target: string;
    variant?: string;
    adapter?: string;
    dawnFlag?: string[];
    json?: string;
    save?: boolean;
    write: boolean;
  }>();
  const Ts = intList(o.T, '--T');
  const D = intOption(o.D, '--D');
  const H = intOption(o.H, '--H');
  const runs = intOption(o.runs, '--runs');
  const baselineRuns = intOption(o.baselineRuns, '--baseline-runs');
  if (o.dtype !== 'f32' && o.dtype !== 'f16' && o.dtype !== 'bf16')
    throw new TesseraError('E_ARG', 'unknown --dtype', {
      argument: '--dtype',
      actual: o.dtype,
      expected: 'f32, f16 or bf16',
    });
  const baselines = parseBaselines(o.baseline);
  if (!['on', 'off', 'both'].includes(o.robustness))
    throw new TesseraError('E_ARG', 'unknown --robustness', {
      argument: '--robustness',
      actual: o.robustness,
      expected: 'on, off or both',
    });
  if (!['on', 'off', 'both'].includes(o.subgroups))
    throw new TesseraError('E_ARG', 'unknown --subgroups', {
      argument: '--subgroups',
      actual: o.subgroups,
      expected: 'on, off or both',
    });
  const targetArg = o.variant !== undefined ? '--variant' : '--target';
  const targetValue = o.variant ?? o.target;
  if (!['auto', 'cpu', 'gpu'].includes(targetValue))
    throw new TesseraError('E_ARG', `unknown ${targetArg}`, {
      argument: targetArg,
      actual: targetValue,
      expected: 'auto, cpu or gpu',
    });
  const target = targetValue as 'auto' | 'cpu' | 'gpu';
  const dtype = o.dtype as FloatDType;
  if (baselines.length && dtype !== 'f32')
    throw new TesseraError('E_UNSUPPORTED', 'the baselines run in f32 only', {
      argument: '--dtype',
      actual: dtype,
      expected: 'f32 with --baseline, or --baseline none',
    });
  if (baselines.includes('ort') && !o.causal)
    throw new TesseraError('E_UNSUPPORTED', "ONNX Runtime's GroupQueryAttention is causal only", {
      argument: '--no-causal',
      actual: 'non-causal',
      expected: 'causal with --baseline ort',
    });
  const robustModes: boolean[] = o.robustness === 'both' ? [true, false] : [o.robustness !== 'off'];
  const sgModes: boolean[] = o.subgroups === 'both' ? [true, false] : [o.subgroups !== 'off'];

  // One device per (robustness, subgroups) pair, all open at once so that every T times Tessera,
  // TensorFlow.js and ONNX Runtime back to back (interleaved: load changes hit all of them alike).
  interface Dev {
    dev: TesseraDevice;
    robust: boolean;
    subgroups: boolean;
    roof: Roofline;
    impl: string;
  }
  const devs: Dev[] = [];
  const results: BenchResult[] = [];
  let roofline: Roofline | undefined;
  let adapter = 'unknown';
  const extra: Record<string, unknown> = {};
  try {
    for (const robust of robustModes) {
      let roof: Roofline | undefined;
      for (const sg of sgModes) {
        const dev = await benchDevice({
          adapter: o.adapter,
          dawnFlags: o.dawnFlag,
          robustness: robust,
          withoutFeatures: sg ? [] : ['subgroups'],
        });
        const subgroups = dev.features.subgroups;
        if (devs.some((d) => d.robust === robust && d.subgroups === subgroups)) {
          console.log(`note: ${adapter} has no subgroups: one set of rows without them`);
          dev.destroy();
          continue;
        }
        adapter = dev.adapterName;
        const tag = [robust ? '' : 'robustness off', subgroups ? '' : 'no subgroups'].filter(Boolean).join(', ');
        console.log(
          `adapter: ${adapter} (${dev.adapterClass}), ${dev.adapter.description}; subgroups ${subgroups ? 'on' : 'off'}; timing: ${dev.features.timestampQuery ? 'GPU timestamp queries' : 'wall clock around onSubmittedWorkDone (no timestamp-query)'}${tag ? ` (${tag})` : ''}`,
        );
        if (!roof) {
          roof = await measureRoofline(dev, { log: (l) => console.log(`  ${l}`) });
          console.log(`roofline${robust ? '' : ' (robustness off)'}: ${describeRoofline(roof)}`);
          if (robust || !roofline) roofline = roof;
          if (!robust) extra.roofline_norobust = roof;
        }
        const impl = ['tessera', target === 'auto' ? '' : target, robust ? '' : 'norobust'].filter(Boolean).join('-');
        devs.push({ dev, robust, subgroups, roof, impl });
      }
    }
    const adapterSubgroups = devs.some((d) => d.subgroups);
    for (const T of Ts) {
      let ref: Float32Array | undefined;
      for (const d of devs) {
        const r = await benchTesseraDense(
          d.dev,
          d.roof,
          { T, D, H, dtype, causal: o.causal, warmup: 1, runs, target },
          d.impl,
          ref ? undefined : (out) => (ref = out),
        );
        if (!d.robust) r.robustness = false;
        r.subgroups = d.subgroups;
        console.log(
          `  ${d.impl}${d.subgroups ? '' : ' (no subgroups)'} T=${T}: ${r.median_ms.toFixed(2)} ms (plan ${r.plan_ms} ms, of which compile ${r.compile_ms} ms; encode ${r.encode_us} us)`,
        );
        results.push(r);
      }
      if (!baselines.length) continue;
      const inputs = denseInputs({ T, H, D });
      const q = Float32Array.from(inputs.q);
      const k = Float32Array.from(inputs.k);
      const v = Float32Array.from(inputs.v);
      if (baselines.includes('tfjs')) {
        const { tfjsAttention } = await import('../baseline/tfjs.js');
        const thd = (x: Float32Array) => (H === 1 ? x : htdToThd(x, H, T, D)); // [T,H,D] -> [H,T,D] is the same shuffle with T and H swapped
        const out = htdToThd(await tfjsAttention(thd(q), thd(k), thd(v), { T, D, H, causal: o.causal }), T, H, D);
        const r = await benchTfjsDense(roofline!, { T, D, H, dtype, causal: o.causal, warmup: 1, runs, baselineRuns });
        const diff = maxAbsDiff(ref!, out);
        r.max_abs_diff = diff;
        console.log(
          `  tfjs T=${T}: ${r.median_ms.toFixed(1)} ms (wall clock, ${r.runs} runs), max |tfjs - tessera| ${diff.toExponential(2)}`,
        );
        results.push(r);
      }
      if (baselines.includes('ort')) {
        const { timeOrtAttention } = await import('../baseline/ort.js');
        const { output, timing } = await timeOrtAttention({ T, D, H, q, k, v, warmup: 1, runs: baselineRuns });
        const r = makeResult(
          roofline!,
          {
            suite: 'dense',
            impl: 'ort',
            T,
            D,
            H,
            dtype,
            ...denseWork({ T, D, H, dtype, causal: true }),
            causal: true,
            subgroups: adapterSubgroups,
            runtime: 'onnxruntime-node webgpu',
          },
          timing,
        );
        const diff = maxAbsDiff(ref!, output);
        r.max_abs_diff = diff;
        console.log(
          `  ort T=${T}: ${r.median_ms.toFixed(1)} ms (wall clock, ${r.runs} runs), max |ort - tessera| ${diff.toExponential(2)}`,
        );
        results.push(r);
      }
    }
  } finally {
    for (const d of devs) d.dev.destroy();
  }
  if (baselines.includes('ort')) {
    extra.ort =
      "onnxruntime-node WebGPU EP, one com.microsoft.GroupQueryAttention node (built in code), wall clock around session.run with CPU tensors; it uses the adapter's subgroups whenever it has them (no option to turn them off)";
  }
  extra.compile_ms_total = round(compileTimeMs());
  const work = `flops = H*2*2*D*T(T+1)/2 (${o.causal ? 'causal' : 'non-causal: H*4*D*T^2'}); bytes = q,k,v read + o written (${dtype}) + lse written (f32)`;
  extra.work = work;
  console.log('');
  console.log(formatTable(results));
  console.log(`\n${work}. Pipeline compile time in this run: ${extra.compile_ms_total} ms.`);
  const shares = results.map((r) => r.cpu_share).filter((x): x is number => typeof x === 'number');
  if (shares.length && Math.min(...shares) < 0.6) {
    console.log(
      `note: this process got as little as ${Math.round(Math.min(...shares) * 100)}% of the CPUs during some timed runs (cpu_share in the JSON): other processes were busy, so those times are slower than the adapter can do.`,
    );
  }
  const report = { adapter, roofline: roofline!, results, ...extra };
  if (shouldSave(o)) {
    const files = await writeResults(undefined, 'dense', report, { json: o.json });
    console.log(`wrote ${files.join(', ')}`);
  } else if (o.json) {
    const { mkdirSync, writeFileSync } = await import('node:fs');
    const { dirname, resolve } = await import('node:path');
    mkdirSync(dirname(resolve(o.json)), { recursive: true });
    writeFileSync(o.json, JSON.stringify(report, null, 2) + '\n');
    console.log(`wrote ${o.json}`);
  }
}
