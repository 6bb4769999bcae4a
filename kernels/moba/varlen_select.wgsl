// MoBA gate and block selection of a ragged batch in one dispatch: select.wgsl per query row of
// every sequence (prefill: query i of a sequence sits at its key position i). Row (t, hq) of the
// batch belongs to the sequence s with the last first token <= t (table `seqs`, see
// varlen_pool.wgsl); its own block is (t - first token) / BS, its candidates the complete blocks
// before it, gated against s's block means (global blocks first block + b of gate_keys), and its
// list is written to sel[row] in block ids of the sequence (what the attention core's batch table
// resolves against the sequence's first key row). Segments (seg_*) as select.wgsl.
// Needs storage.wgsl, unpack4.wgsl, select_small.wgsl, ragged_table.wgsl, ragged_seq.wgsl, select_core.wgsl and
// MobaSelectParams (Tq = total rows).

@group(0) @binding(0) var<storage, read> q_buf: array<vec4<u32>>;          // [total, Hq, D] in IN_DTYPE
@group(0) @binding(1) var<storage, read> gate_keys: array<vec4<f32>>;      // [NB, Hkv, D] f32
@group(0) @binding(2) var<storage, read_write> sel: array<i32>;            // [total, Hq, K]
@group(0) @binding(3) var<uniform> params: MobaSelectParams;
// binding 4: carry (array<f32>, [total, Hq, K - 1] between segments; optional: bound by plans of several segments)
@group(0) @binding(5) var<storage, read> seqs: array<u32>;

fn moba_gate4(g: u32, h: u32, c: u32) -> vec4<f32> {
  return gate_keys[(g * params.Hkv + h) * (D / 4u) + c];
}

fn moba_row(row: u32, t: u32, h: u32) {
  let s = ragged_seq(t, 4u, 0u);
  let own = (t - ragged_word(s, 4u, 0u)) / params.BS;
  moba_select_row(row, h, own, ragged_word(s, 4u, 2u), own);
}
