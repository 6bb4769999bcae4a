/**
 * The attention core over a CSR table of keys: plan (compile once, allocate once), schedule (per
 * step: the page table into the plan's own small buffers), run (per layer: dispatches into the
 * caller's encoder, no GPU buffer created, bind groups cached). See index.ts for the API summary
 * and attention.wgsl for the kernel.
 */
import { TesseraError, check, checkFinite, checkInt, fail } from '../../src/errors.js';
import { kernelTarget, resolveTarget, type KernelTarget } from '../../src/options.js';
import { ctxOf, loopBudget, submitEpoch, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import {
  getPipeline,
  grid2d,
  wgslProgram,
  type BindingResource,
  type Pipeline,
  type PipelineSpec,
  type ShaderSource,
} from '../../src/gpu/pipeline.js';
import { GroupCache, bindingTable, optional, registerPasses, type VariantOf } from '../../src/gpu/bindings.js';
import { uniformLayout } from '../../src/gpu/uniforms.js';
import { KernelPlan, checkBindingSize, checkPlannedSize, res, runOnce } from '../../src/plan.js';
import { TensorMemo } from '../../src/tensor-memo.js';
import { byteSize, checkTensor, dtypeCode, isFloatDType, type FloatDType, type GpuTensor } from '../../src/tensor.js';
import { MERGE_PARAMS, getMergePipeline, type MergePipeline } from '../merge/index.js';
import { mergePartsPerSegment } from '../merge/merge.js';
import storageWgsl from '../../shaders/storage.wgsl.js';
import coreWgsl from './attention.wgsl.js';
import coreSgWgsl from './attention_sg.wgsl.js';
import raggedSeqWgsl from '../../shaders/ragged_seq.wgsl.js';
import coreTileWgsl from './attention_tile.wgsl.js';
import { coreSgEntry } from './attention_sg.js';
import { KV_DTYPES, kvDtypeCode, pageLayout, type KvDType, type PageLayout } from './page.js';
import { GPUBufferUsageFlags } from '../../src/gpu/flags.js';
import { planLoopLimit } from '../../src/gpu/segments.js';

export const CORE_PARAMS = uniformLayout('CoreParams', [
  ['hq', 'u32'],
  ['group', 'u32'],
  ['hkv', 'u32'],
  ['scale_log2', 'f32'],
  ['causal', 'u32'],
  ['window', 'u32'],
  ['sinks', 'u32'],
  ['has_sink', 'u32'],
  ['page', 'u32'],
  ['page_elems', 'u32'],
  ['page_words', 'u32'],
  ['k_head', 'u32'],
  ['v_off', 'u32'],
  ['v_head', 'u32'],
  ['scale_off', 'u32'],
  ['off_qo', 'u32'],
  ['off_kv', 'u32'],
  ['off_last', 'u32'],
  ['off_idx', 'u32'],
  ['lse_off', 'u32'],
  // Key source 2 (entry lists, kernels/paged): one call's parameters.
  ['l_rows', 'u32'],
  ['q_pos0', 'u32'],
  ['list_base', 'u32'],
  ['n_entries', 'u32'],
  ['e_per', 'u32'],
  ['part_base', 'u32'],
  ['part_count', 'u32'],
  // Key source 3 (block lists, lists.ts).
  ['b_rows', 'u32'],
  ['b_heads', 'u32'],
  ['b_stride', 'u32'],
  ['b_ptr', 'u32'],
  ['b_mb', 'u32'],
  ['b_block', 'u32'],
  ['b_keys', 'u32'],
  ['b_posoff', 'i32'],
  ['b_kper', 'u32'],
  ['b_nkc', 'u32'],
  ['b_qdiv', 'u32'],
  ['b_t0', 'u32'],
] as const);

/** The key source 3 fields (lists.ts) for the other sources, which do not read them. */
export const CORE_LIST_DEFAULTS = {
  b_rows: 1,
  b_heads: 1,
  b_stride: 0,
  b_ptr: 0,
  b_mb: 0,
  b_block: 1,
  b_keys: 0,
  b_posoff: 0,
  b_kper: 0,
  b_nkc: 1,
  b_qdiv: 1,
  b_t0: 0,
} as const;

/** Threads per workgroup (both shapes). */
export const ATTENTION_WG = 64;
const WG = ATTENTION_WG;
/** Keys per block of the cpu shape. */
export const ATTENTION_BK = 32;
const BK = ATTENTION_BK;
/** Invocations of `main_gpu_tile` (attention_tile.wgsl): rows of one pack, one per invocation. */
export const ATTENTION_TILE_ROWS = 64;
const TW = ATTENTION_TILE_ROWS;

/**
 * Keys per workgroup-memory tile of `main_gpu_tile` for head dims (D, Dv): the largest power of
 * two up to 32 whose K and V tiles (f32 quads) fit `wgBytes`.
 *
 * @example
 * attentionTileKeys(64, 64); // 32: 2 x 8 KiB
 */
export function attentionTileKeys(D: number, Dv: number, wgBytes = 16384): number {
  let n = 32;
  while (n > 1 && n * (D / 4 + Dv / 4) * 16 > wgBytes) n >>= 1;
  return n;
}
/** Packs (invocations or workgroups) of one part above which a schedule stops splitting keys for parallelism. */
const ATTENTION_PARALLEL_PACKS = 512;

/** Words of the schedule slot header: totalQ, B, nParts, kvPart, rows (+ 3 spare). */
const HEADER_WORDS = 8;
/** The most schedule slots a plan keeps (`scheduleSlots`). */
export const MAX_SCHEDULE_SLOTS = 1024;
/** Default bound on the f32 split-K partials a plan keeps (bytes). */
export const ATTENTION_PARTIALS_BYTES = 32 << 20;

/**
 * The loads of q (Q_DT, `array<u32>`) and of K and V (KV_DT, bound as `array<vec4<u32>>`): one
 * template, as WGSL cannot pass storage arrays. `ld4_*(e, s)`: 4 elements from element e (a
 * multiple of 4); `ld32_*(e, s, n4)`: 32 elements, quads past n4 zero; with VEC (D, Dv multiples
 * of 32, so e is a multiple of 32 and 16-byte aligned) as whole 16-byte words: 8 (f32), 4
 * (f16/bf16) or 2 (int8) loads instead of 8 to 16.
 */
function loads(): string {
  const kv = (a: 'k' | 'v') => `
fn ld4_${a}(e: u32, s: f32) -> vec4<f32> {
  var r: vec4<f32>;
  if (KV_DT == 0u) {
    r = bitcast<vec4<f32>>(${a}[e >> 2u]);
  } else if (KV_DT == 3u) {
    let i = e >> 2u;
    r = unpack4x8snorm(${a}[i >> 2u][i & 3u]) * s;
  } else {
    let w = ${a}[e >> 3u];
    if ((e & 4u) == 0u) {
      r = vec4<f32>(st_pair(w.x, KV_DT), st_pair(w.y, KV_DT));
    } else {
      r = vec4<f32>(st_pair(w.z, KV_DT), st_pair(w.w, KV_DT));
    }
  }
  return r;
}

fn pair4_${a}(w: vec4<u32>) -> array<vec4<f32>, 2> {
  return array<vec4<f32>, 2>(vec4<f32>(st_pair(w.x, KV_DT), st_pair(w.y, KV_DT)), vec4<f32>(st_pair(w.z, KV_DT), st_pair(w.w, KV_DT)));
}

fn ld32_${a}(e: u32, s: f32, n4: u32) -> G8 {
  var g: G8;
  if (VEC) {
    if (KV_DT == 0u) {
      let i = e >> 2u;
      g = G8(bitcast<vec4<f32>>(${a}[i]), bitcast<vec4<f32>>(${a}[i + 1u]), bitcast<vec4<f32>>(${a}[i + 2u]), bitcast<vec4<f32>>(${a}[i + 3u]),
             bitcast<vec4<f32>>(${a}[i + 4u]), bitcast<vec4<f32>>(${a}[i + 5u]), bitcast<vec4<f32>>(${a}[i + 6u]), bitcast<vec4<f32>>(${a}[i + 7u]));
    } else if (KV_DT == 3u) {
      let i = e >> 4u;
      let w0 = ${a}[i];
      let w1 = ${a}[i + 1u];
      g = G8(unpack4x8snorm(w0.x) * s, unpack4x8snorm(w0.y) * s, unpack4x8snorm(w0.z) * s, unpack4x8snorm(w0.w) * s,
             unpack4x8snorm(w1.x) * s, unpack4x8snorm(w1.y) * s, unpack4x8snorm(w1.z) * s, unpack4x8snorm(w1.w) * s);
    } else {
      let i = e >> 3u;
      let p0 = pair4_${a}(${a}[i]);
      let p1 = pair4_${a}(${a}[i + 1u]);
      let p2 = pair4_${a}(${a}[i + 2u]);
      let p3 = pair4_${a}(${a}[i + 3u]);
      g = G8(p0[0], p0[1], p1[0], p1[1], p2[0], p2[1], p3[0], p3[1]);
    }
  } else {
    g.a0 = ld4_${a}(e, s);
${[1, 2, 3, 4, 5, 6, 7].map((i) => `    if (n4 > ${i}u) {\n      g.a${i} = ld4_${a}(e + ${4 * i}u, s);\n    }`).join('\n')}
  }
  return g;
}
`;
  return `${kv('k')}${kv('v')}
fn ld4_q(e: u32) -> vec4<f32> {
  var r: vec4<f32>;
  if (Q_DT == 0u) {
    r = vec4<f32>(bitcast<f32>(q[e]), bitcast<f32>(q[e + 1u]), bitcast<f32>(q[e + 2u]), bitcast<f32>(q[e + 3u]));
  } else {
    r = vec4<f32>(st_pair(q[e / 2u], Q_DT), st_pair(q[e / 2u + 1u], Q_DT));
  }
  return r;
}
`;
}

/**
 * The core's bindings (src/gpu/bindings.ts), one table for every key source. Optional ones are
 * declared only by the variants that bind them, so none binds a dummy buffer:
 * - `work` (split-K partials): plans that may split a row (BatchAttentionPlan with maxSplits > 1);
 *   the kernel writes it only where the schedule says parts > 1 (`direct()` false), never for
 *   SRC 3, whose parts go to `o` itself.
 * - `sink_logits` ([Hq] f32): plans with `sinkLogit` (read only where params.has_sink, set to match).
 * - `seq_table` (u32 words): SRC 3's ragged batch (BlockListPlan `seqs`), the only reader.
 */
export const CORE = bindingTable('attention/core', {
  q: 'read',
  k: 'read',
  v: 'read',
  sched: 'read',
  o: 'rw',
  lse: 'rw',
  work: optional('rw', 'array<f32>'),
  params: 'uniform',
  sink_logits: optional('read', 'array<f32>'),
  seq_table: optional('read', 'array<u32>'),
});

/** A pipeline of the core (any key source, any variant of {@link CORE}). */
export type CorePipeline = Pipeline<VariantOf<typeof CORE>>;

/** The pipeline spec of the core for head dims (D, Dv), `rows` packed rows, a kernel shape and a variant of {@link CORE}. */
export function coreSpec(
  s: {
    D: number;
    Dv: number;
    rows?: number;
    target: 'cpu' | 'gpu';
    /** the program with `main_cpu_sg` (attention_sg.wgsl, `enable subgroups`) */
    subgroups?: boolean;
    /** default: the target's entry (`main_cpu` / `main_gpu`) */
    entry?: 'main_cpu' | 'main_gpu' | 'main_cpu_sg' | 'main_gpu_tile';
  },
  constants: { SRC: number; KV_DT: number; Q_DT: number; O_DT: number; LANES?: number },
  bound: { work: boolean; sink_logits: boolean; seq_table: boolean },
): PipelineSpec<VariantOf<typeof CORE>> {
  return {
    shader: attentionProgram(s.D, s.Dv, s.rows ?? 1, s.subgroups ?? false),
    entryPoint: s.entry ?? (s.target === 'cpu' ? 'main_cpu' : 'main_gpu'),
    bindings: CORE.variant(bound),
    constants: { ...constants, VEC: s.D % 32 === 0 && s.Dv % 32 === 0 },
  };
}

registerPasses('attention', () => {
  const specs: PipelineSpec[] = [];
  const dt = { KV_DT: 1, Q_DT: 0, O_DT: 0 };
  for (const target of ['cpu', 'gpu'] as const) {
    for (const [work, sink] of [
      [false, false],
      [true, true],
    ] as const)
      specs.push(coreSpec({ D: 64, Dv: 64, target }, { SRC: 1, ...dt }, { work, sink_logits: sink, seq_table: false }));
    for (const seq of [false, true])
      specs.push(
        coreSpec({ D: 64, Dv: 64, target }, { SRC: 3, ...dt }, { work: false, sink_logits: false, seq_table: seq }),
      );
  }
  return specs;
});

/** Packed rows per invocation (cpu) or workgroup (gpu) the core can be compiled for. */
export const ATTENTION_ROWS = [1, 2, 4, 8] as const;

/** Lanes of the cpu shape's subgroup packs (`main_cpu_sg`): 4 packs of rows share each K/V load. */
export const ATTENTION_SG_LANES = 4;

/**
 * The program for head dims (D, Dv) and `rows` packed rows (1, 2, 4 or 8): private and workgroup
 * arrays are sized by them. `subgroups`: with the entry `main_cpu_sg` (attention_sg.wgsl, `enable
 * subgroups`; the device must have the feature).
 */
export function attentionProgram(D: number, Dv: number, rows = 1, subgroups = false): ShaderSource {
  if (!(ATTENTION_ROWS as readonly number[]).includes(rows))
    fail('E_ARG', 'rows', 'is not a supported pack;', rows, '1, 2, 4 or 8');
  const header = `const WG: u32 = ${WG}u;\nconst BK: u32 = ${BK}u;\nconst D: u32 = ${D}u;\nconst DV: u32 = ${Dv}u;\nconst QN: u32 = ${D / 4}u;\nconst TW: u32 = ${TW}u;\nconst BKT: u32 = ${attentionTileKeys(D, Dv)}u;\nconst VN: u32 = ${Dv / 4}u;\nconst QN8: u32 = ${8 * Math.ceil(D / 32)}u;\nconst VN8: u32 = ${8 * Math.ceil(Dv / 32)}u;\nconst AN: u32 = ${Math.ceil(Dv / 4 / WG)}u;\nconst ROWS: u32 = ${rows}u;\n`;
  return wgslProgram(
    `attention/core/${D}x${Dv}${rows > 1 ? `r${rows}` : ''}${subgroups ? '+sg' : ''}`,
    [
      storageWgsl,
      CORE_PARAMS.wgsl,
      header,
      coreWgsl,
      raggedSeqWgsl,
      loads(),
      coreTileWgsl,
      ...(subgroups ? [coreSgWgsl, coreSgEntry(rows)] : []),
    ],
    subgroups ? ['subgroups'] : [],
  );
}

/**
 * The default pack's bound on loop-capped adapters (llvmpipe, whose compiler takes minutes over
 * large packs): at most 4 rows and rows * (D + Dv) <= 1024 (MLA's 576 + 512: 1 row); `undefined`
 * (the shape's own default) elsewhere.
 */
export function attentionRowsCap(loopLimit: number, D: number, Dv: number): number | undefined {
  return Number.isFinite(loopLimit) ? Math.max(1, Math.min(4, Math.floor(1024 / (D + Dv)))) : undefined;
}

/** Workgroup memory of `main_gpu` for (D, rows) in bytes. */
function gpuWorkgroupBytes(D: number, rows: number): number {
  return rows * (D / 4) * 16 + 2 * rows * WG * 4 + 2 * WG * 4;
}

/**
 * The rows a plan packs per invocation (cpu) or workgroup (gpu): the largest of 1, 2, 4, 8 that
 * is at most `span` (the rows that share keys: the G = Hq/Hkv query heads of a token, times the
 * tokens of a sequence for the CSR sources, or all queries of an entry-list call without causal)
 * and at most `cap` (default 4 for cpu, 8 for
 * gpu), lowered until the gpu shape's workgroup memory fits `wgBytes`.
 *
 * @example
 * attentionPackRows('cpu', 4, 128); // 4: the 4 query heads of a GQA group share their K/V loads
 */
export function attentionPackRows(
  target: 'cpu' | 'gpu',
  span: number,
  D: number,
  cap?: number,
  wgBytes = 16384,
): number {
  const limit = Math.min(span, cap ?? (target === 'cpu' ? 4 : 8));
  let r = 1;
  for (const x of ATTENTION_ROWS) if (x <= limit) r = x;
  while (r > 1 && target === 'gpu' && gpuWorkgroupBytes(D, r) > wgBytes) r /= 2;
  return r;
}

/**
 * Per-key and per-block loop trips of one shape for `rows` packed rows. With one row the row
 * loops run once (and are unrolled away); with more, every row loop is counted as rows + 1 trips.
 */
function shapeCost(
  target: 'cpu' | 'gpu',
  D: number,
  Dv: number,
  rows = 1,
  tile = false,
): { setup: number; perKey: number; perBlock: number; block: number } {
  const QN = D / 4;
  const VN = Dv / 4;
  const R = rows;
  if (tile) {
    // main_gpu_tile: per tile the two staging loops, the score loop (with its channel loop), the
    // exp loop and the value loop (with its key loop), and the tile loop itself.
    const T = attentionTileKeys(D, Dv);
    return {
      setup: 2 * (QN + VN + 6) + 16,
      perKey: 0,
      perBlock:
        1 +
        (Math.ceil((T * QN) / TW) + 1) +
        (Math.ceil((T * VN) / TW) + 1) +
        (T + 1) +
        T * (QN + 1) +
        (T + 1) +
        (VN + 1) +
        VN * (T + 1),
      block: T,
    };
  }
  if (target === 'cpu') {
    const QG = Math.ceil(D / 32);
    const VG = Math.ceil(Dv / 32);
    if (R === 1)
      return { setup: 2 * (QN + 2 * VN + 3) + 16, perKey: QG + VG + 4, perBlock: 2 * (QG + VG) + 10, block: BK };
    return {
      setup: R * (2 * (QN + 2 * VN + 3) + 8) + 24,
      perKey: (QG + VG) * (R + 2) + 2 * R + 2,
      perBlock: (QG + VG) * (2 * R + 5) + 4 * R + 12,
      block: BK,
    };
  }
  const AN = Math.ceil(VN / WG);
  const L = Math.log2(WG) + 2;
  if (R === 1)
    return {
      setup: 2 * (Math.ceil(QN / WG) + AN + 3) + 16,
      perKey: 0,
      perBlock: QN + 8 + 2 * L + (AN + 1) * (WG + 2),
      block: WG,
    };
  return {
    setup: R * (2 * (Math.ceil(QN / WG) + AN + 3) + 8) + 24,
    perKey: 0,
    perBlock: QN * (R + 2) + 6 * (R + 1) + 8 + 2 * L * (R + 2) + (AN + 1) * (WG * (R + 2) + 3 * (R + 1) + 2),
    block: WG,
  };
}

/**
 * The loop iterations one invocation of `attention.wgsl` runs when its part covers `keys` keys,
 * counted the way Mesa's gallivm counts (every back-edge of every loop, all loops together; a
 * loop of n trips costs n + 1; a call of a function with a loop or an early return costs 1 more),
 * for a batch of up to `maxBatch` sequences (the binary searches over qoIndptr). An upper bound,
 * with an allowance for the compiler.
 *
 * - `cpu` (`main_cpu`, blocks of 32 keys): per key the address, max and exp loops' trips and one
 *   trip per 32-channel group of D and of Dv (the key loops sit inside the channel-group loops);
 *   per block the group loops themselves; blocks are `ceil(keys / 32) + 2` (two key segments:
 *   sinks and the window).
 * - `gpu` (`main_gpu`, blocks of 64 keys): per block the score loop over D/4, two 7-step tree
 *   reductions and `ceil(Dv/256)` value loops over <= 64 keys.
 * - `rows` > 1 (packed rows): every loop over the pack's rows counted as rows + 1 trips where it
 *   sits (inside the key and channel loops), and the max/exp loops once per row.
 *
 * @example
 * attentionLoopCost('cpu', 128, 128, 1000, 8); // 13,113: within llvmpipe's 58,981 budget
 */
export function attentionLoopCost(
  target: 'cpu' | 'gpu',
  D: number,
  Dv: number,
  keys: number,
  maxBatch: number,
  rows = 1,
  tile = false,
): number {
  const c = shapeCost(target, D, Dv, rows, tile);
  // two binary searches: the pack's sequence (over pk_start) and its first row's token (qoIndptr)
  const search = 2 * (Math.ceil(Math.log2(Math.max(2, maxBatch))) + 3);
  const blocks = Math.ceil(keys / c.block) + 2;
  return c.setup + search + 3 + blocks * c.perBlock + keys * c.perKey;
}

/**
 * The loop cost of the entry-list key source (kernels/paged's partials): `setup` outside the
 * entry loop and `perEntry` for one entry (page) of up to `pageSize` keys.
 *
 * @example
 * attentionListLoopCost('cpu', 128, 128, 64); // { setup: 214, perEntry: 823 }
 */
export function attentionListLoopCost(
  target: 'cpu' | 'gpu',
  D: number,
  Dv: number,
  pageSize: number,
  rows = 1,
): { setup: number; perEntry: number } {
  const c = shapeCost(target, D, Dv, rows);
  return { setup: c.setup, perEntry: 3 + Math.ceil(pageSize / c.block) * c.perBlock + pageSize * c.perKey };
}

/**
 * The most keys one part (one invocation's share of a sequence) may cover so that an invocation
 * stays within {@link loopBudget} (`Infinity` without a cap, 0 when not even one fits).
 *
 * @example
 * attentionKeysPerPart(65535, 'cpu', 128, 128, 8); // 4,579 keys
 */
export function attentionKeysPerPart(
  loopLimit: number,
  target: 'cpu' | 'gpu',
  D: number,
  Dv: number,
  maxBatch: number,
  rows = 1,
  tile = false,
): number {
  const budget = loopBudget(loopLimit);
  if (!Number.isFinite(budget)) return Number.POSITIVE_INFINITY;
  let lo = 0;
  let hi = 1 << 24;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (attentionLoopCost(target, D, Dv, mid, maxBatch, rows, tile) <= budget) lo = mid;
    else hi = mid;
  }
  return lo;
}

/** Options of {@link planBatchAttention}: capacities, shapes, dtypes, masks and kernel choice. */
export interface BatchAttentionOptions {
  /** Key source: `paged` (default: pages of one pool buffer through a CSR page table) or `ragged` (contiguous K/V `[totalKv, Hkv, D]`, kvIndptr = cuSeqlens). */
  source?: 'paged' | 'ragged';
  /** Most sequences per step (B <= maxBatch). */
  maxBatch: number;
  /** Most query tokens per step, all sequences together (qoIndptr[B] <= maxQTokens). */
  maxQTokens: number;
  /** paged: most page-table entries per step (kvIndptr[B] <= maxPages). */
  maxPages?: number;
  /** paged: pages in the pool buffer (every kvIndices value < poolPages; default maxPages). */
  poolPages?: number;
  /** ragged: most keys per step, all sequences together (kvIndptr[B] <= maxKvTokens). */
  maxKvTokens?: number;
  /** ragged: most keys of one sequence (default maxKvTokens); sizes the split-K partials. */
  maxKvLen?: number;
  /** Query heads (a multiple of Hkv). */
  Hq: number;
  /** KV heads. Query head h uses KV head floor(h / (Hq / Hkv)). */
  Hkv: number;
  /** q/k head dim: a multiple of 4, at most 576 (MLA absorbed: 512 + 64). */
  D: number;
  /** v/o head dim: a multiple of 4, at most 512 (default D). */
  Dv?: number;
  /** paged: tokens per page. */
  pageSize?: number;
  /** KV storage dtype: paged f32/f16/bf16/int8 (default f16); ragged f32/f16/bf16 (default qDtype). */
  kvDtype?: KvDType;
  /** Storage dtype of q (default f32). */
  qDtype?: FloatDType;
  /** Storage dtype of o (default qDtype). lse is always f32. */
  oDtype?: FloatDType;
  /** Default true: query i of n new tokens of a sequence of L keys sits at position L - n + i (bottom-right). */
  causal?: boolean;
  /**
   * Causal only. Default false: `schedule` rejects a sequence with more new queries than keys
   * (n > L). true: as in dense attention, its first n - L queries sit before its first key and see
   * none (o = 0, lse = -inf, or the sink logit alone); e.g. decode rows of empty sequences.
   */
  earlyQueries?: boolean;
  /** Sliding window W (0: none): key j visible iff pos - W < j <= pos. Causal only. */
  window?: number;
  /** With a window, the first `sinks` keys stay visible (still causal). */
  sinks?: number;
  /** Per-query-head sink logit (natural log; a virtual key of value 0): tensor `sinkLogits [Hq]` f32 at run. */
  sinkLogit?: boolean;
  /** Softmax scale (default 1/sqrt(D)). */
  scale?: number;
  /** Kernel shape: `cpu` (invocation per row, no barriers), `gpu` (workgroup per row), `auto` (by adapter class; default). */
  target?: KernelTarget;
  /** @deprecated Use `target` (same values): the kernel shape's old name in this family. */
  variant?: 'auto' | 'cpu' | 'gpu';
  /** Most split-K parts per row (default: what the loop cap needs for the longest possible sequence, up to 64 within 32 MiB of partials). */
  maxSplits?: number;
  /** Keys per part (default: at least 256, enough for maxSplits parts; lowered to the loop cap). */
  kvChunk?: number;
  /** Schedule slots (default 4, at most 1024): schedules that may be in flight between submits. */
  scheduleSlots?: number;
  /**
   * Query rows packed per invocation (cpu) or workgroup (gpu): 1, 2, 4 or 8 consecutive rows of
   * one sequence and KV head (its query heads, then its next tokens) share each K/V load. Default:
   * {@link attentionPackRows} of G = Hq / Hkv times `maxQTokens / maxBatch` tokens, up to 8 when
   * that packs tokens (4 for one token's heads on the cpu shape).
   */
  rows?: number;
  /**
   * cpu shape: 4 lanes of a subgroup take 4 consecutive packs of a sequence and share each K/V
   * load (`main_cpu_sg`). Default: where the device has subgroups and the capacities' sequences
   * bring enough tokens to fill such packs (prefill), and then per step (a step whose sequences
   * average fewer than `4 * rows` rows, e.g. decode, runs one invocation per pack); true: every
   * step; false: never (every invocation loads its own keys).
   */
  subgroups?: boolean;
  /**
   * gpu shape: a workgroup of 64 invocations takes 64 consecutive rows of a sequence (one each)
   * and stages K/V tiles in workgroup memory (`main_gpu_tile`, attention_tile.wgsl). Default:
   * where the capacities' sequences bring at least 64 rows each (prefill), and then per step (a
   * step whose sequences average fewer runs `main_gpu`); true: every step; false: never.
   */
  tiles?: boolean;
  /**
   * Size the parts for this loop cap instead of the device's (lower only; an integer >= 256): the
   * sizing Mesa's llvmpipe needs, on any adapter (src/gpu/segments.ts).
   */
  loopLimit?: number;
}

/** One step's CSR tables (host arrays; `number[]` or typed arrays). */
export interface BatchSchedule {
  /** `[B+1]`: query tokens of sequence b are rows qoIndptr[b]..qoIndptr[b+1] of q and o. Decode: [0, 1, .., B]. */
  qoIndptr: ArrayLike<number>;
  /** `[B+1]`: paged: sequence b's pages are kvIndices[kvIndptr[b]..kvIndptr[b+1]]; ragged: its keys are rows kvIndptr[b].. of k and v. */
  kvIndptr: ArrayLike<number>;
  /** paged: `[>= kvIndptr[B]]` pool page slots, in token order. */
  kvIndices?: ArrayLike<number>;
  /** paged: `[B]` tokens used in each sequence's last page (1..pageSize; 0 for a sequence with no pages). */
  kvLastPageLen?: ArrayLike<number>;
}

/** What {@link BatchAttentionPlan.schedule} decided. */
export interface ScheduleInfo {
  /** Sequences B. */
  batch: number;
  /** Query tokens (qoIndptr[B]). */
  totalQ: number;
  /** Keys of each sequence. */
  kvLens: number[];
  /** Split-K parts per row this step (1: o written directly, no merge). */
  parts: number;
  /** Keys per part. */
  kvChunk: number;
  /** The ring slot written. */
  slot: number;
}

/**
 * Where a schedule's words go, for an engine that fills a schedule buffer on the GPU itself
 * ({@link BatchAttentionPlan.useSchedule}). All values are u32 words; offsets are in words.
 */
export interface ScheduleLayout {
  /** Words of the whole buffer (it must hold at least `4 * words` bytes, STORAGE usage). */
  words: number;
  /**
   * Word 0..4: `[totalQ, B, parts, kvChunk, rows]`. The engine writes totalQ (qoIndptr[B]) and B
   * each step; parts, kvChunk and rows must hold the values given here (`parts`, `kvChunk`,
   * `rows`), which the plan's dispatches are sized for.
   */
  header: readonly [number, number, number, number, number];
  /** Word offset of qoIndptr `[B+1]`. */
  qoIndptr: number;
  /** Word offset of kvIndptr `[B+1]`. */
  kvIndptr: number;
  /** Word offset of kvLastPageLen `[B]` (paged). */
  kvLastPageLen: number;
  /** Word offset of kvIndices `[maxPages]` (paged; kvIndptr indexes into it). */
  kvIndices: number;
}

/** Tensors of {@link BatchAttentionPlan.run}. */
export interface BatchAttentionTensors {
  /** `[T, Hq, D]` in qDtype, T >= the schedule's totalQ (rows past it are left alone). */
  q: GpuTensor;
  /** `[T, Hq, Dv]` in oDtype. */
  o: GpuTensor;
  /** `[T, Hq]` f32, natural log (optional): -inf for a row that sees no key and has no sink logit. */
  lse?: GpuTensor;
  /** paged: the pool buffer (`poolPages * pageLayout(..).pageBytes` bytes at least). */
  pages?: GPUBuffer;
  /** ragged: `[N, Hkv, D]` in kvDtype, N >= kvIndptr[B]. */
  k?: GpuTensor;
  /** ragged: `[N, Hkv, Dv]` in kvDtype. */
  v?: GpuTensor;
  /** `[Hq]` f32, required iff sinkLogit. */
  sinkLogits?: GpuTensor;
}

type Resolved = Required<
  Omit<
    BatchAttentionOptions,
    | 'maxPages'
    | 'poolPages'
    | 'maxKvTokens'
    | 'maxKvLen'
    | 'pageSize'
    | 'maxSplits'
    | 'kvChunk'
    | 'rows'
    | 'subgroups'
    | 'tiles'
    | 'variant'
    | 'loopLimit'
  >
> & {
  rows?: number;
  maxPages: number;
  poolPages: number;
  maxKvTokens: number;
  /** The longest sequence the capacities allow (paged: maxPages * pageSize). */
  maxKvLen: number;
  pageSize: number;
  kvChunk?: number;
  maxSplits?: number;
};

interface Slot {
  buffer: GPUBuffer;
  merge: GPUBuffer;
  info?: ScheduleInfo;
  /** kvIndptr[B] of the schedule (ragged: keys that k and v must hold). */
  kvEnd: number;
  /** Submit epoch of the last run that bound this slot (-2: never). */
  usedEpoch: number;
  /** What the slot's merge uniform holds (parts, rows; none yet: undefined): unchanged, it is not written again. */
  mergeParts?: number;
  mergeRows?: number;
}

/** A planned attention core. Create with {@link planBatchAttention}. */
export class BatchAttentionPlan extends KernelPlan<BatchAttentionTensors> {
  readonly options: Readonly<Resolved>;
  /** The kernel shape in use. */
  readonly target: 'cpu' | 'gpu';
  /** @deprecated use target (the kernel shape's old name; same value). */
  get variant(): 'cpu' | 'gpu' {
    return this.target;
  }
  /** Most split-K parts per row. */
  readonly maxSplits: number;
  /** The most keys one part may cover on this device (the loop cap; Infinity elsewhere). */
  readonly maxKeysPerPart: number;
  /** paged: the page geometry. */
  readonly layout?: PageLayout;
  /** Query rows packed per invocation (cpu) or workgroup (gpu): the G query heads of a token share K/V loads. */
  readonly rows: number;
  /**
   * Invocations (one subgroup) that share one pack's key loads: 4 with `main_cpu_sg`, else 1. A
   * step whose sequences average fewer than `4 * rows` rows runs `main_cpu` (lanes 1) instead.
   */
  readonly lanes: number;
  /** Bind groups created so far (a cache hit creates none). */
  bindGroupsCreated = 0;
  private readonly rowsCap: number;
  private pipeline!: CorePipeline;
  /** With subgroup packs: main_cpu for steps whose sequences bring too few tokens to fill the lanes (decode). */
  private plainPipeline?: CorePipeline;
  private mergePipeline?: MergePipeline;
  private readonly params: GPUBuffer;
  private readonly slots: Slot[] = [];
  private current = -1;
  /** A schedule buffer the engine fills on the GPU (see useSchedule), when in use. */
  private external?: Slot;
  private readonly work?: GPUBuffer;
  private readonly lseOffWords: number;
  private readonly lseScratch: GPUBuffer;
  /** Bind groups per pipeline (core, core without subgroups, merge), keyed by what they bind. */
  private readonly groups = new Map<object, GroupCache>();
  /** Pool buffers whose size run checked, and the binding of the last one (no object per run). */
  private readonly poolsChecked: GPUBuffer[] = [];
  private poolBinding?: BindingResource;
  private readonly qMemo = new TensorMemo();
  private readonly oMemo = new TensorMemo();
  private readonly offsets: { qo: number; kv: number; last: number; idx: number; words: number };
  private readonly hostWords: Uint32Array<ArrayBuffer>;

  private constructor(
    ctx: TesseraDevice,
    o: Resolved,
    target: 'cpu' | 'gpu',
    maxSplits: number,
    keysCap: number,
    rows: number,
    lanes: number,
  ) {
    super(ctx);
    this.options = o;
    this.target = target;
    this.rows = rows;
    this.lanes = lanes;
    this.maxSplits = maxSplits;
    this.maxKeysPerPart = keysCap;
    this.rowsCap = o.maxQTokens * o.Hq;
    const B = o.maxBatch;
    const qo = HEADER_WORDS;
    const kv = qo + B + 1;
    const last = kv + B + 1;
    const idx = last + B;
    this.offsets = { qo, kv, last, idx, words: idx + (o.source === 'paged' ? o.maxPages : 0) };
    this.hostWords = new Uint32Array(this.offsets.words);
    const L = o.source === 'paged' ? pageLayout(o.pageSize, o.Hkv, o.D, o.Dv, o.kvDtype) : undefined;
    this.layout = L;
    const eb = o.kvDtype === 'f32' ? 4 : o.kvDtype === 'int8' ? 1 : 2;
    const oBytes = maxSplits > 1 ? maxSplits * this.rowsCap * o.Dv * 4 : 0;
    const lseByte = Math.ceil(oBytes / 256) * 256;
    this.lseOffWords = lseByte / 4;
    // no partials without splits: the variant then leaves `work` out (CORE)
    this.work =
      maxSplits > 1 ? this.workspace(lseByte + maxSplits * this.rowsCap * 4, 'attention.partials') : undefined;
    this.lseScratch = this.workspace(this.rowsCap * 4, 'attention.lse');
    this.params = this.uniform(CORE_PARAMS, {
      hq: o.Hq,
      group: o.Hq / o.Hkv,
      hkv: o.Hkv,
      scale_log2: o.scale * Math.LOG2E,
      causal: o.causal ? 1 : 0,
      window: o.window,
      sinks: o.window > 0 ? o.sinks : 0,
      has_sink: o.sinkLogit ? 1 : 0,
      page: L ? o.pageSize : 1,
      page_elems: L ? L.pageBytes / eb : 0,
      page_words: L ? L.pageBytes / 4 : 0,
      k_head: L ? L.kHeadBytes / eb : 0,
      v_off: L ? L.vOffset / eb : 0,
      v_head: L ? L.vHeadBytes / eb : 0,
      scale_off: L ? L.scaleOffset / 4 : 0,
      off_qo: qo,
      off_kv: kv,
      off_last: last,
      off_idx: idx,
      lse_off: this.lseOffWords,
      l_rows: 0,
      q_pos0: 0,
      list_base: 0,
      n_entries: 0,
      e_per: 0,
      part_base: 0,
      part_count: 0,
      ...CORE_LIST_DEFAULTS,
    });
    for (let i = 0; i < o.scheduleSlots; i++) {
      this.slots.push({
        buffer: this.workspace(this.offsets.words * 4, `attention.schedule${i}`),
        merge: this.workspace(
          MERGE_PARAMS.size,
          `attention.merge${i}`,
          GPUBufferUsageFlags.UNIFORM | GPUBufferUsageFlags.COPY_DST,
        ),
        kvEnd: 0,
        usedEpoch: -2,
      });
    }
  }

  /** @internal use {@link planBatchAttention}. */
  static async create(device: DeviceLike, opts: BatchAttentionOptions): Promise<BatchAttentionPlan> {
    const ctx = ctxOf(device);
    const o = validate(opts);
    const limit = planLoopLimit(ctx, opts.loopLimit);
    const target = resolveTarget(ctx, o.target);
    const G = o.Hq / o.Hkv;
    // A pack spans consecutive tokens of a sequence: the rows of the average sequence's new tokens.
    const span = G * Math.max(1, Math.floor(o.maxQTokens / o.maxBatch));
    let rows =
      o.rows ??
      attentionPackRows(
        target,
        span,
        o.D,
        // packs of tokens (prefill) take 8 rows on cpu too (measured faster than 4 for MHA prefill)
        attentionRowsCap(limit, o.D, o.Dv) ?? (span > G ? 8 : undefined),
        ctx.limits.maxComputeWorkgroupStorageSize,
      );
    // Under a loop cap a pack's invocation covers fewer keys; the default pack shrinks while the
    // longest sequence would need more parts than the plan may keep.
    while (o.rows === undefined && rows > 1) {
      const cap = attentionKeysPerPart(limit, target, o.D, o.Dv, o.maxBatch, rows);
      if (cap >= 1 && Math.ceil(o.maxKvLen / Math.min(cap, o.kvChunk ?? Infinity)) <= (o.maxSplits ?? 64)) break;
      rows /= 2;
    }
    if (target === 'gpu' && gpuWorkgroupBytes(o.D, rows) > ctx.limits.maxComputeWorkgroupStorageSize) {
      fail(
        'E_LIMIT',
        'rows',
        "packs more rows than the device's workgroup memory holds for this D;",
        rows,
        `at most ${attentionPackRows('gpu', 8, o.D, 8, ctx.limits.maxComputeWorkgroupStorageSize)}`,
      );
    }
    if (opts.subgroups === true && !ctx.features.subgroups)
      fail('E_UNSUPPORTED', 'subgroups', 'the device has no subgroups feature;', true, 'false on this device');
    if (opts.tiles !== undefined) check(typeof opts.tiles === 'boolean', 'tiles', 'a boolean', opts.tiles);
    if (opts.tiles === true && target !== 'gpu')
      fail('E_UNSUPPORTED', 'tiles', 'is a gpu-shape kernel;', true, "false, or target: 'gpu'");
    // Subgroup packs where a sequence's tokens fill the 4 lanes' packs (not decode: its lanes would
    // idle); gpu: workgroup-memory tiles where they fill a tile's TW rows.
    const tiled = target === 'gpu' && (opts.tiles ?? span >= TW);
    const lanes =
      target === 'cpu' && (opts.subgroups ?? (ctx.features.subgroups && span >= ATTENTION_SG_LANES * rows))
        ? ATTENTION_SG_LANES
        : tiled
          ? TW / rows
          : 1;
    const keysCap = Math.min(
      attentionKeysPerPart(limit, target, o.D, o.Dv, o.maxBatch, rows),
      tiled ? attentionKeysPerPart(limit, target, o.D, o.Dv, o.maxBatch, rows, true) : Infinity,
    );
    if (keysCap < 1)
      fail(
        'E_LIMIT',
        'D',
        "is too large for one invocation within the device's loop limit;",
        o.D,
        `loopLimit ${limit}`,
      );
    const maxKeys = o.maxKvLen;
    const rowsCap = o.maxQTokens * o.Hq;
    const chunk = Math.min(o.kvChunk ?? Number.POSITIVE_INFINITY, keysCap);
    const needed = Math.max(1, Math.ceil(maxKeys / chunk));
    let maxSplits: number;
    if (o.maxSplits !== undefined) {
      maxSplits = o.maxSplits;
    } else {
      const desired = Math.min(64, Math.ceil(maxKeys / 256));
      const fits = Math.max(1, Math.floor(ATTENTION_PARTIALS_BYTES / (rowsCap * o.Dv * 4)));
      maxSplits = Math.max(needed, Math.min(desired, fits), 1);
    }
    if (o.kvChunk !== undefined || Number.isFinite(keysCap)) {
      if (maxSplits < needed) {
        fail(
          'E_LIMIT',
          'maxSplits',
          `is too small for a sequence of ${maxKeys} keys in parts of ${chunk} keys;`,
          maxSplits,
          `at least ${needed}`,
        );
      }
    }
    const mergeCap = mergePartsPerSegment(limit, o.Dv);
    if (maxSplits > mergeCap)
      fail(
        'E_LIMIT',
        'maxSplits',
        "exceeds what one merge invocation takes within the device's loop limit;",
        maxSplits,
        `at most ${mergeCap}`,
      );
    if (o.source === 'paged')
      checkPlannedSize(
        ctx,
        'pages',
        [o.poolPages, pageLayout(o.pageSize, o.Hkv, o.D, o.Dv, o.kvDtype).pageBytes / 4],
        'u32',
      );
    checkPlannedSize(ctx, 'q', [o.maxQTokens, o.Hq, o.D], o.qDtype);
    checkPlannedSize(ctx, 'o', [o.maxQTokens, o.Hq, o.Dv], o.oDtype);
    if (maxSplits > 1) checkPlannedSize(ctx, 'workspace (partials)', [maxSplits, rowsCap, o.Dv + 1], 'f32');
    const plan = new BatchAttentionPlan(ctx, o, target, maxSplits, keysCap, rows, lanes);
    try {
      const constants = {
        SRC: o.source === 'paged' ? 0 : 1,
        KV_DT: kvDtypeCode(o.kvDtype),
        Q_DT: dtypeCode(o.qDtype),
        O_DT: dtypeCode(o.oDtype),
      };
      const bound = { work: maxSplits > 1, sink_logits: o.sinkLogit, seq_table: false };
      const sg = lanes > 1 && !tiled;
      plan.pipeline = await getPipeline(
        ctx,
        coreSpec(
          {
            D: o.D,
            Dv: o.Dv,
            rows,
            target,
            subgroups: sg,
            entry: sg ? 'main_cpu_sg' : tiled ? 'main_gpu_tile' : undefined,
          },
          lanes > 1 ? { ...constants, LANES: lanes } : constants,
          bound,
        ),
      );
      if (lanes > 1 && (tiled ? opts.tiles : opts.subgroups) !== true)
        plan.plainPipeline = await getPipeline(
          ctx,
          coreSpec({ D: o.D, Dv: o.Dv, rows, target, subgroups: sg }, constants, bound),
        );
      if (maxSplits > 1) plan.mergePipeline = await getMergePipeline(ctx, o.oDtype);
    } catch (e) {
      plan.dispose();
      throw e;
    }
    return plan;
  }

  /** Milliseconds spent compiling this plan's pipelines (0 for those that were cached). */
  get compileMs(): number {
    return this.pipeline.compileMs + (this.plainPipeline?.compileMs ?? 0);
  }

  /** The schedule last written (undefined before the first, or while a GPU schedule is in use). */
  get scheduled(): ScheduleInfo | undefined {
    return this.current < 0 || this.external ? undefined : this.slots[this.current]!.info;
  }

  /** The keys per part of a GPU-filled schedule: enough for the longest sequence the capacities allow. */
  private get gpuChunk(): number {
    const o = this.options;
    const maxKeys = o.maxKvLen;
    const want = Math.max(o.kvChunk ?? 256, Math.ceil(maxKeys / this.maxSplits));
    return Math.min(want, this.maxKeysPerPart, 0xffffffff);
  }

  /**
   * The word layout of a schedule buffer that an engine fills on the GPU itself (the same as the
   * plan's own slots), with the header values its dispatches are sized for.
   */
  get scheduleLayout(): ScheduleLayout {
    const f = this.offsets;
    return {
      words: f.words,
      header: [0, 0, this.maxSplits, this.gpuChunk, this.rowsCap],
      qoIndptr: f.qo,
      kvIndptr: f.kv,
      kvLastPageLen: f.last,
      kvIndices: f.idx,
    };
  }

  /**
   * Uses a schedule buffer that the engine fills on the GPU (layout: {@link scheduleLayout}) for
   * the runs encoded from now on, until the next `schedule()`. Nothing is read back: the plan
   * cannot validate the tables (the kernel stays within its bindings whatever they hold), so
   * dispatches are sized for the capacities, `q`, `o` and `lse` must hold `maxQTokens` rows (rows
   * of tokens past the step's totalQ are left unspecified when the step splits), ragged `k`/`v`
   * `maxKvTokens` rows, and ordering the buffer's writes before the runs is the engine's part.
   */
  useSchedule(buffer: GPUBuffer): void {
    this.assertUsable();
    const f = this.offsets;
    if (!buffer || typeof buffer.size !== 'number')
      fail('E_BUFFER', 'buffer', 'is not a GPUBuffer;', typeof buffer, 'a STORAGE buffer of scheduleLayout.words u32');
    if (buffer.size < f.words * 4)
      fail('E_BUFFER', 'buffer', 'is smaller than the schedule layout;', buffer.size, `at least ${f.words * 4} bytes`);
    if ((buffer.usage & GPUBufferUsageFlags.STORAGE) === 0)
      fail('E_BUFFER', 'buffer', 'lacks STORAGE usage;', buffer.usage, 'usage including STORAGE');
    const o = this.options;
    if (!this.external) {
      this.external = {
        buffer,
        merge: this.workspace(
          MERGE_PARAMS.size,
          'attention.mergeGpu',
          GPUBufferUsageFlags.UNIFORM | GPUBufferUsageFlags.COPY_DST,
        ),
        kvEnd: 0,
        usedEpoch: -2,
      };
      if (this.maxSplits > 1) {
        this.ctx.device.queue.writeBuffer(
          this.external.merge,
          0,
          MERGE_PARAMS.pack({ P: this.maxSplits, rows: this.rowsCap, D: o.Dv, p0: 0, carry: 0, out_state: 0, one: 1 }),
        );
      }
    }
    this.external.buffer = buffer;
    this.external.kvEnd = o.source === 'paged' ? o.maxPages : o.maxKvTokens;
    this.external.info = {
      batch: o.maxBatch,
      totalQ: o.maxQTokens,
      kvLens: [],
      parts: this.maxSplits,
      kvChunk: this.gpuChunk,
      slot: -1,
    };
  }

  /**
   * Writes one step's tables into the next slot of the plan's schedule ring (`queue.writeBuffer`,
   * no buffer created) and decides the split-K parts from the lengths. Validates everything first
   * (typed errors naming the argument; nothing is written on error). Runs encoded after this call
   * use this schedule; runs encoded before keep theirs, as long as fewer than `scheduleSlots`
   * schedules are written between two submits (else `E_STATE`: submit first).
   */
  schedule(s: BatchSchedule): ScheduleInfo {
    this.assertUsable();
    const o = this.options;
    if (!s || typeof s !== 'object')
      fail('E_ARG', 'schedule', 'is required;', s, '{ qoIndptr, kvIndptr, kvIndices, kvLastPageLen }');
    const qo = intArray(s.qoIndptr, 'qoIndptr');
    const kv = intArray(s.kvIndptr, 'kvIndptr');
    const B = qo.length - 1;
    if (B < 1 || B > o.maxBatch)
      fail(
        'E_SHAPE',
        'qoIndptr',
        `has ${qo.length} entries;`,
        qo.length,
        `B + 1 with 1 <= B <= maxBatch = ${o.maxBatch}`,
      );
    if (kv.length !== B + 1)
      fail('E_SHAPE', 'kvIndptr', `has ${kv.length} entries;`, kv.length, `B + 1 = ${B + 1} (as qoIndptr)`);
    monotone(qo, 'qoIndptr', o.maxQTokens, 'maxQTokens', true);
    const paged = o.source === 'paged';
    monotone(kv, 'kvIndptr', paged ? o.maxPages : o.maxKvTokens, paged ? 'maxPages' : 'maxKvTokens', false);
    const kvEnd = kv[B]!;
    const lens: number[] = [];
    let idx: ArrayLike<number> | undefined;
    let last: ArrayLike<number> | undefined;
    if (paged) {
      idx = intArray(s.kvIndices, 'kvIndices');
      last = intArray(s.kvLastPageLen, 'kvLastPageLen');
      if (idx.length < kvEnd)
        fail('E_SHAPE', 'kvIndices', `has ${idx.length} entries;`, idx.length, `at least kvIndptr[B] = ${kvEnd}`);
      if (last.length !== B) fail('E_SHAPE', 'kvLastPageLen', `has ${last.length} entries;`, last.length, `B = ${B}`);
      for (let i = kv[0]!; i < kvEnd; i++) {
        const x = idx[i]!;
        if (!(x >= 0 && x < o.poolPages))
          fail('E_ARG', `kvIndices[${i}]`, 'is not a page of the pool;', x, `0 <= slot < poolPages = ${o.poolPages}`);
      }
      for (let b = 0; b < B; b++) {
        const np = kv[b + 1]! - kv[b]!;
        const lp = last[b]!;
        if (np > 0 ? !(lp >= 1 && lp <= o.pageSize) : lp !== 0) {
          fail(
            'E_ARG',
            `kvLastPageLen[${b}]`,
            'does not fit its pages;',
            lp,
            np > 0 ? `1..pageSize = ${o.pageSize}` : '0 (the sequence has no pages)',
          );
        }
        lens.push(np > 0 ? (np - 1) * o.pageSize + lp : 0);
      }
    } else {
      for (let b = 0; b < B; b++) {
        lens.push(kv[b + 1]! - kv[b]!);
        if (lens[b]! > o.maxKvLen)
          fail(
            'E_LIMIT',
            `kvIndptr[${b + 1}]`,
            `gives sequence ${b} more keys than the plan's maxKvLen;`,
            lens[b],
            `at most ${o.maxKvLen}`,
          );
      }
    }
    if (o.causal && !o.earlyQueries) {
      for (let b = 0; b < B; b++) {
        const n = qo[b + 1]! - qo[b]!;
        if (n > lens[b]!)
          fail(
            'E_ARG',
            `qoIndptr[${b + 1}]`,
            `gives sequence ${b} more new queries than keys (causal, bottom-right);`,
            n,
            `at most its ${lens[b]} keys`,
          );
      }
    }
    const totalQ = qo[B]!;
    let maxLen = 0;
    for (let b = 0; b < B; b++) maxLen = Math.max(maxLen, lens[b]!);
    let chunk: number;
    if (o.kvChunk !== undefined) chunk = Math.min(o.kvChunk, this.maxKeysPerPart);
    else {
      // Split-K for parallelism only: a step with enough packs already (a long prefill) keeps each
      // sequence in as few parts as the loop cap allows (no partials, no merge).
      const packs = Math.floor((totalQ * (o.Hq / o.Hkv) + B * (this.rows - 1)) / this.rows) * o.Hkv;
      const want = Math.min(this.maxSplits, Math.max(1, Math.ceil(ATTENTION_PARALLEL_PACKS / Math.max(1, packs))));
      chunk = Math.min(this.maxKeysPerPart, Math.max(256, Math.ceil(maxLen / want)));
    }
    const parts = Math.max(1, Math.ceil(maxLen / chunk));
    if (parts > this.maxSplits)
      fail(
        'E_LIMIT',
        'kvIndptr',
        `gives a sequence of ${maxLen} keys: ${parts} parts of ${chunk};`,
        parts,
        `at most maxSplits = ${this.maxSplits} (plan with a larger maxSplits)`,
      );
    // The slot: the next in the ring, unless a run bound it since the last submit.
    const epoch = submitEpoch(this.ctx);
    const next = (this.current + 1) % this.slots.length;
    const slot = this.slots[next]!;
    if (slot.usedEpoch === epoch && epoch >= 0) {
      throw new TesseraError(
        'E_STATE',
        `BatchAttentionPlan.schedule: all ${this.slots.length} schedule slots are bound by runs not yet submitted; submit the encoder first (or plan with more scheduleSlots)`,
      );
    }
    // The plan's own host copy of a slot (writeBuffer copies it at the call): no allocation per step.
    const words = this.hostWords;
    words[0] = totalQ;
    words[1] = B;
    words[2] = parts;
    words[3] = Number.isFinite(chunk) ? chunk : 0xffffffff;
    words[4] = totalQ * o.Hq;
    for (let i = 0; i <= B; i++) {
      words[this.offsets.qo + i] = qo[i]!;
      words[this.offsets.kv + i] = kv[i]!;
    }
    if (paged) {
      for (let b = 0; b < B; b++) words[this.offsets.last + b] = last![b]!;
      for (let i = kv[0]!; i < kvEnd; i++) words[this.offsets.idx + i] = idx![i]!;
    }
    const used = paged ? this.offsets.idx + kvEnd : this.offsets.last + B;
    this.ctx.device.queue.writeBuffer(slot.buffer, 0, words.buffer, 0, used * 4);
    // The merge's uniform, where this slot's holds other values (decode steps keep parts and rows).
    if (parts > 1 && (slot.mergeParts !== parts || slot.mergeRows !== totalQ * o.Hq)) {
      this.ctx.device.queue.writeBuffer(
        slot.merge,
        0,
        MERGE_PARAMS.pack({ P: parts, rows: totalQ * o.Hq, D: o.Dv, p0: 0, carry: 0, out_state: 0, one: 1 }),
      );
      slot.mergeParts = parts;
      slot.mergeRows = totalQ * o.Hq;
    }
    const info: ScheduleInfo = { batch: B, totalQ, kvLens: lens, parts, kvChunk: chunk, slot: next };
    slot.info = info;
    slot.kvEnd = kvEnd;
    slot.usedEpoch = -2;
    this.current = next;
    this.external = undefined;
    return info;
  }

  /**
   * Makes the schedule written to ring slot `slot` (`ScheduleInfo.slot`) current again: runs
   * encoded from now on use it. For a plan that writes a fixed set of schedules once, one per slot,
   * and runs them in turn (dense prefill's query groups); a later `schedule()` writes the slot
   * after it. `E_ARG` naming `slot` for a slot never written.
   */
  select(slot: number): ScheduleInfo {
    this.assertUsable();
    const s = this.slots[slot];
    if (!Number.isInteger(slot) || !s?.info)
      fail('E_ARG', 'slot', 'is not a ring slot holding a schedule;', slot, `a slot returned by schedule()`);
    this.current = slot;
    this.external = undefined;
    return s.info;
  }

  /**
   * Encodes the attention of the current schedule into `encoder`: one dispatch (plus the merge
   * when the schedule split the keys). Creates no GPU buffer; bind groups are cached by the
   * buffers bound. Several runs in one encoder (layers) each read the schedule current when they
   * were encoded.
   */
  run(encoder: GPUCommandEncoder | GPUComputePassEncoder, t: BatchAttentionTensors): void {
    this.assertUsable();
    const o = this.options;
    if (this.current < 0 && !this.external)
      throw new TesseraError(
        'E_STATE',
        'BatchAttentionPlan.run: no schedule yet; call plan.schedule({ qoIndptr, kvIndptr, ... }) or plan.useSchedule(buffer) first',
      );
    const slot = this.external ?? this.slots[this.current]!;
    const info = slot.info!;
    if (!t || typeof t !== 'object') fail('E_ARG', 'tensors', 'is required;', t, '{ q, o, lse?, pages | k, v }');
    // The same q / o objects as the last run, unchanged, were validated then (shape, dtype, buffer
    // size, usage, binding size): only their row counts against this schedule are checked again.
    const qHit = this.qMemo.hit(t.q);
    const oHit = this.oMemo.hit(t.o);
    const q = qHit ? t.q : checkTensor(t.q, 'q', { rank: 3, shape: [-1, o.Hq, o.D], dtypes: [o.qDtype] });
    const out = oHit ? t.o : checkTensor(t.o, 'o', { rank: 3, shape: [-1, o.Hq, o.Dv], dtypes: [o.oDtype] });
    if (q.shape[0]! < info.totalQ)
      fail(
        'E_SHAPE',
        'q.shape[0]',
        'is smaller than the scheduled query tokens;',
        q.shape[0],
        `at least ${info.totalQ}`,
      );
    if (out.shape[0]! < info.totalQ)
      fail(
        'E_SHAPE',
        'o.shape[0]',
        'is smaller than the scheduled query tokens;',
        out.shape[0],
        `at least ${info.totalQ}`,
      );
    const lse =
      t.lse === undefined ? undefined : checkTensor(t.lse, 'lse', { rank: 2, shape: [-1, o.Hq], dtypes: ['f32'] });
    if (lse && lse.shape[0]! < info.totalQ)
      fail(
        'E_SHAPE',
        'lse.shape[0]',
        'is smaller than the scheduled query tokens;',
        lse.shape[0],
        `at least ${info.totalQ}`,
      );
    if (!qHit) checkBindingSize(this.ctx, q, 'q');
    if (!oHit) checkBindingSize(this.ctx, out, 'o');
    if (lse) checkBindingSize(this.ctx, lse, 'lse');
    let kr: BindingResource;
    let vr: BindingResource;
    if (o.source === 'paged') {
      const pages = t.pages as GPUBuffer; // checked below unless it passed before
      const need = o.poolPages * this.layout!.pageBytes;
      // A pool buffer checked before passes again (a GPUBuffer's size never changes; a destroyed
      // or foreign one is caught before run by the plan's buffer check).
      if (!this.poolsChecked.includes(pages)) {
        if (!pages || typeof pages.size !== 'number')
          fail('E_BUFFER', 'pages', 'is not a GPUBuffer;', typeof pages, 'the pool buffer');
        if (pages.size < need)
          fail(
            'E_BUFFER',
            'pages',
            'is smaller than the pool the plan was made for;',
            pages.size,
            `at least poolPages * pageBytes = ${need} bytes`,
          );
        if (need > this.ctx.limits.maxStorageBufferBindingSize)
          fail(
            'E_LIMIT',
            'pages',
            'is larger than one storage binding;',
            need,
            `at most ${this.ctx.limits.maxStorageBufferBindingSize} bytes`,
          );
        if (this.poolsChecked.length >= 16) this.poolsChecked.shift();
        this.poolsChecked.push(pages);
      }
      kr = vr = this.poolResource(pages, need);
    } else {
      const k = checkTensor(t.k, 'k', { rank: 3, shape: [-1, o.Hkv, o.D], dtypes: [o.kvDtype as FloatDType] });
      const v = checkTensor(t.v, 'v', {
        rank: 3,
        shape: [k.shape[0]!, o.Hkv, o.Dv],
        dtypes: [o.kvDtype as FloatDType],
      });
      if (k.shape[0]! < slot.kvEnd)
        fail(
          'E_SHAPE',
          'k.shape[0]',
          'is smaller than the scheduled keys;',
          k.shape[0],
          `at least kvIndptr[B] = ${slot.kvEnd}`,
        );
      checkBindingSize(this.ctx, k, 'k');
      checkBindingSize(this.ctx, v, 'v');
      kr = res16(k, 'k');
      vr = res16(v, 'v');
    }
    let sr: BindingResource | undefined;
    if (o.sinkLogit) {
      const s = checkTensor(t.sinkLogits, 'sinkLogits', { rank: 1, shape: [o.Hq], dtypes: ['f32'] });
      sr = res(s);
    } else if (t.sinkLogits !== undefined) {
      fail('E_ARG', 'sinkLogits', 'was given but the plan has no sinkLogit;', 'a tensor', 'plan with sinkLogit: true');
    }
    if (!qHit) this.qMemo.remember(q);
    if (!oHit) this.oMemo.remember(out);
    slot.usedEpoch = submitEpoch(this.ctx);
    if (info.totalQ === 0) return;
    const rows = info.totalQ * o.Hq;
    // One invocation (cpu) or workgroup (gpu) per part and pack: a sequence of n tokens owns at
    // least ceil(n * G / R) packs per KV head (attention.wgsl `pk_start`).
    // main_cpu_sg: a workgroup (one subgroup) per part and pack of lanes * rows rows, where the
    // step's sequences average enough rows to fill the lanes (else main_cpu: decode would idle 3 of 4).
    const G = o.Hq / o.Hkv;
    const fill = !this.plainPipeline || info.totalQ * G >= info.batch * this.lanes * this.rows;
    const lanes = this.lanes > 1 && fill ? this.lanes : 1;
    const pr = this.rows * lanes;
    const packs = Math.floor((info.totalQ * (o.Hq / o.Hkv) + info.batch * (pr - 1)) / pr);
    const invocations = packs * o.Hkv * info.parts;
    const groups = this.target === 'gpu' || lanes > 1 ? invocations : Math.ceil(invocations / WG);
    // The bind group, by name into the pipeline's preallocated binding slots (no resource objects,
    // no key strings; the group made for the same buffers, offsets and sizes before is reused).
    const oBytes = byteSize(out.shape, out.dtype);
    const lseBytes = lse ? byteSize(lse.shape, lse.dtype) : 0;
    const core = this.groupsOf(lanes === 1 && this.plainPipeline ? this.plainPipeline : this.pipeline);
    core
      .set('q', q.buffer, q.offset ?? 0, Math.max(4, byteSize(q.shape, q.dtype)))
      .set('k', kr.buffer, kr.offset ?? 0, kr.size ?? -1)
      .set('v', vr.buffer, vr.offset ?? 0, vr.size ?? -1)
      .set('sched', slot.buffer)
      .set('o', out.buffer, out.offset ?? 0, Math.max(4, oBytes))
      .set('params', this.params);
    if (lse) core.set('lse', lse.buffer, lse.offset ?? 0, Math.max(4, lseBytes));
    else core.set('lse', this.lseScratch);
    if (this.work) core.set('work', this.work);
    if (sr) core.set('sink_logits', sr.buffer, sr.offset ?? 0, sr.size ?? -1);
    this.dispatchInto(encoder, core, groups);
    if (info.parts > 1) {
      const merge = this.groupsOf(this.mergePipeline!);
      const partsBytes = info.parts * rows * o.Dv * 4;
      const lseOff = this.lseOffWords * 4;
      const lseParts = info.parts * rows * 4;
      merge
        .set('o_parts', this.work!, 0, partsBytes)
        .set('lse_parts', this.work!, lseOff, lseParts)
        .set('o_out', out.buffer, out.offset ?? 0, Math.max(4, oBytes))
        .set('params', slot.merge)
        // no carried state (params.carry = 0): the parts stand in, unread (as MergePlan does)
        .set('carry_o', this.work!, 0, partsBytes)
        .set('carry_s', this.work!, lseOff, lseParts);
      if (lse) merge.set('lse_out', lse.buffer, lse.offset ?? 0, Math.max(4, lseBytes));
      else merge.set('lse_out', this.lseScratch);
      this.dispatchInto(encoder, merge, rows);
    }
  }

  /** The pool's binding `{ buffer: pages, offset: 0, size }` (the last one is kept). */
  private poolResource(pages: GPUBuffer, size: number): BindingResource {
    const r = this.poolBinding;
    if (r && r.buffer === pages && r.size === size) return r;
    return (this.poolBinding = { buffer: pages, offset: 0, size });
  }

  /** The bind-group cache of one of the plan's pipelines (made on first use). */
  private groupsOf(p: CorePipeline | MergePipeline): GroupCache {
    let g = this.groups.get(p);
    if (!g) {
      // a group per slot at least (plans that keep a schedule per slot, as dense prefill's query groups)
      const limit = Math.max(256, 2 * this.slots.length);
      g = new GroupCache(this.ctx.device, p as unknown as ConstructorParameters<typeof GroupCache>[1], limit);
      this.groups.set(p, g);
    }
    return g;
  }

  /**
   * One dispatch of `count` workgroups with the group `g` holds the resources for: into the
   * caller's open compute pass, or into a pass of its own when given a command encoder.
   */
  private dispatchInto(encoder: GPUCommandEncoder | GPUComputePassEncoder, g: GroupCache, count: number): void {
    const made = g.created;
    const group = g.group();
    this.bindGroupsCreated += g.created - made;
    const own = typeof (encoder as GPUComputePassEncoder).dispatchWorkgroups !== 'function';
    const pass = own
      ? (encoder as GPUCommandEncoder).beginComputePass({ label: g.label })
      : (encoder as GPUComputePassEncoder);
    pass.setPipeline(g.pipeline);
    pass.setBindGroup(0, group);
    const max = this.ctx.limits.maxComputeWorkgroupsPerDimension;
    if (count <= max) pass.dispatchWorkgroups(Math.max(1, count), 1);
    else {
      const [x, y] = grid2d(this.ctx, count);
      pass.dispatchWorkgroups(x, y);
    }
    if (own) pass.end();
  }

  override dispose(): void {
    this.groups.clear();
    super.dispose();
  }
}

/** A K/V tensor as a binding of 16-byte words (the kernel reads K and V as `array<vec4<u32>>`). */
function res16(t: GpuTensor, argument: string): BindingResource {
  const r = res(t);
  const size = Math.ceil(r.size! / 16) * 16;
  if ((r.offset ?? 0) + size > t.buffer.size) {
    fail(
      'E_BUFFER',
      `${argument}.buffer`,
      "ends inside the tensor's last 16-byte word (K/V are read as 16-byte words);",
      t.buffer.size,
      `at least ${(r.offset ?? 0) + size} bytes`,
    );
  }
  return { ...r, size };
}

function intArray(a: unknown, argument: string): ArrayLike<number> {
  if (a === null || typeof a !== 'object' || typeof (a as ArrayLike<number>).length !== 'number') {
    fail('E_ARG', argument, 'is not an array of integers;', a === null ? 'null' : typeof a, 'an array or typed array');
  }
  const x = a as ArrayLike<number>;
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff)
      fail('E_ARG', `${argument}[${i}]`, 'is not a u32 integer;', v, 'an integer in 0..2^32-1');
  }
  return x;
}

function monotone(a: ArrayLike<number>, argument: string, cap: number, capName: string, zeroStart: boolean): void {
  if (zeroStart && a[0] !== 0) fail('E_ARG', `${argument}[0]`, 'does not start at 0;', a[0], '0');
  for (let i = 1; i < a.length; i++) {
    if (a[i]! < a[i - 1]!)
      fail('E_ARG', `${argument}[${i}]`, 'decreases;', a[i], `>= ${argument}[${i - 1}] = ${a[i - 1]}`);
  }
  const end = a[a.length - 1]!;
  if (end > cap)
    fail('E_LIMIT', `${argument}[${a.length - 1}]`, `exceeds the plan's ${capName};`, end, `at most ${cap}`);
}

function validate(opts: BatchAttentionOptions): Resolved {
  if (!opts || typeof opts !== 'object') fail('E_ARG', 'options', 'is required;', opts);
  const source = opts.source ?? 'paged';
  check(source === 'paged' || source === 'ragged', 'source', '"paged" or "ragged"', source);
  const maxBatch = checkInt(opts.maxBatch, 'maxBatch', { min: 1, max: 1 << 20 });
  const maxQTokens = checkInt(opts.maxQTokens, 'maxQTokens', { min: 1, max: 1 << 24 });
  const Hkv = checkInt(opts.Hkv, 'Hkv', { min: 1, max: 1024 });
  const Hq = checkInt(opts.Hq, 'Hq', { min: 1, max: 4096 });
  check(Hq % Hkv === 0, 'Hq', `a multiple of Hkv = ${Hkv}`, Hq, 'E_SHAPE');
  const D = checkInt(opts.D, 'D', { min: 4, max: 576 });
  const Dv = checkInt(opts.Dv ?? D, 'Dv', { min: 4, max: 512 });
  check(D % 4 === 0, 'D', 'a multiple of 4', D, 'E_UNSUPPORTED');
  check(Dv % 4 === 0, 'Dv', 'a multiple of 4', Dv, 'E_UNSUPPORTED');
  const qDtype = opts.qDtype ?? 'f32';
  check(isFloatDType(qDtype), 'qDtype', 'f32, f16 or bf16', qDtype, 'E_DTYPE');
  const oDtype = opts.oDtype ?? qDtype;
  check(isFloatDType(oDtype), 'oDtype', 'f32, f16 or bf16', oDtype, 'E_DTYPE');
  let maxPages = 0;
  let poolPages = 0;
  let maxKvTokens = 0;
  let maxKvLen = 0;
  let pageSize = 1;
  let kvDtype: KvDType;
  if (source === 'paged') {
    maxPages = checkInt(opts.maxPages, 'maxPages', { min: 1, max: 1 << 28 });
    poolPages = checkInt(opts.poolPages ?? maxPages, 'poolPages', { min: 1, max: 1 << 28 });
    pageSize = checkInt(opts.pageSize, 'pageSize', { min: 1, max: 4096 });
    kvDtype = opts.kvDtype ?? 'f16';
    check(KV_DTYPES.includes(kvDtype), 'kvDtype', KV_DTYPES.join(', '), kvDtype, 'E_DTYPE');
    maxKvLen = maxPages * pageSize;
  } else {
    maxKvTokens = checkInt(opts.maxKvTokens, 'maxKvTokens', { min: 1, max: 2 ** 31 });
    maxKvLen = checkInt(opts.maxKvLen ?? maxKvTokens, 'maxKvLen', { min: 1, max: maxKvTokens });
    kvDtype = opts.kvDtype ?? qDtype;
    check(
      kvDtype !== 'int8' && KV_DTYPES.includes(kvDtype),
      'kvDtype',
      'f32, f16 or bf16 (ragged K/V)',
      kvDtype,
      'E_DTYPE',
    );
  }
  const causal = opts.causal ?? true;
  check(typeof causal === 'boolean', 'causal', 'a boolean', causal);
  const window = checkInt(opts.window ?? 0, 'window', { min: 0, max: 0xffffffff });
  const sinks = checkInt(opts.sinks ?? 0, 'sinks', { min: 0, max: 0xffffffff });
  if (window > 0 && !causal) fail('E_ARG', 'window', 'needs causal attention;', window, 'causal: true (or window 0)');
  const sinkLogit = opts.sinkLogit ?? false;
  check(typeof sinkLogit === 'boolean', 'sinkLogit', 'a boolean', sinkLogit);
  const earlyQueries = opts.earlyQueries ?? false;
  check(typeof earlyQueries === 'boolean', 'earlyQueries', 'a boolean', earlyQueries);
  const scale = checkFinite(opts.scale ?? 1 / Math.sqrt(D), 'scale');
  const target = kernelTarget(opts);
  const maxSplits =
    opts.maxSplits === undefined ? undefined : checkInt(opts.maxSplits, 'maxSplits', { min: 1, max: 4096 });
  const kvChunk = opts.kvChunk === undefined ? undefined : checkInt(opts.kvChunk, 'kvChunk', { min: 1 });
  const scheduleSlots = checkInt(opts.scheduleSlots ?? 4, 'scheduleSlots', { min: 1, max: MAX_SCHEDULE_SLOTS });
  const rows = opts.rows === undefined ? undefined : checkInt(opts.rows, 'rows', { min: 1, max: 8 });
  if (rows !== undefined)
    check((ATTENTION_ROWS as readonly number[]).includes(rows), 'rows', '1, 2, 4 or 8', rows, 'E_UNSUPPORTED');
  if (opts.subgroups !== undefined)
    check(typeof opts.subgroups === 'boolean', 'subgroups', 'a boolean', opts.subgroups);
  return {
    source,
    maxBatch,
    maxQTokens,
    maxPages,
    poolPages,
    maxKvTokens,
    maxKvLen,
    Hq,
    Hkv,
    D,
    Dv,
    pageSize,
    kvDtype,
    qDtype,
    oDtype,
    causal,
    earlyQueries,
    window,
    sinks,
    sinkLogit,
    scale,
    target,
    maxSplits,
    kvChunk,
    scheduleSlots,
    rows,
  };
}

/**
 * Plans the attention core for capacities: compiles its pipelines and allocates its small tables
 * once. Then per step `plan.schedule(tables)`, per layer `plan.run(encoder, tensors)`.
 *
 * @example
 * const plan = await planBatchAttention(dev, { maxBatch: 4, maxQTokens: 4, maxPages: 64, Hq: 8, Hkv: 2, D: 64, pageSize: 16 });
 * plan.schedule({ qoIndptr: [0, 1, 2], kvIndptr: [0, 3, 5], kvIndices: [7, 2, 9, 4, 0], kvLastPageLen: [16, 5] });
 * plan.run(encoder, { q, o, lse, pages: pool });
 */
export function planBatchAttention(device: DeviceLike, opts: BatchAttentionOptions): Promise<BatchAttentionPlan> {
  return BatchAttentionPlan.create(device, opts);
}

/**
 * The attention core in one call: plan (capacities = this schedule), schedule, run, submit, wait;
 * GPU errors typed. For users outside an engine loop.
 *
 * @example
 * await batchAttention(dev, { q, o, pages: pool }, { Hq: 8, Hkv: 2, D: 64, pageSize: 16, qoIndptr: [0, 1], kvIndptr: [0, 3], kvIndices: [5, 1, 2], kvLastPageLen: [7] });
 */
export async function batchAttention(
  device: DeviceLike,
  t: BatchAttentionTensors,
  opts: Omit<BatchAttentionOptions, 'maxBatch' | 'maxQTokens' | 'maxPages' | 'maxKvTokens'> &
    Partial<BatchAttentionOptions> &
    BatchSchedule,
): Promise<void> {
  const ctx = ctxOf(device);
  if (!opts || typeof opts !== 'object') fail('E_ARG', 'options', 'is required;', opts);
  const qo = intArray(opts.qoIndptr, 'qoIndptr');
  const kv = intArray(opts.kvIndptr, 'kvIndptr');
  const B = Math.max(1, qo.length - 1);
  const plan = await planBatchAttention(ctx, {
    ...opts,
    maxBatch: opts.maxBatch ?? B,
    maxQTokens: opts.maxQTokens ?? Math.max(1, qo[qo.length - 1] ?? 1),
    ...((opts.source ?? 'paged') === 'paged'
      ? {
          maxPages: opts.maxPages ?? Math.max(1, kv[kv.length - 1] ?? 1),
          poolPages: opts.poolPages ?? (t?.pages ? poolPagesOf(t.pages, opts) : undefined),
        }
      : { maxKvTokens: opts.maxKvTokens ?? Math.max(1, kv[kv.length - 1] ?? 1) }),
  });
  try {
    plan.schedule(opts);
    await runOnce(ctx, plan, t, 'batchAttention');
  } finally {
    plan.dispose();
  }
}

function poolPagesOf(pages: GPUBuffer, o: Partial<BatchAttentionOptions>): number | undefined {
  if (typeof pages?.size !== 'number' || !o.pageSize || !o.Hkv || !o.D) return undefined;
  const L = pageLayout(o.pageSize, o.Hkv, o.D, o.Dv ?? o.D, o.kvDtype ?? 'f16');
  return Math.max(1, Math.floor(pages.size / L.pageBytes));
}
