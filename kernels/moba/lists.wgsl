// MoBA's block-centric path (CPU adapters): from the per-row selection sel[row, K] (slot 0 = own
// block, slots 1.. = past blocks or -1) build, per (query head hq, past block b), the list of the
// (row, slot) entries that chose it, and a table of 16-entry tiles over those lists, so that the
// gather core (MODE 3) attends each past block once for up to 16 rows that share it.
// Entry points, in order:
//   count:   counts[hq * NB + b] += 1 per chosen past block; slots left -1 get lse_parts = -inf;
//   scan:    one workgroup: exclusive prefix sums of entries and of tiles per list, cursors, and
//            the tile table (first entry, count <= 16, block, 0) per tile;
//   scatter: entries[cursor[list]++] = row * K + slot.
// Entry order inside a list depends on atomics, which changes nothing: rows are independent.
// Needs the struct MobaListParams (moba.ts).

@group(0) @binding(0) var<storage, read> sel: array<i32>;                    // [rows, K]
@group(0) @binding(1) var<storage, read_write> counts: array<atomic<u32>>;   // [NL]
@group(0) @binding(2) var<storage, read_write> cursor: array<atomic<u32>>;   // [NL]
@group(0) @binding(3) var<storage, read_write> entries: array<u32>;          // [rows * (K - 1)]
@group(0) @binding(4) var<storage, read_write> tiles: array<u32>;            // [maxTiles, 4]
@group(0) @binding(5) var<storage, read_write> lse_parts: array<f32>;        // [K, rows]
@group(0) @binding(6) var<uniform> params: MobaListParams;

override WG: u32 = 64;

fn row_slot(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> vec2<u32> {
  let id = (wg.x + wg.y * nwg.x) * WG + lid;
  let KP = params.K - 1u;
  return vec2<u32>(id / max(KP, 1u), 1u + id % max(KP, 1u));
}

@compute @workgroup_size(WG)
fn count(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let rs = row_slot(wg, nwg, lid);
  if (params.K < 2u || rs.x >= params.rows) {
    return;
  }
  let b = sel[rs.x * params.K + rs.y];
  if (b < 0) {
    lse_parts[rs.y * params.rows + rs.x] = st_neg_inf();
    return;
  }
  let hq = rs.x % params.Hq;
  atomicAdd(&counts[hq * params.NB + u32(b)], 1u);
}

var<workgroup> part_e: array<u32, 64>;
var<workgroup> part_t: array<u32, 64>;

@compute @workgroup_size(64)
fn scan(@builtin(local_invocation_index) lid: u32) {
  let NL = params.NL;
  let chunk = (NL + 63u) / 64u;
  let l0 = min(lid * chunk, NL);
  let l1 = min(l0 + chunk, NL);
  var se = 0u;
  var st = 0u;
  for (var l = l0; l < l1; l++) {
    let c = atomicLoad(&counts[l]);
    se += c;
    st += (c + 15u) / 16u;
  }
  part_e[lid] = se;
  part_t[lid] = st;
  workgroupBarrier();
  if (lid == 0u) {
    var ae = 0u;
    var at = 0u;
    for (var i = 0u; i < 64u; i++) {
      let e = part_e[i];
      let t = part_t[i];
      part_e[i] = ae;
      part_t[i] = at;
      ae += e;
      at += t;
    }
  }
  workgroupBarrier();
  var e0 = part_e[lid];
  var t0 = part_t[lid];
  for (var l = l0; l < l1; l++) {
    let c = atomicLoad(&counts[l]);
    atomicStore(&cursor[l], e0);
    let b = l % params.NB;
    let nt = (c + 15u) / 16u;
    for (var i = 0u; i < nt; i++) {
      let ti = 4u * (t0 + i);
      tiles[ti] = e0 + 16u * i;
      tiles[ti + 1u] = min(16u, c - 16u * i);
      tiles[ti + 2u] = b;
      tiles[ti + 3u] = 0u;
    }
    e0 += c;
    t0 += nt;
  }
}

@compute @workgroup_size(WG)
fn scatter(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let rs = row_slot(wg, nwg, lid);
  if (params.K < 2u || rs.x >= params.rows) {
    return;
  }
  let b = sel[rs.x * params.K + rs.y];
  if (b < 0) {
    return;
  }
  let hq = rs.x % params.Hq;
  let at = atomicAdd(&cursor[hq * params.NB + u32(b)], 1u);
  entries[at] = rs.x * params.K + rs.y;
}
