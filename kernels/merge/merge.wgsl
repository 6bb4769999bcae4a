// Exact merge of attention partials (o_p, lse_p), p = 0..P-1, over the same rows:
//   m = max_p lse_p;  w_p = exp(lse_p - m);  o = sum_p w_p o_p / sum_p w_p;  lse = m + log(sum_p w_p)
// Partials with lse = -inf carry no weight; a row whose partials are all -inf gives o = 0 and
// lse = -inf. Needs shaders/storage.wgsl and the struct MergeParams (merge.ts, MERGE_PARAMS).
// One workgroup per row (grid folded to 2-D); invocations own pairs of the row's values, and the
// parts' weights are computed WG at a time into workgroup memory (one exp per part and row).
//
// Precision (README.md, "Precision"): both sums are compensated: every addition is an exact
// two-sum whose rounding error goes into a second f32 (`lo`), so a share far below one f32 step
// of the running total (the thin background of a peaked query) still counts, and the error does
// not grow with the number of parts.
//
// Carried state (merge.ts: segments, and `stateIn` / `stateOut` for callers that merge in steps,
// such as streaming over the KV cache): instead of a normalized (o, lse), a step hands the next
// one the unnormalized sums relative to the running max m, each as two f32:
//   state_o [rows, 2, D]: O_hi[d], then O_lo[d]      (O = sum_p w_p o_p, w_p = exp(lse_p - m))
//   state_s [rows, 4]:    m, S_hi, S_lo, 0          (S = sum_p w_p; m = -inf: nothing yet)
// so nothing is normalized or rounded to one f32 between steps. The state is rescaled only when a
// later part's lse exceeds m (exp(m_old - m_new) is applied to O and S alike, so o is unaffected).
// `carry` = read the state from (carry_o, carry_s); `out_state` = write the state into
// (o_out, lse_out) instead of o and lse. P = 0 with `carry` finishes a state into o and lse.

@group(0) @binding(0) var<storage, read> o_parts: array<f32>;       // [parts, rows, D] f32
@group(0) @binding(1) var<storage, read> lse_parts: array<f32>;     // [parts, rows] f32, natural log
@group(0) @binding(2) var<storage, read_write> o_out: array<u32>;   // [rows, D] in OUT_DTYPE, or state_o (out_state)
@group(0) @binding(3) var<storage, read_write> lse_out: array<f32>; // [rows], or state_s (out_state)
@group(0) @binding(4) var<uniform> params: MergeParams;
@group(0) @binding(5) var<storage, read> carry_o: array<f32>;       // state_o (params.carry)
@group(0) @binding(6) var<storage, read> carry_s: array<f32>;       // state_s (params.carry)

override WG: u32 = 64;
override OUT_DTYPE: u32 = 0;

// acc + x as (hi, lo): Knuth's two-sum puts the exact rounding error of hi + x into lo. Every
// step is multiplied by params.one (= 1.0, exact) so that a compiler allowed to reassociate
// (llvmpipe) cannot fold (t - (t - a)) to a and the error to zero.
fn two_add(acc: vec2<f32>, x: f32) -> vec2<f32> {
  let one = params.one;
  let t = (acc.x + x) * one;
  let bp = (t - acc.x) * one;
  let ap = (t - bp) * one;
  let err = ((acc.x - ap) * one + (x - bp)) * one;
  return vec2<f32>(t, acc.y + err);
}

// The same on two lanes: returns (sum, error).
fn two_add2(a: vec2<f32>, x: vec2<f32>) -> array<vec2<f32>, 2> {
  let one = params.one;
  let t = (a + x) * one;
  let bp = (t - a) * one;
  let ap = (t - bp) * one;
  let err = ((a - ap) * one + (x - bp)) * one;
  return array<vec2<f32>, 2>(t, err);
}

// Elements are handled in pairs (2w, 2w + 1): invocation lid owns the pairs w = lid + e * WG,
// e < ceil(D / 2 / WG) <= MAX_E (D <= 1024), so 16-bit outputs pack a pair into one word.
const MAX_E: u32 = 8u;
// Weights of WG parts at a time, computed once per workgroup (one exp per part, not per value).
var<workgroup> wsh: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wg.x + wg.y * nwg.x;
  if (row >= params.rows) {
    return;
  }
  let rows = params.rows;
  let D = params.D;
  let p0 = params.p0;
  let p1 = params.p0 + params.P;
  let E = (D + 2u * WG - 1u) / (2u * WG);
  var mc = ST_NEG_BIG;
  var sc = vec2<f32>(0.0);
  if (params.carry != 0u) {
    mc = carry_s[row * 4u];
    sc = vec2<f32>(carry_s[row * 4u + 1u], carry_s[row * 4u + 2u]);
  }
  let has_c = mc > ST_NEG_BIG;
  var m = select(ST_NEG_BIG, mc, has_c);
  var any = has_c;
  for (var p = p0; p < p1; p++) {
    let l = lse_parts[p * rows + row];
    if (l > ST_NEG_BIG) {
      any = true;
      m = max(m, l);
    }
  }
  // The carried sums, rescaled to the new max (exactly 1 when the max did not move).
  let fc = select(0.0, select(exp(mc - m), 1.0, mc == m), has_c);
  var s = sc * fc;
  var hi: array<vec2<f32>, MAX_E>;
  var lo: array<vec2<f32>, MAX_E>;
  for (var e = 0u; e < E; e++) {
    let d = 2u * (lid + e * WG);
    hi[e] = vec2<f32>(0.0);
    lo[e] = vec2<f32>(0.0);
    if (has_c && d < D) {
      let c = row * 2u * D + d;
      let d1 = min(d + 1u, D - 1u);
      hi[e] = vec2<f32>(carry_o[c], carry_o[row * 2u * D + d1]) * fc;
      lo[e] = vec2<f32>(carry_o[c + D], carry_o[row * 2u * D + D + d1]) * fc;
    }
  }
  for (var c0 = p0; c0 < p1; c0 += WG) {
    let p = c0 + lid;
    var w = 0.0;
    if (p < p1) {
      let l = lse_parts[p * rows + row];
      if (l > ST_NEG_BIG) {
        w = exp(l - m);
      }
    }
    wsh[lid] = w;
    workgroupBarrier();
    let n = min(WG, p1 - c0);
    for (var j = 0u; j < n; j++) {
      let wj = wsh[j];
      s = two_add(s, wj);
      let base = ((c0 + j) * rows + row) * D;
      for (var e = 0u; e < E; e++) {
        let d = 2u * (lid + e * WG);
        // A part with no weight (lse = -inf: it saw no key) is skipped, not multiplied by 0: its o
        // may hold anything, NaN included.
        if (d < D && wj > 0.0) {
          let r = two_add2(hi[e], wj * vec2<f32>(o_parts[base + d], o_parts[base + min(d + 1u, D - 1u)]));
          hi[e] = r[0];
          lo[e] += r[1];
        }
      }
    }
    workgroupBarrier();
  }
  let stot = s.x + s.y;
  let inv = select(0.0, 1.0 / stot, any);
  for (var e = 0u; e < E; e++) {
    let d = 2u * (lid + e * WG);
    if (d >= D) {
      continue;
    }
    let two = d + 1u < D;
    if (params.out_state != 0u) {
      // Renormalize (hi, lo) so that hi carries the sum rounded and lo the rest.
      let h = (hi[e] + lo[e]) * params.one;
      let r = lo[e] - (h - hi[e]) * params.one;
      o_out[row * 2u * D + d] = bitcast<u32>(h.x);
      o_out[row * 2u * D + D + d] = bitcast<u32>(r.x);
      if (two) {
        o_out[row * 2u * D + d + 1u] = bitcast<u32>(h.y);
        o_out[row * 2u * D + D + d + 1u] = bitcast<u32>(r.y);
      }
    } else {
      let v = (hi[e] + lo[e]) * inv;
      if (OUT_DTYPE == 0u) {
        o_out[row * D + d] = bitcast<u32>(v.x);
        if (two) {
          o_out[row * D + d + 1u] = bitcast<u32>(v.y);
        }
      } else {
        o_out[(row * D + d) / 2u] = st_pack_pair(v.x, v.y, OUT_DTYPE);
      }
    }
  }
  if (lid == 0u) {
    if (params.out_state != 0u) {
      let h = (s.x + s.y) * params.one;
      lse_out[row * 4u] = select(st_neg_inf(), m, any);
      lse_out[row * 4u + 1u] = h;
      lse_out[row * 4u + 2u] = s.y - (h - s.x) * params.one;
      lse_out[row * 4u + 3u] = 0.0;
    } else {
      lse_out[row] = select(st_neg_inf(), m + log(stot), any);
    }
  }
}
