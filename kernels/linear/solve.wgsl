// Chunked form, pass 3b (delta rule only): the WY/UT representation of one (chunk, value head),
// W = T (beta e^{G} k) [len, K] and U = T (beta v) [len, V] with T = (I + A)^-1 from tinv.wgsl,
// as a register-blocked product: one block of 4 rows x one vec4 of columns per invocation.
// The chunk's new values are then V_new = U - W S_0 (scan.wgsl).

@group(0) @binding(0) var<storage, read> TT: array<vec4<f32>>;   // [nChunks, HV, CH(j), CH(i)]
@group(0) @binding(1) var<storage, read> KG: array<vec4<f32>>;   // [T, HV, K4]
@group(0) @binding(2) var<storage, read> VC: array<vec4<f32>>;   // [T, HV, V4]
@group(0) @binding(3) var<storage, read> BE: array<f32>;
@group(0) @binding(4) var<storage, read> mt: array<u32>;
@group(0) @binding(5) var<storage, read_write> WM: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> UM: array<vec4<f32>>;
@group(0) @binding(7) var<uniform> p: LinParams;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let K4 = p.K4;
  let V4 = p.V4;
  let HV = p.HV;
  let per = 16u * (K4 + V4);
  let wgPer = (per + WG - 1u) / WG;
  let gid = lin_wg(wg, nwg);
  let id = gid / wgPer;
  let item = (gid % wgPer) * WG + lid;
  if (id >= p.nChunks * HV || item >= per) {
    return;
  }
  let rb = item / (K4 + V4);
  let col = item % (K4 + V4);
  let c = id / HV;
  let hv = id % HV;
  let start = mt[p.chunkOff + 3u * c];
  let len = mt[p.chunkOff + 3u * c + 1u];
  let r0 = 4u * rb;
  if (r0 >= len) {
    return;
  }
  var a0 = vec4<f32>(0.0);
  var a1 = vec4<f32>(0.0);
  var a2 = vec4<f32>(0.0);
  var a3 = vec4<f32>(0.0);
  let jEnd = min(r0 + 4u, len);
  var tj = (id * CH * CH + r0) / 4u;
  for (var j = 0u; j < jEnd; j++) {
    let tr = TT[tj];
    let t = start + j;
    var x: vec4<f32>;
    if (col < K4) {
      x = KG[(t * HV + hv) * K4 + col];
    } else {
      x = BE[t * HV + hv] * VC[(t * HV + hv) * V4 + col - K4];
    }
    a0 += tr.x * x;
    a1 += tr.y * x;
    a2 += tr.z * x;
    a3 += tr.w * x;
    tj += CH / 4u;
  }
  let t0 = start + r0;
  if (col < K4) {
    let b = (t0 * HV + hv) * K4 + col;
    WM[b] = a0;
    if (r0 + 1u < len) {
      WM[b + HV * K4] = a1;
    }
    if (r0 + 2u < len) {
      WM[b + 2u * HV * K4] = a2;
    }
    if (r0 + 3u < len) {
      WM[b + 3u * HV * K4] = a3;
    }
  } else {
    let b = (t0 * HV + hv) * V4 + col - K4;
    UM[b] = a0;
    if (r0 + 1u < len) {
      UM[b + HV * V4] = a1;
    }
    if (r0 + 2u < len) {
      UM[b + 2u * HV * V4] = a2;
    }
    if (r0 + 3u < len) {
      UM[b + 3u * HV * V4] = a3;
    }
  }
}
