/**
 * The CLI's benchmark suites, run in the page through the suites' own reusable functions (no
 * timing or work logic here): `measureRoofline` (bench/harness.ts), `benchTesseraDense` /
 * `benchTfjsDense` (dense), `benchSparseMethod` + dense for the ratio (sparse), `benchLinear`
 * for every op of `LINEAR_OPS` in chunk and recurrent modes (linear), `benchTesseraTopK` /
 * `benchTfjsTopK` (topk). Sizes come from URL parameters with small defaults (see docs/browser.md).
 */
import type { TesseraDevice } from '../../src/gpu/device.js';
import { describeRoofline, makeResult, measureRoofline, type BenchResult, type Roofline } from '../harness.js';
import { benchTesseraDense, benchTfjsDense, denseInputs, denseWork, maxAbsDiff } from '../suites/dense.js';
import { benchSparseMethod, SPARSE_METHODS, type SparseBenchConfig, type SparseBenchMethod } from '../suites/sparse.js';
import { benchLinear, LINEAR_OPS } from '../suites/linear.js';
import { benchTesseraTopK, benchTfjsTopK, parseTopKCases } from '../suites/topk.js';
import type { FloatDType } from '../../src/tensor.js';

export const SUITES = ['dense', 'sparse', 'linear', 'topk'] as const;
export type SuiteName = (typeof SUITES)[number];

/** One suite's outcome on the page. */
export interface PageSuite {
  suite: SuiteName;
  /** The impl (dense, topk) or method / op names (sparse, linear) the suite was asked to run. */
  expected: string[];
  results: BenchResult[];
  /** Parts not run, and why (e.g. TensorFlow.js failed to load). */
  skipped: string[];
  error?: string;
  /** Wall time of the whole suite on the page (plans, warm-ups and timed runs), seconds. */
  wall_s?: number;
}

export interface PageSuites {
  roofline?: Roofline;
  rooflineText?: string;
  suites: PageSuite[];
}

/** The page's suite sizes, from URL parameters (small defaults: a few seconds per suite on SwiftShader). */
export interface SuiteParams {
  suites: SuiteName[];
  runs: number;
  D: number;
  H: number;
  dtype: FloatDType;
  tfjs: boolean;
  /** `ort=1`: the dense suite also runs ONNX Runtime Web's WebGPU EP (GroupQueryAttention), checked against Tessera. */
  ort: boolean;
  denseT: number[];
  sparseT: number[];
  sparseMethods: SparseBenchMethod[];
  sparse: Omit<SparseBenchConfig, 'T' | 'D' | 'H' | 'dtype' | 'warmup' | 'runs'>;
  linearT: number[];
  linearOps: string[];
  linearModes: ('chunk' | 'recurrent')[];
  linearK: number;
  topkCases: string;
  roofCopyMiB: number;
  roofMatmul: number;
}

const ints = (s: string) =>
  s.split(',').map((x) => {
    const n = Number(x.trim());
    if (!Number.isInteger(n) || n <= 0) throw new Error(`not a positive integer list: ${s}`);
    return n;
  });
const list = (s: string) =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);

export function suiteParams(p: URLSearchParams): SuiteParams {
  const get = (k: string, d: string) => p.get(k) ?? d;
  const int = (k: string, d: number) => ints(get(k, String(d)))[0]!;
  const T = p.get('T');
  const suites = list(get('suites', SUITES.join(','))).filter((s) => s !== 'none');
  for (const s of suites)
    if (!(SUITES as readonly string[]).includes(s))
      throw new Error(`unknown suite "${s}" (expected ${SUITES.join(', ')} or none)`);
  const methods = list(get('methods', SPARSE_METHODS.join(',')));
  for (const m of methods)
    if (!(SPARSE_METHODS as readonly string[]).includes(m)) throw new Error(`unknown sparse method "${m}"`);
  const ops = list(get('ops', Object.keys(LINEAR_OPS).join(',')));
  for (const op of ops) if (!LINEAR_OPS[op]) throw new Error(`unknown linear op "${op}"`);
  const modes = list(get('modes', 'chunk,recurrent'));
  for (const m of modes) if (m !== 'chunk' && m !== 'recurrent') throw new Error(`unknown linear mode "${m}"`);
  const dtype = get('dtype', 'f32');
  if (dtype !== 'f32' && dtype !== 'f16' && dtype !== 'bf16') throw new Error(`unknown dtype "${dtype}"`);
  const block = int('block', 64);
  const window = int('window', 256);
  return {
    suites: suites as SuiteName[],
    runs: int('runs', 3),
    D: int('D', 64),
    H: int('H', 1),
    dtype,
    tfjs: p.get('tfjs') !== '0',
    ort: p.get('ort') === '1',
    denseT: ints(get('denseT', T ?? '256,512')),
    sparseT: ints(get('sparseT', T ?? '1024')),
    sparseMethods: methods as SparseBenchMethod[],
    sparse: {
      window,
      mobaBlock: int('mobaBlock', block),
      mobaTopk: int('mobaTopk', 3),
      bsBlock: int('bsBlock', block),
      nsaBlock: int('nsaBlock', block),
      nsaCount: int('nsaCount', 4),
      nsaWindow: int('nsaWindow', window),
      dsaTopk: int('dsaTopk', 256),
      dsaHI: int('dsaHI', 4),
      dsaDI: int('dsaDI', 32),
    },
    linearT: ints(get('linearT', T ?? '1024')),
    linearOps: ops,
    linearModes: modes as ('chunk' | 'recurrent')[],
    linearK: int('K', 64),
    topkCases: get('topk', '1x65536x2048'),
    roofCopyMiB: int('roofCopyMiB', 16),
    roofMatmul: int('roofMatmul', 256),
  };
}

/**
 * Benchmark.js (the harness's `measureCpu`, which the dense suite uses for the encode time) looks
 * for lodash with `require` and then at `window._`; a bundled page has no `require`, so hand it
 * lodash on the global before the first measurement.
 */
async function lodashForBenchmarkJs(): Promise<void> {
  const g = globalThis as { _?: unknown };
  // @ts-expect-error lodash ships no type declarations (benchmark depends on it)
  if (!g._) g._ = ((await import('lodash')) as { default: unknown }).default;
}

const firstLine = (e: unknown) => (e instanceof Error ? `${e.name}: ${e.message}` : String(e)).split('\n')[0]!;

export interface SuiteHooks {
  log(line: string): void;
  status(text: string): void;
  /** Called after each suite with its outcome (render the table). */
  onSuite(s: PageSuite, roofline: Roofline): void;
}

/**
 * Measures the roofline once, then runs the asked suites on `dev`, in order. A suite that throws
 * is recorded with its error and the others still run.
 */
export async function runSuites(dev: TesseraDevice, p: SuiteParams, out: PageSuites, hooks: SuiteHooks): Promise<void> {
  if (!p.suites.length) return;
  await lodashForBenchmarkJs();
  hooks.status('roofline');
  const roofline = await measureRoofline(dev, {
    copyBytes: p.roofCopyMiB * 2 ** 20,
    matmulSize: p.roofMatmul,
    runs: 3,
    log: hooks.log,
  });
  out.roofline = roofline;
  out.rooflineText = describeRoofline(roofline);
  hooks.log(`roofline: ${out.rooflineText}`);
  const { runs, D, H, dtype } = p;
  for (const name of p.suites) {
    hooks.status(`bench suite ${name}`);
    const s: PageSuite = { suite: name, expected: [], results: [], skipped: [] };
    const t0 = performance.now();
    out.suites.push(s);
    const add = (r: BenchResult) => {
      s.results.push(r);
      hooks.log(
        `${name}: ${r.suite} ${r.impl}${r.mode ? ` ${r.mode}` : ''} T=${r.T}: ${r.median_ms.toFixed(2)} ms, ${(r.pct_roofline as number).toFixed(1)}% of roofline`,
      );
    };
    try {
      if (name === 'dense') {
        s.expected = ['tessera', ...(p.tfjs ? ['tfjs'] : []), ...(p.ort ? ['ort'] : [])];
        const outs = new Map<number, Float32Array>();
        for (const T of p.denseT)
          add(
            await benchTesseraDense(
              dev,
              roofline,
              { T, D, H, dtype, causal: true, warmup: 1, runs },
              {},
              p.ort ? (o) => outs.set(T, o) : undefined,
            ),
          );
        if (p.ort) {
          for (const T of p.denseT) {
            try {
              const { timeOrtWebAttention } = await import('../baseline/ort-web.js');
              const x = denseInputs({ T, H, D });
              const { output, timing } = await timeOrtWebAttention({
                T,
                D,
                H,
                q: Float32Array.from(x.q),
                k: Float32Array.from(x.k),
                v: Float32Array.from(x.v),
                warmup: 1,
                runs,
              });
              const r = makeResult(
                roofline,
                {
                  suite: 'dense',
                  impl: 'ort',
                  T,
                  D,
                  H,
                  dtype,
                  ...denseWork({ T, D, H, dtype }),
                  causal: true,
                  runtime: 'onnxruntime-web webgpu',
                },
                timing,
              );
              r.max_abs_diff = maxAbsDiff(outs.get(T)!, output);
              add(r);
            } catch (e) {
              s.skipped.push(`ort T=${T}: ${firstLine(e)}`);
              hooks.log(`dense: ort skipped (${firstLine(e)})`);
              break;
            }
          }
        }
        if (p.tfjs) {
          for (const T of p.denseT) {
            try {
              add(
                await benchTfjsDense(roofline, { T, D, H, dtype, causal: true, warmup: 1, runs, baselineRuns: runs }),
              );
            } catch (e) {
              s.skipped.push(`tfjs T=${T}: ${firstLine(e)}`);
              hooks.log(`dense: tfjs skipped (${firstLine(e)})`);
              break;
            }
          }
        }
      } else if (name === 'sparse') {
        s.expected = ['dense', ...p.sparseMethods];
        for (const T of p.sparseT) {
          const c: SparseBenchConfig = { T, D, H, dtype, ...p.sparse, warmup: 1, runs };
          const dense = await benchTesseraDense(
            dev,
            roofline,
            { T, D, H, dtype, causal: true, warmup: 1, runs },
            { impl: 'dense', suite: 'dense' },
          );
          dense.mode = 'prefill';
          add(dense);
          for (const m of p.sparseMethods) {
            const r = await benchSparseMethod(dev, roofline, m, c);
            r.speedup_vs_dense = Math.round((dense.median_ms / r.median_ms) * 100) / 100;
            add(r);
          }
        }
      } else if (name === 'linear') {
        s.expected = p.linearOps.flatMap((op) => p.linearModes.map((m) => `${op}/${m}`));
        for (const op of p.linearOps) {
          for (const mode of p.linearModes) {
            for (const T of p.linearT)
              add(
                await benchLinear(dev, roofline, {
                  op,
                  mode,
                  T,
                  H,
                  K: p.linearK,
                  V: p.linearK,
                  dtype,
                  segment: T,
                  warmup: 1,
                  runs,
                }),
              );
          }
        }
      } else if (name === 'topk') {
        s.expected = ['tessera', ...(p.tfjs ? ['tfjs'] : [])];
        const cases = parseTopKCases(p.topkCases);
        for (const c of cases) add(await benchTesseraTopK(dev, roofline, c, { runs }));
        if (p.tfjs) {
          for (const c of cases) {
            try {
              add(await benchTfjsTopK(roofline, c, { runs }));
            } catch (e) {
              s.skipped.push(`tfjs ${c.rows}x${c.n}x${c.k}: ${firstLine(e)}`);
              hooks.log(`topk: tfjs skipped (${firstLine(e)})`);
              break;
            }
          }
        }
      }
    } catch (e) {
      s.error = firstLine(e);
      hooks.log(`${name}: error ${s.error}`);
    }
    // tfjs could not load: it is not expected of this suite (and the page says so)
    if (s.skipped.length && !s.results.some((r) => r.impl === 'tfjs'))
      s.expected = s.expected.filter((x) => x !== 'tfjs');
    if (s.skipped.length && !s.results.some((r) => r.impl === 'ort'))
      s.expected = s.expected.filter((x) => x !== 'ort');
    s.wall_s = Math.round((performance.now() - t0) / 100) / 10;
    hooks.onSuite(s, roofline);
  }
}

/** The name a result counts for in `PageSuite.expected`. */
export function resultKey(s: SuiteName, r: BenchResult): string {
  if (s === 'sparse') return r.impl === 'dense' ? 'dense' : r.suite;
  if (s === 'linear') return `${r.suite}/${r.mode}`;
  return r.impl;
}

/** Ratio columns the suites compute: sparse against dense (speedup_vs_dense), dense/topk against tfjs. */
export function ratioOf(s: PageSuite, r: BenchResult): string {
  if (s.suite === 'sparse')
    return typeof r.speedup_vs_dense === 'number' ? `${r.speedup_vs_dense.toFixed(2)}x vs dense` : '';
  if (s.suite === 'dense' || s.suite === 'topk') {
    const base = s.results.find((x) => x.impl === 'tfjs' && x.T === r.T && x.H === r.H && x.D === r.D);
    return base && r.impl !== 'tfjs' ? `${(base.median_ms / r.median_ms).toFixed(2)}x vs tfjs` : '';
  }
  if (s.suite === 'linear' && r.mode === 'chunk') {
    const rec = s.results.find((x) => x.suite === r.suite && x.mode === 'recurrent' && x.T === r.T);
    return rec ? `${(rec.median_ms / r.median_ms).toFixed(2)}x vs recurrent` : '';
  }
  return '';
}
