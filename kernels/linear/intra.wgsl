// Chunked form, pass 2 of 5: the intra-chunk matrices of one (chunk, value head), one row i per
// invocation (j <= i only; entries above the diagonal are never read):
//   P[i, j] = scale sum_d q_id k_jd e^{G_id - G_jd}          (j <= i)
//   A[i, j] = beta_i sum_d k_id k_jd e^{G_id - G_jd}          (j < i; DELTA only)
// Scalar gates: one exp per pair. Per-channel gates: for j in an earlier 16-token sub-chunk b the
// product is factored around r = the last token of b (G_r between G_j and G_i, so both factors
// have exponents <= 0): (q_i e^{G_i - G_r}) . (k_j e^{G_r - G_j}) with the second factor KF from
// prep.wgsl; pairs inside i's own sub-chunk take one exp per channel.

@group(0) @binding(0) var<storage, read> Qb: array<u32>;
@group(0) @binding(1) var<storage, read> Kb: array<u32>;
@group(0) @binding(2) var<storage, read> GAM: array<f32>;
@group(0) @binding(3) var<storage, read> KF: array<f32>;
@group(0) @binding(4) var<storage, read> BE: array<f32>;
@group(0) @binding(5) var<storage, read> mt: array<u32>;
@group(0) @binding(6) var<storage, read_write> PM: array<f32>;
@group(0) @binding(7) var<storage, read_write> AM: array<f32>;
@group(0) @binding(8) var<uniform> p: LinParams;

override WG: u32 = 64u;

fn ldq(i: u32) -> f32 {
  return st_value(Qb[st_word(i, DT_QK)], i, DT_QK);
}
fn ldk(i: u32) -> f32 {
  return st_value(Kb[st_word(i, DT_QK)], i, DT_QK);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let id = lin_wg(wg, nwg);
  if (id >= p.nChunks * p.HV) {
    return;
  }
  let c = id / p.HV;
  let hv = id % p.HV;
  let h = hv / p.ratio;
  let start = mt[p.chunkOff + 3u * c];
  let len = mt[p.chunkOff + 3u * c + 1u];
  let K = p.K;
  let HV = p.HV;
  for (var i = lid; i < len; i += WG) {
    let ti = start + i;
    let qb = (ti * p.H + h) * K;
    let row = (id * CH + i) * CH;
    var beta = 1.0;
    if (DELTA) {
      beta = BE[ti * HV + hv];
    }
    if (GATE != 2u) {
      var gi = 0.0;
      if (GATE != 0u) {
        gi = GAM[ti * HV + hv];
      }
      for (var j = 0u; j <= i; j++) {
        let tj = start + j;
        let kb = (tj * p.H + h) * K;
        var qk = 0.0;
        var kk = 0.0;
        for (var d = 0u; d < K; d++) {
          let kj = ldk(kb + d);
          qk += ldq(qb + d) * kj;
          if (DELTA) {
            kk += ldk(qb + d) * kj;
          }
        }
        var w = 1.0;
        if (GATE != 0u) {
          w = exp_decay(gi - GAM[tj * HV + hv]);
        }
        PM[row + j] = p.scale * w * qk;
        if (DELTA && j < i) {
          AM[row + j] = beta * w * kk;
        }
      }
    } else {
      var qf: array<f32, KMAX>;
      var kf: array<f32, KMAX>;
      let gib = (ti * HV + hv) * K;
      let bi = i / SUB;
      for (var b = 0u; b < bi; b++) {
        let tr = start + b * SUB + SUB - 1u;
        let grb = (tr * HV + hv) * K;
        for (var d = 0u; d < K; d++) {
          let e = exp_decay(GAM[gib + d] - GAM[grb + d]);
          qf[d] = ldq(qb + d) * e;
          if (DELTA) {
            kf[d] = ldk(qb + d) * e;
          }
        }
        for (var j = b * SUB; j < b * SUB + SUB; j++) {
          let fb = ((start + j) * HV + hv) * K;
          var qk = 0.0;
          var kk = 0.0;
          for (var d = 0u; d < K; d++) {
            let f = KF[fb + d];
            qk += qf[d] * f;
            if (DELTA) {
              kk += kf[d] * f;
            }
          }
          PM[row + j] = p.scale * qk;
          if (DELTA) {
            AM[row + j] = beta * kk;
          }
        }
      }
      for (var j = bi * SUB; j <= i; j++) {
        let tj = start + j;
        let kb = (tj * p.H + h) * K;
        let gjb = (tj * HV + hv) * K;
        var qk = 0.0;
        var kk = 0.0;
        for (var d = 0u; d < K; d++) {
          let w = exp_decay(GAM[gib + d] - GAM[gjb + d]);
          let kj = ldk(kb + d) * w;
          qk += ldq(qb + d) * kj;
          if (DELTA) {
            kk += ldk(qb + d) * kj;
          }
        }
        PM[row + j] = p.scale * qk;
        if (DELTA && j < i) {
          AM[row + j] = beta * kk;
        }
      }
    }
  }
}
