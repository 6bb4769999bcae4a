// Exact merge of attention partials (o_p, lse_p), p = 0..P-1, over the same rows:
//   m = max_p lse_p;  w_p = exp(lse_p - m);  o = sum_p w_p o_p / sum_p w_p;  lse = m + log(sum_p w_p)
// Partials with lse = -inf carry no weight; a row whose partials are all -inf gives o = 0 and
// lse = -inf. Needs shaders/storage.wgsl and the struct MergeParams (merge.ts, MERGE_PARAMS).
// One workgroup per row (grid folded to 2-D); invocations stride over the row's words.

@group(0) @binding(0) var<storage, read> o_parts: array<f32>;       // [P, rows, D] f32
@group(0) @binding(1) var<storage, read> lse_parts: array<f32>;     // [P, rows] f32, natural log
@group(0) @binding(2) var<storage, read_write> o_out: array<u32>;   // [rows, D] in OUT_DTYPE
@group(0) @binding(3) var<storage, read_write> lse_out: array<f32>; // [rows]
@group(0) @binding(4) var<uniform> params: MergeParams;

override WG: u32 = 64;
override OUT_DTYPE: u32 = 0;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wg.x + wg.y * nwg.x;
  if (row >= params.rows) {
    return;
  }
  let rows = params.rows;
  let D = params.D;
  var m = ST_NEG_BIG;
  var any = false;
  for (var p = 0u; p < params.P; p++) {
    let l = lse_parts[p * rows + row];
    if (l > ST_NEG_BIG) {
      any = true;
      m = max(m, l);
    }
  }
  var s = 0.0;
  if (any) {
    for (var p = 0u; p < params.P; p++) {
      let l = lse_parts[p * rows + row];
      if (l > ST_NEG_BIG) {
        s += exp(l - m);
      }
    }
  }
  let inv = select(0.0, 1.0 / s, any);
  if (OUT_DTYPE == 0u) {
    for (var d = lid; d < D; d += WG) {
      var acc = 0.0;
      if (any) {
        for (var p = 0u; p < params.P; p++) {
          let l = lse_parts[p * rows + row];
          if (l > ST_NEG_BIG) {
            acc += exp(l - m) * o_parts[(p * rows + row) * D + d];
          }
        }
      }
      o_out[row * D + d] = bitcast<u32>(acc * inv);
    }
  } else {
    for (var w = lid; w < D / 2u; w += WG) {
      var acc = vec2<f32>(0.0);
      if (any) {
        for (var p = 0u; p < params.P; p++) {
          let l = lse_parts[p * rows + row];
          if (l > ST_NEG_BIG) {
            let base = (p * rows + row) * D + 2u * w;
            acc += exp(l - m) * vec2<f32>(o_parts[base], o_parts[base + 1u]);
          }
        }
      }
      acc *= inv;
      o_out[(row * D) / 2u + w] = st_pack_pair(acc.x, acc.y, OUT_DTYPE);
    }
  }
  if (lid == 0u) {
    lse_out[row] = select(st_neg_inf(), m + log(s), any);
  }
}
