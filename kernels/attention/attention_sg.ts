/**
 * The entry point `main_cpu_sg` of the attention core (see attention_sg.wgsl): one subgroup of 4
 * lanes per pack of 4 * `rows` rows, each lane's `rows` rows unrolled (named registers instead of
 * private arrays indexed per key, which SwiftShader keeps in memory).
 */
export function coreSgEntry(rows: number): string {
  const R = Array.from({ length: rows }, (_, i) => i);
  const each = (f: (i: number) => string, sep = '\n') => R.map(f).join(sep);
  const quads = [0, 1, 2, 3];
  const q4 = (f: (a: number) => string, sep = '\n') => quads.map(f).join(sep);
  return `
@compute @workgroup_size(4)
fn main_cpu_sg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let at = pack_at(wg.x + wg.y * nwg.x);
  if (!at.ok) {
    return;
  }
  let p = at.p;
  let gi = at.gi;
  let pk = at.pk;
  let w = at.w;
  // This lane's rows: slots lane * ROWS + i of the pack; empty slots compute on the pack's first
  // row's q and are never stored.
${each(
  (i) => `  let r${i} = pack_row(pk, gi, lane * ROWS + ${i}u);
  let rp${i} = w.pos + slot_dt(pk, lane * ROWS + ${i}u);
  let rq${i} = select(w.r, r${i}, r${i} != NO_ROW);
  var q${i}: array<vec4<f32>, QN>;
  var a${i}: array<vec4<f32>, VN>;
  var m${i} = init_m(row_at(w, rq${i}), p);
  var l${i} = init_l(p);`,
)}
  for (var c = 0u; c < QN; c++) {
${each((i) => `    q${i}[c] = ld4_q(rq${i} * D + 4u * c) * params.scale_log2;`)}
  }
  for (var s = 0u; s < 2u; s++) {
    let g = segment(w, s);
    let s1 = g.hi;
    for (var j0 = g.lo; j0 < s1; j0 += 16u) {
      let jl = s1 - 1u;
${q4(
  (a) => `      let jk${a} = min(j0 + ${4 * a}u + lane, jl);
      let kb${a} = k_elem(w, g, jk${a});
      let ks${a} = kv_scale(w, g, jk${a}, 0u);`,
)}
${each((i) => `      var sc${i} = mat4x4<f32>();`)}
      for (var c = 0u; c < QN; c++) {
${q4((a) => `        let k${a} = sg_quad(ld4_k(kb${a} + 4u * c, ks${a}));`)}
${each((i) => `        let x${i} = q${i}[c];\n        sc${i} += mat4x4<f32>(x${i} * k0, x${i} * k1, x${i} * k2, x${i} * k3);`)}
      }
      let nm = j0 + 16u > s1 || block_masked(w, j0, 16u);
      if (nm) {
${each((i) => `        sc${i} = sg_mask16(sc${i}, j0, rp${i}, s1);`)}
      }
${each((i) => `      let al${i} = sg_softmax16(&sc${i}, &m${i}, &l${i});`)}
${q4(
  (a) => `      let vb${a} = v_elem(w, g, jk${a});
      let vs${a} = kv_scale(w, g, jk${a}, 1u);`,
)}
      // Broadcasts only in control flow that Tint proves subgroup-uniform: the masked/plain
      // choice is made per channel quad after the loads.
      for (var c = 0u; c < VN; c++) {
${q4((a) => `        let v${a} = sg_quad(ld4_v(vb${a} + 4u * c, vs${a}));`)}
        if (nm) {
${each((i) => `          a${i}[c] = a${i}[c] * al${i} + sg_pv4(v0, sc${i}[0]) + sg_pv4(v1, sc${i}[1]) + sg_pv4(v2, sc${i}[2]) + sg_pv4(v3, sc${i}[3]);`)}
        } else {
${each((i) => `          a${i}[c] = a${i}[c] * al${i} + v0 * sc${i}[0] + v1 * sc${i}[1] + v2 * sc${i}[2] + v3 * sc${i}[3];`)}
        }
      }
    }
  }
${each(
  (i) => `  if (r${i} != NO_ROW) {
    let w${i} = row_at(w, r${i});
    let inv${i} = select(0.0, 1.0 / l${i}, l${i} > 0.0);
    for (var c = 0u; c < VN; c++) {
      store4(w${i}, p, c, a${i}[c] * inv${i});
    }
    store_lse(w${i}, p, m${i}, l${i});
  }`,
)}
}
`;
}
