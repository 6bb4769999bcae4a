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
@group(0) @binding(4) var<storage, read_write> carry: array<f32>;         // [Tq, Hq, K - 1] between segments

override WG: u32 = 64;
override IN_DTYPE: u32 = 0;
override D: u32 = 64;
override MEANS_DTYPE: u32 = 0;

fn moba_gate4(g: u32, h: u32, c: u32) -> vec4<f32> {
  let e = (g * params.Hkv + h) * D + 4u * c;
  return st_unpack4(gate_keys[st_vec4_index(e, MEANS_DTYPE)], e, MEANS_DTYPE);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = (wg.x + wg.y * nwg.x) * WG + lid;
  if (row >= params.Tq * params.Hq) {
    return;
  }
  let t = row / params.Hq;
  let h = (row % params.Hq) / (params.Hq / params.Hkv);
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
