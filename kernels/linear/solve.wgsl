// Chunked form, pass 3 (delta rule only): the WY/UT representation of one (chunk, value head).
// With A strictly lower triangular (intra.wgsl), T = (I + A)^-1 is applied by blocked forward
// substitution to the right-hand sides, one vec4 of columns per invocation (columns are
// independent), 4 rows at a time: X_I = B_I - sum_{J < I} A_IJ X_J, then the 4x4 unit lower
// triangular diagonal block in registers. Results:
//   W = T (beta e^{G} k)   [len, K]        U = T (beta v)   [len, V]
// so that the chunk's new values are V_new = U - W S_0 (scan.wgsl). Earlier row blocks X_J are
// read back from W / U, which this invocation wrote. `solveSplit` workgroups share the columns of
// one (chunk, value head) where one would pass the device's loop limit (loops.ts).

@group(0) @binding(0) var<storage, read> AM: array<vec4<f32>>;   // [nChunks, HV, CH, CH] (A[i][j])
@group(0) @binding(1) var<storage, read> KC: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> VC: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> GAM: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> BE: array<f32>;
@group(0) @binding(5) var<storage, read> mt: array<u32>;
@group(0) @binding(6) var<storage, read_write> WM: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> UM: array<vec4<f32>>;
@group(0) @binding(8) var<uniform> params: LinParams;

override WG: u32 = 64u;

fn rhs(t: u32, h: u32, hv: u32, col: u32) -> vec4<f32> {
  let HV = params.HV;
  let K4 = params.K4;
  let beta = BE[t * HV + hv];
  if (col < K4) {
    var e = vec4<f32>(1.0);
    if (GATE == 2u) {
      let g = GAM[(t * HV + hv) * K4 + col];
      e = vec4<f32>(exp_decay(g.x), exp_decay(g.y), exp_decay(g.z), exp_decay(g.w));
    } else if (GATE != 0u) {
      let gi = t * HV + hv;
      e = vec4<f32>(exp_decay(GAM[gi >> 2u][gi & 3u]));
    }
    return beta * KC[(t * params.H + h) * K4 + col] * e;
  }
  return beta * VC[(t * HV + hv) * params.V4 + col - K4];
}

fn ld_x(t: u32, hv: u32, col: u32) -> vec4<f32> {
  if (col < params.K4) {
    return WM[(t * params.HV + hv) * params.K4 + col];
  }
  return UM[(t * params.HV + hv) * params.V4 + col - params.K4];
}

fn st_x(t: u32, hv: u32, col: u32, x: vec4<f32>) {
  if (col < params.K4) {
    WM[(t * params.HV + hv) * params.K4 + col] = x;
  } else {
    UM[(t * params.HV + hv) * params.V4 + col - params.K4] = x;
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let gid = lin_wg(wg, nwg);
  let id = gid / params.solveSplit;
  if (id >= params.nChunks * params.HV) {
    return;
  }
  let part = gid % params.solveSplit;
  let c = id / params.HV;
  let hv = id % params.HV;
  let h = hv / params.ratio;
  let start = mt[params.chunkOff + 3u * c];
  let len = mt[params.chunkOff + 3u * c + 1u];
  let nb = (len + 3u) / 4u;
  let arow = id * CH * (CH / 4u);   // vec4 index of A[0][0] of this chunk
  for (var col = part * WG + lid; col < params.K4 + params.V4; col += WG * params.solveSplit) {
    for (var I = 0u; I < nb; I++) {
      let i0 = 4u * I;
      let t0 = start + i0;
      let t1 = start + min(i0 + 1u, len - 1u);
      let t2 = start + min(i0 + 2u, len - 1u);
      let t3 = start + min(i0 + 3u, len - 1u);
      var b0 = rhs(t0, h, hv, col);
      var b1 = rhs(t1, h, hv, col);
      var b2 = rhs(t2, h, hv, col);
      var b3 = rhs(t3, h, hv, col);
      let r0 = arow + i0 * (CH / 4u);
      for (var J = 0u; J < I; J++) {
        let tj = start + 4u * J;
        let x0 = ld_x(tj, hv, col);
        let x1 = ld_x(tj + 1u, hv, col);
        let x2 = ld_x(tj + 2u, hv, col);
        let x3 = ld_x(tj + 3u, hv, col);
        let a0 = AM[r0 + J];
        let a1 = AM[r0 + CH / 4u + J];
        let a2 = AM[r0 + 2u * (CH / 4u) + J];
        let a3 = AM[r0 + 3u * (CH / 4u) + J];
        b0 -= a0.x * x0 + a0.y * x1 + a0.z * x2 + a0.w * x3;
        b1 -= a1.x * x0 + a1.y * x1 + a1.z * x2 + a1.w * x3;
        b2 -= a2.x * x0 + a2.y * x1 + a2.z * x2 + a2.w * x3;
        b3 -= a3.x * x0 + a3.y * x1 + a3.z * x2 + a3.w * x3;
      }
      let d1 = AM[r0 + CH / 4u + I];
      let d2 = AM[r0 + 2u * (CH / 4u) + I];
      let d3 = AM[r0 + 3u * (CH / 4u) + I];
      let x0 = b0;
      let x1 = b1 - d1.x * x0;
      let x2 = b2 - d2.x * x0 - d2.y * x1;
      let x3 = b3 - d3.x * x0 - d3.y * x1 - d3.z * x2;
      st_x(t0, hv, col, x0);
      if (i0 + 1u < len) {
        st_x(t1, hv, col, x1);
      }
      if (i0 + 2u < len) {
        st_x(t2, hv, col, x2);
      }
      if (i0 + 3u < len) {
        st_x(t3, hv, col, x3);
      }
    }
  }
}
