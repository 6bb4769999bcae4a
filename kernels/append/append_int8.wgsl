// Append into int8 pages: one invocation per (row, K/V block, KV head) owns that page row and its
// scale. Pass 1 takes the row's scale s = max |x| over the (rotated, for K) values, pass 2 writes
// the codes round(x * 127 / s) (int8.wgsl: the host codec's codes bit for bit) and s into the
// page's scales [2, HKV, P] f32. A token's bytes depend on its own row only, so earlier rows of the
// page never change. Rotation (fused RoPE on K) is the f32 path's (ap_unit / ap_rotate), computed
// identically in both passes. Needs shaders/storage.wgsl, common.wgsl, int8.wgsl, AppendParams.

@group(0) @binding(0) var<storage, read> k_in: array<u32>;        // [rows, HKV, D] IN_DT
@group(0) @binding(1) var<storage, read> v_in: array<u32>;        // [rows, HKV, DV] IN_DT
@group(0) @binding(2) var<storage, read_write> pages: array<u32>; // the pool
@group(0) @binding(3) var<storage, read> tables: array<u32>;
// @binding(4) cossin: array<vec2<f32>>, [maxPosition, RD / 2] (cos, sin); RoPE only (optional, append.ts)
@group(0) @binding(5) var<uniform> params: AppendParams;

override WG: u32 = 64;
override IN_DT: u32 = 0;
override HKV: u32 = 1;
override D: u32 = 64;
override DV: u32 = 64;
override P: u32 = 16;
override RD: u32 = 0;     // rotary dims of K (0: no RoPE)
override STYLE: u32 = 0;  // 0 rotate-half, 1 interleaved

fn in_load(is_v: bool, i: u32) -> f32 {
  let w = select(i, i >> 1u, IN_DT != 0u);
  if (is_v) {
    return ap_decode(v_in[w], i, IN_DT);
  }
  return ap_decode(k_in[w], i, IN_DT);
}

// The 4 values of unit u of the row at element offset inBase (rotated when the unit is rotary).
fn unit_values(is_v: bool, inBase: u32, pos: u32, un: ApUnit, u: u32) -> vec4<f32> {
  var a = vec4<f32>(in_load(is_v, inBase + un.e.x), in_load(is_v, inBase + un.e.y), in_load(is_v, inBase + un.e.z), in_load(is_v, inBase + un.e.w));
  if (un.rotary) {
    let cb = pos * (RD / 2u) + 2u * u;
    a = ap_rotate(a, cossin[cb], cossin[cb + 1u], STYLE);
  }
  return a;
}

fn put_code(rowWord: u32, e: u32, q: i32) {
  let w = rowWord + (e >> 2u);
  let sh = 8u * (e & 3u);
  pages[w] = (pages[w] & ~(0xffu << sh)) | ((u32(q) & 0xffu) << sh);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let id = gid.x + gid.y * nwg.x * WG;
  let row = id / (2u * HKV);
  if (row >= tables[0]) {
    return;
  }
  let rem = id - row * 2u * HKV;
  let is_v = rem >= HKV;
  let h = select(rem, rem - HKV, is_v);
  let W = select(D, DV, is_v);
  let b = tables[params.rowB + row];
  let pos = tables[params.rowP + row];
  let slot = tables[params.idx + tables[params.iptr + b] + pos / P];
  let r = pos % P;
  let inBase = (row * HKV + h) * W;
  let blockWords = select(0u, params.vOffWords, is_v);
  let rowWord = slot * params.pageWords + blockWords + ((h * P + r) * W) / 4u;
  let rd = select(RD, 0u, is_v);
  // Pass 1: the row's scale (max of |x| as bits: exact, whatever the adapter does with min/max).
  var sb = 0u;
  for (var u = 0u; u < W / 4u; u++) {
    let a = unit_values(is_v, inBase, pos, ap_unit(u, rd, STYLE), u);
    let m = max(max(bitcast<u32>(a.x) & 0x7fffffffu, bitcast<u32>(a.y) & 0x7fffffffu), max(bitcast<u32>(a.z) & 0x7fffffffu, bitcast<u32>(a.w) & 0x7fffffffu));
    sb = max(sb, m);
  }
  // Pass 2: the codes.
  for (var u = 0u; u < W / 4u; u++) {
    let un = ap_unit(u, rd, STYLE);
    let a = unit_values(is_v, inBase, pos, un, u);
    put_code(rowWord, un.e.x, i8_quant(bitcast<u32>(a.x), sb));
    put_code(rowWord, un.e.y, i8_quant(bitcast<u32>(a.y), sb));
    put_code(rowWord, un.e.z, i8_quant(bitcast<u32>(a.z), sb));
    put_code(rowWord, un.e.w, i8_quant(bitcast<u32>(a.w), sb));
  }
  let which = select(0u, 1u, is_v);
  pages[slot * params.pageWords + params.scaleOffWords + (which * HKV + h) * P + r] = sb;
}
