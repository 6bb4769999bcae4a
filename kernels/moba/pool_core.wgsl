// Block mean pooling of one (block, head h, 4 channels c) element, shared by pool.wgsl (one
// sequence) and varlen_pool.wgsl (a ragged batch), one invocation per (block, h, c): the entry
// file's pool_cell(id, block, h, c) finds the block's token rows [j0, j1) of x, then
// pool_block(id, h, c, j0, j1) sums the rows [j0 + seg_begin, min(j0 + seg_end, j1)) into out[id], continuing from the running sum there when seg_carry != 0; the last
// segment (seg_last) divides by the block's real token count (DIV_MODE 0) or BS (DIV_MODE 1).
// Declares the overrides WG, IN_DTYPE, DIV_MODE and the entry point. Needs storage.wgsl,
// unpack4.wgsl, PoolParams and the entry's bindings x_buf, out.

override WG: u32 = 64;
override IN_DTYPE: u32 = 0;
override DIV_MODE: u32 = 0;

fn pool_block(id: u32, h: u32, c: u32, j0: u32, j1: u32) {
  var s = vec4<f32>(0.0);
  if (params.seg_carry != 0u) {
    s = out[id];
  }
  for (var j = j0 + params.seg_begin; j < min(j0 + params.seg_end, j1); j++) {
    let e = (j * params.H + h) * params.D + 4u * c;
    s += st_unpack4(x_buf[st_vec4_index(e, IN_DTYPE)], e, IN_DTYPE);
  }
  if (params.seg_last == 0u) {
    out[id] = s;
    return;
  }
  let div = select(f32(j1 - j0), f32(params.BS), DIV_MODE == 1u);
  out[id] = s / div;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let id = (wg.x + wg.y * nwg.x) * WG + lid;
  let D4 = params.D / 4u;
  if (id >= params.NB * params.H * D4) {
    return;
  }
  let bh = id / D4;
  pool_cell(id, bh / params.H, bh % params.H, id % D4);
}
