/**
 * Disk tier for Node: one file, positional reads and writes (`fs.readSync` / `fs.writeSync` with a
 * position), so a context larger than RAM lives on disk and only the pages in flight are in host
 * memory. Exported from `tessera/node`.
 */
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TesseraError } from '../errors.js';
import type { Store } from './store.js';
import { claimFile, releaseFile } from './file-lock.js';

export interface FileStoreOptions {
  /**
   * The file to use (created or truncated). Default: a fresh file in the OS temp dir. One
   * FileStore per file: while open it holds `<path>.lock` (its pid); a second FileStore on the
   * file, in this or another live process, is `E_STATE` naming `path`.
   */
  path?: string;
  /** Delete the file on `close()` (default: true when `path` was not given). */
  removeOnClose?: boolean;
}

/**
 * @example
 * import { FileStore } from 'tessera/node';
 * const cache = createKvCache(dev, { Hkv: 1, D: 128, store: new FileStore({ path: '/data/kv.bin' }) });
 */
export class FileStore implements Store {
  readonly kind = 'file' as const;
  readonly hostBytes = 0;
  readonly path: string;
  private fd: number | null;
  private extent = 0;
  private readonly remove: boolean;
  private readonly dir?: string;
  /** This store's claim on its file (see `file-lock.ts`). */
  private readonly claim: { key: string; lock: string };

  constructor(opts: FileStoreOptions = {}) {
    if (opts.path) {
      this.path = opts.path;
    } else {
      this.dir = mkdtempSync(join(tmpdir(), 'tessera-kv-'));
      this.path = join(this.dir, 'kv.bin');
    }
    this.remove = opts.removeOnClose ?? !opts.path;
    // One FileStore per file (this process: a registry; other processes: a lock file), claimed
    // before the open would truncate it under its owner; E_STATE naming `path`. Released on close().
    this.claim = claimFile(this.path);
    try {
      this.fd = openSync(this.path, 'w+');
    } catch (e) {
      releaseFile(this.claim);
      throw new TesseraError('E_IO', `disk tier: cannot open ${this.path}: ${(e as Error).message}`, { cause: e });
    }
  }

  private handle(): number {
    if (this.fd === null) throw new TesseraError('E_STATE', 'FileStore used after close()');
    return this.fd;
  }

  write(offset: number, src: Uint8Array): void {
    const fd = this.handle();
    let done = 0;
    try {
      while (done < src.byteLength) done += writeSync(fd, src, done, src.byteLength - done, offset + done);
    } catch (e) {
      throw new TesseraError('E_IO', `disk tier: write of ${src.byteLength} bytes at ${offset} failed: ${(e as Error).message}`, { cause: e });
    }
    this.extent = Math.max(this.extent, offset + src.byteLength);
  }

  read(offset: number, dst: Uint8Array): void {
    const fd = this.handle();
    if (offset + dst.byteLength > this.extent) {
      throw new TesseraError('E_IO', `disk tier: read of ${dst.byteLength} bytes at ${offset} is past the written extent ${this.extent}`);
    }
    let done = 0;
    try {
      while (done < dst.byteLength) {
        const n = readSync(fd, dst, done, dst.byteLength - done, offset + done);
        if (n === 0) throw new Error('unexpected end of file');
        done += n;
      }
    } catch (e) {
      throw new TesseraError('E_IO', `disk tier: read of ${dst.byteLength} bytes at ${offset} failed: ${(e as Error).message}`, { cause: e });
    }
  }

  close(): void {
    if (this.fd === null) return;
    closeSync(this.fd);
    this.fd = null;
    releaseFile(this.claim);
    if (this.remove) rmSync(this.dir ?? this.path, { recursive: true, force: true });
  }
}
