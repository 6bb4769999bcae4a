/**
 * Dense attention on the attention core (kernels/attention, contiguous 'ragged' key source): the
 * sequences of a prefill call become one schedule (qoIndptr = cuSeqlensQ, kvIndptr = cuSeqlensK,
 * bottom-right causal with early queries), planned and scheduled once at plan time. Head dims run
 * rounded up to multiples of 4 (pad.ts copies q/k/v/o where that or the K/V word size needs it).
 * On a loop-capped device a split call whose f32 partials would pass `partialBytes` runs in query
 * groups: each group a schedule of its own (a ring slot of the core), encoded one after another
 * and sharing the core's partials.
 */
import { fail } from '../../src/errors.js';
import { loopBudget, type TesseraDevice } from '../../src/gpu/device.js';
import {
  ATTENTION_ROWS,
  ATTENTION_SG_LANES,
  ATTENTION_TILE_ROWS,
  MAX_SCHEDULE_SLOTS,
  attentionKeysPerPart,
  planBatchAttention,
  type BatchAttentionOptions,
  type BatchAttentionPlan,
} from '../attention/attention.js';
import { mergePartsPerSegment } from '../merge/merge.js';
import type { ResolvedAttention, SeqSpan } from './options.js';
import { dim4 } from './pad.js';

/**
 * The attention core's options for dense attention over contiguous (ragged) K/V, from the dense
 * plan's resolved options: heads, head dims (rounded up to 4: see pad.ts), dtypes, mask (causal
 * bottom-right, where a query before the first key sees none), scale (of the real D), kernel
 * shape, one schedule slot. Prefill and decode add their capacities and splits.
 */
export function raggedCoreOptions(r: ResolvedAttention) {
  return {
    source: 'ragged',
    Hq: r.Hq,
    Hkv: r.Hkv,
    D: dim4(r.D),
    Dv: dim4(r.Dv),
    kvDtype: r.dtype,
    qDtype: r.dtype,
    oDtype: r.outDtype,
    causal: r.causal,
    earlyQueries: r.causal,
    window: Math.min(r.window, 0xffffffff),
    sinks: Math.min(r.sinks, 0xffffffff),
    sinkLogit: r.sinkLogit,
    scale: r.scale,
    target: r.target,
    scheduleSlots: 1,
  } satisfies Partial<BatchAttentionOptions>;
}

/** The most split-K parts the core plans (its `maxSplits` bound). */
const MAX_PARTS = 4096;

/**
 * The fewest keys per part the core may use under `limit` for a batch of `N` sequences: its packs
 * of one row, and with `tiles` (the gpu shape's workgroup tiles) the tiles' bound too, so that a
 * plan given that many parts always fits them. `Infinity` without a cap.
 */
export function coreKeysPerPart(limit: number, r: ResolvedAttention, N: number, tiles: boolean): number {
  const D = dim4(r.D);
  const Dv = dim4(r.Dv);
  const plain = attentionKeysPerPart(limit, r.target, D, Dv, N, 1);
  return tiles ? Math.min(plain, attentionKeysPerPart(limit, 'gpu', D, Dv, N, 1, true)) : plain;
}

/** One query group: tokens `[tok0, tok0 + tokens)` of the call, scheduled in ring slot `slot`. */
export interface QueryGroup {
  tok0: number;
  tokens: number;
  slot: number;
}

export interface PrefillCore {
  batch: BatchAttentionPlan;
  /** Split-K parts per row (1: o and lse written directly). */
  parts: number;
  /** Keys per part (`Infinity` when unsplit). */
  kvChunk: number;
  /** The query groups, encoded in this order (one: the whole call). */
  groups: QueryGroup[];
}

/** The lowest n in [0, count) where `yes(n)` (monotone: false then true), else count. */
function lowest(count: number, yes: (n: number) => boolean): number {
  let lo = 0;
  let hi = count;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (yes(mid)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * Query tokens per group of a split call: the most whose f32 partials `parts * tokens * Hq *
 * (Dv + 1) * 4` bytes fit `partialBytes` (and one binding), in whole units of tokens whose q, o and
 * lse rows end on the device's storage offset alignment (so every group binds at an aligned
 * offset), at least one unit, and few enough groups for the core's schedule slots. `Tq` when all
 * fit.
 */
export function queryGroupTokens(ctx: TesseraDevice, r: ResolvedAttention, Tq: number, parts: number): number {
  const perToken = parts * r.Hq * (dim4(r.Dv) + 1) * 4;
  const budget = Math.min(r.partialBytes, ctx.limits.maxStorageBufferBindingSize);
  if (parts === 1 || perToken * Tq <= budget) return Tq;
  const align = ctx.limits.minStorageBufferOffsetAlignment;
  const eb = r.dtype === 'f32' ? 4 : 2;
  const ob = r.outDtype === 'f32' ? 4 : 2;
  let unit = 1;
  for (const bytes of [r.Hq * dim4(r.D) * eb, r.Hq * dim4(r.Dv) * ob, r.Hq * 4]) {
    const u = align / gcd(align, bytes);
    unit = (unit * u) / gcd(unit, u);
  }
  let tokens = Math.max(unit, unit * Math.floor(budget / perToken / unit));
  tokens = Math.max(tokens, unit * Math.ceil(Math.ceil(Tq / MAX_SCHEDULE_SLOTS) / unit));
  return Math.min(tokens, Tq);
}

/**
 * The core's tables for the query tokens `[t0, t1)` of a call (qoIndptr from 0: the group's q/o/lse
 * are bound from token t0). The sequences that hold them, in order; kvIndptr starts at the first
 * one's keys. A causal sequence cut after its query b keeps its first `tk - tq + b` keys (only the
 * group's last sequence can be cut so): its queries then sit at the same positions, bottom-right,
 * as in the whole call, and the first `tq` (window, sinks) too. A non-causal one keeps all keys.
 *
 * @example
 * queryGroupTables([{ qOff: 0, tq: 4, kOff: 0, tk: 10 }], 1, 3, true); // { qoIndptr: [0, 2], kvIndptr: [0, 9] }
 */
export function queryGroupTables(
  spans: readonly SeqSpan[],
  t0: number,
  t1: number,
  causal: boolean,
): { qoIndptr: number[]; kvIndptr: number[] } {
  // spans are back to back along the query axis: the first ends past t0, the last starts before t1
  const first = lowest(spans.length, (n) => spans[n]!.qOff + spans[n]!.tq > t0);
  const last = lowest(spans.length, (n) => spans[n]!.qOff >= t1) - 1;
  if (!(t0 < t1 && first <= last))
    fail('E_ARG', 't1', 'gives a query group without queries;', t1, `${t0} < t1 <= the call's tokens`);
  const qo = [0];
  const kv = [spans[first]!.kOff];
  for (let n = first; n <= last; n++) {
    const s = spans[n]!;
    const a = Math.max(0, t0 - s.qOff);
    const b = Math.min(s.tq, t1 - s.qOff);
    qo.push(qo[qo.length - 1]! + b - a);
    kv.push(s.kOff + (causal ? Math.min(s.tk, Math.max(0, s.tk - s.tq + b)) : s.tk));
  }
  return { qoIndptr: qo, kvIndptr: kv };
}

/**
 * Whether every step of the call fills the cpu shape's subgroup packs (4 lanes of up to 8 rows
 * each: `tokens * G >= sequences * 32`), so that the core need not compile its plain kernel for
 * steps that would not (the steps of a prefill plan are known when it is planned).
 */
function fillsLanes(r: ResolvedAttention, tables: readonly { qoIndptr: number[] }[]): boolean {
  if (r.target !== 'cpu') return false;
  const G = r.Hq / r.Hkv;
  const packRows = ATTENTION_SG_LANES * ATTENTION_ROWS[ATTENTION_ROWS.length - 1]!;
  return tables.every((t) => t.qoIndptr[t.qoIndptr.length - 1]! * G >= (t.qoIndptr.length - 1) * packRows);
}

/**
 * Plans the prefill on the core: split-K parts where the loop cap needs them, query groups where
 * their partials would pass `partialBytes`, every group scheduled now. `keysArg` names the keys'
 * argument (`Tk` or `cuSeqlensK`) in a refusal.
 */
export async function planPrefillCore(
  ctx: TesseraDevice,
  r: ResolvedAttention,
  spans: readonly SeqSpan[],
  limit: number,
  keysArg: string,
): Promise<PrefillCore> {
  const N = spans.length;
  const last = spans[N - 1]!;
  const Tq = last.qOff + last.tq;
  const Tk = last.kOff + last.tk;
  let maxTk = 1;
  for (const s of spans) maxTk = Math.max(maxTk, s.tk);
  // The one step is known now: the gpu shape takes the tiles (main_gpu_tile) where the sequences
  // bring a tile's rows on average, else main_gpu, and compiles only that pipeline (not the
  // per-step fallback the core keeps for schedules it does not know yet).
  const tiles = r.target === 'gpu' ? (Tq * (r.Hq / r.Hkv)) / N >= ATTENTION_TILE_ROWS : undefined;
  let parts = 1;
  let kvChunk: number | undefined;
  if (Number.isFinite(loopBudget(limit))) {
    const keys = coreKeysPerPart(limit, r, N, r.target === 'gpu');
    if (keys < 1)
      fail(
        'E_LIMIT',
        'D',
        "is too large for one invocation within the device's loop limit;",
        r.D,
        `loopLimit ${limit}`,
      );
    parts = Math.ceil(maxTk / keys);
    const most = Math.min(MAX_PARTS, mergePartsPerSegment(limit, dim4(r.Dv)));
    if (parts > most)
      fail(
        'E_LIMIT',
        keysArg,
        `gives a sequence of ${maxTk} keys: more split-K parts of ${keys} keys than one merge takes within the loop limit;`,
        parts,
        `at most ${most} parts (${most * keys} keys per sequence, loopLimit ${limit})`,
      );
    // balanced parts, the same in every query group
    if (parts > 1) {
      kvChunk = Math.ceil(maxTk / parts);
      parts = Math.ceil(maxTk / kvChunk);
    }
  }
  const tokens = queryGroupTokens(ctx, r, Tq, parts);
  const groups: QueryGroup[] = [];
  for (let t0 = 0; t0 < Tq; t0 += tokens) groups.push({ tok0: t0, tokens: Math.min(tokens, Tq - t0), slot: 0 });
  const tables = groups.map((g) => queryGroupTables(spans, g.tok0, g.tok0 + g.tokens, r.causal));
  const batch = await planBatchAttention(ctx, {
    ...raggedCoreOptions(r),
    maxBatch: N,
    maxQTokens: tokens,
    maxKvTokens: Math.max(1, Tk),
    maxKvLen: maxTk,
    subgroups: r.subgroups ? (fillsLanes(r, tables) ? true : undefined) : false,
    tiles,
    maxSplits: parts,
    kvChunk,
    scheduleSlots: groups.length,
    loopLimit: Number.isFinite(limit) ? limit : undefined,
  });
  try {
    let most = 1;
    let chunk = Number.POSITIVE_INFINITY;
    for (const [i, g] of groups.entries()) {
      const info = batch.schedule(tables[i]!);
      if (info.parts > parts)
        fail(
          'E_STATE',
          keysArg,
          'was split into more parts by the attention core than planned;',
          info.parts,
          `${parts}`,
        );
      g.slot = info.slot;
      if (info.parts > most) [most, chunk] = [info.parts, info.kvChunk];
    }
    return { batch, parts: most, kvChunk: chunk, groups };
  } catch (e) {
    batch.dispose();
    throw e;
  }
}
