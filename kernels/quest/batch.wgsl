// Batched Quest page selection for decode, on the GPU: one workgroup per sequence b of a CSR page
// table. For each page i of the sequence (page id indices[indptr[b] + i]) the score is Quest's
// upper bound max over ALL query heads of sum_d max(q_d * max_d, q_d * min_d) from the f16
// min/max summaries (head-shared selection: one page list per sequence, so the attention core
// reads one list). The first min(SINKS, n, BUDGET - 1) pages and the newest page are always
// selected; the other BUDGET - forced pages are the highest scores (ties to the lower index).
// A sequence of n <= BUDGET pages selects all of them. The selected page ids are written in page
// order at out[outBase + optr[b] ..], optr being written by the host (min(n, BUDGET) per
// sequence); outBase lets `out` be an attention schedule buffer whose kvIndices start there.
// tables (u32): [0] B, [IPTR ..] indptr [B+1], [IDX ..] indices, [OPTR ..] out indptr [B+1].

@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;      // [B, HQ, D] f32
@group(0) @binding(1) var<storage, read> summ: array<u32>;         // minmax [pages, HKV, 2, D] f16 pairs
@group(0) @binding(2) var<storage, read> tables: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;
@group(0) @binding(4) var<uniform> params: QuestBatchParams;

override WG: u32 = 64;
override D: u32 = 64;
override HKV: u32 = 1;
override GROUP: u32 = 1;
override MAXN: u32 = 64;
override BUDGET: u32 = 8;
override SINKS: u32 = 1;

var<workgroup> sc: array<f32, MAXN>;
var<workgroup> sel: array<u32, MAXN>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let b = wid.x + wid.y * nwg.x;
  if (b >= tables[0]) {
    return;
  }
  let base = tables[params.iptr + b];
  let n = min(tables[params.iptr + b + 1u] - base, MAXN);
  let sinks = min(min(SINKS, n), BUDGET - 1u);
  for (var i = lid; i < n; i += WG) {
    let page = tables[params.idx + base + i];
    var best = ST_NEG_BIG;
    for (var h = 0u; h < HKV; h++) {
      let sb = (page * HKV + h) * D; // words: D / 2 of min, then D / 2 of max
      for (var g = 0u; g < GROUP; g++) {
        let qb = ((b * HKV + h) * GROUP + g) * (D / 4u);
        var s = vec4<f32>(0.0);
        for (var c = 0u; c < D / 4u; c++) {
          let w = sb + 2u * c;
          let mn = vec4<f32>(unpack2x16float(summ[w]), unpack2x16float(summ[w + 1u]));
          let mx = vec4<f32>(unpack2x16float(summ[w + D / 2u]), unpack2x16float(summ[w + D / 2u + 1u]));
          let qq = q[qb + c];
          s += max(qq * mx, qq * mn);
        }
        best = max(best, s.x + s.y + s.z + s.w);
      }
    }
    sc[i] = best;
  }
  workgroupBarrier();
  let free = BUDGET - sinks - 1u;
  for (var i = lid; i < n; i += WG) {
    var take = n <= BUDGET || i < sinks || i == n - 1u;
    if (!take) {
      var rank = 0u;
      let si = sc[i];
      for (var j = sinks; j < n - 1u; j++) {
        let sj = sc[j];
        if (sj > si || (sj == si && j < i)) {
          rank++;
        }
      }
      take = rank < free;
    }
    sel[i] = select(0u, 1u, take);
  }
  workgroupBarrier();
  let ob = tables[params.optr + b];
  for (var i = lid; i < n; i += WG) {
    if (sel[i] == 1u) {
      var pos = 0u;
      for (var j = 0u; j < i; j++) {
        pos += sel[j];
      }
      out[params.outBase + ob + pos] = tables[params.idx + base + i];
    }
  }
}
