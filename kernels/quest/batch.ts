/**
 * Batched Quest page selection on the GPU for engines: for a decode step of B sequences, one page
 * list per sequence chosen from the pool's min/max summaries (written by `kernels/append`), in CSR
 * form for the attention core. Head-shared: a page's score is Quest's bound maximised over all
 * query heads, so every head of a sequence attends the same pages (one list per sequence). Compile
 * once, schedule per step (the page table, one `writeBuffer`), run per layer into the caller's
 * encoder (cached bind group, no buffer created).
 */
import { TesseraError, check, checkInt, fail } from '../../src/errors.js';
import { ctxOf, submitEpoch, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { loopBudget, loops, planLoopLimit } from '../../src/gpu/segments.js';
import { getPipeline, grid2d, wgslProgram, type PipelineSpec, type TablePipeline } from '../../src/gpu/pipeline.js';
import { GroupCache, bindingTable, registerPasses } from '../../src/gpu/bindings.js';
import { SUMMARIES_LAYOUT, summariesBytes } from '../attention/page.js';
import { uniformLayout } from '../../src/gpu/uniforms.js';
import { KernelPlan, checkRawBuffer } from '../../src/plan.js';
import { TensorMemo } from '../../src/tensor-memo.js';
import { passOf } from '../append/append.js';
import { byteSize, checkTensor, f16BitsToF32, type GpuTensor } from '../../src/tensor.js';
import storageWgsl from '../../shaders/storage.wgsl.js';
import batchWgsl from './batch.wgsl.js';
import { QUEST_SLACK } from './score.js';
import { GPUBufferUsageFlags } from '../../src/gpu/flags.js';

export const QUEST_BATCH_PARAMS = uniformLayout('QuestBatchParams', [
  ['iptr', 'u32'],
  ['idx', 'u32'],
  ['optr', 'u32'],
  ['outBase', 'u32'],
] as const);

const PROGRAM = wgslProgram('quest/batch', [storageWgsl, QUEST_BATCH_PARAMS.wgsl, batchWgsl]);
const WG = 64;
const BATCH = bindingTable('quest/batch', {
  q: 'read',
  summ: 'read',
  tables: 'read',
  out: 'rw',
  params: 'uniform',
});
function batchSpec(o: {
  D: number;
  Hq: number;
  Hkv: number;
  maxPagesPerSeq: number;
  budgetPages: number;
  sinkPages: number;
}): PipelineSpec<ReturnType<typeof BATCH.variant>> {
  const { D, Hq, Hkv } = o;
  return {
    shader: PROGRAM,
    bindings: BATCH.variant({}),
    constants: { WG, D, HKV: Hkv, GROUP: Hq / Hkv, MAXN: o.maxPagesPerSeq, BUDGET: o.budgetPages, SINKS: o.sinkPages },
  };
}
registerPasses('quest/batch', () => [
  batchSpec({ D: 64, Hq: 4, Hkv: 2, maxPagesPerSeq: 16, budgetPages: 4, sinkPages: 1 }),
]);

/**
 * Loop iterations of one invocation of `batch.wgsl`, in the counting rules of src/gpu/segments.ts,
 * for sequences of at most `maxPages` pages: its share of the pages (`ceil(maxPages / 64)`), each
 * scored over the `Hkv` heads' groups of `Hq / Hkv` query heads and `D / 4` channel chunks, then
 * the ranking and the prefix loops over the pages, plus `QUEST_SLACK` (kernels/quest/score.ts).
 *
 * @example
 * questBatchLoopIterations(8, 2, 64, 64); // 293
 */
export function questBatchLoopIterations(Hq: number, Hkv: number, D: number, maxPages: number): number {
  const mine = Math.ceil(maxPages / WG);
  const score = loops.loop(Hkv, loops.loop(Hq / Hkv, loops.loop(D / 4)));
  return loops.loop(mine, score) + 2 * loops.loop(mine, loops.loop(maxPages)) + QUEST_SLACK;
}

export interface QuestBatchOptions {
  Hq: number;
  Hkv: number;
  /** Key head dim (a multiple of 4). */
  D: number;
  /** Pages selected per sequence, forced ones included (>= 2). */
  budgetPages: number;
  /** First pages always selected (default 1; at most budgetPages - 1 of them). */
  sinkPages?: number;
  /** Most sequences per step. */
  maxBatch: number;
  /** Most pages of one sequence (a workgroup array; at most 1024). */
  maxPagesPerSeq: number;
  /** Pages the summaries buffer holds (pool capacity). */
  maxPages: number;
  /**
   * Word offset of the selected ids in `selected` (default 0). With an attention plan's GPU
   * schedule (`useSchedule`), pass its `scheduleLayout.kvIndices`: the selection then writes the
   * attention's page table directly.
   */
  selectedOffset?: number;
  /**
   * Check the loop bound against this cap instead of the device's (lower only; an integer >= 256):
   * the E_LIMIT path Mesa's llvmpipe needs, on any adapter (src/gpu/segments.ts).
   */
  loopLimit?: number;
}

export interface QuestBatchTensors {
  /** `[rows >= B, Hq, D]` f32: row b is sequence b's decode query (RoPE applied). */
  q: GpuTensor;
  /** minmax summaries `[maxPages, Hkv, 2, D]` f16, indexed by pool page id. */
  summaries: GPUBuffer;
  /** Selected page ids out: sequence b's at word `selectedOffset + selIndptr[b]` (`selectedOffset + maxBatch * budgetPages` words at least). */
  selected: GPUBuffer;
}

/** The host side of a step's selection: the CSR of the selected lists. */
export interface QuestBatchStep {
  /** `[B + 1]` start of each sequence's selected pages in `selected`. */
  selIndptr: Int32Array;
  /** `[B]` tokens in each selected list's last page (its newest page, always selected). */
  selLastPageLen: Int32Array;
}

/**
 * Quest page selection for a batch of sequences on the GPU.
 * Planned once by `planQuestBatch`; `run` records it into your encoder and allocates
 * nothing; `dispose()` frees what the plan holds.
 *
 * @example
 * const sel = await planQuestBatch(dev, { Hq: 8, Hkv: 2, D: 64, budgetPages: 4, maxBatch: 4, maxPagesPerSeq: 32, maxPages: 128 });
 * sel.schedule(pool.tables(seqs));
 * sel.run(encoder, { q, summaries, selected });
 * sel.dispose();
 */
export class QuestBatchPlan extends KernelPlan<QuestBatchTensors> {
  /** What run writes (checked against the inputs by KernelPlan before encoding). */
  protected override get writes(): readonly string[] {
    return ['selected'];
  }
  readonly options: Readonly<Required<Omit<QuestBatchOptions, 'loopLimit'>>>;
  private readonly pipeline: TablePipeline<typeof BATCH>;
  private readonly tables: GPUBuffer;
  private readonly params: GPUBuffer;
  private readonly host: Uint32Array<ArrayBuffer>;
  private readonly off: { iptr: number; idx: number; optr: number };
  private readonly stepOut: QuestBatchStep;
  /** Bind groups by what they bind (GroupCache: no object or string per run). */
  private readonly groups: GroupCache<typeof BATCH.entries>;
  private B = -1;
  /** Submit epoch of the last run (-2: none since the last schedule). */
  private usedEpoch = -2;

  private constructor(
    ctx: TesseraDevice,
    o: Required<Omit<QuestBatchOptions, 'loopLimit'>>,
    pipeline: TablePipeline<typeof BATCH>,
  ) {
    super(ctx);
    this.options = o;
    this.pipeline = pipeline;
    this.groups = new GroupCache(ctx.device, pipeline);
    const iptr = 4;
    const idx = iptr + o.maxBatch + 1;
    const optr = idx + o.maxBatch * o.maxPagesPerSeq;
    this.off = { iptr, idx, optr };
    this.host = new Uint32Array(optr + o.maxBatch + 1);
    this.tables = this.workspace(
      this.host.byteLength,
      'quest.batch.tables',
      GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST,
    );
    this.params = this.uniform(QUEST_BATCH_PARAMS, { ...this.off, outBase: o.selectedOffset });
    this.stepOut = { selIndptr: new Int32Array(o.maxBatch + 1), selLastPageLen: new Int32Array(o.maxBatch) };
  }

  /** @internal use {@link planQuestBatch}. */
  static async create(device: DeviceLike, opts: QuestBatchOptions): Promise<QuestBatchPlan> {
    const ctx = ctxOf(device);
    if (!opts || typeof opts !== 'object') fail('E_ARG', 'options', 'is required;', opts);
    const Hkv = checkInt(opts.Hkv, 'Hkv', { min: 1 });
    const Hq = checkInt(opts.Hq, 'Hq', { min: 1 });
    check(Hq % Hkv === 0, 'Hq', `a multiple of Hkv = ${Hkv}`, Hq, 'E_SHAPE');
    const D = checkInt(opts.D, 'D', { min: 4, max: 1024 });
    check(D % 4 === 0, 'D', 'a multiple of 4', D, 'E_UNSUPPORTED');
    const budgetPages = checkInt(opts.budgetPages, 'budgetPages', { min: 2 });
    const sinkPages = checkInt(opts.sinkPages ?? 1, 'sinkPages', { min: 0 });
    const maxBatch = checkInt(opts.maxBatch, 'maxBatch', { min: 1 });
    const maxPagesPerSeq = checkInt(opts.maxPagesPerSeq, 'maxPagesPerSeq', { min: 1, max: 1024 });
    const maxPages = checkInt(opts.maxPages, 'maxPages', { min: 1 });
    const selectedOffset = checkInt(opts.selectedOffset ?? 0, 'selectedOffset', { min: 0 });
    const o = { Hq, Hkv, D, budgetPages, sinkPages, maxBatch, maxPagesPerSeq, maxPages, selectedOffset };
    const limit = planLoopLimit(ctx, opts.loopLimit);
    if (questBatchLoopIterations(Hq, Hkv, D, maxPagesPerSeq) > loopBudget(limit)) {
      fail(
        'E_LIMIT',
        'maxPagesPerSeq',
        "makes one selection invocation loop longer than the device's loop limit allows;",
        maxPagesPerSeq,
        `fewer pages or heads (loopLimit ${limit})`,
      );
    }
    const pipeline = await getPipeline(ctx, batchSpec(o));
    return new QuestBatchPlan(ctx, o, pipeline);
  }

  /**
   * Sets the step's page table (`kvIndptr`, `kvIndices`: every sequence's pages in token order,
   * pool page ids; `kvLastPageLen`). Returns the CSR of the selected lists (views, valid until the
   * next schedule): `selIndptr` and `selLastPageLen`, to schedule the attention over `selected`.
   */
  schedule(t: {
    kvIndptr: ArrayLike<number>;
    kvIndices: ArrayLike<number>;
    kvLastPageLen: ArrayLike<number>;
  }): QuestBatchStep {
    this.assertUsable();
    const epoch = submitEpoch(this.ctx);
    if (epoch >= 0 && this.usedEpoch === epoch)
      throw new TesseraError(
        'E_STATE',
        "QuestBatchPlan.schedule: a run encoded since the last queue.submit still reads this plan's tables; submit first",
      );
    const o = this.options;
    if (!t || !t.kvIndptr || !t.kvIndices || !t.kvLastPageLen)
      fail('E_ARG', 'tables', 'is required;', t, '{ kvIndptr, kvIndices, kvLastPageLen }');
    const B = t.kvIndptr.length - 1;
    if (B < 0 || B > o.maxBatch)
      fail('E_LIMIT', 'kvIndptr', 'has more sequences than the plan holds;', B, `at most maxBatch = ${o.maxBatch}`);
    if (t.kvLastPageLen.length !== B)
      fail('E_SHAPE', 'kvLastPageLen', 'must have one entry per sequence;', t.kvLastPageLen.length, `${B}`);
    if (t.kvIndptr[0] !== 0 || t.kvIndptr[B] !== t.kvIndices.length)
      fail(
        'E_ARG',
        'kvIndptr',
        'is not a CSR over kvIndices;',
        Array.from(t.kvIndptr).slice(0, 8),
        `from 0 to ${t.kvIndices.length}`,
      );
    for (let b = 0; b < B; b++) {
      const n = t.kvIndptr[b + 1]! - t.kvIndptr[b]!;
      if (!(n >= 1 && n <= o.maxPagesPerSeq))
        fail(
          'E_LIMIT',
          `kvIndptr[${b + 1}]`,
          `gives sequence ${b} a page count outside the plan;`,
          n,
          `1..maxPagesPerSeq = ${o.maxPagesPerSeq}`,
        );
    }
    for (let i = 0; i < t.kvIndices.length; i++) {
      const p = t.kvIndices[i]!;
      if (!Number.isInteger(p) || p < 0 || p >= o.maxPages)
        fail('E_ARG', `kvIndices[${i}]`, 'is not a page of the pool;', p, `0..${o.maxPages - 1}`);
    }
    const h = this.host;
    const { iptr, idx, optr } = this.off;
    const s = this.stepOut;
    h[0] = B;
    h[optr] = 0;
    s.selIndptr[0] = 0;
    for (let b = 0; b <= B; b++) h[iptr + b] = t.kvIndptr[b]!;
    for (let i = 0; i < t.kvIndices.length; i++) h[idx + i] = t.kvIndices[i]!;
    for (let b = 0; b < B; b++) {
      const n = t.kvIndptr[b + 1]! - t.kvIndptr[b]!;
      h[optr + b + 1] = h[optr + b]! + Math.min(n, o.budgetPages);
      s.selIndptr[b + 1] = h[optr + b + 1]!;
      s.selLastPageLen[b] = t.kvLastPageLen[b]!;
    }
    this.ctx.device.queue.writeBuffer(this.tables, 0, h);
    this.B = B;
    this.usedEpoch = -2;
    return { selIndptr: s.selIndptr.subarray(0, B + 1), selLastPageLen: s.selLastPageLen.subarray(0, B) };
  }

  /** Encodes the selection of every scheduled sequence (one dispatch). */
  run(encoder: GPUCommandEncoder | GPUComputePassEncoder, t: QuestBatchTensors): void {
    this.assertUsable();
    const o = this.options;
    if (this.B < 0) throw new TesseraError('E_STATE', 'QuestBatchPlan.run: call schedule() first');
    // The same q object as the last run, unchanged, was validated then (rows are checked again).
    const qHit = this.qMemo.hit(t?.q);
    const q = qHit ? t.q : checkTensor(t?.q, 'q', { rank: 3, shape: [-1, o.Hq, o.D], dtypes: ['f32'] });
    if (!qHit) this.qMemo.remember(q);
    if (q.shape[0]! < this.B)
      fail('E_SHAPE', 'q.shape[0]', 'has fewer rows than sequences;', q.shape[0], `>= ${this.B}`);
    const sumBytes = summariesBytes(o.maxPages, o.Hkv, o.D);
    const outBytes = (o.selectedOffset + o.maxBatch * o.budgetPages) * 4;
    // A buffer whose size passed before passes again (a GPUBuffer's size never changes).
    if (!t.summaries || t.summaries !== this.sizedSummaries) {
      checkRawBuffer(t.summaries, 'summaries', sumBytes, SUMMARIES_LAYOUT);
      this.sizedSummaries = t.summaries;
    }
    if (!t.selected || t.selected !== this.sizedSelected) {
      checkRawBuffer(t.selected, 'selected', outBytes, 'selectedOffset + maxBatch * budgetPages page ids');
      this.sizedSelected = t.selected;
    }
    this.usedEpoch = submitEpoch(this.ctx);
    if (this.B === 0) return;
    const group = this.groups
      .set('q', q.buffer, q.offset ?? 0, byteSize(q.shape, q.dtype))
      .set('summ', t.summaries, 0, sumBytes)
      .set('tables', this.tables)
      .set('out', t.selected, 0, outBytes)
      .set('params', this.params)
      .group();
    const pass = passOf(encoder, 'quest/batch');
    pass.setPipeline(this.pipeline.pipeline);
    pass.setBindGroup(0, group);
    const [x, y] = grid2d(this.ctx, this.B);
    pass.dispatchWorkgroups(x, y);
    if (pass !== encoder) pass.end();
  }

  private sizedSummaries?: GPUBuffer;
  private sizedSelected?: GPUBuffer;
  private readonly qMemo = new TensorMemo();
}

/**
 * Plans batched Quest selection.
 *
 * @example
 * const sel = await planQuestBatch(dev, { Hq: 8, Hkv: 2, D: 64, budgetPages: 4, maxBatch: 4, maxPagesPerSeq: 32, maxPages: 128 });
 * const { selIndptr, selLastPageLen } = sel.schedule(pool.tables(seqs));
 * sel.run(encoder, { q, summaries, selected });
 */
export function planQuestBatch(device: DeviceLike, opts: QuestBatchOptions): Promise<QuestBatchPlan> {
  return QuestBatchPlan.create(device, opts);
}

/**
 * Float64 reference of {@link QuestBatchPlan}'s selection from the f16 summaries (host bits,
 * `[pages, Hkv, 2, D]`): per sequence the selected page ids in page order, and the margin between
 * the last selected and the first unselected free score (near-ties below f32 rounding may differ).
 */
export function questBatchReference(
  q: ArrayLike<number>,
  minmax: Uint16Array,
  kvIndptr: ArrayLike<number>,
  kvIndices: ArrayLike<number>,
  o: { Hq: number; Hkv: number; D: number; budgetPages: number; sinkPages?: number },
): { lists: number[][]; margin: number } {
  const { Hq, Hkv, D, budgetPages } = o;
  const group = Hq / Hkv;
  const lists: number[][] = [];
  let margin = Infinity;
  for (let b = 0; b + 1 < kvIndptr.length; b++) {
    const base = kvIndptr[b]!;
    const n = kvIndptr[b + 1]! - base;
    const ids = Array.from({ length: n }, (_, i) => kvIndices[base + i]!);
    if (n <= budgetPages) {
      lists.push(ids);
      continue;
    }
    const sinks = Math.min(o.sinkPages ?? 1, n, budgetPages - 1);
    const score = (page: number) => {
      let best = -Infinity;
      for (let h = 0; h < Hkv; h++) {
        for (let g = 0; g < group; g++) {
          let s = 0;
          for (let d = 0; d < D; d++) {
            const qq = q[((b * Hkv + h) * group + g) * D + d]!;
            const mn = f16BitsToF32(minmax[(page * Hkv + h) * 2 * D + d]!);
            const mx = f16BitsToF32(minmax[(page * Hkv + h) * 2 * D + D + d]!);
            s += Math.max(qq * mx, qq * mn);
          }
          best = Math.max(best, s);
        }
      }
      return best;
    };
    const free: { i: number; s: number }[] = [];
    for (let i = sinks; i < n - 1; i++) free.push({ i, s: score(ids[i]!) });
    free.sort((a, c) => c.s - a.s || a.i - c.i);
    const k = budgetPages - sinks - 1;
    if (k < free.length) margin = Math.min(margin, free[k - 1] ? free[k - 1]!.s - free[k]!.s : Infinity);
    const take = new Set([...Array.from({ length: sinks }, (_, i) => i), n - 1, ...free.slice(0, k).map((x) => x.i)]);
    lists.push(ids.filter((_, i) => take.has(i)));
  }
  return { lists, margin };
}
