import { describe, expect, it } from 'vitest';
import { deltaRule, gatedDeltaRule, kda, planGatedDeltaRule, planKda } from '../kernels/delta/index.js';
import { gatedDeltaRuleReference } from '../kernels/delta/reference.js';
import { compare, passes, Rng, TOLERANCE } from '../src/testing.js';
import { useGpu } from './helpers/gpu.js';
import { GALLIVM_LOOP_LIMIT } from '../src/gpu/device.js';
import { solveLoopIterations } from '../kernels/linear/loops.js';
import { loopBudget } from '../src/gpu/segments.js';
import { caseName, checkScanCase, unsegmentedLoops, type ScanCase } from './helpers/scan.js';
import { checkStream } from './helpers/stream.js';
import { tier } from './helpers/tier.js';

const gpu = useGpu();

// core tier: each rule in f32, GVA, ragged batches, odd K and V (6 / 5, 33 / 17), f16 and bf16
// (gated_delta_rule); `extended`: K 128, the delta_rule cases at K 64 and kda in f16
const CASES: (ScanCase & { op: string; extended?: boolean })[] = [
  { op: 'delta_rule', gate: 'none', delta: true, H: 2, K: 64, V: 64, T: 1, h0: true, extended: true },
  { op: 'delta_rule', gate: 'none', delta: true, H: 1, K: 32, V: 48, T: 63 },
  { op: 'delta_rule', gate: 'none', delta: true, H: 1, K: 64, V: 64, T: 1000, h0: true, extended: true },
  {
    op: 'gated_delta_rule',
    gate: 'scalar',
    delta: true,
    H: 1,
    K: 128,
    V: 128,
    T: 64,
    gates: 'strong',
    h0: true,
    extended: true,
  },
  { op: 'gated_delta_rule', gate: 'scalar', delta: true, H: 2, HV: 4, K: 64, V: 32, T: 300, h0: true },
  {
    op: 'gated_delta_rule',
    gate: 'scalar',
    delta: true,
    H: 1,
    HV: 2,
    K: 48,
    V: 64,
    cu: [0, 1, 65, 129, 300],
    gates: 'near0',
    h0: true,
  },
  { op: 'gated_delta_rule', gate: 'scalar', delta: true, H: 2, K: 64, V: 64, T: 65, dtype: 'f16', gates: 'strong' },
  { op: 'kda', gate: 'vector', delta: true, H: 2, K: 64, V: 64, T: 300, h0: true },
  { op: 'kda', gate: 'vector', delta: true, H: 1, HV: 3, K: 33, V: 17, T: 129, h0: true },
  { op: 'gated_delta_rule', gate: 'scalar', delta: true, H: 1, K: 6, V: 5, T: 66 },
  { op: 'kda', gate: 'vector', delta: true, H: 1, K: 128, V: 64, T: 65, gates: 'strong', extended: true },
  {
    op: 'kda',
    gate: 'vector',
    delta: true,
    H: 1,
    HV: 2,
    K: 32,
    V: 32,
    T: 63,
    gates: 'near0',
    dtype: 'f16',
    h0: true,
    extended: true,
  },
  { op: 'kda', gate: 'vector', delta: true, H: 1, K: 48, V: 48, cu: [0, 64, 65, 200], h0: true },
  { op: 'gated_delta_rule', gate: 'scalar', delta: true, H: 1, K: 32, V: 64, T: 130, dtype: 'bf16', h0: true },
];

describe('delta family vs the float64 recurrence (chunked WY form and recurrent form)', () => {
  for (const c of CASES) {
    it(`${c.op} ${caseName(c)}`, tier(c.extended), async () => {
      const r = await checkScanCase(gpu, c);
      // the two forms agree with each other as well as with the reference
      const d = compare(r.chunk!.o, r.recurrent!.o);
      expect(d.relRms).toBeLessThan(
        c.dtype === 'f32' || c.dtype === undefined ? 1e-5 : c.dtype === 'f16' ? 2e-3 : 1.6e-2,
      );
    });
  }
});

describe('past the llvmpipe loop cap (unsegmented)', () => {
  // delta_rule T1000-H1-K64-V64 above: recurrent 131,132; here the chunk scan too: 32 chunks, 74,692
  const c: ScanCase & { op: string } = {
    op: 'gated_delta_rule',
    gate: 'scalar',
    delta: true,
    H: 1,
    K: 64,
    V: 32,
    cu: [0, 2048, 2100],
    h0: true,
  };
  it(`${c.op} ${caseName(c)}`, async () => {
    const u = unsegmentedLoops(c);
    expect(Math.min(u.recurrent, u.scan)).toBeGreaterThan(GALLIVM_LOOP_LIMIT);
    const r = await checkScanCase(gpu, c);
    if (Number.isFinite(gpu.dev.loopLimit)) {
      expect(r.recurrent!.loops.segments).toBeGreaterThan(1);
      expect(r.chunk!.loops.segments).toBeGreaterThan(1);
    }
    expect(compare(r.chunk!.o, r.recurrent!.o).relRms).toBeLessThan(1e-5);
  });
});

describe('plans with loopLimit 4096: segmented recurrent form, chunk scan and WY solve on any adapter', () => {
  const LIMIT = { loopLimit: 4096 };
  const SMALL: (ScanCase & { op: string })[] = [
    { op: 'delta_rule', gate: 'none', delta: true, H: 1, K: 32, V: 48, cu: [0, 63, 300], h0: true },
    {
      op: 'gated_delta_rule',
      gate: 'scalar',
      delta: true,
      H: 1,
      HV: 2,
      K: 48,
      V: 64,
      cu: [0, 1, 65, 129, 300],
      gates: 'near0',
      h0: true,
    },
    { op: 'kda', gate: 'vector', delta: true, H: 1, K: 48, V: 48, cu: [0, 64, 65, 330], h0: true },
  ];
  for (const c of SMALL) {
    it(`${c.op} ${caseName(c)}`, async () => {
      const r = await checkScanCase(gpu, { ...c, ...LIMIT });
      for (const m of ['recurrent', 'chunk'] as const) {
        const l = r[m]!.loops;
        expect(l.segments, m).toBeGreaterThan(1);
        for (const n of Object.values(l.bounds)) expect(n).toBeLessThanOrEqual(l.budget);
      }
      expect(compare(r.chunk!.o, r.recurrent!.o).relRms).toBeLessThan(1e-5);
    });
  }
  it('the WY solve splits its columns over more workgroups (V = 360)', async () => {
    const c: ScanCase = { gate: 'scalar', delta: true, H: 1, K: 48, V: 360, T: 70, h0: true, modes: ['chunk'] };
    const r = await checkScanCase(gpu, { ...c, ...LIMIT });
    const l = r.chunk!.loops;
    expect(l.bounds.solve).toBeLessThanOrEqual(l.budget);
    // on the CPU adapters (4 invocations per workgroup) one workgroup per chunk would pass the budget
    if (gpu.dev.adapterClass === 'cpu') {
      expect(solveLoopIterations(c, 4, 1)).toBeGreaterThan(loopBudget(LIMIT));
      expect(l.solveSplit).toBeGreaterThan(1);
    }
  });
  it('streaming gated_delta_rule: segments 300, 1, 64 through segmented plans; rollback is exact', async () => {
    await checkStream(gpu, { gate: 'scalar', delta: true, H: 1, HV: 2, K: 64, V: 32, h0: true }, [300, 1, 64], {
      checkpointEvery: 1,
      ringSize: 3,
      ...LIMIT,
    });
  });
  it('rejects a chunk that cannot fit one invocation with E_LIMIT naming K (the recurrent form still runs)', async () => {
    await expect(
      planGatedDeltaRule(gpu.dev, { H: 1, K: 128, V: 64, T: 300, mode: 'chunk', ...LIMIT }),
    ).rejects.toMatchObject({ code: 'E_LIMIT', argument: 'K' });
    const rec = await planGatedDeltaRule(gpu.dev, { H: 1, K: 128, V: 64, T: 300, mode: 'recurrent', ...LIMIT });
    expect(rec.loops.segments).toBeGreaterThan(1);
    rec.dispose();
  });
});

describe('streaming', () => {
  it('gated_delta_rule GVA: segments 300, 1, 1, 1, 64 equal the one-shot recurrence; rollback is exact', async () => {
    await checkStream(gpu, { gate: 'scalar', delta: true, H: 1, HV: 2, K: 64, V: 64, h0: true }, [300, 1, 1, 1, 64], {
      checkpointEvery: 1,
      ringSize: 3,
    });
  });
  it('kda: host-tier checkpoints every 100 tokens', async () => {
    await checkStream(gpu, { gate: 'vector', delta: true, H: 1, K: 32, V: 32 }, [100, 100, 50, 1], {
      checkpointEvery: 100,
      checkpointTier: 'host',
    });
  });
});

describe('decode', () => {
  it('gated_delta_rule: 300-token prefill then 3 in-place decode steps equal the 303-token recurrence', async () => {
    const rng = new Rng(5);
    const H = 2,
      HV = 4,
      K = 64,
      V = 64,
      T = 303;
    const unit = (n: number) => {
      const x = rng.normals(n * K);
      for (let r = 0; r < n; r++) {
        let s = 0;
        for (let d = 0; d < K; d++) s += x[r * K + d]! ** 2;
        for (let d = 0; d < K; d++) x[r * K + d]! /= Math.sqrt(s);
      }
      return Float64Array.from(new Float32Array(x));
    };
    const q = unit(T * H),
      k = unit(T * H);
    const v = Float64Array.from(new Float32Array(rng.normals(T * HV * V)));
    const g = Float64Array.from(new Float32Array(Array.from({ length: T * HV }, () => -0.05 * rng.next())));
    const beta = Float64Array.from(new Float32Array(Array.from({ length: T * HV }, () => rng.next())));
    const ref = gatedDeltaRuleReference({ q, k, v, g, beta }, { H, HV, K, V });
    const state = gpu.nanTensor([1, HV, K, V]);
    const P = 300;
    const slice = (x: Float64Array, a: number, b: number, w: number) => x.subarray(a * w, b * w);
    const o1 = gpu.nanTensor([P, HV, V]);
    await gatedDeltaRule(gpu.dev, {
      q: gpu.tensor(slice(q, 0, P, H * K), [P, H, K]),
      k: gpu.tensor(slice(k, 0, P, H * K), [P, H, K]),
      v: gpu.tensor(slice(v, 0, P, HV * V), [P, HV, V]),
      g: gpu.tensor(slice(g, 0, P, HV), [P, HV]),
      beta: gpu.tensor(slice(beta, 0, P, HV), [P, HV]),
      o: o1,
      finalState: state,
    });
    const plan = await planGatedDeltaRule(gpu.dev, { H, HV, K, V, T: 1 });
    expect(plan.options.mode).toBe('recurrent');
    for (let t = P; t < T; t++) {
      const o = gpu.nanTensor([1, HV, V]);
      const enc = gpu.dev.device.createCommandEncoder();
      plan.run(enc, {
        q: gpu.tensor(slice(q, t, t + 1, H * K), [1, H, K]),
        k: gpu.tensor(slice(k, t, t + 1, H * K), [1, H, K]),
        v: gpu.tensor(slice(v, t, t + 1, HV * V), [1, HV, V]),
        g: gpu.tensor(slice(g, t, t + 1, HV), [1, HV]),
        beta: gpu.tensor(slice(beta, t, t + 1, HV), [1, HV]),
        o,
        initialState: state,
        finalState: state,
      });
      await gpu.dev.submitAndWait([enc.finish()]);
      expect(passes(compare(await gpu.read(o), slice(ref.o, t, t + 1, HV * V)), TOLERANCE.f32)).toBe(true);
    }
    plan.dispose();
    expect(passes(compare(await gpu.read(state), ref.ht), TOLERANCE.f32)).toBe(true);
  });
});

describe('bad input', () => {
  const T = 4,
    H = 1,
    K = 8,
    V = 8;
  const base = () => ({
    q: gpu.tensor(new Float64Array(T * K), [T, H, K]),
    k: gpu.tensor(new Float64Array(T * K), [T, H, K]),
    v: gpu.tensor(new Float64Array(T * V), [T, H, V]),
    o: gpu.nanTensor([T, H, V]),
    g: gpu.tensor([-0.1, -0.1, -0.1, -0.1], [T, H]),
    beta: gpu.tensor([0.5, 0.5, 0.5, 0.5], [T, H]),
  });
  it('value heads not a multiple of key heads', async () => {
    await expect(planGatedDeltaRule(gpu.dev, { H: 4, HV: 6, K, V, T })).rejects.toMatchObject({
      code: 'E_ARG',
      argument: 'HV',
    });
    await expect(planKda(gpu.dev, { H: 2, HV: 1, K, V, T })).rejects.toMatchObject({ argument: 'HV' });
  });
  it('beta outside [0, 1], NaN beta, NaN or positive log-gates', async () => {
    await expect(
      gatedDeltaRule(gpu.dev, { ...base(), beta: gpu.tensor([0.5, 1.5, 0.5, 0.5], [T, H]) }),
    ).rejects.toMatchObject({ code: 'E_ARG', argument: 'beta' });
    const { g: _g, ...noGate } = base();
    await expect(
      deltaRule(gpu.dev, { ...noGate, beta: gpu.tensor([0.5, -0.1, 0.5, 0.5], [T, H]) }),
    ).rejects.toMatchObject({ argument: 'beta' });
    await expect(
      gatedDeltaRule(gpu.dev, { ...base(), beta: gpu.tensor([0.5, NaN, 0.5, 0.5], [T, H]) }),
    ).rejects.toMatchObject({ code: 'E_NAN', argument: 'beta' });
    await expect(
      gatedDeltaRule(gpu.dev, { ...base(), g: gpu.tensor([-0.1, 0.3, -0.1, -0.1], [T, H]) }),
    ).rejects.toMatchObject({ code: 'E_ARG', argument: 'g' });
    await expect(
      kda(gpu.dev, { ...base(), g: gpu.tensor(new Float64Array(T * K).fill(NaN), [T, H, K]) }),
    ).rejects.toMatchObject({ code: 'E_NAN', argument: 'g' });
    // allowNegEigval widens beta to [0, 2]
    await expect(
      gatedDeltaRule(gpu.dev, { ...base(), beta: gpu.tensor([0.5, 1.5, 0.5, 0.5], [T, H]) }, { allowNegEigval: true }),
    ).resolves.toBeUndefined();
  });
  it('states and gates of the wrong shape', async () => {
    await expect(
      gatedDeltaRule(gpu.dev, { ...base(), initialState: gpu.nanTensor([1, H, K + 1, V]) }),
    ).rejects.toMatchObject({ code: 'E_SHAPE', argument: 'initialState.shape[2]' });
    await expect(gatedDeltaRule(gpu.dev, { ...base(), finalState: gpu.nanTensor([H, K, V]) })).rejects.toMatchObject({
      code: 'E_SHAPE',
      argument: 'finalState.shape',
    });
    await expect(kda(gpu.dev, { ...base() })).rejects.toMatchObject({ code: 'E_SHAPE', argument: 'g.shape' });
    await expect(
      gatedDeltaRule(gpu.dev, { ...base(), beta: gpu.tensor([1, 1, 1, 1], [T, H], 'f16') }),
    ).rejects.toMatchObject({ code: 'E_DTYPE', argument: 'beta.dtype' });
  });
});
