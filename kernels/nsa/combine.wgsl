// NSA output gate: o = g_cmp * o_cmp + g_slc * o_slc (+ g_swa * o_swa when SWA == 1), per
// (token, query head, 4 channels). Branch outputs are f32 [T, Hq, Dv]; gates [T, Hq] stored as
// GATE_DTYPE; o in OUT_DTYPE. Needs storage.wgsl and the struct NsaCombineParams (nsa.ts).

@group(0) @binding(0) var<storage, read> o_cmp: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> o_slc: array<vec4<f32>>;
// binding 2: o_swa (array<vec4<f32>>; optional, bound where SWA == 1, see nsa.ts COMBINE)
@group(0) @binding(3) var<storage, read> g_cmp: array<u32>;
@group(0) @binding(4) var<storage, read> g_slc: array<u32>;
// binding 5: g_swa (array<u32>; optional, bound where SWA == 1)
@group(0) @binding(6) var<storage, read_write> o_buf: array<u32>;
@group(0) @binding(7) var<uniform> params: NsaCombineParams;

override WG: u32 = 64;
override GATE_DTYPE: u32 = 0;
override OUT_DTYPE: u32 = 0;
override SWA: u32 = 1;

fn gate(r: u32, which: u32) -> f32 {
  let w = st_word(r, GATE_DTYPE);
  if (which == 0u) {
    return st_value(g_cmp[w], r, GATE_DTYPE);
  } else if (which == 1u) {
    return st_value(g_slc[w], r, GATE_DTYPE);
  }
  return st_value(g_swa[w], r, GATE_DTYPE);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let id = (wg.x + wg.y * nwg.x) * WG + lid;
  let DV4 = params.Dv / 4u;
  if (id >= params.rows * DV4) {
    return;
  }
  let r = id / DV4;
  var x = gate(r, 0u) * o_cmp[id] + gate(r, 1u) * o_slc[id];
  if (SWA == 1u) {
    x += gate(r, 2u) * o_swa[id];
  }
  if (OUT_DTYPE == 0u) {
    o_buf[4u * id] = bitcast<u32>(x.x);
    o_buf[4u * id + 1u] = bitcast<u32>(x.y);
    o_buf[4u * id + 2u] = bitcast<u32>(x.z);
    o_buf[4u * id + 3u] = bitcast<u32>(x.w);
  } else {
    o_buf[2u * id] = st_pack_pair(x.x, x.y, OUT_DTYPE);
    o_buf[2u * id + 1u] = st_pack_pair(x.z, x.w, OUT_DTYPE);
  }
}
