// Shared declarations of the linear-attention / delta-rule kernels (kernels/linear/*.wgsl).
// Needs shaders/storage.wgsl, the struct LinParams (scan.ts, LIN_PARAMS) and the `const KMAX`
// / `const ZMAX` declarations (the private state length, chosen in plan from K).
//
// Op flags (override constants, part of the pipeline key):
//   GATE  0 none | 1 scalar per head and token g[T, HV] | 2 per key channel g[T, HV, K]
//         | 3 constant per head gamma[HV]
//   DELTA the delta rule: u_t = beta_t (v_t - S^T k_t) instead of u_t = v_t
//   NORM  the normaliser of linear attention (z_t = z_{t-1} + k_t, o /= scale q.z + 1e-10); only
//         with GATE = 0 and no DELTA
// Storage dtypes (0 f32, 1 f16, 2 bf16): DT_QK (q, k), DT_V (v), OUT_DT (o).

override DT_QK: u32 = 0u;
override DT_V: u32 = 0u;
override OUT_DT: u32 = 0u;
override GATE: u32 = 0u;
override DELTA: bool = false;
override NORM: bool = false;

// Log-gates are clamped into [GATE_MIN, 0]: -inf gates cannot produce inf - inf, and the
// reference clamps the same way (kernels/linear/reference.ts, GATE_MIN).
const GATE_MIN: f32 = -64.0;
// Chunk length of the parallel form and the sub-chunk the per-channel gates are referenced in.
const CH: u32 = 64u;
const SUB: u32 = 16u;

// A NaN gate stays NaN (the NaN policy: outputs are never silently made finite; plan.run never
// reads gates back, so the kernels must propagate it). Tested on the bits: WGSL lets comparisons
// and clamp assume no NaN.
fn clamp_gate(g: f32) -> f32 {
  let u = bitcast<u32>(g);
  let nan = (u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu) != 0u;
  return select(clamp(g, GATE_MIN, 0.0), g, nan);
}

// Linear workgroup id of a grid folded to 2-D (pipeline.ts grid2d).
fn lin_wg(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wg.x + wg.y * nwg.x;
}

// e^x for x <= 0, accurate to about one rounding near 0, where a per-token decay factor is
// applied thousands of times (the software adapter's exp has a few ulp of biased error there,
// which compounds in the recurrent state): 1 + x(1 + x/2 (1 + x/3 (1 + x/4 (1 + x/5)))) for
// |x| < 1/32 (truncation error below 2^-38), exp(x) elsewhere.
fn exp_decay(x: f32) -> f32 {
  if (x > -0.03125) {
    return 1.0 + x * (1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + x * 0.25 * (1.0 + x * 0.2))));
  }
  return exp(x);
}
