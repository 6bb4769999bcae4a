// Roofline compute probe for GPUs: the classic shared-memory tiled matmul. A 16x16 workgroup
// computes a 64x64 tile of C[M, N] = A[M, K] B[K, N] (row-major f32); each invocation keeps a
// 4x4 block in registers. Per 16-wide K step every invocation loads one vec4 of A and one of B
// into workgroup memory (coalesced), A transposed so the inner loop reads 4 consecutive rows.
// The host guarantees M % 64 == 0, N % 64 == 0, K % 16 == 0 and dispatches (N/64, M/64).
// Requires the `MatmulParams` uniform struct (prepended by the host).

const TILE: u32 = 64u;
const TK: u32 = 16u;

@group(0) @binding(0) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> B: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> C: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> params: MatmulParams;

// As[k][m] (transposed A tile, 16 x 64 scalars); Bs[k][n / 4] (16 x 16 vec4).
var<workgroup> As: array<f32, 1024>;
var<workgroup> Bs: array<vec4<f32>, 256>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let kv = params.K / 4u;
  let nv = params.N / 4u;
  let tileRow = wg.y * TILE;
  let tileCol4 = wg.x * (TILE / 4u);
  // Loader roles: A tile is 64 rows x 4 vec4; B tile is 16 rows x 16 vec4.
  let aRow = li / 4u;
  let aK4 = li % 4u;
  let bK = li / 16u;
  let bC4 = li % 16u;
  var c0 = vec4<f32>(0.0); var c1 = vec4<f32>(0.0); var c2 = vec4<f32>(0.0); var c3 = vec4<f32>(0.0);
  for (var k0 = 0u; k0 < params.K; k0 += TK) {
    let av = A[(tileRow + aRow) * kv + k0 / 4u + aK4];
    As[(aK4 * 4u + 0u) * TILE + aRow] = av.x;
    As[(aK4 * 4u + 1u) * TILE + aRow] = av.y;
    As[(aK4 * 4u + 2u) * TILE + aRow] = av.z;
    As[(aK4 * 4u + 3u) * TILE + aRow] = av.w;
    Bs[bK * 16u + bC4] = B[(k0 + bK) * nv + tileCol4 + bC4];
    workgroupBarrier();
    for (var kk = 0u; kk < TK; kk++) {
      let b = Bs[kk * 16u + lid.x];
      let r = kk * TILE + lid.y * 4u;
      c0 += As[r] * b;
      c1 += As[r + 1u] * b;
      c2 += As[r + 2u] * b;
      c3 += As[r + 3u] * b;
    }
    workgroupBarrier();
  }
  let o = (tileRow + lid.y * 4u) * nv + tileCol4 + lid.x;
  C[o] = c0; C[o + nv] = c1; C[o + 2u * nv] = c2; C[o + 3u * nv] = c3;
}
