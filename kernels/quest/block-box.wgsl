// The query box of each selection block: per block b, KV head h and channel d, the min and max of
// q over the block's `B` query rows and the KV head's `group` query heads.
//   box[b, h, 0, d] = min_{t in block b, g} q[t, h * group + g, d],   box[b, h, 1, d] = max (same)
// One invocation per (block, KV head, 4 channels). A NaN query value makes both ends NaN (the NaN
// propagates to every score of the block; min/max alone may drop it). Needs shaders/storage.wgsl
// and QuestBlockParams.

@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;          // [blocks * B, Hq, D] f32
@group(0) @binding(1) var<storage, read_write> box: array<vec4<f32>>;  // [blocks, Hkv, 2, D] f32
@group(0) @binding(2) var<uniform> params: QuestBlockParams;

var<private> box_nan_bits: u32 = 0x7fc00000u;

override WG: u32 = 64;
override D: u32 = 128;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let id = gid.x + gid.y * nwg.x * WG;
  let D4 = D / 4u;
  if (id >= params.blocks * params.Hkv * D4) {
    return;
  }
  let c = id % D4;
  let bh = id / D4;
  let h = bh % params.Hkv;
  let b = bh / params.Hkv;
  let Hq = params.Hkv * params.group;
  var mn = vec4<f32>(3.0e38);
  var mx = vec4<f32>(-3.0e38);
  var nan = false;
  for (var r = 0u; r < params.B; r++) {
    let row = (b * params.B + r) * Hq + h * params.group;
    for (var g = 0u; g < params.group; g++) {
      let x = q[(row + g) * D4 + c];
      nan = nan || st_is_nan(x.x) || st_is_nan(x.y) || st_is_nan(x.z) || st_is_nan(x.w);
      mn = min(mn, x);
      mx = max(mx, x);
    }
  }
  // +-inf queries are kept (3e38 is only the start value; min/max with inf give inf).
  let bad = bitcast<f32>(box_nan_bits); // a runtime NaN (a constant one is a shader-creation error)
  let o = (b * params.Hkv + h) * 2u * D4 + c;
  box[o] = select(mn, vec4<f32>(bad), nan);
  box[o + D4] = select(mx, vec4<f32>(bad), nan);
}
