/**
 * The plan/run convention every kernel follows (FlashInfer's split):
 * - `plan*()` once per shape: validate, choose the specialisation, compile or fetch the cached
 *   pipeline, allocate the uniform block and any workspace.
 * - `plan.run(encoder, tensors)` many times: check the tensors against the plan, bind, and
 *   encode dispatches into the caller's `GPUCommandEncoder`. It allocates no GPU memory.
 * - `plan.dispose()` frees what the plan allocated.
 * Convenience calls (`attention()`, `merge()`) plan, run, submit and wait in one go.
 *
 * Every `run` first checks the GPU buffers of its inputs (see {@link checkInputBuffers}): a buffer
 * Tessera knows to be destroyed, or to belong to another device, is an `E_BUFFER` naming the
 * argument, before anything is encoded (WebGPU itself only reports either at `submit`).
 */
import { TesseraError, fail } from './errors.js';
import { bufferProblem, checkBuffer, type TesseraDevice } from './gpu/device.js';
import { ConflictMemo } from './conflict-memo.js';
import {
  bindGroup,
  type BindingResource,
  type Pipeline,
  type PipelineBindings,
  type ResourcesFor,
} from './gpu/pipeline.js';
import type { UniformLayout } from './gpu/uniforms.js';
import { byteSize, checkTensor, type DType, type FloatDType, type GpuTensor } from './tensor.js';
import { GPUBufferUsageFlags } from './gpu/flags.js';

export abstract class KernelPlan<Inputs> {
  readonly ctx: TesseraDevice;
  private disposed = false;
  private readonly owned: GPUBuffer[] = [];

  protected constructor(ctx: TesseraDevice) {
    this.ctx = ctx;
    // The one place that sees every plan's inputs with their names: `run` (the subclass's method,
    // already on the prototype chain here) is shadowed by an own property that checks the inputs'
    // buffers against this device first, so no kernel has to remember to.
    const memo = new ConflictMemo(); // the same inputs as the last run skip the conflict check
    const encode = Reflect.get(this, 'run') as (encoder: GPUCommandEncoder, inputs: Inputs) => void;
    Object.defineProperty(this, 'run', {
      value: (encoder: GPUCommandEncoder, inputs: Inputs): void => {
        checkInputBuffers(ctx, inputs);
        if (!memo.same(inputs)) {
          checkBufferConflicts(inputs, this.writes);
          memo.remember(inputs);
        }
        encode.call(this, encoder, inputs);
      },
      writable: true,
      configurable: true,
      enumerable: false,
    });
  }

  /**
   * Encodes the kernel into `encoder`. Validates `inputs` first (buffers destroyed or of another
   * device, then shapes, dtypes, sizes and usages); encodes nothing on error.
   */
  abstract run(encoder: GPUCommandEncoder, inputs: Inputs): void;

  /**
   * The inputs `run` writes (bound read-write, or copied into). Defaults to the output names the
   * kernels share ({@link DEFAULT_WRITES}); plans whose outputs have other names override it.
   */
  protected get writes(): readonly string[] {
    return DEFAULT_WRITES;
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  /** Frees the GPU memory the plan owns (uniforms, workspace). Idempotent. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const b of this.owned) this.ctx.destroyBuffer(b);
    this.owned.length = 0;
  }

  protected assertUsable(): void {
    if (this.disposed) throw new TesseraError('E_STATE', `${this.constructor.name}.run: the plan was disposed`);
    this.ctx.assertAlive();
  }

  /** A uniform buffer owned by the plan, written once with `values`. */
  protected uniform<K extends string>(layout: UniformLayout<K>, values: Readonly<Record<K, number>>): GPUBuffer {
    let data: ArrayBuffer;
    try {
      data = layout.pack(values);
    } catch (e) {
      // a value the shader cannot take: the plan is rejected and frees what it already made
      this.dispose();
      throw e;
    }
    const b = this.ctx.createBuffer({
      size: layout.size,
      usage: GPUBufferUsageFlags.UNIFORM | GPUBufferUsageFlags.COPY_DST,
      label: `tessera.${layout.name}`,
    });
    this.ctx.device.queue.writeBuffer(b, 0, data);
    this.owned.push(b);
    return b;
  }

  /** A workspace buffer owned by the plan. */
  protected workspace(
    size: number,
    label: string,
    usage = GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_SRC | GPUBufferUsageFlags.COPY_DST,
  ): GPUBuffer {
    const b = this.ctx.createBuffer({ size: Math.max(16, size), usage, label: `tessera.${label}` });
    this.owned.push(b);
    return b;
  }

  /** Records one dispatch of `p` in its own compute pass (resources keyed by name for a binding table). */
  protected dispatch<B extends PipelineBindings>(
    encoder: GPUCommandEncoder,
    p: Pipeline<B>,
    resources: ResourcesFor<B>,
    workgroups: readonly [number, number?, number?],
  ): void {
    const pass = encoder.beginComputePass({ label: p.spec.shader.name });
    pass.setPipeline(p.pipeline);
    pass.setBindGroup(0, bindGroup(this.ctx, p, resources));
    pass.dispatchWorkgroups(workgroups[0], workgroups[1] ?? 1, workgroups[2] ?? 1);
    pass.end();
  }
}

/**
 * A tensor as a binding resource: its byte offset and exactly its size, so that a tensor inside a
 * buffer larger than `maxStorageBufferBindingSize` still binds.
 */
export function res(t: GpuTensor): BindingResource {
  return { buffer: t.buffer, offset: t.offset ?? 0, size: Math.max(4, byteSize(t.shape, t.dtype)) };
}

/**
 * Checks the GPU buffers of a plan's inputs against `ctx` before anything is encoded: each
 * top-level value that is a `GPUBuffer` (named by its key, e.g. `pages`) or a tensor (named
 * `<key>.buffer`) must not be known as destroyed or as another device's buffer (`E_BUFFER`; see
 * `checkBuffer`). Other values, and buffers Tessera does not know, are left to the kernel's own
 * checks. Costs a `WeakSet` and a `WeakMap` lookup per input.
 */
export function checkInputBuffers(ctx: TesseraDevice, inputs: unknown): void {
  if (inputs === null || typeof inputs !== 'object') return;
  const t = inputs as Record<string, unknown>;
  for (const key in t) {
    if (!Object.prototype.hasOwnProperty.call(t, key)) continue; // own keys, as Object.keys (no array per run)
    const v = t[key];
    if (v === null || typeof v !== 'object') continue;
    const b = (v as { buffer?: unknown }).buffer;
    // The argument's name is built only for an error (no string per input and run).
    if (b !== null && typeof b === 'object') {
      if (bufferProblem(b, ctx) !== null) checkBuffer(ctx, b, `${key}.buffer`);
    } else if (bufferProblem(v, ctx) !== null) checkBuffer(ctx, v, key); // only a GPUBuffer has a problem
  }
}

/** Output names shared by the kernels (`o`, `lse`, top-k `indices` / `values`, ...). */
export const DEFAULT_WRITES: readonly string[] = [
  'o',
  'lse',
  'indices',
  'values',
  'selection',
  'blockIndices',
  'finalState',
  'zt',
];

/** Input / output pairs that may be one tensor by design (the linear state and normaliser updated in place). */
const IN_PLACE: readonly (readonly [string, string])[] = [
  ['initialState', 'finalState'],
  ['z0', 'zt'],
];

interface View {
  name: string;
  buffer: GPUBuffer;
  lo: number;
  hi: number;
  written: boolean;
}

/**
 * Checks buffer conflicts that WebGPU would only report at `submit` (as a validation error), before
 * anything is encoded: a buffer that is mapped (`E_BUFFER` naming it), an output sharing its buffer
 * with an input (a buffer bound read-only and read-write in one dispatch, e.g. `o` the same buffer
 * as `q`), and two outputs whose byte ranges overlap (e.g. `o` and `lse`). Two outputs in
 * disjoint ranges of one buffer, and the pairs in `IN_PLACE`, are allowed. The error names the
 * output (`o.buffer`, or the raw buffer's key) and the other argument in its message.
 */
export function checkBufferConflicts(inputs: unknown, writes: readonly string[]): void {
  if (inputs === null || typeof inputs !== 'object') return;
  const t = inputs as Record<string, unknown>;
  const views: View[] = [];
  for (const key of Object.keys(t)) {
    const v = t[key];
    if (v === null || typeof v !== 'object') continue;
    const tv = v as { buffer?: unknown; shape?: unknown; dtype?: unknown; offset?: unknown };
    let buffer: GPUBuffer;
    let name: string;
    let lo = 0;
    let hi: number;
    if (tv.buffer !== null && typeof tv.buffer === 'object' && typeof (tv.buffer as GPUBuffer).size === 'number') {
      buffer = tv.buffer as GPUBuffer;
      name = `${key}.buffer`;
      lo = typeof tv.offset === 'number' && Number.isFinite(tv.offset) ? tv.offset : 0;
      let bytes = buffer.size - lo;
      if (
        Array.isArray(tv.shape) &&
        tv.shape.every((d) => Number.isInteger(d) && d >= 0) &&
        typeof tv.dtype === 'string'
      ) {
        try {
          bytes = byteSize(tv.shape as number[], tv.dtype as DType);
        } catch {
          // an unknown dtype: the kernel's own checks name it
        }
      }
      hi = lo + bytes;
    } else if (typeof (v as GPUBuffer).usage === 'number' && typeof (v as GPUBuffer).size === 'number') {
      buffer = v as GPUBuffer;
      name = key;
      hi = buffer.size;
    } else continue;
    const state = (buffer as { mapState?: string }).mapState;
    if (state !== undefined && state !== 'unmapped') {
      throw new TesseraError(
        'E_BUFFER',
        `${name} is ${state === 'pending' ? 'being mapped' : 'mapped'}; a buffer must be unmapped to be used by the GPU`,
        {
          argument: name,
          actual: state,
          expected: 'an unmapped buffer (call unmap() first)',
        },
      );
    }
    views.push({ name, buffer, lo, hi, written: writes.includes(key) });
  }
  for (let i = 0; i < views.length; i++) {
    for (let j = 0; j < views.length; j++) {
      const a = views[i]!;
      const b = views[j]!;
      if (i === j || !a.written || a.buffer !== b.buffer) continue;
      const ka = a.name.replace(/\.buffer$/, '');
      const kb = b.name.replace(/\.buffer$/, '');
      if (IN_PLACE.some(([x, y]) => (x === ka && y === kb) || (x === kb && y === ka))) continue;
      if (b.written) {
        if (j < i || a.hi <= b.lo || b.hi <= a.lo) continue; // report each overlapping pair once
        throw new TesseraError(
          'E_BUFFER',
          `${b.name} overlaps ${a.name} (bytes [${b.lo}, ${b.hi}) and [${a.lo}, ${a.hi}) of one buffer): two outputs may not share memory`,
          {
            argument: b.name,
            expected: 'outputs in disjoint buffers or disjoint byte ranges',
          },
        );
      }
      throw new TesseraError(
        'E_BUFFER',
        `${a.name} is the same GPU buffer as the input ${b.name}: WebGPU rejects a buffer bound read-only and read-write in one dispatch (and the output would overwrite the input)`,
        {
          argument: a.name,
          expected: 'an output buffer that no input of the same call uses',
        },
      );
    }
  }
}

/**
 * Throws `E_LIMIT` when a tensor's binding would exceed the device's storage-binding limit, and
 * `E_BUFFER` (naming `<argument>.buffer`) when its buffer is known to be destroyed or to belong to
 * another device than `ctx`.
 */
export function checkBindingSize(ctx: TesseraDevice, t: GpuTensor, argument: string): void {
  checkBuffer(ctx, t.buffer, `${argument}.buffer`);
  const bytes = byteSize(t.shape, t.dtype);
  if (bytes > ctx.limits.maxStorageBufferBindingSize) {
    throw new TesseraError('E_LIMIT', `${argument}: ${bytes} bytes exceed the device's maxStorageBufferBindingSize`, {
      argument,
      actual: bytes,
      expected: `at most ${ctx.limits.maxStorageBufferBindingSize} bytes per binding (split the work, or request larger limits)`,
    });
  }
}

/**
 * Checks a raw GPUBuffer argument of `run` (a pool, summaries, a selection output): `E_BUFFER`
 * naming `argument` when it is not a GPUBuffer or holds fewer than `bytes` bytes of `what` (its
 * layout, for the message).
 */
export function checkRawBuffer(buffer: GPUBuffer | undefined, argument: string, bytes: number, what: string): void {
  if (!buffer || typeof buffer.size !== 'number')
    fail('E_BUFFER', argument, 'is not a GPUBuffer;', typeof buffer, `a GPUBuffer of ${what}`);
  if (buffer.size < bytes) fail('E_BUFFER', argument, `is smaller than ${what};`, buffer.size, `>= ${bytes} bytes`);
}

/** Runs a plan once (submit and wait, GPU errors typed), then disposes it: the convenience calls' tail. */
export async function runOnceAndDispose<I>(
  ctx: TesseraDevice,
  plan: KernelPlan<I>,
  inputs: I,
  what: string,
): Promise<void> {
  try {
    await runOnce(ctx, plan, inputs, what);
  } finally {
    plan.dispose();
  }
}

/** Plans, runs, submits and waits, with GPU errors captured as typed errors. */
export async function runOnce<I>(ctx: TesseraDevice, plan: KernelPlan<I>, inputs: I, what: string): Promise<void> {
  // Encode and submit inside one synchronous section: concurrent calls never share error scopes.
  const { errors } = ctx.section(what, () => {
    const enc = ctx.device.createCommandEncoder({ label: what });
    plan.run(enc, inputs);
    ctx.device.queue.submit([enc.finish()]);
  });
  await Promise.all([errors, ctx.raceLost(ctx.device.queue.onSubmittedWorkDone())]);
}

/**
 * Throws `E_LIMIT` at plan time when a tensor of this shape and dtype could not be bound (it
 * would exceed the device's `maxStorageBufferBindingSize`), before anything is allocated.
 */
export function checkPlannedSize(ctx: TesseraDevice, argument: string, shape: readonly number[], dtype: DType): void {
  const bytes = byteSize(shape, dtype);
  if (bytes > ctx.limits.maxStorageBufferBindingSize) {
    throw new TesseraError(
      'E_LIMIT',
      `${argument}: [${shape.join(', ')}] ${dtype} is ${bytes} bytes, over the device's maxStorageBufferBindingSize`,
      {
        argument,
        actual: bytes,
        expected: `at most ${ctx.limits.maxStorageBufferBindingSize} bytes per binding (split the batch)`,
      },
    );
  }
}

/** The attention sizes every attention-like plan binds: q, k, v and o. */
export interface AttentionSizes {
  Tq: number;
  Tk: number;
  Hq: number;
  Hkv: number;
  D: number;
  Dv: number;
  dtype: DType;
  outDtype: DType;
}

/** {@link checkPlannedSize} for `q [Tq, Hq, D]`, `k [Tk, Hkv, D]`, `v [Tk, Hkv, Dv]`, `o [Tq, Hq, Dv]`. */
export function checkAttentionSizes(ctx: TesseraDevice, s: AttentionSizes): void {
  checkPlannedSize(ctx, 'q', [s.Tq, s.Hq, s.D], s.dtype);
  checkPlannedSize(ctx, 'k', [s.Tk, s.Hkv, s.D], s.dtype);
  checkPlannedSize(ctx, 'v', [s.Tk, s.Hkv, s.Dv], s.dtype);
  checkPlannedSize(ctx, 'o', [s.Tq, s.Hq, s.Dv], s.outDtype);
}

/**
 * The attention sizes of a convenience call, read from its tensors: `q [Tq, Hq, D]`,
 * `k [Tk, Hkv, D]`, `v [Tk, Hkv, Dv]`; `dtype` from q and `outDtype` from o (when given), unless
 * the call's options (`given`) name them. The plan then checks every tensor against them.
 *
 * @example
 * const plan = await planMoba(ctx, { ...opts, ...attentionSizesOf(t, opts) });
 */
export function attentionSizesOf(
  t: { q: GpuTensor; k: GpuTensor; v: GpuTensor; o?: GpuTensor },
  given?: { dtype?: FloatDType; outDtype?: FloatDType },
): AttentionSizes & { dtype: FloatDType; outDtype: FloatDType } {
  const q = checkTensor(t?.q, 'q', { rank: 3 });
  const k = checkTensor(t.k, 'k', { rank: 3 });
  const v = checkTensor(t.v, 'v', { rank: 3 });
  return {
    Tq: q.shape[0]!,
    Tk: k.shape[0]!,
    Hq: q.shape[1]!,
    Hkv: k.shape[1]!,
    D: q.shape[2]!,
    Dv: v.shape[2]!,
    dtype: given?.dtype ?? (q.dtype as FloatDType),
    outDtype: given?.outDtype ?? ((t.o?.dtype ?? q.dtype) as FloatDType),
  };
}
