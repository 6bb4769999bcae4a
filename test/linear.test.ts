import { describe, expect, it } from 'vitest';
import {
  planGla,
  planLinearAttn,
  planSimpleGla,
  simpleGla,
  gla,
  linearAttn,
  lightningPreset,
  retentionPreset,
} from '../kernels/linear/index.js';
import { lightningGamma } from '../kernels/linear/reference.js';
import { TesseraError } from '../src/errors.js';
import { useGpu } from './helpers/gpu.js';
import { GALLIVM_LOOP_LIMIT, type TesseraDevice } from '../src/gpu/device.js';
import {
  convertLoopIterations,
  intraLoopIterations,
  outputLoopIterations,
  prepLoopIterations,
  recurrentLoopIterations,
  scanLoopIterations,
  solveLoopIterations,
} from '../kernels/linear/loops.js';
import { planLinearScan, planLoops, resolveScanOptions } from '../kernels/linear/scan.js';
import { loopBudget } from '../src/gpu/segments.js';
import { caseName, checkScanCase, unsegmentedLoops, type ScanCase } from './helpers/scan.js';
import { checkStream } from './helpers/stream.js';
import { tier } from './helpers/tier.js';

const gpu = useGpu();

// `extended`: K 128 and gla in f16 at K 64 (each op and dtype, K 32 and 64, odd K and V stay in core)
const CASES: (ScanCase & { op: string; extended?: boolean })[] = [
  { op: 'linear_attn', gate: 'none', delta: false, H: 2, K: 32, V: 48, T: 1, h0: true },
  { op: 'linear_attn', gate: 'none', delta: false, H: 1, K: 64, V: 64, T: 65 },
  { op: 'linear_attn', gate: 'none', delta: false, H: 2, K: 32, V: 48, T: 300, normalize: true },
  { op: 'linear_attn', gate: 'none', delta: false, H: 1, K: 48, V: 32, T: 64, normalize: true, h0: true },
  { op: 'linear_attn', gate: 'none', delta: false, H: 1, K: 64, V: 32, T: 63, dtype: 'f16', h0: true },
  {
    op: 'simple_gla',
    gate: 'scalar',
    delta: false,
    H: 1,
    K: 128,
    V: 64,
    T: 64,
    gates: 'strong',
    h0: true,
    extended: true,
  },
  { op: 'linear_attn', gate: 'none', delta: false, H: 1, K: 30, V: 21, T: 100, normalize: true, h0: true },
  { op: 'gla', gate: 'vector', delta: false, H: 2, K: 18, V: 10, T: 70, h0: true, dtype: 'f16' },
  { op: 'simple_gla', gate: 'scalar', delta: false, H: 1, K: 64, V: 64, T: 1000, gates: 'near0' },
  { op: 'simple_gla', gate: 'scalar', delta: false, H: 2, K: 32, V: 32, cu: [0, 1, 64, 129, 429], h0: true },
  { op: 'simple_gla', gate: 'scalar', delta: false, H: 2, K: 64, V: 48, T: 65, dtype: 'f16', gates: 'strong' },
  {
    op: 'retention',
    gate: 'constant',
    delta: false,
    H: 4,
    K: 32,
    V: 32,
    T: 300,
    gamma: Array.from(retentionPreset(4).gamma),
  },
  {
    op: 'lightning',
    gate: 'constant',
    delta: false,
    H: 2,
    K: 64,
    V: 64,
    T: 65,
    h0: true,
    gamma: Array.from(lightningGamma(2, { layer: 1, layers: 4 })),
  },
  { op: 'gla', gate: 'vector', delta: false, H: 2, K: 32, V: 48, T: 300, h0: true },
  { op: 'gla', gate: 'vector', delta: false, H: 1, K: 128, V: 128, T: 65, gates: 'strong', extended: true },
  {
    op: 'gla',
    gate: 'vector',
    delta: false,
    H: 1,
    K: 64,
    V: 64,
    T: 63,
    gates: 'near0',
    dtype: 'f16',
    h0: true,
    extended: true,
  },
  { op: 'gla', gate: 'vector', delta: false, H: 1, K: 48, V: 32, cu: [0, 5, 5, 70, 134], gates: 'strong', h0: true },
];

describe('linear attention family vs the float64 recurrence (chunked and recurrent forms)', () => {
  for (const c of CASES) {
    it(`${c.op} ${caseName(c)}`, tier(c.extended), async () => {
      const r = await checkScanCase(gpu, c);
      expect(Object.keys(r).sort()).toEqual(['chunk', 'recurrent']);
    });
  }
});

describe('streaming', () => {
  it('gla: segments 64, 100, 1, 1, 35 equal the one-shot recurrence; rollback restores GPU checkpoints exactly', async () => {
    await checkStream(gpu, { gate: 'vector', delta: false, H: 2, K: 32, V: 48, h0: true }, [64, 100, 1, 1, 35], {
      checkpointEvery: 1,
      ringSize: 4,
    });
  });
  it('normalized linear_attn: segments 70, 1, 64 carry S and z (recurrent and chunked plans)', async () => {
    await checkStream(gpu, { gate: 'none', delta: false, normalize: true, H: 1, K: 32, V: 48 }, [70, 1, 64], {
      checkpointEvery: 1,
    });
  });
  it('linear_attn: rollback with host checkpoints every 64 tokens', async () => {
    await checkStream(gpu, { gate: 'none', delta: false, H: 1, K: 64, V: 64 }, [65, 63, 64, 8], {
      checkpointEvery: 64,
      checkpointTier: 'host',
    });
  });
});

// Past llvmpipe's 65,535 loop iterations per invocation if run unsegmented: on llvmpipe they run
// the token / chunk segments (kernels/linear/loops.ts), elsewhere they are ordinary cases.
// (the gla case at K 128 in the extended tier with the K 128 cases above; llvmpipe runs every tier)
const LONG: (ScanCase & { op: string; past: 'recurrent' | 'both'; extended?: boolean })[] = [
  // simple_gla T1000-H1-K64-V64 above: recurrent 131,132
  {
    op: 'linear_attn',
    gate: 'none',
    delta: false,
    H: 1,
    K: 64,
    V: 32,
    T: 1100,
    normalize: true,
    h0: true,
    past: 'recurrent',
  },
  { op: 'gla', gate: 'vector', delta: false, H: 1, K: 128, V: 16, T: 2000, h0: true, past: 'both', extended: true },
];

describe('past the llvmpipe loop cap (unsegmented)', () => {
  for (const c of LONG) {
    it(`${c.op} ${caseName(c)}`, tier(c.extended), async () => {
      const u = unsegmentedLoops(c);
      expect(u.recurrent).toBeGreaterThan(GALLIVM_LOOP_LIMIT);
      if (c.past === 'both') expect(u.scan).toBeGreaterThan(GALLIVM_LOOP_LIMIT);
      const r = await checkScanCase(gpu, c);
      if (Number.isFinite(gpu.dev.loopLimit)) {
        expect(r.recurrent!.loops.segments).toBeGreaterThan(1);
        if (c.past === 'both') expect(r.chunk!.loops.segments).toBeGreaterThan(1);
      }
    });
  }
});

describe('plans with loopLimit 4096: segmented recurrent form and chunk scan on any adapter', () => {
  const LIMIT = { loopLimit: 4096 };
  const SMALL: (ScanCase & { op: string })[] = [
    // z0 / zt of 3 * 30 floats: the chunk scan reads z through internal copies
    {
      op: 'linear_attn',
      gate: 'none',
      delta: false,
      H: 1,
      K: 30,
      V: 21,
      cu: [0, 5, 70, 450],
      normalize: true,
      h0: true,
    },
    // z0 / zt bound directly; 3 chunk-scan segments, so the user's zt is read back as an input
    {
      op: 'linear_attn',
      gate: 'none',
      delta: false,
      H: 2,
      K: 32,
      V: 24,
      cu: [0, 200, 201, 900],
      normalize: true,
      h0: true,
    },
    { op: 'simple_gla', gate: 'scalar', delta: false, H: 2, K: 32, V: 32, cu: [0, 1, 64, 129, 529], h0: true },
    {
      op: 'retention',
      gate: 'constant',
      delta: false,
      H: 2,
      K: 64,
      V: 32,
      cu: [0, 100, 300],
      h0: true,
      gamma: Array.from(retentionPreset(2).gamma),
    },
    { op: 'gla', gate: 'vector', delta: false, H: 1, K: 48, V: 32, cu: [0, 5, 5, 70, 334], gates: 'strong', h0: true },
  ];
  for (const c of SMALL) {
    it(`${c.op} ${caseName(c)}`, async () => {
      const r = await checkScanCase(gpu, { ...c, ...LIMIT });
      for (const m of ['recurrent', 'chunk'] as const) {
        const l = r[m]!.loops;
        expect(l.budget).toBe(loopBudget({ loopLimit: 4096 }));
        expect(l.segments, m).toBeGreaterThan(1);
        for (const n of Object.values(l.bounds)) expect(n).toBeLessThanOrEqual(l.budget);
      }
    });
  }
  it('streaming normalized linear_attn: segments 70, 1, 300 carry S and z through segmented plans; rollback is exact', async () => {
    await checkStream(
      gpu,
      { gate: 'none', delta: false, normalize: true, H: 1, K: 32, V: 48, h0: true },
      [70, 1, 300],
      { checkpointEvery: 1, ...LIMIT },
    );
  });
  it('streaming gla: segments 200, 1, 130', async () => {
    await checkStream(gpu, { gate: 'vector', delta: false, H: 2, K: 32, V: 16, h0: true }, [200, 1, 130], {
      checkpointEvery: 100,
      ringSize: 2,
      ...LIMIT,
    });
  });
  it('rejects a chunk that cannot fit one invocation with E_LIMIT naming K', async () => {
    // one chunk of the scan at K = 256 needs 7,624 iterations (half of them loading and storing the state) > 3,686
    await expect(planGla(gpu.dev, { H: 1, K: 256, V: 16, T: 100, mode: 'chunk', ...LIMIT })).rejects.toMatchObject({
      code: 'E_LIMIT',
      argument: 'K',
    });
    const rec = await planGla(gpu.dev, { H: 1, K: 256, V: 16, T: 100, mode: 'recurrent', ...LIMIT });
    expect(rec.loops.segmentLength).toBe(6);
    rec.dispose();
  });
});

describe('loop bounds (kernels/linear/loops.ts)', () => {
  const rec = { K: 64, gate: 'scalar', delta: false, normalize: false };
  it('match what llvmpipe counted: the recurrent form stops in token 500 at K = 64, the scan after 56 chunks', () => {
    expect(recurrentLoopIterations(rec, 499)).toBeLessThanOrEqual(GALLIVM_LOOP_LIMIT);
    expect(recurrentLoopIterations(rec, 500)).toBeGreaterThan(GALLIVM_LOOP_LIMIT);
    // never below the count: the bound allows 54 chunks where llvmpipe completed 56 (105 / 103 at K = 32)
    expect(scanLoopIterations({ K: 64, delta: false }, 55)).toBeGreaterThan(GALLIVM_LOOP_LIMIT);
    expect(scanLoopIterations({ K: 32, delta: false }, 104)).toBeGreaterThan(GALLIVM_LOOP_LIMIT);
    expect(scanLoopIterations({ K: 64, delta: true }, 29)).toBeGreaterThan(GALLIVM_LOOP_LIMIT);
    // ungated additive recurrences skip the decay loop: about half the cost per token
    expect(recurrentLoopIterations({ ...rec, gate: 'none' }, 1000)).toBe(2 + 130 + 1000 * 66);
  });
  it('the fixed-size passes stay far below the cap at every K and V', () => {
    const budget = loopBudget({ loopLimit: GALLIVM_LOOP_LIMIT });
    expect(intraLoopIterations({ K: 256, gate: 'vector' }, 64)).toBeLessThan(budget / 10);
    expect(prepLoopIterations({ K: 256 }, 64)).toBeLessThan(200);
    expect(outputLoopIterations({ K: 256 })).toBeLessThan(200);
    expect(convertLoopIterations({ K: 256, V: 4096 })).toBe(1025);
    expect(solveLoopIterations({ K: 256, V: 4096 }, 4, 1)).toBeLessThan(budget);
  });
  it('plans segments from the budget (no cap: one segment)', () => {
    const capped = { loopLimit: GALLIVM_LOOP_LIMIT, adapterClass: 'cpu' } as TesseraDevice;
    const r = planLoops(
      capped,
      resolveScanOptions({ H: 1, K: 64, V: 64, T: 1000, gate: 'scalar', delta: false, mode: 'recurrent' }),
    );
    expect([r.segments, r.segmentLength, r.bounds.recurrent]).toEqual([3, 449, 58951]);
    const c = planLoops(
      capped,
      resolveScanOptions({ H: 1, K: 64, V: 64, cuSeqlens: [0, 64, 2112], gate: 'scalar', delta: true, mode: 'chunk' }),
    );
    expect([c.segments, c.segmentLength]).toEqual([2, 25]);
    const free = planLoops(
      { loopLimit: Infinity, adapterClass: 'cpu' } as TesseraDevice,
      resolveScanOptions({ H: 1, K: 64, V: 64, T: 100000, gate: 'vector', delta: true, mode: 'recurrent' }),
    );
    expect([free.segments, free.segmentLength]).toEqual([1, 100000]);
    const tiny = { loopLimit: 1024, adapterClass: 'cpu' } as TesseraDevice;
    expect(() =>
      planLoops(
        tiny,
        resolveScanOptions({
          H: 1,
          K: 256,
          V: 8,
          T: 4,
          gate: 'none',
          delta: false,
          normalize: true,
          mode: 'recurrent',
        }),
      ),
    ).toThrow(expect.objectContaining({ code: 'E_LIMIT', argument: 'K' }));
  });
  it('a plan exposes its segmentation', async () => {
    const plan = await planLinearScan(gpu.dev, {
      H: 1,
      K: 64,
      V: 64,
      T: 1000,
      gate: 'scalar',
      delta: false,
      mode: 'recurrent',
    });
    expect(plan.loops.segments).toBe(
      Number.isFinite(gpu.dev.loopLimit) ? Math.ceil(1000 / plan.loops.segmentLength) : 1,
    );
    plan.dispose();
  });
});

describe('presets', () => {
  it('retention: gamma_h = log(1 - 2^(-5-h))', () => {
    const g = retentionPreset(3).gamma;
    expect(g[0]).toBeCloseTo(Math.log(1 - 1 / 32), 12);
    expect(g[2]).toBeCloseTo(Math.log(1 - 1 / 128), 12);
  });
  it('lightning: fla formula (head 0 undecayed) vs MiniMax formula (scale 1)', () => {
    const f = lightningPreset(8, { layer: 2, layers: 8 });
    expect(f.gamma[0]).toBeCloseTo(0, 15);
    expect(f.gamma[3]).toBeCloseTo(-(8 / 8) * (1 - 2 / 8) * 3, 12);
    expect(f.scale).toBeUndefined();
    const m = lightningPreset(8, { layer: 2, layers: 8, formula: 'minimax' });
    expect(m.scale).toBe(1);
    expect(m.gamma[0]).toBeCloseTo(-(2 ** -1) * (1 - 2 / (7 + 1e-5) + 1e-5), 12);
  });
});

describe('bad input', () => {
  it('rejects bad options naming the argument', async () => {
    await expect(planLinearAttn(gpu.dev, { H: 0, K: 64, V: 64, T: 4 })).rejects.toMatchObject({
      code: 'E_ARG',
      argument: 'H',
    });
    await expect(planLinearAttn(gpu.dev, { H: 1, K: 300, V: 64, T: 4 })).rejects.toMatchObject({ argument: 'K' });
    await expect(planSimpleGla(gpu.dev, { H: 2, HV: 3, K: 64, V: 64, T: 4 })).rejects.toMatchObject({ argument: 'HV' });
    await expect(planSimpleGla(gpu.dev, { H: 2, K: 64, V: 64, T: 4, gamma: [-0.1, 0.2] })).rejects.toMatchObject({
      argument: 'gamma[1]',
    });
    await expect(planSimpleGla(gpu.dev, { H: 2, K: 64, V: 64, T: 4, gamma: [-0.1, NaN] })).rejects.toMatchObject({
      code: 'E_NAN',
      argument: 'gamma[1]',
    });
    await expect(planGla(gpu.dev, { H: 1, K: 64, V: 64, cuSeqlens: [0, 5, 3] })).rejects.toMatchObject({
      argument: 'cuSeqlens[2]',
    });
    await expect(planGla(gpu.dev, { H: 1, K: 64, V: 63, T: 4, dtype: 'f16' })).rejects.toMatchObject({ argument: 'V' });
  });

  it('rejects NaN and positive log-gates, and states of the wrong shape', async () => {
    const T = 4,
      H = 1,
      K = 8,
      V = 8;
    const base = () => ({
      q: gpu.tensor(new Float64Array(T * K), [T, H, K]),
      k: gpu.tensor(new Float64Array(T * K), [T, H, K]),
      v: gpu.tensor(new Float64Array(T * V), [T, H, V]),
      o: gpu.nanTensor([T, H, V]),
    });
    await expect(simpleGla(gpu.dev, { ...base(), g: gpu.tensor([0, -1, NaN, -1], [T, H]) })).rejects.toMatchObject({
      code: 'E_NAN',
      argument: 'g',
    });
    await expect(simpleGla(gpu.dev, { ...base(), g: gpu.tensor([0, -1, 0.5, -1], [T, H]) })).rejects.toMatchObject({
      code: 'E_ARG',
      argument: 'g',
    });
    await expect(
      gla(gpu.dev, { ...base(), g: gpu.tensor(new Float64Array(T * K).fill(-0.1), [T, H, K - 1]) }),
    ).rejects.toMatchObject({ argument: 'g.shape[2]' });
    await expect(
      linearAttn(gpu.dev, { ...base(), initialState: gpu.nanTensor([1, H, K, V + 1]) }),
    ).rejects.toMatchObject({ argument: 'initialState.shape[3]' });
    await expect(linearAttn(gpu.dev, { ...base(), finalState: gpu.nanTensor([2, H, K, V]) })).rejects.toMatchObject({
      argument: 'finalState.shape[0]',
    });
    const plan = await planLinearAttn(gpu.dev, { H, K, V, T });
    const enc = gpu.dev.device.createCommandEncoder();
    expect(() => plan.run(enc, { ...base(), v: gpu.nanTensor([T, H, V], 'f16') })).toThrow(TesseraError);
    plan.dispose();
    enc.finish();
  });
});
