// Page scores for blocks of queries (sparse prefill), from the query box of each block
// (block-box.wgsl) and the per-page key summaries (f16 pairs):
//   quest: S(b, h, page) = sum_d max(lo_d m_d, lo_d M_d, hi_d m_d, hi_d M_d)
//   mean:  S(b, h, page) = sum_d max(lo_d mu_d, hi_d mu_d)
// with [lo, hi] the block's query box for KV head h and [m, M] the page's key min/max (mean: mu).
// For every query q of the box and every key k of the page, q_d k_d <= max over the box's and the
// page's corners, so S bounds max_{q in block} q . k from above (quest), and max_{q in block}
// q . mu (mean): Quest's bound lifted from one query to a block. Its cost is one pass over D per
// page and block, not one per query row. One invocation per (block, KV head, list entry) for
// entries [first, first + count); entries whose page is outside this summary chunk are left alone;
// forced entries (index < forcedLo or >= forcedHi) get -inf. Needs shaders/storage.wgsl and
// QuestBlockParams.

@group(0) @binding(0) var<storage, read> box: array<vec4<f32>>;       // [blocks, Hkv, 2, D] f32
@group(0) @binding(1) var<storage, read> summ: array<u32>;            // minmax [pages, Hkv, 2, D] or mean [pages, Hkv, D], f16 pairs
@group(0) @binding(2) var<storage, read> list: array<u32>;            // [n] page ids
@group(0) @binding(3) var<storage, read_write> scores: array<f32>;    // [blocks, Hkv, n]
@group(0) @binding(4) var<uniform> params: QuestBlockParams;

var<private> block_nan_bits: u32 = 0x7fc00000u;

override WG: u32 = 64;
override D: u32 = 128;
override MODE: u32 = 0; // 0 quest (min/max), 1 mean

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let id = gid.x + gid.y * nwg.x * WG;
  let cnt = params.count;
  let bh = id / cnt;
  if (bh >= params.blocks * params.Hkv) {
    return;
  }
  let i = params.first + (id - bh * cnt);
  let h = bh % params.Hkv;
  let page = list[i];
  if (page < params.chunkFirst || page >= params.chunkFirst + params.chunkPages) {
    return;
  }
  let row = bh * params.n + i;
  if (i < params.forcedLo || i >= params.forcedHi) {
    scores[row] = st_neg_inf();
    return;
  }
  let local = page - params.chunkFirst;
  let D4 = D / 4u;
  let qb = bh * 2u * D4;
  var s = vec4<f32>(0.0);
  var nan = false; // a NaN query makes its block's box NaN (block-box.wgsl): the score is NaN too
  if (MODE == 0u) {
    let base = (local * params.Hkv + h) * D; // words: D halves of min, then D halves of max
    for (var c = 0u; c < D4; c++) {
      let w = base + 2u * c;
      let mn = vec4<f32>(unpack2x16float(summ[w]), unpack2x16float(summ[w + 1u]));
      let mx = vec4<f32>(unpack2x16float(summ[w + D / 2u]), unpack2x16float(summ[w + D / 2u + 1u]));
      let lo = box[qb + c];
      let hi = box[qb + D4 + c];
      nan = nan || st_is_nan(lo.x) || st_is_nan(lo.y) || st_is_nan(lo.z) || st_is_nan(lo.w);
      s += max(max(lo * mn, lo * mx), max(hi * mn, hi * mx));
    }
  } else {
    let base = (local * params.Hkv + h) * (D / 2u);
    for (var c = 0u; c < D4; c++) {
      let w = base + 2u * c;
      let mu = vec4<f32>(unpack2x16float(summ[w]), unpack2x16float(summ[w + 1u]));
      let lo = box[qb + c];
      nan = nan || st_is_nan(lo.x) || st_is_nan(lo.y) || st_is_nan(lo.z) || st_is_nan(lo.w);
      s += max(lo * mu, box[qb + D4 + c] * mu);
    }
  }
  scores[row] = select(s.x + s.y + s.z + s.w, bitcast<f32>(block_nan_bits), nan);
}
