/**
 * Linear-attention ops on the shared scan (`scan.ts`): causal linear attention (with or without
 * the normaliser), simple GLA (scalar log-decay per head and token, or constant per head:
 * retention and lightning attention presets) and GLA (per-key-channel log-decay).
 * Each op has a `plan*` (plan once, run many) and a convenience call (plan, run, submit, wait).
 */
import { ctxOf, type DeviceLike } from '../../src/gpu/device.js';
import { checkTensor, isFloatDType, type FloatDType, type GpuTensor } from '../../src/tensor.js';
import { runOnce } from '../../src/plan.js';
import {
  checkGateValues,
  planLinearScan,
  type LinearScanOptions,
  type LinearScanPlan,
  type LinearScanTensors,
  type ScanMode,
} from './scan.js';
import { lightningGamma, retentionGamma } from './reference.js';

/** Options every op shares. */
export interface LinearOpOptions {
  /** Query/key heads. */
  H: number;
  /** Key dim (1..256). */
  K: number;
  /** Value dim. */
  V: number;
  /** Tokens of one sequence; or `cuSeqlens` `[N+1]` for a ragged batch. */
  T?: number;
  cuSeqlens?: readonly number[];
  /** Default `K^-1/2`. */
  scale?: number;
  /** q/k storage (default f32); v defaults to it, o to v's. */
  dtype?: FloatDType;
  vDtype?: FloatDType;
  outDtype?: FloatDType;
  /** 'chunk' | 'recurrent' | 'auto' (default: recurrent when every sequence has <= 64 tokens). */
  mode?: ScanMode;
  /** Size the segments for this loop cap (lower than the device's only): see {@link LinearScanOptions.loopLimit}. */
  loopLimit?: number;
}

/** Options of the convenience calls: as the plan's, with the sizes read from the tensors. */
export type ConvenienceOptions<O> = Partial<O> & {
  /** Read g and beta back and reject NaN, positive log-gates, beta out of range (default true). */
  checkValues?: boolean;
};

/**
 * @internal Plans, checks values (optional), runs, submits and waits, with H, HV, K, V, T read
 * from the tensors. The op convenience calls are thin wrappers of this.
 *
 * @example
 * await runConvenience(dev, { q, k, v, g, beta, o }, { gate: 'scalar', delta: true, op: 'gated_delta_rule' }, true);
 */
export async function runConvenience(
  device: DeviceLike,
  t: LinearScanTensors,
  base: Omit<LinearScanOptions, 'H' | 'K' | 'V'> & { HV?: number },
  checkValues: boolean,
  betaMax = 1,
): Promise<void> {
  const ctx = ctxOf(device);
  const q = checkTensor(t?.q, 'q', { rank: 3 });
  const v = checkTensor(t.v, 'v', { rank: 3 });
  const [T, H, K] = q.shape as [number, number, number];
  const [, HV, V] = v.shape as [number, number, number];
  const dtype = (base.dtype ?? (isFloatDType(q.dtype) ? q.dtype : 'f32')) as FloatDType;
  const vDtype = (base.vDtype ?? (isFloatDType(v.dtype) ? v.dtype : dtype)) as FloatDType;
  const outDtype = (base.outDtype ?? (t.o && isFloatDType(t.o.dtype) ? t.o.dtype : vDtype)) as FloatDType;
  const plan = await planLinearScan(ctx, {
    ...base,
    H,
    HV: base.HV ?? HV,
    K,
    V,
    T: base.cuSeqlens ? undefined : T,
    dtype,
    vDtype,
    outDtype,
  });
  try {
    plan.checkTensors(t);
    if (checkValues) await checkGateValues(ctx, { g: t.g, beta: t.beta }, { betaMax });
    await runOnce(ctx, plan, t, plan.options.op);
  } finally {
    plan.dispose();
  }
}

export interface LinearAttnOptions extends LinearOpOptions {
  /** Divide by `scale q_t . z_t + 1e-10`, `z_t = z_0 + sum_{s<=t} k_s` (default false, as fla's naive reference). */
  normalize?: boolean;
}

/** Tensors of the ungated ops: q, k `[T, H, K]`, v, o `[T, H, V]`, states `[N, H, K, V]` f32. */
export interface LinearAttnTensors {
  q: GpuTensor;
  k: GpuTensor;
  v: GpuTensor;
  o: GpuTensor;
  initialState?: GpuTensor;
  finalState?: GpuTensor;
  /** Normaliser state `[N, H, K]` f32 (normalize only). */
  z0?: GpuTensor;
  zt?: GpuTensor;
}

/**
 * Plans causal linear attention: `S_t = S_{t-1} + k_t v_t^T`, `o_t = scale S_t^T q_t`.
 *
 * @example
 * const plan = await planLinearAttn(dev, { H: 2, K: 64, V: 64, T: 4096 });
 * plan.run(encoder, { q, k, v, o, finalState });
 */
export function planLinearAttn(device: DeviceLike, opts: LinearAttnOptions): Promise<LinearScanPlan> {
  return planLinearScan(device, { ...opts, gate: 'none', delta: false, op: 'linear_attn' });
}

/**
 * Causal linear attention (plan, run, submit, wait). Sizes come from the tensors.
 *
 * @example
 * await linearAttn(dev, { q, k, v, o, finalState }, { normalize: true });
 */
export function linearAttn(
  device: DeviceLike,
  t: LinearAttnTensors,
  opts: ConvenienceOptions<LinearAttnOptions> = {},
): Promise<void> {
  return runConvenience(device, t, { ...opts, gate: 'none', delta: false, op: 'linear_attn' }, false);
}

export interface SimpleGlaOptions extends LinearOpOptions {
  /** Value heads (default H): gates and v have HV heads. */
  HV?: number;
  /** Constant per-head log-decays `[HV]` instead of a gate tensor (see retentionGamma, lightningGamma). */
  gamma?: ArrayLike<number>;
}

/** Tensors of simple GLA: as linear attention plus `g` `[T, HV]` f32 log-decay (unless `gamma`). */
export interface SimpleGlaTensors extends Omit<LinearAttnTensors, 'z0' | 'zt'> {
  g?: GpuTensor;
}

/**
 * Plans simple GLA: `S_t = e^{g_t} S_{t-1} + k_t v_t^T` with a scalar log-decay per head and
 * token (`g [T, HV]`), or constant per head (`gamma`).
 *
 * @example
 * const plan = await planSimpleGla(dev, { H: 4, K: 64, V: 64, T: 8192 });
 * plan.run(encoder, { q, k, v, g, o, finalState });
 */
export function planSimpleGla(device: DeviceLike, opts: SimpleGlaOptions): Promise<LinearScanPlan> {
  return planLinearScan(device, { ...opts, gate: opts.gamma ? 'constant' : 'scalar', delta: false, op: 'simple_gla' });
}

/**
 * Simple GLA (plan, run, submit, wait).
 *
 * @example
 * await simpleGla(dev, { q, k, v, g, o });
 * await simpleGla(dev, { q, k, v, o }, { gamma: retentionGamma(H) }); // RetNet
 */
export function simpleGla(
  device: DeviceLike,
  t: SimpleGlaTensors,
  opts: ConvenienceOptions<SimpleGlaOptions> = {},
): Promise<void> {
  return runConvenience(
    device,
    t,
    { ...opts, gate: opts.gamma ? 'constant' : 'scalar', delta: false, op: 'simple_gla' },
    opts.checkValues ?? true,
  );
}

/**
 * Retention (RetNet) preset of simple GLA: `gamma_h = log(1 - 2^{-5-h})` (fla's definition).
 *
 * @example
 * const plan = await planSimpleGla(dev, { H, K, V, T, ...retentionPreset(H) });
 */
export function retentionPreset(H: number): { gamma: Float64Array } {
  return { gamma: retentionGamma(H) };
}

/**
 * Lightning attention (MiniMax-01) preset of simple GLA. `formula: 'fla'` (default) is fla's
 * `lightning_attn`: `gamma_h = -(8/H)(1 - layer/layers) h`, with the usual `K^-1/2` scale.
 * `formula: 'minimax'` reproduces MiniMax's own code: `gamma_h = -2^{-8(h+1)/H} (1 - layer/(layers-1+1e-5) + 1e-5)`
 * and `scale = 1` (its q, k, v are SiLU features, blocks of 256, no scale).
 *
 * @example
 * const plan = await planSimpleGla(dev, { H, K, V, T, ...lightningPreset(H, { layer: 3, layers: 80, formula: 'minimax' }) });
 */
export function lightningPreset(
  H: number,
  opts: { layer?: number; layers?: number; formula?: 'fla' | 'minimax' } = {},
): { gamma: Float64Array; scale?: number } {
  const gamma = lightningGamma(H, opts);
  return opts.formula === 'minimax' ? { gamma, scale: 1 } : { gamma };
}

export interface GlaOptions extends LinearOpOptions {
  HV?: number;
}

/** Tensors of GLA: `g` `[T, HV, K]` f32 per-channel log-decay. */
export interface GlaTensors extends Omit<LinearAttnTensors, 'z0' | 'zt'> {
  g: GpuTensor;
}

/**
 * Plans GLA: `S_t = Diag(e^{g_t}) S_{t-1} + k_t v_t^T`, g `[T, HV, K]`.
 *
 * @example
 * const plan = await planGla(dev, { H: 2, K: 32, V: 48, T: 300 });
 * plan.run(encoder, { q, k, v, g, o, initialState, finalState });
 */
export function planGla(device: DeviceLike, opts: GlaOptions): Promise<LinearScanPlan> {
  return planLinearScan(device, { ...opts, gate: 'vector', delta: false, op: 'gla' });
}

/**
 * GLA (plan, run, submit, wait).
 *
 * @example
 * await gla(dev, { q, k, v, g, o, finalState });
 */
export function gla(device: DeviceLike, t: GlaTensors, opts: ConvenienceOptions<GlaOptions> = {}): Promise<void> {
  return runConvenience(device, t, { ...opts, gate: 'vector', delta: false, op: 'gla' }, opts.checkValues ?? true);
}
