// NSA block selection, one invocation per (token t, KV head h); scores shared by the GQA group.
// Candidates are the blocks c <= own = pos / BS (pos = t + POSOFF, the row's key position). For a
// visible compressed block (c < (pos+1)/BS) each
// query head of the group contributes its compressed-attention probability
//   p = exp(scale * q[t, hq] . kc[c, h] - lse_cmp[t, hq]);
// a forced block contributes 1.0 per head (own block; with FLA also block 0 and own - 1). The
// score is the sum over the group (FLA: the mean). Top S by insertion (ties: lower block id);
// out[t, h, :] = chosen blocks by descending score, -1 in unused slots.
// Segments (loop-capped adapters, nsa.ts nsaSelectSegments): a dispatch offers only the
// candidates [seg_begin, seg_end); the list is carried in out (ids) and `carry` (scores), read
// back when seg_carry != 0. Candidates still arrive in block order, so ties resolve as unsegmented.
// Needs storage.wgsl, unpack4.wgsl and the struct NsaSelectParams (nsa.ts).

@group(0) @binding(0) var<storage, read> q_buf: array<vec4<u32>>;     // [T, Hq, D] in IN_DTYPE
@group(0) @binding(1) var<storage, read> kc: array<vec4<f32>>;        // [NC, Hkv, D] f32
@group(0) @binding(2) var<storage, read> lse_cmp: array<f32>;         // [T, Hq]
@group(0) @binding(3) var<storage, read_write> out: array<i32>;       // [T, Hkv, S]
@group(0) @binding(4) var<uniform> params: NsaSelectParams;
// binding 5: carry (array<f32>, [T, Hkv, S] between segments; optional: bound by plans of several segments)

override WG: u32 = 64;
override IN_DTYPE: u32 = 0;
override D: u32 = 64;
override FLA: u32 = 0;


@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let id = (wg.x + wg.y * nwg.x) * WG + lid;
  if (id >= params.T * params.Hkv) {
    return;
  }
  let t = id / params.Hkv;
  let h = id % params.Hkv;
  let G = params.Hq / params.Hkv;
  let S = params.S;
  let D4 = D / 4u;
  let pos = t + params.POSOFF; // key position of the query row (bottom-right when Tq < Tk)
  let own = pos / params.BS;
  let nvis = (pos + 1u) / params.BS;
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
      let kb = (c * params.Hkv + h) * D4;
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
