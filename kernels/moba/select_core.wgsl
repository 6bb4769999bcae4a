// MoBA gate and block selection of one query row, shared by select.wgsl (one sequence) and
// varlen_select.wgsl (a ragged batch), one invocation per query row (t, hq) of KV head h: the
// entry file's moba_row(row, t, h) finds the row's own block `own`, the global index `blk0` of its
// sequence's first gate key and the number `npast` of past blocks it may gate, then calls
// moba_select_row. The entry also defines moba_gate4(g, h, c) -> vec4<f32>, channels
// 4c..4c+3 of gate key g (global block) for KV head h, from its own gate_keys binding.
// Gate score s_b = q . gate_keys[blk0 + b, h] in f32, no scale, for b in [seg_begin,
// min(npast, seg_end)); the top (K - 1) past blocks by score (ties: lower block id) are kept by
// insertion (shaders/select_small.wgsl) and carried between segments in sel (ids, block ids of the
// sequence) and `carry` (their scores), read back when seg_carry != 0. Output row: sel[row, 0] =
// own, sel[row, 1..] = past blocks by descending score, -1 in unused slots.
// Declares the overrides WG, IN_DTYPE, D and the entry point. Needs storage.wgsl, unpack4.wgsl,
// select_small.wgsl, MobaSelectParams and the entry's bindings q_buf, sel, carry.

override WG: u32 = 64;
override IN_DTYPE: u32 = 0;
override D: u32 = 64;
const MAXD4: u32 = 64u;

var<private> qv: array<vec4<f32>, MAXD4>;

fn moba_select_row(row: u32, h: u32, own: u32, blk0: u32, npast: u32) {
  let K = params.K;
  let D4 = D / 4u;
  for (var c = 0u; c < D4; c++) {
    let e = row * D + 4u * c;
    qv[c] = st_unpack4(q_buf[st_vec4_index(e, IN_DTYPE)], e, IN_DTYPE);
  }
  let KP = K - 1u;
  var cnt = 0u;
  if (params.seg_carry != 0u) {
    for (var i = 0u; i < KP; i++) {
      let id = sel[row * K + 1u + i];
      if (id >= 0) {
        top_b[cnt] = id;
        top_s[cnt] = carry[row * KP + i];
        cnt++;
      }
    }
  }
  for (var b = params.seg_begin; b < min(npast, params.seg_end); b++) {
    var s4 = vec4<f32>(0.0);
    for (var c = 0u; c < D4; c++) {
      s4 += qv[c] * moba_gate4(blk0 + b, h, c);
    }
    let s = (s4.x + s4.y) + (s4.z + s4.w);
    if (KP == 0u) {
      break;
    }
    cnt = sel_offer(s, i32(b), cnt, KP);
  }
  sel[row * K] = i32(own);
  for (var i = 0u; i < KP; i++) {
    sel[row * K + 1u + i] = select(-1, top_b[i], i < cnt);
    if (params.seg_last == 0u) {
      carry[row * KP + i] = top_s[i];
    }
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = (wg.x + wg.y * nwg.x) * WG + lid;
  if (row >= params.Tq * params.Hq) {
    return;
  }
  let t = row / params.Hq;
  moba_row(row, t, (row % params.Hq) / (params.Hq / params.Hkv));
}
