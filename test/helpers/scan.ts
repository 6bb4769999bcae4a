/**
 * Shared sweep machinery of test/linear.test.ts and test/delta.test.ts: random inputs for the
 * scan family, the float64 reference, and both GPU forms compared against it.
 */
import { expect } from 'vitest';
import { planLinearScan, type LinearLoopPlan, type LinearScanTensors } from '../../kernels/linear/scan.js';
import { linearScanReference, type GateMode } from '../../kernels/linear/reference.js';
import { recurrentLoopIterations, scanLoopIterations } from '../../kernels/linear/loops.js';
import { runOnce } from '../../src/plan.js';
import { roundTo, type FloatDType } from '../../src/tensor.js';
import { compare, describeComparison, passes, Rng, TOLERANCE, type Tolerance } from '../../src/testing.js';
import type { GpuFixture } from './gpu.js';

export interface ScanCase {
  gate: GateMode;
  delta: boolean;
  normalize?: boolean;
  H: number;
  HV?: number;
  K: number;
  V: number;
  /** One sequence of T tokens, or a ragged batch. */
  T?: number;
  cu?: number[];
  dtype?: FloatDType;
  /** 'near0': log-gates in about [-1e-3, 0]; 'fla': logsigmoid(x)/16; 'strong': about [-4, -0.5]. */
  gates?: 'near0' | 'fla' | 'strong';
  h0?: boolean;
  gamma?: number[];
  modes?: ('chunk' | 'recurrent')[];
  /** The plans' `loopLimit` option (segments sized for this cap on any adapter). */
  loopLimit?: number;
  seed?: number;
}

/**
 * The per-invocation loop iterations of a case's two sequential passes if they ran unsegmented
 * (kernels/linear/loops.ts): the recurrent form over the longest sequence, the chunk scan over
 * its chunks. Over 65,535 means llvmpipe needs the segmented path.
 */
export function unsegmentedLoops(c: ScanCase): { recurrent: number; scan: number } {
  const cu = c.cu ?? [0, c.T!];
  let maxLen = 0;
  for (let i = 1; i < cu.length; i++) maxLen = Math.max(maxLen, cu[i]! - cu[i - 1]!);
  const o = { K: c.K, gate: c.gamma ? 'constant' : c.gate, delta: c.delta, normalize: !!c.normalize };
  return { recurrent: recurrentLoopIterations(o, maxLen), scan: scanLoopIterations(o, Math.ceil(maxLen / 64)) };
}

export function caseName(c: ScanCase): string {
  const len = c.cu ? `cu${c.cu.join('_')}` : `T${c.T}`;
  return `${len}-H${c.H}${c.HV && c.HV !== c.H ? `-HV${c.HV}` : ''}-K${c.K}-V${c.V}-${c.dtype ?? 'f32'}${c.gate !== 'none' && c.gate !== 'constant' ? `-${c.gates ?? 'fla'}` : ''}${c.h0 ? '-h0' : ''}${c.normalize ? '-norm' : ''}`;
}

const logsigmoid = (x: number) => -Math.log1p(Math.exp(-x));

export function makeInputs(c: ScanCase) {
  const rng = new Rng(c.seed ?? 1234);
  const HV = c.HV ?? c.H;
  const cu = c.cu ?? [0, c.T!];
  const T = cu[cu.length - 1]!;
  const N = cu.length - 1;
  const dtype = c.dtype ?? 'f32';
  let q = rng.normals(T * c.H * c.K);
  let k = rng.normals(T * c.H * c.K);
  if (c.delta) {
    for (const x of [q, k]) {
      for (let r = 0; r < T * c.H; r++) {
        let s = 0;
        for (let d = 0; d < c.K; d++) s += x[r * c.K + d]! ** 2;
        const inv = 1 / Math.sqrt(s + 1e-6);
        for (let d = 0; d < c.K; d++) x[r * c.K + d]! *= inv;
      }
    }
  }
  if (c.normalize) {
    q = q.map((x) => (x > 0 ? x + 1 : Math.exp(x)));
    k = k.map((x) => (x > 0 ? x + 1 : Math.exp(x)));
  }
  const v = rng.normals(T * HV * c.V);
  const gn = c.gate === 'scalar' ? T * HV : c.gate === 'vector' ? T * HV * c.K : 0;
  const g = new Float64Array(gn);
  for (let i = 0; i < gn; i++) {
    const x = rng.normal();
    g[i] =
      c.gates === 'near0' ? -1e-3 * rng.next() : c.gates === 'strong' ? -0.5 - 3.5 * rng.next() : logsigmoid(x) / 16;
  }
  const beta = Float64Array.from({ length: c.delta ? T * HV : 0 }, () => 1 / (1 + Math.exp(-rng.normal())));
  const h0 = c.h0 ? rng.normals(N * HV * c.K * c.V) : undefined;
  const z0 = c.h0 && c.normalize ? Float64Array.from({ length: N * HV * c.K }, () => rng.next() * 4) : undefined;
  return {
    HV,
    cu,
    T,
    N,
    dtype,
    q: roundTo(q, dtype),
    k: roundTo(k, dtype),
    v: roundTo(v, dtype),
    g: roundTo(g, 'f32'),
    beta: roundTo(beta, 'f32'),
    h0: h0 && roundTo(h0, 'f32'),
    z0: z0 && roundTo(z0, 'f32'),
  };
}

/** Tolerance of a case: the storage dtype's (outputs in that dtype), f32 for states. */
export function tolFor(dtype: FloatDType): Tolerance {
  return TOLERANCE[dtype];
}

/**
 * Runs both forms (or `c.modes`) of a case on the GPU and checks o and the final state(s) against
 * the float64 reference; returns the GPU results (and the plan's loop segmentation) per mode for
 * further checks.
 */
export async function checkScanCase(
  gpu: GpuFixture,
  c: ScanCase,
): Promise<Record<string, { o: Float64Array; ht: Float64Array; loops: LinearLoopPlan }>> {
  const x = makeInputs(c);
  const { HV, cu, T, N, dtype } = x;
  const gamma = c.gamma;
  const gate: GateMode = gamma ? 'constant' : c.gate;
  const ref = linearScanReference(
    { q: x.q, k: x.k, v: x.v, g: gamma ?? x.g, beta: x.beta, h0: x.h0, z0: x.z0 },
    { H: c.H, HV, K: c.K, V: c.V, cuSeqlens: cu, gate, delta: c.delta, normalize: c.normalize },
  );
  const out: Record<string, { o: Float64Array; ht: Float64Array; loops: LinearLoopPlan }> = {};
  for (const mode of c.modes ?? (['chunk', 'recurrent'] as const)) {
    const plan = await planLinearScan(gpu.dev, {
      H: c.H,
      HV,
      K: c.K,
      V: c.V,
      cuSeqlens: cu,
      gate,
      delta: c.delta,
      normalize: c.normalize,
      gamma,
      dtype,
      mode,
      loopLimit: c.loopLimit,
    });
    const t: LinearScanTensors = {
      q: gpu.tensor(x.q, [T, c.H, c.K], dtype),
      k: gpu.tensor(x.k, [T, c.H, c.K], dtype),
      v: gpu.tensor(x.v, [T, HV, c.V], dtype),
      o: gpu.nanTensor([T, HV, c.V], dtype),
      finalState: gpu.nanTensor([N, HV, c.K, c.V]),
    };
    if (gate === 'scalar') t.g = gpu.tensor(x.g, [T, HV]);
    if (gate === 'vector') t.g = gpu.tensor(x.g, [T, HV, c.K]);
    if (c.delta) t.beta = gpu.tensor(x.beta, [T, HV]);
    if (x.h0) t.initialState = gpu.tensor(x.h0, [N, HV, c.K, c.V]);
    if (c.normalize) {
      t.zt = gpu.nanTensor([N, HV, c.K]);
      if (x.z0) t.z0 = gpu.tensor(x.z0, [N, HV, c.K]);
    }
    await runOnce(gpu.dev, plan, t, 'test');
    const loops = plan.loops;
    plan.dispose();
    const o = await gpu.read(t.o);
    const ht = await gpu.read(t.finalState!);
    const refO = dtype === 'f32' ? ref.o : roundTo(ref.o, dtype);
    const co = compare(o, refO);
    expect(passes(co, tolFor(dtype)), `${mode} o: ${describeComparison(co)}`).toBe(true);
    const ch = compare(ht, ref.ht);
    expect(passes(ch, TOLERANCE.f32), `${mode} ht: ${describeComparison(ch)}`).toBe(true);
    if (c.normalize) {
      const cz = compare(await gpu.read(t.zt!), ref.zt!);
      expect(passes(cz, TOLERANCE.f32), `${mode} zt: ${describeComparison(cz)}`).toBe(true);
    }
    out[mode] = { o, ht, loops };
  }
  return out;
}
