/**
 * Golden handlers of the linear-attention family: fla's naive recurrent references
 * (`linear_attn` with and without the normaliser, `simple_gla`, `gla`). Each case runs both GPU
 * forms (chunked and recurrent) and both are judged: the worse one sets the verdict.
 */
import { TesseraError } from '../../errors.js';
import type { TesseraDevice } from '../../gpu/device.js';
import { runOnce } from '../../plan.js';
import type { GpuTensor } from '../../tensor.js';
import { runTensors, type GoldenCase, type GoldenHandler, type GoldenOutput, type GoldenRunResult } from '../golden.js';
import { planLinearScan, type LinearScanOptions, type LinearScanTensors } from '../../../kernels/linear/scan.js';

/**
 * `[B, H, T, D]` (head-first) to `[T, H, D]` with B = 1, or back with `inverse`.
 *
 * @example
 * const tokenFirst = headFirstToTokenFirst(goldenQ, H, T, K);
 */
export function headFirstToTokenFirst(
  x: ArrayLike<number>,
  H: number,
  T: number,
  D: number,
  inverse = false,
): Float64Array {
  const y = new Float64Array(H * T * D);
  for (let h = 0; h < H; h++) {
    for (let t = 0; t < T; t++) {
      for (let d = 0; d < D; d++) {
        const hf = (h * T + t) * D + d;
        const tf = (t * H + h) * D + d;
        if (inverse) y[hf] = x[tf]!;
        else y[tf] = x[hf]!;
      }
    }
  }
  return y;
}

/**
 * Runs a golden case of the scan family: inputs named q, k, v, g|gk, beta, h0; outputs o, ht (and zt).
 * `headFirst` transposes q, k, v, beta and o between fla's `[B, H, T, *]` and Tessera's `[T, H, *]`.
 *
 * @example
 * const result = await runScanGolden(dev, goldenCase, { gate: 'scalar', delta: true, op: 'gated_delta_rule' });
 */
export async function runScanGolden(
  dev: TesseraDevice,
  c: GoldenCase,
  flags: Pick<LinearScanOptions, 'gate' | 'delta' | 'normalize' | 'op'>,
  opts: { headFirst?: boolean } = {},
): Promise<GoldenRunResult> {
  const p = c.params as Record<string, number>;
  const { H, K, V, T } = p as { H: number; K: number; V: number; T: number };
  const HV = p.HV ?? H;
  if ((p.B ?? 1) !== 1)
    throw new TesseraError('E_UNSUPPORTED', `${c.name}: batch B = ${p.B} (run ragged batches via cuSeqlens)`);
  const inp = (n: string) => c.inputs[n]?.data;
  let q = inp('q')!;
  let k = inp('k')!;
  let v = inp('v')!;
  let beta = inp('beta');
  const g = inp('g') ?? inp('gk');
  const h0 = inp('h0');
  if (opts.headFirst) {
    q = headFirstToTokenFirst(q, H, T, K);
    k = headFirstToTokenFirst(k, H, T, K);
    v = headFirstToTokenFirst(v, HV, T, V);
    if (beta) beta = headFirstToTokenFirst(beta, HV, T, 1);
  }
  const { up, read, dispose } = runTensors(dev);
  const empty = (shape: number[]): GpuTensor => {
    const n = shape.reduce((a, b) => a * b, 1);
    return up(new Float64Array(n).fill(NaN), shape);
  };
  const outputs: GoldenOutput[] = [];
  try {
    for (const mode of ['chunk', 'recurrent'] as const) {
      const plan = await planLinearScan(dev, { ...flags, H, HV, K, V, T, scale: p.scale, mode });
      try {
        const t: LinearScanTensors = {
          q: up(q, [T, H, K]),
          k: up(k, [T, H, K]),
          v: up(v, [T, HV, V]),
          o: empty([T, HV, V]),
          finalState: empty([1, HV, K, V]),
        };
        if (flags.gate === 'scalar') t.g = up(g!, [T, HV]);
        if (flags.gate === 'vector') t.g = up(g!, [T, HV, K]);
        if (flags.delta) t.beta = up(beta!, [T, HV]);
        if (h0) t.initialState = up(h0, [1, HV, K, V]);
        if (flags.normalize) t.zt = empty([1, HV, K]);
        await runOnce(dev, plan, t, `${c.name} (${mode})`);
        let o = await read(t.o);
        if (opts.headFirst) o = headFirstToTokenFirst(o, HV, T, V, true);
        outputs.push({ name: 'o', got: o }, { name: 'ht', got: await read(t.finalState!) });
        if (flags.normalize && c.outputs.zt) outputs.push({ name: 'zt', got: await read(t.zt!) });
      } finally {
        plan.dispose();
      }
    }
  } finally {
    dispose();
  }
  return { outputs };
}

const fn = (c: GoldenCase) => c.source?.function ?? '';

/** fla `naive_recurrent_linear_attn`, `naive_recurrent_simple_gla`, `naive_recurrent_gla`. */
export const linearGoldenHandler: GoldenHandler = {
  family: 'linear',
  matches: (c) => ['naive_recurrent_linear_attn', 'naive_recurrent_simple_gla', 'naive_recurrent_gla'].includes(fn(c)),
  run: (dev, c) => {
    const f = fn(c);
    if (f === 'naive_recurrent_linear_attn')
      return runScanGolden(dev, c, { gate: 'none', delta: false, normalize: !!c.params.normalize, op: 'linear_attn' });
    if (f === 'naive_recurrent_simple_gla')
      return runScanGolden(dev, c, { gate: 'scalar', delta: false, op: 'simple_gla' });
    return runScanGolden(dev, c, { gate: 'vector', delta: false, op: 'gla' });
  },
};
