// K/V sharing for gather.wgsl main_cpu with subgroups (SwiftShader: the 4-lane workgroup is one
// subgroup). Lane `lane` loads dims [4c, 4c + 4) of key row0 + lane (4 useful values per gather)
// and subgroupBroadcast hands every lane all 4 keys: column i = key row0 + i (clamped to `last`,
// whose probability is then 0).
fn share_k(row0: u32, last: u32, h: u32, c: u32, lane: u32) -> mat4x4<f32> {
  let mine = ld_k((min(row0 + lane, last) * params.Hkv + h) * D + 4u * c);
  return mat4x4<f32>(subgroupBroadcast(mine, 0u), subgroupBroadcast(mine, 1u), subgroupBroadcast(mine, 2u), subgroupBroadcast(mine, 3u));
}

fn share_v(row0: u32, last: u32, h: u32, c: u32, lane: u32) -> mat4x4<f32> {
  let mine = ld_v((min(row0 + lane, last) * params.Hkv + h) * DV + 4u * c);
  return mat4x4<f32>(subgroupBroadcast(mine, 0u), subgroupBroadcast(mine, 1u), subgroupBroadcast(mine, 2u), subgroupBroadcast(mine, 3u));
}
