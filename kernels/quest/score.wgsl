// Quest / MoBA page scores from the per-page key summaries (f16, packed pairs).
//   quest: U_g(page) = sum_d max(q_gd * max_d, q_gd * min_d)   (an upper bound of q_g . k over the page)
//   mean:  M_g(page) = sum_d q_gd * mean_d                      (MoBA's gate, no 1/sqrt(D))
// Query heads g of one KV head h share one selection: score(h, page) = max_g (REDUCE 0) or
// sum_g (REDUCE 1) over the group's query heads. Invocation i scores list entry i (a page id of
// the sequence) for KV head h = wg.z-folded row; entries whose page is outside this summary chunk
// are left alone (another dispatch covers them). Entries listed as forced (the first `forcedLo`
// and those at index >= forcedHi) and empty slots get -inf: the caller adds them to the selection
// itself. Needs shaders/storage.wgsl (not used for loads here) and QuestParams.

@group(0) @binding(0) var<storage, read> q: array<f32>;            // [Hq, D] f32
@group(0) @binding(1) var<storage, read> summ: array<u32>;         // minmax [pages, Hkv, 2, D] or mean [pages, Hkv, D], f16 pairs
@group(0) @binding(2) var<storage, read> list: array<u32>;         // [n] page ids
@group(0) @binding(3) var<storage, read_write> scores: array<f32>; // [Hkv, n]
@group(0) @binding(4) var<uniform> params: QuestParams;

override WG: u32 = 64;
override D: u32 = 128;
override MODE: u32 = 0;   // 0 quest (min/max), 1 mean
override REDUCE: u32 = 0; // 0 max over the group, 1 sum

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let id = gid.x + gid.y * nwg.x * WG;
  let n = params.n;
  let h = id / n;
  let i = id - h * n;
  if (h >= params.Hkv) {
    return;
  }
  let page = list[i];
  if (page < params.chunkFirst || page >= params.chunkFirst + params.chunkPages) {
    return;
  }
  if (i < params.forcedLo || i >= params.forcedHi) {
    scores[h * n + i] = st_neg_inf();
    return;
  }
  let local = page - params.chunkFirst;
  var best = ST_NEG_BIG;
  var total = 0.0;
  for (var g = 0u; g < params.group; g++) {
    let qb = (h * params.group + g) * D;
    var s = 0.0;
    if (MODE == 0u) {
      let base = (local * params.Hkv + h) * D; // words: D halves of min, then D halves of max
      for (var w = 0u; w < D / 2u; w++) {
        let mn = unpack2x16float(summ[base + w]);
        let mx = unpack2x16float(summ[base + D / 2u + w]);
        let qq = vec2<f32>(q[qb + 2u * w], q[qb + 2u * w + 1u]);
        let u = max(qq * mx, qq * mn);
        s += u.x + u.y;
      }
    } else {
      let base = (local * params.Hkv + h) * (D / 2u);
      for (var w = 0u; w < D / 2u; w++) {
        let mu = unpack2x16float(summ[base + w]);
        s += q[qb + 2u * w] * mu.x + q[qb + 2u * w + 1u] * mu.y;
      }
    }
    best = max(best, s);
    total += s;
  }
  scores[h * n + i] = select(best, total, REDUCE == 1u);
}
