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
//        token T0 + g / NGH (NR = a GQA group for NSA and DSA, 1 for MoBA); list = S block ids at
//        lists[(g / LDIV) * S ..] (g counts from the launch's first token T0, so the list buffer
//        holds only the rows of this launch).
// MODE 1 (BSR, positions): group g = r * Hq + hq; rows i < NR are tokens t = r*NR + i of query
//        head hq; list = indices[indptr[p*(MB+1) + r] .. indptr[p*(MB+1) + r + 1]) where the
//        pattern p is 0 (shared), hq / (Hq/P) (per KV head or per query head).
// MODE 2 (all keys): like MODE 0 rows, one implicit block covering every key.
// MODE 3 (row lists; main_cpu only): tile i of the tile table `indptr` (4 words: first entry,
//        entry count <= 16, block id, unused) names up to 16 rows by entries lists[first + p] =
//        row * KS + slot (row = t * Hq + hq, all of one query head); o and lse of such a row go
//        to partial `slot` ([KS, Tq * Hq, DV] and [KS, Tq * Hq]). MoBA's block-centric path.
// LDIV = NGH gives one list per token shared by all KV heads (DSA).
//
// Segments (loop-capped adapters: Mesa's llvmpipe stops an invocation after 65,535 loop
// iterations; gather.ts, gatherSegments): a launch may cover only the list entries [E0, E1) of
// each group and, of each entry, the keys [lo + K0, lo + K1) where [lo, hi) is the part the row
// (tile) may see. LOAD != 0 continues from the partial (o, lse) already in o_buf / lse_buf (f32,
// WRITE_LSE): the online-softmax state (m, l, acc) = (lse, 1, o) is the same softmax, so
// launches over disjoint keys chain exactly. Defaults cover everything: E0 = 0, E1 = K1 = max.
//
// Two entry points:
//   main (GPUs): one invocation per row; q and the o accumulator in private vec4 arrays; keys
//     four at a time per online-softmax step (rows of a group read the same K/V addresses).
//   main_cpu (CPU adapters, SwiftShader): a 4-lane workgroup takes a tile of 16 rows that share
//     the key list and one KV head (MODE 2 with NR < 16 packs 16 / NR consecutive tokens of a
//     group into a tile), 4 rows per lane, 16-key blocks as 4x4 matrices; K/V loads are
//     shared between the lanes by `share_k`/`share_v` from gather_sg.wgsl (subgroupBroadcast) or
//     gather_nosg.wgsl. One load then feeds 4 rows x 16 keys of FMAs per lane.

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
      // keys past hi are clamped copies of key hi - 1: skipped (select), never multiplied by 0
      let z = vec4<f32>(0.0);
      acc[c] = acc[c] * alpha + p.x * ld_v(vb0 + 4u * c) + select(z, p.y * ld_v(vb1 + 4u * c), valid.y) + select(z, p.z * ld_v(vb2 + 4u * c), valid.z) + select(z, p.w * ld_v(vb3 + 4u * c), valid.w);
    }
    j += 4;
  }
}

// Attends the part of block b that row position qpos may see (the segment's share of it).
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
    let n = hi - lo;
    attend_range(lo + min(i32(params.K0), n), lo + min(i32(params.K1), n), h);
  }
}

// Four f32 values of a partial o (segments after the first read their row's partial back).
fn ld_o32(w: u32) -> vec4<f32> {
  return vec4<f32>(bitcast<f32>(o_buf[w]), bitcast<f32>(o_buf[w + 1u]), bitcast<f32>(o_buf[w + 2u]), bitcast<f32>(o_buf[w + 3u]));
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
  if (params.LOAD != 0u) {
    // continue from this row's partial: (m, l, acc) = (lse, 1, o), or the empty state
    for (var c = 0u; c < DV / 4u; c++) {
      acc[c] = ld_o32((t * params.Hq + hq) * DV + 4u * c);
    }
    let prev = lse_buf[t * params.Hq + hq];
    if (prev > ST_NEG_BIG) {
      m_run = prev;
      l_run = 1.0;
    }
  }

  let bs = i32(params.BS);
  if (MODE == 0u) {
    let base = (g / params.LDIV) * params.S;
    for (var s = params.E0; s < min(params.S, params.E1); s++) {
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
    for (var s = s0 + min(params.E0, s1 - s0); s < s0 + min(params.E1, s1 - s0); s++) {
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

// ---------------------------------------------------------------------------------------------
// CPU variant.

struct CpuRow {
  valid: bool,
  pos: i32,
  q_base: u32,
  o_base: u32,
  lse_idx: u32,
}

struct CpuTile {
  valid: bool,
  h: u32,
  // key source: MODE 0/1 a list (lists[l0 .. l1)), MODE 2 one block of all keys, MODE 3 one block
  l0: u32,
  l1: u32,
  block: i32,
  pos_min: i32,
  pos_max: i32,
}

fn cpu_row(tile_id: u32, p: u32) -> CpuRow {
  var r: CpuRow;
  r.valid = false;
  var t = 0u;
  var hq = 0u;
  var slot = 0u;
  let TPG = (NR + 15u) / 16u;
  if (MODE == 3u) {
    let first = indptr[4u * tile_id];
    let count = indptr[4u * tile_id + 1u];
    if (p < count) {
      let e = u32(lists[first + p]);
      let row = e / params.KS;
      slot = e % params.KS;
      t = row / params.Hq;
      hq = row % params.Hq;
      r.valid = true;
    }
  } else if (MODE == 2u && NR < 16u && 16u % NR == 0u) {
    // all-keys mode with small groups: a tile packs 16 / NR consecutive tokens of one group
    let TPT = 16u / NR;
    let hg = tile_id % params.NGH;
    let tl = (tile_id / params.NGH) * TPT + p / NR;
    if (tl < params.NG / params.NGH) {
      t = params.T0 + tl;
      hq = hg * NR + p % NR;
      r.valid = true;
    }
  } else {
    let g = tile_id / TPG;
    let i = (tile_id % TPG) * 16u + p;
    if (g < params.NG && i < NR) {
      if (MODE == 1u) {
        hq = g % params.Hq;
        t = (g / params.Hq) * NR + i;
        r.valid = t < params.Tq;
      } else {
        t = params.T0 + g / params.NGH;
        hq = (g % params.NGH) * NR + i;
        r.valid = true;
      }
    }
  }
  let rows = params.Tq * params.Hq;
  let row = t * params.Hq + hq;
  r.pos = i32(t) + params.POSOFF;
  r.q_base = row * D;
  r.o_base = (slot * rows + row) * DV;
  r.lse_idx = slot * rows + row;
  return r;
}

fn cpu_tile(tile_id: u32, r0: CpuRow) -> CpuTile {
  var c: CpuTile;
  c.valid = r0.valid;
  if (!c.valid) {
    return c;
  }
  let row = r0.q_base / D;
  let hq = row % params.Hq;
  c.h = hq / (params.Hq / params.Hkv);
  c.block = 0;
  c.l0 = 0u;
  c.l1 = 1u;
  let TPG = (NR + 15u) / 16u;
  if (MODE == 0u) {
    let g = tile_id / TPG;
    c.l0 = (g / params.LDIV) * params.S;
    c.l1 = c.l0 + params.S;
  } else if (MODE == 1u) {
    let g = tile_id / TPG;
    let r = g / params.Hq;
    let p = select(0u, hq / (params.Hq / params.P), params.P > 1u);
    c.l0 = indptr[p * (params.MB + 1u) + r];
    c.l1 = indptr[p * (params.MB + 1u) + r + 1u];
  } else if (MODE == 3u) {
    c.block = i32(indptr[4u * tile_id + 2u]);
  }
  return c;
}

// Is key j (in [.., hi)) visible from position pos? Four keys j..j+3 at once.
fn cpu_visible4(j: i32, hi: i32, pos: i32) -> vec4<bool> {
  let jj = vec4<i32>(j) + vec4<i32>(0, 1, 2, 3);
  var ok = jj < vec4<i32>(hi);
  let kpos = jj * i32(params.KSTRIDE) + vec4<i32>(i32(params.KOFF));
  if (CAUSAL) {
    ok = ok & (kpos <= vec4<i32>(pos));
  }
  if (params.W > 0u) {
    ok = ok & (kpos > vec4<i32>(pos - i32(params.W)));
  }
  return ok;
}

fn cpu_mask16(s: mat4x4<f32>, j0: i32, hi: i32, pos: i32) -> mat4x4<f32> {
  let ni = vec4<f32>(st_neg_inf());
  return mat4x4<f32>(
    select(ni, s[0], cpu_visible4(j0, hi, pos)),
    select(ni, s[1], cpu_visible4(j0 + 4, hi, pos)),
    select(ni, s[2], cpu_visible4(j0 + 8, hi, pos)),
    select(ni, s[3], cpu_visible4(j0 + 12, hi, pos)));
}

// p * V over 4 keys (V's columns = the keys) that SKIPS keys whose probability is 0: masked keys
// (and rows clamped past the range) have p = exp(-inf) = 0 exactly and their values may be NaN
// or Inf, which a product with 0 would spread (0 * NaN = NaN) to rows that cannot see them.
fn cpu_pv4(v: mat4x4<f32>, p: vec4<f32>) -> vec4<f32> {
  let z = vec4<f32>(0.0);
  return select(z, v[0], p.x > 0.0) * p.x + select(z, v[1], p.y > 0.0) * p.y + select(z, v[2], p.z > 0.0) * p.z + select(z, v[3], p.w > 0.0) * p.w;
}

fn max4(x: vec4<f32>) -> f32 {
  return max(max(x.x, x.y), max(x.z, x.w));
}

// Online-softmax step over a 16-key block (scores in place become probabilities); returns alpha.
fn cpu_softmax16(s: ptr<function, mat4x4<f32>>, m: ptr<function, f32>, l: ptr<function, f32>) -> f32 {
  let bm = max(max(max4((*s)[0]), max4((*s)[1])), max(max4((*s)[2]), max4((*s)[3])));
  let m_new = max(*m, bm);
  let alpha = exp(*m - m_new);
  let mv = vec4<f32>(m_new);
  // masked scores sit at ST_NEG_BIG; with m_new finite their exp underflows to exactly 0
  let p = mat4x4<f32>(exp((*s)[0] - mv), exp((*s)[1] - mv), exp((*s)[2] - mv), exp((*s)[3] - mv));
  *s = p;
  *l = *l * alpha + dot(p[0] + p[1] + p[2] + p[3], vec4<f32>(1.0));
  *m = m_new;
  return alpha;
}

// A row's partial as its online-softmax state (segments after the first), as in `main`.
fn cpu_load(r: CpuRow, a: ptr<function, array<vec4<f32>, MAXDV4>>, m: ptr<function, f32>, l: ptr<function, f32>) {
  if (!r.valid) {
    return;
  }
  for (var c = 0u; c < DV / 4u; c++) {
    (*a)[c] = ld_o32(r.o_base + 4u * c);
  }
  let prev = lse_buf[r.lse_idx];
  if (prev > ST_NEG_BIG) {
    *m = prev;
    *l = 1.0;
  }
}

fn cpu_store(r: CpuRow, a: ptr<function, array<vec4<f32>, MAXDV4>>, m: f32, l: f32) {
  if (!r.valid) {
    return;
  }
  let inv = select(0.0, 1.0 / l, l > 0.0);
  for (var c = 0u; c < DV / 4u; c++) {
    let x = (*a)[c] * inv;
    if (OUT_DTYPE == 0u) {
      let w = r.o_base + 4u * c;
      o_buf[w] = bitcast<u32>(x.x);
      o_buf[w + 1u] = bitcast<u32>(x.y);
      o_buf[w + 2u] = bitcast<u32>(x.z);
      o_buf[w + 3u] = bitcast<u32>(x.w);
    } else {
      let w = (r.o_base + 4u * c) / 2u;
      o_buf[w] = st_pack_pair(x.x, x.y, OUT_DTYPE);
      o_buf[w + 1u] = st_pack_pair(x.z, x.w, OUT_DTYPE);
    }
  }
  if (params.WRITE_LSE != 0u) {
    lse_buf[r.lse_idx] = select(st_neg_inf(), m + log(l), l > 0.0);
  }
}

@compute @workgroup_size(4)
fn main_cpu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let tile_id = wg.x + wg.y * nwg.x;
  if (tile_id >= params.NTILES) {
    return;
  }
  let r0 = cpu_row(tile_id, lane);
  let r1 = cpu_row(tile_id, 4u + lane);
  let r2 = cpu_row(tile_id, 8u + lane);
  let r3 = cpu_row(tile_id, 12u + lane);
  // the tile's shared facts come from its first row (lane 0 of row set 0), the same for all lanes
  let first = cpu_row(tile_id, 0u);
  let tile = cpu_tile(tile_id, first);
  if (!tile.valid) {
    return;
  }
  // positions of the valid rows: the key range is cut to what the latest row may see
  var pos_max = first.pos;
  var pos_min = first.pos;
  for (var p = 1u; p < 16u; p++) {
    let rp = cpu_row(tile_id, p);
    if (rp.valid) {
      pos_max = max(pos_max, rp.pos);
      pos_min = min(pos_min, rp.pos);
    }
  }
  let D4 = D / 4u;
  let DV4 = DV / 4u;
  var q0: array<vec4<f32>, MAXD4>;
  var q1: array<vec4<f32>, MAXD4>;
  var q2: array<vec4<f32>, MAXD4>;
  var q3: array<vec4<f32>, MAXD4>;
  let sc = params.scale;
  for (var c = 0u; c < D4; c++) {
    q0[c] = ld_q(select(first.q_base, r0.q_base, r0.valid) + 4u * c) * sc;
    q1[c] = ld_q(select(first.q_base, r1.q_base, r1.valid) + 4u * c) * sc;
    q2[c] = ld_q(select(first.q_base, r2.q_base, r2.valid) + 4u * c) * sc;
    q3[c] = ld_q(select(first.q_base, r3.q_base, r3.valid) + 4u * c) * sc;
  }
  var a0: array<vec4<f32>, MAXDV4>;
  var a1: array<vec4<f32>, MAXDV4>;
  var a2: array<vec4<f32>, MAXDV4>;
  var a3: array<vec4<f32>, MAXDV4>;
  var m0 = ST_NEG_BIG;
  var m1 = ST_NEG_BIG;
  var m2 = ST_NEG_BIG;
  var m3 = ST_NEG_BIG;
  var l0 = 0.0;
  var l1 = 0.0;
  var l2 = 0.0;
  var l3 = 0.0;
  if (params.LOAD != 0u) {
    cpu_load(r0, &a0, &m0, &l0);
    cpu_load(r1, &a1, &m1, &l1);
    cpu_load(r2, &a2, &m2, &l2);
    cpu_load(r3, &a3, &m3, &l3);
  }
  let bs = i32(select(params.BS, params.Tk, MODE == 2u));
  let Tk = i32(params.Tk);
  let nl = tile.l1 - tile.l0;
  for (var li = tile.l0 + min(params.E0, nl); li < tile.l0 + min(params.E1, nl); li++) {
    var b = tile.block;
    if (MODE == 0u || MODE == 1u) {
      b = lists[li];
    }
    if (b < 0) {
      continue;
    }
    var lo = b * bs;
    var hi = min(lo + bs, Tk);
    if (CAUSAL) {
      let lim = pos_max - i32(params.KOFF);
      hi = select(min(hi, lim / i32(params.KSTRIDE) + 1), lo, lim < 0);
    }
    if (params.W > 0u) {
      lo = max(lo, pos_min - i32(params.W) + 1);
    }
    if (hi > lo) {
      let n = hi - lo;
      hi = lo + min(i32(params.K1), n);
      lo = lo + min(i32(params.K0), n);
    }
    for (var j0 = lo; j0 < hi; j0 += 16) {
      let last = u32(hi - 1);
      let jr = u32(j0);
      var s0 = mat4x4<f32>();
      var s1 = mat4x4<f32>();
      var s2 = mat4x4<f32>();
      var s3 = mat4x4<f32>();
      for (var c = 0u; c < D4; c++) {
        let k0 = share_k(jr, last, tile.h, c, lane);
        let k1 = share_k(jr + 4u, last, tile.h, c, lane);
        let k2 = share_k(jr + 8u, last, tile.h, c, lane);
        let k3 = share_k(jr + 12u, last, tile.h, c, lane);
        let x0 = q0[c];
        let x1 = q1[c];
        let x2 = q2[c];
        let x3 = q3[c];
        s0 += mat4x4<f32>(x0 * k0, x0 * k1, x0 * k2, x0 * k3);
        s1 += mat4x4<f32>(x1 * k0, x1 * k1, x1 * k2, x1 * k3);
        s2 += mat4x4<f32>(x2 * k0, x2 * k1, x2 * k2, x2 * k3);
        s3 += mat4x4<f32>(x3 * k0, x3 * k1, x3 * k2, x3 * k3);
      }
      // column i of s_r = scores of keys jr + 4i + (0..3) for row r (x * k_i: dot with each column)
      var needs_mask = j0 + 16 > hi;
      if (CAUSAL) {
        needs_mask = needs_mask || (j0 + 15) * i32(params.KSTRIDE) + i32(params.KOFF) > pos_min;
      }
      if (params.W > 0u) {
        needs_mask = needs_mask || j0 * i32(params.KSTRIDE) + i32(params.KOFF) <= pos_max - i32(params.W);
      }
      if (needs_mask) {
        s0 = cpu_mask16(s0, j0, hi, r0.pos);
        s1 = cpu_mask16(s1, j0, hi, r1.pos);
        s2 = cpu_mask16(s2, j0, hi, r2.pos);
        s3 = cpu_mask16(s3, j0, hi, r3.pos);
      }
      let al0 = cpu_softmax16(&s0, &m0, &l0);
      let al1 = cpu_softmax16(&s1, &m1, &l1);
      let al2 = cpu_softmax16(&s2, &m2, &l2);
      let al3 = cpu_softmax16(&s3, &m3, &l3);
      for (var c = 0u; c < DV4; c++) {
        let v0 = share_v(jr, last, tile.h, c, lane);
        let v1 = share_v(jr + 4u, last, tile.h, c, lane);
        let v2 = share_v(jr + 8u, last, tile.h, c, lane);
        let v3 = share_v(jr + 12u, last, tile.h, c, lane);
        if (needs_mask) {
          a0[c] = a0[c] * al0 + cpu_pv4(v0, s0[0]) + cpu_pv4(v1, s0[1]) + cpu_pv4(v2, s0[2]) + cpu_pv4(v3, s0[3]);
          a1[c] = a1[c] * al1 + cpu_pv4(v0, s1[0]) + cpu_pv4(v1, s1[1]) + cpu_pv4(v2, s1[2]) + cpu_pv4(v3, s1[3]);
          a2[c] = a2[c] * al2 + cpu_pv4(v0, s2[0]) + cpu_pv4(v1, s2[1]) + cpu_pv4(v2, s2[2]) + cpu_pv4(v3, s2[3]);
          a3[c] = a3[c] * al3 + cpu_pv4(v0, s3[0]) + cpu_pv4(v1, s3[1]) + cpu_pv4(v2, s3[2]) + cpu_pv4(v3, s3[3]);
        } else {
          a0[c] = a0[c] * al0 + v0 * s0[0] + v1 * s0[1] + v2 * s0[2] + v3 * s0[3];
          a1[c] = a1[c] * al1 + v0 * s1[0] + v1 * s1[1] + v2 * s1[2] + v3 * s1[3];
          a2[c] = a2[c] * al2 + v0 * s2[0] + v1 * s2[1] + v2 * s2[2] + v3 * s2[3];
          a3[c] = a3[c] * al3 + v0 * s3[0] + v1 * s3[1] + v2 * s3[2] + v3 * s3[3];
        }
      }
    }
  }
  cpu_store(r0, &a0, m0, l0);
  cpu_store(r1, &a1, m1, l1);
  cpu_store(r2, &a2, m2, l2);
  cpu_store(r3, &a3, m3, l3);
}
