/**
 * Float64 CPU references for the linear-attention family (linear attention with and without the
 * normaliser, simple GLA / retention / lightning, GLA) and the delta family (DeltaNet, Gated
 * DeltaNet, KDA). They are token-by-token recurrences: the definition of the math that every GPU
 * form (recurrent and chunked) is tested against.
 *
 * One general recurrence covers all of them. Per sequence and value head `hv` (qk head
 * `h = floor(hv / (HV / H))`), state `S` in R^{K x V} (and `z` in R^K with the normaliser):
 *
 *   a_t = exp(clamp(g_t, GATE_MIN, 0))            scalar (per head) or per key channel, 1 without gate
 *   S  <- Diag(a_t) S                              (decay first, as fla's naive references do)
 *   u_t = beta_t (v_t - S^T k_t)   with delta,   u_t = v_t without
 *   S  <- S + k_t u_t^T
 *   z  <- Diag(a_t) z + k_t                        (normaliser only; no delta)
 *   o_t = scale S^T q_t                            (/ (scale q_t . z + 1e-10) with the normaliser)
 *
 * Layouts (row-major): q, k `[T, H, K]`; v, o `[T, HV, V]`; g `[T, HV]` (scalar gate) or
 * `[T, HV, K]` (per-key gate); gamma `[HV]` (constant per-head gate); beta `[T, HV]`; states
 * `[N, HV, K, V]` and `[N, HV, K]` (z). Ragged batches: sequences back to back, `cuSeqlens` `[N+1]`.
 */

/** Log-gates are clamped into [GATE_MIN, 0] (by the kernels and by this reference alike). */
export const GATE_MIN = -64;

export type GateMode = 'none' | 'scalar' | 'vector' | 'constant';

export interface LinearScanRefOptions {
  H: number;
  /** Value heads (default H); a multiple of H. */
  HV?: number;
  K: number;
  V: number;
  /** Default `K^-1/2`. */
  scale?: number;
  /** Ragged batch boundaries `[N+1]` (default one sequence of all tokens). */
  cuSeqlens?: readonly number[];
  gate: GateMode;
  delta: boolean;
  normalize?: boolean;
}

export interface LinearScanRefInputs {
  q: ArrayLike<number>;
  k: ArrayLike<number>;
  v: ArrayLike<number>;
  /** `[T, HV]` (scalar), `[T, HV, K]` (vector) or `[HV]` (constant). */
  g?: ArrayLike<number>;
  beta?: ArrayLike<number>;
  h0?: ArrayLike<number>;
  z0?: ArrayLike<number>;
}

export interface LinearScanRefResult {
  o: Float64Array;
  ht: Float64Array;
  zt?: Float64Array;
}

const clampGate = (g: number) => Math.min(0, Math.max(GATE_MIN, g));

/**
 * The general recurrence (see the file header). `T` is `v.length / (HV * V)`.
 *
 * @example
 * const { o, ht } = linearScanReference({ q, k, v, g }, { H: 2, K: 64, V: 64, gate: 'scalar', delta: true });
 */
export function linearScanReference(x: LinearScanRefInputs, opts: LinearScanRefOptions): LinearScanRefResult {
  const { H, K, V } = opts;
  const HV = opts.HV ?? H;
  const T = x.v.length / (HV * V);
  const scale = opts.scale ?? 1 / Math.sqrt(K);
  const cu = opts.cuSeqlens ?? [0, T];
  const N = cu.length - 1;
  const norm = !!opts.normalize;
  const o = new Float64Array(T * HV * V);
  const ht = new Float64Array(N * HV * K * V);
  const zt = norm ? new Float64Array(N * HV * K) : undefined;
  const S = new Float64Array(K * V);
  const z = new Float64Array(K);
  const a = new Float64Array(K);
  const kS = new Float64Array(V);
  for (let n = 0; n < N; n++) {
    for (let hv = 0; hv < HV; hv++) {
      const h = Math.floor(hv / (HV / H));
      const sb = (n * HV + hv) * K * V;
      for (let i = 0; i < K * V; i++) S[i] = x.h0 ? x.h0[sb + i]! : 0;
      for (let i = 0; i < K; i++) z[i] = x.z0 ? x.z0[(n * HV + hv) * K + i]! : 0;
      for (let t = cu[n]!; t < cu[n + 1]!; t++) {
        const qb = (t * H + h) * K;
        const vb = (t * HV + hv) * V;
        for (let d = 0; d < K; d++) {
          const g =
            opts.gate === 'none'
              ? 0
              : opts.gate === 'scalar'
                ? x.g![t * HV + hv]!
                : opts.gate === 'constant'
                  ? x.g![hv]!
                  : x.g![(t * HV + hv) * K + d]!;
          a[d] = Math.exp(clampGate(g));
        }
        for (let d = 0; d < K; d++) for (let e = 0; e < V; e++) S[d * V + e]! *= a[d]!;
        if (opts.delta) {
          const beta = x.beta![t * HV + hv]!;
          kS.fill(0);
          for (let d = 0; d < K; d++) {
            const kd = x.k[qb + d]!;
            for (let e = 0; e < V; e++) kS[e]! += kd * S[d * V + e]!;
          }
          for (let e = 0; e < V; e++) kS[e] = beta * (x.v[vb + e]! - kS[e]!);
        } else {
          for (let e = 0; e < V; e++) kS[e] = x.v[vb + e]!;
        }
        for (let d = 0; d < K; d++) {
          const kd = x.k[qb + d]!;
          for (let e = 0; e < V; e++) S[d * V + e]! += kd * kS[e]!;
        }
        let den = 1;
        if (norm) {
          let qz = 0;
          for (let d = 0; d < K; d++) {
            z[d] = a[d]! * z[d]! + x.k[qb + d]!;
            qz += scale * x.q[qb + d]! * z[d]!;
          }
          den = qz + 1e-10;
        }
        for (let e = 0; e < V; e++) {
          let acc = 0;
          for (let d = 0; d < K; d++) acc += x.q[qb + d]! * S[d * V + e]!;
          o[vb + e] = (scale * acc) / den;
        }
      }
      ht.set(S, sb);
      if (zt) zt.set(z, (n * HV + hv) * K);
    }
  }
  return { o, ht, zt };
}

type Common = { H: number; K: number; V: number; scale?: number; cuSeqlens?: readonly number[] };
/** The inputs of one op's reference: q, k, v and the optional initial state h0, plus the named `R` (g, beta, ...). */
type OpInputs<R extends keyof LinearScanRefInputs = never> = Pick<LinearScanRefInputs, 'q' | 'k' | 'v' | 'h0'> &
  Required<Pick<LinearScanRefInputs, R>>;

/**
 * Causal linear attention `S_t = S_{t-1} + k_t v_t^T`, `o_t = scale S_t^T q_t`; with `normalize`
 * divided by `scale q_t . z_t + 1e-10`, `z_t = z_0 + sum k` (fla `naive_recurrent_linear_attn`).
 *
 * @example
 * const { o, ht } = linearAttnReference({ q, k, v }, { H: 2, K: 64, V: 64 });
 */
export function linearAttnReference(
  x: OpInputs & Pick<LinearScanRefInputs, 'z0'>,
  o: Common & { normalize?: boolean },
): LinearScanRefResult {
  return linearScanReference(x, { ...o, gate: 'none', delta: false });
}

/**
 * Simple GLA: scalar log-decay per head and token `g [T, H]` (or a constant `gamma [H]`):
 * `S_t = e^{g_t} S_{t-1} + k_t v_t^T`.
 *
 * @example
 * const { o, ht } = simpleGlaReference({ q, k, v, g }, { H: 2, K: 64, V: 64 });
 */
export function simpleGlaReference(
  x: OpInputs & Pick<LinearScanRefInputs, 'g'> & { gamma?: ArrayLike<number> },
  o: Common,
): LinearScanRefResult {
  if (x.gamma) return linearScanReference({ ...x, g: x.gamma }, { ...o, gate: 'constant', delta: false });
  return linearScanReference(x, { ...o, gate: 'scalar', delta: false });
}

/**
 * GLA: per-key log-decay `g [T, H, K]`: `S_t = Diag(e^{g_t}) S_{t-1} + k_t v_t^T`.
 *
 * @example
 * const { o, ht } = glaReference({ q, k, v, g }, { H: 2, K: 32, V: 48 });
 */
export function glaReference(x: OpInputs<'g'>, o: Common): LinearScanRefResult {
  return linearScanReference(x, { ...o, gate: 'vector', delta: false });
}

/**
 * DeltaNet: `S_t = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T` (layout `[T, H, *]`).
 *
 * @example
 * const { o, ht } = deltaRuleReference({ q, k, v, beta }, { H: 2, K: 64, V: 64 });
 */
export function deltaRuleReference(x: OpInputs<'beta'>, o: Common & { HV?: number }): LinearScanRefResult {
  return linearScanReference(x, { ...o, gate: 'none', delta: true });
}

/**
 * Gated DeltaNet: `S_t = e^{g_t} (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T`, g `[T, HV]`,
 * beta `[T, HV]`, HV a multiple of H (GVA).
 *
 * @example
 * const { o, ht } = gatedDeltaRuleReference({ q, k, v, g, beta }, { H: 2, HV: 4, K: 64, V: 64 });
 */
export function gatedDeltaRuleReference(x: OpInputs<'g' | 'beta'>, o: Common & { HV?: number }): LinearScanRefResult {
  return linearScanReference(x, { ...o, gate: 'scalar', delta: true });
}

/**
 * KDA: `S_t = (I - beta_t k_t k_t^T) Diag(e^{g_t}) S_{t-1} + beta_t k_t v_t^T`, g `[T, HV, K]`.
 *
 * @example
 * const { o, ht } = kdaReference({ q, k, v, g, beta }, { H: 2, K: 64, V: 64 });
 */
export function kdaReference(x: OpInputs<'g' | 'beta'>, o: Common & { HV?: number }): LinearScanRefResult {
  return linearScanReference(x, { ...o, gate: 'vector', delta: true });
}

/**
 * fla's retention decays: `gamma_h = log(1 - 2^{-5-h})`.
 *
 * @example
 * const { o } = simpleGlaReference({ q, k, v, gamma: retentionGamma(4) }, { H: 4, K: 64, V: 64 });
 */
export function retentionGamma(H: number): Float64Array {
  return Float64Array.from({ length: H }, (_, h) => Math.log(1 - 2 ** (-5 - h)));
}

/**
 * Lightning attention decays. `'fla'` (fla's `lightning_attn`): `gamma_h = -(8/H)(1 - l/L) h`
 * (head 0 has no decay). `'minimax'` (MiniMax-01's own code): `gamma_h = -s_h`,
 * `s_h = 2^{-8(h+1)/H} (1 - l/(L-1+1e-5) + 1e-5)`, used with `scale = 1`.
 *
 * @example
 * const gamma = lightningGamma(64, { layer: 3, layers: 80, formula: 'minimax' });
 */
export function lightningGamma(
  H: number,
  opts: { layer?: number; layers?: number; formula?: 'fla' | 'minimax' } = {},
): Float64Array {
  const l = opts.layer ?? 0;
  const L = opts.layers ?? 1;
  if ((opts.formula ?? 'fla') === 'minimax') {
    return Float64Array.from({ length: H }, (_, h) => -(2 ** ((-8 * (h + 1)) / H)) * (1 - l / (L - 1 + 1e-5) + 1e-5));
  }
  return Float64Array.from({ length: H }, (_, h) => -(8 / H) * (1 - l / L) * h);
}
