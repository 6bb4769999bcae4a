// Chunked form, pass 5 of 5: outputs of one (chunk, value head, quad of value columns), one row
// per invocation:
//   o_i = QG_i . HS[c] + sum_{j <= i} P[i, j] u_j       (u = V_new with DELTA, else v)
// With NORM the denominator is the same expression for the all-ones column z (column V of HS):
//   o_i /= QG_i . z_c + sum_{j <= i} P[i, j] + 1e-10.

@group(0) @binding(0) var<storage, read> QG: array<f32>;
@group(0) @binding(1) var<storage, read> PM: array<f32>;
@group(0) @binding(2) var<storage, read> Ub: array<u32>;
@group(0) @binding(3) var<storage, read> HS: array<f32>;
@group(0) @binding(4) var<storage, read> mt: array<u32>;
@group(0) @binding(5) var<storage, read_write> Ob: array<u32>;
@group(0) @binding(6) var<uniform> p: LinParams;

override WG: u32 = 64u;
override DT_U: u32 = 0u;

fn ld_u(i: u32) -> f32 {
  return st_value(Ub[st_word(i, DT_U)], i, DT_U);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let gid = lin_wg(wg, nwg);
  if (gid >= p.nChunks * p.HV * p.quads) {
    return;
  }
  let id = gid / p.quads;
  let quad = gid % p.quads;
  let c = id / p.HV;
  let hv = id % p.HV;
  let start = mt[p.chunkOff + 3u * c];
  let len = mt[p.chunkOff + 3u * c + 1u];
  let K = p.K;
  let V = p.V;
  let VS = p.VS;
  let HV = p.HV;
  let c0 = 4u * quad;
  let nc = min(4u, V - c0);
  let hb = id * K * VS;
  for (var i = lid; i < len; i += WG) {
    let t = start + i;
    let qb = (t * HV + hv) * K;
    var acc = vec4<f32>(0.0);
    var den = 0.0;
    for (var d = 0u; d < K; d++) {
      let qg = QG[qb + d];
      let r = hb + d * VS + c0;
      var s = vec4<f32>(HS[r], 0.0, 0.0, 0.0);
      if (nc > 1u) {
        s.y = HS[r + 1u];
      }
      if (nc > 2u) {
        s.z = HS[r + 2u];
      }
      if (nc > 3u) {
        s.w = HS[r + 3u];
      }
      acc += qg * s;
      if (NORM) {
        den += qg * HS[hb + d * VS + V];
      }
    }
    let row = (id * CH + i) * CH;
    for (var j = 0u; j <= i; j++) {
      let pij = PM[row + j];
      let ub = ((start + j) * HV + hv) * V + c0;
      var u = vec4<f32>(ld_u(ub), 0.0, 0.0, 0.0);
      if (nc > 1u) {
        u.y = ld_u(ub + 1u);
      }
      if (nc > 2u) {
        u.z = ld_u(ub + 2u);
      }
      if (nc > 3u) {
        u.w = ld_u(ub + 3u);
      }
      acc += pij * u;
      if (NORM) {
        den += pij;
      }
    }
    if (NORM) {
      acc = acc / (den + 1e-10);
    }
    let ob = (t * HV + hv) * V + c0;
    if (OUT_DT == 0u) {
      Ob[ob] = bitcast<u32>(acc.x);
      if (nc > 1u) {
        Ob[ob + 1u] = bitcast<u32>(acc.y);
      }
      if (nc > 2u) {
        Ob[ob + 2u] = bitcast<u32>(acc.z);
      }
      if (nc > 3u) {
        Ob[ob + 3u] = bitcast<u32>(acc.w);
      }
    } else {
      Ob[ob >> 1u] = st_pack_pair(acc.x, acc.y, OUT_DT);
      if (nc > 2u) {
        Ob[(ob >> 1u) + 1u] = st_pack_pair(acc.z, acc.w, OUT_DT);
      }
    }
  }
}
