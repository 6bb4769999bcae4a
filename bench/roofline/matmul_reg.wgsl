// Roofline compute probe, register-blocked, no workgroup memory: C[M, N] = A[M, K] B[K, N],
// row-major f32 viewed as vec4 rows. Each invocation keeps a block of C in registers (8x4 in
// `main_8x4`, 4x4 in `main_4x4`) and walks K four values at a time: per step it loads one vec4
// of A per row and four vec4 rows of B, then does rows x 16 multiply-adds. Consecutive
// invocations take consecutive column blocks, so a subgroup's B loads are contiguous.
// The host guarantees M % rows == 0, N % 4 == 0, K % 4 == 0 and dispatches exactly
// M * N / (rows * 4) invocations (no bounds checks inside the loop).
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
