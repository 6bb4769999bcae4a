/**
 * MoBA over a ragged batch (`cuSeqlens`, MoBA's own varlen layout): sequence n is rows
 * `[cuSeqlens[n], cuSeqlens[n+1])` of q, k, v, o, and its blocks start at its first token (blocks
 * never span two sequences). Each sequence runs its own {@link MobaPlan} (prefill, Tq = Tk); the
 * rows of a sequence are copied into plan-owned staging buffers first, because a tensor view must
 * start at a 256-byte offset and sequence boundaries need not. The copies run at
 * `copyBufferToBuffer` speed, small next to the attention itself.
 */
import { fail } from '../../src/errors.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { KernelPlan, checkBindingSize, runOnceAndDispose } from '../../src/plan.js';
import { byteSize, type FloatDType, type GpuTensor } from '../../src/tensor.js';
import { checkRagged, copyRows, raggedSequences } from '../block_sparse/ragged.js';
import { MobaPlan, planMoba, type MobaOptions, type MobaTensors } from './moba.js';

export interface MobaVarlenOptions extends Omit<MobaOptions, 'Tq' | 'Tk'> {
  /** `[N + 1]` cumulative sequence lengths, starting at 0, non-decreasing (flash-attn / fla layout). */
  cuSeqlens: readonly number[];
}

interface Seq {
  start: number;
  len: number;
  plan: MobaPlan;
  q: GpuTensor;
  k: GpuTensor;
  v: GpuTensor;
  o: GpuTensor;
  lse: GpuTensor;
  sel: GpuTensor;
}

/**
 * MoBA over a ragged batch (`cuSeqlens`).
 * Planned once by `planMobaVarlen`; `run` records it into your encoder and allocates
 * nothing; `dispose()` frees what the plan holds.
 *
 * @example
 * const plan = await planMobaVarlen(dev, { cuSeqlens: [0, 300, 812], Hq: 4, Hkv: 2, D: 64, blockSize: 64, topk: 3 });
 * plan.run(encoder, { q, k, v, o });
 * plan.dispose();
 */
export class MobaVarlenPlan extends KernelPlan<MobaTensors> {
  readonly options: Readonly<
    MobaVarlenOptions & { total: number; Dv: number; dtype: FloatDType; outDtype: FloatDType }
  >;
  private readonly seqs: Seq[];

  private constructor(
    ctx: TesseraDevice,
    o: MobaVarlenPlan['options'],
    plans: { start: number; len: number; plan: MobaPlan }[],
  ) {
    super(ctx);
    this.options = o;
    const { Hq, Hkv, D, Dv, topk, dtype, outDtype } = o;
    this.seqs = plans.map(({ start, len, plan }) => {
      const t = (shape: number[], dt: FloatDType | 'i32' | 'f32', label: string): GpuTensor => ({
        buffer: this.workspace(byteSize(shape, dt), `moba.varlen.${label}`),
        shape,
        dtype: dt,
      });
      return {
        start,
        len,
        plan,
        q: t([len, Hq, D], dtype, 'q'),
        k: t([len, Hkv, D], dtype, 'k'),
        v: t([len, Hkv, Dv], dtype, 'v'),
        o: t([len, Hq, Dv], outDtype, 'o'),
        lse: t([len, Hq], 'f32', 'lse'),
        sel: t([len, Hq, topk], 'i32', 'sel'),
      };
    });
  }

  /** @internal use {@link planMobaVarlen}. */
  static async create(device: DeviceLike, opts: MobaVarlenOptions): Promise<MobaVarlenPlan> {
    const ctx = ctxOf(device);
    if (opts === null || typeof opts !== 'object') fail('E_ARG', 'options', 'missing;', opts, 'an options object');
    const cu = opts.cuSeqlens;
    const seqs = raggedSequences(cu);
    const plans: { start: number; len: number; plan: MobaPlan }[] = [];
    try {
      for (const s of seqs)
        if (s.len > 0) plans.push({ ...s, plan: await planMoba(ctx, { ...opts, Tq: s.len, Tk: s.len }) });
    } catch (e) {
      for (const p of plans) p.plan.dispose();
      throw e;
    }
    const first = plans[0]?.plan.options;
    const dtype = opts.dtype ?? 'f32';
    const o = {
      ...opts,
      total: cu[cu.length - 1]!,
      Dv: first?.Dv ?? opts.Dv ?? opts.D,
      dtype,
      outDtype: opts.outDtype ?? dtype,
    };
    return new MobaVarlenPlan(ctx, o, plans);
  }

  override dispose(): void {
    for (const s of this.seqs) s.plan.dispose();
    super.dispose();
  }

  run(encoder: GPUCommandEncoder, t: MobaTensors): void {
    this.assertUsable();
    const { total, Hq, Hkv, D, Dv, topk, dtype, outDtype } = this.options;
    const f = (row: number[], dt: FloatDType | 'f32' | 'i32') => ({ row, dtype: dt });
    const q = checkRagged(t?.q, 'q', total, f([Hq, D], dtype), 'in');
    const k = checkRagged(t.k, 'k', total, f([Hkv, D], dtype), 'in');
    const v = checkRagged(t.v, 'v', total, f([Hkv, Dv], dtype), 'in');
    const o = checkRagged(t.o, 'o', total, f([Hq, Dv], outDtype), 'out');
    const lse = t.lse === undefined ? undefined : checkRagged(t.lse, 'lse', total, f([Hq], 'f32'), 'out');
    const sel =
      t.selection === undefined ? undefined : checkRagged(t.selection, 'selection', total, f([Hq, topk], 'i32'), 'out');
    if (t.blockMeans !== undefined)
      fail('E_UNSUPPORTED', 'blockMeans', 'is not taken by the varlen (prefill) path;', 'a tensor', 'no blockMeans');
    for (const [x, n] of [
      [q, 'q'],
      [k, 'k'],
      [v, 'v'],
      [o, 'o'],
    ] as const)
      checkBindingSize(this.ctx, x, n);
    const copy = (batch: GpuTensor, staged: GpuTensor, start: number, len: number, toStaging: boolean) =>
      copyRows(encoder, batch, staged, start, len, toStaging ? 'in' : 'out');
    for (const s of this.seqs) {
      copy(q, s.q, s.start, s.len, true);
      copy(k, s.k, s.start, s.len, true);
      copy(v, s.v, s.start, s.len, true);
      s.plan.run(encoder, {
        q: s.q,
        k: s.k,
        v: s.v,
        o: s.o,
        lse: lse ? s.lse : undefined,
        selection: sel ? s.sel : undefined,
      });
      copy(o, s.o, s.start, s.len, false);
      if (lse) copy(lse, s.lse, s.start, s.len, false);
      if (sel) copy(sel, s.sel, s.start, s.len, false);
    }
  }
}

/**
 * Plans MoBA prefill over a ragged batch of sequences (`cuSeqlens`).
 *
 * @example
 * const plan = await planMobaVarlen(dev, { cuSeqlens: [0, 300, 812], Hq: 4, Hkv: 2, D: 64, blockSize: 64, topk: 3 });
 * plan.run(encoder, { q, k, v, o });   // q, k, v, o hold the 812 rows of both sequences
 */
export function planMobaVarlen(device: DeviceLike, opts: MobaVarlenOptions): Promise<MobaVarlenPlan> {
  return MobaVarlenPlan.create(device, opts);
}

/**
 * MoBA over a ragged batch in one call.
 *
 * @example
 * await mobaVarlen(dev, { q, k, v, o }, { cuSeqlens: [0, 300, 812], Hq: 4, Hkv: 2, D: 64, blockSize: 64, topk: 3 });
 */
export async function mobaVarlen(device: DeviceLike, t: MobaTensors, opts: MobaVarlenOptions): Promise<void> {
  const ctx = ctxOf(device);
  const plan = await planMobaVarlen(ctx, opts);
  await runOnceAndDispose(ctx, plan, t, 'moba.varlen');
}
