/**
 * Append for engines: new K/V rows from the engine's own GPU buffers into pool pages through a
 * CSR page table (FlashInfer's `append_paged_kv_cache`), with fused RoPE on K and the Quest
 * min/max summaries of the touched pages updated on the GPU; and a RoPE plan for q.
 *
 * Compile once (`planAppend`, `planRope`: pipelines, the plan's tables, the cos/sin table),
 * schedule once per step (`plan.schedule(...)`: the step's rows and page table, one
 * `queue.writeBuffer` into the plan's own table buffer), run per layer
 * (`plan.run(encoder, ...)`: cached bind groups, no GPU buffer created, nothing awaited).
 */
import { TesseraError, check, checkInt, fail } from '../../src/errors.js';
import { ctxOf, submitEpoch, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { getPipeline, grid2d, wgslProgram, type PipelineSpec, type TablePipeline } from '../../src/gpu/pipeline.js';
import { GroupCache, bindingTable, optional, registerPasses, type VariantOf } from '../../src/gpu/bindings.js';
import { uniformLayout } from '../../src/gpu/uniforms.js';
import { KernelPlan, checkRawBuffer } from '../../src/plan.js';
import { TensorMemo } from '../../src/tensor-memo.js';
import { byteSize, checkTensor, dtypeCode, isFloatDType, type FloatDType, type GpuTensor } from '../../src/tensor.js';
import {
  KV_DTYPES,
  SUMMARIES_LAYOUT,
  kvDtypeCode,
  pageLayout,
  summariesBytes,
  type KvDType,
  type PageLayout,
} from '../attention/page.js';
import storageWgsl from '../../shaders/storage.wgsl.js';
import commonWgsl from './common.wgsl.js';
import appendWgsl from './append.wgsl.js';
import summarizeWgsl from './summarize.wgsl.js';
import int8Wgsl from './int8.wgsl.js';
import appendInt8Wgsl from './append_int8.wgsl.js';
import ropeWgsl from './rope.wgsl.js';
import { ropeCosSinTable, type RopeOptions, type RopeStyle, type AppendSchedule } from './reference.js';
import { GPUBufferUsageFlags } from '../../src/gpu/flags.js';

export const APPEND_PARAMS = uniformLayout('AppendParams', [
  ['rowB', 'u32'],
  ['rowP', 'u32'],
  ['iptr', 'u32'],
  ['idx', 'u32'],
  ['touch', 'u32'],
  ['pageWords', 'u32'],
  ['vOffWords', 'u32'],
  ['maxPages', 'u32'],
  ['scaleOffWords', 'u32'],
] as const);

const APPEND = wgslProgram('append/append', [storageWgsl, commonWgsl, APPEND_PARAMS.wgsl, appendWgsl]);
const APPEND_I8 = wgslProgram('append/append_int8', [
  storageWgsl,
  commonWgsl,
  int8Wgsl,
  APPEND_PARAMS.wgsl,
  appendInt8Wgsl,
]);
/** The Quest summary shader of touched pages; kernels/pool's truncate fix runs it too. */
export const SUMMARIZE = wgslProgram('append/summarize', [
  storageWgsl,
  commonWgsl,
  int8Wgsl,
  APPEND_PARAMS.wgsl,
  summarizeWgsl,
]);
const ROPE = wgslProgram('append/rope', [storageWgsl, commonWgsl, ropeWgsl]);
/** Bindings (src/gpu/bindings.ts). The append's cos/sin table only with RoPE; RoPE's x_in only out of place. */
const APPEND_BINDINGS = bindingTable('append/append', {
  k_in: 'read',
  v_in: 'read',
  pages: 'rw',
  tables: 'read',
  cossin: optional('read', 'array<vec2<f32>>'),
  params: 'uniform',
});
/** The summary pass; kernels/pool's truncate fix binds it too. */
export const SUMMARIZE_BINDINGS = bindingTable('append/summarize', {
  pages: 'read',
  tables: 'read',
  summ: 'rw',
  params: 'uniform',
});
const ROPE_BINDINGS = bindingTable('append/rope', {
  x_in: optional('read', 'array<u32>'),
  x_out: 'rw',
  tables: 'read',
  cossin: 'read',
});
const WG = 64;
/** Words before the tables' arrays: `[nnz, touched, 0, 0]`. */
const HEADER = 4;

/** Fused RoPE of an append plan (on K) or of a RoPE plan. */
export interface RopeSpec extends RopeOptions {
  /** Positions the cos/sin table covers: every position a schedule names must be below it. */
  maxPosition: number;
}

export interface AppendOptions {
  /** KV heads. */
  Hkv: number;
  /** Key head dim (a multiple of 4). */
  D: number;
  /** Value head dim (default D; a multiple of 4). */
  Dv?: number;
  /** Tokens per page (1..256). */
  pageSize: number;
  /**
   * Page storage dtype: f32, f16, bf16 or int8 (default f16). int8 quantises each new row with
   * its own scale (max |x| of the token's row per KV head, after RoPE on K), as the host codec.
   */
  pageDtype?: KvDType;
  /** Dtype of the engine's k and v rows (default f32). */
  inputDtype?: FloatDType;
  /** Pages in the pool buffer (its capacity); page ids are below it. */
  maxPages: number;
  /** Most rows one step appends (default 1 per sequence: `maxBatch`). */
  maxRows?: number;
  /** Most sequences in one step's page table. */
  maxBatch: number;
  /** Most entries of `kvIndices` (default `maxPages`). */
  maxTableEntries?: number;
  /** RoPE fused on K (omit: K is stored as given). */
  rope?: RopeSpec;
  /** Compile the Quest min/max summary pass (default true); runs given a `summaries` buffer update them. */
  summaries?: boolean;
}

export interface AppendTensors {
  /** `[rows >= nnz, Hkv, D]` in `inputDtype`: row i is the step's row i. */
  k: GpuTensor;
  /** `[rows >= nnz, Hkv, Dv]` in `inputDtype`. */
  v: GpuTensor;
  /** The pool: `maxPages` pages of `plan.layout.pageBytes` bytes. */
  pages: GPUBuffer;
  /**
   * minmax summaries `[maxPages, Hkv, 2, D]` f16: given, the touched pages' summaries are updated
   * (the plan must have `summaries: true`); omitted, no summary pass runs (a layer that does not
   * select pages).
   */
  summaries?: GPUBuffer;
}

/** The pipeline specs of an append plan: the append (RoPE's table bound only with rope), the summaries. */
function appendSpecs(o: {
  pageDtype: KvDType;
  Hkv: number;
  D: number;
  Dv: number;
  pageSize: number;
  inputDtype: FloatDType;
  summaries: boolean;
  rope?: { rotaryDim: number; style: string };
}) {
  const common = { WG, PAGE_DT: kvDtypeCode(o.pageDtype), HKV: o.Hkv, D: o.D, P: o.pageSize };
  const rows = {
    IN_DT: dtypeCode(o.inputDtype),
    DV: o.Dv,
    RD: o.rope?.rotaryDim ?? 0,
    STYLE: o.rope?.style === 'interleaved' ? 1 : 0,
  };
  const main: PipelineSpec<VariantOf<typeof APPEND_BINDINGS>> = {
    shader: o.pageDtype === 'int8' ? APPEND_I8 : APPEND,
    bindings: APPEND_BINDINGS.variant({ cossin: !!o.rope }),
    constants: o.pageDtype === 'int8' ? { WG, HKV: o.Hkv, D: o.D, P: o.pageSize, ...rows } : { ...common, ...rows },
  };
  const summarize: PipelineSpec<VariantOf<typeof SUMMARIZE_BINDINGS>> | undefined = o.summaries
    ? summarizeSpec(common)
    : undefined;
  return { main, summarize };
}

/** The summary pass's spec (kernels/pool runs it for truncate fixes). */
export function summarizeSpec(constants: Record<string, number>): PipelineSpec<VariantOf<typeof SUMMARIZE_BINDINGS>> {
  return { shader: SUMMARIZE, bindings: SUMMARIZE_BINDINGS.variant({}), constants };
}

function ropeSpec(
  o: { dtype: FloatDType; outDtype: FloatDType; H: number; D: number; rotaryDim: number; style: string },
  inPlace: boolean,
): PipelineSpec<VariantOf<typeof ROPE_BINDINGS>> {
  return {
    shader: ROPE,
    bindings: ROPE_BINDINGS.variant({ x_in: !inPlace }),
    constants: {
      WG,
      IN_DT: dtypeCode(o.dtype),
      OUT_DT: dtypeCode(o.outDtype),
      H: o.H,
      D: o.D,
      RD: o.rotaryDim,
      STYLE: o.style === 'interleaved' ? 1 : 0,
      IN_PLACE: inPlace ? 1 : 0,
    },
  };
}

registerPasses('append', () => {
  const base = { Hkv: 2, D: 64, Dv: 64, pageSize: 16, inputDtype: 'f32' as const, summaries: true };
  const rope = { rotaryDim: 64, style: 'half' };
  const out: PipelineSpec[] = [];
  for (const pageDtype of ['f16', 'int8'] as const)
    for (const r of [undefined, rope]) {
      const s = appendSpecs({ ...base, pageDtype, rope: r });
      out.push(s.main, ...(s.summarize ? [s.summarize] : []));
    }
  const ro = { dtype: 'f32' as const, outDtype: 'f32' as const, H: 2, D: 64, ...rope };
  out.push(ropeSpec(ro, false), ropeSpec(ro, true));
  return out;
});

/**
 * Refuses a schedule() that would overwrite tables a run encoded since the last `queue.submit`
 * still reads (that run would silently see the new step's tables).
 */
function checkNotInFlight(ctx: TesseraDevice, usedEpoch: number, what: string): void {
  const epoch = submitEpoch(ctx);
  if (epoch >= 0 && usedEpoch === epoch) {
    throw new TesseraError(
      'E_STATE',
      `${what}.schedule: a run encoded since the last queue.submit still reads this plan's tables; submit that encoder before scheduling the next step`,
    );
  }
}

/**
 * Appending a step's K/V rows into pages (with RoPE and page summaries).
 * Planned once by `planAppend`; `run` records it into your encoder and allocates
 * nothing; `dispose()` frees what the plan holds.
 *
 * @example
 * const plan = await planAppend(dev, { Hkv: 2, D: 64, pageSize: 16, maxPages: 64, maxBatch: 4 });
 * plan.schedule({ kvIndptr, kvIndices, batchIndices, positions }); // once per step
 * plan.run(encoder, { k, v, pages });                                // once per layer
 * plan.dispose();
 */
export class AppendPlan extends KernelPlan<AppendTensors> {
  /** What run writes (checked against the inputs by KernelPlan before encoding). */
  protected override get writes(): readonly string[] {
    return ['pages', 'summaries'];
  }
  readonly options: Readonly<Required<Omit<AppendOptions, 'rope'>> & { rope?: Required<RopeSpec> }>;
  /** Page geometry (the KV cache's layout, kernels/attention/page.ts). */
  readonly layout: PageLayout;
  private readonly main: TablePipeline<typeof APPEND_BINDINGS>;
  private readonly summarize?: TablePipeline<typeof SUMMARIZE_BINDINGS>;
  private readonly kMemo = new TensorMemo();
  private readonly vMemo = new TensorMemo();
  private readonly params: GPUBuffer;
  private readonly tables: GPUBuffer;
  /** The RoPE cos/sin table (with rope only). */
  private readonly cossin?: GPUBuffer;
  private readonly host: Uint32Array<ArrayBuffer>;
  private readonly off: { rowB: number; rowP: number; iptr: number; idx: number; touch: number };
  private readonly mainGroups: GroupCache<typeof APPEND_BINDINGS.entries>;
  private readonly sumGroups?: GroupCache<typeof SUMMARIZE_BINDINGS.entries>;
  /** Buffers run checked as `pages` / `summaries` (a GPUBuffer's size and usage never change). */
  private readonly pagesChecked: GPUBuffer[] = [];
  private readonly sumChecked: GPUBuffer[] = [];
  private stamp = 0;
  /** Per pool cell (page * P + row): the stamp of the last schedule that wrote it. */
  private readonly cellStamp: Uint32Array;
  /** Per pool page: the stamp of the last schedule that touched it, and its touched-list index. */
  private readonly pageStamp: Uint32Array;
  private readonly pageLen: Uint32Array;
  private nnz = -1;
  private touched = 0;
  /** Submit epoch of the last run (-2: none since the last schedule). */
  private usedEpoch = -2;

  private constructor(
    ctx: TesseraDevice,
    o: AppendPlan['options'],
    main: TablePipeline<typeof APPEND_BINDINGS>,
    summarize: TablePipeline<typeof SUMMARIZE_BINDINGS> | undefined,
  ) {
    super(ctx);
    this.options = o;
    this.layout = pageLayout(o.pageSize, o.Hkv, o.D, o.Dv, o.pageDtype);
    this.main = main;
    this.summarize = summarize;
    const rowB = HEADER;
    const rowP = rowB + o.maxRows;
    const iptr = rowP + o.maxRows;
    const idx = iptr + o.maxBatch + 1;
    const touch = idx + o.maxTableEntries;
    const words = touch + 2 * o.maxRows;
    this.off = { rowB, rowP, iptr, idx, touch };
    this.host = new Uint32Array(words);
    this.tables = this.workspace(
      words * 4,
      'append.tables',
      GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST,
    );
    this.params = this.uniform(APPEND_PARAMS, {
      ...this.off,
      pageWords: this.layout.pageBytes / 4,
      vOffWords: this.layout.vOffset / 4,
      maxPages: o.maxPages,
      scaleOffWords: this.layout.scaleOffset / 4,
    });
    const r = o.rope;
    if (r) {
      const table = ropeCosSinTable(r.maxPosition, r.rotaryDim, r.theta, r.scale);
      this.cossin = this.workspace(
        table.byteLength,
        'append.cossin',
        GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST,
      );
      ctx.device.queue.writeBuffer(this.cossin, 0, table);
    }
    this.mainGroups = new GroupCache(ctx.device, main);
    this.sumGroups = summarize && new GroupCache(ctx.device, summarize);
    this.cellStamp = new Uint32Array(o.maxPages * o.pageSize);
    this.pageStamp = new Uint32Array(o.maxPages);
    this.pageLen = new Uint32Array(o.maxPages);
  }

  /** @internal use {@link planAppend}. */
  static async create(device: DeviceLike, opts: AppendOptions): Promise<AppendPlan> {
    const ctx = ctxOf(device);
    const o = validateAppend(opts);
    const L = pageLayout(o.pageSize, o.Hkv, o.D, o.Dv, o.pageDtype);
    if (o.maxPages * L.pageBytes > ctx.limits.maxStorageBufferBindingSize) {
      fail(
        'E_LIMIT',
        'maxPages',
        'makes the pool larger than one storage binding;',
        o.maxPages,
        `at most ${Math.floor(ctx.limits.maxStorageBufferBindingSize / L.pageBytes)} pages of ${L.pageBytes} bytes`,
      );
    }
    if (o.rope && o.rope.maxPosition * o.rope.rotaryDim * 4 > ctx.limits.maxStorageBufferBindingSize) {
      fail(
        'E_LIMIT',
        'rope.maxPosition',
        'makes the cos/sin table larger than one storage binding;',
        o.rope.maxPosition,
      );
    }
    const specs = appendSpecs(o);
    const main = await getPipeline(ctx, specs.main);
    const summarize = specs.summarize ? await getPipeline(ctx, specs.summarize) : undefined;
    return new AppendPlan(ctx, o, main, summarize);
  }

  /** Rows in the current schedule (`-1` before the first). */
  get rows(): number {
    return this.nnz;
  }

  /**
   * Sets the step: its rows (`batchIndices`, `positions`) and the page table they are written
   * through (`kvIndptr`, `kvIndices`: every row's page must be listed). Validates everything first
   * (a bad schedule changes nothing), then writes the plan's table buffer once. Every run after it
   * (one per layer) uses this step's tables. Throws `E_STATE` while a run encoded since the last
   * `queue.submit` still reads the current tables (submit first).
   *
   * @example
   * plan.schedule({ kvIndptr, kvIndices, batchIndices: [0, 1], positions: [17, 3] });
   */
  schedule(s: AppendSchedule): void {
    this.assertUsable();
    checkNotInFlight(this.ctx, this.usedEpoch, 'AppendPlan');
    const o = this.options;
    if (!s || typeof s !== 'object')
      fail('E_ARG', 'schedule', 'is required;', s, '{ kvIndptr, kvIndices, batchIndices, positions }');
    for (const name of ['kvIndptr', 'kvIndices', 'batchIndices', 'positions'] as const) {
      const a = s[name];
      if (!a || typeof a.length !== 'number') fail('E_ARG', name, 'is not an array;', typeof a, 'an array of integers');
    }
    const B = s.kvIndptr.length - 1;
    if (B < 0 || B > o.maxBatch)
      fail(
        'E_LIMIT',
        'kvIndptr',
        'has more sequences than the plan holds;',
        B,
        `1..${o.maxBatch} sequences (length <= maxBatch + 1)`,
      );
    const nIdx = s.kvIndices.length;
    if (nIdx > o.maxTableEntries)
      fail(
        'E_LIMIT',
        'kvIndices',
        'has more entries than the plan holds;',
        nIdx,
        `at most maxTableEntries = ${o.maxTableEntries}`,
      );
    const n = s.positions.length;
    if (s.batchIndices.length !== n)
      fail('E_SHAPE', 'batchIndices', 'must have one entry per position;', s.batchIndices.length, `${n}`);
    if (n > o.maxRows)
      fail('E_LIMIT', 'positions', 'has more rows than the plan holds;', n, `at most maxRows = ${o.maxRows}`);
    const h = this.host;
    const { rowB, rowP, iptr, idx, touch } = this.off;
    // Validate into locals first: the host table is only written once everything is checked.
    let prev = 0;
    for (let b = 0; b <= B; b++) {
      const x = s.kvIndptr[b]!;
      if (!Number.isInteger(x) || x < prev || x > nIdx || (b === 0 && x !== 0))
        fail(
          'E_ARG',
          `kvIndptr[${b}]`,
          'is not a CSR offset;',
          x,
          `non-decreasing from 0 to kvIndices.length = ${nIdx}`,
        );
      prev = x;
    }
    if (s.kvIndptr[B] !== nIdx)
      fail('E_ARG', `kvIndptr[${B}]`, 'must equal kvIndices.length;', s.kvIndptr[B], `${nIdx}`);
    for (let i = 0; i < nIdx; i++) {
      const p = s.kvIndices[i]!;
      if (!Number.isInteger(p) || p < 0 || p >= o.maxPages)
        fail('E_ARG', `kvIndices[${i}]`, 'is not a page of the pool;', p, `0..${o.maxPages - 1}`);
    }
    const P = o.pageSize;
    const maxPos = o.rope?.maxPosition ?? Number.MAX_SAFE_INTEGER;
    // Each row's target (page, row of page): no two rows of a step may write the same cell, and
    // a page's summary covers its rows up to the last one written (stamps, no allocation).
    const gen = ++this.stamp;
    const cells = this.cellStamp;
    for (let i = 0; i < n; i++) {
      const b = s.batchIndices[i]!;
      if (!Number.isInteger(b) || b < 0 || b >= B)
        fail('E_ARG', `batchIndices[${i}]`, 'is not a sequence of the page table;', b, `0..${B - 1}`);
      const p = s.positions[i]!;
      if (!Number.isInteger(p) || p < 0 || p > 0xffffffff)
        fail('E_ARG', `positions[${i}]`, 'is not a position;', p, 'a non-negative integer');
      if (p >= maxPos)
        fail('E_LIMIT', `positions[${i}]`, 'is past the RoPE table;', p, `below rope.maxPosition = ${maxPos}`);
      const j = Math.floor(p / P);
      if (j >= s.kvIndptr[b + 1]! - s.kvIndptr[b]!)
        fail(
          'E_ARG',
          `positions[${i}]`,
          `is past the pages of sequence ${b};`,
          p,
          `below ${(s.kvIndptr[b + 1]! - s.kvIndptr[b]!) * P} (allocate its page first)`,
        );
      const cell = s.kvIndices[s.kvIndptr[b]! + j]! * P + (p - j * P);
      if (cells[cell] === gen)
        fail(
          'E_ARG',
          `positions[${i}]`,
          'writes a page row another row of this step writes too;',
          p,
          'each (page, row) once per step',
        );
      cells[cell] = gen;
    }
    // Write: rows, page table, and the touched pages with their rows used (max row + 1).
    const pageGen = this.pageStamp;
    const pageLen = this.pageLen;
    let k = 0;
    for (let i = 0; i < n; i++) {
      const b = s.batchIndices[i]!;
      const p = s.positions[i]!;
      h[rowB + i] = b;
      h[rowP + i] = p;
      const page = s.kvIndices[s.kvIndptr[b]! + Math.floor(p / P)]!;
      const len = (p % P) + 1;
      if (pageGen[page] !== gen) {
        pageGen[page] = gen;
        pageLen[page] = k;
        h[touch + 2 * k] = page;
        h[touch + 2 * k + 1] = len;
        k++;
      } else {
        const at = touch + 2 * pageLen[page]! + 1;
        if (len > h[at]!) h[at] = len;
      }
    }
    for (let b = 0; b <= B; b++) h[iptr + b] = s.kvIndptr[b]!;
    for (let i = 0; i < nIdx; i++) h[idx + i] = s.kvIndices[i]!;
    h[0] = n;
    h[1] = k;
    this.ctx.device.queue.writeBuffer(this.tables, 0, h, 0, touch + 2 * k);
    this.nnz = n;
    this.touched = k;
    this.usedEpoch = -2;
  }

  /**
   * Encodes the append of the scheduled rows from `k`, `v` into `pages` (one dispatch), then the
   * summaries of the touched pages (a second dispatch, when the plan has them), into `encoder`.
   * Creates no GPU buffer; bind groups are cached per set of buffers.
   */
  run(encoder: GPUCommandEncoder | GPUComputePassEncoder, t: AppendTensors): void {
    this.assertUsable();
    const o = this.options;
    if (this.nnz < 0) throw new TesseraError('E_STATE', 'AppendPlan.run: call schedule() first');
    // The same k / v objects as the last run, unchanged, were validated then: only their row
    // counts against this schedule are checked again.
    const kHit = this.kMemo.hit(t?.k);
    const vHit = this.vMemo.hit(t.v);
    const k = kHit ? t.k : checkTensor(t?.k, 'k', { rank: 3, shape: [-1, o.Hkv, o.D], dtypes: [o.inputDtype] });
    const v = vHit ? t.v : checkTensor(t.v, 'v', { rank: 3, shape: [-1, o.Hkv, o.Dv], dtypes: [o.inputDtype] });
    if (k.shape[0]! < this.nnz)
      fail('E_SHAPE', 'k.shape[0]', 'has fewer rows than the schedule;', k.shape[0], `>= ${this.nnz}`);
    if (v.shape[0]! < this.nnz)
      fail('E_SHAPE', 'v.shape[0]', 'has fewer rows than the schedule;', v.shape[0], `>= ${this.nnz}`);
    const poolBytes = o.maxPages * this.layout.pageBytes;
    const sumBytes = summariesBytes(o.maxPages, o.Hkv, o.D);
    // A pages / summaries buffer checked before passes again (size and usage never change; a
    // destroyed or foreign one is caught before run by the plan's buffer check).
    if (!this.pagesChecked.includes(t.pages)) {
      if (!t.pages || typeof t.pages.size !== 'number')
        fail('E_BUFFER', 'pages', 'is not a GPUBuffer;', typeof t.pages, 'a GPUBuffer');
      if (t.pages.size < poolBytes)
        fail('E_BUFFER', 'pages', 'is smaller than maxPages pages;', t.pages.size, `>= ${poolBytes} bytes`);
      if ((t.pages.usage & GPUBufferUsageFlags.STORAGE) === 0)
        fail('E_BUFFER', 'pages', 'lacks STORAGE usage;', t.pages.usage);
      remember(this.pagesChecked, t.pages);
    }
    if (t.summaries !== undefined) {
      if (!this.summarize)
        fail(
          'E_ARG',
          'summaries',
          'was given to a plan made with summaries: false;',
          'a GPUBuffer',
          'plan with summaries: true',
        );
      if (!this.sumChecked.includes(t.summaries)) {
        checkRawBuffer(t.summaries, 'summaries', sumBytes, SUMMARIES_LAYOUT);
        remember(this.sumChecked, t.summaries);
      }
      if (t.summaries === t.pages) fail('E_BUFFER', 'summaries', 'must not be the pages buffer;', 'the same buffer');
    }
    if (!kHit) this.kMemo.remember(k);
    if (!vHit) this.vMemo.remember(v);
    this.usedEpoch = submitEpoch(this.ctx);
    if (this.nnz === 0) return;
    const g = this.mainGroups
      .set('k_in', k.buffer, k.offset ?? 0, Math.max(4, byteSize(k.shape, k.dtype)))
      .set('v_in', v.buffer, v.offset ?? 0, Math.max(4, byteSize(v.shape, v.dtype)))
      .set('pages', t.pages, 0, poolBytes)
      .set('tables', this.tables)
      .set('params', this.params);
    if (this.cossin) g.set('cossin', this.cossin);
    const group = g.group();
    const pass = passOf(encoder, 'append');
    pass.setPipeline(this.main.pipeline);
    pass.setBindGroup(0, group);
    // int8: one invocation per (row, K/V, head) owns the row and its scale; else one per 4 elements.
    const units = o.pageDtype === 'int8' ? this.nnz * o.Hkv * 2 : this.nnz * o.Hkv * ((o.D + o.Dv) / 4);
    dispatch(this.ctx, pass, Math.ceil(units / WG));
    if (t.summaries && this.sumGroups && this.touched > 0) {
      const summarize = this.sumGroups
        .set('pages', t.pages, 0, poolBytes)
        .set('tables', this.tables)
        .set('summ', t.summaries, 0, sumBytes)
        .set('params', this.params)
        .group();
      pass.setPipeline(this.sumGroups.pipeline);
      pass.setBindGroup(0, summarize);
      dispatch(this.ctx, pass, Math.ceil((this.touched * o.Hkv * (o.D / 2)) / WG));
    }
    if (pass !== encoder) pass.end();
  }
}

/**
 * The compute pass to encode into: the caller's open pass (its dispatches then share it, saving a
 * pass per run), or a new pass of the caller's command encoder.
 */
export function passOf(target: GPUCommandEncoder | GPUComputePassEncoder, label: string): GPUComputePassEncoder {
  if (typeof (target as GPUComputePassEncoder).dispatchWorkgroups === 'function')
    return target as GPUComputePassEncoder;
  return (target as GPUCommandEncoder).beginComputePass({ label });
}

/** `count` workgroups (2D past the per-dimension limit), with no array for the common 1D case. */
function dispatch(ctx: TesseraDevice, pass: GPUComputePassEncoder, count: number): void {
  if (count <= ctx.limits.maxComputeWorkgroupsPerDimension) pass.dispatchWorkgroups(Math.max(1, count), 1);
  else {
    const [x, y] = grid2d(ctx, count);
    pass.dispatchWorkgroups(x, y);
  }
}

/** Adds `b` to a short list of checked buffers (the oldest leaves first). */
function remember(list: GPUBuffer[], b: GPUBuffer): void {
  if (list.length >= 16) list.shift();
  list.push(b);
}

function validateRope(r: RopeSpec, D: number, argument: string): Required<RopeSpec> {
  if (typeof r !== 'object' || r === null)
    fail('E_ARG', argument, 'is not an object;', r, '{ maxPosition, style?, theta?, scale?, rotaryDim? }');
  const style: RopeStyle = r.style ?? 'half';
  check(style === 'half' || style === 'interleaved', `${argument}.style`, '"half" or "interleaved"', style);
  const theta = r.theta ?? 10000;
  check(
    typeof theta === 'number' && Number.isFinite(theta) && theta > 1,
    `${argument}.theta`,
    'a finite base > 1',
    theta,
  );
  const scale = r.scale ?? 1;
  check(
    typeof scale === 'number' && Number.isFinite(scale) && scale > 0,
    `${argument}.scale`,
    'a finite scale > 0',
    scale,
  );
  const rotaryDim = checkInt(r.rotaryDim ?? D, `${argument}.rotaryDim`, { min: 4, max: D });
  check(rotaryDim % 4 === 0, `${argument}.rotaryDim`, 'a multiple of 4', rotaryDim, 'E_UNSUPPORTED');
  const maxPosition = checkInt(r.maxPosition, `${argument}.maxPosition`, { min: 1 });
  return { style, theta, scale, rotaryDim, maxPosition };
}

function validateAppend(opts: AppendOptions): AppendPlan['options'] {
  if (!opts || typeof opts !== 'object') fail('E_ARG', 'options', 'is required;', opts);
  const Hkv = checkInt(opts.Hkv, 'Hkv', { min: 1, max: 256 });
  const D = checkInt(opts.D, 'D', { min: 4, max: 1024 });
  const Dv = checkInt(opts.Dv ?? D, 'Dv', { min: 4, max: 1024 });
  check(D % 4 === 0, 'D', 'a multiple of 4', D, 'E_UNSUPPORTED');
  check(Dv % 4 === 0, 'Dv', 'a multiple of 4', Dv, 'E_UNSUPPORTED');
  const pageSize = checkInt(opts.pageSize, 'pageSize', { min: 1, max: 256 });
  const pageDtype = opts.pageDtype ?? 'f16';
  check(KV_DTYPES.includes(pageDtype), 'pageDtype', KV_DTYPES.join(', '), pageDtype, 'E_DTYPE');
  const inputDtype = opts.inputDtype ?? 'f32';
  check(isFloatDType(inputDtype), 'inputDtype', 'f32, f16 or bf16', inputDtype, 'E_DTYPE');
  const maxPages = checkInt(opts.maxPages, 'maxPages', { min: 1 });
  const maxBatch = checkInt(opts.maxBatch, 'maxBatch', { min: 1 });
  const maxRows = checkInt(opts.maxRows ?? maxBatch, 'maxRows', { min: 1 });
  const maxTableEntries = checkInt(opts.maxTableEntries ?? maxPages, 'maxTableEntries', { min: 1 });
  const rope = opts.rope === undefined ? undefined : validateRope(opts.rope, D, 'rope');
  const summaries = opts.summaries ?? true;
  check(typeof summaries === 'boolean', 'summaries', 'true or false', summaries);
  return { Hkv, D, Dv, pageSize, pageDtype, inputDtype, maxPages, maxRows, maxBatch, maxTableEntries, rope, summaries };
}

/**
 * Plans an append into a page pool.
 *
 * @example
 * const plan = await planAppend(dev, { Hkv: 2, D: 64, pageSize: 16, pageDtype: 'f32', maxPages: 64, maxBatch: 4,
 *   rope: { style: 'half', theta: 1e4, maxPosition: 4096 } });
 * plan.schedule({ kvIndptr, kvIndices, batchIndices, positions }); // once per step
 * plan.run(encoder, { k, v, pages, summaries });                   // once per layer
 */
export function planAppend(device: DeviceLike, opts: AppendOptions): Promise<AppendPlan> {
  return AppendPlan.create(device, opts);
}

export interface RopePlanOptions extends RopeSpec {
  /** Heads per row. */
  H: number;
  /** Head dim (a multiple of 4). */
  D: number;
  /** Dtype of x (default f32). */
  dtype?: FloatDType;
  /** Dtype of out (default `dtype`; in place needs the same dtype). */
  outDtype?: FloatDType;
  /** Most rows one step rotates. */
  maxRows: number;
}

export interface RopeTensors {
  /** `[rows >= scheduled, H, D]`. Rotated in place when `out` is omitted. */
  x: GpuTensor;
  /** `[rows >= scheduled, H, D]` in `outDtype` (out of place). */
  out?: GpuTensor;
}

/**
 * Rotary position embedding, in place.
 * Planned once by `planRope`; `run` records it into your encoder and allocates
 * nothing; `dispose()` frees what the plan holds.
 *
 * @example
 * const rope = await planRope(dev, { H: 8, D: 64, maxRows: 4, maxPosition: 4096, style: 'half' });
 * rope.schedule({ positions });
 * rope.run(encoder, { x: q });
 * rope.dispose();
 */
export class RopePlan extends KernelPlan<RopeTensors> {
  /** What run writes (checked against the inputs by KernelPlan before encoding). */
  protected override get writes(): readonly string[] {
    return ['out'];
  }
  private readonly xMemo = new TensorMemo();
  readonly options: Readonly<Required<RopePlanOptions>>;
  private readonly outOfPlace: TablePipeline<typeof ROPE_BINDINGS>;
  private readonly inPlace?: TablePipeline<typeof ROPE_BINDINGS>;
  private readonly tables: GPUBuffer;
  private readonly cossin: GPUBuffer;
  private readonly host: Uint32Array<ArrayBuffer>;
  private readonly outGroups: GroupCache<typeof ROPE_BINDINGS.entries>;
  private readonly inPlaceGroups?: GroupCache<typeof ROPE_BINDINGS.entries>;
  private nnz = -1;
  /** Submit epoch of the last run (-2: none since the last schedule). */
  private usedEpoch = -2;

  private constructor(
    ctx: TesseraDevice,
    o: Required<RopePlanOptions>,
    outOfPlace: TablePipeline<typeof ROPE_BINDINGS>,
    inPlace: TablePipeline<typeof ROPE_BINDINGS> | undefined,
  ) {
    super(ctx);
    this.options = o;
    this.outOfPlace = outOfPlace;
    this.inPlace = inPlace;
    this.host = new Uint32Array(1 + o.maxRows);
    this.tables = this.workspace(
      this.host.byteLength,
      'rope.tables',
      GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST,
    );
    const table = ropeCosSinTable(o.maxPosition, o.rotaryDim, o.theta, o.scale);
    this.cossin = this.workspace(
      table.byteLength,
      'rope.cossin',
      GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST,
    );
    ctx.device.queue.writeBuffer(this.cossin, 0, table);
    this.outGroups = new GroupCache(ctx.device, outOfPlace);
    this.inPlaceGroups = inPlace && new GroupCache(ctx.device, inPlace);
  }

  /** @internal use {@link planRope}. */
  static async create(device: DeviceLike, opts: RopePlanOptions): Promise<RopePlan> {
    const ctx = ctxOf(device);
    if (!opts || typeof opts !== 'object') fail('E_ARG', 'options', 'is required;', opts);
    const H = checkInt(opts.H, 'H', { min: 1 });
    const D = checkInt(opts.D, 'D', { min: 4, max: 1024 });
    check(D % 4 === 0, 'D', 'a multiple of 4', D, 'E_UNSUPPORTED');
    const dtype = opts.dtype ?? 'f32';
    check(isFloatDType(dtype), 'dtype', 'f32, f16 or bf16', dtype, 'E_DTYPE');
    const outDtype = opts.outDtype ?? dtype;
    check(isFloatDType(outDtype), 'outDtype', 'f32, f16 or bf16', outDtype, 'E_DTYPE');
    const maxRows = checkInt(opts.maxRows, 'maxRows', { min: 1 });
    const r = validateRope(opts, D, 'options');
    const o = { H, D, dtype, outDtype, maxRows, ...r };
    const outOfPlace = await getPipeline(ctx, ropeSpec(o, false));
    const inPlace = dtype === outDtype ? await getPipeline(ctx, ropeSpec(o, true)) : undefined;
    return new RopePlan(ctx, o, outOfPlace, inPlace);
  }

  /**
   * Sets the positions of the step's rows (row i of x sits at `positions[i]`). One
   * `queue.writeBuffer`; every later run uses them.
   */
  schedule(s: { positions: ArrayLike<number> }): void {
    this.assertUsable();
    checkNotInFlight(this.ctx, this.usedEpoch, 'RopePlan');
    const pos = s?.positions;
    if (!pos || typeof pos.length !== 'number')
      fail('E_ARG', 'positions', 'is not an array;', typeof pos, 'an array of positions');
    const n = pos.length;
    if (n > this.options.maxRows)
      fail(
        'E_LIMIT',
        'positions',
        'has more rows than the plan holds;',
        n,
        `at most maxRows = ${this.options.maxRows}`,
      );
    for (let i = 0; i < n; i++) {
      const p = pos[i]!;
      if (!Number.isInteger(p) || p < 0 || p >= this.options.maxPosition)
        fail(
          'E_ARG',
          `positions[${i}]`,
          'is not a position of the RoPE table;',
          p,
          `0..${this.options.maxPosition - 1}`,
        );
    }
    this.host[0] = n;
    for (let i = 0; i < n; i++) this.host[1 + i] = pos[i]!;
    this.ctx.device.queue.writeBuffer(this.tables, 0, this.host, 0, 1 + n);
    this.nnz = n;
    this.usedEpoch = -2;
  }

  /** Encodes the rotation of the scheduled rows of `x` (into `out`, or in place). */
  run(encoder: GPUCommandEncoder | GPUComputePassEncoder, t: RopeTensors): void {
    this.assertUsable();
    const o = this.options;
    if (this.nnz < 0) throw new TesseraError('E_STATE', 'RopePlan.run: call schedule() first');
    // The same x object as the last run, unchanged, was validated then (rows are checked again).
    const xHit = this.xMemo.hit(t?.x);
    const x = xHit ? t.x : checkTensor(t?.x, 'x', { rank: 3, shape: [-1, o.H, o.D], dtypes: [o.dtype] });
    if (!xHit) this.xMemo.remember(x);
    if (x.shape[0]! < this.nnz)
      fail('E_SHAPE', 'x.shape[0]', 'has fewer rows than the schedule;', x.shape[0], `>= ${this.nnz}`);
    let g: GroupCache<typeof ROPE_BINDINGS.entries>;
    let out: GpuTensor | undefined;
    if (t.out) {
      out = checkTensor(t.out, 'out', { rank: 3, shape: [-1, o.H, o.D], dtypes: [o.outDtype] });
      if (out.shape[0]! < this.nnz)
        fail('E_SHAPE', 'out.shape[0]', 'has fewer rows than the schedule;', out.shape[0], `>= ${this.nnz}`);
      if (out.buffer === x.buffer)
        fail('E_BUFFER', 'out', 'shares its buffer with x; omit out to rotate in place;', 'the same buffer');
      g = this.outGroups;
    } else {
      if (!this.inPlaceGroups)
        fail(
          'E_DTYPE',
          'out',
          'is required when outDtype differs from dtype;',
          undefined,
          `an out tensor of ${o.outDtype}`,
        );
      g = this.inPlaceGroups;
    }
    this.usedEpoch = submitEpoch(this.ctx);
    if (this.nnz === 0) return;
    const xBytes = Math.max(4, byteSize(x.shape, x.dtype));
    if (out) {
      g.set('x_in', x.buffer, x.offset ?? 0, xBytes);
      g.set('x_out', out.buffer, out.offset ?? 0, Math.max(4, byteSize(out.shape, out.dtype)));
    } else g.set('x_out', x.buffer, x.offset ?? 0, xBytes);
    const group = g.set('tables', this.tables).set('cossin', this.cossin).group();
    const pass = passOf(encoder, 'rope');
    pass.setPipeline(g.pipeline);
    pass.setBindGroup(0, group);
    dispatch(this.ctx, pass, Math.ceil((this.nnz * o.H * (o.D / 4)) / WG));
    if (pass !== encoder) pass.end();
  }
}

/**
 * Plans RoPE for rows of a query (or any `[rows, H, D]` tensor).
 *
 * @example
 * const rope = await planRope(dev, { H: 8, D: 64, maxRows: 4, maxPosition: 4096, style: 'half' });
 * rope.schedule({ positions });
 * rope.run(encoder, { x: q }); // in place
 */
export function planRope(device: DeviceLike, opts: RopePlanOptions): Promise<RopePlan> {
  return RopePlan.create(device, opts);
}
