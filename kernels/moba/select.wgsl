// MoBA gate and block selection, one invocation per query row (t, hq).
// The query at key position pos = t + POSOFF owns block own = pos / BS; the past candidates are
// the complete blocks b < min(own, NBM) (NBM = number of gate keys given). Gate score
// s_b = q . gate_keys[b, h] in f32 (gate keys stored f32, or f16 as the KV cache's page means), no scale. The top (K - 1) past blocks by score (ties: lower
// block id) are kept by insertion into a small private list (K <= SEL_MAX, shaders/select_small.wgsl). Output row:
// sel[row, 0] = own, sel[row, 1..] = past blocks by descending score, -1 in unused slots.
// Segments (loop-capped adapters, moba.ts): a dispatch offers only the candidates
// [seg_begin, seg_end); the list is carried between dispatches in sel (ids) and `carry` (their
// scores), read back when seg_carry != 0. Candidates still arrive in block order, so ties resolve as unsegmented.
// Gate, top-k and carry: select_core.wgsl. Needs storage.wgsl, unpack4.wgsl, select_small.wgsl,
// select_core.wgsl and the struct MobaSelectParams (moba.ts).

@group(0) @binding(0) var<storage, read> q_buf: array<vec4<u32>>;          // [Tq, Hq, D] in IN_DTYPE
@group(0) @binding(1) var<storage, read> gate_keys: array<vec4<u32>>;      // [NBM, Hkv, D] in MEANS_DTYPE
@group(0) @binding(2) var<storage, read_write> sel: array<i32>;            // [Tq, Hq, K]
@group(0) @binding(3) var<uniform> params: MobaSelectParams;
// binding 4: carry (array<f32>, [Tq, Hq, K - 1] between segments; optional: bound by plans of several segments)

override MEANS_DTYPE: u32 = 0;

fn moba_gate4(g: u32, h: u32, c: u32) -> vec4<f32> {
  let e = (g * params.Hkv + h) * D + 4u * c;
  return st_unpack4(gate_keys[st_vec4_index(e, MEANS_DTYPE)], e, MEANS_DTYPE);
}

fn moba_row(row: u32, t: u32, h: u32) {
  let pos = i32(t) + params.POSOFF;
  if (pos < 0) {
    for (var i = 0u; i < params.K; i++) {
      sel[row * params.K + i] = -1;
    }
    return;
  }
  let own = u32(pos) / params.BS;
  moba_select_row(row, h, own, 0u, min(own, params.NBM));
}
