// DSA lightning-indexer scoring of one (query row, 4 consecutive keys), shared by indexer.wgsl
// (one sequence) and varlen_indexer.wgsl (a ragged batch), one invocation per (score row tl, keys
// s0..s0+3): the entry file's dsa_cell(tl, s0) finds the query token
// `t`, the score row's first element `base`, the first key column `s0`, the rows `sc` of ki that
// hold the four keys (clamped to real rows) and the last visible key column `lim`, then calls
// dsa_index4, which writes
//   scores[base + s] = sum_{j in [seg_begin, seg_end)} w[t, j] * ReLU(qI[t, j] . kI[sc])   (s <= lim)
// for s in [s0, min(s0 + 4, Tk)), -inf where s > lim, continuing from the partial sum in `scores`
// when seg_carry != 0 (the same order of additions as unsegmented).
// Declares the overrides WG, IN_DTYPE, DI and the entry point. Needs storage.wgsl, unpack4.wgsl,
// IndexerParams and the entry's bindings qi_buf, ki_buf, w_buf, scores.

override WG: u32 = 64;
override IN_DTYPE: u32 = 0;
override DI: u32 = 128;

fn ld(buf_is_q: bool, e: u32) -> vec4<f32> {
  if (buf_is_q) {
    return st_unpack4(qi_buf[st_vec4_index(e, IN_DTYPE)], e, IN_DTYPE);
  }
  return st_unpack4(ki_buf[st_vec4_index(e, IN_DTYPE)], e, IN_DTYPE);
}

fn dsa_index4(t: u32, base: u32, s0: u32, sc: vec4<u32>, lim: i32) {
  let D4 = DI / 4u;
  var acc = vec4<f32>(0.0);
  if (params.seg_carry != 0u) {
    let sl = vec4<u32>(s0, min(s0 + 1u, params.Tk - 1u), min(s0 + 2u, params.Tk - 1u), min(s0 + 3u, params.Tk - 1u));
    acc = vec4<f32>(scores[base + sl.x], scores[base + sl.y], scores[base + sl.z], scores[base + sl.w]);
  }
  for (var j = params.seg_begin; j < min(params.HI, params.seg_end); j++) {
    let qb = (t * params.HI + j) * DI;
    var d = vec4<f32>(0.0);
    for (var c = 0u; c < D4; c++) {
      let qc = ld(true, qb + 4u * c);
      d += vec4<f32>(dot(qc, ld(false, sc.x * DI + 4u * c)), dot(qc, ld(false, sc.y * DI + 4u * c)), dot(qc, ld(false, sc.z * DI + 4u * c)), dot(qc, ld(false, sc.w * DI + 4u * c)));
    }
    let wi = t * params.HI + j;
    acc += st_value(w_buf[st_word(wi, IN_DTYPE)], wi, IN_DTYPE) * max(d, vec4<f32>(0.0));
  }
  for (var x = 0u; x < 4u; x++) {
    let s = s0 + x;
    if (s < params.Tk) {
      scores[base + s] = select(acc[x], st_neg_inf(), i32(s) > lim);
    }
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let id = (wg.x + wg.y * nwg.x) * WG + lid;
  let S4 = (params.Tk + 3u) / 4u;
  if (id >= params.rows * S4) {
    return;
  }
  dsa_cell(id / S4, (id % S4) * 4u);
}
