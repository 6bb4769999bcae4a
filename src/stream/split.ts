/**
 * Contexts split across devices: a sequence's pages are spread over two or more devices (each
 * with its own {@link KvCache}: GPU working set, host or disk tier), in stripes of
 * `stripeTokens` tokens dealt round robin (stripe s on device s mod n), so every device holds
 * about 1/n of any long context and appends touch one device at a time. A decode step sends the
 * query to every device, each streams exact attention over its own pages
 * (`src/stream/exact.ts`) and returns its partial `(o, lse)`, and the partials merge exactly on
 * the host in float64 (`o = sum_i w_i o_i / sum_i w_i`, `w_i = exp(lse_i - max lse)`): the same
 * merge as the per-tile one, so the result equals one device's to f32 rounding. Only the query and
 * the partials move: `Hq * D * 4` bytes to and `Hq * (Dv + 1) * 4` bytes from each device per step.
 * See docs/kv.md ("Contexts split across devices") for the mapping onto several machines.
 */
import { TesseraError, check, checkInt, fail } from '../errors.js';
import { ctxOf, type DeviceLike } from '../gpu/device.js';
import { createKvCache, type KvCache, type KvCacheOptions, type KvCacheStats, type RawRows } from '../kv/cache.js';
import type { Store } from '../kv/store.js';
import { tokenRows } from '../kv/append.js';
import {
  planStreamAttention,
  type StreamAttentionOptions,
  type StreamAttentionPlan,
  type StreamStats,
} from './exact.js';
import { mergePartialsF64 } from './reference.js';
import { GPUBufferUsageFlags } from '../gpu/flags.js';

export interface SplitKvCacheOptions extends Omit<KvCacheOptions, 'store'> {
  /** Tokens per stripe, a multiple of the page size (default 65,536). Stripe s lives on device s mod n. */
  stripeTokens?: number;
  /** One store per device (default: a host-memory store each). */
  stores?: Store[];
}

/** A token range of a sequence and the device that holds it. */
export interface SplitRange {
  device: number;
  start: number;
  count: number;
}

/** A KV cache whose sequences are striped over several devices. */
export class SplitKvCache {
  readonly caches: KvCache[];
  readonly stripeTokens: number;
  private disposed = false;

  constructor(devices: readonly DeviceLike[], opts: SplitKvCacheOptions) {
    if (!Array.isArray(devices) || devices.length < 1)
      fail('E_ARG', 'devices', 'is not a non-empty array of devices;', devices);
    const ctxs = devices.map((d, i) => {
      try {
        return ctxOf(d);
      } catch {
        return fail('E_ARG', `devices[${i}]`, 'is not a device;', typeof d);
      }
    });
    if (!opts || typeof opts !== 'object') fail('E_ARG', 'options', 'is required;', opts, '{ Hkv, D, ... }');
    const P = opts.pageSize ?? 64;
    this.stripeTokens = checkInt(opts.stripeTokens ?? 65536, 'stripeTokens', { min: 1 });
    check(this.stripeTokens % P === 0, 'stripeTokens', `a multiple of the page size ${P}`, this.stripeTokens);
    if (opts.stores !== undefined && (!Array.isArray(opts.stores) || opts.stores.length !== devices.length)) {
      fail('E_ARG', 'stores', 'must give one store per device;', opts.stores?.length, `${devices.length} stores`);
    }
    const { stripeTokens: _s, stores, ...rest } = opts;
    this.caches = [];
    try {
      for (let i = 0; i < ctxs.length; i++) this.caches.push(createKvCache(ctxs[i]!, { ...rest, store: stores?.[i] }));
    } catch (e) {
      for (const c of this.caches) c.dispose();
      throw e;
    }
  }

  get devices(): number {
    return this.caches.length;
  }

  get Hkv(): number {
    return this.caches[0]!.Hkv;
  }

  get D(): number {
    return this.caches[0]!.D;
  }

  get Dv(): number {
    return this.caches[0]!.Dv;
  }

  private assertUsable(): void {
    if (this.disposed) throw new TesseraError('E_STATE', 'SplitKvCache used after dispose()');
  }

  /** Starts a new, empty sequence on every device; returns its id. */
  addSequence(): number {
    this.assertUsable();
    const ids = this.caches.map((c) => c.addSequence());
    return ids[0]!;
  }

  /** Tokens in sequence `seq` (over all devices). */
  length(seq: number): number {
    let n = 0;
    for (const c of this.caches) n += c.length(seq);
    return n;
  }

  /** The stripes of `seq`: which device holds which token range. */
  placement(seq: number): SplitRange[] {
    const len = this.length(seq);
    const out: SplitRange[] = [];
    for (let s = 0; s * this.stripeTokens < len; s++) {
      const start = s * this.stripeTokens;
      out.push({ device: s % this.devices, start, count: Math.min(this.stripeTokens, len - start) });
    }
    return out;
  }

  /**
   * Appends `T` tokens (`k` `[T, Hkv, D]`, `v` `[T, Hkv, Dv]`) to `seq`, each stripe's rows to its
   * device. Shapes are checked before anything is stored; if a device then refuses its rows
   * (`E_LIMIT`: its GPU budget cannot hold more summaries), the rows before them stay stored and
   * `length(seq)` counts them.
   */
  append(seq: number, k: ArrayLike<number>, v: ArrayLike<number>): void {
    this.appendWith(seq, k, v, (c, a, b) =>
      c.append(
        seq,
        sub(k, a * this.Hkv * this.D, b * this.Hkv * this.D),
        sub(v, a * this.Hkv * this.Dv, b * this.Hkv * this.Dv),
      ),
    );
  }

  /** As {@link append}, with rows already encoded in the caches' dtype (see `KvCache.appendRaw`). */
  appendRaw(seq: number, raw: RawRows): void {
    if (!raw || typeof raw !== 'object') fail('E_ARG', 'raw', 'is not an object;', raw, '{ dtype, k, v }');
    this.appendWith(seq, raw.k, raw.v, (c, a, b) =>
      c.appendRaw(seq, {
        dtype: raw.dtype,
        k: (raw.k as Uint16Array).subarray(a * this.Hkv * this.D, b * this.Hkv * this.D),
        v: (raw.v as Uint16Array).subarray(a * this.Hkv * this.Dv, b * this.Hkv * this.Dv),
      }),
    );
  }

  private appendWith(
    seq: number,
    k: ArrayLike<number>,
    v: ArrayLike<number>,
    put: (c: KvCache, from: number, to: number) => void,
  ): void {
    this.assertUsable();
    const len = this.length(seq);
    if (!k || typeof k.length !== 'number') fail('E_ARG', 'k', 'is not an array;', typeof k, '[T, Hkv, D] values');
    if (!v || typeof v.length !== 'number') fail('E_ARG', 'v', 'is not an array;', typeof v, '[T, Hkv, Dv] values');
    const T = tokenRows(this, k, v);
    const S = this.stripeTokens;
    for (let done = 0; done < T;) {
      const pos = len + done;
      const dev = Math.floor(pos / S) % this.devices;
      const n = Math.min(T - done, S - (pos % S));
      put(this.caches[dev]!, done, done + n);
      done += n;
    }
  }

  /** Per-device cache statistics. */
  stats(): KvCacheStats[] {
    return this.caches.map((c) => c.stats());
  }

  /** Frees every device's GPU buffers and closes the stores. Idempotent. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const c of this.caches) c.dispose();
  }
}

function sub(a: ArrayLike<number>, from: number, to: number): ArrayLike<number> {
  if (ArrayBuffer.isView(a)) return (a as unknown as Float32Array).subarray(from, to);
  return Array.prototype.slice.call(a, from, to) as number[];
}

/**
 * Creates a KV cache striped over `devices`.
 *
 * @example
 * const split = createSplitKvCache([dev0, dev1], { Hkv: 1, D: 128, stripeTokens: 65536 });
 * const seq = split.addSequence();
 * split.append(seq, k, v); // stripes alternate between the devices
 */
export function createSplitKvCache(devices: readonly DeviceLike[], opts: SplitKvCacheOptions): SplitKvCache {
  return new SplitKvCache(devices, opts);
}

export interface SplitDecodeStats {
  /** Per device: its streaming statistics (undefined where the device holds no token of the sequence). */
  perDevice: (StreamStats | undefined)[];
  /** Query bytes sent to the devices. */
  qBytes: number;
  /** Partial `(o, lse)` bytes read back from the devices. */
  partialBytes: number;
  /** qBytes + partialBytes: everything that crossed between host and devices this step (no KV bytes). */
  bytesMoved: number;
  ms: number;
}

/** Exact decode over a {@link SplitKvCache}: a streaming plan per device, merged on the host. */
export class SplitDecodePlan {
  readonly split: SplitKvCache;
  readonly Hq: number;
  private readonly plans: StreamAttentionPlan[];
  private readonly q: GPUBuffer[];
  private readonly out: GPUBuffer[];
  private readonly qHost: Float32Array<ArrayBuffer>;
  private readonly lseOffset: number;
  private disposed = false;

  private constructor(split: SplitKvCache, Hq: number, plans: StreamAttentionPlan[]) {
    this.split = split;
    this.Hq = Hq;
    this.plans = plans;
    const usage = GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST | GPUBufferUsageFlags.COPY_SRC;
    this.lseOffset = Math.ceil((Hq * split.Dv * 4) / 256) * 256;
    this.q = split.caches.map((c) => c.ctx.createBuffer({ size: Hq * split.D * 4, usage, label: 'tessera.split.q' }));
    this.out = split.caches.map((c) =>
      c.ctx.createBuffer({ size: this.lseOffset + Math.max(256, Hq * 4), usage, label: 'tessera.split.partial' }),
    );
    this.qHost = new Float32Array(Hq * split.D);
  }

  /** @internal use {@link planSplitDecode}. */
  static async create(split: SplitKvCache, opts: Omit<StreamAttentionOptions, 'Tq'>): Promise<SplitDecodePlan> {
    if (!(split instanceof SplitKvCache)) fail('E_ARG', 'split', 'is not a SplitKvCache;', typeof split);
    const plans: StreamAttentionPlan[] = [];
    try {
      for (const c of split.caches) plans.push(await planStreamAttention(c, { ...opts, Tq: 1 }));
    } catch (e) {
      for (const p of plans) p.dispose();
      throw e;
    }
    return new SplitDecodePlan(split, plans[0]!.options.Hq, plans);
  }

  /**
   * Decodes host query `q` (`[1, Hq, D]`, the query after the sequence's last token) against all
   * of `seq`: every device attends its stripes at once, the partials merge on the host. Returns
   * `o` `[1, Hq, Dv]` and `lse` `[1, Hq]` (float64 of the merge).
   */
  async run(
    seq: number,
    q: ArrayLike<number>,
  ): Promise<{ o: Float64Array; lse: Float64Array; stats: SplitDecodeStats }> {
    if (this.disposed) fail('E_STATE', 'plan', 'was disposed;', 'disposed');
    const { split, Hq } = this;
    const { D, Dv } = split;
    if (!q || typeof q.length !== 'number')
      fail('E_ARG', 'q', 'is not an array;', typeof q, `[1, Hq, D] = ${Hq * D} values`);
    if (q.length !== Hq * D) fail('E_SHAPE', 'q', 'has the wrong length;', q.length, `Hq*D = ${Hq * D}`);
    for (let i = 0; i < q.length; i++) this.qHost[i] = q[i]!;
    const lens = split.caches.map((c) => c.length(seq));
    const t0 = performance.now();
    let qBytes = 0;
    let partialBytes = 0;
    const runs = split.caches.map(async (c, i) => {
      if (lens[i] === 0) return undefined;
      const ctx = c.ctx;
      ctx.device.queue.writeBuffer(this.q[i]!, 0, this.qHost);
      qBytes += Hq * D * 4;
      const stats = await this.plans[i]!.run(
        seq,
        { buffer: this.q[i]!, shape: [1, Hq, D], dtype: 'f32' },
        {
          o: { buffer: this.out[i]!, shape: [1, Hq, Dv], dtype: 'f32' },
          lse: { buffer: this.out[i]!, offset: this.lseOffset, shape: [1, Hq], dtype: 'f32' },
        },
      );
      const bytes = new Float32Array(await ctx.readback(this.out[i]!, this.lseOffset + Hq * 4));
      partialBytes += (Hq * Dv + Hq) * 4;
      return { stats, o: bytes.subarray(0, Hq * Dv), lse: bytes.subarray(this.lseOffset / 4, this.lseOffset / 4 + Hq) };
    });
    const got = await Promise.all(runs);
    const parts = got.filter((x): x is NonNullable<typeof x> => x !== undefined);
    const merged = parts.length
      ? mergePartialsF64(parts, Hq, Dv)
      : { o: new Float64Array(Hq * Dv), lse: new Float64Array(Hq).fill(-Infinity) };
    return {
      o: merged.o,
      lse: merged.lse,
      stats: {
        perDevice: got.map((x) => x?.stats),
        qBytes,
        partialBytes,
        bytesMoved: qBytes + partialBytes,
        ms: performance.now() - t0,
      },
    };
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const p of this.plans) p.dispose();
    this.split.caches.forEach((c, i) => {
      c.ctx.destroyBuffer(this.q[i]);
      c.ctx.destroyBuffer(this.out[i]);
    });
  }
}

/**
 * Plans exact decode over a split cache (one streaming plan per device).
 *
 * @example
 * const plan = await planSplitDecode(split, { Hq: 8 });
 * const { o, lse, stats } = await plan.run(seq, q); // q: [1, 8, D] host values
 * console.log(stats.bytesMoved); // query out + partials back, no KV bytes
 */
export function planSplitDecode(
  split: SplitKvCache,
  opts: Omit<StreamAttentionOptions, 'Tq'>,
): Promise<SplitDecodePlan> {
  return SplitDecodePlan.create(split, opts);
}
