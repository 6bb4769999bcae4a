/**
 * The one kernel family behind every linear-attention and delta-rule op: a plan that runs either
 * the recurrent form (token by token; decode and short prefills) or the chunked parallel form
 * (chunks of 64 tokens; prefill), for any combination of
 * - gate: none (linear attention, DeltaNet), scalar per head and token (simple GLA, Gated
 *   DeltaNet), per key channel (GLA, KDA) or constant per head (retention, lightning);
 * - the delta rule (DeltaNet, Gated DeltaNet, KDA) or a plain additive update;
 * - the normaliser of linear attention.
 * The op wrappers (`kernels/linear/ops.ts`, `kernels/delta/ops.ts`) fix these flags.
 *
 * Layouts (row-major, sequences of a ragged batch back to back, `cuSeqlens` `[N+1]`):
 * q, k `[T, H, K]`; v, o `[T, HV, V]`; g `[T, HV]` (scalar) or `[T, HV, K]` (per channel), f32,
 * natural-log decay (clamped into [-64, 0]); beta `[T, HV]` f32; states `[N, HV, K, V]` f32 (and
 * z `[N, HV, K]` f32 with the normaliser). Value head `hv` reads qk head `floor(hv / (HV / H))`.
 */
import { TesseraError, check, checkInt, fail, checkF32 } from '../../src/errors.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../../src/gpu/device.js';
import {
  getPipeline,
  grid2d,
  pipelineShader,
  wgslProgram,
  type Pipeline,
  type PipelineSpec,
  type ShaderSource,
} from '../../src/gpu/pipeline.js';
import { bindingTable, optional, registerPasses, type BindingVariant } from '../../src/gpu/bindings.js';
import { uniformLayout } from '../../src/gpu/uniforms.js';
import { wgslConstants } from '../../src/gpu/specialize.js';
import { KernelPlan, checkBindingSize, res } from '../../src/plan.js';
import {
  GPUBufferUsageFlags,
  checkTensor,
  dtypeCode,
  isFloatDType,
  type FloatDType,
  type GpuTensor,
} from '../../src/tensor.js';
import type { BindingResource } from '../../src/gpu/pipeline.js';
import storageWgsl from '../../shaders/storage.wgsl.js';
import commonWgsl from './common.wgsl.js';
import recurrentWgsl from './recurrent.wgsl.js';
import prepWgsl from './prep.wgsl.js';
import intraWgsl from './intra.wgsl.js';
import solveWgsl from './solve.wgsl.js';
import scanWgsl from './scan.wgsl.js';
import outputWgsl from './output.wgsl.js';
import convertWgsl from './convert.wgsl.js';
import type { GateMode } from './reference.js';
import { loopBudget, planLoopLimit, segment, segmentUniforms, SEGMENT_FIELDS } from '../../src/gpu/segments.js';
import {
  convertLoopIterations,
  intraLoopIterations,
  outputLoopIterations,
  prepLoopIterations,
  recurrentLoopIterations,
  scanLoopIterations,
  solveLoopIterations,
} from './loops.js';

export type { GateMode } from './reference.js';

/** Chunk length of the parallel form. */
export const CHUNK = 64;

export const LIN_PARAMS = uniformLayout('LinParams', [
  ['T', 'u32'],
  ['N', 'u32'],
  ['nChunks', 'u32'],
  ['H', 'u32'],
  ['HV', 'u32'],
  ['K', 'u32'],
  ['V', 'u32'],
  ['ratio', 'u32'],
  ['VS', 'u32'],
  ['chunkOff', 'u32'],
  ['seqChunkOff', 'u32'],
  ['K4', 'u32'],
  ['V4', 'u32'],
  ['VS4', 'u32'],
  ['KP', 'u32'],
  ['scale', 'f32'],
  // the segment of a segmented pass (recurrent: tokens, scan: chunks of every sequence, counted
  // from its start; seg_begin / seg_end read), one uniform slot per segment; other passes read slot 0
  ...SEGMENT_FIELDS,
  // workgroups per (chunk, value head) of solve.wgsl
  ['solveSplit', 'u32'],
] as const);

/** Which form runs: `chunk` (parallel over 64-token chunks), `recurrent`, or `auto` (default:
 * recurrent when every sequence has at most 64 tokens, as fla switches at `q_len <= 64`). */
export type ScanMode = 'chunk' | 'recurrent' | 'auto';

export interface LinearScanOptions {
  /** Query/key heads. */
  H: number;
  /** Value heads (default H); a multiple of H (GVA: value head hv reads qk head floor(hv / (HV/H))). */
  HV?: number;
  /** Key (state row) dim, 1..256. */
  K: number;
  /** Value (state column) dim, >= 1. */
  V: number;
  /** Tokens of one sequence; or give `cuSeqlens`. */
  T?: number;
  /** Ragged batch `[N+1]`: sequence n is tokens `cuSeqlens[n] .. cuSeqlens[n+1]-1`. */
  cuSeqlens?: readonly number[];
  gate: GateMode;
  delta: boolean;
  /** Linear attention's normaliser (only with gate 'none' and no delta). Default false. */
  normalize?: boolean;
  /** Per-head constant log-decays `[HV]` for gate 'constant' (each <= 0). */
  gamma?: ArrayLike<number>;
  /** Default `K^-1/2`. */
  scale?: number;
  /** Storage of q and k (default f32). */
  dtype?: FloatDType;
  /** Storage of v (default `dtype`). */
  vDtype?: FloatDType;
  /** Storage of o (default `vDtype`; 16-bit outputs need an even V). */
  outDtype?: FloatDType;
  /** Default 'auto'. */
  mode?: ScanMode;
  /** Name used in messages (the op). */
  op?: string;
  /**
   * Size the segments for this loop cap instead of the device's (lower only; an integer >= 256):
   * runs the segmented paths that Mesa's llvmpipe needs on any adapter (src/gpu/segments.ts).
   */
  loopLimit?: number;
}

export interface LinearScanTensors {
  q: GpuTensor;
  k: GpuTensor;
  v: GpuTensor;
  /** Log-gates (gate 'scalar' `[T, HV]`, 'vector' `[T, HV, K]`), f32. */
  g?: GpuTensor;
  /** `[T, HV]` f32 (delta rule). */
  beta?: GpuTensor;
  o: GpuTensor;
  /** `[N, HV, K, V]` f32; zeros when absent. Needs COPY_SRC usage unless it is `finalState`. */
  initialState?: GpuTensor;
  /** `[N, HV, K, V]` f32 out (COPY_DST usage); may be the same tensor as `initialState` (in place). */
  finalState?: GpuTensor;
  /** Normaliser state in `[N, HV, K]` f32 (zeros when absent). */
  z0?: GpuTensor;
  /** Normaliser state out `[N, HV, K]` f32. */
  zt?: GpuTensor;
}

interface Resolved {
  H: number;
  HV: number;
  K: number;
  V: number;
  N: number;
  T: number;
  cu: number[];
  gate: GateMode;
  delta: boolean;
  normalize: boolean;
  scale: number;
  dtype: FloatDType;
  vDtype: FloatDType;
  outDtype: FloatDType;
  mode: 'chunk' | 'recurrent';
  op: string;
  gamma?: Float32Array;
  loopLimit?: number;
}

const GATE_CODE: Record<GateMode, number> = { none: 0, scalar: 1, vector: 2, constant: 3 };

function sameTensor(a: GpuTensor | undefined, b: GpuTensor | undefined): boolean {
  return !!a && !!b && a.buffer === b.buffer && (a.offset ?? 0) === (b.offset ?? 0);
}

/**
 * Validates the options of a scan plan (every error names the argument) and resolves defaults.
 *
 * @example
 * const o = resolveScanOptions({ H: 2, K: 64, V: 64, T: 300, gate: 'scalar', delta: true });
 * o.mode; // 'chunk' (T > 64)
 */
export function resolveScanOptions(opts: LinearScanOptions): Resolved {
  const op = opts?.op ?? 'linear scan';
  const H = checkInt(opts.H, 'H', { min: 1, max: 4096 });
  const HV = checkInt(opts.HV ?? H, 'HV', { min: 1, max: 65536 });
  if (HV % H !== 0)
    fail('E_ARG', 'HV', 'value heads must be a multiple of the key heads;', HV, `a multiple of H = ${H}`);
  const K = checkInt(opts.K, 'K', { min: 1, max: 256 });
  const V = checkInt(opts.V, 'V', { min: 1, max: 4096 });
  let cu: number[];
  if (opts.cuSeqlens !== undefined) {
    const c = opts.cuSeqlens;
    if (!Array.isArray(c) && !ArrayBuffer.isView(c))
      fail('E_ARG', 'cuSeqlens', 'is not an array;', typeof c, 'an array [N+1] of token offsets');
    cu = Array.from(c as ArrayLike<number>);
    if (cu.length < 2 || cu[0] !== 0)
      fail(
        'E_ARG',
        'cuSeqlens',
        'must start at 0 and have N+1 >= 2 entries;',
        cu.slice(0, 8),
        '[0, T_0, T_0+T_1, ...]',
      );
    for (let i = 1; i < cu.length; i++) {
      if (!Number.isInteger(cu[i]) || cu[i]! < cu[i - 1]!)
        fail('E_ARG', `cuSeqlens[${i}]`, 'must be a non-decreasing integer;', cu[i], `>= ${cu[i - 1]}`);
    }
    if (opts.T !== undefined && opts.T !== cu[cu.length - 1])
      fail('E_ARG', 'T', 'disagrees with cuSeqlens;', opts.T, `${cu[cu.length - 1]}`);
  } else {
    cu = [0, checkInt(opts.T, 'T', { min: 0 })];
  }
  const T = cu[cu.length - 1]!;
  if (T < 1) fail('E_ARG', 'T', 'there are no tokens;', T, 'at least one token');
  const gate = opts.gate;
  check(gate in GATE_CODE, 'gate', "'none', 'scalar', 'vector' or 'constant'", gate);
  const delta = !!opts.delta;
  const normalize = !!opts.normalize;
  if (normalize && (gate !== 'none' || delta))
    fail(
      'E_UNSUPPORTED',
      'normalize',
      'the normaliser is implemented for ungated linear attention only;',
      true,
      "gate 'none' without the delta rule",
    );
  const scale = opts.scale === undefined ? 1 / Math.sqrt(K) : checkF32(opts.scale, 'scale');
  const dtype = opts.dtype ?? 'f32';
  check(isFloatDType(dtype), 'dtype', 'one of f32, f16, bf16', dtype, 'E_DTYPE');
  const vDtype = opts.vDtype ?? dtype;
  check(isFloatDType(vDtype), 'vDtype', 'one of f32, f16, bf16', vDtype, 'E_DTYPE');
  const outDtype = opts.outDtype ?? vDtype;
  check(isFloatDType(outDtype), 'outDtype', 'one of f32, f16, bf16', outDtype, 'E_DTYPE');
  if (outDtype !== 'f32' && V % 2 !== 0)
    fail('E_ARG', 'V', 'a 16-bit output needs an even value dim;', V, 'an even V, or outDtype f32');
  let gamma: Float32Array | undefined;
  if (gate === 'constant') {
    const gm = opts.gamma;
    if (!gm || typeof (gm as ArrayLike<number>).length !== 'number')
      fail('E_ARG', 'gamma', 'constant gates need the per-head log-decays;', gm, `an array of ${HV} numbers <= 0`);
    if (gm.length !== HV) fail('E_SHAPE', 'gamma', 'has the wrong length;', gm.length, `${HV} (one per value head)`);
    for (let i = 0; i < HV; i++) {
      const x = gm[i]!;
      if (Number.isNaN(x)) fail('E_NAN', `gamma[${i}]`, 'is NaN;', x, 'a log-decay <= 0');
      if (!(x <= 0)) fail('E_ARG', `gamma[${i}]`, 'a log-decay must not be positive;', x, 'a value <= 0');
    }
    gamma = Float32Array.from(gm);
  }
  const mode = opts.mode ?? 'auto';
  check(mode === 'auto' || mode === 'chunk' || mode === 'recurrent', 'mode', "'chunk', 'recurrent' or 'auto'", mode);
  let maxLen = 0;
  for (let i = 1; i < cu.length; i++) maxLen = Math.max(maxLen, cu[i]! - cu[i - 1]!);
  const chosen = mode === 'auto' ? (maxLen <= CHUNK ? 'recurrent' : 'chunk') : mode;
  if (opts.loopLimit !== undefined) planLoopLimit({ loopLimit: Number.POSITIVE_INFINITY }, opts.loopLimit);
  return {
    H,
    HV,
    K,
    V,
    N: cu.length - 1,
    T,
    cu,
    gate,
    delta,
    normalize,
    scale,
    dtype,
    vDtype,
    outDtype,
    mode: chosen,
    op,
    gamma,
    loopLimit: opts.loopLimit,
  };
}

/** Whether the chunked form can read q, k, v in place as vec4 rows (f32, K and V multiples of 4). */
function directInputs(o: Pick<Resolved, 'dtype' | 'vDtype' | 'K' | 'V'>): boolean {
  return o.dtype === 'f32' && o.vDtype === 'f32' && o.K % 4 === 0 && o.V % 4 === 0;
}

function kmaxOf(K: number): number {
  return K <= 32 ? 32 : K <= 64 ? 64 : K <= 128 ? 128 : 256;
}

/** The private state lengths: `const`s (WGSL private arrays need a constant size), per variant. */
const STATE_CONSTS = wgslConstants({ KMAX: 'u32', ZMAX: 'u32' });

/** @internal A pass's program (tests build loop-counting debug builds of them). */
export function program(name: string, file: string, kmax: number, zmax: number) {
  const c = { KMAX: kmax, ZMAX: zmax };
  return wgslProgram(`linear/${name}/${STATE_CONSTS.tag(c)}`, [
    storageWgsl,
    LIN_PARAMS.wgsl,
    STATE_CONSTS.wgsl(c),
    commonWgsl,
    file,
  ]);
}

/**
 * How a plan keeps every invocation under the device's loop limit (`TesseraDevice.loopLimit`;
 * bounds in `loops.ts`). On adapters without a cap: one segment, no split.
 */
export interface LinearLoopPlan {
  /** The per-invocation budget the plan was sized for (90% of `loopLimit`; `Infinity` without a cap). */
  budget: number;
  /** Dispatches of the sequential pass: the recurrent form's token segments, or the chunk scan's chunk segments. */
  segments: number;
  /** Tokens (recurrent) or chunks (scan) of every sequence per segment. */
  segmentLength: number;
  /** Workgroups per (chunk, value head) sharing the columns of the WY solve (delta rule; else 1). */
  solveSplit: number;
  /** The per-invocation loop bound of each pass as planned (largest segment). */
  bounds: Record<string, number>;
}

function loopLimitError(o: Resolved, what: string, iterations: number, budget: number, limit: number): never {
  throw new TesseraError(
    'E_LIMIT',
    `${o.op}: ${what} needs ${iterations} loop iterations in one invocation at K = ${o.K}, V = ${o.V}; this device (or the plan's loopLimit) stops an invocation after ${limit} (budget ${budget})`,
    {
      argument: 'K',
      actual: o.K,
      expected: `a smaller K (or V), or a device with a higher loop limit (loopLimit = ${limit})`,
    },
  );
}

/**
 * Sizes the segments and splits of a plan from the loop bounds (`loops.ts`) and the budget of the
 * device's loop limit (or the plan's lower `loopLimit`) with `segment()` (src/gpu/segments.ts), or
 * throws `E_LIMIT` (argument `K`) where even one token / chunk / column would pass it.
 *
 * @example
 * planLoops(dev, resolveScanOptions({ H: 1, K: 64, V: 64, T: 1000, gate: 'scalar', delta: false, mode: 'recurrent' }));
 * // on llvmpipe: { segments: 3, segmentLength: 449, ... }
 */
export function planLoops(ctx: TesseraDevice, o: Resolved): LinearLoopPlan {
  const limit = planLoopLimit(ctx, o.loopLimit);
  const budget = loopBudget(limit);
  const { cu } = o;
  let maxLen = 0;
  let maxChunks = 0;
  for (let i = 1; i < cu.length; i++) {
    const len = cu[i]! - cu[i - 1]!;
    maxLen = Math.max(maxLen, len);
    maxChunks = Math.max(maxChunks, Math.ceil(len / CHUNK));
  }
  const bounds: Record<string, number> = {};
  const err = (what: string) => ({
    op: o.op,
    what,
    argument: 'K',
    actual: o.K,
    expected: `a smaller K (or V), or a device with a higher loop limit (loopLimit = ${limit})`,
  });
  if (o.mode === 'recurrent') {
    const s = segment(maxLen, (n) => recurrentLoopIterations(o, n), limit, err('one token of the recurrent form'));
    bounds.recurrent = s.bound;
    return { budget, segments: s.count, segmentLength: s.length, solveSplit: 1, bounds };
  }
  const s = segment(maxChunks, (n) => scanLoopIterations(o, n), limit, err('one chunk of the chunk scan'));
  bounds.scan = s.bound;
  const wg = wgCols(ctx);
  const fixed: [string, number][] = [
    ['convert', directInputs(o) ? 0 : convertLoopIterations(o)],
    ['prep', prepLoopIterations(o, WG_ROWS)],
    ['intra', intraLoopIterations(o, wg.rows)],
    ['output', outputLoopIterations(o)],
  ];
  for (const [pass, n] of fixed) {
    if (n > budget) loopLimitError(o, `the chunked form's ${pass} pass`, n, budget, limit);
    if (n > 0) bounds[pass] = n;
  }
  let solveSplit = 1;
  if (o.delta) {
    const maxSplit = Math.ceil((Math.ceil(o.K / 4) + Math.ceil(o.V / 4)) / wg.solve);
    while (solveSplit < maxSplit && solveLoopIterations(o, wg.solve, solveSplit) > budget) solveSplit++;
    const n = solveLoopIterations(o, wg.solve, solveSplit);
    if (n > budget) loopLimitError(o, "the chunked form's WY solve", n, budget, limit);
    bounds.solve = n;
  }
  return { budget, segments: s.count, segmentLength: s.length, solveSplit, bounds };
}

/*
 * Binding tables of the passes (src/gpu/bindings.ts): key order = @binding numbers, keys = the
 * WGSL names. Optional bindings are declared by the variant (absent: an unbound private
 * placeholder behind a GATE / DELTA / NORM flag that is off), so no pass binds a dummy buffer.
 * Still always bound, as a 16-byte workspace where the variant does not use it: GAM with gate
 * 'none' (read by intra, solve and scan; every read sits behind a GATE test, but the passes keep
 * one table for the cumulative gates rather than one variant more each).
 */
const F = 'array<f32>';
const F4 = 'array<vec4<f32>>';
const RECURRENT = bindingTable('linear/recurrent', {
  Qb: 'read',
  Kb: 'read',
  Vb: 'read',
  Gb: optional('read', F), // GATE != 0: g, or gamma (constant)
  mt: 'read',
  BE: optional('read', F), // DELTA: beta
  Ob: 'rw',
  ST: 'rw',
  params: 'uniform',
  z_in: optional('read', F), // NORM
  z_out: optional('rw', F), // NORM
});
const CONVERT = bindingTable('linear/convert', {
  Qb: 'read',
  Kb: 'read',
  Vb: 'read',
  QC: 'rw',
  KC: 'rw',
  VC: 'rw',
  params: 'uniform',
});
const PREP = bindingTable('linear/prep', {
  QC: 'read',
  KC: 'read',
  Gb: optional('read', F), // GATE != 0
  mt: 'read',
  GAM: 'rw',
  QG: 'rw',
  KD: 'rw',
  KF: optional('rw', F4), // GATE == 2
  params: 'uniform',
});
const INTRA = bindingTable('linear/intra', {
  QC: 'read',
  KC: 'read',
  GAM: 'read',
  KF: optional('read', F4), // GATE == 2
  BE: optional('read', F), // DELTA
  mt: 'read',
  PT: 'rw',
  AM: optional('rw', F), // DELTA
  params: 'uniform',
});
const SOLVE = bindingTable('linear/solve', {
  AM: 'read',
  KC: 'read',
  VC: 'read',
  GAM: 'read',
  BE: 'read',
  mt: 'read',
  WM: 'rw',
  UM: 'rw',
  params: 'uniform',
});
const SCAN = bindingTable('linear/scan', {
  W: optional('read', F4), // DELTA
  UB: 'read',
  KD: 'read',
  GAM: 'read',
  mt: 'read',
  HS: 'rw',
  VN: optional('rw', F), // DELTA: V_new
  ST: 'rw',
  params: 'uniform',
  z_in: optional('read', F4), // NORM
  z_out: optional('rw', F), // NORM
});
const OUTPUT = bindingTable('linear/output', {
  QG: 'read',
  PT: 'read',
  UB: 'read',
  HS: 'read',
  mt: 'read',
  Ob: 'rw',
  params: 'uniform',
});

type Spec<T extends { variant(f: never): BindingVariant }> = PipelineSpec<ReturnType<T['variant']>>;
interface Specs {
  recurrent?: Spec<typeof RECURRENT>;
  convert?: Spec<typeof CONVERT>;
  prep?: Spec<typeof PREP>;
  intra?: Spec<typeof INTRA>;
  solve?: Spec<typeof SOLVE>;
  scan?: Spec<typeof SCAN>;
  output?: Spec<typeof OUTPUT>;
}
type Passes = { [P in keyof Specs]?: Pipeline<NonNullable<Specs[P]>['bindings']> };

type SpecOptions = Pick<
  Resolved,
  'K' | 'V' | 'gate' | 'delta' | 'normalize' | 'dtype' | 'vDtype' | 'outDtype' | 'mode'
>;

/** The pipeline specs of a plan's passes (pure: `wg` is the adapter class's tuning). */
function scanSpecs(o: SpecOptions, wg: (typeof SCAN_TUNING)['cpu']): Specs {
  const kmax = kmaxOf(o.K);
  const zmax = o.normalize ? kmax : 1;
  const G = GATE_CODE[o.gate];
  const gated = o.gate !== 'none';
  const qk = dtypeCode(o.dtype);
  const vd = dtypeCode(o.vDtype);
  const od = dtypeCode(o.outDtype);
  if (o.mode === 'recurrent') {
    return {
      recurrent: {
        shader: program('recurrent', recurrentWgsl, kmax, zmax),
        bindings: RECURRENT.variant({ Gb: gated, BE: o.delta, z_in: o.normalize, z_out: o.normalize }),
        constants: {
          WG: wg.recurrent,
          DT_QK: qk,
          DT_V: vd,
          OUT_DT: od,
          GATE: G,
          DELTA: +o.delta,
          NORM: +o.normalize,
        },
      },
    };
  }
  return {
    convert: directInputs(o)
      ? undefined
      : {
          shader: program('convert', convertWgsl, kmax, 1),
          bindings: CONVERT.variant({}),
          constants: { WG: WG_ROWS, DT_QK: qk, DT_V: vd },
        },
    prep: {
      shader: program('prep', prepWgsl, kmax, 1),
      bindings: PREP.variant({ Gb: gated, KF: o.gate === 'vector' }),
      constants: { WG: WG_ROWS, GATE: G },
    },
    intra: {
      shader: program('intra', intraWgsl, kmax, 1),
      bindings: INTRA.variant({ BE: o.delta, KF: o.gate === 'vector', AM: o.delta }),
      constants: { WG: wg.rows, GATE: G, DELTA: +o.delta },
    },
    solve: o.delta
      ? {
          shader: program('solve', solveWgsl, kmax, 1),
          bindings: SOLVE.variant({}),
          constants: { WG: wg.solve, GATE: G },
        }
      : undefined,
    scan: {
      shader: program('scan', scanWgsl, kmax, 1),
      bindings: SCAN.variant({ W: o.delta, VN: o.delta, z_in: o.normalize, z_out: o.normalize }),
      constants: { WG: wg.scan, GATE: G, DELTA: +o.delta, NORM: +o.normalize },
    },
    output: {
      shader: program('output', outputWgsl, kmax, 1),
      bindings: OUTPUT.variant({}),
      constants: { WG: wg.rows, OUT_DT: od, NORM: +o.normalize },
    },
  };
}

/** @internal The WGSL a pass compiles for these options, optional bindings declared (tests' loop-counting builds). */
export function passShader(pass: keyof Specs, o: SpecOptions): ShaderSource {
  const spec = scanSpecs(o, SCAN_TUNING.cpu)[pass];
  if (!spec) throw new TesseraError('E_STATE', `the linear scan has no ${pass} pass for these options`);
  return pipelineShader(spec as PipelineSpec);
}

// Every variant of the tables: each gate with and without the delta rule, the normaliser, both
// forms, converted and direct inputs (test/bindings.test.ts).
registerPasses('linear', () => {
  const out: PipelineSpec[] = [];
  const combos: [GateMode, boolean, boolean][] = [['none', false, true]];
  for (const gate of Object.keys(GATE_CODE) as GateMode[])
    for (const delta of [false, true]) combos.push([gate, delta, false]);
  for (const [gate, delta, normalize] of combos) {
    for (const mode of ['recurrent', 'chunk'] as const) {
      for (const dtype of ['f32', 'f16'] as const) {
        const sp = scanSpecs(
          { K: 64, V: 64, gate, delta, normalize, dtype, vDtype: dtype, outDtype: dtype, mode },
          SCAN_TUNING.cpu,
        );
        for (const x of Object.values(sp)) if (x) out.push(x as PipelineSpec);
      }
    }
  }
  return out;
});

/**
 * Workgroup sizes. The recurrent and scan passes have one invocation per (pair / vec4 of) state
 * columns and loop over tokens; on the CPU adapter (SwiftShader runs a workgroup on one thread,
 * 4 lanes at a time) small workgroups spread one head over the cores; on GPUs larger ones fill
 * the SIMD units (`SCAN_TUNING`, per adapter class; a plan reads it when created). The blocked forward substitution (solve) likewise ran about a third faster in
 * workgroups of 4 on SwiftShader. The other passes use 64 invocations per (chunk, value head).
 */
export const SCAN_TUNING = {
  cpu: { recurrent: 4, scan: 4, solve: 4, rows: 64 },
  gpu: { recurrent: 32, scan: 32, solve: 64, rows: 64 },
};
function wgCols(ctx: TesseraDevice): { recurrent: number; scan: number; solve: number; rows: number } {
  return SCAN_TUNING[ctx.adapterClass];
}
const WG_ROWS = 64;

/**
 * A planned linear scan (one op, one shape). Create with {@link planLinearScan}; `run` encodes
 * the recurrent form or the five passes of the chunked form. On a loop-capped adapter (llvmpipe)
 * the recurrent form and the chunk scan run as several dispatches over segments of every sequence
 * (`loops`, sized by `loops.ts`), the state carried in place between them.
 */
export class LinearScanPlan extends KernelPlan<LinearScanTensors> {
  readonly options: Readonly<Resolved>;
  readonly nChunks: number;
  /** Segments and splits chosen for the device's loop limit (see {@link LinearLoopPlan}). */
  readonly loops: Readonly<LinearLoopPlan>;
  private readonly passes: Passes;
  /** One LinParams slot per segment, `paramSlot` bytes apart (uniform offset alignment). */
  private readonly params: GPUBuffer;
  private readonly paramSlot: number;
  private readonly meta: GPUBuffer;
  private readonly gammaBuf?: GPUBuffer;
  private readonly zeroZ?: GPUBuffer;
  private readonly zOut?: GPUBuffer;
  private readonly zPing?: GPUBuffer;
  private readonly stateWs?: GPUBuffer;
  private ws: Record<string, GPUBuffer> = {};

  private constructor(ctx: TesseraDevice, o: Resolved, passes: Passes, loops: LinearLoopPlan) {
    super(ctx);
    // a limit found after some buffers were created (a workspace past one binding) frees them
    try {
      this.options = o;
      this.passes = passes;
      this.loops = loops;
      const { N, HV, K, V, cu } = o;
      const chunks: number[] = [];
      const seqChunk: number[] = [0];
      for (let n = 0; n < N; n++) {
        for (let s = cu[n]!; s < cu[n + 1]!; s += CHUNK) chunks.push(s, Math.min(CHUNK, cu[n + 1]! - s), n);
        seqChunk.push(chunks.length / 3);
      }
      this.nChunks = chunks.length / 3;
      const meta = new Uint32Array([...cu, ...chunks, ...seqChunk]);
      this.meta = this.workspace(meta.byteLength, 'linear.meta');
      ctx.device.queue.writeBuffer(this.meta, 0, meta);
      const VS = V + (o.normalize ? 1 : 0);
      const base = {
        T: o.T,
        N,
        nChunks: this.nChunks,
        H: o.H,
        HV,
        K,
        V,
        ratio: HV / o.H,
        VS,
        chunkOff: cu.length,
        seqChunkOff: cu.length + chunks.length,
        K4: Math.ceil(K / 4),
        V4: Math.ceil(V / 4),
        VS4: Math.ceil(VS / 4),
        KP: 4 * Math.ceil(K / 4),
        scale: o.scale,
        solveSplit: loops.solveSplit,
      };
      this.paramSlot = Math.max(LIN_PARAMS.size, ctx.limits.minUniformBufferOffsetAlignment);
      const slots = new Uint8Array(this.paramSlot * loops.segments);
      for (let i = 0; i < loops.segments; i++) {
        const seg = {
          begin: i * loops.segmentLength,
          end: (i + 1) * loops.segmentLength,
          carry: i > 0,
          last: i === loops.segments - 1,
        };
        slots.set(new Uint8Array(LIN_PARAMS.pack({ ...base, ...segmentUniforms(seg) })), i * this.paramSlot);
      }
      this.params = this.workspace(
        slots.byteLength,
        'linear.params',
        GPUBufferUsageFlags.UNIFORM | GPUBufferUsageFlags.COPY_DST,
      );
      ctx.device.queue.writeBuffer(this.params, 0, slots);
      if (o.gamma) {
        this.gammaBuf = this.workspace(o.gamma.byteLength, 'linear.gamma');
        ctx.device.queue.writeBuffer(this.gammaBuf, 0, o.gamma as Float32Array<ArrayBuffer>);
      }
      if (o.normalize) {
        // z buffers are read as vec4 rows by the chunk scan: 16-byte multiples
        const zBytes = Math.ceil((N * HV * K) / 4) * 16;
        this.zeroZ = this.workspace(zBytes, 'linear.z0');
        this.zOut = this.workspace(zBytes, 'linear.zt');
        // segments pass z from one buffer to the next: a third where z0 and zt are both internal
        if (loops.segments > 1) this.zPing = this.workspace(zBytes, 'linear.zping');
      }
      this.stateWs = this.workspace(N * HV * K * V * 4, 'linear.state');
      if (o.mode === 'chunk') {
        const T = o.T;
        const K4 = Math.ceil(K / 4);
        const V4 = Math.ceil(V / 4);
        const VS4 = Math.ceil(VS / 4);
        const direct = directInputs(o);
        const r16 = (x: number) => Math.max(16, Math.ceil(x / 16) * 16);
        const rowsK = T * HV * K4 * 16;
        const rowsV = T * HV * V4 * 16;
        const CC = this.nChunks * HV * CHUNK * CHUNK * 4;
        const sizes: Record<string, number> = {
          qc: direct ? 0 : T * o.H * K4 * 16,
          kc: direct ? 0 : T * o.H * K4 * 16,
          vc: direct ? 0 : rowsV,
          gam: r16(o.gate === 'vector' ? rowsK : o.gate === 'none' ? 16 : T * HV * 4),
          qg: rowsK,
          kd: rowsK,
          kf: o.gate === 'vector' ? rowsK : 0,
          P: CC,
          A: o.delta ? CC : 0,
          W: o.delta ? rowsK : 0,
          U: o.delta ? rowsV : 0,
          hs: this.nChunks * HV * 4 * K4 * VS4 * 16,
          vn: o.delta ? rowsV : 0,
        };
        for (const [name, bytes] of Object.entries(sizes)) {
          if (bytes > ctx.limits.maxStorageBufferBindingSize) {
            throw new TesseraError(
              'E_LIMIT',
              `${o.op}: the chunked form's workspace "${name}" needs ${bytes} bytes for T = ${T}, more than one binding holds`,
              {
                argument: 'T',
                actual: T,
                expected: `fewer tokens per call (stream long inputs with LinearStream, src/stream/linear.ts), or a device with maxStorageBufferBindingSize >= ${bytes}`,
              },
            );
          }
        }
        // 0: the variant leaves the binding out (kf without per-channel gates, A without the delta rule)
        for (const [name, bytes] of Object.entries(sizes))
          if (bytes > 0) this.ws[name] = this.workspace(bytes, `linear.${name}`);
      }
    } catch (e) {
      this.dispose();
      throw e;
    }
  }

  /** @internal use {@link planLinearScan}. */
  static async create(device: DeviceLike, opts: LinearScanOptions): Promise<LinearScanPlan> {
    const ctx = ctxOf(device);
    const o = resolveScanOptions(opts);
    const loops = planLoops(ctx, o);
    const sp = scanSpecs(o, wgCols(ctx));
    const get = <B extends BindingVariant>(x: PipelineSpec<B> | undefined) =>
      x ? getPipeline(ctx, x) : Promise.resolve(undefined);
    const [recurrent, convert, prep, intra, solve, scan, output] = await Promise.all([
      get(sp.recurrent),
      get(sp.convert),
      get(sp.prep),
      get(sp.intra),
      get(sp.solve),
      get(sp.scan),
      get(sp.output),
    ]);
    const passes: Passes = { recurrent, convert, prep, intra, solve, scan, output };
    return new LinearScanPlan(ctx, o, passes, loops);
  }

  /** Checks the tensors against the plan (shapes, dtypes, usages); throws before encoding. */
  checkTensors(t: LinearScanTensors): void {
    const { T, H, HV, K, V, N, gate, delta, normalize, dtype, vDtype, outDtype } = this.options;
    if (!t || typeof t !== 'object') fail('E_ARG', 'tensors', 'is not an object;', t, '{ q, k, v, o, ... }');
    const chk = (x: GpuTensor | undefined, name: string, shape: number[], dtypes: FloatDType[], usage?: number) => {
      const r = checkTensor(x, name, { rank: shape.length, shape, dtypes, usage });
      checkBindingSize(this.ctx, r, name);
    };
    chk(t.q, 'q', [T, H, K], [dtype]);
    chk(t.k, 'k', [T, H, K], [dtype]);
    chk(t.v, 'v', [T, HV, V], [vDtype]);
    chk(t.o, 'o', [T, HV, V], [outDtype]);
    if (gate === 'scalar') chk(t.g, 'g', [T, HV], ['f32']);
    else if (gate === 'vector') chk(t.g, 'g', [T, HV, K], ['f32']);
    else if (t.g !== undefined)
      fail('E_ARG', 'g', `this op takes no gate tensor (gate '${gate}');`, 'a tensor', 'undefined');
    if (delta) chk(t.beta, 'beta', [T, HV], ['f32']);
    else if (t.beta !== undefined) fail('E_ARG', 'beta', 'this op takes no beta;', 'a tensor', 'undefined');
    const S = [N, HV, K, V];
    const inPlace = sameTensor(t.initialState, t.finalState);
    if (t.initialState !== undefined)
      chk(
        t.initialState,
        'initialState',
        S,
        ['f32'],
        inPlace ? GPUBufferUsageFlags.STORAGE : GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_SRC,
      );
    if (t.finalState !== undefined)
      chk(t.finalState, 'finalState', S, ['f32'], GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST);
    if (normalize) {
      // the chunked scan reads z0 through a 16-byte-aligned copy when N*HV*K is not a multiple of 4
      const zCopy = this.options.mode === 'chunk' && (N * HV * K) % 4 !== 0;
      if (t.z0 !== undefined)
        chk(
          t.z0,
          'z0',
          [N, HV, K],
          ['f32'],
          zCopy ? GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_SRC : undefined,
        );
      if (t.zt !== undefined)
        chk(t.zt, 'zt', [N, HV, K], ['f32'], GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST);
    } else if (t.z0 !== undefined || t.zt !== undefined) {
      fail(
        'E_ARG',
        t.z0 !== undefined ? 'z0' : 'zt',
        'only linear attention with normalize has a z state;',
        'a tensor',
        'undefined',
      );
    }
  }

  run(encoder: GPUCommandEncoder, t: LinearScanTensors): void {
    this.assertUsable();
    this.checkTensors(t);
    const o = this.options;
    const { N, HV, K, V } = o;
    const nSeg = this.loops.segments;
    const stateBytes = N * HV * K * V * 4;
    const state: GpuTensor = t.finalState ?? { buffer: this.stateWs!, shape: [N, HV, K, V], dtype: 'f32' };
    if (t.initialState && !sameTensor(t.initialState, state)) {
      encoder.copyBufferToBuffer(
        t.initialState.buffer,
        t.initialState.offset ?? 0,
        state.buffer,
        state.offset ?? 0,
        stateBytes,
      );
    } else if (!t.initialState) {
      encoder.clearBuffer(state.buffer, state.offset ?? 0, stateBytes);
    }
    // z (normaliser) of segment i: read from zIn[i], written to zOut[i] = zIn[i + 1]
    const zIn: BindingResource[] = [];
    const zOut: BindingResource[] = [];
    let zCopyOut = false;
    if (o.normalize) {
      const zBytes = N * HV * K * 4;
      // the chunk scan reads z_in as vec4s: a user tensor of N*HV*K floats binds only when that is a multiple of 4
      const direct = o.mode === 'recurrent' || (N * HV * K) % 4 === 0;
      let first: BindingResource;
      if (t.z0 && direct) first = res(t.z0);
      else if (t.z0) {
        encoder.copyBufferToBuffer(t.z0.buffer, t.z0.offset ?? 0, this.zeroZ!, 0, zBytes);
        first = { buffer: this.zeroZ! };
      } else {
        encoder.clearBuffer(this.zeroZ!, 0, zBytes);
        first = { buffer: this.zeroZ! };
      }
      const userOut = !!t.zt && !sameTensor(t.zt, t.z0) && (direct || nSeg === 1);
      const last: BindingResource = userOut ? res(t.zt!) : { buffer: this.zOut! };
      zCopyOut = !!t.zt && !userOut;
      // the last segment writes `last`; earlier ones alternate with a buffer that is neither it nor the first input
      const other = [this.zeroZ, this.zOut, this.zPing].find((b) => b && b !== last.buffer && b !== first.buffer);
      for (let i = 0; i < nSeg; i++) {
        zOut.push((nSeg - 1 - i) % 2 === 0 ? last : { buffer: other! });
        zIn.push(i === 0 ? first : zOut[i - 1]!);
      }
    }
    // optional bindings: present exactly where the variant binds them (scan.ts tables)
    const gate = t.g ? res(t.g) : this.gammaBuf ? { buffer: this.gammaBuf } : undefined;
    const Gb = o.gate !== 'none' ? { Gb: gate! } : {};
    const BE = o.delta ? { BE: res(t.beta!) } : {};
    const z = (i: number) => (o.normalize ? { z_in: zIn[i]!, z_out: zOut[i]! } : {});
    const mt = { buffer: this.meta };
    const params = (i: number): BindingResource => ({
      buffer: this.params,
      offset: i * this.paramSlot,
      size: LIN_PARAMS.size,
    });
    const P = this.passes;
    if (P.recurrent) {
      const tiles = Math.ceil(Math.ceil(V / 2) / wgCols(this.ctx).recurrent);
      const grid = grid2d(this.ctx, N * HV * tiles);
      const [Qb, Kb, Vb, Ob, ST] = [res(t.q), res(t.k), res(t.v), res(t.o), res(state)];
      for (let i = 0; i < nSeg; i++) {
        this.dispatch(encoder, P.recurrent, { Qb, Kb, Vb, ...Gb, mt, ...BE, Ob, ST, params: params(i), ...z(i) }, grid);
      }
    } else {
      const w = this.ws;
      const b = (x: GPUBuffer) => ({ buffer: x });
      const perChunk = grid2d(this.ctx, this.nChunks * HV);
      const rows = o.T * (o.H + HV);
      const p0 = params(0);
      if (P.convert)
        this.dispatch(
          encoder,
          P.convert,
          { Qb: res(t.q), Kb: res(t.k), Vb: res(t.v), QC: b(w.qc!), KC: b(w.kc!), VC: b(w.vc!), params: p0 },
          grid2d(this.ctx, Math.ceil(rows / WG_ROWS)),
        );
      // f32 inputs with K and V multiples of 4 are already vec4 rows: bound as they are
      const QC = P.convert ? b(w.qc!) : res(t.q);
      const KC = P.convert ? b(w.kc!) : res(t.k);
      const VC = P.convert ? b(w.vc!) : res(t.v);
      const [GAM, QG, KD, PT] = [b(w.gam!), b(w.qg!), b(w.kd!), b(w.P!)];
      const KF = w.kf ? { KF: b(w.kf) } : {};
      const AM = o.delta ? { AM: b(w.A!) } : {};
      this.dispatch(encoder, P.prep!, { QC, KC, ...Gb, mt, GAM, QG, KD, ...KF, params: p0 }, perChunk);
      this.dispatch(encoder, P.intra!, { QC, KC, GAM, ...KF, ...BE, mt, PT, ...AM, params: p0 }, perChunk);
      if (P.solve) {
        const grid = grid2d(this.ctx, this.nChunks * HV * this.loops.solveSplit);
        const BE = res(t.beta!);
        this.dispatch(
          encoder,
          P.solve,
          { AM: b(w.A!), KC, VC, GAM, BE, mt, WM: b(w.W!), UM: b(w.U!), params: p0 },
          grid,
        );
      }
      const UB = o.delta ? b(w.U!) : VC;
      const VS4 = Math.ceil((V + (o.normalize ? 1 : 0)) / 4);
      const grid = grid2d(this.ctx, N * HV * Math.ceil(VS4 / wgCols(this.ctx).scan));
      const HS = b(w.hs!);
      const WVN = o.delta ? { W: b(w.W!), VN: b(w.vn!) } : {};
      for (let i = 0; i < nSeg; i++) {
        this.dispatch(
          encoder,
          P.scan!,
          { ...WVN, UB, KD, GAM, mt, HS, ST: res(state), params: params(i), ...z(i) },
          grid,
        );
      }
      this.dispatch(
        encoder,
        P.output!,
        { QG, PT, UB: o.delta ? b(w.vn!) : VC, HS, mt, Ob: res(t.o), params: p0 },
        grid2d(this.ctx, this.nChunks * HV * Math.ceil((16 * Math.ceil(V / 4)) / wgCols(this.ctx).rows)),
      );
    }
    if (zCopyOut) {
      encoder.copyBufferToBuffer(this.zOut!, 0, t.zt!.buffer, t.zt!.offset ?? 0, N * HV * K * 4);
    }
  }
}

/**
 * Plans the general scan (see the file header). The op wrappers are usually what you want.
 *
 * @example
 * const plan = await planLinearScan(dev, { H: 2, K: 64, V: 64, T: 1000, gate: 'scalar', delta: true });
 * plan.run(encoder, { q, k, v, g, beta, o, initialState, finalState });
 */
export function planLinearScan(device: DeviceLike, opts: LinearScanOptions): Promise<LinearScanPlan> {
  return LinearScanPlan.create(device, opts);
}

/**
 * Reads g and beta back and checks their values (the kernels clamp instead of failing): log-gates
 * must be finite-or-(-inf) and <= 0, beta within [0, betaMax]. Throws `E_NAN` / `E_ARG` naming
 * the tensor and the first bad index. Costs a readback; used by the convenience calls.
 *
 * @example
 * await checkGateValues(dev, { g, beta }, { betaMax: 1 });
 */
export async function checkGateValues(
  device: DeviceLike,
  t: { g?: GpuTensor; beta?: GpuTensor },
  opts: { betaMax?: number } = {},
): Promise<void> {
  const ctx = ctxOf(device);
  const read = async (x: GpuTensor) => {
    const n = x.shape.reduce((a, b) => a * b, 1);
    return new Float32Array(await ctx.readback(x.buffer, n * 4, x.offset ?? 0));
  };
  if (t.g) {
    const g = await read(t.g);
    for (let i = 0; i < g.length; i++) {
      const x = g[i]!;
      if (Number.isNaN(x)) fail('E_NAN', 'g', `element ${i} is NaN;`, x, 'log-decays <= 0 (natural log)');
      if (x > 0)
        fail(
          'E_ARG',
          'g',
          `element ${i} is a positive log-gate;`,
          x,
          'log-decays <= 0 (natural log; pass log(a), not a)',
        );
    }
  }
  if (t.beta) {
    const b = await read(t.beta);
    const hi = opts.betaMax ?? 1;
    for (let i = 0; i < b.length; i++) {
      const x = b[i]!;
      if (Number.isNaN(x)) fail('E_NAN', 'beta', `element ${i} is NaN;`, x, `values in [0, ${hi}]`);
      if (x < 0 || x > hi) fail('E_ARG', 'beta', `element ${i} is outside the range;`, x, `values in [0, ${hi}]`);
    }
  }
}
