/**
 * Golden handler for the NSA cases: `nsa`, `nsa_t300` (fla-org/native-sparse-attention
 * `naive_nsa_with_compression`, variant 'nsa') and `fla_nsa` (flash-linear-attention
 * `fla/ops/nsa/naive.py` `naive_nsa`, variant 'fla'). `block_indices` compare as sets per
 * (token, KV head) with the case's selection margin; a near-tie row excuses the outputs of the
 * query heads of that KV head.
 */
import { TesseraError } from '../../errors.js';
import type { TesseraDevice } from '../../gpu/device.js';
import { runOnce } from '../../plan.js';
import { compareSelections, runTensors, type GoldenCase, type GoldenHandler } from '../golden.js';
import { planNsa } from '../../../kernels/nsa/nsa.js';
import type { NsaVariant } from '../../../kernels/nsa/reference.js';

function variantOf(c: GoldenCase): NsaVariant | undefined {
  const repo = c.source?.repo ?? '';
  const fn = c.source?.function ?? '';
  if (repo.endsWith('native-sparse-attention') && fn === 'naive_nsa_with_compression') return 'nsa';
  if (repo.endsWith('flash-linear-attention') && fn === 'naive_nsa') return 'fla';
  return undefined;
}

function num(c: GoldenCase, key: string): number {
  const v = c.params[key];
  if (typeof v !== 'number') throw new TesseraError('E_UNSUPPORTED', `case ${c.name}: param ${key} missing`);
  return v;
}

export const nsaGolden: GoldenHandler = {
  family: 'nsa',
  matches: (c) => variantOf(c) !== undefined,
  async run(dev: TesseraDevice, c: GoldenCase) {
    const variant = variantOf(c)!;
    if ((c.params.B ?? 1) !== 1) throw new TesseraError('E_UNSUPPORTED', 'NSA batches with B > 1');
    const T = num(c, 'T');
    const Hq = num(c, 'HQ');
    const Hkv = num(c, 'H');
    const D = num(c, 'K');
    const Dv = num(c, 'V');
    const blockSize = num(c, 'block_size');
    const blockCount = num(c, 'block_counts');
    const window = (c.params.window_size as number | undefined) ?? 0;
    const inp = c.inputs;
    const { up, read, dispose } = runTensors(dev);
    try {
      const plan = await planNsa(dev, {
        Tq: T,
        Hq,
        Hkv,
        D,
        Dv,
        blockSize,
        blockCount,
        window,
        variant,
        scale: c.params.scale as number | undefined,
      });
      const o = up(new Float32Array(T * Hq * Dv), [T, Hq, Dv], 'f32');
      const blockIndices = up(new Int32Array(T * Hkv * blockCount), [T, Hkv, blockCount], 'i32');
      const gSwa = window > 0 ? up(inp.g_swa!.data, [T, Hq], 'f32') : undefined;
      await runOnce(
        dev,
        plan,
        {
          q: up(inp.q!.data, [T, Hq, D], 'f32'),
          k: up(inp.k!.data, [T, Hkv, D], 'f32'),
          v: up(inp.v!.data, [T, Hkv, Dv], 'f32'),
          gCmp: up(inp.g_cmp!.data, [T, Hq], 'f32'),
          gSlc: up(inp.g_slc!.data, [T, Hq], 'f32'),
          gSwa,
          o,
          blockIndices,
        },
        `verify ${c.name}`,
      );
      plan.dispose();
      const got = await read(o);
      const sel = await read(blockIndices);
      const { report, excusedRows } = compareSelections(
        sel,
        c.outputs.block_indices!.data,
        blockCount,
        c.aux.selection_margin?.data,
      );
      const G = Hq / Hkv;
      const excused = new Uint8Array(T * Hq * Dv);
      for (let r = 0; r < T * Hkv; r++) if (excusedRows[r]) excused.fill(1, r * G * Dv, (r + 1) * G * Dv);
      // block_indices are judged as sets above; the ordered comparison would flag equal sets in another order
      return { outputs: [{ name: 'o', got, excused }], selection: report };
    } finally {
      dispose();
    }
  },
};
