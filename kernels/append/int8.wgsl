// int8 page codes, exactly as the host codec (src/kv/codec.ts quantizePageInt8 / readHeadRows)
// computes them, in integer arithmetic so that no adapter's division or float contraction can
// move a code. Shared by append_int8.wgsl and summarize.wgsl.
//
// A row's scale s is max |x| over the row (exact). Its codes are q = round(x * 127 / s) with ties
// rounded up (JavaScript's Math.round: half toward +inf), which the host evaluates exactly
// (x * 127 is exact in float64 and one correctly rounded division cannot cross a half).
// Decoding is x' = q / 127 * s rounded once to f32 (the host's float64 product then f32 store
// are the same value: q * s / 127 never lies within 2^-29 ulp of an f32 midpoint, except on the
// subnormal grid, handled here by round-to-nearest-even).

// (mantissa with its hidden bit, biased exponent) of a finite |f32| given as bits, exponent >= 1.
fn i8_split(bits: u32) -> vec2<u32> {
  let e = bits >> 23u;
  let m = bits & 0x7fffffu;
  if (e == 0u) {
    return vec2<u32>(m, 1u);
  }
  return vec2<u32>(m | 0x800000u, e);
}

// Sign of 254 * a - (2n + 1) * s for finite bits a <= s, s > 0, n <= 127, exactly:
// -1, 0 or 1.
fn i8_cmp(a: u32, n: u32, s: u32) -> i32 {
  let A = i8_split(a);
  let S = i8_split(s);
  let lhs = 254u * A.x;                 // < 2^32
  let rhs = (2u * n + 1u) * S.x;         // < 255 * 2^24 < 2^32
  let d = S.y - A.y;                     // a <= s: exponent of s >= exponent of a
  if (d >= 32u) {
    return -1;                           // rhs * 2^d >= 2^32 > lhs
  }
  if (d > 0u && (rhs >> (32u - d)) != 0u) {
    return -1;
  }
  let r = rhs << d;
  if (lhs < r) {
    return -1;
  }
  return select(1, 0, lhs == r);
}

// The int8 code of x (bits) for row scale s (bits of max |x|, finite): round(x * 127 / s), ties
// up; 0 when s is 0.
fn i8_quant(xb: u32, sb: u32) -> i32 {
  if (sb == 0u) {
    return 0;
  }
  let a = xb & 0x7fffffffu;
  if (a == 0u) {
    return 0;
  }
  // x >= 0: n = floor(t + 1/2), the smallest n with 254 a < (2n + 1) s.
  // x < 0: Math.round(-t) = -ceil(t - 1/2), -n with the smallest n with 254 a <= (2n + 1) s.
  // Binary search over 0..127 with the exact comparison (7 steps, no float rounding involved).
  let neg = (xb & 0x80000000u) != 0u;
  let lim = select(0, 1, neg);
  var lo = 0u;
  var hi = 127u;
  for (var i = 0u; i < 7u; i++) {
    if (lo < hi) {
      let mid = (lo + hi) >> 1u;
      if (i8_cmp(a, mid, sb) < lim) {
        hi = mid;
      } else {
        lo = mid + 1u;
      }
    }
  }
  return select(i32(lo), -i32(lo), neg);
}

// q / 127 * s rounded to f32 (s finite, >= 0), as the host decodes a code.
fn i8_dequant(q: i32, sb: u32) -> f32 {
  let aq = u32(abs(q));
  let sign = select(0u, 0x80000000u, q < 0);
  if (aq == 0u || sb == 0u) {
    return bitcast<f32>(select(0u, sign, aq != 0u)); // -0 for a negative code of scale 0, as the host
  }
  if (aq == 127u) {
    return bitcast<f32>(sb | sign);
  }
  let S = i8_split(sb);
  let N = aq * S.x;                       // < 126 * 2^24
  // N << k in [127 * 2^23, 127 * 2^24): its quotient by 127 has 24 bits.
  var k = countLeadingZeros(N) - 1u;     // N << k in [2^30, 2^31)
  if ((N << k) >= 2130706432u) {
    k -= 1u;
  }
  let Nk = N << k;
  var m = Nk / 127u;                       // [2^23, 2^24)
  let r = Nk - m * 127u;
  // value = (m + r / 127) * 2^(e - 150) with e = S.y - k.
  let e = i32(S.y) - i32(k);
  if (e >= 1) {
    if (2u * r > 127u) {                   // never a tie: 127 is odd
      m += 1u;
    }
    var eb = u32(e);
    if (m == 0x1000000u) {
      m = 0x800000u;
      eb += 1u;
    }
    return bitcast<f32>(sign | (eb << 23u) | (m & 0x7fffffu));
  }
  // Subnormal result: keep the bits above 2^-149, round to nearest even.
  let sh = u32(1 - e);
  if (sh > 24u) {
    return bitcast<f32>(sign);
  }
  var h = m >> sh;
  let rest = m & ((1u << sh) - 1u);
  let half = 1u << (sh - 1u);
  if (rest > half || (rest == half && (r > 0u || (h & 1u) == 1u))) {
    h += 1u;
  }
  return bitcast<f32>(sign | h);
}
