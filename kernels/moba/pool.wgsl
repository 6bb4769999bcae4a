// Block mean pooling of keys (or values): out[b, h, :] = sum_{j in block b} x[j, h, :] / divisor,
// divisor = the block's real token count (DIV_MODE 0: MoBA gate keys, fla NSA) or the block size
// (DIV_MODE 1: native-sparse-attention's zero-padded last block). Blocks are [b*BS, (b+1)*BS)
// clipped to T. Output f32. One invocation per (block, head, 4 channels).
// Segments (loop-capped adapters, pool.ts poolSegments): a dispatch sums only the tokens
// [seg_begin, seg_end) of each block, continuing from the running sum in `out` when seg_carry != 0;
// the last one (seg_last) divides. The sum runs in the same order as unsegmented, so the result is identical.
// Needs storage.wgsl, unpack4.wgsl and the struct PoolParams (pool.ts).

@group(0) @binding(0) var<storage, read> x_buf: array<vec4<u32>>;      // [T, H, D] in IN_DTYPE
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;  // [NB, H, D] f32
@group(0) @binding(2) var<uniform> params: PoolParams;

override WG: u32 = 64;
override IN_DTYPE: u32 = 0;
override DIV_MODE: u32 = 0;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let id = (wg.x + wg.y * nwg.x) * WG + lid;
  let D4 = params.D / 4u;
  if (id >= params.NB * params.H * D4) {
    return;
  }
  let c = id % D4;
  let bh = id / D4;
  let h = bh % params.H;
  let b = bh / params.H;
  let j0 = b * params.BS;
  let j1 = min(j0 + params.BS, params.T);
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
