// NSA block selection, one invocation per (token t, KV head h); scores shared by the GQA group.
// Candidates are the blocks c <= own = pos / BS (pos = t + POSOFF, the row's key position). For a
// visible compressed block (c < (pos+1)/BS) each
// query head of the group contributes its compressed-attention probability
//   p = exp(scale * q[t, hq] . kc[c, h] - lse_cmp[t, hq]);
// a forced block contributes 1.0 per head (own block; with FLA also block 0 and own - 1). The
// score is the sum over the group (FLA: the mean). Top S by insertion (ties: lower block id);
// out[t, h, :] = chosen blocks by descending score, -1 in unused slots.
// Segments (loop-capped adapters, nsa.ts nsaSelectSegments): a dispatch offers only the
// candidates [seg_begin, seg_end); the list is carried in out (ids) and `carry` (scores), read
// back when seg_carry != 0. Candidates still arrive in block order, so ties resolve as unsegmented.
// Scoring, top-S and carry: select_core.wgsl. Needs storage.wgsl, unpack4.wgsl, select_small.wgsl,
// select_core.wgsl and the struct NsaSelectParams (nsa.ts).

@group(0) @binding(0) var<storage, read> q_buf: array<vec4<u32>>;     // [T, Hq, D] in IN_DTYPE
@group(0) @binding(1) var<storage, read> kc: array<vec4<f32>>;        // [NC, Hkv, D] f32
@group(0) @binding(2) var<storage, read> lse_cmp: array<f32>;         // [T, Hq]
@group(0) @binding(3) var<storage, read_write> out: array<i32>;       // [T, Hkv, S]
@group(0) @binding(4) var<uniform> params: NsaSelectParams;
// binding 5: carry (array<f32>, [T, Hkv, S] between segments; optional: bound by plans of several segments)

fn nsa_row(id: u32, t: u32, h: u32) {
  let pos = t + params.POSOFF; // key position of the query row (bottom-right when Tq < Tk)
  nsa_select_row(id, t, h, pos / params.BS, (pos + 1u) / params.BS, 0u);
}
