// DSA lightning indexer over a ragged batch (one dispatch per row chunk, whatever the number of
// sequences): indexer.wgsl for the rows t in [T0, T0 + rows) of the batch, where row t belongs to
// the sequence with the last first token <= t (table `seqs`: word 0 = n, then [first token,
// length] per sequence, varlen.ts) and sits at its position i = t - first token; key s of the
// score row (s < Tk = the longest sequence) is the sequence's token s, visible iff s <= i (so a
// score row never reaches into another sequence: the rest is -inf, written without the dot
// products). Segments as indexer.wgsl.
// Needs storage.wgsl, unpack4.wgsl, ragged_table.wgsl, ragged_seq.wgsl, indexer_core.wgsl and the struct
// IndexerParams (dsa.ts; POSOFF unused).

@group(0) @binding(0) var<storage, read> qi_buf: array<vec4<u32>>;   // [Tq, HI, DI] in IN_DTYPE
@group(0) @binding(1) var<storage, read> ki_buf: array<vec4<u32>>;   // [Tk, DI] in IN_DTYPE
@group(0) @binding(2) var<storage, read> w_buf: array<u32>;          // [Tq, HI] in IN_DTYPE
@group(0) @binding(3) var<storage, read_write> scores: array<f32>;   // [rows, Tk]
@group(0) @binding(4) var<uniform> params: IndexerParams;
@group(0) @binding(5) var<storage, read> seqs: array<u32>;

fn dsa_cell(tl: u32, s0: u32) {
  let t = params.T0 + tl;
  let first = ragged_word(ragged_seq(t, 2u, 0u), 2u, 0u);
  let li = t - first; // last visible key
  if (s0 > li) {
    // four keys after the row's position (or past its sequence): -inf without the dot products
    for (var x = 0u; x < 4u; x++) {
      if (s0 + x < params.Tk) {
        scores[tl * params.Tk + s0 + x] = st_neg_inf();
      }
    }
    return;
  }
  // key rows of the batch, clamped to the row's last visible key (the others are masked)
  let sc = first + vec4<u32>(min(s0, li), min(s0 + 1u, li), min(s0 + 2u, li), min(s0 + 3u, li));
  dsa_index4(t, tl * params.Tk, s0, sc, i32(li));
}
