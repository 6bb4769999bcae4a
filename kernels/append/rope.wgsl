// RoPE on rows x [rows, H, D] (a query), out of place (x -> out) or in place (out only). Row i
// sits at position tables[1 + i] (tables[0] = rows this step). One invocation per 4-element unit
// (see ap_unit): a unit reads all it writes, so in place is race-free. Dims past RD are copied
// (out of place) or left alone (in place). Needs shaders/storage.wgsl, common.wgsl.

// @binding(0) x_in: array<u32>, [rows, H, D] IN_DT; out of place only (optional, append.ts ROPE_BINDINGS)
@group(0) @binding(1) var<storage, read_write> x_out: array<u32>;  // [rows, H, D] OUT_DT
@group(0) @binding(2) var<storage, read> tables: array<u32>;
@group(0) @binding(3) var<storage, read> cossin: array<vec2<f32>>; // [maxPosition, RD / 2]

override WG: u32 = 64;
override IN_DT: u32 = 0;
override OUT_DT: u32 = 0;
override H: u32 = 1;
override D: u32 = 64;
override RD: u32 = 64;
override STYLE: u32 = 0;
override IN_PLACE: bool = false;

fn x_load(i: u32) -> f32 {
  let w = select(i, i >> 1u, IN_DT != 0u);
  if (IN_PLACE) {
    return ap_decode(x_out[w], i, IN_DT);
  }
  return ap_decode(x_in[w], i, IN_DT);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let id = gid.x + gid.y * nwg.x * WG;
  let perRow = H * (D / 4u);
  let row = id / perRow;
  if (row >= tables[0]) {
    return;
  }
  let rem = id - row * perRow;
  let h = rem / (D / 4u);
  let u = rem - h * (D / 4u);
  let un = ap_unit(u, RD, STYLE);
  let base = (row * H + h) * D;
  if (!un.rotary && IN_PLACE) {
    return;
  }
  if (!un.rotary && IN_DT == OUT_DT) {
    let epw = select(2u, 1u, OUT_DT == 0u);
    for (var j = 0u; j < 4u / epw; j++) {
      x_out[(base + 4u * u) / epw + j] = x_in[(base + 4u * u) / epw + j];
    }
    return;
  }
  var a = vec4<f32>(x_load(base + un.e.x), x_load(base + un.e.y), x_load(base + un.e.z), x_load(base + un.e.w));
  if (un.rotary) {
    let pos = tables[1u + row];
    let cb = pos * (RD / 2u) + 2u * u;
    a = ap_rotate(a, cossin[cb], cossin[cb + 1u], STYLE);
  }
  if (OUT_DT == 0u) {
    x_out[base + un.e.x] = bitcast<u32>(a.x);
    x_out[base + un.e.y] = bitcast<u32>(a.y);
    x_out[base + un.e.z] = bitcast<u32>(a.z);
    x_out[base + un.e.w] = bitcast<u32>(a.w);
  } else {
    x_out[(base + un.e.x) >> 1u] = ap_pack(a.x, a.y, OUT_DT);
    x_out[(base + un.e.z) >> 1u] = ap_pack(a.z, a.w, OUT_DT);
  }
}
