export {
  createKvCache,
  KvCache,
  type KvCacheOptions,
  type KvCacheStats,
  type PageTable,
  type RawRows,
} from './cache.js';
export { MemoryStore, OpfsStore, type Store, type MemoryStoreOptions, type SyncAccessHandleLike } from './store.js';
export { GpuPagePool, type SlotLocation } from './pool.js';
export { KV_DTYPES, KV_DTYPE_BYTES, kvDtypeCode, pageLayout, hash32, type KvDType, type PageLayout } from './codec.js';
export { pageCounts } from './refs.js';
export { residentPageTable, type ResidentTables } from './resident.js';
export { importPoolSequences } from './import.js';
export {
  persistKvCache,
  openKvCache,
  commitKvCache,
  verifyKvCache,
  manifestOf,
  type PersistOptions,
  type OpenKvCacheOptions,
} from './session.js';
export {
  MANIFEST_VERSION,
  MemoryManifest,
  OpfsManifest,
  encodeManifest,
  decodeManifest,
  type ManifestStore,
  type Manifest,
} from './manifest.js';
