// NSA block selection of one (token t, KV head h), shared by select.wgsl (one sequence) and
// varlen_select.wgsl (a ragged batch), one invocation per (t, h): the entry file's
// nsa_row(id, t, h) finds the row's own block `own`, its number of visible compressed blocks
// `nvis` and the row `blk0` of kc that holds its sequence's first compressed block, then calls
// nsa_select_row. Candidates are the blocks c <= own offered in
// [seg_begin, seg_end); a forced block (own; with FLA also block 0 and own - 1) scores G, a
// visible one (c < nvis) the sum over the GQA group of exp(scale * q[t, hq] . kc[blk0 + c, h] -
// lse_cmp[t, hq]) (FLA: the mean). Top S by insertion (shaders/select_small.wgsl; ties: lower
// block id), carried between segments in out (ids) and `carry` (scores); out[id, :] = chosen
// blocks (ids of the sequence) by descending score, -1 in unused slots.
// Declares the overrides WG, IN_DTYPE, D, FLA and the entry point. Needs storage.wgsl,
// unpack4.wgsl, select_small.wgsl, NsaSelectParams and the entry's bindings q_buf, kc, lse_cmp,
// out, carry.

override WG: u32 = 64;
override IN_DTYPE: u32 = 0;
override D: u32 = 64;
override FLA: u32 = 0;

fn nsa_select_row(id: u32, t: u32, h: u32, own: u32, nvis: u32, blk0: u32) {
  let G = params.Hq / params.Hkv;
  let S = params.S;
  let D4 = D / 4u;
  var cnt = 0u;
  if (params.seg_carry != 0u) {
    for (var i = 0u; i < S; i++) {
      let b = out[id * S + i];
      if (b >= 0) {
        top_b[cnt] = b;
        top_s[cnt] = carry[id * S + i];
        cnt++;
      }
    }
  }
  for (var c = params.seg_begin; c < min(own + 1u, params.seg_end); c++) {
    let forced = c == own || (FLA == 1u && (c == 0u || c + 1u == own));
    var s = 0.0;
    if (forced) {
      s = f32(G);
    } else if (c < nvis) {
      let kb = ((blk0 + c) * params.Hkv + h) * D4;
      for (var i = 0u; i < G; i++) {
        let hq = h * G + i;
        let qb = (t * params.Hq + hq) * D;
        var d4 = vec4<f32>(0.0);
        for (var x = 0u; x < D4; x++) {
          let e = qb + 4u * x;
          d4 += st_unpack4(q_buf[st_vec4_index(e, IN_DTYPE)], e, IN_DTYPE) * kc[kb + x];
        }
        s += exp(((d4.x + d4.y) + (d4.z + d4.w)) * params.scale - lse_cmp[t * params.Hq + hq]);
      }
    }
    if (FLA == 1u) {
      s = s / f32(G);
    }
    cnt = sel_offer(s, i32(c), cnt, S);
  }
  for (var i = 0u; i < S; i++) {
    out[id * S + i] = select(-1, top_b[i], i < cnt);
    if (params.seg_last == 0u) {
      carry[id * S + i] = top_s[i];
    }
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let id = (wg.x + wg.y * nwg.x) * WG + lid;
  if (id >= params.T * params.Hkv) {
    return;
  }
  nsa_row(id, id / params.Hkv, id % params.Hkv);
}
