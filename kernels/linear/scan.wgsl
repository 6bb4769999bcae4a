// Chunked form, pass 4 of 5: the state recurrence across chunks, one invocation per (sequence,
// value head, pair of state columns); columns are independent, so no barriers. Per chunk:
//   HS[c] = S                                  (the chunk-start state, for output.wgsl)
//   V_new = U - W S   (DELTA; stored in VZ)   or the values v themselves
//   S <- Diag(e^{G_last}) S + KD^T V_new
// With NORM the state has one more column, z, whose values are all 1 (z_in in WZ, z_out in VZ).

@group(0) @binding(0) var<storage, read> WZ: array<f32>;        // W [T, HV, K] or z_in [N, HV, K]
@group(0) @binding(1) var<storage, read> Ub: array<u32>;        // U [T, HV, V] f32, or v (DT_U)
@group(0) @binding(2) var<storage, read> KD: array<f32>;
@group(0) @binding(3) var<storage, read> GAM: array<f32>;
@group(0) @binding(4) var<storage, read> mt: array<u32>;
@group(0) @binding(5) var<storage, read_write> HS: array<f32>;  // [nChunks, HV, K, VS]
@group(0) @binding(6) var<storage, read_write> VZ: array<f32>;  // V_new [T, HV, V] or z_out
@group(0) @binding(7) var<storage, read_write> ST: array<f32>;  // [N, HV, K, V]
@group(0) @binding(8) var<uniform> p: LinParams;

override WG: u32 = 16u;
override DT_U: u32 = 0u;

fn ld_u(t: u32, hv: u32, col: u32) -> f32 {
  if (col >= p.V) {
    return select(0.0, 1.0, NORM && col == p.V);
  }
  let i = (t * p.HV + hv) * p.V + col;
  return st_value(Ub[st_word(i, DT_U)], i, DT_U);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let tiles = (p.pairs + WG - 1u) / WG;
  let id = lin_wg(wg, nwg);
  let seqhv = id / tiles;
  let pair = (id % tiles) * WG + lid;
  if (seqhv >= p.N * p.HV || pair >= p.pairs) {
    return;
  }
  let n = seqhv / p.HV;
  let hv = seqhv % p.HV;
  let K = p.K;
  let V = p.V;
  let VS = p.VS;
  let HV = p.HV;
  let c0 = 2u * pair;
  let c1 = c0 + 1u;
  var S: array<vec2<f32>, KMAX>;
  var un: array<vec2<f32>, CH>;
  let sb = seqhv * K * V;
  for (var d = 0u; d < K; d++) {
    var s = vec2<f32>(0.0);
    if (c0 < V) {
      s.x = ST[sb + d * V + c0];
    } else if (NORM && c0 == V) {
      s.x = WZ[seqhv * K + d];
    }
    if (c1 < V) {
      s.y = ST[sb + d * V + c1];
    } else if (NORM && c1 == V) {
      s.y = WZ[seqhv * K + d];
    }
    S[d] = s;
  }
  let first = mt[p.seqChunkOff + n];
  let last = mt[p.seqChunkOff + n + 1u];
  for (var c = first; c < last; c++) {
    let start = mt[p.chunkOff + 3u * c];
    let len = mt[p.chunkOff + 3u * c + 1u];
    let hb = (c * HV + hv) * K * VS;
    for (var d = 0u; d < K; d++) {
      HS[hb + d * VS + c0] = S[d].x;
      if (c1 < VS) {
        HS[hb + d * VS + c1] = S[d].y;
      }
    }
    for (var i = 0u; i < len; i++) {
      let t = start + i;
      var u = vec2<f32>(ld_u(t, hv, c0), ld_u(t, hv, c1));
      if (DELTA) {
        let wb = (t * HV + hv) * K;
        for (var d = 0u; d < K; d++) {
          u -= WZ[wb + d] * S[d];
        }
        let vb = (t * HV + hv) * V;
        VZ[vb + c0] = u.x;
        if (c1 < V) {
          VZ[vb + c1] = u.y;
        }
      }
      un[i] = u;
    }
    let tl = start + len - 1u;
    var aL = 1.0;
    if (GATE == 1u || GATE == 3u) {
      aL = exp_decay(GAM[tl * HV + hv]);
    }
    for (var d = 0u; d < K; d++) {
      if (GATE == 2u) {
        aL = exp_decay(GAM[(tl * HV + hv) * K + d]);
      }
      var s = S[d] * aL;
      for (var i = 0u; i < len; i++) {
        s += KD[((start + i) * HV + hv) * K + d] * un[i];
      }
      S[d] = s;
    }
  }
  for (var d = 0u; d < K; d++) {
    if (c0 < V) {
      ST[sb + d * V + c0] = S[d].x;
    } else if (NORM && c0 == V) {
      VZ[seqhv * K + d] = S[d].x;
    }
    if (c1 < V) {
      ST[sb + d * V + c1] = S[d].y;
    } else if (NORM && c1 == V) {
      VZ[seqhv * K + d] = S[d].y;
    }
  }
}
