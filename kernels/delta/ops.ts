/**
 * Delta-rule ops on the shared scan (`kernels/linear/scan.ts`): DeltaNet, Gated DeltaNet (with
 * more value heads than key heads, GVA) and KDA. The chunked form uses the WY/UT representation
 * (`kernels/linear/solve.wgsl`); the recurrent form serves decode.
 */
import type { DeviceLike } from '../../src/gpu/device.js';
import type { GpuTensor } from '../../src/tensor.js';
import { planLinearScan, type LinearScanPlan } from '../linear/scan.js';
import { runConvenience, type ConvenienceOptions, type LinearOpOptions } from '../linear/ops.js';

export interface DeltaOptions extends LinearOpOptions {
  /** Value heads (default H), a multiple of H: v, g, beta, o and the state have HV heads. */
  HV?: number;
  /** Accept beta in [0, 2] (fla's `allow_neg_eigval`) in the value check; default [0, 1]. */
  allowNegEigval?: boolean;
}

/** Tensors: q, k `[T, H, K]`; v, o `[T, HV, V]`; beta `[T, HV]` f32; states `[N, HV, K, V]` f32. */
export interface DeltaRuleTensors {
  q: GpuTensor;
  k: GpuTensor;
  v: GpuTensor;
  beta: GpuTensor;
  o: GpuTensor;
  initialState?: GpuTensor;
  finalState?: GpuTensor;
}

/** As {@link DeltaRuleTensors} plus `g`: `[T, HV]` (Gated DeltaNet) or `[T, HV, K]` (KDA), f32 log-decay. */
export interface GatedDeltaTensors extends DeltaRuleTensors {
  g: GpuTensor;
}

/**
 * Plans DeltaNet: `S_t = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T`, `o_t = scale S_t^T q_t`.
 * Keys are used as given (L2-normalise them first, as fla's callers do).
 *
 * @example
 * const plan = await planDeltaRule(dev, { H: 2, K: 64, V: 64, T: 4096 });
 * plan.run(encoder, { q, k, v, beta, o, finalState });
 */
export function planDeltaRule(device: DeviceLike, opts: DeltaOptions): Promise<LinearScanPlan> {
  return planLinearScan(device, { ...opts, gate: 'none', delta: true, op: 'delta_rule' });
}

/**
 * DeltaNet (plan, run, submit, wait). Sizes come from the tensors.
 *
 * @example
 * await deltaRule(dev, { q, k, v, beta, o, initialState, finalState });
 */
export function deltaRule(
  device: DeviceLike,
  t: DeltaRuleTensors,
  opts: ConvenienceOptions<DeltaOptions> = {},
): Promise<void> {
  return runDelta(device, t, opts, 'none', 'delta_rule');
}

/**
 * Plans Gated DeltaNet (Qwen3-Next): `S_t = e^{g_t} (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T`,
 * g `[T, HV]`. HV may exceed H (GVA).
 *
 * @example
 * const plan = await planGatedDeltaRule(dev, { H: 16, HV: 32, K: 128, V: 128, T: 8192 });
 * plan.run(encoder, { q, k, v, g, beta, o, finalState });
 */
export function planGatedDeltaRule(device: DeviceLike, opts: DeltaOptions): Promise<LinearScanPlan> {
  return planLinearScan(device, { ...opts, gate: 'scalar', delta: true, op: 'gated_delta_rule' });
}

/**
 * Gated DeltaNet (plan, run, submit, wait).
 *
 * @example
 * await gatedDeltaRule(dev, { q, k, v, g, beta, o, initialState: s, finalState: s }); // decode in place
 */
export function gatedDeltaRule(
  device: DeviceLike,
  t: GatedDeltaTensors,
  opts: ConvenienceOptions<DeltaOptions> = {},
): Promise<void> {
  return runDelta(device, t, opts, 'scalar', 'gated_delta_rule');
}

/**
 * Plans KDA (Kimi Delta Attention): `S_t = (I - beta_t k_t k_t^T) Diag(e^{g_t}) S_{t-1} + beta_t k_t v_t^T`,
 * g `[T, HV, K]` per key channel.
 *
 * @example
 * const plan = await planKda(dev, { H: 32, K: 128, V: 128, T: 8192 });
 * plan.run(encoder, { q, k, v, g, beta, o, finalState });
 */
export function planKda(device: DeviceLike, opts: DeltaOptions): Promise<LinearScanPlan> {
  return planLinearScan(device, { ...opts, gate: 'vector', delta: true, op: 'kda' });
}

/**
 * KDA (plan, run, submit, wait).
 *
 * @example
 * await kda(dev, { q, k, v, g, beta, o, finalState });
 */
export function kda(
  device: DeviceLike,
  t: GatedDeltaTensors,
  opts: ConvenienceOptions<DeltaOptions> = {},
): Promise<void> {
  return runDelta(device, t, opts, 'vector', 'kda');
}

/** The one-call form of a delta-rule op: values checked unless `checkValues: false`, beta up to 2 with `allowNegEigval`. */
function runDelta(
  device: DeviceLike,
  t: DeltaRuleTensors,
  opts: ConvenienceOptions<DeltaOptions>,
  gate: 'none' | 'scalar' | 'vector',
  op: 'delta_rule' | 'gated_delta_rule' | 'kda',
): Promise<void> {
  return runConvenience(
    device,
    t,
    { ...opts, gate, delta: true, op },
    opts.checkValues ?? true,
    opts.allowNegEigval ? 2 : 1,
  );
}
