/**
 * Example `needle-10m`: sparse decode over a 10M-token context against exact streaming.
 *
 * A thin wrapper over `src/demo/needle.ts` (`runNeedle`, also `npm run tessera -- demo needle`):
 * it builds a synthetic f16 KV cache of `--tokens` tokens (D = 128, one KV head, pages of 64) with
 * one planted needle, decodes one query (a) sparsely with Quest (page min/max summaries, top-k
 * pages, a 2048-token budget) and (b) exactly, by streaming every page through a 256 MiB GPU
 * working set, and compares the two.
 *
 * Run: `npx tsx examples/needle-10m/main.ts [--small] [--tokens N] [--disk] [--no-exact] [--json FILE]`
 * (default 10,000,000 tokens: about 4.8 GiB of KV in host memory, or on disk with `--disk`;
 * `--small` = 100,000 tokens).
 */
import { writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { runNeedle, type NeedleResult } from '../../src/demo/needle.js';
import { requestDevice, type TesseraDevice } from '../../src/gpu/device.js';
import type { Store } from '../../src/kv/store.js';

export interface NeedleExampleOptions {
  /** Short form for CI: 100,000 tokens. */
  small?: boolean;
  /** Context length (default 10,000,000; small 100,000). */
  tokens?: number;
  /** Keep the KV pages in a temporary file instead of host memory (default false). */
  disk?: boolean;
  /** Run the exact streaming pass (default true). */
  exact?: boolean;
  /** No progress bars on stderr (default: true when `small`). */
  quiet?: boolean;
  /** A device to use (default: a new one, destroyed at the end). */
  device?: TesseraDevice;
}

/**
 * Runs the needle demo and returns its numbers.
 *
 * @example
 * const r = await main({ small: true });
 * console.log(r.needleFound, r.kvBytesReadFraction, r.speedup);
 */
export async function main(opts: NeedleExampleOptions = {}): Promise<NeedleResult> {
  const tokens = opts.tokens ?? (opts.small ? 100_000 : 10_000_000);
  const dev = opts.device ?? (await requestDevice({ label: 'example.needle' }));
  let store: Store | undefined;
  if (opts.disk) {
    const { FileStore } = await import('../../src/kv/file-store.js');
    store = new FileStore({});
  }
  try {
    return await runNeedle(dev, { tokens, store, exact: opts.exact ?? true, quiet: opts.quiet ?? opts.small ?? false });
  } finally {
    if (!opts.device) dev.destroy();
  }
}

const MiB = 2 ** 20;
const fmtBytes = (b: number) => (b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : `${(b / MiB).toFixed(1)} MiB`);

/** The printed summary of a result. */
export function summary(r: NeedleResult): string {
  return [
    `needle-10m example on ${r.adapter}: ${r.tokens.toLocaleString('en-US')} tokens, D=${r.headDim}, Hkv=${r.kvHeads}, page ${r.pageSize}, ${r.dtype}, ${r.store} tier, budget ${r.budgetTokens} tokens`,
    `  needle at ${r.needlePosition}: ${r.needleFound ? 'FOUND' : 'NOT FOUND'} (attention weight sparse ${r.needleWeightSparse.toFixed(4)}, exact ${r.needleWeightExact.toFixed(4)})`,
    `  KV ${fmtBytes(r.kvBytesTotal)}; sparse decode read ${fmtBytes(r.kvBytesRead)} = ${(100 * r.kvBytesReadFraction).toFixed(2)}% of it`,
    `  sparse ${r.sparseMs.toFixed(0)} ms (warm ${r.sparseWarmMs.toFixed(0)} ms) vs exact streaming ${(r.exactMs / 1000).toFixed(2)} s over ${r.exactTiles} tiles: ${r.speedup.toFixed(1)}x`,
    `  max |sparse - exact| = ${r.maxAbsDiffSparseVsExact.toExponential(2)}; GPU peak ${fmtBytes(r.gpuBytesPeak)}; host peak ${fmtBytes(r.hostBytesPeak)}`,
  ].join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const cmd = new Command('needle-10m')
    .option('--small', 'short form: 100,000 tokens')
    .option('--tokens <n>', 'context length (default 10,000,000)')
    .option('--disk', 'keep the KV pages in a temporary file')
    .option('--no-exact', 'skip the exact streaming pass')
    .option('--json <file>', 'write the result as JSON');
  cmd.parse(process.argv);
  const a = cmd.opts<{ small?: boolean; tokens?: string; disk?: boolean; exact: boolean; json?: string }>();
  const tokens = a.tokens === undefined ? undefined : Number(a.tokens.replace(/[_,]/g, ''));
  if (tokens !== undefined && !(Number.isInteger(tokens) && tokens > 0))
    throw new Error(`--tokens: not a positive integer: ${a.tokens}`);
  const r = await main({ small: a.small, tokens, disk: a.disk, exact: a.exact });
  console.log(summary(r));
  if (a.json) writeFileSync(a.json, JSON.stringify(r, null, 2) + '\n');
  process.exitCode = r.needleFound ? 0 : 1;
}
