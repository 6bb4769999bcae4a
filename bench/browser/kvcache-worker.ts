/**
 * The KvCache persistence page's worker: a persistent `KvCache` on OPFS (a real
 * `FileSystemSyncAccessHandle`, through `OpfsStore` and `OpfsManifest`), created, committed and
 * closed by one page load and reopened with `openKvCache` by the next.
 *
 * - `create`: a base sequence of `tokens` tokens (f16, Hkv 2, D 64, pages of 64), a fork of it with
 *   100 private tokens, rewound by 60 (`truncate`) and re-appended with 60 others; the manifest is
 *   committed; a bit-exact sample of both sequences and one decode step over each are reported;
 *   then 70 more tokens go to each sequence without a commit (a crash after the last commit) and
 *   the cache is closed.
 * - `reopen`: `openKvCache` over the same files, `verifyKvCache` (every live page's checksum), the
 *   same sample and decode step (the page's test compares them with the `create` report bit for
 *   bit): the committed state, without the uncommitted tokens. With `corruptPage`, one byte of that page is flipped in the file first: the check must
 *   name the page, and reading one of its tokens must throw a typed `E_CORRUPT`.
 *
 * Token values are a pure function of (stream, position, index), multiples of 1/256 below 4 in
 * magnitude: exact in f16, so what is read back must equal what was appended, bit for bit.
 */
import { TesseraError } from '../../src/errors.js';
import { requestDevice, type TesseraDevice } from '../../src/gpu/device.js';
import { createKvCache, type KvCache } from '../../src/kv/cache.js';
import { hash32, pageLayout } from '../../src/kv/codec.js';
import { OpfsManifest, decodeManifest } from '../../src/kv/manifest.js';
import { commitKvCache, openKvCache, persistKvCache, verifyKvCache } from '../../src/kv/session.js';
import { OpfsStore, type SyncAccessHandleLike } from '../../src/kv/store.js';
import { streamAttention } from '../../src/stream/exact.js';
import type { KvPageMessage, KvPageRequest, KvPageResult, SeqReport } from './kvcache-protocol.js';

const FILE = 'tessera-kvcache.bin';
const MANIFESTS = ['tessera-kvcache.manifest.0', 'tessera-kvcache.manifest.1'];
const Hkv = 2;
const D = 64;
const P = 64;
const Hq = 4;
const GPU_BUDGET = 4 << 20;
/** The fork: private tokens, how many are rewound, and the streams of each part. */
const PRIVATE = 100;
const REWIND = 60;
const S_BASE = 1;
const S_CHILD = 2;
const S_REDO = 3;
/** Tokens appended to each sequence after the commit and never committed (a crash). */
const UNCOMMITTED = 70;
const S_LOST = 4;

const post = (m: KvPageMessage) => (self as unknown as Worker).postMessage(m);
const log = (line: string) => post({ type: 'log', line });

interface SyncHandle extends SyncAccessHandleLike {
  getSize(): number;
  truncate(size: number): void;
}
type SyncFile = FileSystemFileHandle & { createSyncAccessHandle(): Promise<SyncHandle> };

/** Value `j` of token `t` of stream `s` (K: j < Hkv*D, V after): a multiple of 1/256 in (-4, 4). */
function value(s: number, t: number, j: number): number {
  let h = Math.imul(s, 0x9e3779b1) ^ Math.imul(t, 0x85ebca6b) ^ Math.imul(j + 1, 0xc2b2ae35);
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  h ^= h >>> 12;
  return (((h >>> 0) % 2001) - 1000) / 256;
}

function rows(s: number, t0: number, n: number): { k: Float32Array; v: Float32Array } {
  const w = Hkv * D;
  const k = new Float32Array(n * w);
  const v = new Float32Array(n * w);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < w; j++) {
      k[i * w + j] = value(s, t0 + i, j);
      v[i * w + j] = value(s, t0 + i, w + j);
    }
  }
  return { k, v };
}

function append(cache: KvCache, seq: number, s: number, t0: number, n: number): void {
  for (let a = 0; a < n; a += 4096) {
    const m = Math.min(4096, n - a);
    const r = rows(s, t0 + a, m);
    cache.append(seq, r.k, r.v);
  }
}

/** Which stream wrote token t of the base (0) or the fork (1). */
function streamOf(seq: 0 | 1, t: number, N: number): number {
  if (seq === 0 || t < N) return S_BASE;
  return t < N + PRIVATE - REWIND ? S_CHILD : S_REDO;
}

/** Reads 32 windows of 8 tokens spread over the sequence (and its last 8), compares them with the streams. */
function sample(cache: KvCache, seq: 0 | 1, N: number): Pick<SeqReport, 'sampled' | 'sampleBad' | 'sampleHash'> {
  const L = cache.length(seq);
  const starts = Array.from({ length: 32 }, (_, i) => Math.floor((i * (L - 8)) / 31));
  if (seq === 1) starts.push(N - 4, N + PRIVATE - REWIND - 4); // across the fork point and the rewind point
  const w = Hkv * D;
  const all: Float32Array[] = [];
  let bad = 0;
  for (const s0 of starts) {
    const r = cache.read(seq, s0, 8);
    for (let i = 0; i < 8; i++) {
      const s = streamOf(seq, s0 + i, N);
      for (let j = 0; j < w; j++) {
        if (r.k[i * w + j] !== value(s, s0 + i, j)) bad++;
        if (r.v[i * w + j] !== value(s, s0 + i, w + j)) bad++;
      }
    }
    all.push(r.k, r.v);
  }
  const bytes = new Uint8Array(all.reduce((a, x) => a + x.byteLength, 0));
  let o = 0;
  for (const x of all) {
    bytes.set(new Uint8Array(x.buffer, x.byteOffset, x.byteLength), o);
    o += x.byteLength;
  }
  return { sampled: starts.length * 8, sampleBad: bad, sampleHash: hash32(bytes) };
}

/** One decode step over the whole sequence (GPU, streaming from OPFS), and float64 attention over the stored values. */
async function decode(cache: KvCache, seq: 0 | 1): Promise<Pick<SeqReport, 'decode' | 'decodeRelRms'>> {
  const q = new Float32Array(Hq * D);
  for (let i = 0; i < q.length; i++) q[i] = value(9, 0, i) / 2;
  const { o } = await streamAttention(cache, seq, q, { Hq });
  const L = cache.length(seq);
  const ref = new Float64Array(Hq * D);
  const scale = 1 / Math.sqrt(D);
  const chunk = 4096;
  for (let h = 0; h < Hq; h++) {
    const g = Math.floor(h / (Hq / Hkv));
    const logits = new Float64Array(L);
    const vs: Float32Array[] = [];
    for (let a = 0; a < L; a += chunk) {
      const n = Math.min(chunk, L - a);
      const r = cache.read(seq, a, n);
      vs.push(r.v);
      for (let t = 0; t < n; t++) {
        let s = 0;
        for (let d = 0; d < D; d++) s += q[h * D + d]! * r.k[(t * Hkv + g) * D + d]!;
        logits[a + t] = s * scale;
      }
    }
    let m = -Infinity;
    for (const x of logits) m = Math.max(m, x);
    let den = 0;
    for (let t = 0; t < L; t++) den += Math.exp(logits[t]! - m);
    for (let c = 0; c < vs.length; c++) {
      const v = vs[c]!;
      for (let t = 0; t < v.length / (Hkv * D); t++) {
        const p = Math.exp(logits[c * chunk + t]! - m) / den;
        for (let d = 0; d < D; d++) ref[h * D + d] += p * v[(t * Hkv + g) * D + d]!;
      }
    }
  }
  let num = 0;
  let dd = 0;
  for (let i = 0; i < ref.length; i++) {
    num += (o[i]! - ref[i]!) ** 2;
    dd += ref[i]! ** 2;
  }
  return { decode: Array.from(o), decodeRelRms: Number.isFinite(num) ? Math.sqrt(num / dd) : NaN };
}

async function report(cache: KvCache, seq: 0 | 1, N: number, withDecode: boolean): Promise<SeqReport> {
  return {
    length: cache.length(seq),
    pages: cache.pages(seq).length,
    ...sample(cache, seq, N),
    ...(withDecode ? await decode(cache, seq) : {}),
  };
}

async function handles(create: boolean): Promise<{ file: SyncHandle; manifests: SyncHandle[] }> {
  const dir = await navigator.storage.getDirectory();
  const open = async (name: string) =>
    ((await dir.getFileHandle(name, { create })) as SyncFile).createSyncAccessHandle();
  const file = await open(FILE);
  const manifests = [await open(MANIFESTS[0]!), await open(MANIFESTS[1]!)];
  if (create) for (const h of [file, ...manifests]) h.truncate(0);
  return { file, manifests };
}

function generation(m: OpfsManifest): number {
  const b = m.read();
  return b ? decodeManifest(b).generation : -1;
}

async function create(dev: TesseraDevice, req: KvPageRequest): Promise<KvPageResult> {
  const t0 = performance.now();
  const N = req.tokens;
  const { file, manifests } = await handles(true);
  const store = new OpfsStore(file);
  const manifest = new OpfsManifest(manifests[0]!, manifests[1]!);
  const cache = createKvCache(dev, { Hkv, D, pageSize: P, dtype: 'f16', gpuBudgetBytes: GPU_BUDGET, store });
  try {
    persistKvCache(cache, manifest, { autoCommit: false });
    const base = cache.addSequence();
    append(cache, base, S_BASE, 0, N);
    const child = cache.fork(base);
    append(cache, child, S_CHILD, N, PRIVATE);
    cache.truncate(child, N + PRIVATE - REWIND);
    append(cache, child, S_REDO, N + PRIVATE - REWIND, REWIND);
    commitKvCache(cache);
    log(`created ${N} + ${PRIVATE} tokens on OPFS (${cache.numPages} pages), manifest committed`);
    const b = await report(cache, 0, N, true);
    const c = await report(cache, 1, N, true);
    const shared = cache.pages(1).filter((p) => cache.pages(0).includes(p)).length;
    const pageCount = cache.numPages;
    const gen = generation(manifest);
    // A crash after the commit: more tokens reach OPFS (both partial last pages among them, written
    // to fresh page ids) but no manifest names them. The reload must find the committed state.
    append(cache, base, S_LOST, N, UNCOMMITTED);
    append(cache, child, S_LOST, N + PRIVATE, UNCOMMITTED);
    log(
      `appended ${UNCOMMITTED} uncommitted tokens to each sequence (${cache.numPages - pageCount} more pages on OPFS), closing without a commit`,
    );
    return {
      phase: 'create',
      adapter: dev.adapterName,
      store: store.kind,
      layout: { Hkv, D, pageSize: P, dtype: 'f16', pageBytes: cache.pageBytes },
      pageCount,
      fileBytes: file.getSize(),
      generation: gen,
      uncommitted: UNCOMMITTED,
      base: b,
      child: c,
      sharedPages: shared,
      ms: performance.now() - t0,
    };
  } finally {
    cache.dispose(); // flushes and closes the store's handle
    manifest.close();
  }
}

async function reopen(dev: TesseraDevice, req: KvPageRequest): Promise<KvPageResult> {
  const t0 = performance.now();
  const N = req.tokens;
  const { file, manifests } = await handles(false);
  const pageBytes = pageLayout(P, Hkv, D, D, 'f16').pageBytes;
  if (req.corruptPage !== undefined) {
    const b = new Uint8Array(1);
    const at = req.corruptPage * pageBytes + 17;
    file.read(b, { at });
    b[0] ^= 0x40;
    file.write(b, { at });
    file.flush();
    log(`flipped one byte of page ${req.corruptPage} on OPFS`);
  }
  const store = new OpfsStore(file, { existing: true });
  const manifest = new OpfsManifest(manifests[0]!, manifests[1]!);
  let cache: KvCache;
  try {
    cache = openKvCache(dev, { store, manifest, gpuBudgetBytes: GPU_BUDGET, Hkv, D, pageSize: P, dtype: 'f16' });
  } catch (e) {
    store.close();
    manifest.close();
    throw e;
  }
  try {
    const v = verifyKvCache(cache);
    log(`reopened: ${v.checked} checksums checked, ${v.failed.length} failed`);
    let readError: KvPageResult['readError'];
    let b: SeqReport;
    let c: SeqReport;
    if (req.corruptPage !== undefined) {
      const at = cache.pages(0).indexOf(req.corruptPage);
      try {
        cache.read(0, Math.max(0, at) * P, 1);
      } catch (e) {
        if (!(e instanceof TesseraError)) throw e;
        readError = { code: e.code, message: e.message, argument: e.argument };
      }
      b = { length: cache.length(0), pages: cache.pages(0).length, sampled: 0, sampleBad: 0, sampleHash: 0 };
      c = { length: cache.length(1), pages: cache.pages(1).length, sampled: 0, sampleBad: 0, sampleHash: 0 };
    } else {
      b = await report(cache, 0, N, true);
      c = await report(cache, 1, N, true);
    }
    const shared = cache.pages(1).filter((p) => cache.pages(0).includes(p)).length;
    return {
      phase: 'reopen',
      adapter: dev.adapterName,
      store: store.kind,
      layout: { Hkv: cache.Hkv, D: cache.D, pageSize: cache.pageSize, dtype: cache.dtype, pageBytes: cache.pageBytes },
      pageCount: cache.numPages,
      fileBytes: file.getSize(),
      generation: generation(manifest),
      base: b,
      child: c,
      sharedPages: shared,
      checked: v.checked,
      failed: v.failed,
      readError,
      ms: performance.now() - t0,
    };
  } finally {
    cache.dispose();
    manifest.close();
  }
}

self.onmessage = async (ev: MessageEvent<KvPageRequest>) => {
  const req = ev.data;
  let dev: TesseraDevice | undefined;
  try {
    dev = await requestDevice({ label: 'tessera-kvcache-worker' });
    log(`device: ${dev.adapterName} (${dev.adapterClass})`);
    const result = req.phase === 'create' ? await create(dev, req) : await reopen(dev, req);
    post({ type: 'result', result });
  } catch (e) {
    post({
      type: 'error',
      message: e instanceof Error ? `${e.name}: ${e.message}` : String(e),
      code: e instanceof TesseraError ? e.code : undefined,
    });
  } finally {
    dev?.destroy();
  }
};
