// Chunked form, pass 3 of 5 (delta rule only): the WY/UT representation of one (chunk, value
// head). With A strictly lower triangular (intra.wgsl), T = (I + A)^-1 is applied by forward
// substitution, one column of the right-hand sides per invocation (columns are independent):
//   W = T (beta e^{G} k)   [len, K]        U = T (beta v)   [len, V]
// so that the chunk's new values are V_new = U - W S_0 (scan.wgsl).

@group(0) @binding(0) var<storage, read> AM: array<f32>;
@group(0) @binding(1) var<storage, read> Kb: array<u32>;
@group(0) @binding(2) var<storage, read> Vb: array<u32>;
@group(0) @binding(3) var<storage, read> GAM: array<f32>;
@group(0) @binding(4) var<storage, read> BE: array<f32>;
@group(0) @binding(5) var<storage, read> mt: array<u32>;
@group(0) @binding(6) var<storage, read_write> WM: array<f32>;
@group(0) @binding(7) var<storage, read_write> UM: array<f32>;
@group(0) @binding(8) var<uniform> p: LinParams;

override WG: u32 = 64u;

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
  let V = p.V;
  let HV = p.HV;
  var x: array<f32, CH>;
  for (var col = lid; col < K + V; col += WG) {
    for (var i = 0u; i < len; i++) {
      let t = start + i;
      let beta = BE[t * HV + hv];
      var acc: f32;
      if (col < K) {
        let ki = (t * p.H + h) * K + col;
        var g = 0.0;
        if (GATE == 2u) {
          g = GAM[(t * HV + hv) * K + col];
        } else if (GATE != 0u) {
          g = GAM[t * HV + hv];
        }
        acc = beta * st_value(Kb[st_word(ki, DT_QK)], ki, DT_QK) * exp_decay(g);
      } else {
        let vi = (t * HV + hv) * V + col - K;
        acc = beta * st_value(Vb[st_word(vi, DT_V)], vi, DT_V);
      }
      let row = (id * CH + i) * CH;
      for (var j = 0u; j < i; j++) {
        acc -= AM[row + j] * x[j];
      }
      x[i] = acc;
      if (col < K) {
        WM[(t * HV + hv) * K + col] = acc;
      } else {
        UM[(t * HV + hv) * V + col - K] = acc;
      }
    }
  }
}
