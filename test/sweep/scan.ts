/**
 * The shared check of the linear and delta sweeps: a scan configuration (gate mode, delta rule,
 * normaliser, heads H / value heads HV, K, V, one sequence or a ragged batch, dtype, gate
 * strength, initial state, chunked or recurrent form) against `linearScanReference`: o, the final
 * state and (with the normaliser) z.
 */
import fc from 'fast-check';
import { planLinearScan, type LinearScanTensors } from '../../kernels/linear/scan.js';
import { linearScanReference, retentionGamma, type GateMode } from '../../kernels/linear/reference.js';
import { roundTo, type FloatDType } from '../../src/tensor.js';
import { TOLERANCE } from '../../src/testing.js';
import { makeInputs, type ScanCase } from '../helpers/scan.js';
import { all, gen, within, type Buffers, type SweepSize } from './run.js';

export interface ScanConfig extends ScanCase {
  mode: 'chunk' | 'recurrent' | 'auto';
  /** Constant gates from the retention preset (gate 'constant'). */
  retention?: boolean;
}

export function scanArb(
  size: SweepSize,
  ops: readonly { gate: GateMode; delta: boolean; normalize?: boolean; gva?: boolean }[],
): fc.Arbitrary<ScanConfig> {
  const dims = size === 'small' ? [4, 8, 16] : [1, 4, 8, 16, 32, 48, 64, 128];
  return fc
    .record({
      op: fc.constantFrom(...ops),
      H: fc.integer({ min: 1, max: 2 }),
      ratio: fc.integer({ min: 1, max: 3 }),
      K: fc.constantFrom(...dims),
      V: fc.constantFrom(...dims),
      ragged: fc.boolean(),
      T: fc.integer({ min: 1, max: size === 'small' ? 80 : 300 }),
      cu: gen.cuSeqlens(size === 'small' ? 3 : 4, size === 'small' ? 70 : 200, true),
      dtype: gen.dtype({ f32: 3, f16: 2, bf16: 0 }),
      gates: fc.constantFrom('near0' as const, 'fla' as const, 'strong' as const),
      h0: fc.boolean(),
      mode: fc.constantFrom('chunk' as const, 'recurrent' as const, 'auto' as const),
      seed: gen.seed(),
    })
    .map((r) => {
      const HV = r.op.gva === false ? r.H : r.H * r.ratio;
      const cu = r.cu[r.cu.length - 1]! > 0 ? r.cu : [...r.cu.slice(0, -1), r.cu[r.cu.length - 1]! + 1];
      const V = r.dtype === 'f32' ? r.V : r.V + (r.V % 2);
      const c: ScanConfig = {
        gate: r.op.gate,
        delta: r.op.delta,
        normalize: r.op.normalize,
        H: r.H,
        HV,
        K: r.K,
        V,
        dtype: r.dtype,
        gates: r.gates,
        h0: r.h0,
        mode: r.mode,
        seed: r.seed,
        ...(r.ragged ? { cu } : { T: r.T }),
      };
      if (r.op.gate === 'constant') c.retention = true;
      return c;
    });
}

export async function checkScan(b: Buffers, c: ScanConfig): Promise<string | null> {
  const x = makeInputs(c);
  const { HV, cu, T, N, dtype } = x;
  const gamma = c.retention ? Array.from(retentionGamma(HV)) : undefined;
  const gate = c.gate;
  const ref = linearScanReference(
    { q: x.q, k: x.k, v: x.v, g: gamma ?? x.g, beta: x.beta, h0: x.h0, z0: x.z0 },
    { H: c.H, HV, K: c.K, V: c.V, cuSeqlens: cu, gate, delta: c.delta, normalize: c.normalize },
  );
  const plan = await planLinearScan(b.dev, {
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
    mode: c.mode,
  });
  const t: LinearScanTensors = {
    q: b.tensor(x.q, [T, c.H, c.K], dtype),
    k: b.tensor(x.k, [T, c.H, c.K], dtype),
    v: b.tensor(x.v, [T, HV, c.V], dtype),
    o: b.nan([T, HV, c.V], dtype),
    finalState: b.nan([N, HV, c.K, c.V]),
  };
  if (gate === 'scalar') t.g = b.tensor(x.g, [T, HV]);
  if (gate === 'vector') t.g = b.tensor(x.g, [T, HV, c.K]);
  if (c.delta) t.beta = b.tensor(x.beta, [T, HV]);
  if (x.h0) t.initialState = b.tensor(x.h0, [N, HV, c.K, c.V]);
  if (c.normalize) {
    t.zt = b.nan([N, HV, c.K]);
    if (x.z0) t.z0 = b.tensor(x.z0, [N, HV, c.K]);
  }
  await b.runPlan(plan, t, 'sweep.scan');
  const refO = dtype === 'f32' ? ref.o : roundTo(ref.o, dtype as FloatDType);
  return all(
    within('o', await b.read(t.o), refO, TOLERANCE[dtype]),
    within('finalState', await b.read(t.finalState!), ref.ht, TOLERANCE.f32),
    c.normalize ? within('zt', await b.read(t.zt!), ref.zt!, TOLERANCE.f32) : null,
  );
}
