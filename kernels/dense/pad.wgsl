// Row copy with a new row width, for dense attention's padded head dims (pad.ts): destination
// element (r, c) of rows of `dst_stride` elements is source element (r, c) of rows of
// `src_stride` elements where c < width, else 0. Bits are copied, never converted. One invocation
// per destination word; HALF: 16-bit elements (f16/bf16), two per word, a row of either side
// possibly starting in the middle of a word. No loops.
// Needs PadParams.

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<uniform> params: PadParams;

override WG: u32 = 64;
override HALF: bool = false;

// The 16 bits of element e of the source.
fn src_half(e: u32) -> u32 {
  return (src[e >> 1u] >> ((e & 1u) * 16u)) & 0xffffu;
}

// The 16 bits of destination element e (f16/bf16): its source element, or 0 past `width`.
fn dst_half(e: u32) -> u32 {
  let r = e / params.dst_stride;
  let c = e - r * params.dst_stride;
  if (c < params.width) {
    return src_half(r * params.src_stride + c);
  }
  return 0u;
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let w = gid.x + gid.y * nwg.x * WG;
  if (w >= params.words) {
    return;
  }
  if (HALF) {
    // destination elements 2w and 2w + 1, each in its own row (a row of odd width ends
    // mid-word); the high half of a last word past the tensor keeps the bits that follow it
    var hi = dst[w] >> 16u;
    if (2u * w + 1u < params.elems) {
      hi = dst_half(2u * w + 1u);
    }
    dst[w] = dst_half(2u * w) | (hi << 16u);
  } else {
    let r = w / params.dst_stride;
    let c = w - r * params.dst_stride;
    var x = 0u;
    if (c < params.width) {
      x = src[r * params.src_stride + c];
    }
    dst[w] = x;
  }
}
