// Chunked form, pass 3a (delta rule only): T = (I + A)^-1 of one (chunk, value head), A strictly
// lower triangular (intra.wgsl), by forward substitution, one column of T per invocation
// (stored transposed, TT[j][i] = T[i][j], so that solve.wgsl reads 4 rows of T as one vec4).
// Also the right-hand side of W: KG = beta e^{G} k (exponents <= 0).

@group(0) @binding(0) var<storage, read> AM: array<f32>;
@group(0) @binding(1) var<storage, read> KC: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> GAM: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> BE: array<f32>;
@group(0) @binding(4) var<storage, read> mt: array<u32>;
@group(0) @binding(5) var<storage, read_write> TT: array<f32>;
@group(0) @binding(6) var<storage, read_write> KG: array<vec4<f32>>;
@group(0) @binding(7) var<uniform> p: LinParams;

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
  let K4 = p.K4;
  let HV = p.HV;
  var x: array<f32, CH>;
  for (var col = lid; col < CH; col += WG) {
    let tb = (id * CH + col) * CH;
    for (var i = 0u; i < CH; i++) {
      var v = 0.0;
      if (i == col && i < len) {
        v = 1.0;
      } else if (i > col && i < len) {
        let row = (id * CH + i) * CH;
        for (var j = col; j < i; j++) {
          v -= AM[row + j] * x[j];
        }
      }
      x[i] = v;
      TT[tb + i] = v;
    }
  }
  for (var it = lid; it < len * K4; it += WG) {
    let i = it / K4;
    let d4 = it % K4;
    let t = start + i;
    var e = vec4<f32>(1.0);
    if (GATE == 2u) {
      let g = GAM[(t * HV + hv) * K4 + d4];
      e = vec4<f32>(exp_decay(g.x), exp_decay(g.y), exp_decay(g.z), exp_decay(g.w));
    } else if (GATE != 0u) {
      let gi = t * HV + hv;
      e = vec4<f32>(exp_decay(GAM[gi >> 2u][gi & 3u]));
    }
    KG[(t * HV + hv) * K4 + d4] = BE[t * HV + hv] * KC[(t * p.H + h) * K4 + d4] * e;
  }
}
