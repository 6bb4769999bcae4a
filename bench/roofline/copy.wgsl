// Roofline bandwidth probe: dst = src, as vec4<f32>. Bytes moved = 2 x size (read + write).
// Each invocation copies ITEMS vec4s. CONTIGUOUS = false spaces them one workgroup apart
// (consecutive invocations touch consecutive vec4s: coalesced on GPUs); true gives each
// invocation its own contiguous run of ITEMS vec4s. The host picks the variant per adapter class.
// Requires the `CopyParams` uniform struct (prepended by the host): n = vec4 count.

override WG: u32 = 256;
override ITEMS: u32 = 4;
override CONTIGUOUS: bool = false;

@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> params: CopyParams;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let group = wg.x + wg.y * nwg.x;
  let base = group * WG * ITEMS;
  for (var i = 0u; i < ITEMS; i++) {
    var idx: u32;
    if (CONTIGUOUS) {
      idx = base + li * ITEMS + i;
    } else {
      idx = base + i * WG + li;
    }
    if (idx < params.n) {
      dst[idx] = src[idx];
    }
  }
}
