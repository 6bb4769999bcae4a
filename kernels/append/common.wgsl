// Shared by append.wgsl and rope.wgsl: exact f16 conversions in integer arithmetic (subnormals
// included, whatever the adapter's float conversions flush, so a page matches the host encoding
// bit for bit), the conservative f16 rounding of page summaries, and the rotation of one
// 4-element unit of a row. Needs shaders/storage.wgsl (st_bf16_bits).

// IEEE half bits -> f32, exact.
fn ap_f16_to_f32(h: u32) -> f32 {
  let s = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  if (e == 0u) {
    let v = f32(m) * 5.9604644775390625e-8; // m * 2^-24, exact
    return bitcast<f32>(bitcast<u32>(v) | s);
  }
  if (e == 31u) {
    return bitcast<f32>(s | 0x7f800000u | (m << 13u));
  }
  return bitcast<f32>(s | ((e + 112u) << 23u) | (m << 13u));
}

// f32 -> IEEE half bits, round to nearest even; overflow gives +-inf, NaN a quiet NaN.
fn ap_f16_bits(x: f32) -> u32 {
  let f = bitcast<u32>(x);
  let s = (f >> 16u) & 0x8000u;
  let ex = (f >> 23u) & 0xffu;
  var m = f & 0x7fffffu;
  if (ex == 0xffu) {
    return s | 0x7c00u | select(0u, 0x200u, m != 0u);
  }
  let e = i32(ex) - 112;
  if (e >= 31) {
    return s | 0x7c00u;
  }
  if (e <= 0) {
    if (e < -10) {
      return s;
    }
    m = m | 0x800000u;
    let shift = u32(14 - e);
    var h = m >> shift;
    let rem = m & ((1u << shift) - 1u);
    let half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (h & 1u) == 1u)) {
      h += 1u;
    }
    return s | h;
  }
  var h = (u32(e) << 10u) | (m >> 13u);
  let rem = m & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u) == 1u)) {
    h += 1u;
  }
  return s | h;
}

// f16 storage of a value: finite values beyond +-65504 (and infinities) saturate to +-65504, NaN
// stays NaN (0x7e00), as the host codec writes them.
fn ap_f16_store(x: f32) -> u32 {
  let f = bitcast<u32>(x);
  let a = f & 0x7fffffffu;
  if (a > 0x7f800000u) {
    return 0x7e00u;
  }
  if (a > 0x477fe000u) {
    return ((f >> 16u) & 0x8000u) | 0x7bffu;
  }
  return ap_f16_bits(x);
}

// Storage element of dtype dt (0 f32, 1 f16, 2 bf16) -> f32, exact.
fn ap_decode(word: u32, i: u32, dt: u32) -> f32 {
  if (dt == 0u) {
    return bitcast<f32>(word);
  }
  let half = select(word & 0xffffu, word >> 16u, (i & 1u) == 1u);
  if (dt == 1u) {
    return ap_f16_to_f32(half);
  }
  return bitcast<f32>(half << 16u);
}

// Two values as one 16-bit storage word (element 2i in the low half).
fn ap_pack(a: f32, b: f32, dt: u32) -> u32 {
  if (dt == 1u) {
    return ap_f16_store(a) | (ap_f16_store(b) << 16u);
  }
  return st_bf16_bits(a) | (st_bf16_bits(b) << 16u);
}

// An order-preserving integer key of an f32 (infinities included), for comparisons that must
// not depend on the compiler's treatment of inf.
fn ap_key(x: f32) -> u32 {
  let f = bitcast<u32>(x);
  return select(f | 0x80000000u, ~f, (f & 0x80000000u) != 0u);
}

// A finite half one ulp up (dir 1) or down (dir 0).
fn ap_f16_step(h: u32, up: bool) -> u32 {
  let neg = (h & 0x8000u) != 0u;
  let mag = h & 0x7fffu;
  if (mag == 0u) {
    return select(0x8001u, 0x0001u, up);
  }
  if (neg == up) {
    return (h & 0x8000u) | (mag - 1u);
  }
  if (mag >= 0x7c00u) {
    return h;
  }
  return (h & 0x8000u) | (mag + 1u);
}

// The largest half <= x (down) or the smallest half >= x (up): summary bounds stay bounds.
fn ap_f16_bound(x: f32, up: bool) -> u32 {
  let h = ap_f16_bits(x);
  let hv = h & 0x7fffu;
  if (hv > 0x7c00u) {
    return h;
  }
  let kv = ap_key(ap_f16_to_f32(h));
  let kx = ap_key(x);
  if ((up && kv < kx) || (!up && kv > kx)) {
    return ap_f16_step(h, up);
  }
  return h;
}

// The rotation of one unit of a row: 4 element indices and their rotated values. Units
// [0, RD / 4) are rotary (two rotation pairs each), units [RD / 4, W / 4) are 4 plain elements.
//   STYLE 0, rotate-half (Llama, NeoX): pairs (i, i + RD/2); unit u holds pairs 2u and 2u + 1:
//            elements (2u, 2u + 1, 2u + RD/2, 2u + 1 + RD/2).
//   STYLE 1, interleaved (GPT-J): pairs (2i, 2i + 1); unit u holds elements 4u .. 4u + 3.
// cs0, cs1 are (cos, sin) of the unit's two pairs.
struct ApUnit {
  e: vec4<u32>,
  rotary: bool,
}

fn ap_unit(u: u32, rd: u32, style: u32) -> ApUnit {
  var r: ApUnit;
  r.rotary = u < rd / 4u;
  if (r.rotary && style == 0u) {
    r.e = vec4<u32>(2u * u, 2u * u + 1u, 2u * u + rd / 2u, 2u * u + 1u + rd / 2u);
  } else {
    r.e = vec4<u32>(4u * u, 4u * u + 1u, 4u * u + 2u, 4u * u + 3u);
  }
  return r;
}

fn ap_rotate(a: vec4<f32>, cs0: vec2<f32>, cs1: vec2<f32>, style: u32) -> vec4<f32> {
  if (style == 0u) {
    // a = (x_i, x_{i+1}, x_{i+RD/2}, x_{i+1+RD/2})
    return vec4<f32>(a.x * cs0.x - a.z * cs0.y, a.y * cs1.x - a.w * cs1.y, a.z * cs0.x + a.x * cs0.y, a.w * cs1.x + a.y * cs1.y);
  }
  // a = (x_2i, x_2i+1, x_2i+2, x_2i+3)
  return vec4<f32>(a.x * cs0.x - a.y * cs0.y, a.y * cs0.x + a.x * cs0.y, a.z * cs1.x - a.w * cs1.y, a.w * cs1.x + a.z * cs1.y);
}
