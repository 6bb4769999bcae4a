// Storage dtypes, shared by every kernel. Float tensors are bound as `array<u32>` whatever their
// dtype, and a pipeline's override constant says how to read them:
//   0 = f32  (one element per word, read with bitcast)
//   1 = f16  (two elements per word, element 2i in the low half; bit-identical to array<f16>)
//   2 = bf16 (two elements per word, the upper halves of f32s)
// All arithmetic is f32. This file compiles on its own.

// The word that holds element `i` of a tensor stored with dtype `dt`.
fn st_word(i: u32, dt: u32) -> u32 {
  return select(i >> 1u, i, dt == 0u);
}

// Element `i` as f32, from the word that holds it.
fn st_value(word: u32, i: u32, dt: u32) -> f32 {
  if (dt == 0u) {
    return bitcast<f32>(word);
  }
  let half = select(word & 0xffffu, word >> 16u, (i & 1u) == 1u);
  if (dt == 1u) {
    return unpack2x16float(half).x;
  }
  return bitcast<f32>(half << 16u);
}

// Both elements of a 16-bit word (elements 2i, 2i+1) as f32.
fn st_pair(word: u32, dt: u32) -> vec2<f32> {
  if (dt == 1u) {
    return unpack2x16float(word);
  }
  return vec2<f32>(bitcast<f32>(word << 16u), bitcast<f32>(word & 0xffff0000u));
}

// Packs two f32 into one word of a 16-bit dtype. f16 clamps finite values to +-65504 first so
// that a large value never becomes a NaN pattern, and keeps NaN a NaN (tested on the bits, since
// WGSL lets float comparisons assume no NaN); bf16 rounds to nearest even.
fn st_pack_pair(a: f32, b: f32, dt: u32) -> u32 {
  if (dt == 1u) {
    let h = pack2x16float(clamp(vec2<f32>(a, b), vec2<f32>(-65504.0), vec2<f32>(65504.0)));
    let lo = select(h & 0xffffu, 0x7e00u, st_is_nan(a));
    let hi = select(h >> 16u, 0x7e00u, st_is_nan(b));
    return lo | (hi << 16u);
  }
  return (st_bf16_bits(a)) | (st_bf16_bits(b) << 16u);
}

fn st_is_nan(x: f32) -> bool {
  let u = bitcast<u32>(x);
  return (u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu) != 0u;
}

fn st_bf16_bits(x: f32) -> u32 {
  let u = bitcast<u32>(x);
  if (st_is_nan(x)) {
    return (u >> 16u) | 0x40u;
  }
  return ((u + 0x7fffu + ((u >> 16u) & 1u)) >> 16u) & 0xffffu;
}

// -inf and a finite stand-in for running maxima (exp(-3e38 - m) underflows to 0 cleanly).
var<private> st_neg_inf_bits: u32 = 0xff800000u;
fn st_neg_inf() -> f32 {
  return bitcast<f32>(st_neg_inf_bits);
}
const ST_NEG_BIG: f32 = -3.0e38;
