// Paged attention partials: queries against a list of KV pages in one pool buffer, one (o, lse)
// partial per (part, row). Entry e of the list (4 u32 at list[4 * (listBase + e)]) names a page
// slot, the absolute position of its first token, its valid token count, and the KV head it is
// for (0xffffffff = every head). Part p covers entries [p * ePer, (p + 1) * ePer) and row
// r = t * Hq + hq (query t, query head hq, KV head hq / group). Causal: key at absolute position j
// is visible to query t iff j <= qPos0 + t. Softmax runs in the log2 domain (q pre-scaled by
// scale * log2(e)); the lse written is natural log. A (part, row) that sees no key writes o = 0,
// lse = -inf, so partials merge exactly (kernels/merge).
// Page layout (words): K [Hkv, P, D], V [Hkv, P, Dv] in KV_DT (0 f32, 1 f16, 2 bf16 packed pairs,
// 3 int8 x4 with f32 scales [2, Hkv] at scaleOff). Needs shaders/storage.wgsl and PagedParams.
// One invocation per (part, row): scalar online softmax over its keys, vec4 accumulators. This is
// the shape the CPU adapter likes (no barriers, no workgroup memory); see README for GPUs.

@group(0) @binding(0) var<storage, read> q: array<f32>;            // [Tq, Hq, D] f32
@group(0) @binding(1) var<storage, read> kv: array<u32>;           // pool buffer: pages
@group(0) @binding(2) var<storage, read> list: array<u32>;         // entries (slot, start, len, head)
@group(0) @binding(3) var<storage, read_write> o_parts: array<f32>;   // [parts, rows, Dv]
@group(0) @binding(4) var<storage, read_write> lse_parts: array<f32>; // [parts, rows]
@group(0) @binding(5) var<uniform> params: PagedParams;

override WG: u32 = 64;
override D: u32 = 64;
override DV: u32 = 64;
override KV_DT: u32 = 1;

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

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
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
  var qv: array<vec4<f32>, MAXV>;
  var acc: array<vec4<f32>, MAXV>;
  let qb = r * D;
  for (var c = 0u; c < D / 4u; c++) {
    qv[c] = vec4<f32>(q[qb + 4u * c], q[qb + 4u * c + 1u], q[qb + 4u * c + 2u], q[qb + 4u * c + 3u]) * params.scaleLog2;
  }
  for (var c = 0u; c < DV / 4u; c++) {
    acc[c] = vec4<f32>(0.0);
  }
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
    var len = list[eb + 2u];
    if (params.causal != 0u) {
      if (start > qpos) {
        continue;
      }
      len = min(len, qpos - start + 1u);
    }
    let kb = slot * params.pageWords + h * params.kHeadWords;
    let vb = slot * params.pageWords + params.vOffWords + h * params.vHeadWords;
    var ks = 1.0;
    var vs = 1.0;
    if (KV_DT == 3u) {
      ks = bitcast<f32>(kv[slot * params.pageWords + params.scaleOffWords + h]);
      vs = bitcast<f32>(kv[slot * params.pageWords + params.scaleOffWords + params.Hkv + h]);
    }
    for (var j = 0u; j < len; j++) {
      var s = 0.0;
      for (var c = 0u; c < D / 4u; c++) {
        s += dot(qv[c], load4(kb, j * D + 4u * c, ks));
      }
      if (s > m) {
        let corr = exp2(m - s);
        l *= corr;
        for (var c = 0u; c < DV / 4u; c++) {
          acc[c] *= corr;
        }
        m = s;
      }
      let pr = exp2(s - m);
      l += pr;
      for (var c = 0u; c < DV / 4u; c++) {
        acc[c] += pr * load4(vb, j * DV + 4u * c, vs);
      }
    }
  }
  let part = params.partBase + p;
  let ob = (part * rows + r) * DV;
  let inv = select(0.0, 1.0 / l, l > 0.0);
  for (var c = 0u; c < DV / 4u; c++) {
    let a = acc[c] * inv;
    o_parts[ob + 4u * c] = a.x;
    o_parts[ob + 4u * c + 1u] = a.y;
    o_parts[ob + 4u * c + 2u] = a.z;
    o_parts[ob + 4u * c + 3u] = a.w;
  }
  lse_parts[part * rows + r] = select(st_neg_inf(), (m + log2(l)) * 0.6931471805599453, l > 0.0);
}
