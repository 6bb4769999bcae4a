// Recurrent (token by token) form of every op: decode (T = 1) and short prefills.
// One invocation per (sequence, value head, pair of value columns): the state columns
// S[:, c0..c0+1] live in private memory (K x vec2), the recurrence is independent per column:
//   S <- Diag(a_t) S;  u = beta (v - S^T k) (DELTA) or v;  S += k u^T;  o = scale S^T q
// Reads/writes the state in place in ST (run() copied the initial state there first).
// Segments: one dispatch runs tokens [seg_begin, seg_end) of every sequence (relative to its
// start; src/gpu/segments.ts), so that no invocation passes the loop limit (kernels/linear/loops.ts,
// recurrentLoopIterations); the state stays in ST between dispatches, z (NORM) goes from z_in to
// z_out (run() alternates two buffers, so a dispatch never reads what it writes).

@group(0) @binding(0) var<storage, read> Qb: array<u32>;        // [T, H, K] DT_QK
@group(0) @binding(1) var<storage, read> Kb: array<u32>;        // [T, H, K] DT_QK
@group(0) @binding(2) var<storage, read> Vb: array<u32>;        // [T, HV, V] DT_V
// @binding(3) Gb: array<f32>, gates (GATE != 0), optional (scan.ts RECURRENT)
@group(0) @binding(4) var<storage, read> mt: array<u32>;      // cuSeqlens [N+1], ...
// @binding(5) BE: array<f32>, beta [T, HV] (DELTA), optional
@group(0) @binding(6) var<storage, read_write> Ob: array<u32>;  // [T, HV, V] OUT_DT
@group(0) @binding(7) var<storage, read_write> ST: array<f32>;  // [N, HV, K, V] f32
@group(0) @binding(8) var<uniform> params: LinParams;
// @binding(9) z_in: array<f32>, [N, HV, K] (NORM), optional
// @binding(10) z_out: array<f32>, [N, HV, K] (NORM), optional

override WG: u32 = 16u;

fn ld_qk_q(i: u32) -> f32 {
  return st_value(Qb[st_word(i, DT_QK)], i, DT_QK);
}
fn ld_qk_k(i: u32) -> f32 {
  return st_value(Kb[st_word(i, DT_QK)], i, DT_QK);
}
fn ld_v(i: u32) -> f32 {
  return st_value(Vb[st_word(i, DT_V)], i, DT_V);
}
fn log_gate(t: u32, hv: u32, d: u32) -> f32 {
  if (GATE == 1u) {
    return Gb[t * params.HV + hv];
  }
  if (GATE == 2u) {
    return Gb[(t * params.HV + hv) * params.K + d];
  }
  if (GATE == 3u) {
    return Gb[hv];
  }
  return 0.0;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let pairs = (params.V + 1u) / 2u;
  let tiles = (pairs + WG - 1u) / WG;
  let id = lin_wg(wg, nwg);
  let seqhv = id / tiles;
  let pair = (id % tiles) * WG + lid;
  if (seqhv >= params.N * params.HV || pair >= pairs) {
    return;
  }
  let n = seqhv / params.HV;
  let hv = seqhv % params.HV;
  let h = hv / params.ratio;
  let K = params.K;
  let V = params.V;
  let c0 = 2u * pair;
  let has1 = c0 + 1u < V;
  let c1 = select(c0, c0 + 1u, has1);
  var S: array<vec2<f32>, KMAX>;
  var z: array<f32, ZMAX>;
  let sb = seqhv * K * V;
  for (var d = 0u; d < K; d++) {
    S[d] = vec2<f32>(ST[sb + d * V + c0], select(0.0, ST[sb + d * V + c1], has1));
  }
  if (NORM) {
    for (var d = 0u; d < K; d++) {
      z[d] = z_in[seqhv * K + d];
    }
  }
  let tEnd = mt[n + 1u];
  let t0 = min(mt[n] + params.seg_begin, tEnd);
  let t1 = min(tEnd, mt[n] + params.seg_end);
  for (var t = t0; t < t1; t++) {
    let qb = (t * params.H + h) * K;
    let vb = (t * params.HV + hv) * V;
    var kS = vec2<f32>(0.0);
    if (GATE != 0u || DELTA) {
      var a = exp_decay(clamp_gate(log_gate(t, hv, 0u)));
      for (var d = 0u; d < K; d++) {
        if (GATE == 2u) {
          a = exp_decay(clamp_gate(log_gate(t, hv, d)));
        }
        let s = S[d] * a;
        S[d] = s;
        if (DELTA) {
          kS += ld_qk_k(qb + d) * s;
        }
      }
    }
    var u = vec2<f32>(ld_v(vb + c0), select(0.0, ld_v(vb + c1), has1));
    if (DELTA) {
      u = BE[t * params.HV + hv] * (u - kS);
    }
    var acc = vec2<f32>(0.0);
    var qz = 0.0;
    for (var d = 0u; d < K; d++) {
      let kd = ld_qk_k(qb + d);
      let qd = ld_qk_q(qb + d);
      let s = S[d] + kd * u;
      S[d] = s;
      acc += qd * s;
      if (NORM) {
        z[d] += kd;
        qz += qd * z[d];
      }
    }
    var o = params.scale * acc;
    if (NORM) {
      o = o / (params.scale * qz + 1e-10);
    }
    if (OUT_DT == 0u) {
      Ob[vb + c0] = bitcast<u32>(o.x);
      if (has1) {
        Ob[vb + c1] = bitcast<u32>(o.y);
      }
    } else {
      Ob[(vb + c0) >> 1u] = st_pack_pair(o.x, o.y, OUT_DT);
    }
  }
  for (var d = 0u; d < K; d++) {
    ST[sb + d * V + c0] = S[d].x;
    if (has1) {
      ST[sb + d * V + c1] = S[d].y;
    }
  }
  if (NORM && pair == 0u) {
    for (var d = 0u; d < K; d++) {
      z_out[seqhv * K + d] = z[d];
    }
  }
}
