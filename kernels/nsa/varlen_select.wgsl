// NSA block selection of a ragged batch in one dispatch: select.wgsl per (token t, KV head h) of
// every sequence (prefill: token i of a sequence sits at key position i). Token t belongs to the
// sequence with the last first token <= t (table `seqs`: word 0 = n, then [first token, length,
// first block, 0] per sequence, kernels/moba/ragged_pool.ts); its compressed keys are the rows
// first block + c of kc, and its chosen blocks are written in block ids of the sequence.
// Segments (seg_*) as in select.wgsl (POSOFF unused).
// Needs storage.wgsl, unpack4.wgsl, select_small.wgsl, ragged_table.wgsl, ragged_seq.wgsl, select_core.wgsl and the
// struct NsaSelectParams (T = total).

@group(0) @binding(0) var<storage, read> q_buf: array<vec4<u32>>;     // [T, Hq, D] in IN_DTYPE
@group(0) @binding(1) var<storage, read> kc: array<vec4<f32>>;        // [NC, Hkv, D] f32
@group(0) @binding(2) var<storage, read> lse_cmp: array<f32>;         // [T, Hq]
@group(0) @binding(3) var<storage, read_write> out: array<i32>;       // [T, Hkv, S]
@group(0) @binding(4) var<uniform> params: NsaSelectParams;
// binding 5: carry (array<f32>, [T, Hkv, S] between segments; optional: bound by plans of several segments)
@group(0) @binding(6) var<storage, read> seqs: array<u32>;

fn nsa_row(id: u32, t: u32, h: u32) {
  let s = ragged_seq(t, 4u, 0u);
  let pos = t - ragged_word(s, 4u, 0u);
  nsa_select_row(id, t, h, pos / params.BS, (pos + 1u) / params.BS, ragged_word(s, 4u, 2u));
}
