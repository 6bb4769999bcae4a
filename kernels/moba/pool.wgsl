// Block mean pooling of keys (or values): out[b, h, :] = sum_{j in block b} x[j, h, :] / divisor,
// divisor = the block's real token count (DIV_MODE 0: MoBA gate keys, fla NSA) or the block size
// (DIV_MODE 1: native-sparse-attention's zero-padded last block). Blocks are [b*BS, (b+1)*BS)
// clipped to T. Output f32. One invocation per (block, head, 4 channels).
// Segments (loop-capped adapters, pool.ts poolSegments): a dispatch sums only the tokens
// [seg_begin, seg_end) of each block, continuing from the running sum in `out` when seg_carry != 0;
// the last one (seg_last) divides. The sum runs in the same order as unsegmented, so the result is identical.
// The summing and dividing is pool_core.wgsl. Needs storage.wgsl, unpack4.wgsl, pool_core.wgsl and
// the struct PoolParams (pool.ts).

@group(0) @binding(0) var<storage, read> x_buf: array<vec4<u32>>;      // [T, H, D] in IN_DTYPE
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;  // [NB, H, D] f32
@group(0) @binding(2) var<uniform> params: PoolParams;

fn pool_cell(id: u32, b: u32, h: u32, c: u32) {
  let j0 = b * params.BS;
  pool_block(id, h, c, j0, min(j0 + params.BS, params.T));
}
