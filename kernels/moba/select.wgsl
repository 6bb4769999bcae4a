// MoBA gate and block selection, one invocation per query row (t, hq).
// The query at key position pos = t + POSOFF owns block own = pos / BS; the past candidates are
// the complete blocks b < min(own, NBM) (NBM = number of gate keys given). Gate score
// s_b = q . gate_keys[b, h] in f32 (gate keys stored f32, or f16 as the KV cache's page means), no scale. The top (K - 1) past blocks by score (ties: lower
// block id) are kept by insertion into a small private list (K <= SEL_MAX, shaders/select_small.wgsl). Output row:
// sel[row, 0] = own, sel[row, 1..] = past blocks by descending score, -1 in unused slots.
// Segments (loop-capped adapters, moba.ts): a dispatch offers only the candidates
// [seg_begin, seg_end); the list is carried between dispatches in sel (ids) and `carry` (their
// scores), read back when seg_carry != 0. Candidates still arrive in block order, so ties resolve as unsegmented.
// Needs storage.wgsl, unpack4.wgsl and the struct MobaSelectParams (moba.ts).

@group(0) @binding(0) var<storage, read> q_buf: array<vec4<u32>>;          // [Tq, Hq, D] in IN_DTYPE
@group(0) @binding(1) var<storage, read> gate_keys: array<vec4<u32>>;      // [NBM, Hkv, D] in MEANS_DTYPE
@group(0) @binding(2) var<storage, read_write> sel: array<i32>;            // [Tq, Hq, K]
@group(0) @binding(3) var<uniform> params: MobaSelectParams;
// binding 4: carry (array<f32>, [Tq, Hq, K - 1] between segments; optional: bound by plans of several segments)

override WG: u32 = 64;
override IN_DTYPE: u32 = 0;
override D: u32 = 64;
override MEANS_DTYPE: u32 = 0;
const MAXD4: u32 = 64u;

var<private> qv: array<vec4<f32>, MAXD4>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = (wg.x + wg.y * nwg.x) * WG + lid;
  if (row >= params.Tq * params.Hq) {
    return;
  }
  let t = row / params.Hq;
  let hq = row % params.Hq;
  let h = hq / (params.Hq / params.Hkv);
  let K = params.K;
  let D4 = D / 4u;
  let pos = i32(t) + params.POSOFF;
  if (pos < 0) {
    for (var i = 0u; i < K; i++) {
      sel[row * K + i] = -1;
    }
    return;
  }
  let own = u32(pos) / params.BS;
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
  let npast = min(own, params.NBM);
  for (var b = params.seg_begin; b < min(npast, params.seg_end); b++) {
    let base = (b * params.Hkv + h) * D;
    var s4 = vec4<f32>(0.0);
    for (var c = 0u; c < D4; c++) {
      let e = base + 4u * c;
      s4 += qv[c] * st_unpack4(gate_keys[st_vec4_index(e, MEANS_DTYPE)], e, MEANS_DTYPE);
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
