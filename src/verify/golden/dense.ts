/**
 * Golden handler for the dense attention cases of `../shared/golden` (`attn_*`, the generator's
 * `own_attention`): causal softmax attention with GQA, optional sliding window and sink tokens.
 * Golden layout `[B, T, H, D]` with B = 1, which is our `[T, H, D]`.
 */
import { TesseraError } from '../../errors.js';
import type { TesseraDevice } from '../../gpu/device.js';
import { runOnce } from '../../plan.js';
import { byteSize, decode, encode, type GpuTensor } from '../../tensor.js';
import type { GoldenCase, GoldenHandler, GoldenRunResult } from '../golden.js';
import { planAttention } from '../../../kernels/dense/prefill.js';

function num(p: Record<string, unknown>, key: string, fallback?: number): number {
  const v = p[key];
  if (v === null || v === undefined) {
    if (fallback !== undefined) return fallback;
    throw new TesseraError('E_UNSUPPORTED', `golden case lacks params.${key}`);
  }
  if (typeof v !== 'number') throw new TesseraError('E_UNSUPPORTED', `params.${key} is not a number`, { actual: v });
  return v;
}

export const denseGoldenHandler: GoldenHandler = {
  family: 'dense',
  matches(c: GoldenCase): boolean {
    return c.source?.function === 'own_attention' || /^attn_/.test(c.name);
  },
  async run(dev: TesseraDevice, c: GoldenCase): Promise<GoldenRunResult> {
    const p = c.params;
    const B = num(p, 'B', 1);
    if (B !== 1) throw new TesseraError('E_UNSUPPORTED', `batch B = ${B} (golden dense cases use B = 1)`);
    const T = num(p, 'T');
    const Hq = num(p, 'HQ');
    const Hkv = num(p, 'HKV');
    const D = num(p, 'D');
    const Dv = c.inputs.v?.shape[3] ?? D;
    const scale = num(p, 'scale', 1 / Math.sqrt(D));
    const causal = p.causal === undefined ? true : Boolean(p.causal);
    const window = num(p, 'window_size', 0);
    const sinks = num(p, 'sink_tokens', 0);
    const made: GPUBuffer[] = [];
    const tensor = (data: ArrayLike<number>, shape: number[]): GpuTensor => {
      const buffer = dev.upload(encode(data, 'f32'), { size: byteSize(shape, 'f32'), label: `golden.${c.name}` });
      made.push(buffer);
      return { buffer, shape, dtype: 'f32' };
    };
    const plan = await planAttention(dev, { Tq: T, Hq, Hkv, D, Dv, scale, causal, window, sinks });
    try {
      const o = tensor(new Float64Array(T * Hq * Dv).fill(NaN), [T, Hq, Dv]);
      const lse = tensor(new Float64Array(T * Hq).fill(NaN), [T, Hq]);
      await runOnce(
        dev,
        plan,
        {
          q: tensor(c.inputs.q!.data, [T, Hq, D]),
          k: tensor(c.inputs.k!.data, [T, Hkv, D]),
          v: tensor(c.inputs.v!.data, [T, Hkv, Dv]),
          o,
          lse,
        },
        `golden ${c.name}`,
      );
      const read = async (t: GpuTensor) =>
        decode(
          new Uint32Array(await dev.readback(t.buffer, byteSize(t.shape, 'f32'))),
          'f32',
          t.shape.reduce((a, b) => a * b, 1),
        );
      return {
        outputs: [
          { name: 'o', got: await read(o) },
          { name: 'lse', got: await read(lse) },
        ],
      };
    } finally {
      plan.dispose();
      for (const b of made) dev.destroyBuffer(b);
    }
  },
};
