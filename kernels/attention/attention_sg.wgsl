// Helpers of main_cpu_sg, the CSR sources' (SRC 0, 1) cpu shape where the adapter has subgroups
// (attention_sg.ts generates the entry point for the pack's ROWS, unrolled; appended to
// attention.wgsl with `enable subgroups` and LANES = 4). SwiftShader runs a 4-invocation
// workgroup as one 4-wide subgroup. The workgroup takes one pack of 4 * ROWS rows (pack_rows():
// consecutive tokens x query heads of one sequence and KV head, see attention.wgsl); lane L keeps
// rows L * ROWS .. L * ROWS + ROWS - 1 of it (q, softmax state, position, accumulator). Keys in
// blocks of 16 as 4 quads: lane L loads key j0 + 4a + L of quad a (clamped to the block's last
// key) 4 channels at a time and subgroupBroadcast hands every lane the whole quad, so one K/V
// load serves 4 * ROWS rows and each gather fetches 4 distinct useful words. Scores are 4x4
// blocks: s[a][b] = key j0 + 4a + b. The key range is the pack's (the union of its rows');
// blocks that some row must not see, or that end early, mask per row and skip masked keys'
// values. Every branch around a broadcast depends only on the pack (workgroup-uniform).

// Column i = 4 channels of the quad's key i (lane i loaded them into `mine`).
fn sg_quad(mine: vec4<f32>) -> mat4x4<f32> {
  return mat4x4<f32>(subgroupBroadcast(mine, 0u), subgroupBroadcast(mine, 1u), subgroupBroadcast(mine, 2u), subgroupBroadcast(mine, 3u));
}

fn sg_max4(x: vec4<f32>) -> f32 {
  return max(max(x.x, x.y), max(x.z, x.w));
}

// Scores of keys j .. j + 3 that a row at `pos` sees and that lie before `hi` (others -inf).
fn sg_mask4(s: vec4<f32>, j: u32, pos: i32, hi: u32) -> vec4<f32> {
  let jv = vec4<u32>(j) + vec4<u32>(0u, 1u, 2u, 3u);
  var ok = jv < vec4<u32>(hi);
  if (params.causal != 0u) {
    ok = ok & vec4<bool>(visible(jv.x, pos), visible(jv.y, pos), visible(jv.z, pos), visible(jv.w, pos));
  }
  return select(vec4<f32>(st_neg_inf()), s, ok);
}

fn sg_mask16(s: mat4x4<f32>, j0: u32, pos: i32, hi: u32) -> mat4x4<f32> {
  return mat4x4<f32>(sg_mask4(s[0], j0, pos, hi), sg_mask4(s[1], j0 + 4u, pos, hi), sg_mask4(s[2], j0 + 8u, pos, hi), sg_mask4(s[3], j0 + 12u, pos, hi));
}

// One online-softmax step over a 16-key block: m and l updated, the scores turned into
// probabilities in place; returns the accumulator's rescale factor.
fn sg_softmax16(s: ptr<function, mat4x4<f32>>, m: ptr<function, f32>, l: ptr<function, f32>) -> f32 {
  let bm = max(max(sg_max4((*s)[0]), sg_max4((*s)[1])), max(sg_max4((*s)[2]), sg_max4((*s)[3])));
  let mn = max(*m, bm);
  let alpha = exp2(*m - mn);
  let mv = vec4<f32>(mn);
  let p = mat4x4<f32>(exp2((*s)[0] - mv), exp2((*s)[1] - mv), exp2((*s)[2] - mv), exp2((*s)[3] - mv));
  *s = p;
  *l = *l * alpha + dot(p[0] + p[1] + p[2] + p[3], vec4<f32>(1.0));
  *m = mn;
  return alpha;
}

// p . V over a quad, skipping keys of probability 0 (masked, or clamped past the block): their
// values may be NaN or Inf.
fn sg_pv4(v: mat4x4<f32>, p: vec4<f32>) -> vec4<f32> {
  let z = vec4<f32>(0.0);
  return select(z, v[0], p.x > 0.0) * p.x + select(z, v[1], p.y > 0.0) * p.y + select(z, v[2], p.z > 0.0) * p.z + select(z, v[3], p.w > 0.0) * p.w;
}
