// K/V loads for gather.wgsl main_cpu without subgroups: every lane loads all 4 keys itself.
// Column i = dims [4c, 4c + 4) of key row0 + i (clamped to `last`).
fn share_k(row0: u32, last: u32, h: u32, c: u32, lane: u32) -> mat4x4<f32> {
  let s = params.Hkv * D;
  let e = h * D + 4u * c;
  return mat4x4<f32>(ld_k(min(row0, last) * s + e), ld_k(min(row0 + 1u, last) * s + e), ld_k(min(row0 + 2u, last) * s + e), ld_k(min(row0 + 3u, last) * s + e));
}

fn share_v(row0: u32, last: u32, h: u32, c: u32, lane: u32) -> mat4x4<f32> {
  let s = params.Hkv * DV;
  let e = h * DV + 4u * c;
  return mat4x4<f32>(ld_v(min(row0, last) * s + e), ld_v(min(row0 + 1u, last) * s + e), ld_v(min(row0 + 2u, last) * s + e), ld_v(min(row0 + 3u, last) * s + e));
}
