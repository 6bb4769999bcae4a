// Decode on CPU adapters (main_decode_cpu): one query token per sequence, so a tile holds at most
// 4 packed rows (the GQA group's heads, 4 at a time) and the 4 lanes split the KEYS instead of
// the rows: in each 16-key step lane l takes keys 4l..4l+3, loads them itself (4 distinct useful
// values per gather, no subgroup operation needed) and keeps its own online-softmax state. Each
// lane writes its own partial (o, lse) at partial index split * 4 + lane; kernels/merge combines
// the 4 * splits partials exactly. Lanes whose keys are all masked write lse = -inf (no weight).
// Shares the work decomposition, masks and IO helpers of prefill.wgsl (same program).

fn softmax4(s: ptr<function, vec4<f32>>, m: ptr<function, f32>, l: ptr<function, f32>) -> f32 {
  let m_new = max(*m, max4(*s));
  let alpha = exp2(*m - m_new);
  let p = exp2(*s - vec4<f32>(m_new));
  *s = p;
  *l = *l * alpha + dot(p, vec4<f32>(1.0));
  *m = m_new;
  return alpha;
}

fn keys4_k(row0: u32, last: u32, hk: u32, c: u32, n: u32) -> mat4x4<f32> {
  return mat4x4<f32>(
    ld4_k(k_index(min(row0, last), hk, c), n),
    ld4_k(k_index(min(row0 + 1u, last), hk, c), n),
    ld4_k(k_index(min(row0 + 2u, last), hk, c), n),
    ld4_k(k_index(min(row0 + 3u, last), hk, c), n));
}

fn keys4_v(row0: u32, last: u32, hk: u32, c: u32, n: u32) -> mat4x4<f32> {
  return mat4x4<f32>(
    ld4_v(v_index(min(row0, last), hk, c), n),
    ld4_v(v_index(min(row0 + 1u, last), hk, c), n),
    ld4_v(v_index(min(row0 + 2u, last), hk, c), n),
    ld4_v(v_index(min(row0 + 3u, last), hk, c), n));
}

// This lane's partial: shift the row's o/lse targets from split s to partial 4s + lane.
fn lane_ref(w: Work, p: u32, lane: u32) -> RowRef {
  var r = row_ref(w, p);
  r.o_base += lane * (params.o_split_stride / 4u);
  r.lse_idx += lane * (params.lse_split_stride / 4u);
  return r;
}

const DEC_ROWS: u32 = 4u;

@compute @workgroup_size(4)
fn main_decode_cpu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let w = work_item(wg.x + wg.y * nwg.x, DEC_ROWS);
  if (!w.valid) {
    return;
  }
  let nr = w.p_end - w.p0;
  let nc = (head_d() + 3u) / 4u;
  let ncv = (head_dv() + 3u) / 4u;
  let r0 = lane_ref(w, w.p0, lane);
  let r1 = lane_ref(w, w.p0 + 1u, lane);
  let r2 = lane_ref(w, w.p0 + 2u, lane);
  let r3 = lane_ref(w, w.p0 + 3u, lane);
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
  // The sink logit is a virtual key: count it once (split 0, lane 0).
  let first = lane == 0u;
  var m0 = select(ST_NEG_BIG, init_m(w, r0), first);
  var m1 = select(ST_NEG_BIG, init_m(w, r1), first);
  var m2 = select(ST_NEG_BIG, init_m(w, r2), first);
  var m3 = select(ST_NEG_BIG, init_m(w, r3), first);
  var l0 = select(0.0, init_l(w), first);
  var l1 = l0;
  var l2 = l0;
  var l3 = l0;
  for (var seg = 0u; seg < 2u; seg++) {
    let lo = w.seg_lo[seg];
    let hi = w.seg_hi[seg];
    let last = w.k_off + hi - 1u;
    for (var j0 = lo; j0 < hi; j0 += 16u) {
      let jl = j0 + 4u * lane;
      let jr = w.k_off + jl;
      var s0 = vec4<f32>();
      var s1 = vec4<f32>();
      var s2 = vec4<f32>();
      var s3 = vec4<f32>();
      for (var c = 0u; c < nc; c++) {
        let km = keys4_k(jr, last, w.hk, c, min(4u, head_d() - 4u * c));
        s0 += q0[c] * km;
        if (nr > 1u) {
          s1 += q1[c] * km;
          if (nr > 2u) {
            s2 += q2[c] * km;
            if (nr > 3u) {
              s3 += q3[c] * km;
            }
          }
        }
      }
      let nm = block_needs_mask(w, j0, 16u, hi);
      if (nm) {
        s0 = mask4(s0, jl, r0.pos, hi);
        s1 = mask4(s1, jl, r1.pos, hi);
        s2 = mask4(s2, jl, r2.pos, hi);
        s3 = mask4(s3, jl, r3.pos, hi);
      }
      let al0 = softmax4(&s0, &m0, &l0);
      let al1 = softmax4(&s1, &m1, &l1);
      let al2 = softmax4(&s2, &m2, &l2);
      let al3 = softmax4(&s3, &m3, &l3);
      for (var c = 0u; c < ncv; c++) {
        var vm = keys4_v(jr, last, w.hk, c, min(4u, head_dv() - 4u * c));
        if (nm) {
          // masked keys (p = 0 exactly) are skipped, never multiplied by 0: their values may be
          // NaN or Inf (see pv4); a key is kept when any of the lane's rows sees it
          let z = vec4<f32>(0.0);
          let any_p = s0 + select(z, s1, nr > 1u) + select(z, s2, nr > 2u) + select(z, s3, nr > 3u);
          vm = mat4x4<f32>(select(z, vm[0], any_p.x > 0.0), select(z, vm[1], any_p.y > 0.0), select(z, vm[2], any_p.z > 0.0), select(z, vm[3], any_p.w > 0.0));
        }
        a0[c] = a0[c] * al0 + vm * s0;
        if (nr > 1u) {
          a1[c] = a1[c] * al1 + vm * s1;
          if (nr > 2u) {
            a2[c] = a2[c] * al2 + vm * s2;
            if (nr > 3u) {
              a3[c] = a3[c] * al3 + vm * s3;
            }
          }
        }
      }
    }
  }
  let i0 = select(0.0, 1.0 / l0, l0 > 0.0);
  let i1 = select(0.0, 1.0 / l1, l1 > 0.0);
  let i2 = select(0.0, 1.0 / l2, l2 > 0.0);
  let i3 = select(0.0, 1.0 / l3, l3 > 0.0);
  for (var c = 0u; c < ncv; c++) {
    st4_o(r0.o_base, c, a0[c] * i0);
    if (nr > 1u) {
      st4_o(r1.o_base, c, a1[c] * i1);
    }
    if (nr > 2u) {
      st4_o(r2.o_base, c, a2[c] * i2);
    }
    if (nr > 3u) {
      st4_o(r3.o_base, c, a3[c] * i3);
    }
  }
  write_lse(r0, m0, l0);
  if (nr > 1u) {
    write_lse(r1, m1, l1);
  }
  if (nr > 2u) {
    write_lse(r2, m2, l2);
  }
  if (nr > 3u) {
    write_lse(r3, m3, l3);
  }
}
