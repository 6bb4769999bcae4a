// Exact merge of attention partials (o_p, lse_p), p = 0..P-1, over the same rows:
//   m = max_p lse_p;  w_p = exp(lse_p - m);  o = sum_p w_p o_p / sum_p w_p;  lse = m + log(sum_p w_p)
// Partials with lse = -inf carry no weight; a row whose partials are all -inf gives o = 0 and
// lse = -inf. Needs shaders/storage.wgsl and the struct MergeParams (merge.ts, MERGE_PARAMS).
// One workgroup per row (grid folded to 2-D); invocations stride over the row's words.
//
// Segments (merge.ts, for Mesa's per-invocation loop cap): one dispatch merges the parts
// [p0, p0 + P) and, when `carry` is set, one more partial, the f32 result (carry_o, carry_lse) of
// the previous segment. A segment that is not the last writes its result as f32 (`out_f32`) into
// the next segment's carry buffer, so the last one writes the merge of every part.

@group(0) @binding(0) var<storage, read> o_parts: array<f32>;       // [parts, rows, D] f32
@group(0) @binding(1) var<storage, read> lse_parts: array<f32>;     // [parts, rows] f32, natural log
@group(0) @binding(2) var<storage, read_write> o_out: array<u32>;   // [rows, D] in OUT_DTYPE (f32 if out_f32)
@group(0) @binding(3) var<storage, read_write> lse_out: array<f32>; // [rows]
@group(0) @binding(4) var<uniform> params: MergeParams;
@group(0) @binding(5) var<storage, read> carry_o: array<f32>;       // [rows, D] f32 (params.carry)
@group(0) @binding(6) var<storage, read> carry_lse: array<f32>;     // [rows] f32 (params.carry)

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
  let p0 = params.p0;
  let p1 = params.p0 + params.P;
  var lc = st_neg_inf();
  if (params.carry != 0u) {
    lc = carry_lse[row];
  }
  let has_c = lc > ST_NEG_BIG;
  var m = select(ST_NEG_BIG, lc, has_c);
  var any = has_c;
  for (var p = p0; p < p1; p++) {
    let l = lse_parts[p * rows + row];
    if (l > ST_NEG_BIG) {
      any = true;
      m = max(m, l);
    }
  }
  var s = 0.0;
  if (any) {
    if (has_c) {
      s = exp(lc - m);
    }
    for (var p = p0; p < p1; p++) {
      let l = lse_parts[p * rows + row];
      if (l > ST_NEG_BIG) {
        s += exp(l - m);
      }
    }
  }
  let inv = select(0.0, 1.0 / s, any);
  let wc = select(0.0, exp(lc - m), has_c);
  if (OUT_DTYPE == 0u || params.out_f32 != 0u) {
    for (var d = lid; d < D; d += WG) {
      var acc = 0.0;
      if (any) {
        if (has_c) {
          acc = wc * carry_o[row * D + d];
        }
        for (var p = p0; p < p1; p++) {
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
        if (has_c) {
          acc = wc * vec2<f32>(carry_o[row * D + 2u * w], carry_o[row * D + 2u * w + 1u]);
        }
        for (var p = p0; p < p1; p++) {
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
