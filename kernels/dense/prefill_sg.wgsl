// K/V sharing for main_cpu with subgroups (SwiftShader: subgroup = the 4 SIMD lanes of one
// workgroup). Lane `lane` loads dims [4c, 4c + 4) of key row0 + lane (4 distinct useful values per
// gather) and subgroupBroadcast hands every lane all 4 keys: column i = key row0 + i.
// Rows past `last` are clamped to it (their probabilities are 0).

fn share_k(row0: u32, last: u32, hk: u32, c: u32, n: u32, lane: u32) -> mat4x4<f32> {
  let mine = ld4_k(k_index(min(row0 + lane, last), hk, c), n);
  return mat4x4<f32>(subgroupBroadcast(mine, 0u), subgroupBroadcast(mine, 1u), subgroupBroadcast(mine, 2u), subgroupBroadcast(mine, 3u));
}

fn share_v(row0: u32, last: u32, hk: u32, c: u32, n: u32, lane: u32) -> mat4x4<f32> {
  let mine = ld4_v(v_index(min(row0 + lane, last), hk, c), n);
  return mat4x4<f32>(subgroupBroadcast(mine, 0u), subgroupBroadcast(mine, 1u), subgroupBroadcast(mine, 2u), subgroupBroadcast(mine, 3u));
}
