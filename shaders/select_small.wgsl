// A per-invocation top-k of at most SEL_MAX candidates, kept sorted by descending score in
// private memory (MoBA's and NSA's block selections: k is small, one list per query row).
// Ties keep the earlier-offered candidate first, so offering candidates in index order breaks
// ties toward the lower index. This file compiles on its own.

const SEL_MAX: u32 = 64u;
var<private> top_b: array<i32, SEL_MAX>;
var<private> top_s: array<f32, SEL_MAX>;

// Offers candidate `id` with score `s` to the list of the best `k` (k <= SEL_MAX), which holds
// `cnt` entries; returns the new count.
fn sel_offer(s: f32, id: i32, cnt: u32, k: u32) -> u32 {
  if (cnt == k && !(s > top_s[k - 1u])) {
    return cnt;
  }
  var p = select(cnt, k - 1u, cnt == k);
  loop {
    if (p == 0u || !(top_s[p - 1u] < s)) {
      break;
    }
    top_s[p] = top_s[p - 1u];
    top_b[p] = top_b[p - 1u];
    p--;
  }
  top_s[p] = s;
  top_b[p] = id;
  return min(cnt + 1u, k);
}
