/**
 * Bench suite `topk`: GPU top-k over [rows, n] f32 scores for the shapes its users run:
 * one long row (Quest pages, DSA over long T), many rows of few blocks (MoBA/NSA), DSA-like
 * square (rows = T, n = T, k = 2048).
 *
 * @example
 * npm run tessera -- bench topk --cases 1x1048576x2048,16384x32x3 --runs 5
 */
import { Command } from 'commander';
import { planTopK, type TopKVariant } from '../../kernels/topk/index.js';
import { adapterFromEnv, requestDevice } from '../../src/gpu/device.js';
import { GpuTimer } from '../../src/gpu/timer.js';
import { Rng } from '../../src/testing.js';

export interface TopKBenchCase {
  rows: number;
  n: number;
  k: number;
}

export const DEFAULT_TOPK_CASES = '1x1048576x2048,16384x32x3,1024x1024x256,1x16777216x2048';

export function parseCases(s: string): TopKBenchCase[] {
  return s.split(',').map((c) => {
    const [rows, n, k] = c.toLowerCase().split('x').map(Number);
    return { rows: rows!, n: n!, k: k! };
  });
}

export async function runTopKBench(argv: string[]): Promise<void> {
  const cmd = new Command('topk')
    .option('--cases <list>', 'rows x n x k, comma separated', DEFAULT_TOPK_CASES)
    .option('--variant <v>', 'auto | small | radix', 'auto')
    .option('--runs <n>', 'timed runs per case', '5')
    .option('--json <file>', 'also write the results as JSON')
    .exitOverride();
  cmd.parse(argv, { from: 'user' });
  const o = cmd.opts<{ cases: string; variant: string; runs: string; json?: string }>();
  const dev = await requestDevice({ ...adapterFromEnv(), label: 'bench-topk' });
  const timer = new GpuTimer(dev);
  const results: Record<string, unknown>[] = [];
  try {
    for (const c of parseCases(o.cases)) {
      const rng = new Rng(c.rows + c.n + c.k);
      const total = c.rows * c.n;
      const s = new Float32Array(total);
      for (let i = 0; i < total; i++) s[i] = rng.next() * 2 - 1;
      const scores = { buffer: dev.upload(s), shape: [c.rows, c.n], dtype: 'f32' as const };
      const indices = { buffer: dev.createBuffer({ size: c.rows * c.k * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC }), shape: [c.rows, c.k], dtype: 'i32' as const };
      const values = { buffer: dev.createBuffer({ size: c.rows * c.k * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC }), shape: [c.rows, c.k], dtype: 'f32' as const };
      const plan = await planTopK(dev, { ...c, variant: o.variant as TopKVariant | 'auto' });
      const times: number[] = [];
      await timer.time((enc) => plan.run(enc, { scores, indices, values })); // warm-up
      for (let r = 0; r < Number(o.runs); r++) times.push(await timer.time((enc) => plan.run(enc, { scores, indices, values })));
      times.sort((a, b) => a - b);
      const median = times[Math.floor(times.length / 2)]!;
      const row = {
        suite: 'topk',
        impl: 'tessera',
        variant: plan.variant,
        rows: c.rows,
        n: c.n,
        k: c.k,
        median_ms: median,
        min_ms: times[0],
        max_ms: times[times.length - 1],
        runs: times.length,
        bytes: total * 4 + c.rows * c.k * 8,
        mcand_per_s: total / median / 1e3,
        timing: timer.source,
      };
      results.push(row);
      console.log(`${plan.variant.padEnd(6)} rows=${c.rows} n=${c.n} k=${c.k}: median ${median.toFixed(2)} ms (min ${times[0]!.toFixed(2)}, max ${times[times.length - 1]!.toFixed(2)}), ${(total / median / 1e3).toFixed(1)} M candidates/s [${timer.source}]`);
      plan.dispose();
      dev.destroyBuffer(scores.buffer);
      dev.destroyBuffer(indices.buffer);
      dev.destroyBuffer(values.buffer);
    }
    if (o.json) {
      const { writeFileSync } = await import('node:fs');
      writeFileSync(o.json, JSON.stringify({ adapter: dev.adapterName, results }, null, 2));
    }
  } finally {
    timer.destroy();
    dev.destroy();
  }
}
