/**
 * Quest page scores (and MoBA's mean-key gate) from the KV cache's GPU summaries: one score per
 * (KV head, page of a sequence), query heads of a GQA group reduced by max (default) or sum so that
 * a KV head's group shares one page selection.
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
import scoreWgsl from './score.wgsl.js';
import { GPUBufferUsageFlags } from '../../src/gpu/flags.js';

export const QUEST_PARAMS = uniformLayout('QuestParams', [
  ['n', 'u32'],
  ['first', 'u32'],
  ['count', 'u32'],
  ['Hkv', 'u32'],
  ['group', 'u32'],
  ['chunkFirst', 'u32'],
  ['chunkPages', 'u32'],
  ['forcedLo', 'u32'],
  ['forcedHi', 'u32'],
] as const);

export const QUEST_SCORE_PROGRAM = wgslProgram('quest/score', [storageWgsl, QUEST_PARAMS.wgsl, scoreWgsl]);
const WG = 64;
/** Bindings (src/gpu/bindings.ts); summ4 (the summaries as 16-byte words) only where VEC (D % 8 == 0). */
const SCORE = bindingTable('quest/score', {
  q: 'read',
  summ: 'read',
  list: 'read',
  scores: 'rw',
  params: 'uniform',
  summ4: optional('read', 'array<vec4<u32>>'),
});
/** @internal The score pass's pipeline spec (bindings by name; summ4 declared where D % 8 == 0). */
export function questScoreSpec(
  D: number,
  mode: QuestScoreMode,
  groupReduce: 'max' | 'sum',
): PipelineSpec<ReturnType<typeof SCORE.variant>> {
  const vec = D % 8 === 0;
  return {
    shader: QUEST_SCORE_PROGRAM,
    bindings: SCORE.variant({ summ4: vec }),
    constants: { WG, D, MODE: mode === 'quest' ? 0 : 1, REDUCE: groupReduce === 'max' ? 0 : 1, VEC: vec ? 1 : 0 },
  };
}
registerPasses('quest/score', () => [questScoreSpec(64, 'quest', 'max'), questScoreSpec(12, 'mean', 'sum')]);

/** @internal The page-id list and the summaries of a Quest scoring run (score and block plans). */
export function checkListAndSummaries(list: GPUBuffer, summaries: GPUBuffer, n: number): void {
  for (const [b, name] of [
    [list, 'list'],
    [summaries, 'summaries'],
  ] as const) {
    if (!b || typeof (b as GPUBuffer).size !== 'number')
      fail('E_BUFFER', name, 'is not a GPUBuffer;', typeof b, 'a GPUBuffer');
  }
  if (list.size < n * 4) fail('E_BUFFER', 'list', 'is smaller than n page ids;', list.size, `>= ${n * 4} bytes`);
}

/** @internal One call's range [first, first + count) of the n listed pages (default: the rest). */
export function callRange(c: { first?: number; count?: number }, n: number): { first: number; count: number } {
  const first = checkInt(c.first ?? 0, 'calls.first', { min: 0 });
  const count = checkInt(c.count ?? n - first, 'calls.count', { min: 0 });
  if (first + count > n) fail('E_ARG', 'calls.count', 'runs past the list;', first + count, `<= n = ${n}`);
  return { first, count };
}

/**
 * Loop iterations one invocation of `score.wgsl` runs, in the counting rules of
 * src/gpu/segments.ts: the loop over the GQA group's `group` query heads, each with a loop over at
 * most D / 4 channel chunks (D / 8 with 16-byte loads), plus {@link QUEST_SLACK} for the early
 * returns and the compiler. A page's score is one invocation, so this does not grow with the
 * sequence.
 *
 * @example
 * questScoreLoopIterations(8, 128); // 281
 */
export function questScoreLoopIterations(group: number, D: number): number {
  return loops.loop(group, loops.loop(D / 4)) + QUEST_SLACK;
}

/** Loop iterations the Quest kernels' cost functions add for their early returns and what the compiler adds. */
export const QUEST_SLACK = 8;

export type QuestScoreMode = 'quest' | 'mean';
export type GroupReduce = 'max' | 'sum';

export interface QuestScoreOptions {
  Hq: number;
  Hkv: number;
  /** Key head dim (a multiple of 4, <= 256). */
  D: number;
  /** `quest` (min/max bound, default) or `mean` (MoBA's q . mean(K)). */
  mode?: QuestScoreMode;
  /** How a GQA group's query heads share one score per KV head (default `max`). */
  groupReduce?: GroupReduce;
  /** Uniform slots (dispatches encoded before a submit; default 8). */
  maxCalls?: number;
  /**
   * Check the loop bound against this cap instead of the device's (lower only; an integer >= 256):
   * the E_LIMIT path Mesa's llvmpipe needs, on any adapter (src/gpu/segments.ts).
   */
  loopLimit?: number;
}

export interface QuestScoreCall {
  /** Entries in the page list (pages of the sequence). */
  n: number;
  /** The entries this dispatch scores: `[first, first + count)` (default all). */
  first?: number;
  count?: number;
  /** First page id held by this summary chunk, and how many it holds. */
  chunkFirst: number;
  chunkPages: number;
  /** List indices < forcedLo or >= forcedHi are forced (scored -inf; the caller adds them). */
  forcedLo: number;
  forcedHi: number;
}

export interface QuestScoreTensors {
  /** `[Hq, D]` f32 (one decode query). */
  q: GpuTensor;
  /** A summary chunk buffer (`minmax` for quest, `mean` for mean). */
  summaries: GPUBuffer;
  /** `[n]` u32 page ids. */
  list: GPUBuffer;
  /** `[Hkv, n]` f32 out. */
  scores: GpuTensor;
  calls: readonly QuestScoreCall[];
}

/**
 * Quest page scores from per-page min/max key summaries.
 * Planned once by `planQuestScore`; `run` records it into your encoder and allocates
 * nothing; `dispose()` frees what the plan holds.
 *
 * @example
 * const plan = await planQuestScore(dev, { Hq: 8, Hkv: 2, D: 128 });
 * plan.run(encoder, { q, summaries, list, scores, calls });
 * plan.dispose();
 */
export class QuestScorePlan extends KernelPlan<QuestScoreTensors> {
  /** What run writes (checked against the inputs by KernelPlan before encoding). */
  protected override get writes(): readonly string[] {
    return ['scores'];
  }
  readonly options: Required<Omit<QuestScoreOptions, 'loopLimit'>>;
  private readonly pipeline: TablePipeline<typeof SCORE>;
  private readonly ring: UniformRing<(typeof QUEST_PARAMS.fields)[number][0]>;

  private constructor(
    ctx: TesseraDevice,
    o: Required<Omit<QuestScoreOptions, 'loopLimit'>>,
    pipeline: TablePipeline<typeof SCORE>,
  ) {
    super(ctx);
    this.options = o;
    this.pipeline = pipeline;
    this.ring = new UniformRing(ctx, QUEST_PARAMS, o.maxCalls, 'QuestScorePlan', (bytes) =>
      this.workspace(bytes, 'quest.params', GPUBufferUsageFlags.UNIFORM | GPUBufferUsageFlags.COPY_DST),
    );
  }

  /** @internal use {@link planQuestScore}. */
  static async create(device: DeviceLike, opts: QuestScoreOptions): Promise<QuestScorePlan> {
    const ctx = ctxOf(device);
    if (!opts || typeof opts !== 'object') fail('E_ARG', 'options', 'is required;', opts);
    const Hkv = checkInt(opts.Hkv, 'Hkv', { min: 1 });
    const Hq = checkInt(opts.Hq, 'Hq', { min: 1 });
    check(Hq % Hkv === 0, 'Hq', `a multiple of Hkv = ${Hkv}`, Hq, 'E_SHAPE');
    const D = checkInt(opts.D, 'D', { min: 4, max: 256 });
    check(D % 4 === 0, 'D', 'a multiple of 4', D, 'E_UNSUPPORTED');
    const mode = opts.mode ?? 'quest';
    check(mode === 'quest' || mode === 'mean', 'mode', '"quest" or "mean"', mode);
    const groupReduce = opts.groupReduce ?? 'max';
    check(groupReduce === 'max' || groupReduce === 'sum', 'groupReduce', '"max" or "sum"', groupReduce);
    const maxCalls = checkInt(opts.maxCalls ?? 8, 'maxCalls', { min: 1 });
    // Mesa's llvmpipe stops an invocation after ctx.loopLimit loop iterations; one score loops
    // over the group's heads and D (no split is possible without a second pass: refuse instead).
    const limit = planLoopLimit(ctx, opts.loopLimit);
    if (questScoreLoopIterations(Hq / Hkv, D) > loopBudget(limit)) {
      fail(
        'E_LIMIT',
        'Hq',
        "gives one page score more query heads x channels than the device's loop limit allows;",
        Hq,
        `Hq / Hkv * (D / 4 + 2) within 90% of loopLimit ${limit}`,
      );
    }
    const o = { Hq, Hkv, D, mode, groupReduce, maxCalls };
    const pipeline = await getPipeline(ctx, questScoreSpec(D, mode, groupReduce));
    return new QuestScorePlan(ctx, o, pipeline);
  }

  /** Encodes one dispatch per call (per summary chunk). Parameters go through a uniform ring (`maxCalls`). */
  run(encoder: GPUCommandEncoder, t: QuestScoreTensors): void {
    this.assertUsable();
    const o = this.options;
    const q = checkTensor(t.q, 'q', { rank: 2, shape: [o.Hq, o.D], dtypes: ['f32'] });
    const scores = checkTensor(t.scores, 'scores', { rank: 2, shape: [o.Hkv, -1], dtypes: ['f32'] });
    checkBindingSize(this.ctx, scores, 'scores');
    const n = scores.shape[1]!;
    check(
      Array.isArray(t.calls) && t.calls.length <= o.maxCalls,
      'calls',
      `at most ${o.maxCalls} calls`,
      t.calls?.length,
    );
    checkListAndSummaries(t.list, t.summaries, n);
    // Validate every call before encoding any, so a bad call leaves nothing encoded.
    const ranges = t.calls.map((c) => {
      if (c.n !== n) fail('E_SHAPE', 'calls.n', 'does not match scores.shape[1];', c.n, `${n}`);
      const { first, count } = callRange(c, n);
      const groups = Math.ceil((o.Hkv * count) / WG);
      const max = this.ctx.limits.maxComputeWorkgroupsPerDimension;
      if (Math.ceil(groups / max) > max)
        throw new TesseraError('E_LIMIT', `quest score: ${o.Hkv * count} candidates exceed the dispatch limit`);
      return { first, count, groups };
    });
    let slotsNeeded = 0;
    for (const r of ranges) if (r.count > 0) slotsNeeded++;
    this.ring.claim(encoder, slotsNeeded);
    for (const [i, c] of t.calls.entries()) {
      const { first, count, groups } = ranges[i]!;
      if (count === 0) continue;
      const params = this.ring.write({
        n,
        first,
        count,
        Hkv: o.Hkv,
        group: o.Hq / o.Hkv,
        chunkFirst: c.chunkFirst,
        chunkPages: c.chunkPages,
        forcedLo: c.forcedLo,
        forcedHi: c.forcedHi,
      });
      const x = Math.min(groups, this.ctx.limits.maxComputeWorkgroupsPerDimension);
      const y = Math.ceil(groups / x);
      this.dispatch(
        encoder,
        this.pipeline,
        {
          q: res(q),
          summ: { buffer: t.summaries },
          list: { buffer: t.list, size: Math.max(4, n * 4) },
          scores: res(scores),
          params,
          ...(this.options.D % 8 === 0 ? { summ4: { buffer: t.summaries } } : {}),
        },
        [x, y],
      );
    }
  }
}

/**
 * Plans Quest page scoring.
 *
 * @example
 * const plan = await planQuestScore(dev, { Hq: 8, Hkv: 2, D: 128 });
 * plan.run(encoder, { q, summaries: cache.minmaxGpu[0], list, scores, calls: [{ n, chunkFirst: 0, chunkPages: n, forcedLo: 1, forcedHi: n - 1 }] });
 */
export function planQuestScore(device: DeviceLike, opts: QuestScoreOptions): Promise<QuestScorePlan> {
  return QuestScorePlan.create(device, opts);
}
