// main_gpu_tile: the CSR sources' (SRC 0, 1) gpu shape for steps whose sequences bring many rows
// (prefill). Appended to attention.wgsl; needs the header constants TW (invocations) and BKT
// (keys per tile), and LANES = TW / ROWS so that a pack holds TW rows (pack_rows()).
//
// A workgroup takes one part and pack of TW consecutive rows of one sequence and KV head
// (tokens x query heads, see attention.wgsl); invocation i keeps row i of the pack (q, softmax
// state, accumulator) in private memory. Keys go in tiles of BKT: the workgroup stages the tile's
// K and V in workgroup memory with consecutive invocations loading consecutive 16-byte channel
// quads (two barriers per tile), then every invocation scores, softmaxes and accumulates its own
// row over the whole tile with no further barrier. The main_gpu entry instead spends a key per
// invocation and two tree reductions per block, and leaves most invocations idle in the value
// loop at small Dv; on CPU adapters each barrier is a fiber switch per invocation.
// The key range is the pack's (the union of its rows'); a tile that some row must not see masks
// per row and skips the values of masked keys (NaN or Inf
// there must not reach a row that cannot see them). Empty slots compute on the pack's first row
// and store nothing. Barriers sit in control flow that depends only on the workgroup.

var<workgroup> tk: array<vec4<f32>, BKT * QN>;
var<workgroup> tv: array<vec4<f32>, BKT * VN>;

@compute @workgroup_size(TW)
fn main_gpu_tile(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let at = pack_at(wg.x + wg.y * nwg.x);
  if (!at.ok) {
    return;
  }
  let p = at.p;
  let gi = at.gi;
  let pk = at.pk;
  let w = at.w;
  let r = pack_row(pk, gi, lid);
  let rp = w.pos + slot_dt(pk, lid);
  let rq = select(w.r, r, r != NO_ROW);
  var qr: array<vec4<f32>, QN>;
  for (var c = 0u; c < QN; c++) {
    qr[c] = ld4_q(rq * D + 4u * c) * params.scale_log2;
  }
  var acc: array<vec4<f32>, VN>;
  var m = init_m(row_at(w, rq), p);
  var l = init_l(p);
  var sc: array<f32, BKT>;
  for (var s = 0u; s < 2u; s++) {
    let g = segment(w, s);
    let s1 = g.hi;
    for (var j0 = g.lo; j0 < s1; j0 += BKT) {
      workgroupBarrier();
      for (var x = lid; x < BKT * QN; x += TW) {
        let kk = x / QN;
        let j = min(j0 + kk, s1 - 1u);
        tk[x] = ld4_k(k_elem(w, g, j) + 4u * (x - kk * QN), kv_scale(w, g, j, 0u));
      }
      for (var x = lid; x < BKT * VN; x += TW) {
        let kk = x / VN;
        let j = min(j0 + kk, s1 - 1u);
        tv[x] = ld4_v(v_elem(w, g, j) + 4u * (x - kk * VN), kv_scale(w, g, j, 1u));
      }
      workgroupBarrier();
      // Key loops bounded by the tile's keys (a runtime count: llvmpipe unrolls constant-bound loops
      // in full and then takes minutes to compile); nm: some row must not see a key of the tile.
      let nk = min(BKT, s1 - j0);
      let nm = block_masked(w, j0, nk);
      var bm = ST_NEG_BIG;
      for (var kk = 0u; kk < nk; kk++) {
        var x = 0.0;
        for (var c = 0u; c < QN; c++) {
          x += dot(qr[c], tk[kk * QN + c]);
        }
        let j = j0 + kk;
        if (nm && !visible(j, rp)) {
          x = st_neg_inf();
        }
        sc[kk] = x;
        bm = max(bm, x);
      }
      let mn = max(m, bm);
      let alpha = exp2(m - mn);
      var ps = 0.0;
      for (var kk = 0u; kk < nk; kk++) {
        let pj = exp2(sc[kk] - mn);
        sc[kk] = pj;
        ps += pj;
      }
      l = l * alpha + ps;
      m = mn;
      if (nm) {
        // masked keys (p = 0) skipped: their values may be NaN or Inf
        for (var c = 0u; c < VN; c++) {
          var a = acc[c] * alpha;
          for (var kk = 0u; kk < nk; kk++) {
            a += sc[kk] * select(vec4<f32>(0.0), tv[kk * VN + c], sc[kk] > 0.0);
          }
          acc[c] = a;
        }
      } else {
        for (var c = 0u; c < VN; c++) {
          var a = acc[c] * alpha;
          for (var kk = 0u; kk < nk; kk++) {
            a += sc[kk] * tv[kk * VN + c];
          }
          acc[c] = a;
        }
      }
    }
  }
  if (r != NO_ROW) {
    let wr = row_at(w, r);
    let inv = select(0.0, 1.0 / l, l > 0.0);
    for (var c = 0u; c < VN; c++) {
      store4(wr, p, c, acc[c] * inv);
    }
    store_lse(wr, p, m, l);
  }
}
