// Chunked form, pass 4: the state recurrence across chunks, one invocation per (sequence, value
// head, vec4 of state columns); columns are independent, so no barriers. Per chunk:
//   HS[c] = S                                  (the chunk-start state, for output.wgsl)
//   V_new = U - W S   (DELTA; stored in VN)   or the values v themselves
//   S <- Diag(e^{G_last}) S + KD^T V_new
// With NORM the state has one more column, z, whose values are all 1 (read from z_in, written to z_out).
// Segments: one dispatch runs chunks [seg_begin, seg_end) of every sequence (relative to its first
// chunk; src/gpu/segments.ts), so that no invocation passes the loop limit (kernels/linear/loops.ts,
// scanLoopIterations); the state stays in ST between dispatches, z goes from z_in to z_out (run()
// alternates two buffers; only the invocation of column V reads and writes z).

// @binding(0) W: array<vec4<f32>>, [T, HV, K4] (DELTA), optional (scan.ts SCAN)
@group(0) @binding(1) var<storage, read> UB: array<vec4<f32>>;   // U or v as f32 [T, HV, V4]
@group(0) @binding(2) var<storage, read> KD: array<vec4<f32>>;   // [T, HV, K4]
@group(0) @binding(3) var<storage, read> GAM: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> mt: array<u32>;
@group(0) @binding(5) var<storage, read_write> HS: array<vec4<f32>>;  // [nChunks, HV, KP, VS4]
// @binding(6) VN: array<f32>, V_new [T, HV, V4*4] (DELTA), optional
@group(0) @binding(7) var<storage, read_write> ST: array<f32>;        // [N, HV, K, V]
@group(0) @binding(8) var<uniform> params: LinParams;
// @binding(9) z_in: array<vec4<f32>>, [N, HV, K] f32 read as vec4s (NORM), optional
// @binding(10) z_out: array<f32>, [N, HV, K] (NORM), optional

override WG: u32 = 4u;

fn z_load(i: u32) -> f32 {
  return z_in[i >> 2u][i & 3u];
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let tiles = (params.VS4 + WG - 1u) / WG;
  let id = lin_wg(wg, nwg);
  let seqhv = id / tiles;
  let quad = (id % tiles) * WG + lid;
  if (seqhv >= params.N * params.HV || quad >= params.VS4) {
    return;
  }
  let n = seqhv / params.HV;
  let hv = seqhv % params.HV;
  let K = params.K;
  let K4 = params.K4;
  let V = params.V;
  let V4 = params.V4;
  let HV = params.HV;
  let c0 = 4u * quad;
  var S: array<vec4<f32>, KMAX>;
  var un: array<vec4<f32>, CH>;
  let sb = seqhv * K * V;
  for (var d = 0u; d < 4u * K4; d++) {
    var s = vec4<f32>(0.0);
    if (d < K) {
      for (var e = 0u; e < 4u; e++) {
        let col = c0 + e;
        if (col < V) {
          s[e] = ST[sb + d * V + col];
        } else if (NORM && col == V) {
          s[e] = z_load(seqhv * K + d);
        }
      }
    }
    S[d] = s;
  }
  let last = mt[params.seqChunkOff + n + 1u];
  let first = min(mt[params.seqChunkOff + n] + params.seg_begin, last);
  let cEnd = min(last, mt[params.seqChunkOff + n] + params.seg_end);
  for (var c = first; c < cEnd; c++) {
    let start = mt[params.chunkOff + 3u * c];
    let len = mt[params.chunkOff + 3u * c + 1u];
    let hb = (c * HV + hv) * params.KP * params.VS4;
    for (var d = 0u; d < K; d++) {
      HS[hb + d * params.VS4 + quad] = S[d];
    }
    for (var i = 0u; i < len; i++) {
      let t = start + i;
      var u = vec4<f32>(0.0);
      if (quad < V4) {
        u = UB[(t * HV + hv) * V4 + quad];
      }
      if (NORM && V / 4u == quad) {
        u[V % 4u] = 1.0;
      }
      un[i] = u;
    }
    if (DELTA) {
      // V_new = U - W S, state rows outer (4 at a time, in registers), tokens inner
      for (var d4 = 0u; d4 < K4; d4++) {
        let d = 4u * d4;
        let s0 = S[d];
        let s1 = S[d + 1u];
        let s2 = S[d + 2u];
        let s3 = S[d + 3u];
        var wi = (start * HV + hv) * K4 + d4;
        for (var i = 0u; i < len; i++) {
          let w = W[wi];
          un[i] -= w.x * s0 + w.y * s1 + w.z * s2 + w.w * s3;
          wi += HV * K4;
        }
      }
      for (var i = 0u; i < len; i++) {
        let u = un[i];
        let vb = (((start + i) * HV + hv) * V4 + quad) * 4u;
        VN[vb] = u.x;
        VN[vb + 1u] = u.y;
        VN[vb + 2u] = u.z;
        VN[vb + 3u] = u.w;
      }
    }
    let tl = start + len - 1u;
    var a = vec4<f32>(1.0);
    if (GATE == 1u || GATE == 3u) {
      let gi = tl * HV + hv;
      a = vec4<f32>(exp_decay(GAM[gi >> 2u][gi & 3u]));
    }
    for (var d4 = 0u; d4 < K4; d4++) {
      if (GATE == 2u) {
        let g = GAM[(tl * HV + hv) * K4 + d4];
        a = vec4<f32>(exp_decay(g.x), exp_decay(g.y), exp_decay(g.z), exp_decay(g.w));
      }
      let d = 4u * d4;
      var s0 = S[d] * a.x;
      var s1 = S[d + 1u] * a.y;
      var s2 = S[d + 2u] * a.z;
      var s3 = S[d + 3u] * a.w;
      for (var i = 0u; i < len; i++) {
        let kd = KD[((start + i) * HV + hv) * K4 + d4];
        let u = un[i];
        s0 += kd.x * u;
        s1 += kd.y * u;
        s2 += kd.z * u;
        s3 += kd.w * u;
      }
      S[d] = s0;
      S[d + 1u] = s1;
      S[d + 2u] = s2;
      S[d + 3u] = s3;
    }
  }
  for (var d = 0u; d < K; d++) {
    let s = S[d];
    for (var e = 0u; e < 4u; e++) {
      let col = c0 + e;
      if (col < V) {
        ST[sb + d * V + col] = s[e];
      } else if (NORM && col == V) {
        z_out[seqhv * K + d] = s[e];
      }
    }
  }
}
