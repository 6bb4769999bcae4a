// Flash attention (online softmax, log2 domain inside, natural-log lse out) for prefill and for
// split-K decode. Needs shaders/storage.wgsl, the struct AttnParams (prefill.ts) and exactly one
// of the K/V sharing snippets (prefill_sg.wgsl with subgroups, prefill_nosg.wgsl without), which
// define `share_k` / `share_v` for the CPU variant.
//
// Work item = (tile, kv head hk, split). A tile is a run of "packed rows" of one sequence: packed
// row p stands for query token t = p / G and query head h = hk * G + p % G (the G query heads of
// a GQA group share their K/V loads). Tiles come from the host-built table `tiles` (ragged
// batches). Keys of the work item: the tile's visible range [kLo, kHi) (causal, window) plus the
// sink range [0, min(S, kLo)), each cut to the split's chunk [split * kvChunk, + kvChunk).
// Blocks outside the window are never visited, so the cost grows with T * W, not T^2.
//
// Two entry points share everything but the loop shape:
//   main_cpu: for CPU adapters (SwiftShader): 4 invocations (one subgroup), 4 packed rows per
//     invocation, 16-key blocks as 4x4 matrices (K/V loaded once per subgroup and shared by
//     subgroupBroadcast), scalar/vec4 accumulators.
//   main_gpu: for GPUs: WG_GPU invocations, one packed row each; K/V tiles of BKG keys staged in
//     workgroup memory with coalesced loads.

@group(0) @binding(0) var<storage, read> q: array<u32>;              // [Tq, Hq, D]  IN_DTYPE
@group(0) @binding(1) var<storage, read> k: array<u32>;              // [Tk, Hkv, D] IN_DTYPE
@group(0) @binding(2) var<storage, read> v: array<u32>;              // [Tk, Hkv, DV] IN_DTYPE
@group(0) @binding(3) var<storage, read_write> o: array<u32>;        // [splits][Tq, Hq, DV] OUT_DTYPE
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;      // [splits][Tq, Hq] f32
// binding 5: sink_logits (array<f32>, [Hq], read where params.has_sink; optional, see prefill.ts FLASH)
@group(0) @binding(6) var<storage, read> tiles: array<vec4<u32>>;    // 2 per tile, see tile_info
@group(0) @binding(7) var<uniform> params: AttnParams;

override IN_DTYPE: u32 = 0u;
override OUT_DTYPE: u32 = 0u;
override HEAD_D: u32 = 0u;     // 0: read params.d (main_cpu: one pipeline for every head dim)
override HEAD_DV: u32 = 0u;    // 0: read params.dv
override WG_GPU: u32 = 64u;     // main_gpu: invocations = packed rows per tile
override BKG: u32 = 16u;        // main_gpu: keys per workgroup-memory tile
override KS_LEN: u32 = 256u;    // main_gpu: BKG * ceil(HEAD_D / 4)
override VS_LEN: u32 = 256u;    // main_gpu: BKG * ceil(HEAD_DV / 4)

fn head_d() -> u32 {
  if (HEAD_D != 0u) {
    return HEAD_D;
  }
  return params.d;
}
fn head_dv() -> u32 {
  if (HEAD_DV != 0u) {
    return HEAD_DV;
  }
  return params.dv;
}
fn is_causal() -> bool {
  return params.causal != 0u;
}

const LOG2E: f32 = 1.4426950408889634;
const LN2: f32 = 0.6931471805599453;
const MAX_C: u32 = 64u; // 256 / 4: vec4 chunks of the largest head dim

struct Work {
  valid: bool,
  q_off: u32,   // first token of the sequence in q/o
  tq: u32,
  k_off: u32,   // first key of the sequence in k/v
  tk: u32,
  p0: u32,      // first packed row of the tile
  p_end: u32,   // one past the last packed row of the tile (<= tq * G)
  hk: u32,
  split: u32,
  shift: i32,   // tk - tq: absolute position of token t is shift + t
  seg_lo: array<u32, 2>, // key segments (sinks, main), each [lo, hi) in sequence key indices
  seg_hi: array<u32, 2>,
  pos_first: i32,
  pos_last: i32,
}

fn work_item(id: u32, rows_per_tile: u32) -> Work {
  var w: Work;
  w.valid = id < params.num_work;
  let tile = id % params.num_tiles;
  let rest = id / params.num_tiles;
  w.hk = rest % params.hkv;
  w.split = rest / params.hkv;
  let a = tiles[2u * tile];
  let b = tiles[2u * tile + 1u];
  w.q_off = a.x;
  w.tq = a.y;
  w.k_off = a.z;
  w.tk = a.w;
  w.p0 = b.x;
  let G = params.group;
  w.p_end = min(w.p0 + rows_per_tile, w.tq * G);
  w.shift = i32(w.tk) - i32(w.tq);
  w.pos_first = w.shift + i32(w.p0 / G);
  w.pos_last = w.shift + i32((max(w.p_end, w.p0 + 1u) - 1u) / G);
  var lo = 0i;
  var hi = i32(w.tk);
  if (is_causal()) {
    hi = min(hi, w.pos_last + 1);
    if (params.window > 0u) {
      lo = max(0, w.pos_first - i32(params.window) + 1);
    }
  }
  hi = max(hi, 0);
  lo = min(lo, hi);
  let c_lo = w.split * params.kv_chunk;
  let c_hi = c_lo + params.kv_chunk;
  // Segment 0: sinks [0, min(S, lo)); segment 1: [lo, hi). Each cut to the split's chunk.
  let s_hi = min(params.sinks, u32(lo));
  w.seg_lo[0] = min(c_lo, s_hi);
  w.seg_hi[0] = max(w.seg_lo[0], min(c_hi, s_hi));
  w.seg_lo[1] = max(c_lo, u32(lo));
  w.seg_hi[1] = max(w.seg_lo[1], min(c_hi, u32(hi)));
  return w;
}

// Is key j visible from absolute position pos (4 keys j..j+3 at once), below the segment end?
fn visible4(j: u32, pos: i32, seg_hi: u32) -> vec4<bool> {
  let jj = vec4<i32>(i32(j)) + vec4<i32>(0, 1, 2, 3);
  var ok = jj < vec4<i32>(i32(seg_hi));
  if (is_causal()) {
    ok = ok & (jj <= vec4<i32>(pos));
    if (params.window > 0u) {
      ok = ok & ((jj > vec4<i32>(pos - i32(params.window))) | (jj < vec4<i32>(i32(params.sinks))));
    }
  }
  return ok;
}

fn visible1(j: u32, pos: i32, seg_hi: u32) -> bool {
  let jj = i32(j);
  var ok = j < seg_hi;
  if (is_causal()) {
    ok = ok && jj <= pos;
    if (params.window > 0u) {
      ok = ok && (jj > pos - i32(params.window) || jj < i32(params.sinks));
    }
  }
  return ok;
}

// Does the block [j0, j0 + n) need per-element masks for rows at positions [pos_first, pos_last]?
fn block_needs_mask(w: Work, j0: u32, n: u32, seg_hi: u32) -> bool {
  if (j0 + n > seg_hi) {
    return true;
  }
  if (is_causal()) {
    if (i32(j0 + n - 1u) > w.pos_first) {
      return true;
    }
    if (params.window > 0u && i32(j0) <= w.pos_last - i32(params.window) && j0 + n > params.sinks) {
      return true;
    }
  }
  return false;
}

// ld4_q / ld4_k / ld4_v (4 consecutive elements from element index i, n of them valid, the rest
// read as 0) are generated from one template in prefill.ts (`LOADS`): WGSL cannot pass a storage
// array to a function.

// Element index of dims [4c, 4c + 4) of key row `row` (absolute in k/v) for kv head hk.
fn k_index(row: u32, hk: u32, c: u32) -> u32 {
  return (row * params.hkv + hk) * head_d() + 4u * c;
}
fn v_index(row: u32, hk: u32, c: u32) -> u32 {
  return (row * params.hkv + hk) * head_dv() + 4u * c;
}

// Writes 4 output values (dims [4c, 4c + 4) of output row `orow`, an index into [.., Hq] rows).
fn st4_o(base: u32, c: u32, x: vec4<f32>) {
  let d0 = 4u * c;
  let n = min(4u, head_dv() - d0);
  let i = base + d0;
  if (OUT_DTYPE == 0u) {
    // No loop (llvmpipe's loop cap); n is 1..4.
    o[i] = bitcast<u32>(x.x);
    if (n > 1u) {
      o[i + 1u] = bitcast<u32>(x.y);
    }
    if (n > 2u) {
      o[i + 2u] = bitcast<u32>(x.z);
    }
    if (n > 3u) {
      o[i + 3u] = bitcast<u32>(x.w);
    }
  } else {
    // head_dv() is even for 16-bit outputs (checked in plan), so i is even and n is 2 or 4.
    o[i >> 1u] = st_pack_pair(x.x, x.y, OUT_DTYPE);
    if (n == 4u) {
      o[(i >> 1u) + 1u] = st_pack_pair(x.z, x.w, OUT_DTYPE);
    }
  }
}

// Per packed row: where it reads q and writes o/lse, and where it sits.
struct RowRef {
  valid: bool,
  pos: i32,
  h: u32,
  q_base: u32,   // element index of q[t, h, 0]
  o_base: u32,   // element index of o[split][t, h, 0]
  lse_idx: u32,
}

fn row_ref(w: Work, p: u32) -> RowRef {
  var r: RowRef;
  r.valid = p < w.p_end;
  let pp = min(p, w.p_end - 1u);
  let G = params.group;
  let t = pp / G;
  r.h = w.hk * G + pp % G;
  r.pos = w.shift + i32(t);
  let qrow = (w.q_off + t) * params.hq + r.h;
  r.q_base = qrow * head_d();
  r.o_base = w.split * params.o_split_stride + qrow * head_dv();
  r.lse_idx = w.split * params.lse_split_stride + qrow;
  return r;
}

// Initial running max (log2 units) and denominator: the sink logit acts as a key with value 0,
// counted once (in split 0).
fn init_m(w: Work, r: RowRef) -> f32 {
  if (params.has_sink != 0u && w.split == 0u) {
    return sink_logits[r.h] * LOG2E;
  }
  return ST_NEG_BIG;
}
fn init_l(w: Work) -> f32 {
  return select(0.0, 1.0, params.has_sink != 0u && w.split == 0u);
}

fn write_lse(r: RowRef, m: f32, l: f32) {
  if (params.write_lse != 0u) {
    lse[r.lse_idx] = select(st_neg_inf(), (m + log2(l)) * LN2, l > 0.0);
  }
}

fn max4(x: vec4<f32>) -> f32 {
  return max(max(x.x, x.y), max(x.z, x.w));
}

fn mask4(s: vec4<f32>, j: u32, pos: i32, seg_hi: u32) -> vec4<f32> {
  return select(vec4<f32>(st_neg_inf()), s, visible4(j, pos, seg_hi));
}

// One online-softmax step for one row over a 16-key block held as 4 columns of 4 scores:
// updates m and l, turns the scores into probabilities in place, returns the rescale factor.
fn softmax16(s: ptr<function, mat4x4<f32>>, m: ptr<function, f32>, l: ptr<function, f32>) -> f32 {
  let bm = max(max(max4((*s)[0]), max4((*s)[1])), max(max4((*s)[2]), max4((*s)[3])));
  let m_new = max(*m, bm);
  let alpha = exp2(*m - m_new);
  let mv = vec4<f32>(m_new);
  let p = mat4x4<f32>(exp2((*s)[0] - mv), exp2((*s)[1] - mv), exp2((*s)[2] - mv), exp2((*s)[3] - mv));
  *s = p;
  *l = *l * alpha + dot(p[0] + p[1] + p[2] + p[3], vec4<f32>(1.0));
  *m = m_new;
  return alpha;
}

// p * V over 4 keys (V's columns = the keys, p = their probabilities) that SKIPS keys whose
// probability is 0: masked keys (and the clamped rows past a segment) have p = exp2(-inf) = 0
// exactly, and their values may be NaN or Inf, which a product with 0 would spread (0 * NaN =
// NaN) to rows that cannot see them. Used on blocks that need masks; unmasked blocks keep the
// plain mat-vec product (every key there is visible, so a non-finite value propagates anyway).
fn pv4(v: mat4x4<f32>, p: vec4<f32>) -> vec4<f32> {
  let z = vec4<f32>(0.0);
  return select(z, v[0], p.x > 0.0) * p.x + select(z, v[1], p.y > 0.0) * p.y + select(z, v[2], p.z > 0.0) * p.z + select(z, v[3], p.w > 0.0) * p.w;
}

fn masked16(s: mat4x4<f32>, j0: u32, pos: i32, seg_hi: u32) -> mat4x4<f32> {
  return mat4x4<f32>(mask4(s[0], j0, pos, seg_hi), mask4(s[1], j0 + 4u, pos, seg_hi), mask4(s[2], j0 + 8u, pos, seg_hi), mask4(s[3], j0 + 12u, pos, seg_hi));
}

// ---------------------------------------------------------------------------------------------
// CPU variant. Lane `lane` of the 4-lane workgroup holds packed rows p0 + 4r + lane, r = 0..3.

const CPU_ROWS: u32 = 16u;

@compute @workgroup_size(4)
fn main_cpu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let w = work_item(wg.x + wg.y * nwg.x, CPU_ROWS);
  if (!w.valid) {
    return;
  }
  let nc = (head_d() + 3u) / 4u;
  let ncv = (head_dv() + 3u) / 4u;
  let r0 = row_ref(w, w.p0 + lane);
  let r1 = row_ref(w, w.p0 + 4u + lane);
  let r2 = row_ref(w, w.p0 + 8u + lane);
  let r3 = row_ref(w, w.p0 + 12u + lane);
  var q0: array<vec4<f32>, MAX_C>;
  var q1: array<vec4<f32>, MAX_C>;
  var q2: array<vec4<f32>, MAX_C>;
  var q3: array<vec4<f32>, MAX_C>;
  let sc = params.scale_log2;
  for (var c = 0u; c < nc; c++) {
    let n = min(4u, head_d() - 4u * c);
    q0[c] = ld4_q(r0.q_base + 4u * c, n) * sc;
    q1[c] = ld4_q(r1.q_base + 4u * c, n) * sc;
    q2[c] = ld4_q(r2.q_base + 4u * c, n) * sc;
    q3[c] = ld4_q(r3.q_base + 4u * c, n) * sc;
  }
  var a0: array<vec4<f32>, MAX_C>;
  var a1: array<vec4<f32>, MAX_C>;
  var a2: array<vec4<f32>, MAX_C>;
  var a3: array<vec4<f32>, MAX_C>;
  var m0 = init_m(w, r0);
  var m1 = init_m(w, r1);
  var m2 = init_m(w, r2);
  var m3 = init_m(w, r3);
  var l0 = init_l(w);
  var l1 = l0;
  var l2 = l0;
  var l3 = l0;
  let kbase = w.k_off;
  for (var seg = 0u; seg < 2u; seg++) {
    let lo = w.seg_lo[seg];
    let hi = w.seg_hi[seg];
    for (var j0 = lo; j0 < hi; j0 += 16u) {
      let last = kbase + hi - 1u; // clamp rows past the segment to a real key (its p is 0)
      let jr = kbase + j0;
      var s0 = mat4x4<f32>();
      var s1 = mat4x4<f32>();
      var s2 = mat4x4<f32>();
      var s3 = mat4x4<f32>();
      for (var c = 0u; c < nc; c++) {
        let n = min(4u, head_d() - 4u * c);
        let k0 = share_k(jr, last, w.hk, c, n, lane);
        let k1 = share_k(jr + 4u, last, w.hk, c, n, lane);
        let k2 = share_k(jr + 8u, last, w.hk, c, n, lane);
        let k3 = share_k(jr + 12u, last, w.hk, c, n, lane);
        let x0 = q0[c];
        let x1 = q1[c];
        let x2 = q2[c];
        let x3 = q3[c];
        s0 += mat4x4<f32>(x0 * k0, x0 * k1, x0 * k2, x0 * k3);
        s1 += mat4x4<f32>(x1 * k0, x1 * k1, x1 * k2, x1 * k3);
        s2 += mat4x4<f32>(x2 * k0, x2 * k1, x2 * k2, x2 * k3);
        s3 += mat4x4<f32>(x3 * k0, x3 * k1, x3 * k2, x3 * k3);
      }
      let nm = block_needs_mask(w, j0, 16u, hi);
      if (nm) {
        s0 = masked16(s0, j0, r0.pos, hi);
        s1 = masked16(s1, j0, r1.pos, hi);
        s2 = masked16(s2, j0, r2.pos, hi);
        s3 = masked16(s3, j0, r3.pos, hi);
      }
      let al0 = softmax16(&s0, &m0, &l0);
      let al1 = softmax16(&s1, &m1, &l1);
      let al2 = softmax16(&s2, &m2, &l2);
      let al3 = softmax16(&s3, &m3, &l3);
      // The branch is outside the channel loop, so the unmasked blocks (nearly all) run the plain
      // loop with nothing added to it.
      if (nm) {
        for (var c = 0u; c < ncv; c++) {
          let n = min(4u, head_dv() - 4u * c);
          let v0 = share_v(jr, last, w.hk, c, n, lane);
          let v1 = share_v(jr + 4u, last, w.hk, c, n, lane);
          let v2 = share_v(jr + 8u, last, w.hk, c, n, lane);
          let v3 = share_v(jr + 12u, last, w.hk, c, n, lane);
          a0[c] = a0[c] * al0 + pv4(v0, s0[0]) + pv4(v1, s0[1]) + pv4(v2, s0[2]) + pv4(v3, s0[3]);
          a1[c] = a1[c] * al1 + pv4(v0, s1[0]) + pv4(v1, s1[1]) + pv4(v2, s1[2]) + pv4(v3, s1[3]);
          a2[c] = a2[c] * al2 + pv4(v0, s2[0]) + pv4(v1, s2[1]) + pv4(v2, s2[2]) + pv4(v3, s2[3]);
          a3[c] = a3[c] * al3 + pv4(v0, s3[0]) + pv4(v1, s3[1]) + pv4(v2, s3[2]) + pv4(v3, s3[3]);
        }
      } else {
        for (var c = 0u; c < ncv; c++) {
          let n = min(4u, head_dv() - 4u * c);
          let v0 = share_v(jr, last, w.hk, c, n, lane);
          let v1 = share_v(jr + 4u, last, w.hk, c, n, lane);
          let v2 = share_v(jr + 8u, last, w.hk, c, n, lane);
          let v3 = share_v(jr + 12u, last, w.hk, c, n, lane);
          a0[c] = a0[c] * al0 + v0 * s0[0] + v1 * s0[1] + v2 * s0[2] + v3 * s0[3];
          a1[c] = a1[c] * al1 + v0 * s1[0] + v1 * s1[1] + v2 * s1[2] + v3 * s1[3];
          a2[c] = a2[c] * al2 + v0 * s2[0] + v1 * s2[1] + v2 * s2[2] + v3 * s2[3];
          a3[c] = a3[c] * al3 + v0 * s3[0] + v1 * s3[1] + v2 * s3[2] + v3 * s3[3];
        }
      }
    }
  }
  let i0 = select(0.0, 1.0 / l0, l0 > 0.0);
  let i1 = select(0.0, 1.0 / l1, l1 > 0.0);
  let i2 = select(0.0, 1.0 / l2, l2 > 0.0);
  let i3 = select(0.0, 1.0 / l3, l3 > 0.0);
  for (var c = 0u; c < ncv; c++) {
    if (r0.valid) {
      st4_o(r0.o_base, c, a0[c] * i0);
    }
    if (r1.valid) {
      st4_o(r1.o_base, c, a1[c] * i1);
    }
    if (r2.valid) {
      st4_o(r2.o_base, c, a2[c] * i2);
    }
    if (r3.valid) {
      st4_o(r3.o_base, c, a3[c] * i3);
    }
  }
  if (r0.valid) {
    write_lse(r0, m0, l0);
  }
  if (r1.valid) {
    write_lse(r1, m1, l1);
  }
  if (r2.valid) {
    write_lse(r2, m2, l2);
  }
  if (r3.valid) {
    write_lse(r3, m3, l3);
  }
}

// ---------------------------------------------------------------------------------------------
// GPU variant. One packed row per invocation; K/V tiles of BKG keys in workgroup memory, loaded
// with consecutive invocations reading consecutive vec4 chunks (coalesced).

var<workgroup> ks: array<vec4<f32>, KS_LEN>;
var<workgroup> vs: array<vec4<f32>, VS_LEN>;

@compute @workgroup_size(WG_GPU)
fn main_gpu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let w = work_item(wg.x + wg.y * nwg.x, WG_GPU);
  if (!w.valid) {
    return;
  }
  let nc = (head_d() + 3u) / 4u;
  let ncv = (head_dv() + 3u) / 4u;
  let r = row_ref(w, w.p0 + lid);
  var qr: array<vec4<f32>, MAX_C>;
  for (var c = 0u; c < nc; c++) {
    qr[c] = ld4_q(r.q_base + 4u * c, min(4u, head_d() - 4u * c)) * params.scale_log2;
  }
  var acc: array<vec4<f32>, MAX_C>;
  var m = init_m(w, r);
  var l = init_l(w);
  var sc: array<f32, 64>;
  for (var seg = 0u; seg < 2u; seg++) {
    let lo = w.seg_lo[seg];
    let hi = w.seg_hi[seg];
    for (var j0 = lo; j0 < hi; j0 += BKG) {
      workgroupBarrier();
      for (var x = lid; x < BKG * nc; x += WG_GPU) {
        let kk = x / nc;
        let c = x % nc;
        let row = w.k_off + min(j0 + kk, hi - 1u);
        ks[x] = ld4_k(k_index(row, w.hk, c), min(4u, head_d() - 4u * c));
      }
      for (var x = lid; x < BKG * ncv; x += WG_GPU) {
        let kk = x / ncv;
        let c = x % ncv;
        let row = w.k_off + min(j0 + kk, hi - 1u);
        vs[x] = ld4_v(v_index(row, w.hk, c), min(4u, head_dv() - 4u * c));
      }
      workgroupBarrier();
      let need_mask = block_needs_mask(w, j0, BKG, hi);
      var bm = ST_NEG_BIG;
      for (var kk = 0u; kk < BKG; kk++) {
        var s = 0.0;
        for (var c = 0u; c < nc; c++) {
          s += dot(qr[c], ks[kk * nc + c]);
        }
        if (need_mask && !visible1(j0 + kk, r.pos, hi)) {
          s = st_neg_inf();
        }
        sc[kk] = s;
        bm = max(bm, s);
      }
      let m_new = max(m, bm);
      let alpha = exp2(m - m_new);
      var ps = 0.0;
      for (var kk = 0u; kk < BKG; kk++) {
        let p = exp2(sc[kk] - m_new);
        sc[kk] = p;
        ps += p;
      }
      l = l * alpha + ps;
      m = m_new;
      for (var c = 0u; c < ncv; c++) {
        var x = acc[c] * alpha;
        if (need_mask) {
          // skip masked keys (p = 0 exactly): their values may be NaN or Inf (see pv4)
          for (var kk = 0u; kk < BKG; kk++) {
            x += sc[kk] * select(vec4<f32>(0.0), vs[kk * ncv + c], sc[kk] > 0.0);
          }
        } else {
          for (var kk = 0u; kk < BKG; kk++) {
            x += sc[kk] * vs[kk * ncv + c];
          }
        }
        acc[c] = x;
      }
    }
  }
  if (r.valid) {
    let inv = select(0.0, 1.0 / l, l > 0.0);
    for (var c = 0u; c < ncv; c++) {
      st4_o(r.o_base, c, acc[c] * inv);
    }
    write_lse(r, m, l);
  }
}
