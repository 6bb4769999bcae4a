// Roofline compute probe for CPU adapters with subgroups: C[M, N] = A[M, K] B[K, N], row-major
// f32 viewed as vec4 rows. On SwiftShader a subgroup is one 4-lane SIMD register and every load
// whose address varies per lane is a gather (4 loads), even when all lanes read the same address.
// So here the 4 lanes of a quad own different rows of A (every gathered value is useful) and
// share a strip of B columns: for each 4-value step of K, lane q loads one vec4 of B row 4k + q
// and `quadBroadcast` hands every lane the whole 4x4 block of B. Each lane keeps a rows x cols
// block of C in registers: `main_8x8` (8 rows, 8 columns: quad tile 32 x 8) and `main_4x16`
// (4 rows, 16 columns: quad tile 16 x 16). Lane q's rows are r0 + q, r0 + q + 4, ...
// The host guarantees M % (4 rows) == 0, N % cols == 0, K % 4 == 0, and dispatches exactly one
// invocation per (lane, quad tile) in whole workgroups (no early return: the broadcasts stay in
// uniform control flow). Needs the `subgroups` feature (quad operations), subgroups of >= 4.
// Requires the `MatmulParams` uniform struct (prepended by the host).

override WG: u32 = 64;

@group(0) @binding(0) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> B: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> C: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> params: MatmulParams;

fn mad4(acc: vec4<f32>, a: vec4<f32>, b: mat4x4<f32>) -> vec4<f32> {
  return acc + a.x * b[0] + a.y * b[1] + a.z * b[2] + a.w * b[3];
}

// The 4x4 block of B held one row per lane, as seen by every lane of the quad.
fn quad_block(mine: vec4<f32>) -> mat4x4<f32> {
  return mat4x4<f32>(quadBroadcast(mine, 0u), quadBroadcast(mine, 1u), quadBroadcast(mine, 2u), quadBroadcast(mine, 3u));
}

@compute @workgroup_size(WG)
fn main_8x8(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) sl: u32) {
  let kv = params.K / 4u;
  let nv = params.N / 4u;
  let id = (wg.x + wg.y * nwg.x) * WG + li;
  let lane = sl % 4u;
  let quad = id / 4u;
  let strips = nv / 2u;
  let col = (quad % strips) * 2u;
  let r0 = (quad / strips) * 32u + lane;
  var c00 = vec4<f32>(0.0); var c10 = vec4<f32>(0.0); var c20 = vec4<f32>(0.0); var c30 = vec4<f32>(0.0);
  var c40 = vec4<f32>(0.0); var c50 = vec4<f32>(0.0); var c60 = vec4<f32>(0.0); var c70 = vec4<f32>(0.0);
  var c01 = vec4<f32>(0.0); var c11 = vec4<f32>(0.0); var c21 = vec4<f32>(0.0); var c31 = vec4<f32>(0.0);
  var c41 = vec4<f32>(0.0); var c51 = vec4<f32>(0.0); var c61 = vec4<f32>(0.0); var c71 = vec4<f32>(0.0);
  let a0 = r0 * kv;
  let step = 4u * kv; // 4 rows of A
  var b = lane * nv + col;
  for (var k = 0u; k < kv; k++) {
    let p = quad_block(B[b]);
    let q = quad_block(B[b + 1u]);
    var x = A[a0 + k];
    c00 = mad4(c00, x, p); c01 = mad4(c01, x, q);
    x = A[a0 + step + k];
    c10 = mad4(c10, x, p); c11 = mad4(c11, x, q);
    x = A[a0 + 2u * step + k];
    c20 = mad4(c20, x, p); c21 = mad4(c21, x, q);
    x = A[a0 + 3u * step + k];
    c30 = mad4(c30, x, p); c31 = mad4(c31, x, q);
    x = A[a0 + 4u * step + k];
    c40 = mad4(c40, x, p); c41 = mad4(c41, x, q);
    x = A[a0 + 5u * step + k];
    c50 = mad4(c50, x, p); c51 = mad4(c51, x, q);
    x = A[a0 + 6u * step + k];
    c60 = mad4(c60, x, p); c61 = mad4(c61, x, q);
    x = A[a0 + 7u * step + k];
    c70 = mad4(c70, x, p); c71 = mad4(c71, x, q);
    b += 4u * nv;
  }
  let o = r0 * nv + col;
  let os = 4u * nv;
  C[o] = c00; C[o + os] = c10; C[o + 2u * os] = c20; C[o + 3u * os] = c30;
  C[o + 4u * os] = c40; C[o + 5u * os] = c50; C[o + 6u * os] = c60; C[o + 7u * os] = c70;
  C[o + 1u] = c01; C[o + 1u + os] = c11; C[o + 1u + 2u * os] = c21; C[o + 1u + 3u * os] = c31;
  C[o + 1u + 4u * os] = c41; C[o + 1u + 5u * os] = c51; C[o + 1u + 6u * os] = c61; C[o + 1u + 7u * os] = c71;
}

@compute @workgroup_size(WG)
fn main_4x16(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) sl: u32) {
  let kv = params.K / 4u;
  let nv = params.N / 4u;
  let id = (wg.x + wg.y * nwg.x) * WG + li;
  let lane = sl % 4u;
  let quad = id / 4u;
  let strips = nv / 4u;
  let col = (quad % strips) * 4u;
  let r0 = (quad / strips) * 16u + lane;
  var c00 = vec4<f32>(0.0); var c01 = vec4<f32>(0.0); var c02 = vec4<f32>(0.0); var c03 = vec4<f32>(0.0);
  var c10 = vec4<f32>(0.0); var c11 = vec4<f32>(0.0); var c12 = vec4<f32>(0.0); var c13 = vec4<f32>(0.0);
  var c20 = vec4<f32>(0.0); var c21 = vec4<f32>(0.0); var c22 = vec4<f32>(0.0); var c23 = vec4<f32>(0.0);
  var c30 = vec4<f32>(0.0); var c31 = vec4<f32>(0.0); var c32 = vec4<f32>(0.0); var c33 = vec4<f32>(0.0);
  let a0 = r0 * kv;
  let step = 4u * kv;
  var b = lane * nv + col;
  for (var k = 0u; k < kv; k++) {
    let p0 = quad_block(B[b]);
    let p1 = quad_block(B[b + 1u]);
    let p2 = quad_block(B[b + 2u]);
    let p3 = quad_block(B[b + 3u]);
    var x = A[a0 + k];
    c00 = mad4(c00, x, p0); c01 = mad4(c01, x, p1); c02 = mad4(c02, x, p2); c03 = mad4(c03, x, p3);
    x = A[a0 + step + k];
    c10 = mad4(c10, x, p0); c11 = mad4(c11, x, p1); c12 = mad4(c12, x, p2); c13 = mad4(c13, x, p3);
    x = A[a0 + 2u * step + k];
    c20 = mad4(c20, x, p0); c21 = mad4(c21, x, p1); c22 = mad4(c22, x, p2); c23 = mad4(c23, x, p3);
    x = A[a0 + 3u * step + k];
    c30 = mad4(c30, x, p0); c31 = mad4(c31, x, p1); c32 = mad4(c32, x, p2); c33 = mad4(c33, x, p3);
    b += 4u * nv;
  }
  let o = r0 * nv + col;
  let os = 4u * nv;
  C[o] = c00; C[o + 1u] = c01; C[o + 2u] = c02; C[o + 3u] = c03;
  C[o + os] = c10; C[o + os + 1u] = c11; C[o + os + 2u] = c12; C[o + os + 3u] = c13;
  C[o + 2u * os] = c20; C[o + 2u * os + 1u] = c21; C[o + 2u * os + 2u] = c22; C[o + 2u * os + 3u] = c23;
  C[o + 3u * os] = c30; C[o + 3u * os + 1u] = c31; C[o + 3u * os + 2u] = c32; C[o + 3u * os + 3u] = c33;
}
