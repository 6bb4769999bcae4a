/**
 * Streaming checks shared by the linear and delta tests: pushing segments equals the one-shot
 * float64 recurrence, and rollback restores a checkpointed state bit for bit.
 */
import { expect } from 'vitest';
import { LinearStream, type LinearStreamOptions } from '../../src/stream/linear.js';
import { linearScanReference } from '../../kernels/linear/reference.js';
import { compare, describeComparison, passes, TOLERANCE } from '../../src/testing.js';
import type { GpuFixture } from './gpu.js';
import { makeInputs, type ScanCase } from './scan.js';

export async function checkStream(
  gpu: GpuFixture,
  c: ScanCase,
  segments: number[],
  opts: Partial<LinearStreamOptions> = {},
): Promise<void> {
  const T = segments.reduce((a, b) => a + b, 0);
  const x = makeInputs({ ...c, T });
  const HV = x.HV;
  const { H, K, V } = c;
  const ref = linearScanReference(
    { q: x.q, k: x.k, v: x.v, g: x.g, beta: x.beta, h0: x.h0 },
    { H, HV, K, V, gate: c.gate, delta: c.delta, normalize: c.normalize },
  );
  const s = await LinearStream.create(gpu.dev, {
    H,
    HV,
    K,
    V,
    gate: c.gate,
    delta: c.delta,
    normalize: c.normalize,
    initialState: x.h0 && Float32Array.from(x.h0),
    ...opts,
  });
  try {
    let t0 = 0;
    const states: Record<number, Float32Array> = {};
    const o = new Float64Array(T * HV * V);
    for (const n of segments) {
      const sl = (a: Float64Array, w: number) => a.subarray(t0 * w, (t0 + n) * w);
      const seg = {
        q: gpu.tensor(sl(x.q, H * K), [n, H, K]),
        k: gpu.tensor(sl(x.k, H * K), [n, H, K]),
        v: gpu.tensor(sl(x.v, HV * V), [n, HV, V]),
        o: gpu.nanTensor([n, HV, V]),
        g:
          c.gate === 'scalar'
            ? gpu.tensor(sl(x.g, HV), [n, HV])
            : c.gate === 'vector'
              ? gpu.tensor(sl(x.g, HV * K), [n, HV, K])
              : undefined,
        beta: c.delta ? gpu.tensor(sl(x.beta, HV), [n, HV]) : undefined,
      };
      await s.push(seg);
      o.set(await gpu.read(seg.o), t0 * HV * V);
      t0 += n;
      states[t0] = await s.readState();
    }
    expect(s.position).toBe(T);
    const co = compare(o, ref.o);
    expect(passes(co, TOLERANCE.f32), `streamed o: ${describeComparison(co)}`).toBe(true);
    const ch = compare(await s.readState(), ref.ht);
    expect(passes(ch, TOLERANCE.f32), `streamed state: ${describeComparison(ch)}`).toBe(true);
    // rollback to every checkpoint, newest first: the state is restored exactly
    const cps = s.checkpoints().reverse();
    expect(cps.length).toBeGreaterThan(1);
    for (const p of cps) {
      const at = await s.rollback(p);
      expect(at).toBe(p);
      const st = await s.readState();
      if (p === 0)
        expect(Array.from(st)).toEqual(Array.from(x.h0 ? Float32Array.from(x.h0) : new Float32Array(st.length)));
      else expect(Array.from(st)).toEqual(Array.from(states[p]!));
      expect(s.position).toBe(p);
    }
  } finally {
    s.dispose();
  }
}
