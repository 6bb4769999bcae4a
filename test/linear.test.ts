import { describe, expect, it } from 'vitest';
import { planGla, planLinearAttn, planSimpleGla, simpleGla, gla, linearAttn, lightningPreset, retentionPreset } from '../kernels/linear/index.js';
import { lightningGamma } from '../kernels/linear/reference.js';
import { TesseraError } from '../src/errors.js';
import { useGpu } from './helpers/gpu.js';
import { caseName, checkScanCase, type ScanCase } from './helpers/scan.js';
import { checkStream } from './helpers/stream.js';

const gpu = useGpu();

const CASES: (ScanCase & { op: string })[] = [
  { op: 'linear_attn', gate: 'none', delta: false, H: 2, K: 32, V: 48, T: 1, h0: true },
  { op: 'linear_attn', gate: 'none', delta: false, H: 1, K: 64, V: 64, T: 65 },
  { op: 'linear_attn', gate: 'none', delta: false, H: 2, K: 32, V: 48, T: 300, normalize: true },
  { op: 'linear_attn', gate: 'none', delta: false, H: 1, K: 48, V: 32, T: 64, normalize: true, h0: true },
  { op: 'linear_attn', gate: 'none', delta: false, H: 1, K: 64, V: 32, T: 63, dtype: 'f16', h0: true },
  { op: 'simple_gla', gate: 'scalar', delta: false, H: 1, K: 128, V: 64, T: 64, gates: 'strong', h0: true },
  { op: 'linear_attn', gate: 'none', delta: false, H: 1, K: 30, V: 21, T: 100, normalize: true, h0: true },
  { op: 'gla', gate: 'vector', delta: false, H: 2, K: 18, V: 10, T: 70, h0: true, dtype: 'f16' },
  { op: 'simple_gla', gate: 'scalar', delta: false, H: 1, K: 64, V: 64, T: 1000, gates: 'near0' },
  { op: 'simple_gla', gate: 'scalar', delta: false, H: 2, K: 32, V: 32, cu: [0, 1, 64, 129, 429], h0: true },
  { op: 'simple_gla', gate: 'scalar', delta: false, H: 2, K: 64, V: 48, T: 65, dtype: 'f16', gates: 'strong' },
  { op: 'retention', gate: 'constant', delta: false, H: 4, K: 32, V: 32, T: 300, gamma: Array.from(retentionPreset(4).gamma) },
  { op: 'lightning', gate: 'constant', delta: false, H: 2, K: 64, V: 64, T: 65, h0: true, gamma: Array.from(lightningGamma(2, { layer: 1, layers: 4 })) },
  { op: 'gla', gate: 'vector', delta: false, H: 2, K: 32, V: 48, T: 300, h0: true },
  { op: 'gla', gate: 'vector', delta: false, H: 1, K: 128, V: 128, T: 65, gates: 'strong' },
  { op: 'gla', gate: 'vector', delta: false, H: 1, K: 64, V: 64, T: 63, gates: 'near0', dtype: 'f16', h0: true },
  { op: 'gla', gate: 'vector', delta: false, H: 1, K: 48, V: 32, cu: [0, 5, 5, 70, 134], gates: 'strong', h0: true },
];

describe('linear attention family vs the float64 recurrence (chunked and recurrent forms)', () => {
  for (const c of CASES) {
    it(`${c.op} ${caseName(c)}`, async () => {
      const r = await checkScanCase(gpu, c);
      expect(Object.keys(r).sort()).toEqual(['chunk', 'recurrent']);
    });
  }
});

describe('streaming', () => {
  it('gla: segments 64, 100, 1, 1, 35 equal the one-shot recurrence; rollback restores GPU checkpoints exactly', async () => {
    await checkStream(gpu, { gate: 'vector', delta: false, H: 2, K: 32, V: 48, h0: true }, [64, 100, 1, 1, 35], { checkpointEvery: 1, ringSize: 4 });
  });
  it('normalized linear_attn: segments 70, 1, 64 carry S and z (recurrent and chunked plans)', async () => {
    await checkStream(gpu, { gate: 'none', delta: false, normalize: true, H: 1, K: 32, V: 48 }, [70, 1, 64], { checkpointEvery: 1 });
  });
  it('linear_attn: rollback with host checkpoints every 64 tokens', async () => {
    await checkStream(gpu, { gate: 'none', delta: false, H: 1, K: 64, V: 64 }, [65, 63, 64, 8], { checkpointEvery: 64, checkpointTier: 'host' });
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
    await expect(planLinearAttn(gpu.dev, { H: 0, K: 64, V: 64, T: 4 })).rejects.toMatchObject({ code: 'E_ARG', argument: 'H' });
    await expect(planLinearAttn(gpu.dev, { H: 1, K: 300, V: 64, T: 4 })).rejects.toMatchObject({ argument: 'K' });
    await expect(planSimpleGla(gpu.dev, { H: 2, HV: 3, K: 64, V: 64, T: 4 })).rejects.toMatchObject({ argument: 'HV' });
    await expect(planSimpleGla(gpu.dev, { H: 2, K: 64, V: 64, T: 4, gamma: [-0.1, 0.2] })).rejects.toMatchObject({ argument: 'gamma[1]' });
    await expect(planSimpleGla(gpu.dev, { H: 2, K: 64, V: 64, T: 4, gamma: [-0.1, NaN] })).rejects.toMatchObject({ code: 'E_NAN', argument: 'gamma[1]' });
    await expect(planGla(gpu.dev, { H: 1, K: 64, V: 64, cuSeqlens: [0, 5, 3] })).rejects.toMatchObject({ argument: 'cuSeqlens[2]' });
    await expect(planGla(gpu.dev, { H: 1, K: 64, V: 63, T: 4, dtype: 'f16' })).rejects.toMatchObject({ argument: 'V' });
  });

  it('rejects NaN and positive log-gates, and states of the wrong shape', async () => {
    const T = 4, H = 1, K = 8, V = 8;
    const base = () => ({ q: gpu.tensor(new Float64Array(T * K), [T, H, K]), k: gpu.tensor(new Float64Array(T * K), [T, H, K]), v: gpu.tensor(new Float64Array(T * V), [T, H, V]), o: gpu.nanTensor([T, H, V]) });
    await expect(simpleGla(gpu.dev, { ...base(), g: gpu.tensor([0, -1, NaN, -1], [T, H]) })).rejects.toMatchObject({ code: 'E_NAN', argument: 'g' });
    await expect(simpleGla(gpu.dev, { ...base(), g: gpu.tensor([0, -1, 0.5, -1], [T, H]) })).rejects.toMatchObject({ code: 'E_ARG', argument: 'g' });
    await expect(gla(gpu.dev, { ...base(), g: gpu.tensor(new Float64Array(T * K).fill(-0.1), [T, H, K - 1]) })).rejects.toMatchObject({ argument: 'g.shape[2]' });
    await expect(linearAttn(gpu.dev, { ...base(), initialState: gpu.nanTensor([1, H, K, V + 1]) })).rejects.toMatchObject({ argument: 'initialState.shape[3]' });
    await expect(linearAttn(gpu.dev, { ...base(), finalState: gpu.nanTensor([2, H, K, V]) })).rejects.toMatchObject({ argument: 'finalState.shape[0]' });
    const plan = await planLinearAttn(gpu.dev, { H, K, V, T });
    const enc = gpu.dev.device.createCommandEncoder();
    expect(() => plan.run(enc, { ...base(), v: gpu.nanTensor([T, H, V], 'f16') })).toThrow(TesseraError);
    plan.dispose();
    enc.finish();
  });
});
