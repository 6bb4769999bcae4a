// Append K/V rows into pool pages through a CSR page table (FlashInfer's append_paged_kv_cache
// convention), with optional fused RoPE on K, and the Quest min/max summaries of the pages it
// touched. Needs shaders/storage.wgsl, common.wgsl and AppendParams.
//
// Row i of the step (i < nnz) belongs to sequence b = tables[rowB + i] at position
// p = tables[rowP + i]; it goes to pool page kvIndices[kvIndptr[b] + p / P], row p % P of that
// page. Page layout (kernels/attention/page.ts, the KV cache's): per page K [HKV, P, D] then
// V [HKV, P, DV] in PAGE_DT; page s starts at word s * pageWords.
// tables (u32): [0] nnz, [1] touched pages, then the arrays at the offsets in params.

@group(0) @binding(0) var<storage, read> k_in: array<u32>;        // [rows, HKV, D] IN_DT
@group(0) @binding(1) var<storage, read> v_in: array<u32>;        // [rows, HKV, DV] IN_DT
@group(0) @binding(2) var<storage, read_write> pages: array<u32>; // the pool
@group(0) @binding(3) var<storage, read> tables: array<u32>;
// @binding(4) cossin: array<vec2<f32>>, [maxPosition, RD / 2] (cos, sin); RoPE only (optional, append.ts)
@group(0) @binding(5) var<uniform> params: AppendParams;

override WG: u32 = 64;
override IN_DT: u32 = 0;
override PAGE_DT: u32 = 0;
override HKV: u32 = 1;
override D: u32 = 64;
override DV: u32 = 64;
override P: u32 = 16;
override RD: u32 = 0;     // rotary dims of K (0: no RoPE)
override STYLE: u32 = 0;  // 0 rotate-half, 1 interleaved

fn in_load(is_v: bool, i: u32) -> f32 {
  let w = select(i, i >> 1u, IN_DT != 0u);
  if (is_v) {
    return ap_decode(v_in[w], i, IN_DT);
  }
  return ap_decode(k_in[w], i, IN_DT);
}

fn in_word(is_v: bool, w: u32) -> u32 {
  if (is_v) {
    return v_in[w];
  }
  return k_in[w];
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let id = gid.x + gid.y * nwg.x * WG;
  let kUnits = HKV * (D / 4u);
  let perRow = kUnits + HKV * (DV / 4u);
  let row = id / perRow;
  if (row >= tables[0]) {
    return;
  }
  var rem = id - row * perRow;
  let is_v = rem >= kUnits;
  if (is_v) {
    rem -= kUnits;
  }
  let W = select(D, DV, is_v);
  let h = rem / (W / 4u);
  let u = rem - h * (W / 4u);
  let b = tables[params.rowB + row];
  let pos = tables[params.rowP + row];
  let slot = tables[params.idx + tables[params.iptr + b] + pos / P];
  let r = pos % P;
  // Element offsets of this row and head in the input and in the page (PAGE_DT elements).
  let inBase = (row * HKV + h) * W;
  let epw = select(2u, 1u, PAGE_DT == 0u);
  let blockWords = select(0u, params.vOffWords, is_v);
  let outBase = (slot * params.pageWords + blockWords) * epw + (h * P + r) * W;
  let rd = select(RD, 0u, is_v);
  let un = ap_unit(u, rd, STYLE);
  if (!un.rotary && IN_DT == PAGE_DT) {
    // Same dtype, no rotation: copy the words (bit for bit).
    let n = 4u / epw;
    for (var j = 0u; j < n; j++) {
      pages[(outBase + 4u * u) / epw + j] = in_word(is_v, (inBase + 4u * u) / epw + j);
    }
    return;
  }
  var a = vec4<f32>(in_load(is_v, inBase + un.e.x), in_load(is_v, inBase + un.e.y), in_load(is_v, inBase + un.e.z), in_load(is_v, inBase + un.e.w));
  if (un.rotary) {
    let cb = pos * (RD / 2u) + 2u * u;
    a = ap_rotate(a, cossin[cb], cossin[cb + 1u], STYLE);
  }
  if (PAGE_DT == 0u) {
    pages[outBase + un.e.x] = bitcast<u32>(a.x);
    pages[outBase + un.e.y] = bitcast<u32>(a.y);
    pages[outBase + un.e.z] = bitcast<u32>(a.z);
    pages[outBase + un.e.w] = bitcast<u32>(a.w);
  } else {
    // e.x, e.y and e.z, e.w are adjacent pairs starting at even elements: one word each.
    pages[(outBase + un.e.x) >> 1u] = ap_pack(a.x, a.y, PAGE_DT);
    pages[(outBase + un.e.z) >> 1u] = ap_pack(a.z, a.w, PAGE_DT);
  }
}
