// Multi-row paged attention partials for shared-prefix (cascade) decode: the same inputs, list
// entries and outputs as kernels/paged (this text is appended to paged.wgsl and uses its bindings
// and load4), but one invocation attends FOUR query rows of one KV head together, so each key and
// value is loaded (and, for f16/bf16/int8, unpacked) once for four rows instead of once per row.
// The shared pages of a cascade are attended by Tq = sequences x group rows per KV head; on a CPU
// adapter the loads and unpacks, not the multiply-adds, dominate the per-row kernel.
// Invocation id -> (part p, KV head h, block b); block b holds rows i = 4b..4b+3 of head h's
// Tq * group rows, i -> (t = i / group, hq = h * group + i % group), row r = t * Hq + hq.
// No causal mask (the shared prefix precedes every query). Scores are held per key as vec4
// (one component per row), the running output of each row in o_parts as in main_cpu.

const CH: u32 = 64u;

fn row_of(h: u32, i: u32) -> u32 {
  let t = i / params.group;
  return t * params.Hq + h * params.group + (i - t * params.group);
}

fn fold_row(ob: u32, a: vec4<f32>, corr: f32, ok: bool) {
  if (ok) {
    o_parts[ob] = o_parts[ob] * corr + a.x;
    o_parts[ob + 1u] = o_parts[ob + 1u] * corr + a.y;
    o_parts[ob + 2u] = o_parts[ob + 2u] * corr + a.z;
    o_parts[ob + 3u] = o_parts[ob + 3u] * corr + a.w;
  }
}

fn q_row(r: u32, e: u32, ok: bool) -> vec4<f32> {
  if (ok) {
    let b = r * D + e;
    return vec4<f32>(q[b], q[b + 1u], q[b + 2u], q[b + 3u]) * params.scaleLog2;
  }
  return vec4<f32>(0.0);
}

// Eight vec4 of row r's query (scaled) from channel g; channels past D are 0.
fn q8(r: u32, g: u32, ok: bool) -> G8 {
  let n4 = (D - g) / 4u;
  var x: G8;
  x.a0 = q_row(r, g, ok);
  x.a1 = q_row(r, g + 4u, ok && n4 > 1u);
  x.a2 = q_row(r, g + 8u, ok && n4 > 2u);
  x.a3 = q_row(r, g + 12u, ok && n4 > 3u);
  x.a4 = q_row(r, g + 16u, ok && n4 > 4u);
  x.a5 = q_row(r, g + 20u, ok && n4 > 5u);
  x.a6 = q_row(r, g + 24u, ok && n4 > 6u);
  x.a7 = q_row(r, g + 28u, ok && n4 > 7u);
  return x;
}

// 32 key channels from element e (a block start); channels past D are 0.
fn k8(kb: u32, e: u32, ks: f32) -> G8 {
  if (VEC) {
    return ld32(kb, e, ks);
  }
  let n4 = (D - e % D) / 4u;
  var x: G8;
  x.a0 = load4(kb, e, ks);
  x.a1 = ldg(kb, e + 4u, ks, n4 > 1u);
  x.a2 = ldg(kb, e + 8u, ks, n4 > 2u);
  x.a3 = ldg(kb, e + 12u, ks, n4 > 3u);
  x.a4 = ldg(kb, e + 16u, ks, n4 > 4u);
  x.a5 = ldg(kb, e + 20u, ks, n4 > 5u);
  x.a6 = ldg(kb, e + 24u, ks, n4 > 6u);
  x.a7 = ldg(kb, e + 28u, ks, n4 > 7u);
  return x;
}

fn dot8(a: G8, b: G8) -> f32 {
  var s = dot(a.a0, b.a0);
  s += dot(a.a1, b.a1);
  s += dot(a.a2, b.a2);
  s += dot(a.a3, b.a3);
  s += dot(a.a4, b.a4);
  s += dot(a.a5, b.a5);
  s += dot(a.a6, b.a6);
  s += dot(a.a7, b.a7);
  return s;
}

@compute @workgroup_size(WG)
fn main_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let id = gid.x + gid.y * nwg.x * WG;
  let rows = params.rows;
  let perHead = rows / params.Hkv;          // Tq * group rows per KV head
  let nb = (perHead + 3u) / 4u;
  let perPart = params.Hkv * nb;
  let p = id / perPart;
  if (p >= params.partCount) {
    return;
  }
  let rem = id - p * perPart;
  let h = rem / nb;
  let b = rem - h * nb;
  let i0 = 4u * b;
  let ok1 = i0 + 1u < perHead;
  let ok2 = i0 + 2u < perHead;
  let ok3 = i0 + 3u < perHead;
  let r0 = row_of(h, i0);
  let r1 = select(r0, row_of(h, i0 + 1u), ok1);
  let r2 = select(r0, row_of(h, i0 + 2u), ok2);
  let r3 = select(r0, row_of(h, i0 + 3u), ok3);
  let part = params.partBase + p;
  let ob0 = (part * rows + r0) * DV;
  let ob1 = (part * rows + r1) * DV;
  let ob2 = (part * rows + r2) * DV;
  let ob3 = (part * rows + r3) * DV;
  for (var d = 0u; d < DV; d++) {
    o_parts[ob0 + d] = 0.0;
    if (ok1) { o_parts[ob1 + d] = 0.0; }
    if (ok2) { o_parts[ob2 + d] = 0.0; }
    if (ok3) { o_parts[ob3 + d] = 0.0; }
  }
  var sc: array<vec4<f32>, 64>;
  var m = vec4<f32>(ST_NEG_BIG);
  var l = vec4<f32>(0.0);
  let e0 = p * params.ePer;
  let e1 = min(params.nEntries, e0 + params.ePer);
  for (var e = e0; e < e1; e++) {
    let eb = 4u * (params.listBase + e);
    let head = list[eb + 3u];
    if (head != 0xffffffffu && head != h) {
      continue;
    }
    let slot = list[eb];
    let len = min(list[eb + 2u], 256u);
    if (len == 0u) {
      continue;
    }
    let kb = slot * params.pageWords + h * params.kHeadWords;
    let vb = slot * params.pageWords + params.vOffWords + h * params.vHeadWords;
    var ks = 1.0;
    var vs = 1.0;
    if (KV_DT == 3u) {
      ks = bitcast<f32>(kv[slot * params.pageWords + params.scaleOffWords + h]);
      vs = bitcast<f32>(kv[slot * params.pageWords + params.scaleOffWords + params.Hkv + h]);
    }
    // Keys in chunks of CH (one chunk for pages of up to CH keys: main_cpu's per-page order);
    // the scores of a chunk live in a small private array (large ones compile slowly on Mesa).
    for (var c0 = 0u; c0 < len; c0 += CH) {
      let cl = min(CH, len - c0);
      for (var j = 0u; j < cl; j++) {
        sc[j] = vec4<f32>(0.0);
      }
      // Scores, per 32-channel block: each key's 32 channels loaded once for the four rows, each
      // row's block sum in kernels/paged's cpu order (dot(q0, k0) + ... + dot(q7, k7), then added to
      // the key's score), so a row's scores are bit-identical to the one-row kernel's.
      for (var g = 0u; g < D; g += 32u) {
        let Q0 = q8(r0, g, true);
        let Q1 = q8(r1, g, ok1);
        let Q2 = q8(r2, g, ok2);
        let Q3 = q8(r3, g, ok3);
        for (var j = 0u; j < cl; j++) {
          let k = k8(kb, (c0 + j) * D + g, ks);
          sc[j] += vec4<f32>(dot8(Q0, k), dot8(Q1, k), dot8(Q2, k), dot8(Q3, k));
        }
      }
      var mp = vec4<f32>(ST_NEG_BIG);
      for (var j = 0u; j < cl; j++) {
        mp = max(mp, sc[j]);
      }
      let mNew = max(m, mp);
      let corr = exp2(m - mNew);
      var lp = vec4<f32>(0.0);
      for (var j = 0u; j < cl; j++) {
        let pj = exp2(sc[j] - mNew);
        sc[j] = pj;
        lp += pj;
      }
      l = l * corr + lp;
      m = mNew;
      // Values, 8 channels at a time: each value's two vec4 loaded once for the four rows.
      for (var g = 0u; g < DV; g += 8u) {
        let two = g + 4u < DV;
        var a0 = vec4<f32>(0.0);
        var b0 = vec4<f32>(0.0);
        var a1 = vec4<f32>(0.0);
        var b1 = vec4<f32>(0.0);
        var a2 = vec4<f32>(0.0);
        var b2 = vec4<f32>(0.0);
        var a3 = vec4<f32>(0.0);
        var b3 = vec4<f32>(0.0);
        for (var j = 0u; j < cl; j++) {
          let pj = sc[j];
          let va = load4(vb, (c0 + j) * DV + g, vs);
          let vc = ldg(vb, (c0 + j) * DV + g + 4u, vs, two);
          a0 += pj.x * va;
          b0 += pj.x * vc;
          a1 += pj.y * va;
          b1 += pj.y * vc;
          a2 += pj.z * va;
          b2 += pj.z * vc;
          a3 += pj.w * va;
          b3 += pj.w * vc;
        }
        fold_row(ob0 + g, a0, corr.x, true);
        fold_row(ob0 + g + 4u, b0, corr.x, two);
        fold_row(ob1 + g, a1, corr.y, ok1);
        fold_row(ob1 + g + 4u, b1, corr.y, ok1 && two);
        fold_row(ob2 + g, a2, corr.z, ok2);
        fold_row(ob2 + g + 4u, b2, corr.z, ok2 && two);
        fold_row(ob3 + g, a3, corr.w, ok3);
        fold_row(ob3 + g + 4u, b3, corr.w, ok3 && two);
      }
    }
  }
  let inv = select(vec4<f32>(0.0), 1.0 / l, l > vec4<f32>(0.0));
  for (var d = 0u; d < DV; d++) {
    o_parts[ob0 + d] *= inv.x;
    if (ok1) { o_parts[ob1 + d] *= inv.y; }
    if (ok2) { o_parts[ob2 + d] *= inv.z; }
    if (ok3) { o_parts[ob3 + d] *= inv.w; }
  }
  let lse = select(vec4<f32>(st_neg_inf()), (m + log2(l)) * 0.6931471805599453, l > vec4<f32>(0.0));
  lse_parts[part * rows + r0] = lse.x;
  if (ok1) { lse_parts[part * rows + r1] = lse.y; }
  if (ok2) { lse_parts[part * rows + r2] = lse.z; }
  if (ok3) { lse_parts[part * rows + r3] = lse.w; }
}
