// Block pooling of a ragged batch in one dispatch (MoBA's gate keys, NSA's compressed keys and
// values): pool.wgsl per block, with the blocks of every sequence numbered one after another
// (blocks never span two sequences); DIV_MODE as in pool.wgsl. The table `seqs`
// (u32, written once at plan time by varlen.ts): word 0 = n non-empty sequences, then 4 words per
// sequence [first token, length, first block, 0]; the first blocks increase. Global block g of
// sequence s (the last with first block <= g) covers tokens [t0 + b * BS, min(t0 + (b + 1) * BS,
// t0 + len)) with b = g - first block. out is [NB, H, D] f32 over all NB blocks of the batch.
// Segments (seg_begin / seg_end / seg_carry / seg_last) as in pool.wgsl. Needs storage.wgsl,
// unpack4.wgsl, ragged_table.wgsl, ragged_seq.wgsl, pool_core.wgsl and PoolParams.

@group(0) @binding(0) var<storage, read> x_buf: array<vec4<u32>>;      // [total, H, D] in IN_DTYPE
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;  // [NB, H, D] f32
@group(0) @binding(2) var<uniform> params: PoolParams;
@group(0) @binding(3) var<storage, read> seqs: array<u32>;

fn pool_cell(id: u32, g: u32, h: u32, c: u32) {
  let sq = ragged_seq(g, 4u, 2u);
  let t0 = ragged_word(sq, 4u, 0u);
  let j0 = t0 + (g - ragged_word(sq, 4u, 2u)) * params.BS;
  pool_block(id, h, c, j0, min(j0 + params.BS, t0 + ragged_word(sq, 4u, 1u)));
}
