// Chunked form, pass 3 (delta rule only): the WY/UT representation of one (chunk, value head).
// With A strictly lower triangular (intra.wgsl), T = (I + A)^-1 is applied by forward
// substitution, one vec4 of right-hand-side columns per invocation (columns are independent):
//   W = T (beta e^{G} k)   [len, K]        U = T (beta v)   [len, V]
// so that the chunk's new values are V_new = U - W S_0 (scan.wgsl).

@group(0) @binding(0) var<storage, read> AM: array<f32>;
@group(0) @binding(1) var<storage, read> KC: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> VC: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> GAM: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> BE: array<f32>;
@group(0) @binding(5) var<storage, read> mt: array<u32>;
@group(0) @binding(6) var<storage, read_write> WM: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> UM: array<vec4<f32>>;
@group(0) @binding(8) var<uniform> p: LinParams;

override WG: u32 = 64u;

fn exp4(x: vec4<f32>) -> vec4<f32> {
  return vec4<f32>(exp_decay(x.x), exp_decay(x.y), exp_decay(x.z), exp_decay(x.w));
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
  let K4 = p.K4;
  let V4 = p.V4;
  let HV = p.HV;
  var x: array<vec4<f32>, CH>;
  for (var col = lid; col < K4 + V4; col += WG) {
    for (var i = 0u; i < len; i++) {
      let t = start + i;
      let beta = BE[t * HV + hv];
      var acc: vec4<f32>;
      if (col < K4) {
        var e = vec4<f32>(1.0);
        if (GATE == 2u) {
          e = exp4(GAM[(t * HV + hv) * K4 + col]);
        } else if (GATE != 0u) {
          let gi = t * HV + hv;
          e = vec4<f32>(exp_decay(GAM[gi >> 2u][gi & 3u]));
        }
        acc = beta * KC[(t * p.H + h) * K4 + col] * e;
      } else {
        acc = beta * VC[(t * HV + hv) * V4 + col - K4];
      }
      let row = (id * CH + i) * CH;
      for (var j = 0u; j < i; j++) {
        acc -= AM[row + j] * x[j];
      }
      x[i] = acc;
      if (col < K4) {
        WM[(t * HV + hv) * K4 + col] = acc;
      } else {
        UM[(t * HV + hv) * V4 + col - K4] = acc;
      }
    }
  }
}
