/**
 * `tessera bench sparse`: the sparse attention methods against dense causal flash attention,
 * measured in the same run on the same device, each as a % of the roofline measured first.
 *
 *   npm run bench -- sparse [--T 4096,16384] [--D 64] [--H 1] [--dtype f32]
 *                           [--methods sliding_window,moba,block_sparse,nsa,dsa] [--dense-max-T 16384]
 *                           [--window 512] [--moba-block 512] [--moba-topk 3]
 *                           [--bs-block 64] [--nsa-block 64] [--nsa-count 16] [--nsa-window 512]
 *                           [--dsa-topk 2048] [--dsa-hi 4] [--dsa-di 32] [--runs 3] [--json FILE] [--save]
 *
 * One sequence, Hq = Hkv = H, prefill (Tq = Tk = T, `mode: 'prefill'`). Results use the dense suite's
 * JSON shape with `suite` = the method and `impl: 'tessera'`; the reference is Tessera's dense flash
 * attention (`suite: 'dense'`, `impl: 'dense'`, the harness convention), so the table's `vs dense`
 * column and each result's `speedup_vs_dense` compare within the run.
 * Work (a multiply-add counts 2): flops = H * 4 * D * (visible (query, key) pairs of the method),
 * plus the method's selection work (MoBA gate: 2 * D per (row, past block); NSA: the compression
 * branch and its block scores; DSA: the indexer, 2 * HI * DI per causal pair); bytes = q, k, v read
 * once + o written once.
 * - sliding_window: keys in (t − W, t] (the dense kernel with `window`).
 * - moba: own block causally + (topk − 1) full past blocks.
 * - block_sparse: a BSR band of (R = C = bs-block) blocks: the diagonal block, the W / bs-block
 *   blocks before it and block 0 (a sliding window with a sink block, as a mask).
 * - nsa: compression + selection + window branches (variant 'nsa'), Hq = Hkv = H.
 * - dsa: index scores over all causal pairs, top-k tokens, token-sparse attention.
 */
import { writeFileSync } from 'node:fs';
import { Command } from 'commander';
import { TesseraError } from '../../src/errors.js';
import type { TesseraDevice } from '../../src/gpu/device.js';
import { compileTimeMs } from '../../src/gpu/pipeline.js';
import { byteSize, encode, type FloatDType, type GpuTensor } from '../../src/tensor.js';
import { Rng } from '../../src/testing.js';
import { intList, intOption } from '../../src/cli-common.js';
import {
  benchDevice,
  describeRoofline,
  formatTable,
  makeResult,
  measureRoofline,
  timeGpu,
  writeResults,
  type BenchResult,
  type Roofline,
} from '../harness.js';
import { NO_WRITE_HELP, SAVE_HELP, shouldSave } from '../save.js';
import { benchTesseraDense } from './dense.js';
import { planAttention } from '../../kernels/dense/index.js';
import { planMoba } from '../../kernels/moba/index.js';
import { planBlockSparse } from '../../kernels/block_sparse/index.js';
import { planNsa } from '../../kernels/nsa/index.js';
import { planDsa } from '../../kernels/dsa/index.js';

export const SPARSE_METHODS = ['sliding_window', 'moba', 'block_sparse', 'nsa', 'dsa'] as const;
export type SparseBenchMethod = (typeof SPARSE_METHODS)[number];

export interface SparseBenchConfig {
  T: number;
  D: number;
  H: number;
  dtype: FloatDType;
  window: number;
  mobaBlock: number;
  mobaTopk: number;
  bsBlock: number;
  nsaBlock: number;
  nsaCount: number;
  nsaWindow: number;
  dsaTopk: number;
  dsaHI: number;
  dsaDI: number;
  warmup: number;
  runs: number;
}

const sum = (n: number, f: (t: number) => number) => {
  let s = 0;
  for (let t = 0; t < n; t++) s += f(t);
  return s;
};

/**
 * The BSR band used for block_sparse: block 0, the diagonal block and W / bs blocks before it.
 *
 * @example
 * const { indptr, indices } = bandPattern(16384, 64, 512);
 */
export function bandPattern(T: number, bs: number, window: number): { indptr: number[]; indices: number[] } {
  const MB = Math.ceil(T / bs);
  const back = Math.max(1, Math.ceil(window / bs));
  const indptr = [0];
  const indices: number[] = [];
  for (let r = 0; r < MB; r++) {
    const lo = Math.max(0, r - back);
    if (lo > 0) indices.push(0);
    for (let b = lo; b <= r; b++) indices.push(b);
    indptr.push(indices.length);
  }
  return { indptr, indices };
}

/**
 * Flops and bytes of one run of a method (see the file comment).
 *
 * @example
 * const { flops, bytes } = sparseWork('moba', config);
 */
export function sparseWork(
  method: SparseBenchMethod | 'dense',
  c: SparseBenchConfig,
): { flops: number; bytes: number } {
  const { T, D, H } = c;
  const bytes = 4 * byteSize([T, H, D], c.dtype);
  const attn = (pairs: number) => H * 4 * D * pairs;
  switch (method) {
    case 'dense':
      return { flops: attn((T * (T + 1)) / 2), bytes };
    case 'sliding_window':
      return { flops: attn(sum(T, (t) => Math.min(t + 1, c.window))), bytes };
    case 'moba': {
      const B = c.mobaBlock;
      const pairs = sum(T, (t) => {
        const own = Math.floor(t / B);
        return t - own * B + 1 + Math.min(c.mobaTopk - 1, own) * B;
      });
      const gate = H * 2 * D * sum(T, (t) => Math.floor(t / B));
      return { flops: attn(pairs) + gate, bytes };
    }
    case 'block_sparse': {
      const { indptr, indices } = bandPattern(T, c.bsBlock, c.window);
      let pairs = 0;
      for (let t = 0; t < T; t++) {
        const r = Math.floor(t / c.bsBlock);
        for (let s = indptr[r]!; s < indptr[r + 1]!; s++)
          pairs += Math.max(0, Math.min(t + 1, (indices[s]! + 1) * c.bsBlock) - indices[s]! * c.bsBlock);
      }
      return { flops: attn(pairs), bytes };
    }
    case 'nsa': {
      const bs = c.nsaBlock;
      const cmp = sum(T, (t) => Math.floor((t + 1) / bs));
      const slc = sum(T, (t) => {
        const own = Math.floor(t / bs);
        return Math.min(c.nsaCount - 1, own) * bs + (t - own * bs + 1);
      });
      const win = sum(T, (t) => Math.min(t + 1, c.nsaWindow));
      return { flops: attn(cmp) * 1.5 + attn(slc) + attn(win), bytes };
    }
    case 'dsa': {
      const pairs = sum(T, (t) => Math.min(t + 1, c.dsaTopk));
      const index = 2 * c.dsaHI * c.dsaDI * ((T * (T + 1)) / 2);
      return {
        flops: attn(pairs) + index,
        bytes: bytes + byteSize([T, c.dsaHI, c.dsaDI], c.dtype) + byteSize([T, c.dsaDI], c.dtype),
      };
    }
  }
}

interface Runner {
  run(enc: GPUCommandEncoder): void;
  dispose(): void;
}

async function makeRunner(
  dev: TesseraDevice,
  method: SparseBenchMethod,
  c: SparseBenchConfig,
  tensor: (n: number | null, shape: number[], dtype?: FloatDType | 'f32') => GpuTensor,
): Promise<Runner> {
  const { T, D, H, dtype } = c;
  const n = T * H * D;
  const q = tensor(n, [T, H, D]);
  const k = tensor(n, [T, H, D]);
  const v = tensor(n, [T, H, D]);
  const o = tensor(null, [T, H, D]);
  const lse = tensor(null, [T, H], 'f32');
  const common = { Hq: H, Hkv: H, D, dtype };
  switch (method) {
    case 'sliding_window': {
      const p = await planAttention(dev, { ...common, Tq: T, causal: true, window: c.window });
      return { run: (e) => p.run(e, { q, k, v, o, lse }), dispose: () => p.dispose() };
    }
    case 'moba': {
      const p = await planMoba(dev, { ...common, Tq: T, blockSize: c.mobaBlock, topk: c.mobaTopk });
      return { run: (e) => p.run(e, { q, k, v, o, lse }), dispose: () => p.dispose() };
    }
    case 'block_sparse': {
      const p = await planBlockSparse(dev, {
        ...common,
        Tq: T,
        R: c.bsBlock,
        C: c.bsBlock,
        ...bandPattern(T, c.bsBlock, c.window),
      });
      return { run: (e) => p.run(e, { q, k, v, o, lse }), dispose: () => p.dispose() };
    }
    case 'nsa': {
      const g = () => tensor(T * H, [T, H], 'f32');
      const gCmp = g(),
        gSlc = g(),
        gSwa = g();
      const p = await planNsa(dev, {
        ...common,
        Tq: T,
        blockSize: c.nsaBlock,
        blockCount: c.nsaCount,
        window: c.nsaWindow,
      });
      return { run: (e) => p.run(e, { q, k, v, o, gCmp, gSlc, gSwa }), dispose: () => p.dispose() };
    }
    case 'dsa': {
      const qI = tensor(T * c.dsaHI * c.dsaDI, [T, c.dsaHI, c.dsaDI]);
      const kI = tensor(T * c.dsaDI, [T, c.dsaDI]);
      const w = tensor(T * c.dsaHI, [T, c.dsaHI]);
      const p = await planDsa(dev, { ...common, Tq: T, HI: c.dsaHI, DI: c.dsaDI, topk: c.dsaTopk });
      return { run: (e) => p.run(e, { q, k, v, o, lse, qI, kI, w }), dispose: () => p.dispose() };
    }
  }
}

/**
 * Times one sparse method for one configuration.
 *
 * @example
 * const r = await benchSparseMethod(dev, roofline, 'moba', config);
 */
export async function benchSparseMethod(
  dev: TesseraDevice,
  roofline: Roofline,
  method: SparseBenchMethod,
  c: SparseBenchConfig,
): Promise<BenchResult> {
  const rng = new Rng(4321 + c.T);
  const bufs: GPUBuffer[] = [];
  const tensor = (count: number | null, shape: number[], dtype: FloatDType | 'f32' = c.dtype): GpuTensor => {
    const size = byteSize(shape, dtype);
    const buffer =
      count !== null
        ? dev.upload(encode(rng.normals(count), dtype), { size, label: `bench.${method}` })
        : dev.createBuffer({
            size,
            usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC,
            label: `bench.${method}.out`,
          });
    bufs.push(buffer);
    return { buffer, shape, dtype };
  };
  const c0 = compileTimeMs();
  const p0 = performance.now();
  const runner = await makeRunner(dev, method, c, tensor);
  const planMs = performance.now() - p0;
  const compileMs = compileTimeMs() - c0;
  try {
    const timing = await timeGpu(dev, (enc) => runner.run(enc), { warmup: c.warmup, runs: c.runs });
    const extra: Record<string, unknown> = { plan_ms: round(planMs), compile_ms: round(compileMs) };
    if (method === 'sliding_window' || method === 'block_sparse') extra.window = c.window;
    if (method === 'moba') Object.assign(extra, { block: c.mobaBlock, topk: c.mobaTopk });
    if (method === 'block_sparse') extra.block = c.bsBlock;
    if (method === 'nsa') Object.assign(extra, { block: c.nsaBlock, block_count: c.nsaCount, window: c.nsaWindow });
    if (method === 'dsa') Object.assign(extra, { topk: c.dsaTopk, index_heads: c.dsaHI, index_dim: c.dsaDI });
    return makeResult(
      roofline,
      {
        suite: method,
        impl: 'tessera',
        mode: 'prefill',
        T: c.T,
        D: c.D,
        H: c.H,
        dtype: c.dtype,
        ...sparseWork(method, c),
        ...extra,
      },
      timing,
    );
  } finally {
    runner.dispose();
    for (const b of bufs) dev.destroyBuffer(b);
  }
}

const round = (x: number) => Math.round(x * 100) / 100;

/**
 * The CLI entry of the suite (registered in bench/cli.ts as `sparse`).
 *
 * @example
 * await runSparseSuite(['--T', '4096,16384', '--methods', 'sliding_window,moba']);
 */
export async function runSparseSuite(argv: string[]): Promise<void> {
  const collect = (v: string, prev: string[] = []) => [...prev, v];
  const cmd = new Command('sparse')
    .description('sparse attention methods vs dense causal flash, with the roofline')
    .option('--T <list>', 'sequence lengths', '16384')
    .option('--D <n>', 'head dim', '64')
    .option('--H <n>', 'heads (query = kv heads)', '1')
    .option('--dtype <dtype>', 'storage dtype (f32 | f16)', 'f32')
    .option('--methods <list>', `comma list of ${SPARSE_METHODS.join(', ')}`, 'sliding_window,moba,block_sparse,nsa')
    .option('--dense-max-T <n>', 'run the dense reference only up to this T (it is quadratic)', '16384')
    .option('--window <n>', 'sliding window W (also the block_sparse band)', '512')
    .option('--moba-block <n>', 'MoBA block size', '512')
    .option('--moba-topk <n>', 'MoBA top-k blocks, own block included', '3')
    .option('--bs-block <n>', 'block_sparse R = C', '64')
    .option('--nsa-block <n>', 'NSA block size', '64')
    .option('--nsa-count <n>', 'NSA selected blocks', '16')
    .option('--nsa-window <n>', 'NSA window', '512')
    .option('--dsa-topk <n>', 'DSA tokens kept', '2048')
    .option('--dsa-hi <n>', 'DSA index heads', '4')
    .option('--dsa-di <n>', 'DSA index head dim', '32')
    .option('--runs <n>', 'timed runs (after 1 warm-up)', '3')
    .option('--adapter <name>', 'auto | swiftshader | llvmpipe')
    .option('--dawn-flag <flag>', 'extra Dawn flag (repeatable)', collect)
    .option('--json <file>', 'also write the JSON report here')
    .option('--save', SAVE_HELP)
    .option('--no-write', NO_WRITE_HELP);
  cmd.parse(argv, { from: 'user' });
  const o = cmd.opts<
    Record<string, string> & { dawnFlag?: string[]; save?: boolean; write: boolean; json?: string; adapter?: string }
  >();
  const num = (key: string) => intOption(o[key], cmd.options.find((op) => op.attributeName() === key)?.long ?? key);
  const Ts = intList(o.T, '--T');
  const methods = o
    .methods!.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const m of methods)
    if (!(SPARSE_METHODS as readonly string[]).includes(m))
      throw new TesseraError('E_ARG', 'unknown method', {
        argument: '--methods',
        actual: m,
        expected: SPARSE_METHODS.join(', '),
      });
  if (o.dtype !== 'f32' && o.dtype !== 'f16' && o.dtype !== 'bf16')
    throw new TesseraError('E_ARG', 'unknown --dtype', {
      argument: '--dtype',
      actual: o.dtype,
      expected: 'f32, f16 or bf16',
    });
  const denseMaxT = num('denseMaxT');
  // every option is read (and a bad one refused, naming it) before the device and the roofline
  const shape: Omit<SparseBenchConfig, 'T'> = {
    D: num('D'),
    H: num('H'),
    dtype: o.dtype as FloatDType,
    window: num('window'),
    mobaBlock: num('mobaBlock'),
    mobaTopk: num('mobaTopk'),
    bsBlock: num('bsBlock'),
    nsaBlock: num('nsaBlock'),
    nsaCount: num('nsaCount'),
    nsaWindow: num('nsaWindow'),
    dsaTopk: num('dsaTopk'),
    dsaHI: num('dsaHi'),
    dsaDI: num('dsaDi'),
    warmup: 1,
    runs: num('runs'),
  };
  const dev = await benchDevice({ adapter: o.adapter, dawnFlags: o.dawnFlag });
  const results: BenchResult[] = [];
  let roofline: Roofline;
  try {
    console.log(
      `adapter: ${dev.adapterName} (${dev.adapterClass}), ${dev.adapter.description}; timing: ${dev.features.timestampQuery ? 'GPU timestamp queries' : 'wall clock'}`,
    );
    roofline = await measureRoofline(dev, { log: (l) => console.log(`  ${l}`) });
    console.log(`roofline: ${describeRoofline(roofline)}`);
    for (const T of Ts) {
      const c: SparseBenchConfig = { ...shape, T };
      let dense: BenchResult | undefined;
      if (T <= denseMaxT) {
        dense = await benchTesseraDense(
          dev,
          roofline,
          { T, D: c.D, H: c.H, dtype: c.dtype, causal: true, warmup: 1, runs: c.runs },
          { impl: 'dense', suite: 'dense' },
        );
        dense.mode = 'prefill';
        console.log(
          `  dense T=${T}: ${dense.median_ms.toFixed(1)} ms (${(dense.gflops as number).toFixed(2)} GFLOP/s)`,
        );
        results.push(dense);
      }
      for (const m of methods as SparseBenchMethod[]) {
        const r = await benchSparseMethod(dev, roofline, m, c);
        if (dense) r.speedup_vs_dense = round(dense.median_ms / r.median_ms);
        console.log(
          `  ${m} T=${T}: ${r.median_ms.toFixed(1)} ms (${(r.gflops as number).toFixed(2)} GFLOP/s)${dense ? `, ${r.speedup_vs_dense}x faster than dense` : ''}`,
        );
        results.push(r);
      }
    }
  } finally {
    dev.destroy();
  }
  console.log('');
  console.log(formatTable(results));
  const report = {
    adapter: dev.adapterName,
    roofline: roofline!,
    results,
    compile_ms_total: round(compileTimeMs()),
    work: 'flops = H*4*D*(visible pairs of the method) + selection work; bytes = q,k,v read + o written',
  };
  if (shouldSave(o)) {
    const files = await writeResults(undefined, 'sparse', report, { json: o.json });
    console.log(`wrote ${files.join(', ')}`);
  } else if (o.json) {
    writeFileSync(o.json, JSON.stringify(report, null, 2) + '\n');
    console.log(`wrote ${o.json}`);
  }
}
