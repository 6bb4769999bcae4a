/**
 * Dense/sparse switch (DSSA, InfLLM-V2's "dense-sparse switchable attention" idea): one plan that
 * runs dense causal flash attention (`kernels/dense`) while the sequence is shorter than a
 * threshold, and a chosen sparse method above it. The choice is made once, in plan, from `T`;
 * `run` then encodes exactly one method. Dense needs no extra inputs; NSA needs its gates and DSA
 * its indexer inputs, which dense mode ignores.
 */
import { check, checkInt, fail } from '../errors.js';
import { aliasedOption, optionName } from '../options.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../gpu/device.js';
import { KernelPlan, runOnce } from '../plan.js';
import { isFloatDType, type FloatDType, type GpuTensor } from '../tensor.js';
import { planAttention, type AttentionPlan } from '../../kernels/dense/index.js';
import { planDsa, type DsaPlan } from '../../kernels/dsa/index.js';
import { planMoba, type MobaPlan } from '../../kernels/moba/index.js';
import { planNsa, type NsaPlan } from '../../kernels/nsa/index.js';
import type { NsaVariant } from '../../kernels/nsa/reference.js';

export type SparseMethod = 'sliding_window' | 'moba' | 'nsa' | 'dsa';

/** Defaults of the switch (InfLLM-V2 switches at 8192 tokens). */
export const SWITCH_DEFAULTS = {
  threshold: 8192,
  window: 512,
  sinks: 0,
  moba: { blockSize: 512, topk: 3 },
  nsa: { blockSize: 64, blockCount: 16, window: 512, variant: 'nsa' as NsaVariant },
  dsa: { topk: 2048 },
} as const;

export interface SwitchOptions {
  /** Tokens of the (single) sequence, prefill; required (or its deprecated alias `T`). */
  Tq?: number;
  /** @deprecated Use `Tq` (the query length's name in every family). */
  T?: number;
  Hq: number;
  Hkv: number;
  D: number;
  Dv?: number;
  /** The sparse method used when `T >= threshold`. */
  method: SparseMethod;
  /** Dense below this many tokens (default 8192). 0 = always sparse; Infinity = always dense. */
  threshold?: number;
  scale?: number;
  dtype?: FloatDType;
  outDtype?: FloatDType;
  /** sliding_window: W (default 512) and sink tokens (default 0). */
  window?: number;
  sinks?: number;
  /** moba: block size (default 512) and top-k blocks incl. the own block (default 3). */
  moba?: { blockSize?: number; topk?: number };
  /** nsa: block size 64, 16 blocks, window 512, variant 'nsa' by default. */
  nsa?: { blockSize?: number; blockCount?: number; window?: number; variant?: NsaVariant };
  /** dsa: index heads and dims (required for dsa), topk (default 2048). */
  dsa?: { HI: number; DI: number; topk?: number };
}

export interface SwitchTensors {
  q: GpuTensor;
  k: GpuTensor;
  v: GpuTensor;
  o: GpuTensor;
  /** Optional `[T, Hq]` f32 (dense, sliding_window, moba). */
  lse?: GpuTensor;
  /** nsa gates `[T, Hq]`. */
  gCmp?: GpuTensor;
  gSlc?: GpuTensor;
  gSwa?: GpuTensor;
  /** dsa indexer inputs. */
  qI?: GpuTensor;
  kI?: GpuTensor;
  w?: GpuTensor;
}

type Inner =
  | { kind: 'dense' | 'sliding_window'; plan: AttentionPlan }
  | { kind: 'moba'; plan: MobaPlan }
  | { kind: 'nsa'; plan: NsaPlan }
  | { kind: 'dsa'; plan: DsaPlan };

/**
 * Dense attention below a length threshold, a sparse method above.
 * Planned once by `planSparseSwitch`; `run` records it into your encoder and allocates
 * nothing; `dispose()` frees what the plan holds.
 *
 * @example
 * const plan = await planSparseSwitch(dev, { Tq: T, Hq: 8, Hkv: 2, D: 64, method: 'moba', threshold: 8192 });
 * plan.run(encoder, { q, k, v, o });
 * plan.dispose();
 */
export class SwitchPlan extends KernelPlan<SwitchTensors> {
  /** What `run` executes: `dense` below the threshold, else the sparse method. */
  readonly mode: 'dense' | SparseMethod;
  private readonly inner: Inner;

  private constructor(ctx: TesseraDevice, inner: Inner) {
    super(ctx);
    this.inner = inner;
    this.mode = inner.kind;
  }

  /** @internal use {@link planSparseSwitch}. */
  static async create(device: DeviceLike, opts: SwitchOptions): Promise<SwitchPlan> {
    const ctx = ctxOf(device);
    if (opts === null || typeof opts !== 'object') fail('E_ARG', 'options', 'missing;', opts, 'an options object');
    const T = checkInt(aliasedOption(opts, 'Tq', 'T'), optionName(opts, 'Tq', 'T'), { min: 1 });
    const methods: SparseMethod[] = ['sliding_window', 'moba', 'nsa', 'dsa'];
    check(methods.includes(opts.method), 'method', methods.join(', '), opts.method);
    const threshold = opts.threshold ?? SWITCH_DEFAULTS.threshold;
    check(
      typeof threshold === 'number' && threshold >= 0 && !Number.isNaN(threshold),
      'threshold',
      'a number >= 0 (Infinity = always dense)',
      threshold,
    );
    const dtype = opts.dtype ?? 'f32';
    check(isFloatDType(dtype), 'dtype', 'one of f32, f16, bf16', dtype, 'E_DTYPE');
    const common = {
      Hq: opts.Hq,
      Hkv: opts.Hkv,
      D: opts.D,
      Dv: opts.Dv,
      scale: opts.scale,
      dtype,
      outDtype: opts.outDtype,
    };
    if (T < threshold)
      return new SwitchPlan(ctx, { kind: 'dense', plan: await planAttention(ctx, { ...common, Tq: T, causal: true }) });
    switch (opts.method) {
      case 'sliding_window': {
        const window = checkInt(opts.window ?? SWITCH_DEFAULTS.window, 'window', { min: 1 });
        const sinks = checkInt(opts.sinks ?? SWITCH_DEFAULTS.sinks, 'sinks', { min: 0 });
        return new SwitchPlan(ctx, {
          kind: 'sliding_window',
          plan: await planAttention(ctx, { ...common, Tq: T, causal: true, window, sinks }),
        });
      }
      case 'moba':
        return new SwitchPlan(ctx, {
          kind: 'moba',
          plan: await planMoba(ctx, { ...common, Tq: T, ...SWITCH_DEFAULTS.moba, ...opts.moba }),
        });
      case 'nsa':
        return new SwitchPlan(ctx, {
          kind: 'nsa',
          plan: await planNsa(ctx, { ...common, Tq: T, ...SWITCH_DEFAULTS.nsa, ...opts.nsa }),
        });
      case 'dsa': {
        if (!opts.dsa) fail('E_ARG', 'dsa', 'is required for method dsa;', opts.dsa, '{ HI, DI, topk? }');
        return new SwitchPlan(ctx, {
          kind: 'dsa',
          plan: await planDsa(ctx, { ...common, Tq: T, ...SWITCH_DEFAULTS.dsa, ...opts.dsa }),
        });
      }
    }
  }

  override dispose(): void {
    this.inner.plan.dispose();
    super.dispose();
  }

  run(encoder: GPUCommandEncoder, t: SwitchTensors): void {
    this.assertUsable();
    if (t === null || typeof t !== 'object') fail('E_ARG', 'tensors', 'is not an object;', t, '{ q, k, v, o, ... }');
    const i = this.inner;
    switch (i.kind) {
      case 'dense':
      case 'sliding_window':
        i.plan.run(encoder, { q: t.q, k: t.k, v: t.v, o: t.o, lse: t.lse });
        return;
      case 'moba':
        i.plan.run(encoder, { q: t.q, k: t.k, v: t.v, o: t.o, lse: t.lse });
        return;
      case 'nsa':
        i.plan.run(encoder, {
          q: t.q,
          k: t.k,
          v: t.v,
          o: t.o,
          gCmp: t.gCmp as GpuTensor,
          gSlc: t.gSlc as GpuTensor,
          gSwa: t.gSwa,
        });
        return;
      case 'dsa':
        i.plan.run(encoder, {
          q: t.q,
          k: t.k,
          v: t.v,
          o: t.o,
          lse: t.lse,
          qI: t.qI as GpuTensor,
          kI: t.kI as GpuTensor,
          w: t.w as GpuTensor,
        });
        return;
    }
  }
}

/**
 * Plans attention that is dense below `threshold` tokens and `method` above it.
 *
 * @example
 * const plan = await planSparseSwitch(dev, { Tq: T, Hq: 8, Hkv: 2, D: 64, method: 'moba', threshold: 8192 });
 * console.log(plan.mode); // 'dense' for T < 8192, else 'moba'
 * plan.run(encoder, { q, k, v, o });
 */
export function planSparseSwitch(device: DeviceLike, opts: SwitchOptions): Promise<SwitchPlan> {
  return SwitchPlan.create(device, opts);
}

/**
 * The switch in one call (plan, run, submit, wait).
 *
 * @example
 * await sparseSwitch(dev, { q, k, v, o }, { Tq: T, Hq: 8, Hkv: 2, D: 64, method: 'sliding_window', window: 512 });
 */
export async function sparseSwitch(
  device: DeviceLike,
  t: SwitchTensors,
  opts: SwitchOptions,
): Promise<'dense' | SparseMethod> {
  const ctx = ctxOf(device);
  const plan = await planSparseSwitch(ctx, opts);
  try {
    await runOnce(ctx, plan, t, `switch(${plan.mode})`);
    return plan.mode;
  } finally {
    plan.dispose();
  }
}
