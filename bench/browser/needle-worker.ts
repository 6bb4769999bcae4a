/**
 * The needle demo in a dedicated worker: the worker holds the WebGPU device and an OPFS-backed KV
 * cache (a real `FileSystemSyncAccessHandle` through `OpfsStore`), runs `runNeedle` (the same code
 * and JSON keys as `tessera demo needle`) and records every page's checksum in a manifest next to
 * the cache file, so that a later page load finds the cache on OPFS and checks it page by page.
 *
 * `runNeedle` samples `process.memoryUsage()` and writes its progress to `process.stderr`: a
 * worker has neither, so a minimal `process` (no `versions.node`, so device code still takes the
 * browser path) forwards the progress to the page and reports an RSS of 0.
 */
import { hash32, pageLayout } from '../../src/kv/codec.js';
import { OpfsStore, type Store, type SyncAccessHandleLike } from '../../src/kv/store.js';
import { requestDevice } from '../../src/gpu/device.js';
import type { NeedleMessage, NeedleRequest, OpfsVerify } from './needle-protocol.js';

const KV_FILE = 'tessera-needle-kv.bin';
const MANIFEST = 'tessera-needle-manifest.json';

const post = (m: NeedleMessage) => (self as unknown as Worker).postMessage(m);
const log = (line: string) => post({ type: 'log', line });

interface SyncHandle extends SyncAccessHandleLike {
  getSize(): number;
  truncate(size: number): void;
}

type SyncFile = FileSystemFileHandle & { createSyncAccessHandle(): Promise<SyncHandle> };

interface Manifest {
  tokens: number;
  pageBytes: number;
  pages: number;
  fileBytes: number;
  checksums: number[];
}

let lastProgress = 0;
(globalThis as unknown as { process: unknown }).process ??= {
  memoryUsage: () => ({ rss: 0 }),
  stderr: {
    write(s: string) {
      const m = /^\r?(\w+)\s+\[[#.]+\]\s+([\d.]+)%/.exec(s);
      if (m) {
        const now = performance.now();
        if (now - lastProgress > 250 || Number(m[2]) >= 100) {
          lastProgress = now;
          post({ type: 'progress', done: Number(m[2]), total: 100 });
          if (Number(m[2]) >= 100) log(`${m[1]} done`);
        }
      } else if (s.trim()) {
        log(s.trim());
      }
      return true;
    },
  },
};

/** A store that records the checksum of every whole page written through it (the cache writes pages whole). */
class ChecksumStore implements Store {
  readonly kind: Store['kind'];
  readonly sums: number[] = [];
  unaligned = 0;
  constructor(
    private readonly inner: Store,
    private readonly pageBytes: number,
  ) {
    this.kind = inner.kind;
  }
  get hostBytes(): number {
    return this.inner.hostBytes;
  }
  write(offset: number, src: Uint8Array): void {
    this.inner.write(offset, src);
    if (offset % this.pageBytes === 0 && src.byteLength === this.pageBytes)
      this.sums[offset / this.pageBytes] = hash32(src);
    else this.unaligned++;
  }
  read(offset: number, dst: Uint8Array): void {
    this.inner.read(offset, dst);
  }
  close(): void {
    this.inner.close();
  }
}

async function root(): Promise<FileSystemDirectoryHandle> {
  return navigator.storage.getDirectory();
}

async function readManifest(dir: FileSystemDirectoryHandle): Promise<Manifest | undefined> {
  try {
    const f = await (await dir.getFileHandle(MANIFEST)).getFile();
    return JSON.parse(await f.text()) as Manifest;
  } catch {
    return undefined;
  }
}

async function verify(req: NeedleRequest): Promise<OpfsVerify> {
  const dir = await root();
  const man = await readManifest(dir);
  if (!man) return { found: false };
  const t0 = performance.now();
  const h = await ((await dir.getFileHandle(KV_FILE)) as SyncFile).createSyncAccessHandle();
  try {
    if (req.corruptPage !== undefined) {
      const b = new Uint8Array(1);
      const at = req.corruptPage * man.pageBytes + 17;
      h.read(b, { at });
      b[0] ^= 0x40;
      h.write(b, { at });
      h.flush();
      log(`flipped one byte of page ${req.corruptPage} on OPFS`);
    }
    const fileBytes = h.getSize();
    const page = new Uint8Array(man.pageBytes);
    let mismatches = 0;
    let firstMismatch: number | undefined;
    let checked = 0;
    for (let p = 0; p < man.pages; p++) {
      const n = h.read(page, { at: p * man.pageBytes });
      if (n !== man.pageBytes || hash32(page) !== man.checksums[p]) {
        mismatches++;
        firstMismatch ??= p;
      }
      checked++;
    }
    return {
      found: true,
      tokens: man.tokens,
      pages: man.pages,
      pageBytes: man.pageBytes,
      fileBytes,
      checked,
      mismatches,
      firstMismatch,
      ms: performance.now() - t0,
    };
  } finally {
    h.close();
  }
}

async function run(req: NeedleRequest): Promise<void> {
  const { runNeedle } = await import('../../src/demo/needle.js');
  const dir = await root();
  // A new run replaces the old cache: the manifest goes first, so a half-written cache is never checked against it.
  await dir.removeEntry(MANIFEST).catch(() => undefined);
  const handle = await ((await dir.getFileHandle(KV_FILE, { create: true })) as SyncFile).createSyncAccessHandle();
  handle.truncate(0);
  const pageBytes = pageLayout(req.pageSize, 1, 128, 128, 'f16').pageBytes;
  const store = new ChecksumStore(new OpfsStore(handle), pageBytes);
  const dev = await requestDevice({ label: 'tessera-needle-worker' });
  log(`device: ${dev.adapterName} (${dev.adapterClass})`);
  try {
    const result = await runNeedle(dev, {
      tokens: req.tokens,
      pageSize: req.pageSize,
      budgetTokens: req.budgetTokens,
      gpuBudgetMiB: req.gpuBudgetMiB,
      exact: req.exact,
      store,
    });
    // runNeedle disposed the cache, which flushed and closed the handle.
    const pages = Math.ceil(req.tokens / req.pageSize);
    if (store.unaligned || store.sums.length !== pages)
      throw new Error(
        `checksum store saw ${store.sums.length} pages (${store.unaligned} unaligned writes), expected ${pages}`,
      );
    const fileBytes = pages * pageBytes;
    const man: Manifest = { tokens: req.tokens, pageBytes, pages, fileBytes, checksums: store.sums };
    const w = await (await dir.getFileHandle(MANIFEST, { create: true })).createWritable();
    await w.write(JSON.stringify(man));
    await w.close();
    post({ type: 'result', result, manifest: { pages, pageBytes, fileBytes } });
  } finally {
    store.close();
    dev.destroy();
  }
}

self.onmessage = async (ev: MessageEvent<NeedleRequest>) => {
  const req = ev.data;
  try {
    const v = await verify(req);
    post({ type: 'verify', verify: v });
    if (req.run) await run(req);
    post({ type: 'done' });
  } catch (e) {
    post({ type: 'error', message: e instanceof Error ? `${e.name}: ${e.message}` : String(e) });
  }
};
