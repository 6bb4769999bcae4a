/**
 * `tessera bench linear`: the linear-attention / delta-rule scans, chunked and recurrent forms,
 * as a % of the roofline measured first in the same run.
 *
 *   npm run bench -- linear [--op gated_delta_rule,kda,...] [--T 65536,131072] [--mode chunk,recurrent]
 *                           [--K 64] [--V 64] [--H 1] [--dtype f32] [--segment 16384] [--runs 3] [--json FILE] [--save]
 *
 * One sequence, H qk heads = HV value heads. Lengths above `--segment` run as a stream: the
 * plan for one segment is run T/segment times in one command buffer with the state carried in
 * place on the GPU (constant GPU memory, as LinearStream does; the same segment inputs are reused).
 *
 * Work per run (useful work of the recurrence, credited equally to both forms so their rates
 * compare; a multiply-add is 2 flops):
 * - flops = T * HV * K * V * (4 without the delta rule: k v^T update and q^T S;
 *   6 with it: plus S^T k). The chunked form executes more (the intra-chunk matrices and the
 *   WY solve) but is credited the same.
 * - bytes = q, k, v read and o written once (storage dtype), g and beta read (f32), the
 *   `[HV, K, V]` f32 state read and written once.
 */
import { writeFileSync } from 'node:fs';
import { Command } from 'commander';
import { TesseraError } from '../../src/errors.js';
import type { TesseraDevice } from '../../src/gpu/device.js';
import { compileTimeMs } from '../../src/gpu/pipeline.js';
import { byteSize, encode, type FloatDType, type GpuTensor } from '../../src/tensor.js';
import { Rng } from '../../src/testing.js';
import { intList, intOption } from '../../src/cli-common.js';
import { planLinearScan, type LinearScanTensors } from '../../kernels/linear/scan.js';
import type { GateMode } from '../../kernels/linear/reference.js';
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

/** The ops the suite knows, as flags of the shared scan. */
export const LINEAR_OPS: Record<string, { gate: GateMode; delta: boolean; normalize?: boolean }> = {
  linear_attn: { gate: 'none', delta: false },
  linear_attn_normalized: { gate: 'none', delta: false, normalize: true },
  simple_gla: { gate: 'scalar', delta: false },
  retention: { gate: 'constant', delta: false },
  gla: { gate: 'vector', delta: false },
  delta_rule: { gate: 'none', delta: true },
  gated_delta_rule: { gate: 'scalar', delta: true },
  kda: { gate: 'vector', delta: true },
};

export interface LinearBenchConfig {
  op: string;
  mode: 'chunk' | 'recurrent';
  T: number;
  H: number;
  K: number;
  V: number;
  dtype: FloatDType;
  segment: number;
  warmup: number;
  runs: number;
}

/** Flops and bytes of one run (see the file comment). */
export function linearWork(c: Pick<LinearBenchConfig, 'op' | 'T' | 'H' | 'K' | 'V' | 'dtype'>): {
  flops: number;
  bytes: number;
} {
  const f = LINEAR_OPS[c.op]!;
  const flops = c.T * c.H * c.K * c.V * (f.delta ? 6 : 4);
  const gBytes = f.gate === 'scalar' ? c.T * c.H * 4 : f.gate === 'vector' ? c.T * c.H * c.K * 4 : 0;
  const bytes =
    2 * byteSize([c.T, c.H, c.K], c.dtype) +
    2 * byteSize([c.T, c.H, c.V], c.dtype) +
    gBytes +
    (f.delta ? c.T * c.H * 4 : 0) +
    2 * c.H * c.K * c.V * 4;
  return { flops, bytes };
}

const round = (x: number) => Math.round(x * 100) / 100;

/**
 * Times one op/mode/length on `dev` and returns a result.
 *
 * @example
 * const r = await benchLinear(dev, roofline, { op: 'gated_delta_rule', mode: 'chunk', T: 65536, H: 1, K: 64, V: 64, dtype: 'f32', segment: 65536, warmup: 1, runs: 3 });
 */
export async function benchLinear(dev: TesseraDevice, roofline: Roofline, c: LinearBenchConfig): Promise<BenchResult> {
  const f = LINEAR_OPS[c.op];
  if (!f)
    throw new TesseraError('E_ARG', `unknown --op ${c.op}`, {
      argument: '--op',
      actual: c.op,
      expected: Object.keys(LINEAR_OPS).join(', '),
    });
  const seg = Math.min(c.T, c.segment);
  if (c.T % seg !== 0)
    throw new TesseraError('E_ARG', `--T ${c.T} is not a multiple of the segment ${seg}`, {
      argument: '--T',
      actual: c.T,
      expected: `a multiple of --segment ${seg}`,
    });
  const reps = c.T / seg;
  const rng = new Rng(99 + seg);
  const bufs: GPUBuffer[] = [];
  const tensor = (values: ArrayLike<number> | null, shape: number[], dtype: FloatDType): GpuTensor => {
    const size = byteSize(shape, dtype);
    const buffer = values
      ? dev.upload(encode(values, dtype), { size, label: 'bench.linear' })
      : dev.createBuffer({
          size,
          usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
          label: 'bench.linear.out',
        });
    bufs.push(buffer);
    return { buffer, shape, dtype };
  };
  const { H, K, V } = c;
  const unit = (n: number, d: number) => {
    const x = rng.normals(n * d);
    for (let r = 0; r < n; r++) {
      let s = 0;
      for (let i = 0; i < d; i++) s += x[r * d + i]! ** 2;
      for (let i = 0; i < d; i++) x[r * d + i]! /= Math.sqrt(s);
    }
    return x;
  };
  const state = tensor(null, [1, H, K, V], 'f32');
  const t: LinearScanTensors = {
    q: tensor(unit(seg * H, K), [seg, H, K], c.dtype),
    k: tensor(unit(seg * H, K), [seg, H, K], c.dtype),
    v: tensor(rng.normals(seg * H * V), [seg, H, V], c.dtype),
    o: tensor(null, [seg, H, V], c.dtype),
    initialState: state,
    finalState: state,
  };
  if (f.gate === 'scalar')
    t.g = tensor(
      Float64Array.from({ length: seg * H }, () => -0.05 * rng.next()),
      [seg, H],
      'f32',
    );
  if (f.gate === 'vector')
    t.g = tensor(
      Float64Array.from({ length: seg * H * K }, () => -0.05 * rng.next()),
      [seg, H, K],
      'f32',
    );
  if (f.delta)
    t.beta = tensor(
      Float64Array.from({ length: seg * H }, () => rng.next()),
      [seg, H],
      'f32',
    );
  if (f.normalize) {
    t.z0 = tensor(null, [1, H, K], 'f32');
    t.zt = t.z0;
  }
  const gamma = f.gate === 'constant' ? Array.from({ length: H }, (_, h) => Math.log(1 - 2 ** (-5 - h))) : undefined;
  const c0 = compileTimeMs();
  const p0 = performance.now();
  const plan = await planLinearScan(dev, { ...f, gamma, H, K, V, T: seg, dtype: c.dtype, mode: c.mode, op: c.op });
  const planMs = performance.now() - p0;
  const compileMs = compileTimeMs() - c0;
  try {
    const timing = await timeGpu(
      dev,
      (enc) => {
        for (let r = 0; r < reps; r++) plan.run(enc, t);
      },
      { warmup: c.warmup, runs: c.runs },
    );
    return makeResult(
      roofline,
      {
        suite: c.op,
        impl: 'tessera',
        mode: c.mode,
        T: c.T,
        D: K,
        H,
        K,
        V,
        dtype: c.dtype,
        ...linearWork(c),
        segment: seg,
        tokens_per_s: Math.round((c.T / timing.median_ms) * 1000),
        gpu_mib_held: round(dev.memory().bytesHeld / 2 ** 20),
        plan_ms: round(planMs),
        compile_ms: round(compileMs),
      },
      timing,
    );
  } finally {
    plan.dispose();
    for (const b of bufs) dev.destroyBuffer(b);
  }
}

/** The CLI entry of the suite (registered in bench/cli.ts as `linear`). */
export async function runLinearSuite(argv: string[]): Promise<void> {
  const cmd = new Command('linear')
    .description('linear attention / delta-rule scans: chunked and recurrent forms, with the roofline')
    .option('--op <list>', `ops (${Object.keys(LINEAR_OPS).join(', ')})`, 'gated_delta_rule')
    .option('--T <list>', 'sequence lengths', '16384,65536')
    .option('--mode <list>', 'chunk, recurrent', 'chunk,recurrent')
    .option('--K <n>', 'key dim', '64')
    .option('--V <n>', 'value dim (default K)')
    .option('--H <n>', 'heads (qk = value heads)', '1')
    .option('--dtype <dtype>', 'storage of q, k, v, o (f32 | f16 | bf16)', 'f32')
    .option(
      '--segment <n>',
      'tokens per plan run; longer T streams segment after segment (16384: smaller workspaces, as fast or faster on SwiftShader)',
      '16384',
    )
    .option('--runs <n>', 'timed runs (after 1 warm-up)', '3')
    .option('--warmup <n>', 'untimed runs first', '1')
    .option('--adapter <name>', 'auto | swiftshader | llvmpipe')
    .option('--json <file>', 'also write the JSON report here')
    .option('--save', SAVE_HELP)
    .option('--no-write', NO_WRITE_HELP);
  cmd.parse(argv, { from: 'user' });
  const o = cmd.opts<{
    op: string;
    T: string;
    mode: string;
    K: string;
    V?: string;
    H: string;
    dtype: string;
    segment: string;
    runs: string;
    warmup: string;
    adapter?: string;
    json?: string;
    save?: boolean;
    write: boolean;
  }>();
  const ops = o.op.split(',').map((s) => s.trim());
  for (const op of ops)
    if (!LINEAR_OPS[op])
      throw new TesseraError('E_ARG', `unknown --op ${op}`, {
        argument: '--op',
        actual: op,
        expected: Object.keys(LINEAR_OPS).join(', '),
      });
  const modes = o.mode.split(',').map((s) => s.trim());
  for (const m of modes)
    if (m !== 'chunk' && m !== 'recurrent')
      throw new TesseraError('E_ARG', `unknown --mode ${m}`, {
        argument: '--mode',
        actual: m,
        expected: 'chunk, recurrent',
      });
  if (o.dtype !== 'f32' && o.dtype !== 'f16' && o.dtype !== 'bf16')
    throw new TesseraError('E_ARG', 'unknown --dtype', {
      argument: '--dtype',
      actual: o.dtype,
      expected: 'f32, f16 or bf16',
    });
  const Ts = intList(o.T, '--T');
  const K = intOption(o.K, '--K');
  const V = o.V ? intOption(o.V, '--V') : K;
  const H = intOption(o.H, '--H');
  const segment = intOption(o.segment, '--segment');
  const runs = intOption(o.runs, '--runs');
  const warmup = intOption(o.warmup, '--warmup', { min: 0 });
  const dev = await benchDevice({ adapter: o.adapter });
  const results: BenchResult[] = [];
  let roofline: Roofline;
  try {
    console.log(
      `adapter: ${dev.adapterName} (${dev.adapterClass}); timing: ${dev.features.timestampQuery ? 'GPU timestamp queries' : 'wall clock around onSubmittedWorkDone'}`,
    );
    roofline = await measureRoofline(dev, { log: (l) => console.log(`  ${l}`) });
    console.log(`roofline: ${describeRoofline(roofline)}`);
    for (const op of ops) {
      for (const mode of modes as ('chunk' | 'recurrent')[]) {
        for (const T of Ts) {
          const r = await benchLinear(dev, roofline, {
            op,
            mode,
            T,
            H,
            K,
            V,
            dtype: o.dtype as FloatDType,
            segment,
            warmup,
            runs,
          });
          console.log(
            `  ${op} ${mode} T=${T}: ${r.median_ms.toFixed(1)} ms (${r.tokens_per_s} tokens/s, ${r.pct_roofline.toFixed(1)}% of roofline, plan ${r.plan_ms} ms)`,
          );
          results.push(r);
        }
      }
    }
  } finally {
    dev.destroy();
  }
  // Ratios measured in this run: scaling in T (time(2N)/time(N)) and chunk over recurrent.
  const ratios: Record<string, number> = {};
  for (const r of results) {
    const twice = results.find((x) => x.suite === r.suite && x.mode === r.mode && x.T === 2 * r.T);
    if (twice) ratios[`${r.suite}.${r.mode}.time(T=${2 * r.T})/time(T=${r.T})`] = round(twice.median_ms / r.median_ms);
    if (r.mode === 'chunk') {
      const rec = results.find((x) => x.suite === r.suite && x.mode === 'recurrent' && x.T === r.T);
      if (rec) ratios[`${r.suite}.chunk_speedup_over_recurrent(T=${r.T})`] = round(rec.median_ms / r.median_ms);
      ratios[`${r.suite}.chunk.pct_of_matmul_rate(T=${r.T})`] = round(
        (r.flops / (r.median_ms * 1e6) / roofline.matmul_gflops) * 100,
      );
    }
  }
  const work =
    "flops = T*HV*K*V*(4, or 6 with the delta rule), the recurrence's useful work credited to both forms; bytes = q,k,v,o once + g, beta + state in/out";
  console.log('');
  console.log(formatTable(results));
  for (const [k, v] of Object.entries(ratios)) console.log(`  ${k} = ${v}`);
  console.log(`\n${work}.`);
  const report = {
    adapter: dev.adapterName,
    roofline,
    results,
    ratios,
    work,
    compile_ms_total: round(compileTimeMs()),
  };
  if (shouldSave(o)) {
    const files = await writeResults(undefined, 'linear', report, { json: o.json });
    console.log(`wrote ${files.join(', ')}`);
  } else if (o.json) {
    writeFileSync(o.json, JSON.stringify(report, null, 2) + '\n');
    console.log(`wrote ${o.json}`);
  }
}
