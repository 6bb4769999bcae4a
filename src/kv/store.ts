/**
 * Backing stores of the KV cache: where pages live when they are not on the GPU.
 *
 * A {@link Store} is a flat, positional byte space (page `p` sits at `p * pageBytes`) with
 * synchronous reads and writes, so the same cache code runs over host memory
 * ({@link MemoryStore}, ArrayBuffer slabs), a file in Node (`FileStore` in `./file-store.ts`,
 * exported from `tessera/node`), or an OPFS sync access handle in a browser worker
 * ({@link OpfsStore}).
 */
import { TesseraError, checkInt } from '../errors.js';

export interface Store {
  /** `memory`: host RAM; `file`, `opfs`: disk. */
  readonly kind: 'memory' | 'file' | 'opfs';
  /** Bytes of host memory the store holds now. */
  readonly hostBytes: number;
  /** Copies `src` to byte `offset`, growing the store as needed. */
  write(offset: number, src: Uint8Array): void;
  /** Fills `dst` from byte `offset`; throws `E_IO` if the range was never written. */
  read(offset: number, dst: Uint8Array): void;
  /**
   * A zero-copy view of `[offset, offset + length)` when the store holds it in one host chunk
   * (the memory store), else `undefined` (then use {@link read}).
   */
  view?(offset: number, length: number): Uint8Array | undefined;
  /** Releases memory or file handles. Idempotent. */
  close(): void;
  /** Makes every write so far durable (fsync; a persistent cache calls it before a manifest commit). */
  sync?(): void;
}

export interface MemoryStoreOptions {
  /** Bytes per slab (default 64 MiB). Rounded down to a multiple of `align`. */
  slabBytes?: number;
  /** Slab sizes are a multiple of this (the page size in bytes), so no page straddles two slabs. */
  align?: number;
}

/**
 * Host tier: large ArrayBuffer slabs allocated on demand (not one object per page), so a 5 GB
 * cache is about 20 objects and host memory stays within one slab of the bytes written.
 *
 * @example
 * const store = new MemoryStore({ slabBytes: 64 << 20, align: 32768 });
 * store.write(0, pageBytes);
 */
export class MemoryStore implements Store {
  readonly kind = 'memory' as const;
  readonly slabBytes: number;
  private readonly slabs: Uint8Array[] = [];
  private extent = 0;

  constructor(opts: MemoryStoreOptions = {}) {
    const align = checkInt(opts.align ?? 4, 'align', { min: 4 });
    const want = checkInt(opts.slabBytes ?? 64 * 2 ** 20, 'slabBytes', { min: 1, max: Number.MAX_SAFE_INTEGER });
    this.slabBytes = Math.max(align, Math.floor(want / align) * align);
  }

  get hostBytes(): number {
    let s = 0;
    for (const b of this.slabs) s += b?.byteLength ?? 0;
    return s;
  }

  private slab(i: number, create: boolean): Uint8Array | undefined {
    let s = this.slabs[i];
    if (!s && create) {
      try {
        s = new Uint8Array(this.slabBytes);
      } catch (e) {
        throw new TesseraError(
          'E_IO',
          `host tier: could not allocate a slab of ${this.slabBytes} bytes (out of host memory?)`,
          { cause: e },
        );
      }
      this.slabs[i] = s;
    }
    return s;
  }

  write(offset: number, src: Uint8Array): void {
    let done = 0;
    while (done < src.byteLength) {
      const pos = offset + done;
      const i = Math.floor(pos / this.slabBytes);
      const o = pos - i * this.slabBytes;
      const n = Math.min(src.byteLength - done, this.slabBytes - o);
      this.slab(i, true)!.set(src.subarray(done, done + n), o);
      done += n;
    }
    this.extent = Math.max(this.extent, offset + src.byteLength);
  }

  read(offset: number, dst: Uint8Array): void {
    if (offset + dst.byteLength > this.extent) {
      throw new TesseraError(
        'E_IO',
        `host tier: read of ${dst.byteLength} bytes at ${offset} is past the written extent ${this.extent}`,
      );
    }
    let done = 0;
    while (done < dst.byteLength) {
      const pos = offset + done;
      const i = Math.floor(pos / this.slabBytes);
      const o = pos - i * this.slabBytes;
      const n = Math.min(dst.byteLength - done, this.slabBytes - o);
      const s = this.slab(i, false);
      if (s) dst.set(s.subarray(o, o + n), done);
      else dst.fill(0, done, done + n);
      done += n;
    }
  }

  view(offset: number, length: number): Uint8Array | undefined {
    const i = Math.floor(offset / this.slabBytes);
    const o = offset - i * this.slabBytes;
    if (o + length > this.slabBytes || offset + length > this.extent) return undefined;
    return this.slab(i, false)?.subarray(o, o + length);
  }

  close(): void {
    this.slabs.length = 0;
    this.extent = 0;
  }
}

/** The part of `FileSystemSyncAccessHandle` the OPFS store uses. */
export interface SyncAccessHandleLike {
  read(buffer: Uint8Array, options?: { at?: number }): number;
  write(buffer: Uint8Array, options?: { at?: number }): number;
  flush(): void;
  close(): void;
  getSize?(): number;
  truncate?(size: number): void;
}

/**
 * Disk tier in a browser: an OPFS file through a `FileSystemSyncAccessHandle` (dedicated workers
 * only). Open the handle yourself and pass it in.
 *
 * @example
 * // inside a worker
 * const root = await navigator.storage.getDirectory();
 * const file = await root.getFileHandle('kv.bin', { create: true });
 * const store = new OpfsStore(await file.createSyncAccessHandle());
 * const cache = createKvCache(dev, { Hkv: 8, D: 128, store });
 */
export class OpfsStore implements Store {
  readonly kind = 'opfs' as const;
  readonly hostBytes = 0;
  private handle: SyncAccessHandleLike | null;
  private extent = 0;

  /** `existing: true` opens a file written before (a persistent cache): its bytes are readable. */
  constructor(handle: SyncAccessHandleLike, opts: { existing?: boolean } = {}) {
    this.handle = handle;
    if (opts.existing) this.extent = handle.getSize?.() ?? 0;
  }

  sync(): void {
    this.h().flush();
  }

  private h(): SyncAccessHandleLike {
    if (!this.handle) throw new TesseraError('E_STATE', 'OpfsStore used after close()');
    return this.handle;
  }

  write(offset: number, src: Uint8Array): void {
    const n = this.h().write(src, { at: offset });
    if (n !== src.byteLength)
      throw new TesseraError('E_IO', `disk tier (OPFS): short write of ${n}/${src.byteLength} bytes at ${offset}`);
    this.extent = Math.max(this.extent, offset + src.byteLength);
  }

  read(offset: number, dst: Uint8Array): void {
    if (offset + dst.byteLength > this.extent)
      throw new TesseraError('E_IO', `disk tier (OPFS): read at ${offset} is past the written extent ${this.extent}`);
    const n = this.h().read(dst, { at: offset });
    if (n !== dst.byteLength)
      throw new TesseraError('E_IO', `disk tier (OPFS): short read of ${n}/${dst.byteLength} bytes at ${offset}`);
  }

  close(): void {
    if (!this.handle) return;
    this.handle.flush();
    this.handle.close();
    this.handle = null;
  }
}
