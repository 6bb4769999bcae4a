/**
 * Messages between the KvCache persistence page (`kvcache-page.ts`) and its worker
 * (`kvcache-worker.ts`).
 */

/** What the page asks. `create`: build, commit and close a cache on OPFS; `reopen`: open it again. */
export interface KvPageRequest {
  phase: 'create' | 'reopen';
  /** Tokens of the base sequence (default 65,553: 1,024 full pages of 64 and a partial one). */
  tokens: number;
  /** reopen: flip one byte of this page of the stored file before opening the cache. */
  corruptPage?: number;
}

/** A bit-exact sample of stored tokens, and one decode step, of a sequence. */
export interface SeqReport {
  length: number;
  pages: number;
  /** Tokens read back and compared with the values appended (bit for bit). */
  sampled: number;
  /** Sampled values that differ from what was appended. */
  sampleBad: number;
  /** hash32 of the sampled K and V values as read (f32 bytes). */
  sampleHash: number;
  /** One decode step (streaming exact attention, Hq 4) over the whole sequence: `o [1, 4, Dv]` f32 values. */
  decode?: number[];
  /** Relative RMS of `decode` against float64 attention over the stored values. */
  decodeRelRms?: number;
}

export interface KvPageResult {
  phase: 'create' | 'reopen';
  adapter: string;
  store: string;
  layout: { Hkv: number; D: number; pageSize: number; dtype: string; pageBytes: number };
  /** Pages of the cache (ids), and bytes of the OPFS file. */
  pageCount: number;
  fileBytes: number;
  /** Manifest generation (commits so far). */
  generation: number;
  /** create: tokens appended to each sequence after the last commit, never committed (the reload must not see them). */
  uncommitted?: number;
  base: SeqReport;
  /** A fork of the base with 100 private tokens, rewound by 60 and re-appended with 60 others. */
  child: SeqReport;
  /** Pages the fork shares with the base. */
  sharedPages: number;
  /** reopen: every live page's checksum (verifyKvCache). */
  checked?: number;
  failed?: number[];
  /** reopen with a flipped byte: the typed error of reading a token of that page. */
  readError?: { code: string; message: string; argument?: string };
  ms: number;
}

export type KvPageMessage =
  | { type: 'log'; line: string }
  | { type: 'result'; result: KvPageResult }
  | { type: 'error'; message: string; code?: string };
