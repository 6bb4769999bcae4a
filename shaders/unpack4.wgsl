// Four consecutive elements of a float tensor stored as `dt` (0 f32, 1 f16, 2 bf16; see
// storage.wgsl), read through an `array<vec4<u32>>` binding. `e` is the element index of the first
// of the four and must be a multiple of 4. For f32 the word vector is `buf[e / 4]`; for the 16-bit
// dtypes it is `buf[e / 8]` (eight elements), of which the half selected by `e` is returned.
// Use `st_vec4_index(e, dt)` for the index. Needs storage.wgsl.
fn st_vec4_index(e: u32, dt: u32) -> u32 {
  return select(e >> 3u, e >> 2u, dt == 0u);
}

fn st_unpack4(w: vec4<u32>, e: u32, dt: u32) -> vec4<f32> {
  if (dt == 0u) {
    return bitcast<vec4<f32>>(w);
  }
  let hi = ((e >> 2u) & 1u) == 1u;
  let a = select(w.x, w.z, hi);
  let b = select(w.y, w.w, hi);
  return vec4<f32>(st_pair(a, dt), st_pair(b, dt));
}
