// Top-k by radix select, for any number of rows and up to 16M candidates per row, spread over
// many workgroups. Each candidate j of a row has the 64-bit composite (key, lo) where key is
// tk_key(score) and lo = (~j) << idxShift puts the low 8L bits of ~j at the top of the word (L
// index digits, enough for n). Composites are distinct and ordered as (score desc, index asc),
// so "the k largest composites" is exactly the deterministic top-k. Passes (all rows at once):
//   init          per row: state = {level 0, prefix 0, rem k}
//   hist  x levels per (row, chunk): histogram of the next 8-bit digit of the composites that
//                 match the prefix found so far (workgroup histogram, then global atomics)
//   pick  x levels per row: find the digit holding the rem-th largest; extend the prefix; when
//                 the whole bin is taken, the threshold composite is known and the row is done
//   compact       per (row, chunk): composites >= threshold go to sel[row] (order arbitrary)
//   rank          per (row, block of WG selected): rank = number of selected items before it;
//                 write index and value at that rank; pad slots [count, k) with -1 / -inf
// Rows that are done skip the remaining hist/pick passes. Needs keys.wgsl and TopKParams.

@group(0) @binding(0) var<storage, read> scores: array<u32>;          // [rows, n] f32 bits
@group(0) @binding(1) var<storage, read_write> out_idx: array<i32>;   // [rows, k]
@group(0) @binding(2) var<storage, read_write> out_val: array<f32>;   // [rows, k] (when hasValues)
@group(0) @binding(3) var<storage, read_write> state: array<u32>;     // [rows, 8]
@group(0) @binding(4) var<storage, read_write> hist: array<atomic<u32>>; // [rows, 256]
@group(0) @binding(5) var<storage, read_write> sel: array<vec2<u32>>; // [rows, k] (key, index)
@group(0) @binding(6) var<uniform> params: TopKParams;
// The same scores as 16-byte words (the binding rounded down to 16 bytes; a dummy when the
// scores are shorter): the cpu passes read whole aligned words, 4 candidates per load.
@group(0) @binding(7) var<storage, read> scores4: array<vec4<u32>>;

override WG: u32 = 256;

const S_LEVEL = 0u;
const S_PHI = 1u;
const S_PLO = 2u;
const S_REM = 3u;
const S_DONE = 4u;
const S_COUNT = 5u;
const S_THI = 6u;
const S_TLO = 7u;

var<workgroup> wg_hist: array<atomic<u32>, 256>;
var<workgroup> wg_flag: u32;
var<workgroup> wg_tile: array<vec2<u32>, WG>;

fn linear_id(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wg.x + wg.y * nwg.x;
}

@compute @workgroup_size(WG)
fn init(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = linear_id(wg, nwg) * WG + lid;
  if (row >= params.rows) {
    return;
  }
  let s = row * 8u;
  state[s + S_LEVEL] = 0u;
  state[s + S_PHI] = 0u;
  state[s + S_PLO] = 0u;
  state[s + S_REM] = params.k;
  state[s + S_DONE] = 0u;
  state[s + S_COUNT] = 0u;
  state[s + S_THI] = 0u;
  state[s + S_TLO] = 0u;
}

// Bytes [0, level) of the composite, as masks of (key, lo).
fn level_masks(level: u32) -> vec2<u32> {
  var mhi = 0xffffffffu;
  var mlo = 0u;
  if (level == 0u) {
    mhi = 0u;
  } else if (level < 4u) {
    mhi = 0xffffffffu << (32u - 8u * level);
  } else if (level > 4u) {
    mlo = 0xffffffffu << (32u - 8u * (level - 4u));
  }
  return vec2<u32>(mhi, mlo);
}

@compute @workgroup_size(WG)
fn hist_pass(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = linear_id(wg, nwg);
  if (wid >= params.rows * params.chunks) {
    return;
  }
  let row = wid / params.chunks;
  let c = wid % params.chunks;
  if (lid == 0u) {
    wg_flag = state[row * 8u + S_DONE];
  }
  for (var b = lid; b < 256u; b += WG) {
    atomicStore(&wg_hist[b], 0u);
  }
  if (workgroupUniformLoad(&wg_flag) != 0u) {
    return;
  }
  let s = row * 8u;
  let level = state[s + S_LEVEL];
  let phi = state[s + S_PHI];
  let plo = state[s + S_PLO];
  let m = level_masks(level);
  let hi_level = level < 4u;
  let sh = select(24u - 8u * (level - 4u), 24u - 8u * level, hi_level);
  let n = params.n;
  let start = c * params.chunk;
  let end = min(start + params.chunk, n);
  let base = row * n;
  for (var i = start + lid; i < end; i += WG) {
    let key = tk_key(scores[base + i]);
    let lo = (~i) << params.idxShift;
    if (key != 0u && (key & m.x) == phi && (lo & m.y) == plo) {
      let d = (select(lo, key, hi_level) >> sh) & 255u;
      atomicAdd(&wg_hist[d], 1u);
    }
  }
  workgroupBarrier();
  for (var b = lid; b < 256u; b += WG) {
    let v = atomicLoad(&wg_hist[b]);
    if (v != 0u) {
      atomicAdd(&hist[row * 256u + b], v);
    }
  }
}

// One invocation per row (no workgroup memory, no barriers: cheap on every adapter).
@compute @workgroup_size(WG)
fn pick_pass(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = linear_id(wg, nwg) * WG + lid;
  if (row >= params.rows) {
    return;
  }
  let s = row * 8u;
  if (state[s + S_DONE] != 0u) {
    return;
  }
  let level = state[s + S_LEVEL];
  var rem = state[s + S_REM];
  var above = 0u;
  var c = 0u;
  var d = 0u;
  var found = false;
  let hb = row * 256u;
  for (var b = 256u; b > 0u; b--) {
    let h = atomicLoad(&hist[hb + b - 1u]);
    if (h == 0u) {
      continue;
    }
    atomicStore(&hist[hb + b - 1u], 0u);
    if (!found) {
      if (above + h >= rem) {
        d = b - 1u;
        c = h;
        found = true;
      } else {
        above += h;
      }
    }
  }
  if (!found) {
    // Fewer selectable candidates than k (only possible at level 0): take them all.
    state[s + S_DONE] = 1u;
    state[s + S_COUNT] = above;
    state[s + S_THI] = 1u;
    state[s + S_TLO] = 0u;
    return;
  }
  rem -= above;
  var phi = state[s + S_PHI];
  var plo = state[s + S_PLO];
  if (level < 4u) {
    phi |= d << (24u - 8u * level);
  } else {
    plo |= d << (24u - 8u * (level - 4u));
  }
  state[s + S_PHI] = phi;
  state[s + S_PLO] = plo;
  // Candidates at or above the new prefix: the k - rem already above it plus this whole bin.
  // Once they fit the survivor buffer (cap >= k; always at the last level, where c == rem),
  // the row is done: compaction collects them and the sort keeps the best k.
  let count = params.k - rem + c;
  if (count <= params.cap || level + 1u >= params.levels) {
    state[s + S_DONE] = 1u;
    state[s + S_COUNT] = count;
    state[s + S_THI] = phi;
    state[s + S_TLO] = plo;
  } else {
    state[s + S_LEVEL] = level + 1u;
    state[s + S_REM] = rem;
  }
}

@compute @workgroup_size(WG)
fn compact_pass(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = linear_id(wg, nwg);
  if (wid >= params.rows * params.chunks) {
    return;
  }
  let row = wid / params.chunks;
  let c = wid % params.chunks;
  let thi = state[row * 8u + S_THI];
  let tlo = state[row * 8u + S_TLO];
  let n = params.n;
  let start = c * params.chunk;
  let end = min(start + params.chunk, n);
  let base = row * n;
  for (var i = start + lid; i < end; i += WG) {
    let key = tk_key(scores[base + i]);
    let lo = (~i) << params.idxShift;
    if (key != 0u && (key > thi || (key == thi && lo >= tlo))) {
      let slot = atomicAdd(&hist[row * 256u], 1u);
      sel[row * params.cap + slot] = vec2<u32>(key, i);
    }
  }
}

@compute @workgroup_size(WG)
fn rank_pass(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wid = linear_id(wg, nwg);
  if (wid >= params.rows * params.kBlocks) {
    return;
  }
  let row = wid / params.kBlocks;
  let i = (wid % params.kBlocks) * WG + lid;
  let k = params.k;
  if (lid == 0u) {
    wg_flag = state[row * 8u + S_COUNT];
  }
  let count = workgroupUniformLoad(&wg_flag);
  let valid = i < count;
  let sb = row * params.cap;
  var mine = vec2<u32>(0u, 0u);
  if (valid) {
    mine = sel[sb + i];
  }
  var rank = 0u;
  for (var t0 = 0u; t0 < count; t0 += WG) {
    let j = t0 + lid;
    if (j < count) {
      wg_tile[lid] = sel[sb + j];
    }
    workgroupBarrier();
    let m = min(WG, count - t0);
    for (var u = 0u; u < m; u++) {
      let o = wg_tile[u];
      rank += select(0u, 1u, tk_before(o.x, o.y, mine.x, mine.y));
    }
    workgroupBarrier();
  }
  let ob = row * k;
  if (valid) {
    if (rank < k) {
      out_idx[ob + rank] = i32(mine.y);
      if (params.hasValues != 0u) {
        out_val[ob + rank] = tk_value(mine.x);
      }
    }
  } else if (i < k) {
    out_idx[ob + i] = -1;
    if (params.hasValues != 0u) {
      out_val[ob + i] = tk_neg_inf();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// CPU-shaped passes (software adapters: SwiftShader runs each invocation as a lane of CPU code;
// workgroup atomics and barriers are what costs there, so these use neither). One invocation
// handles a whole (row, chunk) unit with a private histogram, and one invocation ranks one
// survivor against all others straight from the storage buffer.

// Does candidate i (key `key`, composite low word `lo`) match the prefix of its row?
fn hist_matches(key: vec4<u32>, lo: vec4<u32>, m: vec2<u32>, phi: u32, plo: u32) -> vec4<bool> {
  return (key != vec4<u32>(0u)) & ((key & vec4<u32>(m.x)) == vec4<u32>(phi)) & ((lo & vec4<u32>(m.y)) == vec4<u32>(plo));
}

@compute @workgroup_size(WG)
fn hist_inv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let unit = linear_id(wg, nwg) * WG + lid;
  if (unit >= params.rows * params.chunks) {
    return;
  }
  let row = unit / params.chunks;
  let c = unit % params.chunks;
  let s = row * 8u;
  if (state[s + S_DONE] != 0u) {
    return;
  }
  let level = state[s + S_LEVEL];
  let phi = state[s + S_PHI];
  let plo = state[s + S_PLO];
  let m = level_masks(level);
  let hi_level = level < 4u;
  let sh = select(24u - 8u * (level - 4u), 24u - 8u * level, hi_level);
  let n = params.n;
  let base = row * n;
  // Flat element range [g0, g1) of this unit; aligned words in the middle, scalars at the ends.
  let g0 = base + c * params.chunk;
  let g1 = base + min(c * params.chunk + params.chunk, n);
  let a0 = min((g0 + 3u) & ~3u, g1);
  let a1 = max(g1 & ~3u, a0);
  var h: array<u32, 256>;
  var matched = 0u;
  for (var g = g0; g < g1; g++) {
    if (g == a0) {
      g = a1;
      if (g >= g1) {
        break;
      }
    }
    let i = g - base;
    let key = tk_key(scores[g]);
    let lo = (~i) << params.idxShift;
    if (key != 0u && (key & m.x) == phi && (lo & m.y) == plo) {
      h[(select(lo, key, hi_level) >> sh) & 255u] += 1u;
      matched += 1u;
    }
  }
  if (hi_level) {
    // Key digits: the index does not take part.
    for (var w = a0 / 4u; w < a1 / 4u; w++) {
      let key = tk_key4(scores4[w]);
      let hit = (key != vec4<u32>(0u)) & ((key & vec4<u32>(m.x)) == vec4<u32>(phi));
      if (any(hit)) {
        let d = (key >> vec4<u32>(sh)) & vec4<u32>(255u);
        if (hit.x) { h[d.x] += 1u; }
        if (hit.y) { h[d.y] += 1u; }
        if (hit.z) { h[d.z] += 1u; }
        if (hit.w) { h[d.w] += 1u; }
        matched += dot(select(vec4<u32>(0u), vec4<u32>(1u), hit), vec4<u32>(1u));
      }
    }
  } else {
    for (var w = a0 / 4u; w < a1 / 4u; w++) {
      let key = tk_key4(scores4[w]);
      let i = vec4<u32>(4u * w - base) + vec4<u32>(0u, 1u, 2u, 3u);
      let lo = (~i) << vec4<u32>(params.idxShift);
      let hit = hist_matches(key, lo, m, phi, plo);
      if (any(hit)) {
        let d = (lo >> vec4<u32>(sh)) & vec4<u32>(255u);
        if (hit.x) { h[d.x] += 1u; }
        if (hit.y) { h[d.y] += 1u; }
        if (hit.z) { h[d.z] += 1u; }
        if (hit.w) { h[d.w] += 1u; }
        matched += dot(select(vec4<u32>(0u), vec4<u32>(1u), hit), vec4<u32>(1u));
      }
    }
  }
  if (matched == 0u) {
    return;
  }
  for (var b = 0u; b < 256u; b++) {
    let v = h[b];
    if (v != 0u) {
      atomicAdd(&hist[row * 256u + b], v);
      matched -= v;
      if (matched == 0u) {
        break;
      }
    }
  }
}

fn compact_one(row: u32, key: u32, i: u32) {
  let slot = atomicAdd(&hist[row * 256u], 1u);
  sel[row * params.cap + slot] = vec2<u32>(key, i);
}

@compute @workgroup_size(WG)
fn compact_inv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let unit = linear_id(wg, nwg) * WG + lid;
  if (unit >= params.rows * params.chunks) {
    return;
  }
  let row = unit / params.chunks;
  let c = unit % params.chunks;
  let thi = state[row * 8u + S_THI];
  let tlo = state[row * 8u + S_TLO];
  let n = params.n;
  let base = row * n;
  let g0 = base + c * params.chunk;
  let g1 = base + min(c * params.chunk + params.chunk, n);
  let a0 = min((g0 + 3u) & ~3u, g1);
  let a1 = max(g1 & ~3u, a0);
  for (var g = g0; g < g1; g++) {
    if (g == a0) {
      g = a1;
      if (g >= g1) {
        break;
      }
    }
    let i = g - base;
    let key = tk_key(scores[g]);
    let lo = (~i) << params.idxShift;
    if (key != 0u && (key > thi || (key == thi && lo >= tlo))) {
      compact_one(row, key, i);
    }
  }
  for (var w = a0 / 4u; w < a1 / 4u; w++) {
    let key = tk_key4(scores4[w]);
    // Candidates below the threshold key are the common case: one vector test skips them.
    if (any(key >= vec4<u32>(thi))) {
      let i = vec4<u32>(4u * w - base) + vec4<u32>(0u, 1u, 2u, 3u);
      let lo = (~i) << vec4<u32>(params.idxShift);
      for (var e = 0u; e < 4u; e++) {
        if (key[e] != 0u && (key[e] > thi || (key[e] == thi && lo[e] >= tlo))) {
          compact_one(row, key[e], i[e]);
        }
      }
    }
  }
}

// One invocation per row: a heap of the row's survivors with the best at the root, popped k
// times into the outputs (O(count + k log count)); rows run in parallel.
fn sift_down(base: u32, root0: u32, size: u32) {
  var root = root0;
  let top = sel[base + root];
  loop {
    let l = 2u * root + 1u;
    if (l >= size) {
      break;
    }
    var m = l;
    var y = sel[base + l];
    let r = l + 1u;
    if (r < size) {
      let z = sel[base + r];
      if (tk_before(z.x, z.y, y.x, y.y)) {
        m = r;
        y = z;
      }
    }
    if (!tk_before(y.x, y.y, top.x, top.y)) {
      break;
    }
    sel[base + root] = y;
    root = m;
  }
  sel[base + root] = top;
}

// Segmented for loop-capped adapters (topk.ts, sortSegments): one dispatch heapifies the nodes
// [h0, h1) (highest first, so dispatches run from the leaves up), or pops the outputs [o0, o1).
// The heap lives in sel between dispatches: after o0 pops it holds the count - o0 best left.
// Unsegmented (h0 = 0, h1 = 0xffffffff, o0 = 0, o1 = k) one dispatch does it all.
@compute @workgroup_size(WG)
fn sort_inv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = linear_id(wg, nwg) * WG + lid;
  if (row >= params.rows) {
    return;
  }
  let k = params.k;
  let count = state[row * 8u + S_COUNT];
  let sb = row * params.cap;
  for (var i = min(params.h1, count / 2u); i > params.h0; i--) {
    sift_down(sb, i - 1u, count);
  }
  let ob = row * k;
  var size = count - min(params.o0, count);
  for (var i = params.o0; i < min(params.o1, k); i++) {
    if (size > 0u) {
      let e = sel[sb];
      out_idx[ob + i] = i32(e.y);
      if (params.hasValues != 0u) {
        out_val[ob + i] = tk_value(e.x);
      }
      size -= 1u;
      if (size > 0u) {
        sel[sb] = sel[sb + size];
        sift_down(sb, 0u, size);
      }
    } else {
      out_idx[ob + i] = -1;
      if (params.hasValues != 0u) {
        out_val[ob + i] = tk_neg_inf();
      }
    }
  }
}
