/**
 * Page operations on the GPU for fork and rewind of pool sequences: copy-on-write of a shared
 * partial last page (a page copy inside the caller's encoder) and the Quest min/max summaries of
 * a page recomputed over its first `rows` rows (a rewound last page). Any page dtype: the copy is
 * the whole page (int8: codes and per-token scales), the summaries decode as the append plan's.
 * The host side is `PagePool.fork` / `PagePool.truncate` (src/pool), which return the
 * {@link PageFix} list this plan encodes.
 *
 * Compile once (`planPageOps`), `schedule(fixes)` (validated, one `queue.writeBuffer` into the
 * plan's table), `run(encoder, { pages, summaries? })` (no GPU buffer created, nothing awaited).
 */
import { TesseraError, checkInt, fail } from '../../src/errors.js';
import { ctxOf, submitEpoch, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import {
  bindGroup,
  getPipeline,
  grid2d,
  wgslProgram,
  type PipelineSpec,
  type TablePipeline,
} from '../../src/gpu/pipeline.js';
import { bindingTable, registerPasses, type VariantOf } from '../../src/gpu/bindings.js';
import { uniformLayout } from '../../src/gpu/uniforms.js';
import { KernelPlan, checkRawBuffer } from '../../src/plan.js';
import {
  KV_DTYPES,
  SUMMARIES_LAYOUT,
  kvDtypeCode,
  pageLayout,
  summariesBytes,
  type KvDType,
  type PageLayout,
} from '../attention/page.js';
import { APPEND_PARAMS, SUMMARIZE_BINDINGS, summarizeSpec } from '../append/append.js';
import type { PageFix } from '../../src/pool/pool.js';
import copyWgsl from './copy.wgsl.js';
import { GPUBufferUsageFlags } from '../../src/gpu/flags.js';

const COPY_PARAMS = uniformLayout('PageCopyParams', [
  ['pageWords', 'u32'],
  ['copies', 'u32'],
] as const);

const COPY = wgslProgram('pool/copy', [COPY_PARAMS.wgsl, copyWgsl]);
const WG = 64;
const COPY_BINDINGS = bindingTable('pool/copy', { pages: 'rw', tables: 'read', params: 'uniform' });
function copySpec(): PipelineSpec<VariantOf<typeof COPY_BINDINGS>> {
  return { shader: COPY, bindings: COPY_BINDINGS.variant({}), constants: { WG } };
}
function sumSpec(o: { pageDtype: KvDType; Hkv: number; D: number; pageSize: number }) {
  return summarizeSpec({ WG, PAGE_DT: kvDtypeCode(o.pageDtype), HKV: o.Hkv, D: o.D, P: o.pageSize });
}
registerPasses('pool', () => [copySpec(), sumSpec({ pageDtype: 'f16', Hkv: 2, D: 64, pageSize: 16 })]);
const HEADER = 4;

export interface PageOpsOptions {
  /** KV heads. */
  Hkv: number;
  /** Key head dim (a multiple of 4). */
  D: number;
  /** Value head dim (default D). */
  Dv?: number;
  /** Tokens per page. */
  pageSize: number;
  /**
   * Page dtype: f32, f16, bf16 or int8 (default f16), as the append plan's. An int8 page's copy
   * carries its codes and per-token scales (the whole page); its summaries decode each code with
   * its row's scale, as the append plan's do.
   */
  pageDtype?: KvDType;
  /** Pages in the pool buffer. */
  maxPages: number;
  /** Most fixes per schedule (default 64, at most maxPages). */
  maxFixes?: number;
}

export interface PageOpsTensors {
  /** The pool: `maxPages` pages of `plan.layout.pageBytes` bytes. */
  pages: GPUBuffer;
  /** minmax summaries `[maxPages, Hkv, 2, D]` f16 (as `planAppend` writes them): given, the fixed pages' summaries are recomputed. */
  summaries?: GPUBuffer;
}

export class PageOpsPlan extends KernelPlan<PageOpsTensors> {
  protected override get writes(): readonly string[] {
    return ['pages', 'summaries'];
  }
  readonly options: Readonly<Required<PageOpsOptions>>;
  readonly layout: PageLayout;
  private readonly copy: TablePipeline<typeof COPY_BINDINGS>;
  private readonly summarize: TablePipeline<typeof SUMMARIZE_BINDINGS>;
  private readonly tables: GPUBuffer;
  private readonly copyParams: GPUBuffer;
  private readonly sumParams: GPUBuffer;
  private readonly host: Uint32Array<ArrayBuffer>;
  private readonly copiesAt: number;
  private readonly mark: Uint32Array;
  private stamp = 0;
  private fixes = -1;
  private copies = 0;
  private usedEpoch = -2;
  /** The last bind groups (an engine runs with the same pool and summary buffers every time). */
  private copyGroup?: { pages: GPUBuffer; group: GPUBindGroup };
  private sumGroup?: { pages: GPUBuffer; summaries: GPUBuffer; group: GPUBindGroup };

  private constructor(
    ctx: TesseraDevice,
    o: Required<PageOpsOptions>,
    copy: TablePipeline<typeof COPY_BINDINGS>,
    summarize: TablePipeline<typeof SUMMARIZE_BINDINGS>,
  ) {
    super(ctx);
    this.options = o;
    this.layout = pageLayout(o.pageSize, o.Hkv, o.D, o.Dv, o.pageDtype);
    this.copy = copy;
    this.summarize = summarize;
    this.copiesAt = HEADER + 2 * o.maxFixes;
    this.host = new Uint32Array(this.copiesAt + 2 * o.maxFixes);
    this.tables = this.workspace(
      this.host.byteLength,
      'pageOps.tables',
      GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST,
    );
    const pageWords = this.layout.pageBytes / 4;
    this.copyParams = this.uniform(COPY_PARAMS, { pageWords, copies: this.copiesAt });
    this.sumParams = this.uniform(APPEND_PARAMS, {
      rowB: 0,
      rowP: 0,
      iptr: 0,
      idx: 0,
      touch: HEADER,
      pageWords,
      vOffWords: this.layout.vOffset / 4,
      maxPages: o.maxPages,
      scaleOffWords: this.layout.scaleOffset / 4,
    });
    this.mark = new Uint32Array(o.maxPages);
  }

  /** @internal use {@link planPageOps}. */
  static async create(device: DeviceLike, opts: PageOpsOptions): Promise<PageOpsPlan> {
    const ctx = ctxOf(device);
    if (!opts || typeof opts !== 'object')
      fail('E_ARG', 'options', 'is required;', opts, '{ Hkv, D, pageSize, maxPages }');
    const Hkv = checkInt(opts.Hkv, 'Hkv', { min: 1, max: 256 });
    const D = checkInt(opts.D, 'D', { min: 4, max: 1024 });
    const Dv = checkInt(opts.Dv ?? D, 'Dv', { min: 4, max: 1024 });
    if (D % 4 !== 0) fail('E_UNSUPPORTED', 'D', 'is not a multiple of 4;', D);
    if (Dv % 4 !== 0) fail('E_UNSUPPORTED', 'Dv', 'is not a multiple of 4;', Dv);
    const pageSize = checkInt(opts.pageSize, 'pageSize', { min: 1, max: 256 });
    const pageDtype = opts.pageDtype ?? 'f16';
    if (!KV_DTYPES.includes(pageDtype))
      fail('E_DTYPE', 'pageDtype', 'is not a KV dtype;', pageDtype, KV_DTYPES.join(', '));
    const maxPages = checkInt(opts.maxPages, 'maxPages', { min: 1 });
    const maxFixes = checkInt(opts.maxFixes ?? Math.min(64, maxPages), 'maxFixes', { min: 1, max: maxPages });
    const L = pageLayout(pageSize, Hkv, D, Dv, pageDtype);
    if (maxPages * L.pageBytes > ctx.limits.maxStorageBufferBindingSize) {
      fail(
        'E_LIMIT',
        'maxPages',
        'makes the pool larger than one storage binding;',
        maxPages,
        `at most ${Math.floor(ctx.limits.maxStorageBufferBindingSize / L.pageBytes)} pages of ${L.pageBytes} bytes`,
      );
    }
    const copy = await getPipeline(ctx, copySpec());
    const summarize = await getPipeline(ctx, sumSpec({ pageDtype, Hkv, D, pageSize }));
    return new PageOpsPlan(ctx, { Hkv, D, Dv, pageSize, pageDtype, maxPages, maxFixes }, copy, summarize);
  }

  /**
   * Sets the fixes the next runs encode (`PagePool.fork` / `truncate` return them). Validates
   * everything first (a bad schedule changes nothing): page ids in the pool, `rows` in
   * `1..pageSize`, each `dst` once, and no `dst` that another fix copies from. Throws `E_STATE`
   * while a run encoded since the last `queue.submit` still reads the current table.
   *
   * @example
   * const { seq, fix } = pool.fork(parent);
   * ops.schedule(fix ? [fix] : []);
   */
  schedule(fixes: readonly PageFix[]): void {
    this.assertUsable();
    const epoch = submitEpoch(this.ctx);
    if (epoch >= 0 && this.usedEpoch === epoch) {
      throw new TesseraError(
        'E_STATE',
        "PageOpsPlan.schedule: a run encoded since the last queue.submit still reads this plan's table; submit that encoder first",
      );
    }
    const o = this.options;
    if (!Array.isArray(fixes)) fail('E_ARG', 'fixes', 'is not an array;', typeof fixes, '[{ src, dst, rows }]');
    if (fixes.length > o.maxFixes)
      fail(
        'E_LIMIT',
        'fixes',
        'has more entries than the plan holds;',
        fixes.length,
        `at most maxFixes = ${o.maxFixes}`,
      );
    const gen = ++this.stamp;
    const mark = this.mark;
    for (let i = 0; i < fixes.length; i++) {
      const f = fixes[i]!;
      if (!f || typeof f !== 'object') fail('E_ARG', `fixes[${i}]`, 'is not a fix;', f, '{ src, dst, rows }');
      checkInt(f.src, `fixes[${i}].src`, { min: 0, max: o.maxPages - 1 });
      checkInt(f.dst, `fixes[${i}].dst`, { min: 0, max: o.maxPages - 1 });
      checkInt(f.rows, `fixes[${i}].rows`, { min: 1, max: o.pageSize });
      if (mark[f.dst] === gen)
        fail('E_ARG', `fixes[${i}].dst`, 'is written by another fix of this schedule;', f.dst, 'each dst once');
      mark[f.dst] = gen;
    }
    for (let i = 0; i < fixes.length; i++) {
      const f = fixes[i]!;
      if (f.src !== f.dst && mark[f.src] === gen)
        fail('E_ARG', `fixes[${i}].src`, 'is the dst of a fix of this schedule;', f.src, 'a page no fix writes');
    }
    const h = this.host;
    let c = 0;
    fixes.forEach((f, i) => {
      h[HEADER + 2 * i] = f.dst;
      h[HEADER + 2 * i + 1] = f.rows;
      if (f.src !== f.dst) {
        h[this.copiesAt + 2 * c] = f.src;
        h[this.copiesAt + 2 * c + 1] = f.dst;
        c++;
      }
    });
    h[0] = fixes.length;
    h[1] = fixes.length;
    h[2] = c;
    h[3] = 0;
    this.ctx.device.queue.writeBuffer(this.tables, 0, h);
    this.fixes = fixes.length;
    this.copies = c;
    this.usedEpoch = -2;
  }

  /** Page copies in the current schedule. */
  get scheduledCopies(): number {
    return this.copies;
  }

  /**
   * Encodes the scheduled copies (one dispatch) and, given `summaries`, the recomputed summaries
   * of every fixed page (a second dispatch), into `encoder` (or the caller's open compute pass).
   */
  run(encoder: GPUCommandEncoder | GPUComputePassEncoder, t: PageOpsTensors): void {
    this.assertUsable();
    const o = this.options;
    if (this.fixes < 0) throw new TesseraError('E_STATE', 'PageOpsPlan.run: call schedule() first');
    const poolBytes = o.maxPages * this.layout.pageBytes;
    checkRawBuffer(t?.pages, 'pages', poolBytes, 'maxPages pages');
    const sumBytes = summariesBytes(o.maxPages, o.Hkv, o.D);
    if (t.summaries !== undefined) {
      checkRawBuffer(t.summaries, 'summaries', sumBytes, SUMMARIES_LAYOUT);
      if (t.summaries === t.pages) fail('E_BUFFER', 'summaries', 'must not be the pages buffer;', 'the same buffer');
    }
    this.usedEpoch = submitEpoch(this.ctx);
    const doSum = t.summaries !== undefined && this.fixes > 0;
    if (this.copies === 0 && !doSum) return;
    const pages = { buffer: t.pages, offset: 0, size: poolBytes };
    const own = typeof (encoder as GPUComputePassEncoder).dispatchWorkgroups !== 'function';
    const pass = own
      ? (encoder as GPUCommandEncoder).beginComputePass({ label: 'pageOps' })
      : (encoder as GPUComputePassEncoder);
    if (this.copies > 0) {
      pass.setPipeline(this.copy.pipeline);
      if (this.copyGroup?.pages !== t.pages)
        this.copyGroup = {
          pages: t.pages,
          group: bindGroup(this.ctx, this.copy, {
            pages,
            tables: { buffer: this.tables },
            params: { buffer: this.copyParams },
          }),
        };
      pass.setBindGroup(0, this.copyGroup.group);
      const [x, y] = grid2d(this.ctx, Math.ceil((this.copies * (this.layout.pageBytes / 4)) / WG));
      pass.dispatchWorkgroups(x, y);
    }
    if (doSum) {
      pass.setPipeline(this.summarize.pipeline);
      const sm = t.summaries!;
      if (this.sumGroup?.pages !== t.pages || this.sumGroup.summaries !== sm) {
        this.sumGroup = {
          pages: t.pages,
          summaries: sm,
          group: bindGroup(this.ctx, this.summarize, {
            pages,
            tables: { buffer: this.tables },
            summ: { buffer: sm, offset: 0, size: sumBytes },
            params: { buffer: this.sumParams },
          }),
        };
      }
      pass.setBindGroup(0, this.sumGroup.group);
      const [x, y] = grid2d(this.ctx, Math.ceil((this.fixes * o.Hkv * (o.D / 2)) / WG));
      pass.dispatchWorkgroups(x, y);
    }
    if (own) pass.end();
  }
}

/**
 * Plans the GPU side of fork / truncate for pool sequences.
 *
 * @example
 * const ops = await planPageOps(dev, { Hkv: 2, D: 64, pageSize: 16, pageDtype: 'f16', maxPages: 256 });
 * const { seq: child, fix } = pool.fork(parent);
 * ops.schedule(fix ? [fix] : []);
 * ops.run(encoder, { pages, summaries });
 */
export function planPageOps(device: DeviceLike, opts: PageOpsOptions): Promise<PageOpsPlan> {
  return PageOpsPlan.create(device, opts);
}
