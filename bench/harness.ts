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
import type { TimingSource } from '../src/gpu/timer.js';
import { pctRoofline } from './roofline/probes.js';
import { defaultPlots, plotSvg, type PlotSpec } from './plots.js';
import { markdownReport } from './table.js';
import type { Timing } from './timing.js';
import type { BenchReport, BenchResult, Roofline } from './types.js';

// The harness is split by concern; suites import all of it from here.
export type { TimingSource };
export type { BenchReport, BenchResult, Roofline } from './types.js';
export { cpuCount, stats, timeGpu, timeWall, type TimeOptions, type Timing } from './timing.js';
export { measureCpu, type CpuTiming } from './benchmarkjs.js';
export {
  COPY_VARIANTS,
  MATMUL_CANDIDATES,
  MATMUL_VARIANTS,
  copyProbe,
  matmulProbe,
  matmulSizeOk,
  matmulVariantSupported,
  measureRoofline,
  pctRoofline,
  type CopyVariant,
  type MatmulVariant,
  type RooflineOptions,
} from './roofline/probes.js';
export { BASELINES, describeRoofline, formatTable, markdownReport, speedups, tableRows } from './table.js';
export { defaultPlots, plotSvg, type PlotSpec } from './plots.js';

/**
 * The default results folder, `<repo>/bench/results` (Node only; the harness itself also loads in
 * a browser: file output is imported lazily).
 */
export async function resultsDir(): Promise<string> {
  // TESSERA_BENCH_DIR (the GPU bundle's run.sh sets it to $OUT) moves every suite's output.
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env
    ?.TESSERA_BENCH_DIR;
  if (env) return env;
  const { fileURLToPath } = await import('node:url');
  return fileURLToPath(new URL('./results', import.meta.url));
}

/** Builds a {@link BenchResult} from a timing and the work it did. */
export function makeResult(
  roofline: Roofline,
  base: {
    suite: string;
    impl: string;
    T: number;
    D: number;
    H: number;
    dtype: string;
    flops: number;
    bytes: number;
    mode?: string;
    [k: string]: unknown;
  },
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
  return requestDevice({
    adapter,
    dawnFlags: flags,
    withoutFeatures: opts.withoutFeatures,
    label: opts.robustness === false ? 'tessera-bench-norobust' : 'tessera-bench',
  });
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
export async function writeResults(
  dev: DeviceLike | undefined,
  suiteName: string,
  report: BenchReport,
  opts: WriteOptions = {},
): Promise<string[]> {
  if (!/^[a-z0-9][a-z0-9._-]*$/i.test(suiteName))
    throw new TesseraError('E_ARG', 'suite name must be a plain file name', {
      argument: 'suiteName',
      actual: suiteName,
    });
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
    const rule =
      p.y === 'gflops'
        ? {
            y: report.roofline.matmul_gflops,
            label: `roofline matmul ${report.roofline.matmul_gflops.toFixed(2)} GFLOP/s`,
          }
        : undefined;
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
