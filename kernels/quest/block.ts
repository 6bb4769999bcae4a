/**
 * Quest's page bound lifted to blocks of queries (sparse prefill): one score per (query block, KV
 * head, page) from the block's query box (per channel min and max over the block's rows and the KV
 * head's query heads) and the page's key min/max (or mean), an upper bound of
 * `max_{q in block} q . k` over the page's keys. One pass over D per page and block, where
 * per-query scoring (`score.ts` with the block's rows as a group) costs one per query row: a
 * 64-query block scores about 16x (quest) to 32x (mean) faster at one query head per KV head.
 * The bound is looser than the max of the per-query bounds (it is at least that max): the caller
 * measures selection recall against per-query scoring (`demo prefill`).
 */
import { TesseraError, check, checkInt, fail } from '../../src/errors.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { loopBudget, loops, planLoopLimit } from '../../src/gpu/segments.js';
import { getPipeline, wgslProgram, type PipelineSpec, type TablePipeline } from '../../src/gpu/pipeline.js';
import { bindingTable, optional, registerPasses } from '../../src/gpu/bindings.js';
import { UniformRing } from '../../src/gpu/ring.js';
import { uniformLayout } from '../../src/gpu/uniforms.js';
import { KernelPlan, checkBindingSize, res } from '../../src/plan.js';
import { checkTensor, type GpuTensor } from '../../src/tensor.js';
import storageWgsl from '../../shaders/storage.wgsl.js';
import boxWgsl from './block-box.wgsl.js';
import scoreWgsl from './block-score.wgsl.js';
import { GPUBufferUsageFlags } from '../../src/gpu/flags.js';
import { callRange, checkListAndSummaries, QUEST_SLACK, type QuestScoreMode } from './score.js';

export const QUEST_BLOCK_PARAMS = uniformLayout('QuestBlockParams', [
  ['n', 'u32'],
  ['first', 'u32'],
  ['count', 'u32'],
  ['Hkv', 'u32'],
  ['group', 'u32'],
  ['B', 'u32'],
  ['blocks', 'u32'],
  ['chunkFirst', 'u32'],
  ['chunkPages', 'u32'],
  ['forcedLo', 'u32'],
  ['forcedHi', 'u32'],
] as const);

export const QUEST_BOX_PROGRAM = wgslProgram('quest/block-box', [storageWgsl, QUEST_BLOCK_PARAMS.wgsl, boxWgsl]);
const SCORE = wgslProgram('quest/block-score', [storageWgsl, QUEST_BLOCK_PARAMS.wgsl, scoreWgsl]);
const WG = 64;
/** Bindings (src/gpu/bindings.ts); summ4 (the summaries as 16-byte words) only where VEC. */
const BOX_BINDINGS = bindingTable('quest/block-box', { q: 'read', box: 'rw', params: 'uniform' });
const SCORE_BINDINGS = bindingTable('quest/block-score', {
  box: 'read',
  summ: 'read',
  list: 'read',
  scores: 'rw',
  params: 'uniform',
  summ4: optional('read', 'array<vec4<u32>>'),
});
/** The 16-byte summary loads: D a multiple of 8, min/max summaries. */
function vecLoads(D: number, mode: QuestScoreMode): boolean {
  return D % 8 === 0 && mode === 'quest';
}
function blockSpecs(D: number, mode: QuestScoreMode) {
  const vec = vecLoads(D, mode);
  return {
    box: { shader: QUEST_BOX_PROGRAM, bindings: BOX_BINDINGS.variant({}), constants: { WG, D } },
    score: {
      shader: SCORE,
      bindings: SCORE_BINDINGS.variant({ summ4: vec }),
      constants: { WG, D, MODE: mode === 'quest' ? 0 : 1, VEC: vec ? 1 : 0 },
    },
  } satisfies Record<string, PipelineSpec>;
}
registerPasses('quest/block', () => [
  ...Object.values(blockSpecs(64, 'quest')),
  ...Object.values(blockSpecs(64, 'mean')),
]);

/**
 * Loop iterations one invocation runs, in the counting rules of src/gpu/segments.ts, the larger of
 * the two kernels: the box loops over the block's `B` rows and the group's query heads; a page
 * score over D / 4 channel chunks; plus `QUEST_SLACK` (kernels/quest/score.ts) for the early
 * returns and the compiler.
 *
 * @example
 * questBlockLoopIterations(64, 1, 128); // 201
 */
export function questBlockLoopIterations(B: number, group: number, D: number): number {
  return Math.max(loops.loop(B, loops.loop(group)), loops.loop(D / 4)) + QUEST_SLACK;
}

export interface QuestBlockOptions {
  Hq: number;
  Hkv: number;
  /** Key head dim (a multiple of 4, <= 256). */
  D: number;
  /** Query rows per block. */
  blockSize: number;
  /** Most blocks one run scores (sizes the box workspace). */
  maxBlocks: number;
  /** `quest` (min/max, default) or `mean` (MoBA's mean-key gate). */
  mode?: QuestScoreMode;
  /** Uniform slots (dispatches per command encoder; default 8). */
  maxCalls?: number;
  /** Check the loop bound against this cap (lower than the device's only; an integer >= 256). Default: the device's. */
  loopLimit?: number;
}

export interface QuestBlockCall {
  /** List indices this dispatch scores: `[first, first + count)` (default all). */
  first?: number;
  count?: number;
  /** First page id held by the summary buffer, and how many it holds. */
  chunkFirst: number;
  chunkPages: number;
  /** List indices < forcedLo or >= forcedHi are forced (scored -inf; the caller adds them). */
  forcedLo: number;
  forcedHi: number;
}

export interface QuestBlockTensors {
  /**
   * `[blocks * blockSize, Hq, D]` f32: the blocks' queries (pad a last partial block with copies
   * of a row: a copy never widens the box). Omit it to reuse the box the previous run computed
   * (the same blocks, another summary buffer), encoded earlier.
   */
  q?: GpuTensor;
  /** A summary buffer (`minmax` for quest, `mean` for mean) holding pages [chunkFirst, chunkFirst + chunkPages). */
  summaries: GPUBuffer;
  /** `[n]` u32 page ids. */
  list: GPUBuffer;
  /** `[blocks * Hkv, n]` f32 out (row `b * Hkv + h`). */
  scores: GpuTensor;
  calls: readonly QuestBlockCall[];
}

export class QuestBlockPlan extends KernelPlan<QuestBlockTensors> {
  protected override get writes(): readonly string[] {
    return ['scores'];
  }
  readonly options: Required<Omit<QuestBlockOptions, 'loopLimit'>>;
  /** `[maxBlocks, Hkv, 2, D]` f32: the last run's query boxes. */
  readonly box: GPUBuffer;
  private readonly boxPipe: TablePipeline<typeof BOX_BINDINGS>;
  private readonly scorePipe: TablePipeline<typeof SCORE_BINDINGS>;
  private readonly ring: UniformRing<(typeof QUEST_BLOCK_PARAMS.fields)[number][0]>;
  private boxBlocks = 0;

  private constructor(
    ctx: TesseraDevice,
    o: Required<Omit<QuestBlockOptions, 'loopLimit'>>,
    boxPipe: TablePipeline<typeof BOX_BINDINGS>,
    scorePipe: TablePipeline<typeof SCORE_BINDINGS>,
  ) {
    super(ctx);
    this.options = o;
    this.boxPipe = boxPipe;
    this.scorePipe = scorePipe;
    this.ring = new UniformRing(ctx, QUEST_BLOCK_PARAMS, o.maxCalls, 'QuestBlockPlan', (bytes) =>
      this.workspace(bytes, 'questBlock.params', GPUBufferUsageFlags.UNIFORM | GPUBufferUsageFlags.COPY_DST),
    );
    this.box = this.workspace(o.maxBlocks * o.Hkv * 2 * o.D * 4, 'questBlock.box');
  }

  /** @internal use {@link planQuestBlock}. */
  static async create(device: DeviceLike, opts: QuestBlockOptions): Promise<QuestBlockPlan> {
    const ctx = ctxOf(device);
    if (!opts || typeof opts !== 'object') fail('E_ARG', 'options', 'is required;', opts);
    const Hkv = checkInt(opts.Hkv, 'Hkv', { min: 1 });
    const Hq = checkInt(opts.Hq, 'Hq', { min: 1 });
    check(Hq % Hkv === 0, 'Hq', `a multiple of Hkv = ${Hkv}`, Hq, 'E_SHAPE');
    const D = checkInt(opts.D, 'D', { min: 4, max: 256 });
    check(D % 4 === 0, 'D', 'a multiple of 4', D, 'E_UNSUPPORTED');
    const blockSize = checkInt(opts.blockSize, 'blockSize', { min: 1 });
    const maxBlocks = checkInt(opts.maxBlocks, 'maxBlocks', { min: 1 });
    const mode = opts.mode ?? 'quest';
    check(mode === 'quest' || mode === 'mean', 'mode', '"quest" or "mean"', mode);
    const maxCalls = checkInt(opts.maxCalls ?? 8, 'maxCalls', { min: 2 });
    const limit = planLoopLimit(ctx, opts.loopLimit);
    if (questBlockLoopIterations(blockSize, Hq / Hkv, D) > loopBudget(limit)) {
      fail(
        'E_LIMIT',
        'blockSize',
        "gives one query box more rows x query heads than the device's loop limit allows;",
        blockSize,
        `blockSize * (Hq / Hkv + 2) within 90% of loopLimit ${limit}`,
      );
    }
    const boxBytes = maxBlocks * Hkv * 2 * D * 4;
    if (boxBytes > Math.min(ctx.limits.maxStorageBufferBindingSize, ctx.limits.maxBufferSize))
      fail('E_LIMIT', 'maxBlocks', 'needs a query-box buffer larger than the device binds;', maxBlocks);
    const o = { Hq, Hkv, D, blockSize, maxBlocks, mode, maxCalls };
    const [boxPipe, scorePipe] = await Promise.all([
      getPipeline(ctx, blockSpecs(D, mode).box),
      getPipeline(ctx, blockSpecs(D, mode).score),
    ]);
    return new QuestBlockPlan(ctx, o, boxPipe, scorePipe);
  }

  private grid(invocations: number): [number, number] {
    const groups = Math.ceil(invocations / WG);
    const max = this.ctx.limits.maxComputeWorkgroupsPerDimension;
    if (Math.ceil(groups / max) > max)
      throw new TesseraError('E_LIMIT', `quest block score: ${invocations} invocations exceed the dispatch limit`, {
        argument: 'scores',
      });
    const x = Math.min(groups, max);
    return [x, Math.ceil(groups / x)];
  }

  /** Encodes the box of `q`'s blocks (when given), then one score dispatch per call. */
  run(encoder: GPUCommandEncoder, t: QuestBlockTensors): void {
    this.assertUsable();
    const o = this.options;
    const B = o.blockSize;
    const scores = checkTensor(t.scores, 'scores', { rank: 2, shape: [-1, -1], dtypes: ['f32'] });
    checkBindingSize(this.ctx, scores, 'scores');
    const n = scores.shape[1]!;
    let blocks = this.boxBlocks;
    let q: GpuTensor | undefined;
    if (t.q !== undefined) {
      q = checkTensor(t.q, 'q', { rank: 3, shape: [-1, o.Hq, o.D], dtypes: ['f32'] });
      const rows = q.shape[0]!;
      check(rows > 0 && rows % B === 0, 'q', `whole blocks of blockSize = ${B} rows`, rows, 'E_SHAPE');
      blocks = rows / B;
      if (blocks > o.maxBlocks) fail('E_SHAPE', 'q', `holds more blocks than maxBlocks = ${o.maxBlocks};`, blocks);
    } else if (blocks === 0) {
      fail('E_ARG', 'q', 'is required on the first run (no query box yet);', 'undefined');
    }
    if (scores.shape[0] !== blocks * o.Hkv)
      fail('E_SHAPE', 'scores', `needs blocks x Hkv = ${blocks * o.Hkv} rows;`, scores.shape[0]);
    check(Array.isArray(t.calls), 'calls', 'an array of calls', typeof t.calls);
    checkListAndSummaries(t.list, t.summaries, n);
    // Validate every call before encoding any.
    const ranges = t.calls.map((c) => {
      const { first, count } = callRange(c, n);
      for (const k of ['chunkFirst', 'chunkPages', 'forcedLo', 'forcedHi'] as const)
        checkInt(c[k], `calls.${k}`, { min: 0 });
      return { first, count, grid: count > 0 ? this.grid(blocks * o.Hkv * count) : ([0, 0] as [number, number]) };
    });
    const boxGrid = q ? this.grid(blocks * o.Hkv * (o.D / 4)) : undefined;
    const slots = (q ? 1 : 0) + ranges.filter((r) => r.count > 0).length;
    this.ring.claim(encoder, slots);
    const base = { n, Hkv: o.Hkv, group: o.Hq / o.Hkv, B, blocks };
    if (q) {
      const u = this.ring.write({
        ...base,
        first: 0,
        count: 0,
        chunkFirst: 0,
        chunkPages: 0,
        forcedLo: 0,
        forcedHi: 0,
      });
      this.dispatch(
        encoder,
        this.boxPipe,
        { q: res(q), box: { buffer: this.box, size: blocks * o.Hkv * 2 * o.D * 4 }, params: u },
        boxGrid!,
      );
      this.boxBlocks = blocks;
    }
    t.calls.forEach((c, i) => {
      const r = ranges[i]!;
      if (r.count === 0) return;
      const u = this.ring.write({
        ...base,
        first: r.first,
        count: r.count,
        chunkFirst: c.chunkFirst,
        chunkPages: c.chunkPages,
        forcedLo: c.forcedLo,
        forcedHi: c.forcedHi,
      });
      this.dispatch(
        encoder,
        this.scorePipe,
        {
          box: { buffer: this.box, size: blocks * o.Hkv * 2 * o.D * 4 },
          summ: { buffer: t.summaries },
          list: { buffer: t.list, size: Math.max(4, n * 4) },
          scores: res(scores),
          params: u,
          ...(vecLoads(o.D, o.mode) ? { summ4: { buffer: t.summaries } } : {}),
        },
        r.grid,
      );
    });
  }
}

/**
 * Plans block-bound page scoring.
 *
 * @example
 * const plan = await planQuestBlock(dev, { Hq: 8, Hkv: 2, D: 128, blockSize: 64, maxBlocks: 64 });
 * plan.run(encoder, { q, summaries: cache.minmaxGpu[0], list, scores, calls: [{ chunkFirst: 0, chunkPages: n, forcedLo: 1, forcedHi: n }] });
 */
export function planQuestBlock(device: DeviceLike, opts: QuestBlockOptions): Promise<QuestBlockPlan> {
  return QuestBlockPlan.create(device, opts);
}
