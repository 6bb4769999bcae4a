/**
 * `tessera bench topk`: GPU top-k over `[rows, n]` f32 scores for the shapes its users run, with
 * TensorFlow.js WebGPU `tf.topk` on the same adapter as the baseline:
 * - one long row (Quest over millions of pages, DSA over long T): `1xNx2048`
 * - many rows of few blocks (MoBA `rows = T*Hq`, `n = #blocks`, k = 3): `16384x32x3`
 * - DSA-like square (`rows = T`, `n = T`)
 *
 *   npm run bench -- topk [--cases 1x1048576x2048,16384x32x3] [--variant auto|small|radix]
 *                         [--baseline tfjs|none] [--runs 5] [--json FILE] [--save]
 *
 * Results use the shared JSON shape with `T = n` (candidates per row), `H = rows`, `D = k`,
 * `mode = "rows=R k=K"`. Work: flops = 0 (selection is memory-bound), bytes = the scores read
 * once + indices and values written once; % of roofline is therefore of the copy bandwidth.
 */
import { Command } from 'commander';
import { planTopK, type TopKVariant } from '../../kernels/topk/index.js';
import { TesseraError } from '../../src/errors.js';
import { intOption } from '../../src/cli-common.js';
import type { TesseraDevice } from '../../src/gpu/device.js';
import { compileTimeMs } from '../../src/gpu/pipeline.js';
import { Rng } from '../../src/testing.js';
import {
  benchDevice,
  describeRoofline,
  formatTable,
  makeResult,
  measureRoofline,
  timeGpu,
  timeWall,
  writeResults,
  type BenchResult,
  type Roofline,
} from '../harness.js';
import { NO_WRITE_HELP, SAVE_HELP, shouldSave } from '../save.js';

export interface TopKBenchCase {
  rows: number;
  n: number;
  k: number;
}

/** The default sweep: one long row from 64K to 16M candidates, MoBA-like and DSA-like rows. */
export const DEFAULT_TOPK_CASES =
  '1x65536x2048,1x262144x2048,1x1048576x2048,1x4194304x2048,1x16777216x2048,16384x32x3,65536x32x3,1024x1024x256,4096x4096x2048';

/**
 * Parses `rows x n x k` triples.
 *
 * @example
 * parseTopKCases('1x1048576x2048,16384x32x3');
 */
export function parseTopKCases(s: string): TopKBenchCase[] {
  return s.split(',').map((c) => {
    const parts = c.trim().toLowerCase().split('x').map(Number);
    if (parts.length !== 3 || parts.some((x) => !Number.isInteger(x) || x <= 0)) {
      throw new TesseraError('E_ARG', `--cases: "${c}" is not rows x n x k`, {
        argument: '--cases',
        actual: c,
        expected: 'positive integers like 1x1048576x2048',
      });
    }
    return { rows: parts[0]!, n: parts[1]!, k: parts[2]! };
  });
}

function topkWork(c: TopKBenchCase): { flops: number; bytes: number } {
  return { flops: 0, bytes: c.rows * c.n * 4 + c.rows * c.k * 8 };
}

/** Scores: uniform in (-1, 1), f32 (many near-ties at 16M: the index digits get exercised). */
function makeScores(c: TopKBenchCase): Float32Array {
  const rng = new Rng(c.rows * 31 + c.n + c.k);
  const s = new Float32Array(c.rows * c.n);
  for (let i = 0; i < s.length; i++) s[i] = rng.next() * 2 - 1;
  return s;
}

const round = (x: number) => Math.round(x * 100) / 100;

/**
 * Times Tessera's top-k for one case.
 *
 * @example
 * const r = await benchTesseraTopK(dev, roofline, { rows: 1, n: 1 << 20, k: 2048 }, { runs: 5 });
 */
export async function benchTesseraTopK(
  dev: TesseraDevice,
  roofline: Roofline,
  c: TopKBenchCase,
  o: { runs: number; variant?: TopKVariant | 'auto' },
): Promise<BenchResult> {
  const s = makeScores(c);
  const scores = { buffer: dev.upload(s, { label: 'bench.topk.scores' }), shape: [c.rows, c.n], dtype: 'f32' as const };
  const out = (label: string) =>
    dev.createBuffer({ size: c.rows * c.k * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC, label });
  const indices = { buffer: out('bench.topk.indices'), shape: [c.rows, c.k], dtype: 'i32' as const };
  const values = { buffer: out('bench.topk.values'), shape: [c.rows, c.k], dtype: 'f32' as const };
  const c0 = compileTimeMs();
  const p0 = performance.now();
  const plan = await planTopK(dev, { ...c, variant: o.variant });
  const planMs = performance.now() - p0;
  try {
    const t = await timeGpu(dev, (enc) => plan.run(enc, { scores, indices, values }), { warmup: 1, runs: o.runs });
    return makeResult(
      roofline,
      {
        suite: 'topk',
        impl: 'tessera',
        T: c.n,
        D: c.k,
        H: c.rows,
        dtype: 'f32',
        mode: `rows=${c.rows} k=${c.k}`,
        ...topkWork(c),
        rows: c.rows,
        n: c.n,
        k: c.k,
        variant: plan.variant,
        target: plan.target,
        plan_ms: round(planMs),
        compile_ms: round(compileTimeMs() - c0),
        mcand_per_s: round((c.rows * c.n) / t.median_ms / 1e3),
      },
      t,
    );
  } finally {
    plan.dispose();
    dev.destroyBuffer(scores.buffer);
    dev.destroyBuffer(indices.buffer);
    dev.destroyBuffer(values.buffer);
  }
}

/**
 * Times TensorFlow.js WebGPU `tf.topk(x, k)` (sorted) on the same case, by wall clock.
 *
 * @example
 * const r = await benchTfjsTopK(roofline, { rows: 1, n: 65536, k: 2048 }, { runs: 3 });
 */
export async function benchTfjsTopK(roofline: Roofline, c: TopKBenchCase, o: { runs: number }): Promise<BenchResult> {
  const { loadTfjsWebGpu } = await import('../baseline/tfjs.js');
  const { tf } = await loadTfjsWebGpu();
  const x = tf.tensor2d(makeScores(c), [c.rows, c.n]);
  try {
    const t = await timeWall(
      async () => {
        const r = tf.topk(x, c.k, true);
        await r.indices.data();
        r.values.dispose();
        r.indices.dispose();
      },
      { warmup: 1, runs: o.runs },
    );
    return makeResult(
      roofline,
      {
        suite: 'topk',
        impl: 'tfjs',
        T: c.n,
        D: c.k,
        H: c.rows,
        dtype: 'f32',
        mode: `rows=${c.rows} k=${c.k}`,
        ...topkWork(c),
        rows: c.rows,
        n: c.n,
        k: c.k,
      },
      t,
    );
  } finally {
    x.dispose();
  }
}

/**
 * The CLI entry of the suite (registered in bench/cli.ts as `topk`).
 *
 * @example
 * await runTopKBench(['--cases', '1x1048576x2048', '--baseline', 'none']);
 */
export async function runTopKBench(argv: string[]): Promise<void> {
  const cmd = new Command('topk')
    .description('GPU top-k: Tessera vs TensorFlow.js WebGPU tf.topk, with the roofline')
    .option('--cases <list>', 'rows x n x k, comma separated', DEFAULT_TOPK_CASES)
    .option('--variant <v>', 'auto | small | radix', 'auto')
    .option('--baseline <name>', 'tfjs | none', 'tfjs')
    .option('--baseline-max <n>', 'skip the baseline above this many scores (rows * n)', String(1 << 22))
    .option('--runs <n>', 'timed runs (after 1 warm-up)', '5')
    .option('--baseline-runs <n>', 'timed runs of the baseline', '3')
    .option('--adapter <name>', 'auto | swiftshader | llvmpipe')
    .option('--json <file>', 'also write the JSON report here')
    .option('--save', SAVE_HELP)
    .option('--no-write', NO_WRITE_HELP);
  cmd.parse(argv, { from: 'user' });
  const o = cmd.opts<{
    cases: string;
    variant: string;
    baseline: string;
    baselineMax: string;
    runs: string;
    baselineRuns: string;
    adapter?: string;
    json?: string;
    save?: boolean;
    write: boolean;
  }>();
  if (!['auto', 'small', 'radix'].includes(o.variant))
    throw new TesseraError('E_ARG', 'unknown --variant', {
      argument: '--variant',
      actual: o.variant,
      expected: 'auto, small or radix',
    });
  if (!['tfjs', 'none'].includes(o.baseline))
    throw new TesseraError('E_ARG', 'unknown --baseline', {
      argument: '--baseline',
      actual: o.baseline,
      expected: 'tfjs or none',
    });
  const cases = parseTopKCases(o.cases);
  const runs = intOption(o.runs, '--runs');
  const dev = await benchDevice({ adapter: o.adapter });
  const results: BenchResult[] = [];
  let roofline: Roofline;
  try {
    console.log(
      `adapter: ${dev.adapterName} (${dev.adapterClass}); timing: ${dev.features.timestampQuery ? 'GPU timestamp queries' : 'wall clock'}`,
    );
    roofline = await measureRoofline(dev, { log: (l) => console.log(`  ${l}`) });
    console.log(`roofline: ${describeRoofline(roofline)}`);
    for (const c of cases) {
      const r = await benchTesseraTopK(dev, roofline, c, { runs, variant: o.variant as TopKVariant | 'auto' });
      console.log(
        `  tessera ${r.variant}/${r.target} rows=${c.rows} n=${c.n} k=${c.k}: ${r.median_ms.toFixed(2)} ms (min ${r.min_ms.toFixed(2)}, max ${r.max_ms.toFixed(2)}), ${r.mcand_per_s} M candidates/s`,
      );
      results.push(r);
    }
  } finally {
    dev.destroy();
  }
  if (o.baseline === 'tfjs') {
    for (const c of cases) {
      if (c.rows * c.n > intOption(o.baselineMax, '--baseline-max', { max: Number.MAX_SAFE_INTEGER })) {
        console.log(`  tfjs rows=${c.rows} n=${c.n} k=${c.k}: skipped (over --baseline-max)`);
        continue;
      }
      try {
        const r = await benchTfjsTopK(roofline, c, { runs: intOption(o.baselineRuns, '--baseline-runs') });
        console.log(`  tfjs rows=${c.rows} n=${c.n} k=${c.k}: ${r.median_ms.toFixed(1)} ms (wall clock)`);
        results.push(r);
      } catch (e) {
        console.log(`  tfjs rows=${c.rows} n=${c.n} k=${c.k}: failed (${(e as Error).message.split('\n')[0]})`);
      }
    }
  }
  console.log('');
  console.log(formatTable(results));
  const report = {
    adapter: results[0] ? String(roofline.adapter) : 'unknown',
    roofline,
    results,
    work: 'flops = 0 (selection); bytes = rows*n*4 (scores read) + rows*k*8 (indices, values written); T = n, H = rows, D = k',
  };
  if (shouldSave(o)) {
    const plots = [
      {
        name: '',
        title: 'topk: time vs candidates per row (log-log)',
        x: 'T',
        y: 'median_ms',
        xTitle: 'n (candidates per row)',
        yTitle: 'median time (ms)',
      },
    ];
    const written = await writeResults(undefined, 'topk', report, { json: o.json, plots });
    console.log(`wrote ${written.join(', ')}`);
  } else if (o.json) {
    const { writeFileSync } = await import('node:fs');
    writeFileSync(o.json, JSON.stringify(report, null, 2));
  }
}
