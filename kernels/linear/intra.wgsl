// Chunked form, pass 2: the intra-chunk matrices of one (chunk, value head), in 4x4 blocks (one
// block (I, J), J <= I, per invocation; register-blocked over vec4 key channels):
//   P[i, j] = scale sum_d q_id k_jd e^{G_id - G_jd}        (j <= i; stored transposed, PT[j][i])
//   A[i, j] = beta_i sum_d k_id k_jd e^{G_id - G_jd}        (j < i; DELTA only; A[i][j])
// Masked entries of the blocks are written as 0 (output.wgsl reads whole rows of blocks J <= I).
// Scalar gates: the decay multiplies each finished dot product. Per-channel gates, J < I: the
// product is factored at r = the last token of block J (G_j >= G_r >= G_i, so both factors have
// exponents <= 0 and cannot overflow): (q_i e^{G_i - G_r}) . (k_j e^{G_r - G_j}), the second
// factor precomputed (KF, prep.wgsl). Diagonal blocks (J = I) take one exp per pair and channel.

@group(0) @binding(0) var<storage, read> QC: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> KC: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> GAM: array<vec4<f32>>;
// @binding(3) KF: array<vec4<f32>>, per-channel gates (GATE == 2) only, optional
// @binding(4) BE: array<f32>, beta (DELTA), optional (scan.ts INTRA)
@group(0) @binding(5) var<storage, read> mt: array<u32>;
@group(0) @binding(6) var<storage, read_write> PT: array<f32>;
// @binding(7) AM: array<f32>, the delta rule's A (DELTA) only, optional
@group(0) @binding(8) var<uniform> params: LinParams;

override WG: u32 = 64u;

fn gam_s(i: u32) -> f32 {
  return GAM[i >> 2u][i & 3u];
}
fn exp4(x: vec4<f32>) -> vec4<f32> {
  return vec4<f32>(exp_decay(x.x), exp_decay(x.y), exp_decay(x.z), exp_decay(x.w));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let id = lin_wg(wg, nwg);
  if (id >= params.nChunks * params.HV) {
    return;
  }
  let c = id / params.HV;
  let hv = id % params.HV;
  let h = hv / params.ratio;
  let start = mt[params.chunkOff + 3u * c];
  let len = mt[params.chunkOff + 3u * c + 1u];
  let K4 = params.K4;
  let HV = params.HV;
  let nb = (len + 3u) / 4u;
  let pairs = nb * (nb + 1u) / 2u;
  for (var pi = lid; pi < pairs; pi += WG) {
    // decode the lower-triangle pair index: pi = I(I+1)/2 + J
    var I = u32(floor((sqrt(8.0 * f32(pi) + 1.0) - 1.0) * 0.5));
    if ((I + 1u) * (I + 2u) / 2u <= pi) {
      I += 1u;
    }
    if (I * (I + 1u) / 2u > pi) {
      I -= 1u;
    }
    let J = pi - I * (I + 1u) / 2u;
    var ti: array<u32, 4>;
    var tj: array<u32, 4>;
    for (var a = 0u; a < 4u; a++) {
      ti[a] = start + min(4u * I + a, len - 1u);
      tj[a] = start + min(4u * J + a, len - 1u);
    }
    var accP: array<vec4<f32>, 4>;
    var accA: array<vec4<f32>, 4>;
    for (var a = 0u; a < 4u; a++) {
      accP[a] = vec4<f32>(0.0);
      accA[a] = vec4<f32>(0.0);
    }
    if (GATE != 2u || J < I) {
      // named accumulators (not arrays) in the hot loop: the software adapter keeps them in registers
      var p0 = vec4<f32>(0.0);
      var p1 = vec4<f32>(0.0);
      var p2 = vec4<f32>(0.0);
      var p3 = vec4<f32>(0.0);
      var s0 = vec4<f32>(0.0);
      var s1 = vec4<f32>(0.0);
      var s2 = vec4<f32>(0.0);
      var s3 = vec4<f32>(0.0);
      let tr = start + 4u * J + 3u;
      for (var d4 = 0u; d4 < K4; d4++) {
        var k0: vec4<f32>;
        var k1: vec4<f32>;
        var k2: vec4<f32>;
        var k3: vec4<f32>;
        var q0 = QC[(ti[0] * params.H + h) * K4 + d4];
        var q1 = QC[(ti[1] * params.H + h) * K4 + d4];
        var q2 = QC[(ti[2] * params.H + h) * K4 + d4];
        var q3 = QC[(ti[3] * params.H + h) * K4 + d4];
        var c0 = vec4<f32>(0.0);
        var c1 = vec4<f32>(0.0);
        var c2 = vec4<f32>(0.0);
        var c3 = vec4<f32>(0.0);
        if (DELTA) {
          c0 = KC[(ti[0] * params.H + h) * K4 + d4];
          c1 = KC[(ti[1] * params.H + h) * K4 + d4];
          c2 = KC[(ti[2] * params.H + h) * K4 + d4];
          c3 = KC[(ti[3] * params.H + h) * K4 + d4];
        }
        if (GATE == 2u) {
          k0 = KF[(tj[0] * HV + hv) * K4 + d4];
          k1 = KF[(tj[1] * HV + hv) * K4 + d4];
          k2 = KF[(tj[2] * HV + hv) * K4 + d4];
          k3 = KF[(tj[3] * HV + hv) * K4 + d4];
          let gr = GAM[(tr * HV + hv) * K4 + d4];
          let e0 = exp4(GAM[(ti[0] * HV + hv) * K4 + d4] - gr);
          let e1 = exp4(GAM[(ti[1] * HV + hv) * K4 + d4] - gr);
          let e2 = exp4(GAM[(ti[2] * HV + hv) * K4 + d4] - gr);
          let e3 = exp4(GAM[(ti[3] * HV + hv) * K4 + d4] - gr);
          q0 *= e0;
          q1 *= e1;
          q2 *= e2;
          q3 *= e3;
          c0 *= e0;
          c1 *= e1;
          c2 *= e2;
          c3 *= e3;
        } else {
          k0 = KC[(tj[0] * params.H + h) * K4 + d4];
          k1 = KC[(tj[1] * params.H + h) * K4 + d4];
          k2 = KC[(tj[2] * params.H + h) * K4 + d4];
          k3 = KC[(tj[3] * params.H + h) * K4 + d4];
        }
        p0 += vec4<f32>(dot(q0, k0), dot(q0, k1), dot(q0, k2), dot(q0, k3));
        p1 += vec4<f32>(dot(q1, k0), dot(q1, k1), dot(q1, k2), dot(q1, k3));
        p2 += vec4<f32>(dot(q2, k0), dot(q2, k1), dot(q2, k2), dot(q2, k3));
        p3 += vec4<f32>(dot(q3, k0), dot(q3, k1), dot(q3, k2), dot(q3, k3));
        if (DELTA) {
          s0 += vec4<f32>(dot(c0, k0), dot(c0, k1), dot(c0, k2), dot(c0, k3));
          s1 += vec4<f32>(dot(c1, k0), dot(c1, k1), dot(c1, k2), dot(c1, k3));
          s2 += vec4<f32>(dot(c2, k0), dot(c2, k1), dot(c2, k2), dot(c2, k3));
          s3 += vec4<f32>(dot(c3, k0), dot(c3, k1), dot(c3, k2), dot(c3, k3));
        }
      }
      accP[0] = p0;
      accP[1] = p1;
      accP[2] = p2;
      accP[3] = p3;
      accA[0] = s0;
      accA[1] = s1;
      accA[2] = s2;
      accA[3] = s3;
      if (GATE == 1u || GATE == 3u) {
        let gj = vec4<f32>(gam_s(tj[0] * HV + hv), gam_s(tj[1] * HV + hv), gam_s(tj[2] * HV + hv), gam_s(tj[3] * HV + hv));
        for (var a = 0u; a < 4u; a++) {
          // exponents of pairs with j > i are positive; those entries are masked below
          let w = exp4(min(vec4<f32>(gam_s(ti[a] * HV + hv)) - gj, vec4<f32>(0.0)));
          accP[a] *= w;
          accA[a] *= w;
        }
      }
    } else {
      for (var d4 = 0u; d4 < K4; d4++) {
        for (var a = 0u; a < 4u; a++) {
          let gi = GAM[(ti[a] * HV + hv) * K4 + d4];
          let q = QC[(ti[a] * params.H + h) * K4 + d4];
          let ki = KC[(ti[a] * params.H + h) * K4 + d4];
          for (var b = 0u; b <= a; b++) {
            let e = exp4(min(gi - GAM[(tj[b] * HV + hv) * K4 + d4], vec4<f32>(0.0)));
            let kj = KC[(tj[b] * params.H + h) * K4 + d4] * e;
            accP[a][b] += dot(q, kj);
            if (DELTA) {
              accA[a][b] += dot(ki, kj);
            }
          }
        }
      }
    }
    for (var a = 0u; a < 4u; a++) {
      let i = 4u * I + a;
      if (i >= len) {
        continue;
      }
      var beta = 1.0;
      if (DELTA) {
        beta = BE[ti[a] * HV + hv];
      }
      for (var b = 0u; b < 4u; b++) {
        let j = 4u * J + b;
        PT[(id * CH + j) * CH + i] = select(0.0, params.scale * accP[a][b], j <= i && j < len);
        if (DELTA) {
          AM[(id * CH + i) * CH + j] = select(0.0, beta * accA[a][b], j < i);
        }
      }
    }
  }
}
