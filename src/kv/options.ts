/**
 * The options of `createKvCache` and their validation: every option is checked (and its default
 * applied) before the cache allocates anything, and the derived sizes (page layout, pool tile,
 * summary chunks) are computed once here.
 */
import { check, checkInt, fail } from '../errors.js';
import { KV_DTYPES, pageLayout, type KvDType, type PageLayout } from './codec.js';
import type { Store } from './store.js';

export interface KvCacheOptions {
  /** KV heads. */
  Hkv: number;
  /** Key head dim (a multiple of 4, at most 256). */
  D: number;
  /** Value head dim (default `D`; a multiple of 4, at most 256). */
  Dv?: number;
  /**
   * Tokens per page: a multiple of 16 in [16, 256]. Default 64: the Quest summaries cost
   * `1 / pageSize` of the KV bytes per scoring pass (1.6% at 64, 6% at 16), which is what a
   * 10M-token decode reads on top of its selected pages, while a 64-token page is still a fine
   * grain for selection (Quest uses 16, MoBA blocks are 512 to 4096).
   */
  pageSize?: number;
  /**
   * Storage dtype (default `f16`). `int8` keeps one scale per token, head and K/V block, so an
   * append never changes earlier tokens, and rejects NaN / Inf values with `E_NAN`.
   */
  dtype?: KvDType;
  /**
   * GPU bytes the cache may hold: summaries plus the page pool (default 256 MiB). Must hold the
   * summaries and at least one tile (one pool buffer) of pages, else `E_LIMIT`.
   */
  gpuBudgetBytes?: number;
  /** Pages per pool buffer = pages per streaming tile (default: 16 MiB worth, within the binding limit). */
  tilePages?: number;
  /** First pages of each sequence kept pinned on the GPU once loaded (attention sinks; default 1). */
  sinkPages?: number;
  /** Newest pages of each sequence kept pinned (the recent window; default 1). */
  recentPages?: number;
  /** Where pages live off the GPU: host slabs (default) or a disk store (`FileStore`, `OpfsStore`). */
  store?: Store;
  /** Host slab size of the default memory store (default 64 MiB). */
  slabBytes?: number;
  /** Largest GPU buffer of min/max summaries (default 128 MiB, capped by the binding limit); more pages use more buffers. */
  summaryChunkBytes?: number;
  /** Keep the per-page key mean (MoBA scoring) besides min/max (default true). */
  meanSummaries?: boolean;
  /**
   * 1 (default): every page's summaries on the GPU. 2: only super-page summaries (`superPages`
   * pages each) on the GPU, page summaries in the host tier (or `summaryStore`), brought up for the selected
   * super-pages (`src/kv/summaries.ts`; Quest mode only). GPU summary bytes shrink by `superPages`.
   */
  summaryLevels?: 1 | 2;
  /** Pages per super-page with `summaryLevels: 2` (default 64). */
  superPages?: number;
  /** Page summaries the GPU candidate buffer holds with `summaryLevels: 2` (default 4 MiB worth). */
  candidatePages?: number;
  /**
   * With `summaryLevels: 2`: a store for the page summaries (e.g. a second `FileStore`: the disk
   * tier), so host RAM holds only the super-page summaries (`src/kv/summaries.ts`). Closed with the cache.
   */
  summaryStore?: Store;
  /**
   * Verify page checksums on every host -> GPU upload (default false; pages read from a disk store
   * are always verified).
   */
  debug?: boolean;
  /**
   * Size every plan on this cache for this loop cap (lower than the device's only; an integer >=
   * 256): tests run the split paths llvmpipe needs (streaming, Quest, prefill) on any adapter with
   * it. Default: the device's `loopLimit`.
   */
  loopLimit?: number;
}

/** The validated options with their defaults, and the sizes derived from them. */
export interface ResolvedKvCacheOptions {
  Hkv: number;
  D: number;
  Dv: number;
  pageSize: number;
  dtype: KvDType;
  layout: PageLayout;
  pageBytes: number;
  gpuBudgetBytes: number;
  sinkPages: number;
  recentPages: number;
  meanSummaries: boolean;
  debug: boolean;
  /** Pages per pool buffer (= pages per streaming tile). */
  tilePages: number;
  /** Bytes of one page's min/max summary (`Hkv * 2 * D` halves). */
  minmaxBytesPerPage: number;
  /** Bytes of one page's mean summary (`Hkv * D` halves). */
  meanBytesPerPage: number;
  /** Pages per GPU summary buffer (each within the binding limit). */
  summaryChunkPages: number;
}

const MiB = 2 ** 20;

/**
 * Checks `opts` against the device `limits` and applies the defaults. Throws the first problem as
 * a `TesseraError` naming the option (`E_ARG`, `E_UNSUPPORTED`, `E_DTYPE`, `E_LIMIT`). `summaryLevels`
 * is checked by the cache itself (after its store is claimed).
 */
export function resolveKvCacheOptions(
  limits: { maxStorageBufferBindingSize: number; maxBufferSize: number },
  opts: KvCacheOptions,
): ResolvedKvCacheOptions {
  if (!opts || typeof opts !== 'object') fail('E_ARG', 'options', 'is required;', opts, '{ Hkv, D, ... }');
  const Hkv = checkInt(opts.Hkv, 'Hkv', { min: 1, max: 256 });
  const D = checkInt(opts.D, 'D', { min: 4, max: 256 });
  const Dv = checkInt(opts.Dv ?? opts.D, 'Dv', { min: 4, max: 256 });
  check(D % 4 === 0, 'D', 'a multiple of 4', D, 'E_UNSUPPORTED');
  check(Dv % 4 === 0, 'Dv', 'a multiple of 4', Dv, 'E_UNSUPPORTED');
  const P = opts.pageSize ?? 64;
  if (!Number.isInteger(P) || P < 16 || P > 256 || P % 16 !== 0) {
    fail('E_UNSUPPORTED', 'pageSize', 'is not a supported page size;', P, 'a multiple of 16 in [16, 256]');
  }
  const dtype = opts.dtype ?? 'f16';
  check(KV_DTYPES.includes(dtype), 'dtype', `one of ${KV_DTYPES.join(', ')}`, dtype, 'E_DTYPE');
  const layout = pageLayout(P, Hkv, D, Dv, dtype);
  const pageBytes = layout.pageBytes;
  const gpuBudgetBytes = checkInt(opts.gpuBudgetBytes ?? 256 * MiB, 'gpuBudgetBytes', {
    min: 1,
    max: Number.MAX_SAFE_INTEGER,
  });
  const sinkPages = checkInt(opts.sinkPages ?? 1, 'sinkPages', { min: 0 });
  const recentPages = checkInt(opts.recentPages ?? 1, 'recentPages', { min: 0 });
  const meanSummaries = opts.meanSummaries ?? true;
  const debug = opts.debug ?? false;
  const maxBind = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  const tilePages =
    opts.tilePages ?? Math.max(1, Math.floor(Math.min(16 * MiB, maxBind, gpuBudgetBytes / 4) / pageBytes));
  checkInt(tilePages, 'tilePages', { min: 1 });
  if (tilePages * pageBytes > maxBind) {
    fail(
      'E_LIMIT',
      'tilePages',
      'makes a pool buffer larger than the device allows;',
      tilePages,
      `at most ${Math.floor(maxBind / pageBytes)} pages of ${pageBytes} bytes`,
    );
  }
  const minmaxBytesPerPage = Hkv * 2 * D * 2;
  const meanBytesPerPage = Hkv * D * 2;
  const chunkBytes = checkInt(opts.summaryChunkBytes ?? 128 * MiB, 'summaryChunkBytes', {
    min: minmaxBytesPerPage,
    max: Number.MAX_SAFE_INTEGER,
  });
  const summaryChunkPages = Math.floor(Math.min(maxBind, chunkBytes) / minmaxBytesPerPage);
  if (tilePages * pageBytes > gpuBudgetBytes) {
    fail(
      'E_LIMIT',
      'gpuBudgetBytes',
      'is smaller than one tile of pages;',
      gpuBudgetBytes,
      `at least ${tilePages * pageBytes} bytes (tilePages ${tilePages} x ${pageBytes} bytes) plus the summaries`,
    );
  }
  if (opts.summaryStore !== undefined)
    check(
      opts.summaryLevels === 2 && typeof opts.summaryStore?.read === 'function',
      'summaryStore',
      'a Store, with summaryLevels: 2',
      typeof opts.summaryStore,
    );
  return {
    Hkv,
    D,
    Dv,
    pageSize: P,
    dtype,
    layout,
    pageBytes,
    gpuBudgetBytes,
    sinkPages,
    recentPages,
    meanSummaries,
    debug,
    tilePages,
    minmaxBytesPerPage,
    meanBytesPerPage,
    summaryChunkPages,
  };
}
