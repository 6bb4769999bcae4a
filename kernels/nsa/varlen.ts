/**
 * NSA over a ragged batch (`cuSeqlens`, the layout of fla's `cu_seqlens`): each sequence runs its
 * own {@link NsaPlan} on staging copies of its rows (see `kernels/block_sparse/ragged.ts`); blocks
 * and windows restart at every sequence start.
 */
import { fail } from '../../src/errors.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { KernelPlan, runOnceAndDispose } from '../../src/plan.js';
import type { GpuTensor } from '../../src/tensor.js';
import { checkRagged, copyRows, raggedSequences, stageTensors, type RaggedField } from '../block_sparse/ragged.js';
import { NsaPlan, planNsa, type NsaOptions, type NsaTensors } from './nsa.js';

export interface NsaVarlenOptions extends Omit<NsaOptions, 'Tq' | 'T' | 'Tk'> {
  /** `[N + 1]` cumulative sequence lengths, starting at 0, non-decreasing. */
  cuSeqlens: readonly number[];
}

type Field = 'q' | 'k' | 'v' | 'gCmp' | 'gSlc' | 'gSwa' | 'o' | 'blockIndices';
const INPUTS: Field[] = ['q', 'k', 'v', 'gCmp', 'gSlc', 'gSwa'];

/**
 * NSA over a ragged batch (`cuSeqlens`).
 * Planned once by `planNsaVarlen`; `run` records it into your encoder and allocates
 * nothing; `dispose()` frees what the plan holds.
 *
 * @example
 * const plan = await planNsaVarlen(dev, { cuSeqlens: [0, 300, 812], Hq: 32, Hkv: 2, D: 64, blockSize: 64, blockCount: 16, window: 512 });
 * plan.run(encoder, { q, k, v, gCmp, gSlc, gSwa, o });
 * plan.dispose();
 */
export class NsaVarlenPlan extends KernelPlan<NsaTensors> {
  readonly total: number;
  private readonly fields: Record<Field, RaggedField>;
  private readonly seqs: { start: number; len: number; plan: NsaPlan; staged: Record<Field, GpuTensor> }[];

  private constructor(
    ctx: TesseraDevice,
    total: number,
    fields: Record<Field, RaggedField>,
    plans: { start: number; len: number; plan: NsaPlan }[],
  ) {
    super(ctx);
    this.total = total;
    this.fields = fields;
    this.seqs = plans.map((p) => ({
      ...p,
      staged: stageTensors((b, l) => this.workspace(b, `nsa.varlen.${l}`), p.len, fields),
    }));
  }

  /** @internal use {@link planNsaVarlen}. */
  static async create(device: DeviceLike, opts: NsaVarlenOptions): Promise<NsaVarlenPlan> {
    const ctx = ctxOf(device);
    if (opts === null || typeof opts !== 'object') fail('E_ARG', 'options', 'missing;', opts, 'an options object');
    const seqs = raggedSequences(opts.cuSeqlens);
    const plans: { start: number; len: number; plan: NsaPlan }[] = [];
    try {
      for (const s of seqs) if (s.len > 0) plans.push({ ...s, plan: await planNsa(ctx, { ...opts, Tq: s.len }) });
    } catch (e) {
      for (const p of plans) p.plan.dispose();
      throw e;
    }
    const o =
      plans[0]?.plan.options ??
      (await planNsa(ctx, { ...opts, Tq: 1 }).then((p) => {
        const r = p.options;
        p.dispose();
        return r;
      }));
    const fields: Record<Field, RaggedField> = {
      q: { row: [o.Hq, o.D], dtype: o.dtype },
      k: { row: [o.Hkv, o.D], dtype: o.dtype },
      v: { row: [o.Hkv, o.Dv], dtype: o.dtype },
      gCmp: { row: [o.Hq], dtype: o.gateDtype },
      gSlc: { row: [o.Hq], dtype: o.gateDtype },
      gSwa: { row: [o.Hq], dtype: o.gateDtype },
      o: { row: [o.Hq, o.Dv], dtype: o.outDtype },
      blockIndices: { row: [o.Hkv, o.blockCount], dtype: 'i32' },
    };
    return new NsaVarlenPlan(
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

  run(encoder: GPUCommandEncoder, t: NsaTensors): void {
    this.assertUsable();
    if (t === null || typeof t !== 'object')
      fail('E_ARG', 'tensors', 'is not an object;', t, '{ q, k, v, gCmp, gSlc, gSwa?, o, blockIndices? }');
    const window = this.seqs[0]?.plan.options.window ?? 0;
    const batch: Partial<Record<Field, GpuTensor>> = {};
    for (const f of [...INPUTS, 'o', 'blockIndices'] as Field[]) {
      const x = t[f];
      if (x === undefined && (f === 'blockIndices' || (f === 'gSwa' && window === 0))) continue;
      if (f === 'gSwa' && window === 0)
        fail('E_ARG', 'gSwa', 'given but the plan has no window branch;', 'a tensor', 'no gSwa when window = 0');
      batch[f] = checkRagged(x, f, this.total, this.fields[f], INPUTS.includes(f) ? 'in' : 'out');
    }
    for (const s of this.seqs) {
      for (const f of INPUTS) if (batch[f]) copyRows(encoder, batch[f]!, s.staged[f], s.start, s.len, 'in');
      s.plan.run(encoder, {
        q: s.staged.q,
        k: s.staged.k,
        v: s.staged.v,
        gCmp: s.staged.gCmp,
        gSlc: s.staged.gSlc,
        gSwa: batch.gSwa ? s.staged.gSwa : undefined,
        o: s.staged.o,
        blockIndices: batch.blockIndices ? s.staged.blockIndices : undefined,
      });
      copyRows(encoder, batch.o!, s.staged.o, s.start, s.len, 'out');
      if (batch.blockIndices) copyRows(encoder, batch.blockIndices, s.staged.blockIndices, s.start, s.len, 'out');
    }
  }
}

/**
 * Plans NSA prefill over a ragged batch (`cuSeqlens`).
 *
 * @example
 * const plan = await planNsaVarlen(dev, { cuSeqlens: [0, 300, 812], Hq: 32, Hkv: 2, D: 64, blockSize: 64, blockCount: 16, window: 512 });
 * plan.run(encoder, { q, k, v, gCmp, gSlc, gSwa, o });
 */
export function planNsaVarlen(device: DeviceLike, opts: NsaVarlenOptions): Promise<NsaVarlenPlan> {
  return NsaVarlenPlan.create(device, opts);
}

/**
 * NSA over a ragged batch in one call.
 *
 * @example
 * await nsaVarlen(dev, { q, k, v, gCmp, gSlc, o }, { cuSeqlens: [0, 300, 812], Hq: 32, Hkv: 2, D: 64, blockSize: 32, blockCount: 6, variant: 'fla' });
 */
export async function nsaVarlen(device: DeviceLike, t: NsaTensors, opts: NsaVarlenOptions): Promise<void> {
  const ctx = ctxOf(device);
  const plan = await planNsaVarlen(ctx, opts);
  await runOnceAndDispose(ctx, plan, t, 'nsa.varlen');
}
