// The attention core: a ragged batch of query rows against keys named by a CSR table, either
// pages of one pool buffer (SRC 0) or contiguous ragged K/V (SRC 1), one online-softmax loop for
// prefill and decode. A third key source (SRC 2, kernels/paged's partials) names pages by a list
// of entries (slot, first position, valid keys, kv head or 0xffffffff for all) for one block of
// queries at absolute positions q_pos0 + t; see the end of this header. Needs shaders/storage.wgsl, the struct CoreParams (attention.ts) and the
// generated header (attention.ts: WG, BK, D, DV, QN = D/4, VN = DV/4, AN = ceil(VN/WG), ld4_q,
// ld4_k, ld4_v).
//
// Rows: query token t of the step (0 <= t < totalQ, ragged by qoIndptr) times query head hq:
// row r = t * Hq + hq. Token t belongs to sequence b (largest b with qoIndptr[b] <= t), is query
// i = t - qoIndptr[b] of the n = qoIndptr[b+1] - qoIndptr[b] new tokens of b, and sits at
// position pos = L_b - n + i (bottom-right aligned; L_b = the sequence's key count).
// Visible keys (causal): j <= pos and, with a window W > 0, j > pos - W or j < sinks; without
// causal every key j < L_b. Keys outside are never loaded (a NaN there cannot reach the row).
//
// Split-K: part p covers keys [p * kv_part, (p + 1) * kv_part) of its sequence. With one part
// (sched.nParts == 1) the kernel writes o (O_DT) and lse directly; with more it writes f32
// partials work[(p * rows + r) * DV + c] and work[lse_off + p * rows + r] that kernels/merge
// combines. The sink logit (per query head, natural log) is a virtual key of value 0 in part 0.
//
// SRC 2: `sched` is the entry list; the call's parameters are in `params` (l_rows = Tq * Hq rows,
// q_pos0, list_base, n_entries, e_per entries per part, part_base, part_count); part p covers
// entries [p * e_per, (p + 1) * e_per) and writes its normalised f32 partial straight into `o`
// (row (part_base + p) * l_rows + r) and `lse`. A part that sees no key writes o = 0, lse = -inf.
//
// SRC 3 (kernels/attention/lists.ts, the sparse families' block lists): see load_row_lists.
//
// sched (one slot of the plan's schedule ring, or a buffer the engine fills, u32): header
// [totalQ, B, nParts, kv_part, rows] (rows: the partials' row stride, totalQ * Hq from the host,
// the capacity maxQTokens * Hq in a GPU-filled schedule; rows of tokens >= totalQ return),
// then qoIndptr [B+1], kvIndptr [B+1], kvLastPageLen [B], kvIndices [nnz] at the offsets in
// params (capacity-sized). Dispatches are sized for the capacities; rows and parts past the
// schedule's return at once.
//
// Packed rows (ROWS, a header constant of 1, 2, 4 or 8 chosen by the plan): rows that attend the
// same keys of the same KV head share one invocation (cpu) or workgroup (gpu), so each K/V word is
// loaded once per pack. For KV head h the rows are numbered x = t * G + (hq - h * G) and cut into
// units of `pack_span()` consecutive x: the G query heads of one token (causal SRC 2), or all
// Tq * G rows of the head (SRC 2 without causal: every query sees the same entries, e.g. the
// cascade's sequences against the shared pages). A pack is ROWS consecutive x of one unit; slots
// past the unit are empty (Hq / Hkv need not be a multiple of ROWS). The pack's first row
// (`load_row`) gives the keys (segments) of all its rows.
// CSR sources (SRC 0, 1): the unit is a whole sequence, its n * G rows x = i * G + (hq - h * G),
// so a pack spans consecutive tokens (G = 1: ROWS tokens). Sequence b owns the packs
// [pk_start(b), pk_start(b + 1)) of each KV head, pk_start(b) = (qoIndptr[b] * G + b * (ROWS - 1))
// / ROWS (at least ceil(n * G / ROWS) of them; any extra one is empty). The pack's keys are the
// union of its rows' keys: the first row's window start to the last row's position; a block
// that some row must not see (`block_masked`) masks per row (`visible`), and skips the values of
// masked keys (they may be NaN or Inf).

@group(0) @binding(0) var<storage, read> q: array<u32>;            // [T, Hq, D] in Q_DT
@group(0) @binding(1) var<storage, read> k: array<vec4<u32>>;      // pool (SRC 0, 2) or [N, Hkv, D] (SRC 1), 16-byte words
@group(0) @binding(2) var<storage, read> v: array<vec4<u32>>;      // pool (SRC 0, 2) or [N, Hkv, DV] (SRC 1), 16-byte words
@group(0) @binding(3) var<storage, read> sched: array<u32>;        // schedule slot
@group(0) @binding(4) var<storage, read_write> o: array<u32>;      // [T, Hq, DV] in O_DT
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;    // [T, Hq] f32 (or scratch)
// binding 6: work (array<f32>, partials; optional, declared by the table's variant, see attention.ts CORE)
@group(0) @binding(7) var<uniform> params: CoreParams;
// binding 8: sink_logits (array<f32>, [Hq], read where params.has_sink; optional, see attention.ts CORE)
// binding 9: seq_table (array<u32>, SRC 3's batch table; optional, see attention.ts CORE)

override SRC: u32 = 0;      // 0 paged, 1 contiguous ragged, 2 entry list (kernels/paged), 3 block lists (lists.ts)
override KV_DT: u32 = 1;    // 0 f32, 1 f16, 2 bf16, 3 int8 (paged only)
override Q_DT: u32 = 0;     // 0 f32, 1 f16, 2 bf16
override O_DT: u32 = 0;
override VEC: bool = false; // D and DV multiples of 32: main_cpu loads 32 channels as whole 16-byte words
override LANES: u32 = 1u;   // CSR packs of LANES * ROWS rows: 4 for main_cpu_sg (attention_sg.wgsl), else 1

const LOG2E: f32 = 1.4426950408889634;
const LN2: f32 = 0.6931471805599453;

// One row's work: where its keys are and which of them it sees.
struct Row {
  ok: bool,
  r: u32,        // row index t * Hq + hq
  out: u32,      // output row (direct writes)
  hq: u32,
  h: u32,        // kv head
  kv0: u32,      // kvIndptr[b]
  seg: array<u32, 4>, // CSR: [lo0, hi0, lo1, hi1]: sink segment and main segment, cut to the part
  qpos: u32,     // SRC 2: absolute query position
  pos: i32,      // CSR causal: the first row's position (negative: before the first key)
  dt: u32,       // CSR: tokens from the pack's first row to its last (0: one token)
  e0: u32,       // SRC 2: the part's entries [e0, e1) of the list
  e1: u32,
}

// A run of keys [lo, hi) of one segment; SRC 2: all in page `slot`, key j at row j.
struct Seg {
  lo: u32,
  hi: u32,
  slot: u32,
}

// SRC 3: per-query-block key lists over contiguous K/V [b_keys, Hkv, D] (the sparse families).
// Row tl * Hq + hq of l_rows (invocation hq * l_rows / Hq + tl) is query token t = b_t0 + tl (q and, with one part, o and lse
// row t * Hq + hq; the lists are addressed by tl: a chunk's own lists). It sits at position t + b_posoff (causal: keys j <= pos; a row at a
// negative position sees none); in key index space at (t + b_posoff + 1) / b_qdiv - 1 (b_qdiv > 1:
// NSA's compressed keys, key c at position (c + 1) * b_qdiv - 1). Its list: query block t / b_rows, pattern hq / (Hq / b_heads);
// b_stride > 0: the b_stride words at list_base + (block * b_heads + pattern) * b_stride (what the
// selection kernels write; 0xffffffff = unused slot); b_stride == 0: CSR, words
// [list_base + ptr[i], list_base + ptr[i + 1]) with ptr at b_ptr and i = pattern * (b_mb + 1) + block.
// A word b names key block [b * b_block, min(b * b_block + b_block, b_keys)), cut by the causal
// limit and the window. b_block == 0: token lists (DSA): the words are key indices the producer
// guarantees visible (no -1, none after the row's position), attended as one run of keys
// (key_row) instead of one segment per word; part p then covers words [p * e_per, ...). Part p (< part_count) covers entries [ec * e_per, (ec + 1) * e_per) of the
// list and keys [kc * b_kper, (kc + 1) * b_kper) of each entry's visible range (ec = p / b_nkc,
// kc = p % b_nkc), and writes its normalised partial to o row (part_base + p) * l_rows + r and lse
// (one part: o and lse themselves); kernels/merge combines several.
// Ragged batch (b_t0 == 0xffffffff, lists.ts `seqs`): l_rows covers every token of the batch and
// binding 9 (seq_table, bound only by the batch variant) holds the sequence table: word 0 = n, word
// 1 = t0 (invocation row tr is token t = t0 + tr), then SEQ_WORDS words per sequence [q0, kv0,
// keys, posoff (i32), list_base, ptr, mb, 0] from word 2, q0 increasing (list_base may wrap: u32).
// Token t belongs to the last sequence with q0 <= t; it is row t of q, o and lse, its lists are
// addressed by t - q0 from that sequence's list_base / ptr / mb, it sits at position
// t - q0 + posoff, and its keys are rows [kv0, kv0 + keys) of k and v (w.kv0; w.seg[2] = keys).
// Causal token lists hold at most pos + 1 words that count (a top-k over the visible keys puts
// its -1 slots last): the row reads only those.
// The sequence is found by shaders/ragged_seq.wgsl (field 1: word 2 + s * SEQ_WORDS), over this
// table accessor.
const SEQ_WORDS: u32 = 8u;

fn ragged_table(i: u32) -> u32 {
  return seq_table[i];
}

fn load_row_lists(p: u32, r: u32) -> Row {
  var w: Row;
  w.ok = p < params.part_count && r < params.l_rows;
  // invocations head-major (r = hq * nt + tl): neighbouring lanes take neighbouring tokens of one
  // head, which mostly share a list and a KV head (less divergence, shared cache lines)
  let nt = params.l_rows / params.hq;
  w.hq = r / nt;
  let tr = r - w.hq * nt;
  var t = params.b_t0 + tr;
  var tl = tr;
  var tpos = i32(t) + params.b_posoff;
  var lbase = params.list_base;
  var ptr = params.b_ptr;
  var mb = params.b_mb;
  w.kv0 = 0u;
  w.seg[2] = params.b_keys;
  if (params.b_t0 == 0xffffffffu) {
    t = ragged_table(1u) + tr;
    let e = 2u + ragged_seq(t, SEQ_WORDS, 1u) * SEQ_WORDS;
    tl = t - ragged_table(e);
    w.kv0 = ragged_table(e + 1u);
    w.seg[2] = ragged_table(e + 2u);
    tpos = i32(tl) + bitcast<i32>(ragged_table(e + 3u));
    lbase = ragged_table(e + 4u);
    ptr = ragged_table(e + 5u);
    mb = ragged_table(e + 6u);
  }
  w.r = t * params.hq + w.hq;
  w.out = select((params.part_base + p) * params.l_rows + tr * params.hq + w.hq, w.r, params.part_count == 1u);
  w.h = w.hq / params.group;
  let pat = w.hq / (params.hq / params.b_heads);
  let qb = tl / params.b_rows;
  var l0 = 0u;
  var l1 = 0u;
  if (params.b_stride > 0u) {
    l0 = lbase + (qb * params.b_heads + pat) * params.b_stride;
    l1 = l0 + params.b_stride;
  } else if (w.ok) {
    let i = ptr + pat * (mb + 1u) + qb;
    l0 = lbase + sched[i];
    l1 = lbase + sched[i + 1u];
  }
  let pos = (tpos + 1) / i32(params.b_qdiv) - 1;
  if (params.causal != 0u && pos < 0) {
    l1 = l0;
  }
  if (params.causal != 0u && params.b_block == 0u && pos >= 0) {
    l1 = min(l1, l0 + u32(pos) + 1u);
  }
  w.qpos = u32(max(pos, 0));
  let ec = p / params.b_nkc;
  let kc = p - ec * params.b_nkc;
  w.e0 = min(l1, l0 + ec * params.e_per);
  w.e1 = min(l1, w.e0 + params.e_per);
  w.seg[0] = kc * params.b_kper;
  w.seg[1] = w.seg[0] + params.b_kper;
  return w;
}

// SRC 3: the keys of list word e0 + s that the row sees (its part's share); token lists: the
// part's words as keys [0, e1 - e0).
fn segment_list(w: Row, s: u32) -> Seg {
  var g: Seg;
  g.slot = 0u;
  if (params.b_block == 0u) {
    g.lo = 0u;
    g.hi = w.e1 - w.e0;
  } else {
    let b = sched[w.e0 + s];
    let keys = w.seg[2];
    var lo = select(keys, b * params.b_block, b < 0x80000000u);
    var hi = min(min(lo, keys) + params.b_block, keys);
    if (params.causal != 0u) {
      hi = min(hi, w.qpos + 1u);
    }
    if (params.window > 0u && w.qpos + 1u > params.window) {
      lo = max(lo, w.qpos + 1u - params.window);
    }
    lo = min(lo, hi);
    let n = hi - lo;
    g.lo = lo + min(w.seg[0], n);
    g.hi = lo + min(w.seg[1], n);
  }
  return g;
}

const NO_ROW: u32 = 0xffffffffu;

// CSR sources: the pack's sequence b (its first token t0, its rows nx = n * G), its KV head h
// and its first row x0 within the sequence's rows.
struct Pack {
  h: u32,
  t0: u32,
  nx: u32,
  x0: u32,
}

// Rows of one CSR pack: ROWS per invocation, times the lanes that share its keys (main_cpu_sg).
fn pack_rows() -> u32 {
  return ROWS * LANES;
}

fn pk_start(b: u32) -> u32 {
  return (sched[params.off_qo + b] * params.group + b * (pack_rows() - 1u)) / pack_rows();
}

// CSR: pack gi (KV head fastest): one binary search over pk_start [B+1]. Other sources: unused.
fn pack_of(gi: u32) -> Pack {
  var k: Pack;
  k.h = gi % params.hkv;
  if (SRC < 2u) {
    let pk = gi / params.hkv;
    var lo = 0u;
    var hi = max(sched[1], 1u);
    while (hi - lo > 1u) {
      let mid = (lo + hi) / 2u;
      if (pk_start(mid) <= pk) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    k.t0 = sched[params.off_qo + lo];
    k.nx = (sched[params.off_qo + lo + 1u] - k.t0) * params.group;
    k.x0 = (pk - pk_start(lo)) * pack_rows();
  }
  return k;
}

// CSR: tokens from the pack's first row to its last (0 for an empty pack).
fn pack_dt(k: Pack) -> u32 {
  return select(0u, (min(k.x0 + pack_rows(), k.nx) - 1u) / params.group - k.x0 / params.group, k.x0 < k.nx);
}

// CSR: the position of slot i relative to the pack's first row.
fn slot_dt(k: Pack, i: u32) -> i32 {
  return i32((k.x0 + i) / params.group) - i32(k.x0 / params.group);
}

// Is key j visible from position pos (causal, window and sinks)?
fn visible(j: u32, pos: i32) -> bool {
  let x = i32(j);
  return x <= pos && (params.window == 0u || x > pos - i32(params.window) || j < params.sinks);
}

// Does block [j0, j0 + n) hold a key that some row of the pack must not see?
fn block_masked(w: Row, j0: u32, n: u32) -> bool {
  let last = w.pos + i32(w.dt);
  return w.dt > 0u && params.causal != 0u &&
    (i32(j0 + n - 1u) > w.pos || (params.window > 0u && i32(j0) <= last - i32(params.window) && j0 + n > params.sinks));
}

// Rows of one pack unit (see the header): G, or Tq * G for SRC 2 without causal.
fn pack_span() -> u32 {
  return select(params.group, (params.l_rows / params.hq) * params.group, SRC == 2u && params.causal == 0u);
}

// Packs per part for `rows` rows (a multiple of Hq).
fn pack_count(rows: u32) -> u32 {
  let span = pack_span();
  var n = ((rows / params.hq) * params.group / span) * params.hkv * ((span + ROWS - 1u) / ROWS);
  if (SRC < 2u) {
    n = params.hkv * ((sched[0] * params.group + sched[1] * (pack_rows() - 1u)) / pack_rows());
  }
  return n;
}

// Row index of slot i of pack gi, NO_ROW for an empty slot. One return (called inside loops).
fn pack_row(k: Pack, gi: u32, i: u32) -> u32 {
  var r = NO_ROW;
  if (SRC < 2u) {
    let xc = k.x0 + i;
    let tc = k.t0 + xc / params.group;
    r = select(NO_ROW, tc * params.hq + k.h * params.group + xc % params.group, xc < k.nx);
  } else {
    let span = pack_span();
    let ch = (span + ROWS - 1u) / ROWS;
    let c = gi % ch;
    let rest = gi / ch;
    let h = rest % params.hkv;
    let x = c * ROWS + i;
    let P = (rest / params.hkv) * span + x;
    let t = P / params.group;
    r = select(NO_ROW, t * params.hq + h * params.group + (P - t * params.group), x < span);
  }
  return r;
}

// Row r of the pack led by w (same token's keys and KV head): only the row index, its output row
// and its query head change.
fn row_at(w: Row, r: u32) -> Row {
  var x = w;
  x.r = r;
  x.out = w.out - w.r + r;
  x.hq = r % params.hq;
  return x;
}

// Row r (for CSR sources: with the keys of the dt tokens after it too, see the header).
fn load_row(p: u32, r: u32, dt: u32) -> Row {
  var w: Row;
  w.ok = false;
  w.dt = dt;
  w.pos = 0;
  if (SRC == 3u) {
    return load_row_lists(p, r);
  }
  if (SRC == 2u) {
    let t2 = r / params.hq;
    if (p >= params.part_count || r >= params.l_rows) {
      return w;
    }
    w.ok = true;
    w.r = r;
    w.out = (params.part_base + p) * params.l_rows + r;
    w.hq = r - t2 * params.hq;
    w.h = w.hq / params.group;
    w.qpos = params.q_pos0 + t2;
    w.e0 = min(params.n_entries, p * params.e_per);
    w.e1 = min(params.n_entries, w.e0 + params.e_per);
    return w;
  }
  let rows = sched[4];
  let t = r / params.hq;
  if (p >= sched[2] || r >= rows || t >= sched[0] || sched[1] == 0u) {
    return w;
  }
  w.ok = true;
  w.r = r;
  w.out = r;
  w.hq = r - t * params.hq;
  w.h = w.hq / params.group;
  // The sequence of token t: binary search over qoIndptr [B+1].
  let B = sched[1];
  let qo = params.off_qo;
  var lo = 0u;
  var hi = B;
  while (hi - lo > 1u) {
    let mid = (lo + hi) / 2u;
    if (sched[qo + mid] <= t) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  // lo: the last b with qoIndptr[b] <= t among [0, B); skip empty sequences ending at t.
  let b = lo;
  let n = sched[qo + b + 1u] - sched[qo + b];
  let i = t - sched[qo + b];
  let kvi = params.off_kv;
  w.kv0 = sched[kvi + b];
  let cnt = sched[kvi + b + 1u] - w.kv0;
  var L = cnt;
  if (SRC == 0u) {
    L = select(0u, (cnt - 1u) * params.page + sched[params.off_last + b], cnt > 0u);
  }
  var hi1 = L;
  var lo1 = 0u;
  var hi0 = 0u;
  if (params.causal != 0u) {
    // pos = L - n + i; a query before the first key (L + i < n, planned with earlyQueries) sees
    // none. The pack's keys end at its last row's position pos + dt.
    let pos = i32(L + i) - i32(n);
    w.pos = pos;
    hi1 = u32(max(pos + i32(dt) + 1, 0));
    if (params.window > 0u && pos + 1 > i32(params.window)) {
      lo1 = u32(pos + 1) - params.window;
      hi0 = min(params.sinks, lo1);
    }
  }
  let p0 = p * sched[3];
  let p1 = p0 + sched[3];
  w.seg[0] = max(0u, p0);
  w.seg[1] = max(w.seg[0], min(hi0, p1));
  w.seg[2] = max(lo1, p0);
  w.seg[3] = max(w.seg[2], min(hi1, p1));
  return w;
}

// What invocation (cpu) or workgroup (gpu) `id` attends: part p, pack gi (pk) and the pack's first
// row w; ok false when it has nothing (no rows this step, beyond the last pack, an empty row).
struct PackAt {
  ok: bool,
  p: u32,
  gi: u32,
  pk: Pack,
  w: Row,
}

fn pack_at(id: u32) -> PackAt {
  var a: PackAt;
  let rows = select(sched[4], params.l_rows, SRC >= 2u);
  if (rows == 0u) {
    return a;
  }
  let ng = pack_count(rows);
  if (ng == 0u) {
    return a;
  }
  a.p = id / ng;
  a.gi = id - a.p * ng;
  a.pk = pack_of(a.gi);
  a.w = load_row(a.p, pack_row(a.pk, a.gi, 0u), pack_dt(a.pk));
  a.ok = a.w.ok;
  return a;
}

// Segments of a row: 2 for the CSR sources, the part's entries for SRC 2.
fn seg_count(w: Row) -> u32 {
  var n = select(2u, w.e1 - w.e0, SRC >= 2u);
  if (SRC == 3u && params.b_block == 0u) {
    n = min(n, 1u);
  }
  return n;
}

// Key j of a contiguous run: j itself, or SRC 3 token lists: the part's word j.
fn key_row(w: Row, j: u32) -> u32 {
  var x = j;
  if (SRC == 3u && params.b_block == 0u) {
    x = sched[w.e0 + j];
  }
  return x;
}

fn segment(w: Row, s: u32) -> Seg {
  var g: Seg;
  if (SRC == 2u) {
    let eb = 4u * (params.list_base + w.e0 + s);
    let head = sched[eb + 3u];
    let start = sched[eb + 1u];
    var len = sched[eb + 2u];
    if (params.causal != 0u) {
      len = select(0u, min(len, w.qpos - start + 1u), start <= w.qpos);
    }
    if (head != 0xffffffffu && head != w.h) {
      len = 0u;
    }
    g.lo = 0u;
    g.hi = len;
    g.slot = sched[eb];
  } else if (SRC == 3u) {
    g = segment_list(w, s);
  } else {
    g.lo = w.seg[2u * s];
    g.hi = w.seg[2u * s + 1u];
    g.slot = 0u;
  }
  return g;
}

// Element index of key j's K (V) row for the row's kv head. Paged: slot * page_elems + h * k_head
// (+ v_off, v_head for V) + (j % P) * width. Contiguous: ((kv0 + j) * Hkv + h) * width. Helpers
// called inside loops have one return at the end (Mesa counts an early return as a loop trip).
fn kv_slot(w: Row, j: u32) -> u32 {
  return sched[params.off_idx + w.kv0 + j / params.page];
}

fn slot_of(w: Row, g: Seg, j: u32) -> u32 {
  var sl = g.slot;
  if (SRC == 0u) {
    sl = kv_slot(w, j);
  }
  return sl;
}

fn k_elem(w: Row, g: Seg, j: u32) -> u32 {
  var e = ((w.kv0 + key_row(w, j)) * params.hkv + w.h) * D;
  if (SRC == 0u || SRC == 2u) {
    e = slot_of(w, g, j) * params.page_elems + w.h * params.k_head + (j % params.page) * D;
  }
  return e;
}

fn v_elem(w: Row, g: Seg, j: u32) -> u32 {
  var e = ((w.kv0 + key_row(w, j)) * params.hkv + w.h) * DV;
  if (SRC == 0u || SRC == 2u) {
    e = slot_of(w, g, j) * params.page_elems + params.v_off + w.h * params.v_head + (j % params.page) * DV;
  }
  return e;
}

// int8 scales, one per token (1.0 otherwise): x = 0 for K, 1 for V; [2, Hkv, P] f32 words at
// scale_off of the page (see page.ts).
fn kv_scale(w: Row, g: Seg, j: u32, x: u32) -> f32 {
  var s = 1.0;
  if (KV_DT == 3u) {
    let i = slot_of(w, g, j) * params.page_words + params.scale_off + (x * params.hkv + w.h) * params.page + j % params.page;
    s = bitcast<f32>(k[i >> 2u][i & 3u]);
  }
  return s;
}

fn init_m(w: Row, p: u32) -> f32 {
  var m = ST_NEG_BIG;
  if (params.has_sink != 0u && p == 0u) {
    m = sink_logits[w.hq] * LOG2E;
  }
  return m;
}

fn init_l(p: u32) -> f32 {
  return select(0.0, 1.0, params.has_sink != 0u && p == 0u);
}

fn direct() -> bool {
  return SRC >= 2u || sched[2] == 1u;
}

fn store_lse(w: Row, p: u32, m: f32, l: f32) {
  let x = select(st_neg_inf(), (m + log2(l)) * LN2, l > 0.0);
  if (direct()) {
    lse[w.out] = x;
  } else {
    work[params.lse_off + p * sched[4] + w.r] = x;
  }
}

// Output channels [4c, 4c + 4) of the row, already normalised.
fn store4(w: Row, p: u32, c: u32, a: vec4<f32>) {
  if (direct()) {
    let e = w.out * DV + 4u * c;
    if (O_DT == 0u) {
      o[e] = bitcast<u32>(a.x);
      o[e + 1u] = bitcast<u32>(a.y);
      o[e + 2u] = bitcast<u32>(a.z);
      o[e + 3u] = bitcast<u32>(a.w);
    } else {
      o[e / 2u] = st_pack_pair(a.x, a.y, O_DT);
      o[e / 2u + 1u] = st_pack_pair(a.z, a.w, O_DT);
    }
  } else {
    let e = (p * sched[4] + w.r) * DV + 4u * c;
    work[e] = a.x;
    work[e + 1u] = a.y;
    work[e + 2u] = a.z;
    work[e + 3u] = a.w;
  }
}

// ---------------------------------------------------------------------------------------------
// main_gpu: a workgroup per (part, pack of ROWS rows). The pack's q staged in workgroup memory;
// keys in blocks of WG: thread i loads key j0 + i once and scores it for every row of the pack,
// max and sum tree-reduced for all rows together, then thread c accumulates output channel quads
// c, c + WG, ... of every row over the block's keys (each V quad loaded once for the pack,
// coalesced). DV <= 8 * WG.

var<workgroup> wq: array<array<vec4<f32>, QN>, ROWS>;
var<workgroup> wp: array<f32, ROWS * WG>;
var<workgroup> wvb: array<u32, WG>;
var<workgroup> wvs: array<f32, WG>;
var<workgroup> wred: array<f32, ROWS * WG>;

@compute @workgroup_size(WG)
fn main_gpu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let at = pack_at(wg.x + wg.y * nwg.x);
  if (!at.ok) {
    return;
  }
  let p = at.p;
  let gi = at.gi;
  let pk = at.pk;
  let w = at.w;
  // Empty slots compute on the first row's q; their results are never stored.
  var rs: array<u32, ROWS>;
  var rp: array<i32, ROWS>;
  var m: array<f32, ROWS>;
  var l: array<f32, ROWS>;
  for (var i = 0u; i < ROWS; i++) {
    // SRC 3 runs packs of one (lists differ per query head): its row is the one load_row_lists found.
    let r = select(pack_row(pk, gi, i), w.r, SRC == 3u);
    rs[i] = r;
    rp[i] = w.pos + slot_dt(pk, i);
    let rq = select(w.r, r, r != NO_ROW);
    for (var c = lid; c < QN; c += WG) {
      wq[i][c] = ld4_q(rq * D + 4u * c) * params.scale_log2;
    }
    m[i] = init_m(row_at(w, rq), p);
    l[i] = init_l(p);
  }
  workgroupBarrier();
  var acc: array<array<vec4<f32>, AN>, ROWS>;
  let ns = seg_count(w);
  for (var s = 0u; s < ns; s++) {
    let g = segment(w, s);
    let s1 = g.hi;
    for (var j0 = g.lo; j0 < s1; j0 += WG) {
      let j = j0 + lid;
      let valid = j < s1;
      // Explicitly zeroed: a declaration without initializer in a loop is not re-zeroed each
      // iteration by every compiler (SwiftShader kept the previous block's scores).
      var sc = array<f32, ROWS>();
      if (valid) {
        let kb = k_elem(w, g, j);
        let ks = kv_scale(w, g, j, 0u);
        for (var c = 0u; c < QN; c++) {
          let kq = ld4_k(kb + 4u * c, ks);
          for (var i = 0u; i < ROWS; i++) {
            sc[i] += dot(wq[i][c], kq);
          }
        }
        wvb[lid] = v_elem(w, g, j);
        wvs[lid] = kv_scale(w, g, j, 1u);
      }
      let nm = block_masked(w, j0, min(WG, s1 - j0));
      for (var i = 0u; i < ROWS; i++) {
        if (nm && !visible(j, rp[i])) {
          sc[i] = st_neg_inf();
        }
        wred[i * WG + lid] = select(ST_NEG_BIG, sc[i], valid);
      }
      workgroupBarrier();
      for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
          for (var i = 0u; i < ROWS; i++) {
            wred[i * WG + lid] = max(wred[i * WG + lid], wred[i * WG + lid + stride]);
          }
        }
        workgroupBarrier();
      }
      var mNew: array<f32, ROWS>;
      for (var i = 0u; i < ROWS; i++) {
        mNew[i] = max(m[i], wred[i * WG]);
      }
      workgroupBarrier();
      for (var i = 0u; i < ROWS; i++) {
        let pj = select(0.0, exp2(sc[i] - mNew[i]), valid);
        wp[i * WG + lid] = pj;
        wred[i * WG + lid] = pj;
      }
      workgroupBarrier();
      for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
          for (var i = 0u; i < ROWS; i++) {
            wred[i * WG + lid] += wred[i * WG + lid + stride];
          }
        }
        workgroupBarrier();
      }
      var corr: array<f32, ROWS>;
      for (var i = 0u; i < ROWS; i++) {
        corr[i] = exp2(m[i] - mNew[i]);
        l[i] = l[i] * corr[i] + wred[i * WG];
        m[i] = mNew[i];
      }
      let n = min(WG, s1 - j0);
      for (var a = 0u; a < AN; a++) {
        let c = lid + a * WG;
        if (c < VN) {
          var x: array<vec4<f32>, ROWS>;
          for (var i = 0u; i < ROWS; i++) {
            x[i] = acc[i][a] * corr[i];
          }
          if (nm) {
            // masked keys (p = 0) skipped: their values may be NaN or Inf
            for (var jj = 0u; jj < n; jj++) {
              let vq = ld4_v(wvb[jj] + 4u * c, wvs[jj]);
              for (var i = 0u; i < ROWS; i++) {
                let pj = wp[i * WG + jj];
                x[i] += pj * select(vec4<f32>(0.0), vq, pj > 0.0);
              }
            }
          } else {
            for (var jj = 0u; jj < n; jj++) {
              let vq = ld4_v(wvb[jj] + 4u * c, wvs[jj]);
              for (var i = 0u; i < ROWS; i++) {
                x[i] += wp[i * WG + jj] * vq;
              }
            }
          }
          for (var i = 0u; i < ROWS; i++) {
            acc[i][a] = x[i];
          }
        }
      }
      workgroupBarrier();
    }
  }
  for (var i = 0u; i < ROWS; i++) {
    if (rs[i] != NO_ROW) {
      let wi = row_at(w, rs[i]);
      let inv = select(0.0, 1.0 / l[i], l[i] > 0.0);
      for (var a = 0u; a < AN; a++) {
        let c = lid + a * WG;
        if (c < VN) {
          store4(wi, p, c, acc[i][a] * inv);
        }
      }
      if (lid == 0u) {
        store_lse(wi, p, m[i], l[i]);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// main_cpu: one invocation per (part, pack of ROWS rows), no barriers, no workgroup memory. q
// (scaled) in private arrays; keys in blocks of BK: the block's key addresses, its scores channel
// group by channel group (32 channels: eight vec4 registers of q per row, the key loop inside, so
// few loop trips per key; each key's group loaded once for all rows), each row's softmax, then
// the value channels group by group (eight vec4 accumulators per row, the key loop inside, each
// key's group loaded once) folded into the rows' private accumulators.

struct G8 {
  a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>,
  a4: vec4<f32>, a5: vec4<f32>, a6: vec4<f32>, a7: vec4<f32>,
}

fn dot8(a: G8, b: G8) -> f32 {
  return dot(a.a0, b.a0) + dot(a.a1, b.a1) + dot(a.a2, b.a2) + dot(a.a3, b.a3) + dot(a.a4, b.a4) + dot(a.a5, b.a5) + dot(a.a6, b.a6) + dot(a.a7, b.a7);
}

fn axpy8(acc: G8, x: f32, b: G8) -> G8 {
  return G8(acc.a0 + x * b.a0, acc.a1 + x * b.a1, acc.a2 + x * b.a2, acc.a3 + x * b.a3, acc.a4 + x * b.a4, acc.a5 + x * b.a5, acc.a6 + x * b.a6, acc.a7 + x * b.a7);
}

@compute @workgroup_size(WG)
fn main_cpu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let at = pack_at(gid.x + gid.y * nwg.x * WG);
  if (!at.ok) {
    return;
  }
  let p = at.p;
  let gi = at.gi;
  let pk = at.pk;
  let w = at.w;
  // Per row of the pack: q (scaled; QN8: quads rounded up to whole groups of 8, the extra quads
  // stay zero), the accumulator, the block's scores and the softmax state. Empty slots compute on
  // the first row's q; their results are never stored.
  var rs: array<u32, ROWS>;
  var rp: array<i32, ROWS>;
  var qv: array<array<vec4<f32>, QN8>, ROWS>;
  var m: array<f32, ROWS>;
  var l: array<f32, ROWS>;
  for (var i = 0u; i < ROWS; i++) {
    // SRC 3 runs packs of one (lists differ per query head): its row is the one load_row_lists found.
    let r = select(pack_row(pk, gi, i), w.r, SRC == 3u);
    rs[i] = r;
    rp[i] = w.pos + slot_dt(pk, i);
    let rq = select(w.r, r, r != NO_ROW);
    for (var c = 0u; c < QN; c++) {
      qv[i][c] = ld4_q(rq * D + 4u * c) * params.scale_log2;
    }
    m[i] = init_m(row_at(w, rq), p);
    l[i] = init_l(p);
  }
  var acc: array<array<vec4<f32>, VN8>, ROWS>;
  var sc: array<array<f32, BK>, ROWS>;
  var kb: array<u32, BK>;
  var ks: array<f32, BK>;
  var vb: array<u32, BK>;
  var vs: array<f32, BK>;
  let ns = seg_count(w);
  for (var s = 0u; s < ns; s++) {
    let g = segment(w, s);
    let s1 = g.hi;
    for (var j0 = g.lo; j0 < s1; j0 += BK) {
      let n = min(BK, s1 - j0);
      for (var jj = 0u; jj < n; jj++) {
        let j = j0 + jj;
        kb[jj] = k_elem(w, g, j);
        ks[jj] = kv_scale(w, g, j, 0u);
        vb[jj] = v_elem(w, g, j);
        vs[jj] = kv_scale(w, g, j, 1u);
      }
      sc = array<array<f32, BK>, ROWS>();
      // Scores: each 32-channel group of a key loaded once, dotted with every row's q.
      for (var c = 0u; c < QN; c += 8u) {
        var qg: array<G8, ROWS>;
        for (var i = 0u; i < ROWS; i++) {
          qg[i] = G8(qv[i][c], qv[i][c + 1u], qv[i][c + 2u], qv[i][c + 3u], qv[i][c + 4u], qv[i][c + 5u], qv[i][c + 6u], qv[i][c + 7u]);
        }
        let n4 = QN - c;
        for (var jj = 0u; jj < n; jj++) {
          let kg = ld32_k(kb[jj] + 4u * c, ks[jj], n4);
          for (var i = 0u; i < ROWS; i++) {
            sc[i][jj] += dot8(qg[i], kg);
          }
        }
      }
      var corr: array<f32, ROWS>;
      let nm = block_masked(w, j0, n);
      for (var i = 0u; i < ROWS; i++) {
        var mb = ST_NEG_BIG;
        if (nm) {
          for (var jj = 0u; jj < n; jj++) {
            let x = select(st_neg_inf(), sc[i][jj], visible(j0 + jj, rp[i]));
            sc[i][jj] = x;
            mb = max(mb, x);
          }
        } else {
          for (var jj = 0u; jj < n; jj++) {
            mb = max(mb, sc[i][jj]);
          }
        }
        let mNew = max(m[i], mb);
        corr[i] = exp2(m[i] - mNew);
        var lb = 0.0;
        for (var jj = 0u; jj < n; jj++) {
          let pj = exp2(sc[i][jj] - mNew);
          sc[i][jj] = pj;
          lb += pj;
        }
        l[i] = l[i] * corr[i] + lb;
        m[i] = mNew;
      }
      // Values: each 32-channel group of a key loaded once, folded into every row's accumulator.
      for (var c = 0u; c < VN; c += 8u) {
        var a: array<G8, ROWS>;
        for (var i = 0u; i < ROWS; i++) {
          let f = corr[i];
          a[i] = G8(acc[i][c] * f, acc[i][c + 1u] * f, acc[i][c + 2u] * f, acc[i][c + 3u] * f, acc[i][c + 4u] * f, acc[i][c + 5u] * f, acc[i][c + 6u] * f, acc[i][c + 7u] * f);
        }
        let n4 = VN - c;
        if (nm) {
          // masked keys (p = 0) skipped: their values may be NaN or Inf
          for (var jj = 0u; jj < n; jj++) {
            let vg = ld32_v(vb[jj] + 4u * c, vs[jj], n4);
            for (var i = 0u; i < ROWS; i++) {
              if (sc[i][jj] > 0.0) {
                a[i] = axpy8(a[i], sc[i][jj], vg);
              }
            }
          }
        } else {
          for (var jj = 0u; jj < n; jj++) {
            let vg = ld32_v(vb[jj] + 4u * c, vs[jj], n4);
            for (var i = 0u; i < ROWS; i++) {
              a[i] = axpy8(a[i], sc[i][jj], vg);
            }
          }
        }
        for (var i = 0u; i < ROWS; i++) {
          acc[i][c] = a[i].a0;
          acc[i][c + 1u] = a[i].a1;
          acc[i][c + 2u] = a[i].a2;
          acc[i][c + 3u] = a[i].a3;
          acc[i][c + 4u] = a[i].a4;
          acc[i][c + 5u] = a[i].a5;
          acc[i][c + 6u] = a[i].a6;
          acc[i][c + 7u] = a[i].a7;
        }
      }
    }
  }
  for (var i = 0u; i < ROWS; i++) {
    if (rs[i] != NO_ROW) {
      let wi = row_at(w, rs[i]);
      let inv = select(0.0, 1.0 / l[i], l[i] > 0.0);
      for (var c = 0u; c < VN; c++) {
        store4(wi, p, c, acc[i][c] * inv);
      }
      store_lse(wi, p, m[i], l[i]);
    }
  }
}
