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
// @binding(5) summ4: array<vec4<u32>>, the same summaries as 16-byte words (VEC only; optional, declared by the variant)

var<private> block_nan_bits: u32 = 0x7fc00000u;

override WG: u32 = 64;
override D: u32 = 128;
override MODE: u32 = 0; // 0 quest (min/max), 1 mean
override VEC: bool = false; // D a multiple of 8: 16-byte summary loads (8 channels each)

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
  // A NaN query makes its block's box NaN (block-box.wgsl); the box's lower ends are summed
  // alongside (an add keeps a NaN, a max may drop it) and a NaN sum makes the score NaN.
  var chk = vec4<f32>(0.0);
  if (VEC && MODE == 0u) {
    let base = (local * params.Hkv + h) * D / 4u; // vec4 words: D/8 of min, then D/8 of max
    for (var c = 0u; c < D / 8u; c++) {
      let mn = summ4[base + c];
      let mx = summ4[base + D / 8u + c];
      let lo0 = box[qb + 2u * c];
      let lo1 = box[qb + 2u * c + 1u];
      let hi0 = box[qb + D4 + 2u * c];
      let hi1 = box[qb + D4 + 2u * c + 1u];
      let m0 = vec4<f32>(unpack2x16float(mn.x), unpack2x16float(mn.y));
      let m1 = vec4<f32>(unpack2x16float(mn.z), unpack2x16float(mn.w));
      let M0 = vec4<f32>(unpack2x16float(mx.x), unpack2x16float(mx.y));
      let M1 = vec4<f32>(unpack2x16float(mx.z), unpack2x16float(mx.w));
      chk += lo0 + lo1;
      s += max(max(lo0 * m0, lo0 * M0), max(hi0 * m0, hi0 * M0));
      s += max(max(lo1 * m1, lo1 * M1), max(hi1 * m1, hi1 * M1));
    }
  } else if (MODE == 0u) {
    let base = (local * params.Hkv + h) * D; // words: D halves of min, then D halves of max
    for (var c = 0u; c < D4; c++) {
      let w = base + 2u * c;
      let mn = vec4<f32>(unpack2x16float(summ[w]), unpack2x16float(summ[w + 1u]));
      let mx = vec4<f32>(unpack2x16float(summ[w + D / 2u]), unpack2x16float(summ[w + D / 2u + 1u]));
      let lo = box[qb + c];
      let hi = box[qb + D4 + c];
      chk += lo;
      s += max(max(lo * mn, lo * mx), max(hi * mn, hi * mx));
    }
  } else {
    let base = (local * params.Hkv + h) * (D / 2u);
    for (var c = 0u; c < D4; c++) {
      let w = base + 2u * c;
      let mu = vec4<f32>(unpack2x16float(summ[w]), unpack2x16float(summ[w + 1u]));
      let lo = box[qb + c];
      chk += lo;
      s += max(lo * mu, box[qb + D4 + c] * mu);
    }
  }
  let t = chk.x + chk.y + chk.z + chk.w;
  scores[row] = select(s.x + s.y + s.z + s.w, bitcast<f32>(block_nan_bits), st_is_nan(t));
}
