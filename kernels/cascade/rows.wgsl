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
  var sc: array<vec4<f32>, 256>;
  var tmp: array<vec4<f32>, 256>;
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
    for (var j = 0u; j < len; j++) {
      sc[j] = vec4<f32>(0.0);
    }
    // Scores: per 32-channel block, 8 channels at a time (each key's two vec4 loaded once for the
    // four rows), summed in main_cpu's order (((d0 + d1) + d2) + ... + d7 per block, then added to
    // the key's score), so a row's scores are bit-identical to kernels/paged's cpu shape.
    for (var g = 0u; g < D; g += 32u) {
      for (var j = 0u; j < len; j++) {
        tmp[j] = vec4<f32>(0.0);
      }
      for (var u = g; u < min(D, g + 32u); u += 8u) {
        let two = u + 4u < D;
        let qa0 = q_row(r0, u, true);
        let qb0 = q_row(r0, u + 4u, two);
        let qa1 = q_row(r1, u, ok1);
        let qb1 = q_row(r1, u + 4u, ok1 && two);
        let qa2 = q_row(r2, u, ok2);
        let qb2 = q_row(r2, u + 4u, ok2 && two);
        let qa3 = q_row(r3, u, ok3);
        let qb3 = q_row(r3, u + 4u, ok3 && two);
        for (var j = 0u; j < len; j++) {
          let ka = load4(kb, j * D + u, ks);
          let kc = ldg(kb, j * D + u + 4u, ks, two);
          var t = tmp[j] + vec4<f32>(dot(qa0, ka), dot(qa1, ka), dot(qa2, ka), dot(qa3, ka));
          t = t + vec4<f32>(dot(qb0, kc), dot(qb1, kc), dot(qb2, kc), dot(qb3, kc));
          tmp[j] = t;
        }
      }
      for (var j = 0u; j < len; j++) {
        sc[j] += tmp[j];
      }
    }
    var mp = vec4<f32>(ST_NEG_BIG);
    for (var j = 0u; j < len; j++) {
      mp = max(mp, sc[j]);
    }
    let mNew = max(m, mp);
    let corr = exp2(m - mNew);
    var lp = vec4<f32>(0.0);
    for (var j = 0u; j < len; j++) {
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
      var c0 = vec4<f32>(0.0);
      var a1 = vec4<f32>(0.0);
      var c1 = vec4<f32>(0.0);
      var a2 = vec4<f32>(0.0);
      var c2 = vec4<f32>(0.0);
      var a3 = vec4<f32>(0.0);
      var c3 = vec4<f32>(0.0);
      for (var j = 0u; j < len; j++) {
        let pj = sc[j];
        let va = load4(vb, j * DV + g, vs);
        let vc = ldg(vb, j * DV + g + 4u, vs, two);
        a0 += pj.x * va;
        c0 += pj.x * vc;
        a1 += pj.y * va;
        c1 += pj.y * vc;
        a2 += pj.z * va;
        c2 += pj.z * vc;
        a3 += pj.w * va;
        c3 += pj.w * vc;
      }
      fold_row(ob0 + g, a0, corr.x, true);
      fold_row(ob0 + g + 4u, c0, corr.x, two);
      fold_row(ob1 + g, a1, corr.y, ok1);
      fold_row(ob1 + g + 4u, c1, corr.y, ok1 && two);
      fold_row(ob2 + g, a2, corr.z, ok2);
      fold_row(ob2 + g + 4u, c2, corr.z, ok2 && two);
      fold_row(ob3 + g, a3, corr.w, ok3);
      fold_row(ob3 + g + 4u, c3, corr.w, ok3 && two);
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
