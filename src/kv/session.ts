/**
 * Persistent KV caches: attach a manifest to a cache on a disk store (`persistKvCache`), commit it
 * after every append, fork, truncate or free (or by hand), and reopen the cache in a new process
 * (`openKvCache`). The commit order makes a crash safe: page writes first, then `store.sync()`
 * (fsync), then the manifest replaced atomically; a page named by the last manifest is never
 * rewritten in place (partial pages move to a fresh id, freed ids are reused only after the next
 * commit), so the last committed state always reopens with every checksum intact.
 */
import { TesseraError, check, fail } from '../errors.js';
import type { DeviceLike } from '../gpu/device.js';
import { createKvCache, type KvCache, type KvCacheOptions } from './cache.js';
import { MANIFEST_VERSION, decodeManifest, encodeManifest, type Manifest, type ManifestStore } from './manifest.js';
import { internals } from './internals.js';
import { uploadSummaries } from './page-summaries.js';
import { refState, setRefState, trimPage, type RefState } from './refs.js';
import type { Store } from './store.js';

export interface PersistOptions {
  /** Commit the manifest after every mutation (default true); else call {@link commitKvCache}. */
  autoCommit?: boolean;
}

/**
 * Makes `cache` persistent: its manifest goes to `manifest` now and after every change. The cache's
 * store must be a disk store (`FileStore` with a path, `OpfsStore`).
 *
 * @example
 * const store = new FileStore({ path: '/data/kv.bin' });
 * const cache = createKvCache(dev, { Hkv: 8, D: 128, store });
 * persistKvCache(cache, store.manifest());
 */
export function persistKvCache(cache: KvCache, manifest: ManifestStore, opts: PersistOptions = {}): void {
  check(
    !!manifest && typeof manifest.write === 'function' && typeof manifest.read === 'function',
    'manifest',
    'a ManifestStore (FileManifest, OpfsManifest, MemoryManifest)',
    typeof manifest,
  );
  attach(cache, manifest, 0, opts.autoCommit ?? true);
  commitKvCache(cache);
}

function attach(cache: KvCache, manifest: ManifestStore, generation: number, autoCommit: boolean): void {
  refState(cache).durable = { autoCommit, commit: commitKvCache, manifest, generation };
}

/** The manifest of `cache` as it stands now (not written). */
export function manifestOf(cache: KvCache, generation = 0): Manifest {
  const c = internals(cache);
  const sh = cache.summariesHost();
  return {
    version: MANIFEST_VERSION,
    generation,
    layout: {
      Hkv: cache.Hkv,
      D: cache.D,
      Dv: cache.Dv,
      pageSize: cache.pageSize,
      dtype: cache.dtype,
      pageBytes: cache.pageBytes,
      meanSummaries: cache.meanSummaries,
    },
    pageCount: c.pageCount,
    sequences: c.seqs.map((s) => ({ length: s.length, freed: !!s.freed, pages: Int32Array.from(s.pages) })),
    sums: c.sums.subarray(0, c.pageCount),
    minmax: sh.minmax,
    mean: sh.mean,
  };
}

/**
 * Writes the manifest of a persistent cache: `store.sync()` first (the pages it names are on disk),
 * then the manifest, atomically. Page ids freed since the last commit become reusable after it.
 * `E_IO` leaves the previous manifest in place (commit again to retry).
 */
export function commitKvCache(cache: KvCache): void {
  const st = refState(cache);
  const g = st.durable;
  if (!g)
    fail(
      'E_STATE',
      'cache',
      'is not persistent;',
      'no manifest',
      'persistKvCache(cache, manifest) or openKvCache first',
    );
  internals(cache).store.sync?.();
  const next = g.generation + 1;
  g.manifest.write(encodeManifest(manifestOf(cache, next)));
  g.generation = next;
  st.free.push(...st.pending);
  st.pending.length = 0;
}

export interface OpenKvCacheOptions extends Partial<KvCacheOptions> {
  /** The disk store holding the pages (`new FileStore({ path, mode: 'open' })`, `new OpfsStore(h, { existing: true })`). */
  store: Store;
  /** Where the manifest lives (`store.manifest()` for a FileStore, an `OpfsManifest`). */
  manifest: ManifestStore;
  /** Commit after every mutation (default true). */
  autoCommit?: boolean;
}

/**
 * Reopens a persistent cache: reads and checks the manifest (`E_CORRUPT` if torn or altered,
 * `E_UNSUPPORTED` for a newer format), refuses one whose layout differs from any of `Hkv`, `D`,
 * `Dv`, `pageSize`, `dtype`, `meanSummaries` given here (`E_SHAPE` / `E_DTYPE` naming the option),
 * restores every sequence and its summaries, and verifies the partial last page of each sequence
 * (`E_CORRUPT` naming the page). Every other page is verified when it is first read from disk
 * (`cache.verifyStore()` or {@link verifyKvCache} check them all now).
 *
 * @example
 * const store = new FileStore({ path: '/data/kv.bin', mode: 'open' });
 * const cache = openKvCache(dev, { store, manifest: store.manifest() });
 */
export function openKvCache(device: DeviceLike, opts: OpenKvCacheOptions): KvCache {
  if (!opts || typeof opts !== 'object') fail('E_ARG', 'options', 'is required;', opts, '{ store, manifest }');
  check(!!opts.store && typeof opts.store.read === 'function', 'store', 'a Store', typeof opts.store);
  check(
    !!opts.manifest && typeof opts.manifest.read === 'function',
    'manifest',
    'a ManifestStore',
    typeof opts.manifest,
  );
  const bytes = opts.manifest.read();
  if (!bytes)
    throw new TesseraError('E_IO', `manifest: none found (${opts.manifest.kind}); was the cache ever committed?`, {
      argument: 'manifest',
    });
  const m = decodeManifest(bytes);
  const L = m.layout;
  for (const key of ['Hkv', 'D', 'Dv', 'pageSize', 'dtype', 'meanSummaries'] as const) {
    const want = opts[key];
    if (want !== undefined && want !== L[key]) {
      fail(
        key === 'dtype' ? 'E_DTYPE' : 'E_SHAPE',
        key,
        "differs from the manifest's layout (a cache of another layout);",
        want,
        `${JSON.stringify(L[key])} as in the manifest`,
      );
    }
  }
  const { manifest, autoCommit, ...rest } = opts;
  const cache = createKvCache(device, {
    ...rest,
    Hkv: L.Hkv,
    D: L.D,
    Dv: L.Dv,
    pageSize: L.pageSize,
    dtype: L.dtype,
    meanSummaries: L.meanSummaries,
  });
  try {
    if (cache.pageBytes !== L.pageBytes)
      fail('E_SHAPE', 'manifest', 'page size in bytes differs from this build;', L.pageBytes, `${cache.pageBytes}`);
    restore(cache, m);
  } catch (e) {
    cache.dispose();
    throw e;
  }
  attach(cache, manifest, m.generation, autoCommit ?? true);
  return cache;
}

function restore(cache: KvCache, m: Manifest): void {
  const c = internals(cache);
  const P = cache.pageSize;
  c.pageCount = m.pageCount;
  c.sums = new Uint32Array(Math.max(1024, m.pageCount));
  c.sums.set(m.sums);
  const mmPer = cache.Hkv * 2 * cache.D;
  c.minmaxHost = new Uint16Array(Math.max(64, m.pageCount) * mmPer);
  c.minmaxHost.set(m.minmax);
  if (m.mean) {
    c.meanHost = new Uint16Array(Math.max(64, m.pageCount) * cache.Hkv * cache.D);
    c.meanHost.set(m.mean);
  }
  const st: RefState = { refs: new Uint32Array(Math.max(64, m.pageCount)), free: [], pending: [], bytesCopied: 0 };
  m.sequences.forEach((ms, i) => {
    const id = cache.addSequence();
    const s = c.seqs[id]!;
    s.pages = Array.from(ms.pages);
    s.length = ms.length;
    s.freed = ms.freed || undefined;
    const need = Math.ceil(ms.length / P);
    if (ms.pages.length !== need) {
      throw new TesseraError(
        'E_CORRUPT',
        `manifest: sequence ${i} has ${ms.pages.length} pages for ${ms.length} tokens`,
        { argument: 'manifest' },
      );
    }
    for (const p of s.pages) st.refs[p]!++;
  });
  for (let p = m.pageCount - 1; p >= 0; p--) if (st.refs[p] === 0) st.free.push(p);
  setRefState(cache, st);
  // The partial last pages: read, verify, and keep as the pages under construction.
  for (const s of c.seqs) {
    const r = s.length % P;
    if (r === 0 || s.pages.length === 0) continue;
    const bytes = c.hostPage(s.pages[s.pages.length - 1]!, true);
    s.tail.set(bytes);
    if (cache.dtype === 'int8') {
      const t = trimPage(cache.layout, bytes, r);
      s.tailK!.set(t.tailK!);
      s.tailV!.set(t.tailV!);
    }
  }
  if (m.pageCount > 0) uploadSummaries(cache, 0, m.pageCount);
  for (const s of c.seqs) {
    const np = s.pages.length;
    for (let i = 0; i < Math.min(np, c.sinkPages); i++) c.pool.pin(s.pages[i]!);
    for (let i = Math.max(0, np - c.recentPages); i < np; i++) c.pool.pin(s.pages[i]!);
  }
}

/**
 * Checks every live page of `cache` against its checksum without stopping at the first failure:
 * `{ checked, failed }` (failed: the page ids whose bytes do not match or cannot be read).
 */
export function verifyKvCache(cache: KvCache): { checked: number; failed: number[] } {
  const st = refState(cache);
  const n = internals(cache).pageCount;
  const failed: number[] = [];
  let checked = 0;
  for (let p = 0; p < n; p++) {
    if (!st.refs[p]) continue;
    checked++;
    try {
      cache.hostPage(p, true);
    } catch (e) {
      if (e instanceof TesseraError && (e.code === 'E_CORRUPT' || e.code === 'E_IO')) failed.push(p);
      else throw e;
    }
  }
  return { checked, failed };
}
