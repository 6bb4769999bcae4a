// Paged attention partials: queries against a list of KV pages in one pool buffer, one (o, lse)
// partial per (part, row). Entry e of the list (4 u32 at list[4 * (listBase + e)]) names a page
// slot, the absolute position of its first token, its valid token count, and the KV head it is
// for (0xffffffff = every head). Part p covers entries [p * ePer, (p + 1) * ePer) and row
// r = t * Hq + hq (query t, query head hq, KV head hq / group). Causal: key at absolute position j
// is visible to query t iff j <= qPos0 + t. Softmax runs in the log2 domain (q pre-scaled by
// scale * log2(e)); the lse written is natural log. A (part, row) that sees no key writes o = 0,
// lse = -inf, so partials merge exactly (kernels/merge).
// Page layout (words): K [Hkv, P, D], V [Hkv, P, Dv] in KV_DT (0 f32, 1 f16, 2 bf16 packed pairs,
// 3 int8 x4 with one f32 scale per token: [2, Hkv, PS] at scaleOff). Needs shaders/storage.wgsl
// and PagedParams.
// Two entry points: main_cpu (CPU adapters) and main_gpu (GPUs); see README.

@group(0) @binding(0) var<storage, read> q: array<f32>;            // [Tq, Hq, D] f32
@group(0) @binding(1) var<storage, read> kv: array<u32>;           // pool buffer: pages
@group(0) @binding(2) var<storage, read> list: array<u32>;         // entries (slot, start, len, head)
@group(0) @binding(3) var<storage, read_write> o_parts: array<f32>;   // [parts, rows, Dv]
@group(0) @binding(4) var<storage, read_write> lse_parts: array<f32>; // [parts, rows]
@group(0) @binding(5) var<uniform> params: PagedParams;
@group(0) @binding(6) var<storage, read> kv4: array<vec4<u32>>;    // the same pool buffer, 16-byte words (VEC)

override WG: u32 = 64;
override D: u32 = 64;
override DV: u32 = 64;
override KV_DT: u32 = 1;
override VEC: bool = false;      // main_cpu: 32-channel groups through 16-byte loads (D, DV multiples of 32)
override PS: u32 = 1;            // int8: tokens per page (the stride of the per-token scales)

const MAXV: u32 = 64u; // 256 / 4

fn load4(base: u32, e: u32, s: f32) -> vec4<f32> {
  if (KV_DT == 0u) {
    return vec4<f32>(bitcast<f32>(kv[base + e]), bitcast<f32>(kv[base + e + 1u]), bitcast<f32>(kv[base + e + 2u]), bitcast<f32>(kv[base + e + 3u]));
  }
  if (KV_DT == 3u) {
    return unpack4x8snorm(kv[base + e / 4u]) * s;
  }
  let w = base + e / 2u;
  return vec4<f32>(st_pair(kv[w], KV_DT), st_pair(kv[w + 1u], KV_DT));
}

// ---------------------------------------------------------------------------------------------
// main_gpu: the shape for real GPUs. One workgroup per (part, row); keys in blocks of WG: thread i
// scores key j0 + i (q staged in workgroup memory), the block's max and sum are tree-reduced in
// workgroup memory, then thread c accumulates output channels [4c, 4c + 4) over the block's keys
// (V rows read with consecutive threads on consecutive words: coalesced). Needs WG >= DV / 4 and WG
// a power of two.

var<workgroup> wq: array<vec4<f32>, MAXV>;
var<workgroup> ws: array<f32, 256>;
var<workgroup> wred: array<f32, 256>;

@compute @workgroup_size(WG)
fn main_gpu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let id = wg.x + wg.y * nwg.x;
  let rows = params.rows;
  let p = id / rows;
  let r = id - p * rows;
  if (p >= params.partCount) {
    return;
  }
  let t = r / params.Hq;
  let hq = r - t * params.Hq;
  let h = hq / params.group;
  let qpos = params.qPos0 + t;
  let qb = r * D;
  for (var c = lid; c < D / 4u; c += WG) {
    wq[c] = vec4<f32>(q[qb + 4u * c], q[qb + 4u * c + 1u], q[qb + 4u * c + 2u], q[qb + 4u * c + 3u]) * params.scaleLog2;
  }
  workgroupBarrier();
  var m = ST_NEG_BIG;
  var l = 0.0;
  var acc = vec4<f32>(0.0);
  let owns = lid < DV / 4u;
  let e0 = p * params.ePer;
  let e1 = min(params.nEntries, e0 + params.ePer);
  for (var e = e0; e < e1; e++) {
    let eb = 4u * (params.listBase + e);
    let head = list[eb + 3u];
    if (head != 0xffffffffu && head != h) {
      continue;
    }
    let slot = list[eb];
    let start = list[eb + 1u];
    var len = list[eb + 2u];
    if (params.causal != 0u) {
      if (start > qpos) {
        continue;
      }
      len = min(len, qpos - start + 1u);
    }
    let kb = slot * params.pageWords + h * params.kHeadWords;
    let vb = slot * params.pageWords + params.vOffWords + h * params.vHeadWords;
    let ksb = slot * params.pageWords + params.scaleOffWords + h * PS;
    let vsb = ksb + params.Hkv * PS;
    for (var j0 = 0u; j0 < len; j0 += WG) {
      let j = j0 + lid;
      var s = ST_NEG_BIG;
      if (j < len) {
        s = 0.0;
        let ks = tok_scale(ksb, j);
        for (var c = 0u; c < D / 4u; c++) {
          s += dot(wq[c], load4(kb, j * D + 4u * c, ks));
        }
      }
      wred[lid] = s;
      workgroupBarrier();
      for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
          wred[lid] = max(wred[lid], wred[lid + stride]);
        }
        workgroupBarrier();
      }
      let mNew = max(m, wred[0]);
      workgroupBarrier();
      let pj = select(0.0, exp2(s - mNew), j < len);
      ws[lid] = pj;
      wred[lid] = pj;
      workgroupBarrier();
      for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
          wred[lid] += wred[lid + stride];
        }
        workgroupBarrier();
      }
      let corr = exp2(m - mNew);
      l = l * corr + wred[0];
      m = mNew;
      if (owns) {
        acc *= corr;
        let n = min(WG, len - j0);
        for (var jj = 0u; jj < n; jj++) {
          acc += ws[jj] * load4(vb, (j0 + jj) * DV + 4u * lid, tok_scale(vsb, j0 + jj));
        }
      }
      workgroupBarrier();
    }
  }
  let part = params.partBase + p;
  if (owns) {
    let a = acc * select(0.0, 1.0 / l, l > 0.0);
    let ob = (part * rows + r) * DV + 4u * lid;
    o_parts[ob] = a.x;
    o_parts[ob + 1u] = a.y;
    o_parts[ob + 2u] = a.z;
    o_parts[ob + 3u] = a.w;
  }
  if (lid == 0u) {
    lse_parts[part * rows + r] = select(st_neg_inf(), (m + log2(l)) * 0.6931471805599453, l > 0.0);
  }
}

// ---------------------------------------------------------------------------------------------
// main_cpu: the shape for CPU adapters. One invocation per (part, row), no barriers, no workgroup
// memory. Per page: the scores of all its keys (channels in groups of 32 held in eight vec4
// registers, the key loop inside: few private-array accesses, 16-byte loads when VEC), the page's
// softmax, then the values group by group (eight vec4 accumulators) folded into o_parts, which
// holds the running, unnormalised output of this part and row until the end.

struct G8 {
  a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>,
  a4: vec4<f32>, a5: vec4<f32>, a6: vec4<f32>, a7: vec4<f32>,
}

fn pair4(w: vec4<u32>) -> array<vec4<f32>, 2> {
  return array<vec4<f32>, 2>(vec4<f32>(st_pair(w.x, KV_DT), st_pair(w.y, KV_DT)), vec4<f32>(st_pair(w.z, KV_DT), st_pair(w.w, KV_DT)));
}

// 32 channels starting at element e (a multiple of 32) of the block at word `base` (a multiple of 4).
fn ld32(base: u32, e: u32, s: f32) -> G8 {
  var g: G8;
  if (KV_DT == 0u) {
    let i = (base + e) / 4u;
    g.a0 = bitcast<vec4<f32>>(kv4[i]);
    g.a1 = bitcast<vec4<f32>>(kv4[i + 1u]);
    g.a2 = bitcast<vec4<f32>>(kv4[i + 2u]);
    g.a3 = bitcast<vec4<f32>>(kv4[i + 3u]);
    g.a4 = bitcast<vec4<f32>>(kv4[i + 4u]);
    g.a5 = bitcast<vec4<f32>>(kv4[i + 5u]);
    g.a6 = bitcast<vec4<f32>>(kv4[i + 6u]);
    g.a7 = bitcast<vec4<f32>>(kv4[i + 7u]);
  } else if (KV_DT == 3u) {
    let i = (base + e / 4u) / 4u;
    let w0 = kv4[i];
    let w1 = kv4[i + 1u];
    g.a0 = unpack4x8snorm(w0.x) * s;
    g.a1 = unpack4x8snorm(w0.y) * s;
    g.a2 = unpack4x8snorm(w0.z) * s;
    g.a3 = unpack4x8snorm(w0.w) * s;
    g.a4 = unpack4x8snorm(w1.x) * s;
    g.a5 = unpack4x8snorm(w1.y) * s;
    g.a6 = unpack4x8snorm(w1.z) * s;
    g.a7 = unpack4x8snorm(w1.w) * s;
  } else {
    let i = (base + e / 2u) / 4u;
    let p0 = pair4(kv4[i]);
    let p1 = pair4(kv4[i + 1u]);
    let p2 = pair4(kv4[i + 2u]);
    let p3 = pair4(kv4[i + 3u]);
    g.a0 = p0[0];
    g.a1 = p0[1];
    g.a2 = p1[0];
    g.a3 = p1[1];
    g.a4 = p2[0];
    g.a5 = p2[1];
    g.a6 = p3[0];
    g.a7 = p3[1];
  }
  return g;
}

// int8: the scale of token j of the page whose scales start at word sb (K at sb, V at sb + Hkv * PS).
fn tok_scale(sb: u32, j: u32) -> f32 {
  var r = 1.0;
  if (KV_DT == 3u) {
    r = bitcast<f32>(kv[sb + j]);
  }
  return r;
}

fn ldg(base: u32, e: u32, s: f32, ok: bool) -> vec4<f32> {
  if (ok) {
    return load4(base, e, s);
  }
  return vec4<f32>(0.0);
}

fn qld(qb: u32, e: u32, ok: bool) -> vec4<f32> {
  if (ok) {
    return vec4<f32>(q[qb + e], q[qb + e + 1u], q[qb + e + 2u], q[qb + e + 3u]) * params.scaleLog2;
  }
  return vec4<f32>(0.0);
}

@compute @workgroup_size(WG)
fn main_cpu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let id = gid.x + gid.y * nwg.x * WG;
  let rows = params.rows;
  let p = id / rows;
  let r = id - p * rows;
  if (p >= params.partCount) {
    return;
  }
  let t = r / params.Hq;
  let hq = r - t * params.Hq;
  let h = hq / params.group;
  let qpos = params.qPos0 + t;
  let qb = r * D;
  let part = params.partBase + p;
  let ob = (part * rows + r) * DV;
  for (var d = 0u; d < DV; d++) {
    o_parts[ob + d] = 0.0;
  }
  var sc: array<f32, 256>;
  var m = ST_NEG_BIG;
  var l = 0.0;
  let e0 = p * params.ePer;
  let e1 = min(params.nEntries, e0 + params.ePer);
  for (var e = e0; e < e1; e++) {
    let eb = 4u * (params.listBase + e);
    let head = list[eb + 3u];
    if (head != 0xffffffffu && head != h) {
      continue;
    }
    let slot = list[eb];
    let start = list[eb + 1u];
    var len = min(list[eb + 2u], 256u);
    if (params.causal != 0u) {
      if (start > qpos) {
        continue;
      }
      len = min(len, qpos - start + 1u);
    }
    if (len == 0u) {
      continue;
    }
    let kb = slot * params.pageWords + h * params.kHeadWords;
    let vb = slot * params.pageWords + params.vOffWords + h * params.vHeadWords;
    let ksb = slot * params.pageWords + params.scaleOffWords + h * PS;
    let vsb = ksb + params.Hkv * PS;
    for (var j = 0u; j < len; j++) {
      sc[j] = 0.0;
    }
    for (var g = 0u; g < D; g += 32u) {
      let n4 = (D - g) / 4u;
      let q0 = qld(qb, g, true);
      let q1 = qld(qb, g + 4u, n4 > 1u);
      let q2 = qld(qb, g + 8u, n4 > 2u);
      let q3 = qld(qb, g + 12u, n4 > 3u);
      let q4 = qld(qb, g + 16u, n4 > 4u);
      let q5 = qld(qb, g + 20u, n4 > 5u);
      let q6 = qld(qb, g + 24u, n4 > 6u);
      let q7 = qld(qb, g + 28u, n4 > 7u);
      for (var j = 0u; j < len; j++) {
        let b = j * D + g;
        let ks = tok_scale(ksb, j);
        if (VEC) {
          let k = ld32(kb, b, ks);
          sc[j] += dot(q0, k.a0) + dot(q1, k.a1) + dot(q2, k.a2) + dot(q3, k.a3) + dot(q4, k.a4) + dot(q5, k.a5) + dot(q6, k.a6) + dot(q7, k.a7);
          continue;
        }
        var s = dot(q0, load4(kb, b, ks));
        s += dot(q1, ldg(kb, b + 4u, ks, n4 > 1u));
        s += dot(q2, ldg(kb, b + 8u, ks, n4 > 2u));
        s += dot(q3, ldg(kb, b + 12u, ks, n4 > 3u));
        s += dot(q4, ldg(kb, b + 16u, ks, n4 > 4u));
        s += dot(q5, ldg(kb, b + 20u, ks, n4 > 5u));
        s += dot(q6, ldg(kb, b + 24u, ks, n4 > 6u));
        s += dot(q7, ldg(kb, b + 28u, ks, n4 > 7u));
        sc[j] += s;
      }
    }
    var mp = ST_NEG_BIG;
    for (var j = 0u; j < len; j++) {
      mp = max(mp, sc[j]);
    }
    let mNew = max(m, mp);
    let corr = exp2(m - mNew);
    var lp = 0.0;
    for (var j = 0u; j < len; j++) {
      let pj = exp2(sc[j] - mNew);
      sc[j] = pj;
      lp += pj;
    }
    l = l * corr + lp;
    m = mNew;
    for (var g = 0u; g < DV; g += 32u) {
      let n4 = (DV - g) / 4u;
      var a0 = vec4<f32>(0.0);
      var a1 = vec4<f32>(0.0);
      var a2 = vec4<f32>(0.0);
      var a3 = vec4<f32>(0.0);
      var a4 = vec4<f32>(0.0);
      var a5 = vec4<f32>(0.0);
      var a6 = vec4<f32>(0.0);
      var a7 = vec4<f32>(0.0);
      for (var j = 0u; j < len; j++) {
        let pj = sc[j];
        let b = j * DV + g;
        let vs = tok_scale(vsb, j);
        if (VEC) {
          let v = ld32(vb, b, vs);
          a0 += pj * v.a0;
          a1 += pj * v.a1;
          a2 += pj * v.a2;
          a3 += pj * v.a3;
          a4 += pj * v.a4;
          a5 += pj * v.a5;
          a6 += pj * v.a6;
          a7 += pj * v.a7;
          continue;
        }
        a0 += pj * load4(vb, b, vs);
        a1 += pj * ldg(vb, b + 4u, vs, n4 > 1u);
        a2 += pj * ldg(vb, b + 8u, vs, n4 > 2u);
        a3 += pj * ldg(vb, b + 12u, vs, n4 > 3u);
        a4 += pj * ldg(vb, b + 16u, vs, n4 > 4u);
        a5 += pj * ldg(vb, b + 20u, vs, n4 > 5u);
        a6 += pj * ldg(vb, b + 24u, vs, n4 > 6u);
        a7 += pj * ldg(vb, b + 28u, vs, n4 > 7u);
      }
      let o = ob + g;
      fold4(o, a0, corr, true);
      fold4(o + 4u, a1, corr, n4 > 1u);
      fold4(o + 8u, a2, corr, n4 > 2u);
      fold4(o + 12u, a3, corr, n4 > 3u);
      fold4(o + 16u, a4, corr, n4 > 4u);
      fold4(o + 20u, a5, corr, n4 > 5u);
      fold4(o + 24u, a6, corr, n4 > 6u);
      fold4(o + 28u, a7, corr, n4 > 7u);
    }
  }
  let inv = select(0.0, 1.0 / l, l > 0.0);
  for (var d = 0u; d < DV; d++) {
    o_parts[ob + d] *= inv;
  }
  lse_parts[part * rows + r] = select(st_neg_inf(), (m + log2(l)) * 0.6931471805599453, l > 0.0);
}

fn fold4(o: u32, a: vec4<f32>, corr: f32, ok: bool) {
  if (ok) {
    o_parts[o] = o_parts[o] * corr + a.x;
    o_parts[o + 1u] = o_parts[o + 1u] * corr + a.y;
    o_parts[o + 2u] = o_parts[o + 2u] * corr + a.z;
    o_parts[o + 3u] = o_parts[o + 3u] * corr + a.w;
  }
}
