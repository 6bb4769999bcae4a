/**
 * GPU timing with timestamp queries where the adapter has them, else wall clock around
 * `onSubmittedWorkDone` (and the result says which).
 */
import type { TesseraDevice } from './device.js';
import { GPUBufferUsageFlags } from './flags.js';

export type TimingSource = 'timestamp' | 'wallclock';

export class GpuTimer {
  readonly source: TimingSource;
  private readonly ctx: TesseraDevice;
  private querySet?: GPUQuerySet;
  private resolveBuf?: GPUBuffer;

  constructor(ctx: TesseraDevice, opts: { forceWallclock?: boolean } = {}) {
    this.ctx = ctx;
    this.source = ctx.features.timestampQuery && !opts.forceWallclock ? 'timestamp' : 'wallclock';
    if (this.source === 'timestamp') {
      this.querySet = ctx.device.createQuerySet({ type: 'timestamp', count: 2 });
      this.resolveBuf = ctx.createBuffer({
        size: 16,
        usage: GPUBufferUsageFlags.QUERY_RESOLVE | GPUBufferUsageFlags.COPY_SRC,
        label: 'tessera.timer',
      });
    }
  }

  /**
   * Times the GPU work that `encode` records into a fresh encoder, in milliseconds. With
   * timestamps, an empty pass writes the start and another the end around the recorded work.
   */
  async time(encode: (enc: GPUCommandEncoder) => void): Promise<number> {
    const dev = this.ctx.device;
    const enc = dev.createCommandEncoder({ label: 'tessera.timed' });
    if (this.source === 'timestamp') {
      enc.beginComputePass({ timestampWrites: { querySet: this.querySet!, beginningOfPassWriteIndex: 0 } }).end();
      encode(enc);
      enc.beginComputePass({ timestampWrites: { querySet: this.querySet!, endOfPassWriteIndex: 1 } }).end();
      enc.resolveQuerySet(this.querySet!, 0, 2, this.resolveBuf!, 0);
      await this.ctx.submitAndWait([enc.finish()]);
      const raw = new BigUint64Array(await this.ctx.readback(this.resolveBuf!, 16));
      return Number(raw[1]! - raw[0]!) / 1e6;
    }
    encode(enc);
    const t0 = performance.now();
    await this.ctx.submitAndWait([enc.finish()]);
    return performance.now() - t0;
  }

  destroy(): void {
    this.querySet?.destroy();
    this.ctx.destroyBuffer(this.resolveBuf);
  }
}
