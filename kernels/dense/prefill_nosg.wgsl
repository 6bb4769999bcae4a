// K/V loads for main_cpu without subgroups (compatibility mode, llvmpipe): every lane loads all
// 4 keys itself. Column i = dims [4c, 4c + 4) of key row0 + i (clamped to `last`).

fn share_k(row0: u32, last: u32, hk: u32, c: u32, n: u32, lane: u32) -> mat4x4<f32> {
  return mat4x4<f32>(
    ld4_k(k_index(min(row0, last), hk, c), n),
    ld4_k(k_index(min(row0 + 1u, last), hk, c), n),
    ld4_k(k_index(min(row0 + 2u, last), hk, c), n),
    ld4_k(k_index(min(row0 + 3u, last), hk, c), n));
}

fn share_v(row0: u32, last: u32, hk: u32, c: u32, n: u32, lane: u32) -> mat4x4<f32> {
  return mat4x4<f32>(
    ld4_v(v_index(min(row0, last), hk, c), n),
    ld4_v(v_index(min(row0 + 1u, last), hk, c), n),
    ld4_v(v_index(min(row0 + 2u, last), hk, c), n),
    ld4_v(v_index(min(row0 + 3u, last), hk, c), n));
}
