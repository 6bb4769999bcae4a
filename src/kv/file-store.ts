/**
 * Disk tier for Node: one file, positional reads and writes (`fs.readSync` / `fs.writeSync` with a
 * position), so a context larger than RAM lives on disk and only the pages in flight are in host
 * memory. Exported from `tessera/node`.
 */
import {
  closeSync,
  existsSync,
  fstatSync,
  fsyncSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { ManifestStore } from './manifest.js';
import { TesseraError } from '../errors.js';
import type { Store } from './store.js';
import { claimFile, releaseFile } from './file-lock.js';

export interface FileStoreOptions {
  /**
   * The file to use. Default: a fresh file in the OS temp dir. One FileStore per file: while open
   * it holds `<path>.lock` (its pid); a second FileStore on the file, in this or another live
   * process, is `E_STATE` naming `path`.
   */
  path?: string;
  /**
   * `create` (default): create or truncate the file. `open`: open an existing file and keep its
   * bytes (a persistent cache reopened with `openKvCache`); `E_IO` if it does not exist.
   */
  mode?: 'create' | 'open';
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
      this.fd = openSync(this.path, opts.mode === 'open' ? 'r+' : 'w+');
      if (opts.mode === 'open') this.extent = fstatSync(this.fd).size;
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
      throw new TesseraError(
        'E_IO',
        `disk tier: write of ${src.byteLength} bytes at ${offset} failed: ${(e as Error).message}`,
        { cause: e },
      );
    }
    this.extent = Math.max(this.extent, offset + src.byteLength);
  }

  read(offset: number, dst: Uint8Array): void {
    const fd = this.handle();
    if (offset + dst.byteLength > this.extent) {
      throw new TesseraError(
        'E_IO',
        `disk tier: read of ${dst.byteLength} bytes at ${offset} is past the written extent ${this.extent}`,
      );
    }
    let done = 0;
    try {
      while (done < dst.byteLength) {
        const n = readSync(fd, dst, done, dst.byteLength - done, offset + done);
        if (n === 0) throw new Error('unexpected end of file');
        done += n;
      }
    } catch (e) {
      throw new TesseraError(
        'E_IO',
        `disk tier: read of ${dst.byteLength} bytes at ${offset} failed: ${(e as Error).message}`,
        { cause: e },
      );
    }
  }

  sync(): void {
    try {
      fsyncSync(this.handle());
    } catch (e) {
      throw new TesseraError('E_IO', `disk tier: fsync of ${this.path} failed: ${(e as Error).message}`, { cause: e });
    }
  }

  /** The manifest beside this store's file (`<path>.manifest`), for a persistent cache. */
  manifest(): FileManifest {
    return new FileManifest(`${this.path}.manifest`);
  }

  close(): void {
    if (this.fd === null) return;
    closeSync(this.fd);
    this.fd = null;
    releaseFile(this.claim);
    if (this.remove) rmSync(this.dir ?? this.path, { recursive: true, force: true });
  }
}

/**
 * A manifest file replaced atomically: written to `<path>.tmp`, fsynced, renamed over `<path>`,
 * then the directory fsynced. After a crash, `read` returns the old or the new manifest whole.
 *
 * @example
 * const store = new FileStore({ path: '/data/kv.bin' });
 * persistKvCache(cache, store.manifest()); // /data/kv.bin.manifest
 */
export class FileManifest implements ManifestStore {
  readonly kind = 'file';
  constructor(readonly path: string) {}

  read(): Uint8Array | undefined {
    if (!existsSync(this.path)) return undefined;
    try {
      return new Uint8Array(readFileSync(this.path));
    } catch (e) {
      throw new TesseraError('E_IO', `manifest: cannot read ${this.path}: ${(e as Error).message}`, { cause: e });
    }
  }

  write(bytes: Uint8Array): void {
    const tmp = `${this.path}.tmp`;
    try {
      const fd = openSync(tmp, 'w');
      try {
        let done = 0;
        while (done < bytes.byteLength) done += writeSync(fd, bytes, done, bytes.byteLength - done, done);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, this.path);
      const dfd = openSync(dirname(this.path), 'r');
      try {
        fsyncSync(dfd);
      } finally {
        closeSync(dfd);
      }
    } catch (e) {
      throw new TesseraError('E_IO', `manifest: cannot write ${this.path}: ${(e as Error).message}`, { cause: e });
    }
  }
}
