// Quest summaries of the pages an append touched: per (page, KV head, channel) the min and max of
// the stored keys (decoded exactly), rounded outwards to f16 (largest half <= min, smallest
// half >= max), in the KV cache's layout minmax [pages, HKV, 2, D] f16 pairs (min then max),
// indexed by pool page id. tables[1] pages are listed at params.touch as (page, rows used).
// Needs shaders/storage.wgsl, common.wgsl and AppendParams.

@group(0) @binding(0) var<storage, read> pages: array<u32>;
@group(0) @binding(1) var<storage, read> tables: array<u32>;
@group(0) @binding(2) var<storage, read_write> summ: array<u32>;
@group(0) @binding(3) var<uniform> params: AppendParams;

override WG: u32 = 64;
override PAGE_DT: u32 = 0;
override HKV: u32 = 1;
override D: u32 = 64;
override P: u32 = 16;

var<private> ap_inf_bits: u32 = 0x7f800000u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let id = gid.x + gid.y * nwg.x * WG;
  let per = HKV * (D / 2u);
  let t = id / per;
  if (t >= tables[1]) {
    return;
  }
  let rem = id - t * per;
  let h = rem / (D / 2u);
  let c = rem - h * (D / 2u);
  let slot = tables[params.touch + 2u * t];
  let len = min(tables[params.touch + 2u * t + 1u], P);
  let epw = select(2u, 1u, PAGE_DT == 0u);
  let base = slot * params.pageWords * epw + h * P * D + 2u * c;
  let inf = bitcast<f32>(ap_inf_bits);
  var mn = vec2<f32>(inf, inf);
  var mx = vec2<f32>(-inf, -inf);
  for (var r = 0u; r < len; r++) {
    let e = base + r * D;
    var x: vec2<f32>;
    if (PAGE_DT == 0u) {
      x = vec2<f32>(bitcast<f32>(pages[e]), bitcast<f32>(pages[e + 1u]));
    } else {
      let w = pages[e >> 1u];
      x = vec2<f32>(ap_decode(w, 0u, PAGE_DT), ap_decode(w, 1u, PAGE_DT));
    }
    mn = min(mn, x);
    mx = max(mx, x);
  }
  let o = (slot * HKV + h) * D;
  summ[o + c] = ap_f16_bound(mn.x, false) | (ap_f16_bound(mn.y, false) << 16u);
  summ[o + D / 2u + c] = ap_f16_bound(mx.x, true) | (ap_f16_bound(mx.y, true) << 16u);
}
