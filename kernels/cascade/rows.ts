/**
 * Multi-row paged partials for the shared pass of cascade decode (`rows.wgsl`, appended to
 * kernels/paged's shader): the same tensors, page list and calls as {@link PagedPlan}, but each
 * invocation attends four query rows of one KV head, loading every key and value once for the
 * four. No causal mask (shared-prefix pages precede every query). Used by src/stream/cascade.ts
 * with `variant: 'rows'`.
 */
import { TesseraError, check, checkInt, fail } from '../../src/errors.js';
import { ctxOf, loopBudget, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import { getPipeline, wgslProgram, type Pipeline } from '../../src/gpu/pipeline.js';
import { KernelPlan, checkBindingSize, res } from '../../src/plan.js';
import { checkTensor } from '../../src/tensor.js';
import { kvDtypeCode, pageLayout, KV_DTYPES } from '../../src/kv/codec.js';
import { PAGED_ENTRY_WORDS, PAGED_PARAMS, type PagedCall, type PagedOptions, type PagedTensors } from '../paged/paged.js';
import storageWgsl from '../../shaders/storage.wgsl.js';
import pagedWgsl from '../paged/paged.wgsl.js';
import rowsWgsl from './rows.wgsl.js';

const PROGRAM = wgslProgram('cascade/rows', [storageWgsl, PAGED_PARAMS.wgsl, pagedWgsl, rowsWgsl]);
const WG = 64;
/** Query rows per invocation. */
export const ROWS_PER_INVOCATION = 4;

/**
 * Loop cost of one `main_rows` invocation (Mesa's count: every back-edge, `n + 1` per loop of n
 * trips) for pages of up to `pageSize` keys, `L = min(P, 256)`, keys in `k = ceil(L/64)` chunks of
 * `C = min(L, 64)`, `gD = ceil(D/32)` score blocks, `gV = ceil(Dv/8)` value steps: per chunk the
 * score reset, max and exp loops and one loop over its keys per block and per step,
 * `(3 + gD + gV)(C + 1) + gD + gV + 3`, plus `k + 1` for the chunk loop; setup: the zeroing and
 * normalising loops over Dv, counted twice plus 8.
 */
export function rowsLoopCost(D: number, Dv: number, pageSize: number): { setup: number; perEntry: number } {
  const L = Math.min(pageSize, 256);
  const k = Math.ceil(L / 64);
  const C = Math.min(L, 64);
  const gD = Math.ceil(D / 32);
  const gV = Math.ceil(Dv / 8);
  return { setup: 2 * (2 * (Dv + 1) + 1) + 8, perEntry: k * ((3 + gD + gV) * (C + 1) + gD + gV + 3) + k + 1 };
}

export class PagedRowsPlan extends KernelPlan<PagedTensors & { calls: readonly PagedCall[] }> {
  readonly options: Required<PagedOptions>;
  readonly rows: number;
  readonly maxEntriesPerPart: number;
  private readonly pipeline: Pipeline;
  private readonly params: GPUBuffer;
  private readonly slotBytes: number;
  private nextSlot = 0;
  private readonly fixed: { pageWords: number; kHeadWords: number; vOffWords: number; vHeadWords: number; scaleOffWords: number };

  private constructor(ctx: TesseraDevice, o: Required<PagedOptions>, pipeline: Pipeline) {
    super(ctx);
    this.options = o;
    this.rows = o.Tq * o.Hq;
    const c = rowsLoopCost(o.D, o.Dv, o.pageSize);
    this.maxEntriesPerPart = Number.isFinite(ctx.loopLimit) ? Math.max(0, Math.floor((loopBudget(ctx.loopLimit) - c.setup) / c.perEntry)) : Number.POSITIVE_INFINITY;
    this.pipeline = pipeline;
    this.slotBytes = Math.max(256, ctx.limits.minUniformBufferOffsetAlignment);
    this.params = this.workspace(this.slotBytes * o.maxCalls, 'rows.params', GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
    const L = pageLayout(o.pageSize, o.Hkv, o.D, o.Dv, o.dtype);
    this.fixed = { pageWords: L.pageBytes / 4, kHeadWords: L.kHeadBytes / 4, vOffWords: L.vOffset / 4, vHeadWords: L.vHeadBytes / 4, scaleOffWords: L.scaleOffset / 4 };
  }

  /** @internal use {@link planPagedRows}. */
  static async create(device: DeviceLike, opts: PagedOptions): Promise<PagedRowsPlan> {
    const ctx = ctxOf(device);
    if (!opts || typeof opts !== 'object') fail('E_ARG', 'options', 'is required;', opts);
    const Hkv = checkInt(opts.Hkv, 'Hkv', { min: 1 });
    const Hq = checkInt(opts.Hq, 'Hq', { min: 1 });
    check(Hq % Hkv === 0, 'Hq', `a multiple of Hkv = ${Hkv}`, Hq, 'E_SHAPE');
    const D = checkInt(opts.D, 'D', { min: 4, max: 256 });
    const Dv = checkInt(opts.Dv ?? D, 'Dv', { min: 4, max: 256 });
    check(D % 4 === 0, 'D', 'a multiple of 4', D, 'E_UNSUPPORTED');
    check(Dv % 4 === 0, 'Dv', 'a multiple of 4', Dv, 'E_UNSUPPORTED');
    const Tq = checkInt(opts.Tq ?? 1, 'Tq', { min: 1 });
    const pageSize = checkInt(opts.pageSize, 'pageSize', { min: 1, max: 256 });
    const dtype = opts.dtype ?? 'f16';
    check(KV_DTYPES.includes(dtype), 'dtype', KV_DTYPES.join(', '), dtype, 'E_DTYPE');
    if (opts.causal) fail('E_UNSUPPORTED', 'causal', 'the multi-row kernel attends shared prefixes without a causal mask;', opts.causal, 'false');
    const scale = opts.scale ?? 1 / Math.sqrt(D);
    check(Number.isFinite(scale), 'scale', 'a finite number', scale);
    const maxCalls = checkInt(opts.maxCalls ?? 16, 'maxCalls', { min: 1, max: 4096 });
    const o: Required<PagedOptions> = { Hq, Hkv, D, Dv, Tq, pageSize, dtype, causal: false, scale, maxCalls, variant: 'cpu' };
    const c = rowsLoopCost(D, Dv, pageSize);
    if (Number.isFinite(ctx.loopLimit) && loopBudget(ctx.loopLimit) < c.setup + c.perEntry) {
      fail('E_LIMIT', 'pageSize', "makes one page longer than the device's loop limit allows per invocation;", pageSize, `smaller pages or head dims (loopLimit ${ctx.loopLimit})`);
    }
    const pipeline = await getPipeline(ctx, {
      shader: PROGRAM,
      entryPoint: 'main_rows',
      bindings: ['read', 'read', 'read', 'rw', 'rw', 'uniform', 'read'],
      constants: { WG, D, DV: Dv, KV_DT: kvDtypeCode(dtype), VEC: D % 32 === 0 && Dv % 32 === 0 ? 1 : 0 },
    });
    return new PagedRowsPlan(ctx, o, pipeline);
  }

  /** Encodes `calls` (one dispatch each), as {@link PagedPlan.run}. */
  run(encoder: GPUCommandEncoder, t: PagedTensors & { calls: readonly PagedCall[] }): void {
    this.assertUsable();
    const o = this.options;
    const q = checkTensor(t.q, 'q', { rank: 3, shape: [o.Tq, o.Hq, o.D], dtypes: ['f32'] });
    const oParts = checkTensor(t.oParts, 'oParts', { rank: 3, shape: [-1, this.rows, o.Dv], dtypes: ['f32'] });
    const parts = oParts.shape[0]!;
    const lseParts = checkTensor(t.lseParts, 'lseParts', { rank: 2, shape: [parts, this.rows], dtypes: ['f32'] });
    for (const [x, n] of [[q, 'q'], [oParts, 'oParts'], [lseParts, 'lseParts']] as const) checkBindingSize(this.ctx, x, n);
    if (!t.pages || typeof t.pages.size !== 'number') fail('E_BUFFER', 'pages', 'is not a GPUBuffer;', typeof t.pages);
    if (!t.list || typeof t.list.size !== 'number') fail('E_BUFFER', 'list', 'is not a GPUBuffer;', typeof t.list);
    check(Array.isArray(t.calls) && t.calls.length <= o.maxCalls, 'calls', `at most maxCalls = ${o.maxCalls} calls`, t.calls?.length);
    const listEntries = Math.floor(t.list.size / (4 * PAGED_ENTRY_WORDS));
    t.calls.forEach((c, i) => {
      checkInt(c.nEntries, `calls[${i}].nEntries`, { min: 0 });
      checkInt(c.listBase, `calls[${i}].listBase`, { min: 0 });
      if (c.listBase + c.nEntries > listEntries) fail('E_BUFFER', `calls[${i}].nEntries`, 'reads past the end of the list buffer;', c.listBase + c.nEntries, `<= ${listEntries}`);
      checkInt(c.ePer, `calls[${i}].ePer`, { min: 1 });
      checkInt(c.partBase, `calls[${i}].partBase`, { min: 0 });
      checkInt(c.partCount, `calls[${i}].partCount`, { min: 0 });
      if (c.partBase + c.partCount > parts) fail('E_SHAPE', `calls[${i}].partCount`, 'writes past the partials;', c.partBase + c.partCount, `<= ${parts}`);
      if (Math.ceil(c.nEntries / c.ePer) > c.partCount) fail('E_ARG', `calls[${i}].partCount`, 'is too small for its entries;', c.partCount, `>= ceil(nEntries / ePer)`);
      if (Math.min(c.ePer, c.nEntries) > this.maxEntriesPerPart) fail('E_LIMIT', `calls[${i}].ePer`, "gives one invocation more pages than the device's loop limit allows;", c.ePer, `at most ${this.maxEntriesPerPart}`);
    });
    const perHead = o.Tq * (o.Hq / o.Hkv);
    const blocks = o.Hkv * Math.ceil(perHead / ROWS_PER_INVOCATION);
    for (const c of t.calls) {
      if (c.partCount === 0) continue;
      const slot = this.nextSlot;
      this.nextSlot = (this.nextSlot + 1) % o.maxCalls;
      const values = {
        rows: this.rows,
        Hq: o.Hq,
        group: o.Hq / o.Hkv,
        Hkv: o.Hkv,
        qPos0: 0,
        causal: 0,
        scaleLog2: o.scale * Math.LOG2E,
        listBase: c.listBase,
        nEntries: c.nEntries,
        ePer: c.ePer,
        partBase: c.partBase,
        partCount: c.partCount,
        ...this.fixed,
      };
      this.ctx.device.queue.writeBuffer(this.params, slot * this.slotBytes, PAGED_PARAMS.pack(values));
      const groups = Math.ceil((c.partCount * blocks) / WG);
      const max = this.ctx.limits.maxComputeWorkgroupsPerDimension;
      const x = Math.min(groups, max);
      const y = Math.ceil(groups / x);
      if (y > max) throw new TesseraError('E_LIMIT', `cascade rows: ${c.partCount * blocks} invocations exceed the dispatch limit`);
      const pr = { buffer: t.pages };
      this.dispatch(encoder, this.pipeline, [res(q), pr, { buffer: t.list }, res(oParts), res(lseParts), { buffer: this.params, offset: slot * this.slotBytes, size: PAGED_PARAMS.size }, pr], [x, y]);
    }
  }
}

/**
 * Plans multi-row paged partials (the shared pass of cascade decode).
 *
 * @example
 * const plan = await planPagedRows(dev, { Hq: 8, Hkv: 2, D: 128, Tq: agents, pageSize: 64, causal: false });
 */
export function planPagedRows(device: DeviceLike, opts: PagedOptions): Promise<PagedRowsPlan> {
  return PagedRowsPlan.create(device, opts);
}
