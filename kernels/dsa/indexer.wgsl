// DSA lightning indexer (DeepSeek-V3.2): for query rows t in [T0, T0 + rows) and keys s < Tk,
//   I[t, s] = sum_j w[t, j] * ReLU(qI[t, j] . kI[s])      (s <= t + POSOFF, else -inf)
// with HI index heads j, one shared index key per token, weights that may be negative.
// scores[(t - T0), s] in f32, the layout the top-k kernel takes ([rows, n]). One invocation per
// (row, 4 consecutive keys). Segments (loop-capped adapters, dsa.ts indexerSegments): a dispatch
// sums only the index heads [seg_begin, seg_end), continuing from the partial sum in `scores` when
// seg_carry != 0
// (the same order of additions as unsegmented); the scoring is indexer_core.wgsl.
// Needs storage.wgsl, unpack4.wgsl, indexer_core.wgsl and the struct IndexerParams (dsa.ts).

@group(0) @binding(0) var<storage, read> qi_buf: array<vec4<u32>>;   // [Tq, HI, DI] in IN_DTYPE
@group(0) @binding(1) var<storage, read> ki_buf: array<vec4<u32>>;   // [Tk, DI] in IN_DTYPE
@group(0) @binding(2) var<storage, read> w_buf: array<u32>;          // [Tq, HI] in IN_DTYPE
@group(0) @binding(3) var<storage, read_write> scores: array<f32>;   // [rows, Tk]
@group(0) @binding(4) var<uniform> params: IndexerParams;

fn dsa_cell(tl: u32, s0: u32) {
  let t = params.T0 + tl;
  let sc = vec4<u32>(s0, min(s0 + 1u, params.Tk - 1u), min(s0 + 2u, params.Tk - 1u), min(s0 + 3u, params.Tk - 1u));
  dsa_index4(t, tl * params.Tk, s0, sc, i32(t) + params.POSOFF); // lim = last visible key
}
