// Chunked form, pass 1: per (chunk, value head) and group of 4 key channels (one vec4 per
// invocation), the gate cumsums and the gate-weighted copies of q and k that later passes use.
// All exponents are <= 0 (sums of clamped log-gates over later tokens of the same chunk), so
// nothing can overflow:
//   GAM[t] = G_t   = sum_{chunk start <= l <= t} g_l            (in-chunk cumsum)
//   QG[t]  = scale q_t e^{G_t}                                   (query against the chunk-start state)
//   KD[t]  = k_t e^{G_last - G_t} = k_t exp(sum_{t < l <= last} g_l)   (key decayed to the chunk end)
//   KF[t]  = k_t e^{G_r - G_t}, r = last token of t's 4-token block   (per-channel gates; intra.wgsl)
// Suffix sums are accumulated backwards (not as differences of cumsums) for accuracy.
// GAM holds vec4 rows [T, HV, K4] for per-channel gates and f32 [T, HV] for scalar ones.

@group(0) @binding(0) var<storage, read> QC: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> KC: array<vec4<f32>>;
// @binding(2) Gb: array<f32>, gates (GATE != 0), optional (scan.ts PREP)
@group(0) @binding(3) var<storage, read> mt: array<u32>;
@group(0) @binding(4) var<storage, read_write> GAM: array<f32>;
@group(0) @binding(5) var<storage, read_write> QG: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> KD: array<vec4<f32>>;
// @binding(7) KF: array<vec4<f32>>, per-channel gates (GATE == 2) only, optional
@group(0) @binding(8) var<uniform> params: LinParams;

override WG: u32 = 64u;

fn gate4(t: u32, hv: u32, d4: u32) -> vec4<f32> {
  if (GATE == 1u) {
    return vec4<f32>(clamp_gate(Gb[t * params.HV + hv]));
  }
  if (GATE == 2u) {
    let b = (t * params.HV + hv) * params.K + 4u * d4;
    let n = params.K - 4u * d4;
    var g = vec4<f32>(clamp_gate(Gb[b]), 0.0, 0.0, 0.0);
    if (n > 1u) {
      g.y = clamp_gate(Gb[b + 1u]);
    }
    if (n > 2u) {
      g.z = clamp_gate(Gb[b + 2u]);
    }
    if (n > 3u) {
      g.w = clamp_gate(Gb[b + 3u]);
    }
    return g;
  }
  if (GATE == 3u) {
    return vec4<f32>(clamp_gate(Gb[hv]));
  }
  return vec4<f32>(0.0);
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
  for (var d4 = lid; d4 < K4; d4 += WG) {
    var cum = vec4<f32>(0.0);
    for (var i = 0u; i < len; i++) {
      let t = start + i;
      cum += gate4(t, hv, d4);
      if (GATE == 2u) {
        let gb = ((t * HV + hv) * K4 + d4) * 4u;
        GAM[gb] = cum.x;
        GAM[gb + 1u] = cum.y;
        GAM[gb + 2u] = cum.z;
        GAM[gb + 3u] = cum.w;
      } else if (GATE != 0u && d4 == 0u) {
        GAM[t * HV + hv] = cum.x;
      }
      QG[(t * HV + hv) * K4 + d4] = params.scale * QC[(t * params.H + h) * K4 + d4] * exp4(cum);
    }
    var suf = vec4<f32>(0.0);
    var sufb = vec4<f32>(0.0);
    for (var ii = len; ii > 0u; ii--) {
      let i = ii - 1u;
      let t = start + i;
      if (i % 4u == 3u) {
        sufb = vec4<f32>(0.0);
      }
      let kv = KC[(t * params.H + h) * K4 + d4];
      KD[(t * HV + hv) * K4 + d4] = kv * exp4(suf);
      if (GATE == 2u) {
        KF[(t * HV + hv) * K4 + d4] = kv * exp4(sufb);
      }
      let g = gate4(t, hv, d4);
      suf += g;
      sufb += g;
    }
  }
}
