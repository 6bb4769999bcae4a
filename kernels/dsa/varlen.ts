/**
 * DSA over a ragged batch (`cuSeqlens`): each sequence runs its own {@link DsaPlan} on staging
 * copies of its rows (see `kernels/block_sparse/ragged.ts`); selection never crosses a sequence.
 * The `indices` output is not offered here (its width, min(topk, length), differs per sequence).
 */
import { fail } from '../../src/errors.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { KernelPlan, runOnceAndDispose } from '../../src/plan.js';
import type { GpuTensor } from '../../src/tensor.js';
import { checkRagged, copyRows, raggedSequences, stageTensors, type RaggedField } from '../block_sparse/ragged.js';
import { DsaPlan, planDsa, type DsaOptions, type DsaTensors } from './dsa.js';

export interface DsaVarlenOptions extends Omit<DsaOptions, 'Tq' | 'T' | 'rowChunk'> {
  /** `[N + 1]` cumulative sequence lengths, starting at 0, non-decreasing. */
  cuSeqlens: readonly number[];
}

type Field = 'q' | 'k' | 'v' | 'qI' | 'kI' | 'w' | 'o' | 'lse';
const INPUTS: Field[] = ['q', 'k', 'v', 'qI', 'kI', 'w'];

/**
 * DSA over a ragged batch (`cuSeqlens`).
 * Planned once by `planDsaVarlen`; `run` records it into your encoder and allocates
 * nothing; `dispose()` frees what the plan holds.
 *
 * @example
 * const plan = await planDsaVarlen(dev, { cuSeqlens: [0, 3000, 8000], Hq: 16, D: 64, HI: 8, DI: 64, topk: 2048 });
 * plan.run(encoder, { q, k, v, qI, kI, w, o });
 * plan.dispose();
 */
export class DsaVarlenPlan extends KernelPlan<DsaTensors> {
  readonly total: number;
  private readonly fields: Record<Field, RaggedField>;
  private readonly seqs: { start: number; len: number; plan: DsaPlan; staged: Record<Field, GpuTensor> }[];

  private constructor(
    ctx: TesseraDevice,
    total: number,
    fields: Record<Field, RaggedField>,
    plans: { start: number; len: number; plan: DsaPlan }[],
  ) {
    super(ctx);
    this.total = total;
    this.fields = fields;
    this.seqs = plans.map((p) => ({
      ...p,
      staged: stageTensors((b, l) => this.workspace(b, `dsa.varlen.${l}`), p.len, fields),
    }));
  }

  /** @internal use {@link planDsaVarlen}. */
  static async create(device: DeviceLike, opts: DsaVarlenOptions): Promise<DsaVarlenPlan> {
    const ctx = ctxOf(device);
    if (opts === null || typeof opts !== 'object') fail('E_ARG', 'options', 'missing;', opts, 'an options object');
    const seqs = raggedSequences(opts.cuSeqlens);
    const plans: { start: number; len: number; plan: DsaPlan }[] = [];
    try {
      for (const s of seqs) if (s.len > 0) plans.push({ ...s, plan: await planDsa(ctx, { ...opts, Tq: s.len }) });
    } catch (e) {
      for (const p of plans) p.plan.dispose();
      throw e;
    }
    const o =
      plans[0]?.plan.options ??
      (await planDsa(ctx, { ...opts, Tq: 1 }).then((p) => {
        const r = p.options;
        p.dispose();
        return r;
      }));
    const fields: Record<Field, RaggedField> = {
      q: { row: [o.Hq, o.D], dtype: o.dtype },
      k: { row: [o.Hkv, o.D], dtype: o.dtype },
      v: { row: [o.Hkv, o.Dv], dtype: o.dtype },
      qI: { row: [o.HI, o.DI], dtype: o.dtype },
      kI: { row: [o.DI], dtype: o.dtype },
      w: { row: [o.HI], dtype: o.dtype },
      o: { row: [o.Hq, o.Dv], dtype: o.outDtype },
      lse: { row: [o.Hq], dtype: 'f32' },
    };
    return new DsaVarlenPlan(
      ctx,
      seqs.reduce((a, s) => a + s.len, 0),
      fields,
      plans,
    );
  }

  override dispose(): void {
    for (const s of this.seqs) s.plan.dispose();
    super.dispose();
  }

  run(encoder: GPUCommandEncoder, t: DsaTensors): void {
    this.assertUsable();
    if (t === null || typeof t !== 'object')
      fail('E_ARG', 'tensors', 'is not an object;', t, '{ q, k, v, qI, kI, w, o, lse? }');
    if (t.indices !== undefined)
      fail(
        'E_UNSUPPORTED',
        'indices',
        'is not offered for ragged batches;',
        'a tensor',
        'no indices (plan each sequence with planDsa to get them)',
      );
    const batch: Partial<Record<Field, GpuTensor>> = {};
    for (const f of [...INPUTS, 'o', 'lse'] as Field[]) {
      if (f === 'lse' && t.lse === undefined) continue;
      batch[f] = checkRagged(t[f], f, this.total, this.fields[f], INPUTS.includes(f) ? 'in' : 'out');
    }
    for (const s of this.seqs) {
      for (const f of INPUTS) copyRows(encoder, batch[f]!, s.staged[f], s.start, s.len, 'in');
      const st = s.staged;
      s.plan.run(encoder, {
        q: st.q,
        k: st.k,
        v: st.v,
        qI: st.qI,
        kI: st.kI,
        w: st.w,
        o: st.o,
        lse: batch.lse ? st.lse : undefined,
      });
      copyRows(encoder, batch.o!, st.o, s.start, s.len, 'out');
      if (batch.lse) copyRows(encoder, batch.lse, st.lse, s.start, s.len, 'out');
    }
  }
}

/**
 * Plans DSA prefill over a ragged batch (`cuSeqlens`).
 *
 * @example
 * const plan = await planDsaVarlen(dev, { cuSeqlens: [0, 3000, 8000], Hq: 16, D: 64, HI: 8, DI: 64, topk: 2048 });
 * plan.run(encoder, { q, k, v, qI, kI, w, o });
 */
export function planDsaVarlen(device: DeviceLike, opts: DsaVarlenOptions): Promise<DsaVarlenPlan> {
  return DsaVarlenPlan.create(device, opts);
}

/**
 * DSA over a ragged batch in one call.
 *
 * @example
 * await dsaVarlen(dev, { q, k, v, qI, kI, w, o }, { cuSeqlens: [0, 300, 812], Hq: 4, D: 64, HI: 4, DI: 32, topk: 128 });
 */
export async function dsaVarlen(device: DeviceLike, t: DsaTensors, opts: DsaVarlenOptions): Promise<void> {
  const ctx = ctxOf(device);
  const plan = await planDsaVarlen(ctx, opts);
  await runOnceAndDispose(ctx, plan, t, 'dsa.varlen');
}
