// Quest summaries of the pages an append touched: per (page, KV head, channel) the min and max of
// the stored keys (decoded exactly), rounded outwards to f16 (largest half <= min, smallest
// half >= max), in the KV cache's layout minmax [pages, HKV, 2, D] f16 pairs (min then max),
// indexed by pool page id. tables[1] pages are listed at params.touch as (page, rows used).
// int8 pages decode each code with its row's scale (int8.wgsl). Needs shaders/storage.wgsl,
// common.wgsl, int8.wgsl and AppendParams.

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

// The host's running min (`x < m`) or max (`x > m`) step in integer keys: subnormals are compared
// as they are (an adapter's min/max may flush them), -0 equals +0 (the first one seen stays, as
// on the host), NaN never replaces the bound.
fn sm_key(x: f32) -> u32 {
  let f = bitcast<u32>(x);
  return ap_key(bitcast<f32>(select(f, 0u, f == 0x80000000u)));
}

fn sm_pick(m: f32, x: f32, lower: bool) -> f32 {
  if ((bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u) {
    return m;
  }
  let kx = sm_key(x);
  let km = sm_key(m);
  return select(m, x, select(kx > km, kx < km, lower));
}

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
  let epw = select(select(2u, 4u, PAGE_DT == 3u), 1u, PAGE_DT == 0u);
  let base = slot * params.pageWords * epw + h * P * D + 2u * c;
  let inf = bitcast<f32>(ap_inf_bits);
  var mn = vec2<f32>(inf, inf);
  var mx = vec2<f32>(-inf, -inf);
  for (var r = 0u; r < len; r++) {
    let e = base + r * D;
    var x: vec2<f32>;
    if (PAGE_DT == 0u) {
      x = vec2<f32>(bitcast<f32>(pages[e]), bitcast<f32>(pages[e + 1u]));
    } else if (PAGE_DT == 3u) {
      // int8: codes 2c, 2c + 1 share a word; the row's K scale decodes them as the host does.
      let w = pages[e >> 2u] >> (8u * (e & 3u));
      let sb = pages[slot * params.pageWords + params.scaleOffWords + h * P + r];
      x = vec2<f32>(i8_dequant(i32(w << 24u) >> 24u, sb), i8_dequant(i32(w << 16u) >> 24u, sb));
    } else {
      let w = pages[e >> 1u];
      x = vec2<f32>(ap_decode(w, 0u, PAGE_DT), ap_decode(w, 1u, PAGE_DT));
    }
    mn = vec2<f32>(sm_pick(mn.x, x.x, true), sm_pick(mn.y, x.y, true));
    mx = vec2<f32>(sm_pick(mx.x, x.x, false), sm_pick(mx.y, x.y, false));
  }
  let o = (slot * HKV + h) * D;
  summ[o + c] = ap_f16_bound(mn.x, false) | (ap_f16_bound(mn.y, false) << 16u);
  summ[o + D / 2u + c] = ap_f16_bound(mx.x, true) | (ap_f16_bound(mx.y, true) << 16u);
}
