// Quest / MoBA page scores from the per-page key summaries (f16, packed pairs).
//   quest: U_g(page) = sum_d max(q_gd * max_d, q_gd * min_d)   (an upper bound of q_g . k over the page)
//   mean:  M_g(page) = sum_d q_gd * mean_d                      (MoBA's gate, no 1/sqrt(D))
// Query heads g of one KV head h share one selection: score(h, page) = max_g (REDUCE 0) or
// sum_g (REDUCE 1) over the group's query heads. A dispatch covers list entries
// [first, first + count) for every KV head (invocation id = h * count + i); entries whose page is
// outside this summary chunk are left alone (another dispatch covers them). Entries listed as forced (the first `forcedLo`
// and those at index >= forcedHi) and empty slots get -inf: the caller adds them to the selection
// itself. Needs shaders/storage.wgsl (not used for loads here) and QuestParams.

@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;      // [Hq, D] f32 (D a multiple of 4)
@group(0) @binding(1) var<storage, read> summ: array<u32>;         // minmax [pages, Hkv, 2, D] or mean [pages, Hkv, D], f16 pairs
@group(0) @binding(2) var<storage, read> list: array<u32>;         // [n] page ids
@group(0) @binding(3) var<storage, read_write> scores: array<f32>; // [Hkv, n]
@group(0) @binding(4) var<uniform> params: QuestParams;
// @binding(5) summ4: array<vec4<u32>>, the same summaries as 16-byte words (VEC only; optional, declared by the variant)

override WG: u32 = 64;
override D: u32 = 128;
override MODE: u32 = 0;   // 0 quest (min/max), 1 mean
override REDUCE: u32 = 0; // 0 max over the group, 1 sum
override VEC: bool = false; // D a multiple of 8: 16-byte summary loads (8 channels each)

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let id = gid.x + gid.y * nwg.x * WG;
  let n = params.count;
  let h = id / n;
  let i = params.first + (id - h * n);
  if (h >= params.Hkv) {
    return;
  }
  let page = list[i];
  if (page < params.chunkFirst || page >= params.chunkFirst + params.chunkPages) {
    return;
  }
  let row = h * params.n + i;
  if (i < params.forcedLo || i >= params.forcedHi) {
    scores[row] = st_neg_inf();
    return;
  }
  let local = page - params.chunkFirst;
  var best = ST_NEG_BIG;
  var total = 0.0;
  for (var g = 0u; g < params.group; g++) {
    let qb = (h * params.group + g) * (D / 4u);
    var s = vec4<f32>(0.0);
    if (VEC && MODE == 0u) {
      let base = (local * params.Hkv + h) * D / 4u; // vec4 words: D/8 of min, then D/8 of max
      for (var c = 0u; c < D / 8u; c++) {
        let mn = summ4[base + c];
        let mx = summ4[base + D / 8u + c];
        let q0 = q[qb + 2u * c];
        let q1 = q[qb + 2u * c + 1u];
        s += max(q0 * vec4<f32>(unpack2x16float(mx.x), unpack2x16float(mx.y)), q0 * vec4<f32>(unpack2x16float(mn.x), unpack2x16float(mn.y)));
        s += max(q1 * vec4<f32>(unpack2x16float(mx.z), unpack2x16float(mx.w)), q1 * vec4<f32>(unpack2x16float(mn.z), unpack2x16float(mn.w)));
      }
    } else if (VEC) {
      let base = (local * params.Hkv + h) * D / 8u;
      for (var c = 0u; c < D / 8u; c++) {
        let mu = summ4[base + c];
        s += q[qb + 2u * c] * vec4<f32>(unpack2x16float(mu.x), unpack2x16float(mu.y));
        s += q[qb + 2u * c + 1u] * vec4<f32>(unpack2x16float(mu.z), unpack2x16float(mu.w));
      }
    } else if (MODE == 0u) {
      let base = (local * params.Hkv + h) * D; // words: D halves of min, then D halves of max
      for (var c = 0u; c < D / 4u; c++) {
        let w = base + 2u * c;
        let mn = vec4<f32>(unpack2x16float(summ[w]), unpack2x16float(summ[w + 1u]));
        let mx = vec4<f32>(unpack2x16float(summ[w + D / 2u]), unpack2x16float(summ[w + D / 2u + 1u]));
        let qq = q[qb + c];
        s += max(qq * mx, qq * mn);
      }
    } else {
      let base = (local * params.Hkv + h) * (D / 2u);
      for (var c = 0u; c < D / 4u; c++) {
        let w = base + 2u * c;
        s += q[qb + c] * vec4<f32>(unpack2x16float(summ[w]), unpack2x16float(summ[w + 1u]));
      }
    }
    let t = s.x + s.y + s.z + s.w;
    best = max(best, t);
    total += t;
  }
  scores[row] = select(best, total, REDUCE == 1u);
}
