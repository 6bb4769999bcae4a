// Top-k keys, shared by every top-k shader. This file compiles on its own.
//
// A score's order-preserving u32 key: a larger f32 gives a larger key, so selection and sorting
// run on integers. -inf and NaN map to 0, the key that is never selected; -0 maps to +0's key so
// the two tie (ties go to the lower index). Every selectable score has a key >= 0x00800000.
fn tk_key(bits: u32) -> u32 {
  if ((bits & 0x7fffffffu) > 0x7f800000u || bits == 0xff800000u) {
    return 0u;
  }
  if (bits == 0x80000000u) {
    return 0x80000000u;
  }
  return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}

// tk_key of four scores at once.
fn tk_key4(bits: vec4<u32>) -> vec4<u32> {
  let mag = bits & vec4<u32>(0x7fffffffu);
  let neg = (bits & vec4<u32>(0x80000000u)) != vec4<u32>(0u);
  var key = select(bits | vec4<u32>(0x80000000u), ~bits, neg);
  key = select(key, vec4<u32>(0x80000000u), bits == vec4<u32>(0x80000000u));
  return select(key, vec4<u32>(0u), (mag > vec4<u32>(0x7f800000u)) | (bits == vec4<u32>(0xff800000u)));
}

// The f32 score of a key (the inverse of tk_key for selectable keys; -0 comes back as +0).
fn tk_value(key: u32) -> f32 {
  return bitcast<f32>(select(~key, key & 0x7fffffffu, (key & 0x80000000u) != 0u));
}

// (key_a, index_a) ranks before (key_b, index_b): larger key first, then lower index.
fn tk_before(key_a: u32, index_a: u32, key_b: u32, index_b: u32) -> bool {
  return key_a > key_b || (key_a == key_b && index_a < index_b);
}

var<private> tk_neg_inf_bits: u32 = 0xff800000u;
fn tk_neg_inf() -> f32 {
  return bitcast<f32>(tk_neg_inf_bits);
}
