// Top-k, one invocation per row, for few candidates and small k (MoBA/NSA block selection).
// Each invocation scans its row once, in index order, keeping the best k in a sorted private
// list (insertion; a later index never displaces an equal key, so ties keep the lower index).
// On a loop-capped device (llvmpipe) the scan runs in segments [seg_begin, seg_end) of the row, one dispatch
// each, the list carried between them in `carry` (keys, then ids; key 0 = empty slot): a segment
// with `seg_carry` != 0 reads the list back, the `seg_last` one writes the outputs.
// Needs keys.wgsl, the struct TopKSmallParams (topk.ts) and the constant TK_KCAP (k <= TK_KCAP),
// written by topk.ts because a function-scope array length cannot be an override.

@group(0) @binding(0) var<storage, read> scores: array<u32>;        // [rows, n] f32 bits
@group(0) @binding(1) var<storage, read_write> out_idx: array<i32>; // [rows, k]
@group(0) @binding(2) var<storage, read_write> out_val: array<f32>; // [rows, k] (when hasValues)
@group(0) @binding(3) var<uniform> params: TopKSmallParams;
@group(0) @binding(4) var<storage, read_write> carry: array<u32>;   // [rows, 2k] between segments

override WG: u32 = 64;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = (wg.x + wg.y * nwg.x) * WG + lid;
  if (row >= params.rows) {
    return;
  }
  let n = params.n;
  let k = params.k;
  var keys: array<u32, TK_KCAP>;
  var ids: array<u32, TK_KCAP>;
  var cnt = 0u;
  let cb = row * 2u * k;
  if (params.seg_carry != 0u) {
    for (var s = 0u; s < k; s++) {
      keys[s] = carry[cb + s];
      ids[s] = carry[cb + k + s];
      cnt += select(0u, 1u, keys[s] != 0u);
    }
  }
  let base = row * n;
  for (var j = params.seg_begin; j < min(params.seg_end, n); j++) {
    let key = tk_key(scores[base + j]);
    if (key == 0u || (cnt == k && key <= keys[k - 1u])) {
      continue;
    }
    var p = min(cnt, k - 1u);
    cnt = min(cnt + 1u, k);
    while (p > 0u && keys[p - 1u] < key) {
      keys[p] = keys[p - 1u];
      ids[p] = ids[p - 1u];
      p--;
    }
    keys[p] = key;
    ids[p] = j;
  }
  if (params.seg_last == 0u) {
    for (var s = 0u; s < k; s++) {
      carry[cb + s] = select(0u, keys[s], s < cnt);
      carry[cb + k + s] = ids[s];
    }
    return;
  }
  let ob = row * k;
  for (var s = 0u; s < k; s++) {
    let used = s < cnt;
    out_idx[ob + s] = select(-1, i32(ids[s]), used);
    if (params.hasValues != 0u) {
      out_val[ob + s] = select(tk_neg_inf(), tk_value(keys[s]), used);
    }
  }
}
