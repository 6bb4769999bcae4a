/**
 * Dense attention's options: the contract shared by prefill and decode, their validation and
 * defaults, the sequences of a call, and the tensor checks.
 */
import { check, checkInt, fail, checkF32 } from '../../src/errors.js';
import { kernelTarget, resolveTarget, type KernelTarget } from '../../src/options.js';
import type { TesseraDevice } from '../../src/gpu/device.js';
import { checkBindingSize } from '../../src/plan.js';
import { checkTensor, isFloatDType, type FloatDType, type GpuTensor } from '../../src/tensor.js';

/** Options of dense attention (the cross-team contract; see kernels/dense/README.md). */
export interface AttentionOptions {
  /** Query heads (at most 4096). */
  Hq: number;
  /** Key/value heads (at most 1024); `Hq % Hkv == 0`. Query head h uses kv head floor(h / (Hq / Hkv)). */
  Hkv: number;
  /** q/k head dim, 1..256. */
  D: number;
  /** v/o head dim, 1..256 (default D). */
  Dv?: number;
  /** Default true; bottom-right aligned when Tq != Tk: query i sits at position Tk - Tq + i. */
  causal?: boolean;
  /** Default 1/sqrt(D). */
  scale?: number;
  /** Sliding window W: key j visible iff pos - W < j <= pos (0/undefined = none; causal only). */
  window?: number;
  /** With a window, the first S keys stay visible (still causal). Default 0. */
  sinks?: number;
  /** Per-query-head learned sink logit (MiMo): input `sinkLogits [Hq]` f32. Default false. */
  sinkLogit?: boolean;
  /** Storage dtype of q, k, v (default 'f32'). */
  dtype?: FloatDType;
  /** Storage dtype of o (default = dtype). lse is always f32. */
  outDtype?: FloatDType;
}

/**
 * Kernel selection, for tests and benchmarks. Defaults: `target` from `ctx.adapterClass`
 * (`cpu` on SwiftShader/llvmpipe, else `gpu`), `subgroups` from `ctx.features.subgroups`.
 */
export interface AttentionTuning {
  /** Kernel shape: `cpu` (invocation per row), `gpu` (workgroup per row), `auto` (by adapter class; default). */
  target?: KernelTarget;
  /** @deprecated Use `target` (same values): the kernel shape's old name in this family. */
  variant?: 'auto' | 'cpu' | 'gpu';
  /** cpu shape: `false` turns off the core's subgroup packs (`main_cpu_sg`) in prefill; default: the device's `subgroups` feature. */
  subgroups?: boolean;
  /**
   * @deprecated No effect since dense attention runs on the attention core (which always compiles
   * its head dims in); still checked to be a boolean. It chose the former flash kernel's pipeline.
   */
  constDims?: boolean;
  /**
   * Prefill only: bound on the f32 partials a split call keeps at once (default
   * {@link PREFILL_PARTIALS_BYTES}, 32 MiB). Splits happen only on devices with a loop cap
   * (`ctx.loopLimit`); the queries are then processed in query groups whose partials fit
   * (`plan.queryGroups`; at least one storage-offset-aligned unit of tokens per group).
   */
  partialBytes?: number;
}

/** Bytes of f32 prefill partials a split plan keeps for one query group (at most, unless one aligned unit of tokens needs more). */
export const PREFILL_PARTIALS_BYTES = 32 * 2 ** 20;

export const MAX_HEAD_DIM = 256;

/** Validated, defaulted attention options. */
export interface ResolvedAttention {
  Hq: number;
  Hkv: number;
  D: number;
  Dv: number;
  causal: boolean;
  scale: number;
  window: number;
  sinks: number;
  sinkLogit: boolean;
  dtype: FloatDType;
  outDtype: FloatDType;
  /** The kernel shape in use (`target` resolved: 'auto' is the adapter's class). */
  target: 'cpu' | 'gpu';
  subgroups: boolean;
  constDims: boolean;
  partialBytes: number;
}

/** Validates the shared options (throws TesseraError naming the argument). */
export function resolveAttention(ctx: TesseraDevice, opts: AttentionOptions & AttentionTuning): ResolvedAttention {
  if (opts === null || typeof opts !== 'object')
    fail('E_ARG', 'options', 'is not an object;', opts, 'AttentionOptions');
  // the attention core's limits (kernels/attention)
  const Hq = checkInt(opts.Hq, 'Hq', { min: 1, max: 4096 });
  const Hkv = checkInt(opts.Hkv, 'Hkv', { min: 1, max: 1024 });
  check(Hq % Hkv === 0, 'Hq', `a multiple of Hkv = ${Hkv}`, Hq);
  const D = opts.D;
  if (typeof D !== 'number' || !Number.isInteger(D) || D < 1 || D > MAX_HEAD_DIM) {
    fail('E_UNSUPPORTED', 'D', 'head dim not supported;', D, `an integer in [1, ${MAX_HEAD_DIM}]`);
  }
  const Dv = opts.Dv ?? D;
  if (typeof Dv !== 'number' || !Number.isInteger(Dv) || Dv < 1 || Dv > MAX_HEAD_DIM) {
    fail('E_UNSUPPORTED', 'Dv', 'head dim not supported;', Dv, `an integer in [1, ${MAX_HEAD_DIM}]`);
  }
  const causal = opts.causal ?? true;
  check(typeof causal === 'boolean', 'causal', 'a boolean', causal);
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  checkF32(scale, 'scale');
  const window = opts.window ?? 0;
  checkInt(window, 'window', { min: 0 });
  check(window === 0 || causal, 'window', 'no window with causal = false (a sliding window is causal)', window);
  const sinks = opts.sinks ?? 0;
  checkInt(sinks, 'sinks', { min: 0 });
  const sinkLogit = opts.sinkLogit ?? false;
  check(typeof sinkLogit === 'boolean', 'sinkLogit', 'a boolean', sinkLogit);
  const dtype = opts.dtype ?? 'f32';
  if (!isFloatDType(dtype)) fail('E_DTYPE', 'dtype', 'is not a float storage dtype;', dtype, 'one of f32, f16, bf16');
  const outDtype = opts.outDtype ?? dtype;
  if (!isFloatDType(outDtype))
    fail('E_DTYPE', 'outDtype', 'is not a float storage dtype;', outDtype, 'one of f32, f16, bf16');
  const target = resolveTarget(ctx, kernelTarget(opts));
  const subgroups = opts.subgroups ?? ctx.features.subgroups;
  if (subgroups && !ctx.features.subgroups)
    fail('E_UNSUPPORTED', 'subgroups', 'the device has no subgroups feature;', true, 'false on this device');
  const constDims = opts.constDims ?? target === 'gpu';
  check(typeof constDims === 'boolean', 'constDims', 'a boolean', constDims);
  const partialBytes = checkInt(opts.partialBytes ?? PREFILL_PARTIALS_BYTES, 'partialBytes', {
    min: 1,
    max: Number.MAX_SAFE_INTEGER,
  });
  return {
    Hq,
    Hkv,
    D,
    Dv,
    causal,
    scale,
    window,
    sinks,
    sinkLogit,
    dtype,
    outDtype,
    target,
    subgroups,
    constDims,
    partialBytes,
  };
}

/** One sequence of a batch: where its queries and keys start and how many there are. */
export interface SeqSpan {
  qOff: number;
  tq: number;
  kOff: number;
  tk: number;
}

function checkCu(cu: unknown, argument: string): number[] {
  if (!Array.isArray(cu) || cu.length < 2)
    fail('E_ARG', argument, 'is not a cumulative length list;', cu, 'an array [N+1] starting at 0');
  const a = cu as number[];
  for (let i = 0; i < a.length; i++) {
    const x = a[i];
    if (typeof x !== 'number' || !Number.isInteger(x) || x < 0 || (i === 0 && x !== 0) || (i > 0 && x < a[i - 1]!)) {
      fail(
        'E_ARG',
        `${argument}[${i}]`,
        'invalid value;',
        x,
        i === 0 ? '0' : `an integer >= ${argument}[${i - 1}] = ${a[i - 1]}`,
      );
    }
  }
  return a;
}

/** The sequences of a prefill call, validated. */
export function resolveSpans(opts: {
  Tq?: number;
  Tk?: number;
  cuSeqlensQ?: readonly number[];
  cuSeqlensK?: readonly number[];
}): SeqSpan[] {
  if (opts.cuSeqlensQ !== undefined) {
    const cq = checkCu(opts.cuSeqlensQ, 'cuSeqlensQ');
    const ck = opts.cuSeqlensK === undefined ? cq : checkCu(opts.cuSeqlensK, 'cuSeqlensK');
    if (ck.length !== cq.length)
      fail(
        'E_SHAPE',
        'cuSeqlensK',
        'has a different number of sequences than cuSeqlensQ;',
        ck.length,
        `length ${cq.length}`,
      );
    if (cq[cq.length - 1] === 0)
      fail('E_ARG', 'cuSeqlensQ', 'holds no query token;', cq, 'at least one token (T = 0 is not a call)');
    if (cq.length - 1 > 1 << 20)
      fail('E_LIMIT', 'cuSeqlensQ', 'holds more sequences than one call takes;', cq.length - 1, 'at most 2^20');
    const spans: SeqSpan[] = [];
    for (let n = 0; n + 1 < cq.length; n++)
      spans.push({ qOff: cq[n]!, tq: cq[n + 1]! - cq[n]!, kOff: ck[n]!, tk: ck[n + 1]! - ck[n]! });
    return spans;
  }
  const Tq = checkInt(opts.Tq, 'Tq', { min: 1 });
  const Tk = opts.Tk === undefined ? Tq : checkInt(opts.Tk, 'Tk', { min: 1 });
  return [{ qOff: 0, tq: Tq, kOff: 0, tk: Tk }];
}

/** Checks q/k/v/sinkLogits against the plan and the device limits. */
export function checkInputs(
  ctx: TesseraDevice,
  r: ResolvedAttention,
  t: { q: unknown; k: unknown; v: unknown; sinkLogits?: unknown },
  Tq: number,
  Tk: number,
): { q: GpuTensor; k: GpuTensor; v: GpuTensor; sinkLogits?: GpuTensor } {
  if (t === null || typeof t !== 'object') fail('E_ARG', 'tensors', 'is not an object;', t, '{ q, k, v, o, lse? }');
  const q = checkTensor(t.q, 'q', { rank: 3, shape: [Tq, r.Hq, r.D], dtypes: [r.dtype] });
  const k = checkTensor(t.k, 'k', { rank: 3, shape: [Tk, r.Hkv, r.D], dtypes: [r.dtype] });
  const v = checkTensor(t.v, 'v', { rank: 3, shape: [Tk, r.Hkv, r.Dv], dtypes: [r.dtype] });
  let sinkLogits: GpuTensor | undefined;
  if (r.sinkLogit) {
    if (t.sinkLogits === undefined)
      fail('E_ARG', 'sinkLogits', 'is required with sinkLogit: true;', undefined, `a [${r.Hq}] f32 tensor`);
    sinkLogits = checkTensor(t.sinkLogits, 'sinkLogits', { rank: 1, shape: [r.Hq], dtypes: ['f32'] });
  } else if (t.sinkLogits !== undefined) {
    fail(
      'E_ARG',
      'sinkLogits',
      'was given but the plan has sinkLogit: false;',
      'a tensor',
      'no sinkLogits, or plan with sinkLogit: true',
    );
  }
  checkBindingSize(ctx, q, 'q');
  checkBindingSize(ctx, k, 'k');
  checkBindingSize(ctx, v, 'v');
  return { q, k, v, sinkLogits };
}

/** Checks o `[rows, Hq, Dv]` (outDtype) and the optional lse `[rows, Hq]` f32 against the plan. */
export function checkOutputs(
  ctx: TesseraDevice,
  r: ResolvedAttention,
  t: { o: unknown; lse?: unknown },
  rows: number,
): { o: GpuTensor; lse?: GpuTensor } {
  const o = checkTensor(t.o, 'o', { rank: 3, shape: [rows, r.Hq, r.Dv], dtypes: [r.outDtype] });
  checkBindingSize(ctx, o, 'o');
  if (t.lse === undefined) return { o };
  const lse = checkTensor(t.lse, 'lse', { rank: 2, shape: [rows, r.Hq], dtypes: ['f32'] });
  checkBindingSize(ctx, lse, 'lse');
  return { o, lse };
}
