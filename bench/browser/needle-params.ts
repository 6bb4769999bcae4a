/**
 * The needle page's URL parameters (`needle-page.ts`), parsed without the DOM so a Node test can
 * check them: `tokens` (default 1,000,000; `tokens=10000000` or `tokens=10_000_000` for 10M, at
 * most {@link NEEDLE_MAX_TOKENS}), `run=0`, `exact=0`, `pageSize` (64), `budgetTokens` (2048),
 * `gpuBudget` (MiB, 256), `corrupt=<page>`.
 */
import type { NeedleRequest } from './needle-protocol.js';

/** The most tokens the page accepts: 100M (a 100M-token f16 cache at D 128 is 51 GB of OPFS). */
export const NEEDLE_MAX_TOKENS = 100_000_000;

/**
 * The request the page sends its worker, from `location.search`. A bad value throws an `Error`
 * naming the parameter (the page shows it).
 *
 * @example
 * parseNeedleParams('?tokens=10000000&exact=0').tokens; // 10_000_000
 */
export function parseNeedleParams(search: string): NeedleRequest {
  const params = new URLSearchParams(search);
  const num = (name: string, def: number, max = Number.MAX_SAFE_INTEGER) => {
    const s = params.get(name);
    const n = s === null ? def : Number(s.replace(/_/g, ''));
    if (!Number.isInteger(n) || n <= 0 || n > max)
      throw new Error(
        `URL parameter ${name}=${s}: not a positive integer${max < Number.MAX_SAFE_INTEGER ? ` up to ${max}` : ''}`,
      );
    return n;
  };
  const corrupt = params.get('corrupt');
  if (corrupt !== null && !/^\d+$/.test(corrupt)) throw new Error(`URL parameter corrupt=${corrupt}: not a page index`);
  return {
    tokens: num('tokens', 1_000_000, NEEDLE_MAX_TOKENS),
    run: params.get('run') !== '0',
    exact: params.get('exact') !== '0',
    pageSize: num('pageSize', 64),
    budgetTokens: num('budgetTokens', 2048),
    gpuBudgetMiB: num('gpuBudget', 256),
    corruptPage: corrupt !== null ? Number(corrupt) : undefined,
  };
}
