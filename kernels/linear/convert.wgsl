// Chunked form, pass 0: q, k `[T, H, K]` and v `[T, HV, V]` from their storage dtypes into f32
// workspaces of vec4 rows (K4 = ceil(K/4), V4 = ceil(V/4) vec4s per row, zero-padded), so that
// every later pass reads whole vec4s. One invocation per row.

@group(0) @binding(0) var<storage, read> Qb: array<u32>;
@group(0) @binding(1) var<storage, read> Kb: array<u32>;
@group(0) @binding(2) var<storage, read> Vb: array<u32>;
@group(0) @binding(3) var<storage, read_write> QC: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> KC: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> VC: array<vec4<f32>>;
@group(0) @binding(6) var<uniform> params: LinParams;

override WG: u32 = 64u;

fn lq(i: u32, n: u32) -> f32 {
  if (i >= n) {
    return 0.0;
  }
  return st_value(Qb[st_word(i, DT_QK)], i, DT_QK);
}
fn lk(i: u32, n: u32) -> f32 {
  if (i >= n) {
    return 0.0;
  }
  return st_value(Kb[st_word(i, DT_QK)], i, DT_QK);
}
fn lv(i: u32, n: u32) -> f32 {
  if (i >= n) {
    return 0.0;
  }
  return st_value(Vb[st_word(i, DT_V)], i, DT_V);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = lin_wg(wg, nwg) * WG + lid;
  let qkRows = params.T * params.H;
  if (row < qkRows) {
    let K = params.K;
    for (var d4 = 0u; d4 < params.K4; d4++) {
      let d = 4u * d4;
      let b = row * K;
      let end = b + K;
      QC[row * params.K4 + d4] = vec4<f32>(lq(b + d, end), lq(b + d + 1u, end), lq(b + d + 2u, end), lq(b + d + 3u, end));
      KC[row * params.K4 + d4] = vec4<f32>(lk(b + d, end), lk(b + d + 1u, end), lk(b + d + 2u, end), lk(b + d + 3u, end));
    }
  } else if (row < qkRows + params.T * params.HV) {
    let r = row - qkRows;
    let V = params.V;
    for (var c4 = 0u; c4 < params.V4; c4++) {
      let c = 4u * c4;
      let b = r * V;
      let end = b + V;
      VC[r * params.V4 + c4] = vec4<f32>(lv(b + c, end), lv(b + c + 1u, end), lv(b + c + 2u, end), lv(b + c + 3u, end));
    }
  }
}
