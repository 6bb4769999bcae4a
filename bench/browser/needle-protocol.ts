/**
 * Messages between the needle page (`needle-page.ts`) and its worker (`needle-worker.ts`).
 */
import type { NeedleResult } from '../../src/demo/needle.js';

/** What the page asks: check the cache already on OPFS, then (unless `run` is false) build and run a new one. */
export interface NeedleRequest {
  tokens: number;
  run: boolean;
  exact: boolean;
  pageSize: number;
  budgetTokens: number;
  gpuBudgetMiB: number;
  /** Flip one byte of this page in the stored file before checking it (shows that the check can fail). */
  corruptPage?: number;
}

/** The result of checking the cache found on OPFS at load. */
export interface OpfsVerify {
  /** A cache (file and manifest) was on OPFS. */
  found: boolean;
  tokens?: number;
  pages?: number;
  pageBytes?: number;
  fileBytes?: number;
  /** Pages whose bytes were read back and hashed. */
  checked?: number;
  /** Pages whose hash differs from the checksum recorded when they were written. */
  mismatches?: number;
  firstMismatch?: number;
  ms?: number;
}

export type NeedleMessage =
  | { type: 'log'; line: string }
  | { type: 'progress'; done: number; total: number }
  | { type: 'verify'; verify: OpfsVerify }
  | { type: 'result'; result: NeedleResult; manifest: { pages: number; pageBytes: number; fileBytes: number } }
  | { type: 'done' }
  | { type: 'error'; message: string };
