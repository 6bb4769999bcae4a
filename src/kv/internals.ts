/**
 * The private state of a `KvCache` as the modules that implement it see it.
 *
 * `cache.ts` holds the state and the public methods; the work lives beside it, one concern per
 * file (`append.ts`, `pages.ts`, `page-summaries.ts`, `residency.ts`, `refs.ts`, `session.ts`),
 * each reaching the fields it needs through {@link internals}. Every member named here exists on
 * `KvCache` (private or public); the cast is the only way in, so the public API stays as it is.
 */
import type { TesseraDevice } from '../gpu/device.js';
import type { KvDType, PageLayout } from './codec.js';
import type { KvCache } from './cache.js';
import type { GpuPagePool } from './pool.js';
import type { Store } from './store.js';
import type { SummaryTiers } from './summaries.js';

/** The sequence record inside the cache. */
export interface SeqState {
  pages: number[];
  length: number;
  /** The page under construction (bytes), for the last, partial page. */
  tail: Uint8Array;
  /** int8 only: f32 values of the partial page `[Hkv, P, D]`, `[Hkv, P, Dv]`. */
  tailK?: Float32Array;
  tailV?: Float32Array;
  /** Set by `freeSequence` (refs.ts): the id stays taken, every use is refused. */
  freed?: boolean;
}

/** The private parts of `KvCache` (all exist in cache.ts). */
export interface CacheInternals {
  seqs: SeqState[];
  pageCount: number;
  /** Checksum (hash32) of each page as written. */
  sums: Uint32Array;
  /** Host mirror of the summaries: `[pages, Hkv, 2, D]` f16 bits (min then max). */
  minmaxHost: Uint16Array<ArrayBuffer>;
  /** Host mirror of the means: `[pages, Hkv, D]` f16 bits. */
  meanHost: Uint16Array<ArrayBuffer>;
  /** Capacity (pages) of each GPU summary chunk. */
  summaryCap: number[];
  /** Host buffer for pages read from a store without zero-copy views. */
  staging?: Uint8Array;
  hostPeak: number;
  pagesUploaded: number;
  bytesUploaded: number;
  readonly ctx: TesseraDevice;
  readonly pool: GpuPagePool;
  readonly store: Store;
  readonly layout: PageLayout;
  readonly dtype: KvDType;
  readonly pageSize: number;
  readonly pageBytes: number;
  readonly Hkv: number;
  readonly D: number;
  readonly Dv: number;
  readonly gpuBudgetBytes: number;
  readonly sinkPages: number;
  readonly recentPages: number;
  readonly meanSummaries: boolean;
  readonly debug: boolean;
  readonly tiers?: SummaryTiers;
  readonly summaryChunkPages: number;
  readonly minmaxBytesPerPage: number;
  readonly meanBytesPerPage: number;
  readonly minmaxGpu: GPUBuffer[];
  readonly meanGpu: GPUBuffer[];
  readonly summaryBytes: number;
  readonly hostBytes: number;
  hostPage(page: number, verify?: boolean): Uint8Array;
  addSequence(): number;
}

export function internals(cache: KvCache): CacheInternals {
  return cache as unknown as CacheInternals;
}
