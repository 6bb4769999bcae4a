// Gathered-block attention: the core every sparse family here runs on (block_sparse, MoBA, NSA,
// DSA). Needs shaders/storage.wgsl, shaders/unpack4.wgsl, the struct GatherParams (gather.ts) and the header that
// declares MAXD4 / MAXDV4 (gather.ts, capacity tier of the head dims).
//
// Work: query rows are organised in *groups*; the rows of a group share one list of key blocks.
// A key block id b covers keys [b*BS, min((b+1)*BS, Tk)); id < 0 is an unused slot. Each row sees,
// inside the listed blocks, only the keys its position allows:
//   key j has position kpos = j*KSTRIDE + KOFF, the query row t has position qpos = t + POSOFF
//   (bottom-right alignment, POSOFF = Tk - Tq for plain keys);
//   CAUSAL: kpos <= qpos;  window W > 0: kpos > qpos - W.
// One softmax over every visible key of the row's list; o = 0 and lse = -inf when none is visible.
//
// MODE 0 (selection lists): group g = t * NGH + hg; rows i < NR are query heads hq = hg*NR + i of
//        token t (NR = a GQA group for NSA, all heads for DSA, 1 for MoBA); list = S block ids at
//        lists[(g - T0*NGH) * S ..] (the list buffer may hold only the rows of this launch).
// MODE 1 (BSR, positions): group g = r * Hq + hq; rows i < NR are tokens t = r*NR + i of query
//        head hq; list = indices[indptr[p*(MB+1) + r] .. indptr[p*(MB+1) + r + 1]) where the
//        pattern p is 0 (shared), hq / (Hq/P) (per KV head or per query head).
// MODE 2 (all keys): like MODE 0 rows, one implicit block covering every key.
//
// One invocation per row: q and the o accumulator live in private vec4 arrays; keys are taken four
// at a time per online-softmax step.

@group(0) @binding(0) var<storage, read> q_buf: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> k_buf: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> v_buf: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> lists: array<i32>;
@group(0) @binding(4) var<storage, read> indptr: array<u32>;
@group(0) @binding(5) var<storage, read_write> o_buf: array<u32>;
@group(0) @binding(6) var<storage, read_write> lse_buf: array<f32>;
@group(0) @binding(7) var<uniform> params: GatherParams;

override WG: u32 = 64;
override Q_DTYPE: u32 = 0;
override KV_DTYPE: u32 = 0;
override OUT_DTYPE: u32 = 0;
override D: u32 = 64;
override DV: u32 = 64;
override MODE: u32 = 0;
override CAUSAL: bool = true;
override NR: u32 = 1;

fn ld_q(e: u32) -> vec4<f32> {
  return st_unpack4(q_buf[st_vec4_index(e, Q_DTYPE)], e, Q_DTYPE);
}
fn ld_k(e: u32) -> vec4<f32> {
  return st_unpack4(k_buf[st_vec4_index(e, KV_DTYPE)], e, KV_DTYPE);
}
fn ld_v(e: u32) -> vec4<f32> {
  return st_unpack4(v_buf[st_vec4_index(e, KV_DTYPE)], e, KV_DTYPE);
}

var<private> qv: array<vec4<f32>, MAXD4>;
var<private> acc: array<vec4<f32>, MAXDV4>;
var<private> m_run: f32;
var<private> l_run: f32;

// Online-softmax over keys [lo, hi) of KV head h.
fn attend_range(lo: i32, hi: i32, h: u32) {
  let D4 = D / 4u;
  let DV4 = DV / 4u;
  let kstride = params.Hkv * D;
  let vstride = params.Hkv * DV;
  var j = lo;
  loop {
    if (j >= hi) {
      break;
    }
    let n = hi - j;
    let j0 = u32(j);
    let j1 = u32(min(j + 1, hi - 1));
    let j2 = u32(min(j + 2, hi - 1));
    let j3 = u32(min(j + 3, hi - 1));
    let kb0 = j0 * kstride + h * D;
    let kb1 = j1 * kstride + h * D;
    let kb2 = j2 * kstride + h * D;
    let kb3 = j3 * kstride + h * D;
    var s = vec4<f32>(0.0);
    for (var c = 0u; c < D4; c++) {
      let qc = qv[c];
      s += vec4<f32>(dot(qc, ld_k(kb0 + 4u * c)), dot(qc, ld_k(kb1 + 4u * c)), dot(qc, ld_k(kb2 + 4u * c)), dot(qc, ld_k(kb3 + 4u * c)));
    }
    let valid = vec4<bool>(true, n > 1, n > 2, n > 3);
    s = select(vec4<f32>(ST_NEG_BIG), s, valid);
    let mx = max(max(s.x, s.y), max(s.z, s.w));
    let mnew = max(m_run, mx);
    let alpha = exp(m_run - mnew);
    let p = select(vec4<f32>(0.0), exp(s - vec4<f32>(mnew)), valid);
    l_run = l_run * alpha + (p.x + p.y + p.z + p.w);
    m_run = mnew;
    let vb0 = j0 * vstride + h * DV;
    let vb1 = j1 * vstride + h * DV;
    let vb2 = j2 * vstride + h * DV;
    let vb3 = j3 * vstride + h * DV;
    for (var c = 0u; c < DV4; c++) {
      acc[c] = acc[c] * alpha + p.x * ld_v(vb0 + 4u * c) + p.y * ld_v(vb1 + 4u * c) + p.z * ld_v(vb2 + 4u * c) + p.w * ld_v(vb3 + 4u * c);
    }
    j += 4;
  }
}

// Attends the part of block b that row position qpos may see.
fn attend_block(b: i32, bs: i32, qpos: i32, h: u32) {
  let Tk = i32(params.Tk);
  var lo = b * bs;
  var hi = min(lo + bs, Tk);
  if (CAUSAL) {
    let lim = qpos - i32(params.KOFF);
    if (lim < 0) {
      return;
    }
    hi = min(hi, lim / i32(params.KSTRIDE) + 1);
  }
  if (params.W > 0u) {
    lo = max(lo, qpos - i32(params.W) + 1);
  }
  if (lo < hi) {
    attend_range(lo, hi, h);
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let id = (wg.x + wg.y * nwg.x) * WG + lid;
  if (id >= params.NG * NR) {
    return;
  }
  let g = id / NR;
  let i = id % NR;
  var t: u32;
  var hq: u32;
  if (MODE == 1u) {
    let r = g / params.Hq;
    hq = g % params.Hq;
    t = r * NR + i;
    if (t >= params.Tq) {
      return;
    }
  } else {
    t = params.T0 + g / params.NGH;
    hq = (g % params.NGH) * NR + i;
  }
  let h = hq / (params.Hq / params.Hkv);
  let qpos = i32(t) + params.POSOFF;

  let D4 = D / 4u;
  let qb = (t * params.Hq + hq) * D;
  for (var c = 0u; c < D4; c++) {
    qv[c] = ld_q(qb + 4u * c) * params.scale;
  }
  for (var c = 0u; c < DV / 4u; c++) {
    acc[c] = vec4<f32>(0.0);
  }
  m_run = ST_NEG_BIG;
  l_run = 0.0;

  let bs = i32(params.BS);
  if (MODE == 0u) {
    let base = (g - params.T0 * params.NGH) * params.S;
    for (var s = 0u; s < params.S; s++) {
      let b = lists[base + s];
      if (b >= 0) {
        attend_block(b, bs, qpos, h);
      }
    }
  } else if (MODE == 1u) {
    let r = g / params.Hq;
    let p = select(0u, hq / (params.Hq / params.P), params.P > 1u);
    let row = p * (params.MB + 1u) + r;
    let s0 = indptr[row];
    let s1 = indptr[row + 1u];
    for (var s = s0; s < s1; s++) {
      attend_block(lists[s], bs, qpos, h);
    }
  } else {
    attend_block(0, i32(params.Tk), qpos, h);
  }

  let DV4 = DV / 4u;
  let any = l_run > 0.0;
  let inv = select(0.0, 1.0 / l_run, any);
  let ob = (t * params.Hq + hq) * DV;
  for (var c = 0u; c < DV4; c++) {
    let x = acc[c] * inv;
    if (OUT_DTYPE == 0u) {
      let w = (ob + 4u * c);
      o_buf[w] = bitcast<u32>(x.x);
      o_buf[w + 1u] = bitcast<u32>(x.y);
      o_buf[w + 2u] = bitcast<u32>(x.z);
      o_buf[w + 3u] = bitcast<u32>(x.w);
    } else {
      let w = (ob + 4u * c) / 2u;
      o_buf[w] = st_pack_pair(x.x, x.y, OUT_DTYPE);
      o_buf[w + 1u] = st_pack_pair(x.z, x.w, OUT_DTYPE);
    }
  }
  if (params.WRITE_LSE != 0u) {
    lse_buf[t * params.Hq + hq] = select(st_neg_inf(), m_run + log(l_run), any);
  }
}
