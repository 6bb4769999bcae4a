// Chunked form, pass 1 of 5: per (chunk, value head) and key channel d, the gate cumsums and the
// gate-weighted copies of q and k that the later passes use. All exponents are <= 0 (sums of
// clamped log-gates over later tokens of the same chunk), so nothing can overflow:
//   GAM[t, d] = G_t       = sum_{chunk start <= l <= t} g_l          (in-chunk cumsum)
//   QG[t, d]  = scale q_t e^{G_t}                                     (query against the chunk-start state)
//   KD[t, d]  = k_t e^{G_last - G_t}  = k_t exp_decay(sum_{t < l <= last} g_l)  (key decayed to the chunk end)
//   KF[t, d]  = k_t e^{G_r - G_t}, r = last token of t's 16-token sub-chunk (intra.wgsl factors)
// The suffix sums are accumulated backwards (not as differences of cumsums) for accuracy.
// GAM is [T, HV, K] for per-channel gates and [T, HV] for scalar ones (unused without a gate).

@group(0) @binding(0) var<storage, read> Qb: array<u32>;
@group(0) @binding(1) var<storage, read> Kb: array<u32>;
@group(0) @binding(2) var<storage, read> Gb: array<f32>;
@group(0) @binding(3) var<storage, read> mt: array<u32>;
@group(0) @binding(4) var<storage, read_write> GAM: array<f32>;
@group(0) @binding(5) var<storage, read_write> QG: array<f32>;
@group(0) @binding(6) var<storage, read_write> KD: array<f32>;
@group(0) @binding(7) var<storage, read_write> KF: array<f32>;
@group(0) @binding(8) var<uniform> p: LinParams;

override WG: u32 = 64u;

fn log_gate(t: u32, hv: u32, d: u32) -> f32 {
  if (GATE == 1u) {
    return Gb[t * p.HV + hv];
  }
  if (GATE == 2u) {
    return Gb[(t * p.HV + hv) * p.K + d];
  }
  if (GATE == 3u) {
    return Gb[hv];
  }
  return 0.0;
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
  for (var d = lid; d < K; d += WG) {
    var cum = 0.0;
    for (var i = 0u; i < len; i++) {
      let t = start + i;
      cum += clamp_gate(log_gate(t, hv, d));
      if (GATE == 2u) {
        GAM[(t * p.HV + hv) * K + d] = cum;
      } else if (GATE != 0u && d == 0u) {
        GAM[t * p.HV + hv] = cum;
      }
      let qi = (t * p.H + h) * K + d;
      QG[(t * p.HV + hv) * K + d] = p.scale * st_value(Qb[st_word(qi, DT_QK)], qi, DT_QK) * exp_decay(cum);
    }
    var suf = 0.0;
    var sufb = 0.0;
    for (var ii = len; ii > 0u; ii--) {
      let i = ii - 1u;
      let t = start + i;
      if (i % SUB == SUB - 1u) {
        sufb = 0.0;
      }
      let ki = (t * p.H + h) * K + d;
      let kv = st_value(Kb[st_word(ki, DT_QK)], ki, DT_QK);
      KD[(t * p.HV + hv) * K + d] = kv * exp_decay(suf);
      if (GATE == 2u) {
        KF[(t * p.HV + hv) * K + d] = kv * exp_decay(sufb);
      }
      let g = clamp_gate(log_gate(t, hv, d));
      suf += g;
      sufb += g;
    }
  }
}
