/**
 * Device acquisition and the per-device context every kernel uses.
 *
 * `requestDevice()` gets a device in Node (Dawn) or the browser (`navigator.gpu`), negotiating
 * limits: it asks for the adapter's larger storage-binding, buffer and workgroup-storage limits,
 * while every kernel still plans within the WebGPU defaults when that is all there is.
 * `wrapDevice()` adopts a device an engine already holds. Both give a {@link TesseraDevice}: the
 * device plus its features, limits, pipeline cache, buffer tracking and loss state.
 *
 * The concerns around it live beside it: adapter.ts (one classifier: class, name, loop cap),
 * buffers.ts (the buffer registry, which patches device instances only when asked: `trackBuffers`), env.ts
 * (environment variables, read only on request), epoch.ts (submit counting). This module
 * re-exports their public names.
 */
import { TesseraError } from '../errors.js';
import { GPUBufferUsageFlags, GPUMapModeFlags } from './flags.js';
import { classifyAdapter, describeAdapter, type AdapterClass, type AdapterDescription } from './adapter.js';
import {
  bufferErrorFromValidation,
  checkBuffer,
  instrumentDevice,
  onBufferDestroyed,
  registerBuffer,
  type BufferTracking,
} from './buffers.js';

export {
  GALLIVM_LOOP_LIMIT,
  adapterLoopLimit,
  classifyAdapter,
  describeAdapter,
  loopBudget,
  type AdapterClass,
  type AdapterClassification,
  type AdapterDescription,
} from './adapter.js';
export {
  bufferErrorFromValidation,
  bufferProblem,
  checkBuffer,
  type BufferOwner,
  type BufferTracking,
} from './buffers.js';
export { adapterFromEnv } from './env.js';
export { submitEpoch } from './epoch.js';

export interface DeviceFeatures {
  shaderF16: boolean;
  subgroups: boolean;
  timestampQuery: boolean;
}

/** The limits Tessera plans against (the device's, after negotiation). */
export interface TesseraLimits {
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
  maxComputeWorkgroupStorageSize: number;
  maxComputeInvocationsPerWorkgroup: number;
  maxComputeWorkgroupSizeX: number;
  maxComputeWorkgroupsPerDimension: number;
  maxStorageBuffersPerShaderStage: number;
  minStorageBufferOffsetAlignment: number;
  minUniformBufferOffsetAlignment: number;
}

/** WebGPU's default limits: what every kernel must work within. */
export const DEFAULT_LIMITS: Readonly<TesseraLimits> = {
  maxStorageBufferBindingSize: 134217728,
  maxBufferSize: 268435456,
  maxComputeWorkgroupStorageSize: 16384,
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupSizeX: 256,
  maxComputeWorkgroupsPerDimension: 65535,
  maxStorageBuffersPerShaderStage: 8,
  minStorageBufferOffsetAlignment: 256,
  minUniformBufferOffsetAlignment: 256,
};

export interface RequestDeviceOptions {
  /** `high-performance` by default. */
  powerPreference?: GPUPowerPreference;
  /** Request compatibility mode (`featureLevel: 'compatibility'`), for OpenGL ES adapters. */
  compatibility?: boolean;
  /** Node only: the Dawn backend (`vulkan`, `opengles`). Default: Dawn's choice. */
  backend?: 'vulkan' | 'opengles' | 'default';
  /**
   * Node only: which adapter. `auto` (default): the system's GPU, else SwiftShader.
   * `swiftshader`: the software Vulkan adapter from Debian's chromium. `llvmpipe`: Mesa's
   * software OpenGL ES through Dawn, in compatibility mode. Tests and benchmarks read
   * `TESSERA_ADAPTER` to pick one (see `adapterFromEnv`).
   */
  adapter?: 'auto' | 'swiftshader' | 'llvmpipe';
  /** Node only: extra Dawn flags, e.g. `enable-dawn-features=disable_robustness` (benchmarks only). */
  dawnFlags?: string[];
  /** Do not raise limits above the WebGPU defaults (tests of the default-limit paths). */
  defaultLimits?: boolean;
  /** Features to skip even if offered (e.g. to test the no-subgroups path). */
  withoutFeatures?: GPUFeatureName[];
  /**
   * Override {@link TesseraDevice.loopLimit} (at most the adapter's own cap): tests use a small
   * value to exercise, on any adapter, the segmented paths that llvmpipe needs.
   */
  loopLimit?: number;
  /**
   * Record every buffer created on this device (opt-in, default false): Tessera wraps the device
   * instance's `createBuffer` (never `GPUDevice.prototype`) before anything can use it, so a
   * buffer made by `dev.device.createBuffer` is known too, and a buffer this device did not make
   * is reported as belonging to another device (`bufferTracking: 'all'`). Off (the default): only
   * the buffers Tessera creates itself are known (`'own'`) and the device object is left as
   * WebGPU made it; a destroyed or foreign buffer of the caller's then fails at submit (as a GPU
   * validation error mapped to `E_BUFFER`) instead of before encoding.
   */
  trackBuffers?: boolean;
  /**
   * How pipelines compile: `async` (`createComputePipelineAsync`) or `sync` (`createComputePipeline`,
   * under an error scope). Default: `sync` on Node's Dawn (its bindings complete an async compile by
   * polling the event loop, which took 2-3x the compile's own CPU and wall time on SwiftShader),
   * `async` in browsers, where the GPU process compiles off the page's thread.
   */
  compile?: CompileMode;
  label?: string;
}

/** How a device compiles pipelines; see {@link RequestDeviceOptions.compile}. */
export type CompileMode = 'sync' | 'async';

/** Options of {@link wrapDevice}. */
export interface WrapDeviceOptions {
  /** The adapter's description, when the device does not carry `adapterInfo`. */
  adapterInfo?: GPUAdapterInfo;
  /**
   * Also record the buffers the engine creates from now on (default false): wraps the device
   * instance's `createBuffer` and each new buffer's `destroy` (instance properties, not the
   * prototype), so a destroyed engine buffer or one of another device is an `E_BUFFER` naming the
   * argument instead of a validation error at submit. Off by default because it changes objects
   * the engine owns (an own property on its device and on every buffer it creates) and adds a
   * little work to each of its allocations; buffers created before the call stay unknown.
   */
  trackBuffers?: boolean;
  /**
   * How pipelines compile (default `async`); `sync` suits an engine on Node's Dawn, see
   * {@link RequestDeviceOptions.compile}. Applies when the device is first wrapped.
   */
  compile?: CompileMode;
}

const WANTED_FEATURES: GPUFeatureName[] = ['shader-f16', 'subgroups', 'timestamp-query'];

/** Tracks the GPU bytes Tessera allocated on one device. */
export interface MemoryStats {
  bytesHeld: number;
  bytesPeak: number;
  buffersHeld: number;
}

export class TesseraDevice {
  readonly device: GPUDevice;
  readonly adapter: AdapterDescription;
  readonly adapterClass: AdapterClass;
  /** A short name for reports and result folders, e.g. `swiftshader`, `nvidia-ampere`. */
  readonly adapterName: string;
  readonly features: DeviceFeatures;
  readonly limits: TesseraLimits;
  /** Pipelines, layouts and shader modules created for this device; see `pipeline.ts`. */
  readonly cache = new Map<string, unknown>();
  private lostInfo: GPUDeviceLostInfo | null = null;
  private readonly lostWaiters = new Set<(e: TesseraError) => void>();
  private readonly tracked = new Map<GPUBuffer, number>();
  private peak = 0;
  private held = 0;
  /** Set by `requestDevice` in Node: keeps Dawn's instance reachable while the device lives. */
  private keepAlive: unknown;
  private release?: () => void;
  private readonly owned: boolean;
  private tracking: BufferTracking = 'own';
  /**
   * The most loop iterations (all loops together) one shader invocation may run on this adapter:
   * {@link GALLIVM_LOOP_LIMIT} on Mesa's llvmpipe / lavapipe, unbounded (`Infinity`) elsewhere.
   * Plans whose per-invocation loops would run longer split the work (more invocations, segments
   * of a scan, KV splits merged exactly) or, where a kernel cannot, reject the call with
   * `E_LIMIT` rather than return a silently truncated result.
   */
  readonly loopLimit: number;
  /** How this device compiles pipelines (see {@link RequestDeviceOptions.compile}). */
  readonly compile: CompileMode;

  constructor(
    device: GPUDevice,
    adapter: AdapterDescription,
    opts: { owned: boolean; keepAlive?: unknown; release?: () => void; loopLimit?: number; compile?: CompileMode },
  ) {
    this.device = device;
    this.compile = opts.compile ?? 'async';
    this.adapter = adapter;
    const cls = classifyAdapter(adapter);
    this.loopLimit = opts.loopLimit === undefined ? cls.loopLimit : Math.min(cls.loopLimit, opts.loopLimit);
    this.owned = opts.owned;
    this.keepAlive = opts.keepAlive;
    this.release = opts.release;
    this.adapterClass = cls.class;
    this.adapterName = cls.name;
    const f = device.features;
    this.features = {
      shaderF16: f.has('shader-f16'),
      subgroups: f.has('subgroups'),
      timestampQuery: f.has('timestamp-query'),
    };
    const l = device.limits;
    this.limits = {
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxBufferSize: l.maxBufferSize,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
      maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
      minStorageBufferOffsetAlignment: l.minStorageBufferOffsetAlignment,
      minUniformBufferOffsetAlignment: l.minUniformBufferOffsetAlignment,
    };
    device.lost.then((info) => {
      this.lostInfo = info;
      const err = this.lostError();
      for (const w of this.lostWaiters) w(err);
      this.lostWaiters.clear();
    });
  }

  /** Which buffers this device knows, to reject destroyed and foreign ones: see {@link BufferTracking}. */
  get bufferTracking(): BufferTracking {
    return this.tracking;
  }

  /**
   * @internal Starts recording every buffer created on the device (wraps the device instance's
   * `createBuffer`): `all` when called before any buffer exists (requestDevice), else `new`.
   * Stays `own` where the device object cannot be instrumented.
   */
  trackAllBuffers(mode: 'all' | 'new'): BufferTracking {
    if (this.tracking === 'all') return this.tracking;
    if (instrumentDevice(this.device)) this.tracking = mode;
    return this.tracking;
  }

  /** @internal Called by a tracked buffer's `destroy()`: its bytes no longer count as held. */
  forgetBuffer(b: GPUBuffer): void {
    const size = this.tracked.get(b);
    if (size === undefined) return;
    this.tracked.delete(b);
    this.held -= size;
  }

  get isLost(): boolean {
    return this.lostInfo !== null;
  }

  private lostError(): TesseraError {
    const i = this.lostInfo;
    return new TesseraError(
      'E_DEVICE_LOST',
      `the GPU device was lost (${i?.reason ?? 'unknown'}): ${i?.message ?? ''}`.trim(),
    );
  }

  /** Throws `E_DEVICE_LOST` when the device is gone. */
  assertAlive(): void {
    if (this.lostInfo) throw this.lostError();
  }

  /**
   * Resolves when `p` resolves, or rejects with `E_DEVICE_LOST` as soon as the device is lost:
   * nothing waits forever on a device that is gone.
   */
  raceLost<T>(p: Promise<T>): Promise<T> {
    if (this.lostInfo) return Promise.reject(this.lostError());
    return new Promise<T>((resolve, reject) => {
      const onLost = (e: TesseraError) => reject(e);
      this.lostWaiters.add(onLost);
      p.then(
        (v) => {
          this.lostWaiters.delete(onLost);
          resolve(v);
        },
        (e) => {
          this.lostWaiters.delete(onLost);
          reject(this.lostInfo ? this.lostError() : e);
        },
      );
    });
  }

  /**
   * Runs `fn` **synchronously** between pushing and popping the validation, out-of-memory and
   * internal error scopes: no `await` separates push from pop, so no other call's GPU work can land
   * in these scopes and no other call can pop them, however many calls are in flight on the device
   * (WebGPU's error scopes are one stack per device). `errors` resolves when the GPU has judged the
   * work and rejects with the typed error (see {@link scoped}); it already has a handler, so it
   * never ends up as an unhandled rejection when the caller fails first. When `fn` throws, the
   * scopes are popped and its error is rethrown. Every convenience call, streaming tile and
   * readback submits through a section.
   *
   * @example
   * const { errors } = dev.section('myCall', () => dev.device.queue.submit([enc.finish()]));
   * await Promise.all([errors, dev.raceLost(dev.device.queue.onSubmittedWorkDone())]);
   */
  section<T>(what: string, fn: () => T): { value: T; errors: Promise<void> } {
    this.assertAlive();
    const d = this.device;
    d.pushErrorScope('internal');
    d.pushErrorScope('out-of-memory');
    d.pushErrorScope('validation');
    let value: T;
    try {
      value = fn();
    } catch (e) {
      observe(Promise.all([d.popErrorScope(), d.popErrorScope(), d.popErrorScope()]));
      throw e;
    }
    const pops = Promise.all([d.popErrorScope(), d.popErrorScope(), d.popErrorScope()]);
    const errors = observe(
      this.raceLost(pops).then(([validation, oom, internal]) => {
        const err = scopeError(what, validation, oom, internal);
        if (err) throw err;
      }),
    );
    return { value, errors };
  }

  /** Submits command buffers and waits for the queue, failing fast on device loss. */
  async submitAndWait(commands: GPUCommandBuffer[]): Promise<void> {
    this.assertAlive();
    this.device.queue.submit(commands);
    await this.raceLost(this.device.queue.onSubmittedWorkDone());
  }

  /**
   * Creates a GPU buffer that Tessera tracks (for `memory()` and leak checks, and to reject it once
   * destroyed, or on another device). Its `destroy()` and {@link destroyBuffer} both free it.
   */
  createBuffer(desc: GPUBufferDescriptor): GPUBuffer {
    this.assertAlive();
    if (desc.size > this.limits.maxBufferSize) {
      throw new TesseraError(
        'E_LIMIT',
        `buffer "${desc.label ?? ''}" of ${desc.size} bytes exceeds the device's maxBufferSize`,
        {
          argument: 'size',
          actual: desc.size,
          expected: `at most ${this.limits.maxBufferSize} bytes`,
        },
      );
    }
    const size = Math.max(4, Math.ceil(desc.size / 4) * 4);
    const b = this.device.createBuffer({ ...desc, size });
    registerBuffer(b, this.device);
    this.tracked.set(b, size);
    this.held += size;
    this.peak = Math.max(this.peak, this.held);
    return b;
  }

  /** Destroys a buffer created by {@link createBuffer}; a no-op for others or twice. */
  destroyBuffer(b: GPUBuffer | undefined | null): void {
    if (!b) return;
    const size = this.tracked.get(b);
    if (size === undefined) return;
    this.tracked.delete(b);
    this.held -= size;
    b.destroy();
  }

  /** Creates a buffer filled with `data` (STORAGE | COPY_SRC | COPY_DST unless `usage` given). */
  upload(data: ArrayBufferView, opts: { usage?: number; label?: string; size?: number } = {}): GPUBuffer {
    const usage =
      opts.usage ?? GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_SRC | GPUBufferUsageFlags.COPY_DST;
    const size = Math.max(opts.size ?? 0, Math.ceil(data.byteLength / 4) * 4, 4);
    const b = this.createBuffer({ size, usage, label: opts.label });
    if (data.byteLength > 0) {
      const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      const padded =
        bytes.byteLength % 4 === 0
          ? bytes
          : (() => {
              const p = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
              p.set(bytes);
              return p;
            })();
      this.device.queue.writeBuffer(b, 0, padded as Uint8Array<ArrayBuffer>);
    }
    return b;
  }

  /**
   * Copies `size` bytes of `src` (from `offset`) back to the host. A destroyed `src`, or one of
   * another device, is an `E_BUFFER` naming `argument` (default `src`), not zeros.
   */
  async readback(src: GPUBuffer, size = src.size, offset = 0, argument = 'src'): Promise<ArrayBuffer> {
    this.assertAlive();
    checkBuffer(this, src, argument);
    const rounded = Math.ceil(size / 4) * 4;
    const staging = this.createBuffer({
      size: rounded,
      usage: GPUBufferUsageFlags.MAP_READ | GPUBufferUsageFlags.COPY_DST,
      label: 'tessera.readback',
    });
    try {
      const { errors } = this.section('readback', () => {
        const enc = this.device.createCommandEncoder({ label: 'tessera.readback' });
        enc.copyBufferToBuffer(src, offset, staging, 0, rounded);
        this.device.queue.submit([enc.finish()]);
      });
      await Promise.all([errors, this.raceLost(staging.mapAsync(GPUMapModeFlags.READ))]);
      const out = staging.getMappedRange().slice(0, size);
      staging.unmap();
      return out;
    } finally {
      this.destroyBuffer(staging);
    }
  }

  memory(): MemoryStats {
    return { bytesHeld: this.held, bytesPeak: this.peak, buffersHeld: this.tracked.size };
  }

  /**
   * Starts a new peak measurement from the bytes held now, and returns those bytes: a run's own
   * peak is `memory().bytesPeak` minus them (buffers someone else holds on the device are not its).
   */
  resetPeak(): number {
    this.peak = this.held;
    return this.held;
  }

  /**
   * Runs `fn` inside validation, out-of-memory and internal error scopes and turns any captured
   * error into a typed `TesseraError` (`E_GPU_VALIDATION`, `E_GPU_OOM`, `E_GPU_INTERNAL`). A
   * validation error that names a destroyed buffer or a buffer of another device (one Tessera did
   * not know, so no check caught it before encoding) becomes `E_BUFFER` with the GPU's message.
   * The scopes stay open across `fn`'s awaits, so this is for a caller's own sequential work: two
   * `scoped` calls in flight at once on one device can catch (and pop) each other's errors. The
   * library's own calls never hold a scope across an await (see {@link section}), so they are
   * attributed correctly inside or beside a `scoped` call.
   */
  async scoped<T>(what: string, fn: () => T | Promise<T>): Promise<T> {
    this.assertAlive();
    const d = this.device;
    d.pushErrorScope('internal');
    d.pushErrorScope('out-of-memory');
    d.pushErrorScope('validation');
    let value: T;
    let thrown: unknown;
    let threw = false;
    try {
      value = await fn();
    } catch (e) {
      threw = true;
      thrown = e;
    }
    const [validation, oom, internal] = await this.raceLost(
      Promise.all([d.popErrorScope(), d.popErrorScope(), d.popErrorScope()]),
    );
    if (threw) throw thrown;
    const err = scopeError(what, validation, oom, internal);
    if (err) throw err;
    return value!;
  }

  /** Destroys every buffer Tessera still tracks on this device and, if Tessera created it, the device. */
  destroy(): void {
    for (const b of [...this.tracked.keys()]) this.destroyBuffer(b);
    this.cache.clear();
    wrapped.delete(this.device);
    if (this.owned) {
      this.device.destroy();
      // Let Dawn's instance go only after the device has been destroyed.
      const release = this.release;
      this.keepAlive = undefined;
      this.release = undefined;
      setTimeout(() => release?.(), 0);
    }
  }
}

/** The typed error for what a section's or scope's three error scopes captured, or null. */
function scopeError(
  what: string,
  validation: GPUError | null,
  oom: GPUError | null,
  internal: GPUError | null,
): TesseraError | null {
  if (validation)
    return (
      bufferErrorFromValidation(what, validation.message) ??
      new TesseraError('E_GPU_VALIDATION', `${what}: GPU validation error: ${validation.message}`)
    );
  if (oom) return new TesseraError('E_GPU_OOM', `${what}: GPU out of memory: ${oom.message}`);
  if (internal) return new TesseraError('E_GPU_INTERNAL', `${what}: GPU internal error: ${internal.message}`);
  return null;
}

/**
 * Gives `p` a handler (and returns `p` itself, still to be awaited): a rejection of an internal
 * promise that nobody awaits any more (its caller already failed on an earlier one, say
 * `E_DEVICE_LOST` of another tile) is then never an unhandled rejection that ends the process.
 */
export function observe<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

const wrapped = new WeakMap<GPUDevice, TesseraDevice>();

/** Anything a kernel accepts as its device: a raw `GPUDevice` from an engine, or a `TesseraDevice`. */
export type DeviceLike = GPUDevice | TesseraDevice;

/**
 * Adopts a device that the caller created (an engine's, TensorFlow.js's). Tessera never destroys
 * an adopted device; `destroy()` frees only Tessera's own buffers. Returns the same context for the
 * same device. By default only Tessera's own buffers are tracked (`bufferTracking: 'own'`);
 * `{ trackBuffers: true }` also records the engine's buffers created from then on (`'new'`).
 *
 * @example
 * const ctx = wrapDevice(myEngine.device);
 * const plan = await planAttention(ctx, { ... });
 * const tracked = wrapDevice(myEngine.device, { trackBuffers: true }); // same context, now 'new'
 */
export function wrapDevice(
  device: GPUDevice | TesseraDevice,
  options?: WrapDeviceOptions | GPUAdapterInfo,
): TesseraDevice {
  if (!(device instanceof TesseraDevice) && (!device || typeof (device as GPUDevice).createBuffer !== 'function')) {
    throw new TesseraError('E_ARG', 'device: is not a GPUDevice or TesseraDevice', {
      argument: 'device',
      actual: typeof device,
    });
  }
  const opts: WrapDeviceOptions = isWrapOptions(options) ? options : { adapterInfo: options };
  if (opts.trackBuffers !== undefined && typeof opts.trackBuffers !== 'boolean') {
    throw new TesseraError('E_ARG', 'trackBuffers: is not a boolean', {
      argument: 'trackBuffers',
      actual: opts.trackBuffers,
      expected: 'true or false',
    });
  }
  checkCompileMode(opts.compile);
  let ctx = device instanceof TesseraDevice ? device : wrapped.get(device);
  if (!ctx) {
    const raw = device as GPUDevice;
    const info = opts.adapterInfo ?? (raw as GPUDevice & { adapterInfo?: GPUAdapterInfo }).adapterInfo;
    ctx = new TesseraDevice(raw, describeAdapter(info), { owned: false, compile: opts.compile });
    wrapped.set(raw, ctx);
    const c = ctx;
    onBufferDestroyed(raw, (b) => c.forgetBuffer(b));
  }
  if (opts.trackBuffers) ctx.trackAllBuffers('new');
  return ctx;
}

function isWrapOptions(o: WrapDeviceOptions | GPUAdapterInfo | undefined): o is WrapDeviceOptions {
  return o !== undefined && ('trackBuffers' in o || 'adapterInfo' in o || 'compile' in o);
}

function checkCompileMode(mode: unknown): void {
  if (mode !== undefined && mode !== 'sync' && mode !== 'async') {
    throw new TesseraError('E_ARG', "compile: is not 'sync' or 'async'", {
      argument: 'compile',
      actual: mode,
      expected: "'sync' or 'async'",
    });
  }
}

/** Resolves a {@link DeviceLike} to its context. */
export function ctxOf(d: DeviceLike): TesseraDevice {
  return wrapDevice(d);
}

async function getGpu(
  opts: RequestDeviceOptions,
): Promise<{ gpu: GPU; keepAlive?: unknown; release?: () => void; notes: string[] }> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu && !(globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node) {
    return { gpu: nav.gpu, notes: [] };
  }
  const path = './node.js';
  const node = (await import(/* @vite-ignore */ path)) as typeof import('./node.js');
  const llvmpipe = opts.adapter === 'llvmpipe';
  const { gpu, release, notes } = await node.createNodeGpu({
    backend: llvmpipe ? 'opengles' : opts.backend,
    dawnFlags: opts.dawnFlags,
    forceSwiftShader: opts.adapter === 'swiftshader',
  });
  return { gpu, keepAlive: gpu, release, notes };
}

/**
 * Gets a device with negotiated limits and the features Tessera uses.
 *
 * @example
 * import { requestDevice } from 'tessera';
 * const dev = await requestDevice();
 * console.log(dev.adapterName, dev.limits.maxStorageBufferBindingSize);
 */
export async function requestDevice(opts: RequestDeviceOptions = {}): Promise<TesseraDevice> {
  if (opts.trackBuffers !== undefined && typeof opts.trackBuffers !== 'boolean') {
    throw new TesseraError('E_ARG', 'trackBuffers: is not a boolean', {
      argument: 'trackBuffers',
      actual: opts.trackBuffers,
      expected: 'true or false',
    });
  }
  checkCompileMode(opts.compile);
  const { gpu, keepAlive, release, notes } = await getGpu(opts);
  const adapterOpts: GPURequestAdapterOptions & { featureLevel?: string } = {
    powerPreference: opts.powerPreference ?? 'high-performance',
  };
  if (opts.compatibility || opts.adapter === 'llvmpipe') adapterOpts.featureLevel = 'compatibility';
  const adapter = await gpu.requestAdapter(adapterOpts);
  if (!adapter) {
    let hint = 'No WebGPU adapter was found.';
    const isNode = Boolean((globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node);
    if (isNode) {
      const node = (await import(/* @vite-ignore */ './node.js')) as typeof import('./node.js');
      if (!node.hasVulkanLoader()) hint += ' The Vulkan loader (libvulkan.so.1) is missing.';
      hint += ' ' + node.INSTALL_HINT;
    } else {
      hint += ' Use a browser with WebGPU enabled (Chrome 113+, or Chromium with --enable-unsafe-webgpu).';
    }
    if (notes.length) hint += ` (tried: ${notes.join(', ')})`;
    release?.();
    throw new TesseraError('E_NO_ADAPTER', hint);
  }
  const skip = new Set(opts.withoutFeatures ?? []);
  const requiredFeatures = WANTED_FEATURES.filter((f) => adapter.features.has(f) && !skip.has(f));
  const requiredLimits: Record<string, number> = {};
  if (!opts.defaultLimits) {
    const al = adapter.limits;
    for (const k of [
      'maxStorageBufferBindingSize',
      'maxBufferSize',
      'maxComputeWorkgroupStorageSize',
      'maxStorageBuffersPerShaderStage',
      'maxComputeInvocationsPerWorkgroup',
      'maxComputeWorkgroupSizeX',
    ] as const) {
      const v = al[k];
      if (typeof v === 'number' && v > DEFAULT_LIMITS[k]) requiredLimits[k] = v;
    }
  }
  const desc: GPUDeviceDescriptor = { requiredFeatures, requiredLimits, label: opts.label ?? 'tessera' };
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice(desc);
    // only when asked, and before anything can create a buffer on it, so that every buffer of this device is known
    if (opts.trackBuffers === true) instrumentDevice(device);
  } catch (e) {
    release?.();
    throw new TesseraError('E_NO_ADAPTER', `requestDevice failed: ${(e as Error).message}`, { cause: e });
  }
  if (opts.loopLimit !== undefined && !(Number.isInteger(opts.loopLimit) && opts.loopLimit >= 1024)) {
    release?.();
    throw new TesseraError('E_ARG', 'loopLimit: is not an integer of at least 1024', {
      argument: 'loopLimit',
      actual: opts.loopLimit,
      expected: 'an integer >= 1024',
    });
  }
  const ctx = new TesseraDevice(
    device,
    describeAdapter(adapter.info, (adapter as GPUAdapter & { isFallbackAdapter?: boolean }).isFallbackAdapter),
    {
      owned: true,
      keepAlive,
      release,
      loopLimit: opts.loopLimit,
      // Node's Dawn (keepAlive is its instance) polls for async compiles; compile inline there
      compile: opts.compile ?? (keepAlive === undefined ? 'async' : 'sync'),
    },
  );
  wrapped.set(device, ctx);
  onBufferDestroyed(device, (b) => ctx.forgetBuffer(b));
  if (opts.trackBuffers === true) ctx.trackAllBuffers('all');
  return ctx;
}
