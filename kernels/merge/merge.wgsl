// Exact merge of attention partials (o_p, lse_p), p = 0..P-1, over the same rows:
//   m = max_p lse_p;  w_p = exp(lse_p - m);  o = sum_p w_p o_p / sum_p w_p;  lse = m + log(sum_p w_p)
// Partials with lse = -inf carry no weight; a row whose partials are all -inf gives o = 0 and
// lse = -inf. Needs shaders/storage.wgsl and the struct MergeParams (merge.ts, MERGE_PARAMS).
// One workgroup per row (grid folded to 2-D); invocations stride over the row's words.
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

// acc + x as (hi, lo): Knuth's two-sum puts the exact rounding error of hi + x into lo.
fn two_add(acc: vec2<f32>, x: f32) -> vec2<f32> {
  let t = acc.x + x;
  let bp = t - acc.x;
  let err = (acc.x - (t - bp)) + (x - bp);
  return vec2<f32>(t, acc.y + err);
}

// The same on two lanes at once: hi and lo are pairs (16-bit outputs handle two values per word).
fn two_add2(hi: vec2<f32>, x: vec2<f32>) -> array<vec2<f32>, 2> {
  let t = hi + x;
  let bp = t - hi;
  let err = (hi - (t - bp)) + (x - bp);
  return array<vec2<f32>, 2>(t, err);
}

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
  if (any) {
    for (var p = p0; p < p1; p++) {
      let l = lse_parts[p * rows + row];
      if (l > ST_NEG_BIG) {
        s = two_add(s, exp(l - m));
      }
    }
  }
  let stot = s.x + s.y;
  let inv = select(0.0, 1.0 / stot, any);
  if (params.out_state != 0u) {
    for (var d = lid; d < D; d += WG) {
      var acc = vec2<f32>(0.0);
      if (any) {
        if (has_c) {
          acc = vec2<f32>(carry_o[row * 2u * D + d], carry_o[row * 2u * D + D + d]) * fc;
        }
        for (var p = p0; p < p1; p++) {
          let l = lse_parts[p * rows + row];
          if (l > ST_NEG_BIG) {
            acc = two_add(acc, exp(l - m) * o_parts[(p * rows + row) * D + d]);
          }
        }
      }
      // Renormalize (hi, lo) so that hi carries the sum rounded and lo the rest.
      let hi = acc.x + acc.y;
      o_out[row * 2u * D + d] = bitcast<u32>(hi);
      o_out[row * 2u * D + D + d] = bitcast<u32>(acc.y - (hi - acc.x));
    }
    if (lid == 0u) {
      let hi = s.x + s.y;
      lse_out[row * 4u] = select(st_neg_inf(), m, any);
      lse_out[row * 4u + 1u] = hi;
      lse_out[row * 4u + 2u] = s.y - (hi - s.x);
      lse_out[row * 4u + 3u] = 0.0;
    }
    return;
  }
  if (OUT_DTYPE == 0u) {
    for (var d = lid; d < D; d += WG) {
      var acc = vec2<f32>(0.0);
      if (any) {
        if (has_c) {
          acc = vec2<f32>(carry_o[row * 2u * D + d], carry_o[row * 2u * D + D + d]) * fc;
        }
        for (var p = p0; p < p1; p++) {
          let l = lse_parts[p * rows + row];
          if (l > ST_NEG_BIG) {
            acc = two_add(acc, exp(l - m) * o_parts[(p * rows + row) * D + d]);
          }
        }
      }
      o_out[row * D + d] = bitcast<u32>((acc.x + acc.y) * inv);
    }
  } else {
    for (var w = lid; w < D / 2u; w += WG) {
      var hi = vec2<f32>(0.0);
      var lo = vec2<f32>(0.0);
      if (any) {
        if (has_c) {
          let c = row * 2u * D + 2u * w;
          hi = vec2<f32>(carry_o[c], carry_o[c + 1u]) * fc;
          lo = vec2<f32>(carry_o[c + D], carry_o[c + D + 1u]) * fc;
        }
        for (var p = p0; p < p1; p++) {
          let l = lse_parts[p * rows + row];
          if (l > ST_NEG_BIG) {
            let base = (p * rows + row) * D + 2u * w;
            let r = two_add2(hi, exp(l - m) * vec2<f32>(o_parts[base], o_parts[base + 1u]));
            hi = r[0];
            lo += r[1];
          }
        }
      }
      let acc = (hi + lo) * inv;
      o_out[(row * D) / 2u + w] = st_pack_pair(acc.x, acc.y, OUT_DTYPE);
    }
  }
  if (lid == 0u) {
    lse_out[row] = select(st_neg_inf(), m + log(stot), any);
  }
}
