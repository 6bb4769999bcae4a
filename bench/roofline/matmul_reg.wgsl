// Roofline compute probe, register-blocked, no workgroup memory: C[M, N] = A[M, K] B[K, N],
// row-major f32 viewed as vec4 rows. Each invocation keeps a rows x cols block of C in registers
// (`main_4x4`, `main_8x4`, `main_16x4`, `main_8x8`) and walks K four values at a time: per step
// it loads one vec4 of A per row and four vec4 rows of B per 4 columns, then does rows x cols x 4
// multiply-adds. Consecutive invocations take consecutive column blocks, so a subgroup's B
// loads are contiguous. On a CPU adapter (SwiftShader) every per-lane load is a gather, so the
// larger blocks win until registers spill; on GPUs the tiled probe wins.
// The host guarantees M % rows == 0, N % cols == 0, K % 4 == 0; invocations past the last
// block return before the loop.
// Requires the `MatmulParams` uniform struct (prepended by the host).

override WG: u32 = 64;

@group(0) @binding(0) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> B: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> C: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> params: MatmulParams;

fn mad4(acc: vec4<f32>, a: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) -> vec4<f32> {
  return acc + a.x * b0 + a.y * b1 + a.z * b2 + a.w * b3;
}

fn invocation(wg: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
  return (wg.x + wg.y * nwg.x) * WG + li;
}

@compute @workgroup_size(WG)
fn main_8x4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
  let kv = params.K / 4u;
  let nv = params.N / 4u;
  let id = invocation(wg, nwg, li);
  let col = id % nv;
  let row0 = (id / nv) * 8u;
  if (row0 >= params.M) { return; }
  var c0 = vec4<f32>(0.0); var c1 = vec4<f32>(0.0); var c2 = vec4<f32>(0.0); var c3 = vec4<f32>(0.0);
  var c4 = vec4<f32>(0.0); var c5 = vec4<f32>(0.0); var c6 = vec4<f32>(0.0); var c7 = vec4<f32>(0.0);
  var a = row0 * kv;
  var b = col;
  for (var k = 0u; k < kv; k++) {
    let b0 = B[b]; let b1 = B[b + nv]; let b2 = B[b + 2u * nv]; let b3 = B[b + 3u * nv];
    c0 = mad4(c0, A[a], b0, b1, b2, b3);
    c1 = mad4(c1, A[a + kv], b0, b1, b2, b3);
    c2 = mad4(c2, A[a + 2u * kv], b0, b1, b2, b3);
    c3 = mad4(c3, A[a + 3u * kv], b0, b1, b2, b3);
    c4 = mad4(c4, A[a + 4u * kv], b0, b1, b2, b3);
    c5 = mad4(c5, A[a + 5u * kv], b0, b1, b2, b3);
    c6 = mad4(c6, A[a + 6u * kv], b0, b1, b2, b3);
    c7 = mad4(c7, A[a + 7u * kv], b0, b1, b2, b3);
    a += 1u;
    b += 4u * nv;
  }
  let o = row0 * nv + col;
  C[o] = c0; C[o + nv] = c1; C[o + 2u * nv] = c2; C[o + 3u * nv] = c3;
  C[o + 4u * nv] = c4; C[o + 5u * nv] = c5; C[o + 6u * nv] = c6; C[o + 7u * nv] = c7;
}

@compute @workgroup_size(WG)
fn main_4x4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
  let kv = params.K / 4u;
  let nv = params.N / 4u;
  let id = invocation(wg, nwg, li);
  let col = id % nv;
  let row0 = (id / nv) * 4u;
  if (row0 >= params.M) { return; }
  var c0 = vec4<f32>(0.0); var c1 = vec4<f32>(0.0); var c2 = vec4<f32>(0.0); var c3 = vec4<f32>(0.0);
  var a = row0 * kv;
  var b = col;
  for (var k = 0u; k < kv; k++) {
    let b0 = B[b]; let b1 = B[b + nv]; let b2 = B[b + 2u * nv]; let b3 = B[b + 3u * nv];
    c0 = mad4(c0, A[a], b0, b1, b2, b3);
    c1 = mad4(c1, A[a + kv], b0, b1, b2, b3);
    c2 = mad4(c2, A[a + 2u * kv], b0, b1, b2, b3);
    c3 = mad4(c3, A[a + 3u * kv], b0, b1, b2, b3);
    a += 1u;
    b += 4u * nv;
  }
  let o = row0 * nv + col;
  C[o] = c0; C[o + nv] = c1; C[o + 2u * nv] = c2; C[o + 3u * nv] = c3;
}

@compute @workgroup_size(WG)
fn main_16x4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
  let kv = params.K / 4u;
  let nv = params.N / 4u;
  let id = invocation(wg, nwg, li);
  let col = id % nv;
  let row0 = (id / nv) * 16u;
  if (row0 >= params.M) { return; }
  var c0 = vec4<f32>(0.0); var c1 = vec4<f32>(0.0); var c2 = vec4<f32>(0.0); var c3 = vec4<f32>(0.0);
  var c4 = vec4<f32>(0.0); var c5 = vec4<f32>(0.0); var c6 = vec4<f32>(0.0); var c7 = vec4<f32>(0.0);
  var c8 = vec4<f32>(0.0); var c9 = vec4<f32>(0.0); var c10 = vec4<f32>(0.0); var c11 = vec4<f32>(0.0);
  var c12 = vec4<f32>(0.0); var c13 = vec4<f32>(0.0); var c14 = vec4<f32>(0.0); var c15 = vec4<f32>(0.0);
  var a = row0 * kv;
  var b = col;
  for (var k = 0u; k < kv; k++) {
    let b0 = B[b]; let b1 = B[b + nv]; let b2 = B[b + 2u * nv]; let b3 = B[b + 3u * nv];
    c0 = mad4(c0, A[a], b0, b1, b2, b3);
    c1 = mad4(c1, A[a + kv], b0, b1, b2, b3);
    c2 = mad4(c2, A[a + 2u * kv], b0, b1, b2, b3);
    c3 = mad4(c3, A[a + 3u * kv], b0, b1, b2, b3);
    c4 = mad4(c4, A[a + 4u * kv], b0, b1, b2, b3);
    c5 = mad4(c5, A[a + 5u * kv], b0, b1, b2, b3);
    c6 = mad4(c6, A[a + 6u * kv], b0, b1, b2, b3);
    c7 = mad4(c7, A[a + 7u * kv], b0, b1, b2, b3);
    c8 = mad4(c8, A[a + 8u * kv], b0, b1, b2, b3);
    c9 = mad4(c9, A[a + 9u * kv], b0, b1, b2, b3);
    c10 = mad4(c10, A[a + 10u * kv], b0, b1, b2, b3);
    c11 = mad4(c11, A[a + 11u * kv], b0, b1, b2, b3);
    c12 = mad4(c12, A[a + 12u * kv], b0, b1, b2, b3);
    c13 = mad4(c13, A[a + 13u * kv], b0, b1, b2, b3);
    c14 = mad4(c14, A[a + 14u * kv], b0, b1, b2, b3);
    c15 = mad4(c15, A[a + 15u * kv], b0, b1, b2, b3);
    a += 1u;
    b += 4u * nv;
  }
  let o = row0 * nv + col;
  C[o] = c0; C[o + nv] = c1; C[o + 2u * nv] = c2; C[o + 3u * nv] = c3;
  C[o + 4u * nv] = c4; C[o + 5u * nv] = c5; C[o + 6u * nv] = c6; C[o + 7u * nv] = c7;
  C[o + 8u * nv] = c8; C[o + 9u * nv] = c9; C[o + 10u * nv] = c10; C[o + 11u * nv] = c11;
  C[o + 12u * nv] = c12; C[o + 13u * nv] = c13; C[o + 14u * nv] = c14; C[o + 15u * nv] = c15;
}

// 8 rows x 8 columns (two vec4 column blocks side by side).
@compute @workgroup_size(WG)
fn main_8x8(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
  let kv = params.K / 4u;
  let nv = params.N / 4u;
  let id = invocation(wg, nwg, li);
  let col = (id % (nv / 2u)) * 2u;
  let row0 = (id / (nv / 2u)) * 8u;
  if (row0 >= params.M) { return; }
  var c00 = vec4<f32>(0.0); var c10 = vec4<f32>(0.0); var c20 = vec4<f32>(0.0); var c30 = vec4<f32>(0.0);
  var c40 = vec4<f32>(0.0); var c50 = vec4<f32>(0.0); var c60 = vec4<f32>(0.0); var c70 = vec4<f32>(0.0);
  var c01 = vec4<f32>(0.0); var c11 = vec4<f32>(0.0); var c21 = vec4<f32>(0.0); var c31 = vec4<f32>(0.0);
  var c41 = vec4<f32>(0.0); var c51 = vec4<f32>(0.0); var c61 = vec4<f32>(0.0); var c71 = vec4<f32>(0.0);
  var a = row0 * kv;
  var b = col;
  for (var k = 0u; k < kv; k++) {
    let b0 = B[b]; let b1 = B[b + nv]; let b2 = B[b + 2u * nv]; let b3 = B[b + 3u * nv];
    let d0 = B[b + 1u]; let d1 = B[b + 1u + nv]; let d2 = B[b + 1u + 2u * nv]; let d3 = B[b + 1u + 3u * nv];
    var x = A[a];
    c00 = mad4(c00, x, b0, b1, b2, b3); c01 = mad4(c01, x, d0, d1, d2, d3);
    x = A[a + kv];
    c10 = mad4(c10, x, b0, b1, b2, b3); c11 = mad4(c11, x, d0, d1, d2, d3);
    x = A[a + 2u * kv];
    c20 = mad4(c20, x, b0, b1, b2, b3); c21 = mad4(c21, x, d0, d1, d2, d3);
    x = A[a + 3u * kv];
    c30 = mad4(c30, x, b0, b1, b2, b3); c31 = mad4(c31, x, d0, d1, d2, d3);
    x = A[a + 4u * kv];
    c40 = mad4(c40, x, b0, b1, b2, b3); c41 = mad4(c41, x, d0, d1, d2, d3);
    x = A[a + 5u * kv];
    c50 = mad4(c50, x, b0, b1, b2, b3); c51 = mad4(c51, x, d0, d1, d2, d3);
    x = A[a + 6u * kv];
    c60 = mad4(c60, x, b0, b1, b2, b3); c61 = mad4(c61, x, d0, d1, d2, d3);
    x = A[a + 7u * kv];
    c70 = mad4(c70, x, b0, b1, b2, b3); c71 = mad4(c71, x, d0, d1, d2, d3);
    a += 1u;
    b += 4u * nv;
  }
  let o = row0 * nv + col;
  C[o] = c00; C[o + nv] = c10; C[o + 2u * nv] = c20; C[o + 3u * nv] = c30;
  C[o + 4u * nv] = c40; C[o + 5u * nv] = c50; C[o + 6u * nv] = c60; C[o + 7u * nv] = c70;
  C[o + 1u] = c01; C[o + 1u + nv] = c11; C[o + 1u + 2u * nv] = c21; C[o + 1u + 3u * nv] = c31;
  C[o + 1u + 4u * nv] = c41; C[o + 1u + 5u * nv] = c51; C[o + 1u + 6u * nv] = c61; C[o + 1u + 7u * nv] = c71;
}
