// Roofline compute probe for CPU adapters with subgroups (SwiftShader: one subgroup = one 4-lane
// SIMD register; a load whose address varies per lane is a gather, even when all lanes read the
// same address). Same contract as matmul_reg.wgsl's `main_8x4` (8x4 block of C per invocation,
// consecutive invocations on consecutive column blocks, so the 4 lanes of a subgroup share rows),
// but A is read once per subgroup: lane q loads A[row][4 (k + q) .. + 3] and
// `subgroupBroadcast` hands those 16 values to every lane. Needs `enable subgroups;`, N % 16 == 0,
// K % 16 == 0, subgroups of at least 4 lanes aligned to 4 invocations, and an exact dispatch (no
// early return, so the broadcasts stay in uniform control flow).
// Requires the `MatmulParams` uniform struct (prepended by the host).

override WG: u32 = 64;

@group(0) @binding(0) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> B: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> C: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> params: MatmulParams;

fn mad4(acc: vec4<f32>, a: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) -> vec4<f32> {
  return acc + a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3;
}

// acc[r] += A[row r][kk-th vec4] * B[4 kk .. 4 kk + 3][col], with the A values already broadcast.
fn step(c: ptr<function, array<vec4<f32>, 8>>, a: array<vec4<f32>, 8>, b: u32, nv: u32) {
  let b0 = B[b]; let b1 = B[b + nv]; let b2 = B[b + 2u * nv]; let b3 = B[b + 3u * nv];
  (*c)[0] = mad4((*c)[0], a[0], b0, b1, b2, b3);
  (*c)[1] = mad4((*c)[1], a[1], b0, b1, b2, b3);
  (*c)[2] = mad4((*c)[2], a[2], b0, b1, b2, b3);
  (*c)[3] = mad4((*c)[3], a[3], b0, b1, b2, b3);
  (*c)[4] = mad4((*c)[4], a[4], b0, b1, b2, b3);
  (*c)[5] = mad4((*c)[5], a[5], b0, b1, b2, b3);
  (*c)[6] = mad4((*c)[6], a[6], b0, b1, b2, b3);
  (*c)[7] = mad4((*c)[7], a[7], b0, b1, b2, b3);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) lane: u32) {
  let kv = params.K / 4u;
  let nv = params.N / 4u;
  let id = (wg.x + wg.y * nwg.x) * WG + li;
  let col = id % nv;
  let row0 = (id / nv) * 8u;
  let q = lane % 4u;
  var c: array<vec4<f32>, 8>;
  var a = row0 * kv + q;
  var b = col;
  for (var k = 0u; k < kv; k += 4u) {
    var v: array<vec4<f32>, 8>;
    for (var r = 0u; r < 8u; r++) { v[r] = A[a + r * kv]; }
    var s: array<vec4<f32>, 8>;
    s = array<vec4<f32>, 8>(subgroupBroadcast(v[0], 0u), subgroupBroadcast(v[1], 0u), subgroupBroadcast(v[2], 0u), subgroupBroadcast(v[3], 0u),
      subgroupBroadcast(v[4], 0u), subgroupBroadcast(v[5], 0u), subgroupBroadcast(v[6], 0u), subgroupBroadcast(v[7], 0u));
    step(&c, s, b, nv);
    s = array<vec4<f32>, 8>(subgroupBroadcast(v[0], 1u), subgroupBroadcast(v[1], 1u), subgroupBroadcast(v[2], 1u), subgroupBroadcast(v[3], 1u),
      subgroupBroadcast(v[4], 1u), subgroupBroadcast(v[5], 1u), subgroupBroadcast(v[6], 1u), subgroupBroadcast(v[7], 1u));
    step(&c, s, b + 4u * nv, nv);
    s = array<vec4<f32>, 8>(subgroupBroadcast(v[0], 2u), subgroupBroadcast(v[1], 2u), subgroupBroadcast(v[2], 2u), subgroupBroadcast(v[3], 2u),
      subgroupBroadcast(v[4], 2u), subgroupBroadcast(v[5], 2u), subgroupBroadcast(v[6], 2u), subgroupBroadcast(v[7], 2u));
    step(&c, s, b + 8u * nv, nv);
    s = array<vec4<f32>, 8>(subgroupBroadcast(v[0], 3u), subgroupBroadcast(v[1], 3u), subgroupBroadcast(v[2], 3u), subgroupBroadcast(v[3], 3u),
      subgroupBroadcast(v[4], 3u), subgroupBroadcast(v[5], 3u), subgroupBroadcast(v[6], 3u), subgroupBroadcast(v[7], 3u));
    step(&c, s, b + 12u * nv, nv);
    a += 4u;
    b += 16u * nv;
  }
  let o = row0 * nv + col;
  for (var r = 0u; r < 8u; r++) { C[o + r * nv] = c[r]; }
}
