/**
 * Golden handler for the MoBA cases (`moba`, `moba_t300`: MoonshotAI/MoBA `moba_attn_varlen_naive`
 * in float64). The cases record only `o`; the block selection is checked against this folder's
 * float64 reference selection with `compareSelections` and the case's `aux_selection_margin`, so a
 * row may differ only at a near-tie, and such a row's outputs are excused.
 */
import { TesseraError } from '../../errors.js';
import type { TesseraDevice } from '../../gpu/device.js';
import { runOnce } from '../../plan.js';
import { compareSelections, runTensors, type GoldenCase, type GoldenHandler } from '../golden.js';
import { planMoba } from '../../../kernels/moba/moba.js';
import { planMobaVarlen } from '../../../kernels/moba/varlen.js';
import { mobaReference } from '../../../kernels/moba/reference.js';

function num(c: GoldenCase, key: string): number {
  const v = c.params[key];
  if (typeof v !== 'number') throw new TesseraError('E_UNSUPPORTED', `case ${c.name}: param ${key} missing`);
  return v;
}

export const mobaGolden: GoldenHandler = {
  family: 'moba',
  matches: (c) => c.source?.function === 'moba_attn_varlen_naive',
  async run(dev: TesseraDevice, c: GoldenCase) {
    const T = num(c, 'T');
    const H = num(c, 'H');
    const D = num(c, 'D');
    const B = num(c, 'moba_chunk_size');
    const topk = num(c, 'moba_topk');
    const cu = c.params.cu_seqlens as number[] | undefined;
    if (cu && (cu[0] !== 0 || cu[cu.length - 1] !== T))
      throw new TesseraError('E_UNSUPPORTED', `cu_seqlens ${JSON.stringify(cu)} does not cover T = ${T}`);
    if (cu && cu.length > 2) return runVarlen(dev, c, cu, { T, H, D, B, topk });
    const { q, k, v } = c.inputs as Record<string, { data: Float64Array }>;
    const { up, read, dispose } = runTensors(dev);
    try {
      const plan = await planMoba(dev, {
        Tq: T,
        Hq: H,
        Hkv: H,
        D,
        blockSize: B,
        topk,
        scale: (c.params.scale as number) ?? undefined,
      });
      const o = up(new Float32Array(T * H * D), [T, H, D], 'f32');
      const selection = up(new Int32Array(T * H * topk), [T, H, topk], 'i32');
      await runOnce(
        dev,
        plan,
        {
          q: up(q!.data, [T, H, D], 'f32'),
          k: up(k!.data, [T, H, D], 'f32'),
          v: up(v!.data, [T, H, D], 'f32'),
          o,
          selection,
        },
        'verify moba',
      );
      plan.dispose();
      const got = await read(o);
      const sel = await read(selection);
      const ref = mobaReference(q!.data, k!.data, v!.data, { Tq: T, Hq: H, Hkv: H, D, blockSize: B, topk });
      const { report, excusedRows } = compareSelections(sel, ref.selection, topk, c.aux.selection_margin?.data);
      const excused = new Uint8Array(T * H * D);
      for (let r = 0; r < T * H; r++) if (excusedRows[r]) excused.fill(1, r * D, r * D + D);
      return { outputs: [{ name: 'o', got, excused }], selection: report };
    } finally {
      dispose();
    }
  },
};

/** A multi-sequence case: `planMobaVarlen`, output judged as is (the selection check is per sequence in the tests). */
async function runVarlen(
  dev: TesseraDevice,
  c: GoldenCase,
  cu: number[],
  p: { T: number; H: number; D: number; B: number; topk: number },
) {
  const { T, H, D, B, topk } = p;
  const { up, read, dispose } = runTensors(dev);
  try {
    const plan = await planMobaVarlen(dev, { cuSeqlens: cu, Hq: H, Hkv: H, D, blockSize: B, topk });
    const o = up(new Float32Array(T * H * D), [T, H, D], 'f32');
    const { q, k, v } = c.inputs as Record<string, { data: Float64Array }>;
    await runOnce(
      dev,
      plan,
      { q: up(q!.data, [T, H, D], 'f32'), k: up(k!.data, [T, H, D], 'f32'), v: up(v!.data, [T, H, D], 'f32'), o },
      'verify moba varlen',
    );
    plan.dispose();
    return { outputs: [{ name: 'o', got: await read(o) }] };
  } finally {
    dispose();
  }
}
