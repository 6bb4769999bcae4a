/**
 * Streaming a linear-attention / delta-rule scan over any number of tokens with constant GPU
 * memory: the caller pushes segments (a prefill split into pieces, or one token at a time when
 * decoding); the `[HV, K, V]` f32 state (and z with the normaliser) stays on the GPU between
 * pushes, and the plan for a segment length is reused (at most `maxPlans` lengths are kept).
 *
 * Checkpoints for rollback (speculative decoding): after a push that reaches or crosses a
 * multiple of `checkpointEvery` tokens, the state is copied into a ring of `ringSize` snapshots,
 * on the GPU (`copyBufferToBuffer`, no host round trip) or on the host (`checkpointTier: 'host'`).
 * `rollback(tokenIndex)` restores the newest snapshot taken at a position `<= tokenIndex` and
 * returns that position; the caller re-pushes tokens from there (with one-token pushes and
 * `checkpointEvery: 1`, every position can be restored exactly). Position 0 (the initial state)
 * is always restorable.
 */
import { TesseraError, checkInt, fail } from '../errors.js';
import { ctxOf, type DeviceLike, type TesseraDevice } from '../gpu/device.js';
import type { GpuTensor } from '../tensor.js';
import { exclusiveRuns } from '../exclusive.js';
import {
  planLinearScan,
  type LinearScanOptions,
  type LinearScanPlan,
  type LinearScanTensors,
} from '../../kernels/linear/scan.js';
import { GPUBufferUsageFlags } from '../gpu/flags.js';

export interface LinearStreamOptions extends Omit<LinearScanOptions, 'T' | 'cuSeqlens'> {
  /** Take a checkpoint whenever the position reaches or crosses a multiple of this (tokens; 0 = never; default 0). */
  checkpointEvery?: number;
  /** Snapshots kept (default 8); the oldest is overwritten. */
  ringSize?: number;
  /** Where snapshots live (default 'gpu'). */
  checkpointTier?: 'gpu' | 'host';
  /** Plans kept for distinct segment lengths (default 2: the steady segment and a tail). */
  maxPlans?: number;
  /** Initial state `[HV, K, V]` f32 values (default zeros). */
  initialState?: Float32Array;
}

/** A segment's tensors: q, k `[T, H, K]`, v, o `[T, HV, V]`, g, beta as the op takes them. */
export type StreamSegment = Omit<LinearScanTensors, 'initialState' | 'finalState' | 'z0' | 'zt'>;

interface Snapshot {
  position: number;
  gpu?: GPUBuffer;
  host?: ArrayBuffer;
}

/**
 * A streaming scan for one sequence. Create with {@link LinearStream.create}.
 *
 * @example
 * const s = await LinearStream.create(dev, { H: 1, K: 64, V: 64, gate: 'scalar', delta: true, checkpointEvery: 1 });
 * for (const seg of segments) await s.push(seg);   // any number of tokens, constant memory
 * const pos = await s.rollback(1000);              // back to the state after token 1000 (or the newest checkpoint before)
 */
export class LinearStream {
  readonly ctx: TesseraDevice;
  readonly options: Readonly<LinearStreamOptions>;
  /** The state on the GPU: `[1, HV, K, V]` f32. */
  readonly state: GpuTensor;
  /** The normaliser state `[1, HV, K]` f32 (normalize only). */
  readonly z?: GpuTensor;
  private pos = 0;
  private readonly plans = new Map<number, LinearScanPlan>();
  private readonly ring: Snapshot[] = [];
  private ringNext = 0;
  private readonly stateBytes: number;
  private readonly zBytes: number;
  private readonly initial: Snapshot;
  private disposed = false;

  private constructor(ctx: TesseraDevice, o: LinearStreamOptions) {
    this.ctx = ctx;
    this.options = o;
    // push and rollback carry one state: one at a time (E_STATE), never reordered segments.
    exclusiveRuns(this, 'LinearStream', ['push', 'rollback']);
    const HV = o.HV ?? o.H;
    this.stateBytes = HV * o.K * o.V * 4;
    this.zBytes = o.normalize ? HV * o.K * 4 : 0;
    const usage = GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_SRC | GPUBufferUsageFlags.COPY_DST;
    this.state = {
      buffer: ctx.createBuffer({ size: this.stateBytes, usage, label: 'tessera.stream.state' }),
      shape: [1, HV, o.K, o.V],
      dtype: 'f32',
    };
    if (o.normalize)
      this.z = {
        buffer: ctx.createBuffer({ size: this.zBytes, usage, label: 'tessera.stream.z' }),
        shape: [1, HV, o.K],
        dtype: 'f32',
      };
    const init = new Float32Array(this.stateBytes / 4 + this.zBytes / 4);
    if (o.initialState) init.set(o.initialState);
    this.initial = { position: 0, host: init.buffer };
    this.writeHost(init.buffer);
    const R = o.ringSize ?? 8;
    for (let i = 0; i < R; i++) this.ring.push({ position: -1 });
  }

  /**
   * Validates the options (as the op's plan would) and allocates the state.
   *
   * @example
   * const s = await LinearStream.create(dev, { H: 2, K: 64, V: 64, gate: 'vector', delta: true });
   */
  static async create(device: DeviceLike, opts: LinearStreamOptions): Promise<LinearStream> {
    const ctx = ctxOf(device);
    if (opts?.checkpointEvery !== undefined) checkInt(opts.checkpointEvery, 'checkpointEvery', { min: 0 });
    if (opts?.ringSize !== undefined) checkInt(opts.ringSize, 'ringSize', { min: 1, max: 4096 });
    if (opts?.maxPlans !== undefined) checkInt(opts.maxPlans, 'maxPlans', { min: 1, max: 64 });
    if (opts?.checkpointTier !== undefined && opts.checkpointTier !== 'gpu' && opts.checkpointTier !== 'host') {
      fail('E_ARG', 'checkpointTier', 'invalid value;', opts.checkpointTier, "'gpu' or 'host'");
    }
    // validate everything else once, with a 1-token plan (also the decode plan)
    const s = new LinearStream(ctx, opts);
    if (opts.initialState && opts.initialState.length !== s.stateBytes / 4) {
      s.dispose();
      fail(
        'E_SHAPE',
        'initialState',
        'has the wrong length;',
        opts.initialState.length,
        `${s.stateBytes / 4} (= HV * K * V)`,
      );
    }
    try {
      await s.planFor(1);
    } catch (e) {
      s.dispose();
      throw e;
    }
    return s;
  }

  /** Tokens consumed so far. */
  get position(): number {
    return this.pos;
  }

  private writeHost(buf: ArrayBuffer): void {
    this.ctx.device.queue.writeBuffer(this.state.buffer, 0, buf, 0, this.stateBytes);
    if (this.z) this.ctx.device.queue.writeBuffer(this.z.buffer, 0, buf, this.stateBytes, this.zBytes);
  }

  private async planFor(T: number): Promise<LinearScanPlan> {
    let p = this.plans.get(T);
    if (p) {
      this.plans.delete(T);
      this.plans.set(T, p); // most recently used last
      return p;
    }
    p = await planLinearScan(this.ctx, { ...this.options, T });
    this.plans.set(T, p);
    const max = this.options.maxPlans ?? 2;
    while (this.plans.size > max) {
      const [oldT, old] = this.plans.entries().next().value as [number, LinearScanPlan];
      old.dispose();
      this.plans.delete(oldT);
    }
    return p;
  }

  private assertUsable(): void {
    if (this.disposed) throw new TesseraError('E_STATE', 'LinearStream: used after dispose()');
  }

  /**
   * Runs the scan over one segment (T = `q.shape[0]` tokens), carrying the state; submits and
   * waits. Takes a checkpoint when the position crosses a multiple of `checkpointEvery`.
   *
   * @example
   * await stream.push({ q, k, v, g, beta, o });
   */
  async push(seg: StreamSegment): Promise<void> {
    this.assertUsable();
    const T = seg?.q?.shape?.[0];
    checkInt(T, 'q.shape[0]', { min: 1 });
    const plan = await this.planFor(T);
    const before = this.pos;
    const every = this.options.checkpointEvery ?? 0;
    const snap =
      every > 0 && Math.floor((before + T) / every) > Math.floor(before / every)
        ? this.ring[this.ringNext]!
        : undefined;
    // Encode and submit in one synchronous error-scope section (concurrent calls keep their errors).
    const { errors } = this.ctx.section('LinearStream.push', () => {
      const enc = this.ctx.device.createCommandEncoder({ label: 'tessera.stream' });
      plan.run(enc, { ...seg, initialState: this.state, finalState: this.state, z0: this.z, zt: this.z });
      if (snap && (this.options.checkpointTier ?? 'gpu') === 'gpu') {
        if (!snap.gpu)
          snap.gpu = this.ctx.createBuffer({
            size: this.stateBytes + this.zBytes,
            usage: GPUBufferUsageFlags.COPY_SRC | GPUBufferUsageFlags.COPY_DST,
            label: 'tessera.stream.snapshot',
          });
        enc.copyBufferToBuffer(this.state.buffer, 0, snap.gpu, 0, this.stateBytes);
        if (this.z) enc.copyBufferToBuffer(this.z.buffer, 0, snap.gpu, this.stateBytes, this.zBytes);
      }
      this.ctx.device.queue.submit([enc.finish()]);
    });
    this.pos += T;
    await Promise.all([errors, this.ctx.raceLost(this.ctx.device.queue.onSubmittedWorkDone())]);
    if (snap) {
      if ((this.options.checkpointTier ?? 'gpu') === 'host') {
        const s = await this.ctx.readback(this.state.buffer, this.stateBytes);
        const host = new Uint8Array(this.stateBytes + this.zBytes);
        host.set(new Uint8Array(s), 0);
        if (this.z) host.set(new Uint8Array(await this.ctx.readback(this.z.buffer, this.zBytes)), this.stateBytes);
        snap.host = host.buffer;
      }
      snap.position = this.pos;
      this.ringNext = (this.ringNext + 1) % this.ring.length;
    }
  }

  /** Positions that `rollback` can restore exactly, oldest first (0 always). */
  checkpoints(): number[] {
    return [0, ...this.ring.filter((s) => s.position > 0).map((s) => s.position)].sort((a, b) => a - b);
  }

  /**
   * Restores the newest checkpoint at a position `<= tokenIndex` and returns that position (the
   * number of tokens the state now covers). Checkpoints after it are dropped.
   *
   * @example
   * const at = await stream.rollback(accepted); // then re-push tokens at..accepted-1 if at < accepted
   */
  async rollback(tokenIndex: number): Promise<number> {
    this.assertUsable();
    checkInt(tokenIndex, 'tokenIndex', { min: 0, max: this.pos });
    let best: Snapshot = this.initial;
    for (const s of this.ring) if (s.position >= 0 && s.position <= tokenIndex && s.position > best.position) best = s;
    if (best.gpu) {
      const enc = this.ctx.device.createCommandEncoder({ label: 'tessera.stream.rollback' });
      enc.copyBufferToBuffer(best.gpu, 0, this.state.buffer, 0, this.stateBytes);
      if (this.z) enc.copyBufferToBuffer(best.gpu, this.stateBytes, this.z.buffer, 0, this.zBytes);
      await this.ctx.submitAndWait([enc.finish()]);
    } else {
      this.writeHost(best.host!);
      await this.ctx.raceLost(this.ctx.device.queue.onSubmittedWorkDone());
    }
    for (const s of this.ring) if (s.position > best.position) s.position = -1;
    this.pos = best.position;
    return best.position;
  }

  /** Reads the state back: `[HV, K, V]` f32 values. */
  async readState(): Promise<Float32Array> {
    this.assertUsable();
    return new Float32Array(await this.ctx.readback(this.state.buffer, this.stateBytes));
  }

  /** GPU bytes held by the stream (state, snapshots) and by its plans' workspaces are constant in the tokens pushed. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const p of this.plans.values()) p.dispose();
    this.plans.clear();
    for (const s of this.ring) this.ctx.destroyBuffer(s.gpu);
    this.ctx.destroyBuffer(this.state.buffer);
    if (this.z) this.ctx.destroyBuffer(this.z.buffer);
  }
}
