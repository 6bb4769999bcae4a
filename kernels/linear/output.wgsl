// Chunked form, pass 5: outputs of one (chunk, value head), one block of 4 rows x 4 value
// columns per invocation (register-blocked over vec4 key channels):
//   o_i = QG_i . HS[c] + sum_{j <= i} P[i, j] u_j       (u = V_new with DELTA, else v)
// With NORM the denominator is the same expression for the all-ones column z (column V of HS):
//   o_i /= QG_i . z_c + sum_{j <= i} P[i, j] + 1e-10.

@group(0) @binding(0) var<storage, read> QG: array<vec4<f32>>;   // [T, HV, K4]
@group(0) @binding(1) var<storage, read> PT: array<vec4<f32>>;   // [nChunks, HV, CH(j), CH(i)]
@group(0) @binding(2) var<storage, read> UB: array<vec4<f32>>;   // [T, HV, V4]
@group(0) @binding(3) var<storage, read> HS: array<vec4<f32>>;   // [nChunks, HV, KP, VS4]
@group(0) @binding(4) var<storage, read> mt: array<u32>;
@group(0) @binding(5) var<storage, read_write> Ob: array<u32>;   // [T, HV, V] OUT_DT
@group(0) @binding(6) var<uniform> params: LinParams;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let per = 16u * params.V4;
  let wgPer = (per + WG - 1u) / WG;
  let gid = lin_wg(wg, nwg);
  let id = gid / wgPer;
  let item = (gid % wgPer) * WG + lid;
  if (id >= params.nChunks * params.HV || item >= per) {
    return;
  }
  let rb = item / params.V4;
  let quad = item % params.V4;
  let c = id / params.HV;
  let hv = id % params.HV;
  let start = mt[params.chunkOff + 3u * c];
  let len = mt[params.chunkOff + 3u * c + 1u];
  if (4u * rb >= len) {
    return;
  }
  let K4 = params.K4;
  let V = params.V;
  let V4 = params.V4;
  let VS4 = params.VS4;
  let HV = params.HV;
  let r0 = 4u * rb;
  let t0 = start + r0;
  let t1 = start + min(r0 + 1u, len - 1u);
  let t2 = start + min(r0 + 2u, len - 1u);
  let t3 = start + min(r0 + 3u, len - 1u);
  // named accumulators (not an array): the software adapter keeps them in registers
  var a0 = vec4<f32>(0.0);
  var a1 = vec4<f32>(0.0);
  var a2 = vec4<f32>(0.0);
  var a3 = vec4<f32>(0.0);
  var den = vec4<f32>(0.0);
  let hb = id * params.KP * VS4;
  var r = hb + quad;
  for (var d4 = 0u; d4 < K4; d4++) {
    let h0 = HS[r];
    let h1 = HS[r + VS4];
    let h2 = HS[r + 2u * VS4];
    let h3 = HS[r + 3u * VS4];
    let q0 = QG[(t0 * HV + hv) * K4 + d4];
    let q1 = QG[(t1 * HV + hv) * K4 + d4];
    let q2 = QG[(t2 * HV + hv) * K4 + d4];
    let q3 = QG[(t3 * HV + hv) * K4 + d4];
    a0 = mad4(a0, q0, h0, h1, h2, h3);
    a1 = mad4(a1, q1, h0, h1, h2, h3);
    a2 = mad4(a2, q2, h0, h1, h2, h3);
    a3 = mad4(a3, q3, h0, h1, h2, h3);
    if (NORM) {
      let zr = hb + 4u * d4 * VS4 + V / 4u;
      let zc = V % 4u;
      let z = vec4<f32>(HS[zr][zc], HS[zr + VS4][zc], HS[zr + 2u * VS4][zc], HS[zr + 3u * VS4][zc]);
      den += vec4<f32>(dot(q0, z), dot(q1, z), dot(q2, z), dot(q3, z));
    }
    r += 4u * VS4;
  }
  let jEnd = min(r0 + 4u, len);
  var pj = (id * CH * CH + r0) / 4u;
  var uj = (start * HV + hv) * V4 + quad;
  for (var j = 0u; j < jEnd; j++) {
    let pt = PT[pj];
    let u = UB[uj];
    a0 += pt.x * u;
    a1 += pt.y * u;
    a2 += pt.z * u;
    a3 += pt.w * u;
    if (NORM) {
      den += pt;
    }
    pj += CH / 4u;
    uj += HV * V4;
  }
  if (NORM) {
    den += vec4<f32>(1e-10);
    a0 /= den.x;
    a1 /= den.y;
    a2 /= den.z;
    a3 /= den.w;
  }
  let c0 = 4u * quad;
  let nc = min(4u, V - c0);
  store_o((t0 * HV + hv) * V + c0, nc, a0);
  if (r0 + 1u < len) {
    store_o((t1 * HV + hv) * V + c0, nc, a1);
  }
  if (r0 + 2u < len) {
    store_o((t2 * HV + hv) * V + c0, nc, a2);
  }
  if (r0 + 3u < len) {
    store_o((t3 * HV + hv) * V + c0, nc, a3);
  }
}

fn mad4(acc: vec4<f32>, a: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) -> vec4<f32> {
  return acc + a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3;
}

fn store_o(ob: u32, nc: u32, o: vec4<f32>) {
  if (OUT_DT == 0u) {
    Ob[ob] = bitcast<u32>(o.x);
    if (nc > 1u) {
      Ob[ob + 1u] = bitcast<u32>(o.y);
    }
    if (nc > 2u) {
      Ob[ob + 2u] = bitcast<u32>(o.z);
    }
    if (nc > 3u) {
      Ob[ob + 3u] = bitcast<u32>(o.w);
    }
  } else {
    Ob[ob >> 1u] = st_pack_pair(o.x, o.y, OUT_DT);
    if (nc > 2u) {
      Ob[(ob >> 1u) + 1u] = st_pack_pair(o.z, o.w, OUT_DT);
    }
  }
}
