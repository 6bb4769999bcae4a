// MoBA gate and block selection of a ragged batch in one dispatch: select.wgsl per query row of
// every sequence (prefill: query i of a sequence sits at its key position i). Row (t, hq) of the
// batch belongs to the sequence s with the last first token <= t (table `seqs`, see
// varlen_pool.wgsl); its own block is (t - first token) / BS, its candidates the complete blocks
// before it, gated against s's block means (global blocks first block + b of gate_keys), and its
// list is written to sel[row] in block ids of the sequence (what the attention core's batch table
// resolves against the sequence's first key row). Segments (seg_*) as select.wgsl.
// Needs storage.wgsl, unpack4.wgsl, select_small.wgsl and MobaSelectParams (Tq = total rows).

@group(0) @binding(0) var<storage, read> q_buf: array<vec4<u32>>;          // [total, Hq, D] in IN_DTYPE
@group(0) @binding(1) var<storage, read> gate_keys: array<vec4<f32>>;      // [NB, Hkv, D] f32
@group(0) @binding(2) var<storage, read_write> sel: array<i32>;            // [total, Hq, K]
@group(0) @binding(3) var<uniform> params: MobaSelectParams;
// binding 4: carry (array<f32>, [total, Hq, K - 1] between segments; optional: bound by plans of several segments)
@group(0) @binding(5) var<storage, read> seqs: array<u32>;

override WG: u32 = 64;
override IN_DTYPE: u32 = 0;
override D: u32 = 64;
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
  var lo = 0u;
  var hi = seqs[0];
  while (hi - lo > 1u) {
    let mid = (lo + hi) / 2u;
    if (seqs[1u + mid * 4u] <= t) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  let own = (t - seqs[1u + lo * 4u]) / params.BS;
  let blk0 = seqs[1u + lo * 4u + 2u];
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
  for (var b = params.seg_begin; b < min(own, params.seg_end); b++) {
    let base = ((blk0 + b) * params.Hkv + h) * D4;
    var s4 = vec4<f32>(0.0);
    for (var c = 0u; c < D4; c++) {
      s4 += qv[c] * gate_keys[base + c];
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
