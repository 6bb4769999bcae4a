/**
 * `tessera demo needle --tokens N`: a synthetic context of N tokens with one planted needle (a key
 * aligned with the query and a distinctive value), decoded (a) sparsely with Quest and (b) exactly
 * by streaming every page through the GPU working set; prints a summary and optionally writes JSON.
 */
import { writeFileSync } from 'node:fs';
import { Command } from 'commander';
import { cliDevice, intOption } from '../cli-common.js';
import { TesseraError } from '../errors.js';
import { f32ToF16Bits, f32ToBf16Bits } from '../tensor.js';
import { createKvCache, type KvCache } from '../kv/cache.js';
import type { KvDType } from '../kv/codec.js';
import type { Store } from '../kv/store.js';
import { planStreamAttention } from '../stream/exact.js';
import { planQuestDecode } from '../stream/quest.js';
import { decodeReference64 } from '../stream/reference64.js';
import { GPUBufferUsageFlags } from '../gpu/flags.js';

const MiB = 2 ** 20;

export interface NeedleResult {
  tokens: number;
  headDim: number;
  kvHeads: number;
  qHeads: number;
  pageSize: number;
  budgetTokens: number;
  dtype: string;
  store: string;
  needlePosition: number;
  needleFound: boolean;
  needlePageSelected: boolean;
  needleWeightSparse: number;
  needleWeightExact: number;
  maxAbsDiffSparseVsExact: number;
  kvBytesTotal: number;
  kvBytesRead: number;
  kvBytesReadFraction: number;
  summaryBytesRead: number;
  sparseMs: number;
  sparseWarmMs: number;
  exactMs: number;
  speedup: number;
  exactTiles: number;
  buildMs: number;
  gpuBudgetBytes: number;
  gpuBytesPeak: number;
  hostBytesPeak: number;
  hostBytesPeakFraction: number;
  rssPeakBytes: number;
  adapter: string;
  /**
   * The exact pass's overlap of transfer (read from the host/disk tier + upload) and compute,
   * measured on its first tiles (up to 8) in the same run: pipelined vs each alone.
   * overlapFraction = (transfer + compute - pipelined) / transfer.
   */
  overlapFraction?: number;
  overlapTiles?: number;
  overlapTransferMs?: number;
  overlapComputeMs?: number;
  overlapPipelinedMs?: number;
  /** 1: every page summary on the GPU; 2: super-page summaries on the GPU, page summaries on the host. */
  summaryLevels: number;
  /** Largest GPU bytes the summaries held (super-pages + candidate buffer with two levels). */
  summaryBytesGpuPeak: number;
  /** Host bytes the summaries hold at the end: the page-summary mirror (none when they are on disk) plus super-page copies and scratch. */
  summaryBytesHost: number;
  /** Where the page summaries live: `memory` (host mirror) or the summary store's kind (`file`: disk). */
  summaryTier: string;
  /** Two levels: super-pages, those visited, pages scored, and whether the selection was certified equal to single-level Quest. */
  summarySupers?: number;
  summarySupersVisited?: number;
  summaryPagesScored?: number;
  summarySelectionCertified?: boolean;
  /**
   * `--check-float64`: the exact pass against float64 attention over the same stored K/V, for the
   * needle query (the planted head of each KV group: needle-dominated; the group's other heads:
   * random +-1 queries), a pass with Gaussian random queries and a pass with the needle query
   * scaled so that the needle holds about 99.9% of the attention. Max over heads and queries.
   */
  float64RelRmsMax?: number;
  float64LseErrMax?: number;
  /** The same, split: the planted heads (needle-dominated) and every other head (random). */
  float64RelRmsNeedle?: number;
  float64LseErrNeedle?: number;
  float64RelRmsRandom?: number;
  float64LseErrRandom?: number;
  /** The needle's share of the attention (float64) for the scaled needle query (about 0.999). */
  float64NeedleShare?: number;
  float64Ms?: number;
}

/** A progress bar on stderr (only when stderr is a TTY or `force`). */
function progress(label: string): (done: number, total: number) => void {
  let last = -1;
  const t0 = performance.now();
  return (done, total) => {
    const pct = Math.floor((1000 * done) / Math.max(1, total));
    if (pct === last && done < total) return;
    last = pct;
    const w = 30;
    const fill = Math.round((w * done) / Math.max(1, total));
    const s = ((performance.now() - t0) / 1000).toFixed(1);
    process.stderr.write(
      `\r${label.padEnd(8)} [${'#'.repeat(fill)}${'.'.repeat(w - fill)}] ${(pct / 10).toFixed(1)}% ${s}s`,
    );
    if (done >= total) process.stderr.write('\n');
  };
}

/** xorshift32 filling words with random 16-bit patterns of magnitude < 2 (f16: top exponent bit clear). */
function fillRandom(words: Uint32Array, state: { s: number }, mask: number): void {
  let s = state.s;
  for (let i = 0; i < words.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    words[i] = s & mask;
  }
  state.s = s;
}

export interface NeedleOptions {
  tokens: number;
  headDim?: number;
  kvHeads?: number;
  qHeads?: number;
  pageSize?: number;
  budgetTokens?: number;
  dtype?: KvDType;
  gpuBudgetMiB?: number;
  seed?: number;
  store?: Store;
  /**
   * With two summary levels: the store for the page summaries (the disk tier beside `store`, e.g. a
   * second `FileStore`); runNeedle owns it (the cache closes it; with one level it is closed unused).
   */
  summaryStore?: Store;
  exact?: boolean;
  /** Keep the MoBA mean summaries too (default true). */
  mean?: boolean;
  quiet?: boolean;
  /** Summary levels: 1, 2 or `auto` (default: 2 when single-level summaries would take over a quarter of the GPU budget). */
  summaryLevels?: 1 | 2 | 'auto';
  /** Check the exact pass against float64 attention over the stored K/V (needs `exact`). */
  checkFloat64?: boolean;
}

/**
 * Runs the needle demo on a device and returns its numbers.
 *
 * @example
 * const r = await runNeedle(dev, { tokens: 1_000_000 });
 * console.log(r.needleFound, r.kvBytesReadFraction, r.exactMs / r.sparseMs);
 */
/** Where the needle goes in a context of `tokens` tokens (inside it only from {@link needleMinTokens} on). */
function needlePosition(tokens: number, seed: number): number {
  return Math.floor(tokens * 0.37) + (seed % 97);
}

/**
 * The fewest tokens for which the needle of `seed` lies inside the context (its position depends
 * on the seed); fewer is an `E_ARG` for `tokens` (`--tokens` on the command line).
 *
 * @example
 * needleMinTokens(1234); // 125
 */
export function needleMinTokens(seed: number): number {
  const s = seed >>> 0 || 1;
  let n = 1;
  while (needlePosition(n, s) >= n) n++;
  return n;
}

export async function runNeedle(dev: Awaited<ReturnType<typeof cliDevice>>, o: NeedleOptions): Promise<NeedleResult> {
  const N = o.tokens;
  const D = o.headDim ?? 128;
  const Hkv = o.kvHeads ?? 1;
  const Hq = o.qHeads ?? Hkv;
  const P = o.pageSize ?? 64;
  const budgetTokens = o.budgetTokens ?? 2048;
  const dtype = o.dtype ?? 'f16';
  if (dtype !== 'f16' && dtype !== 'bf16')
    throw new TesseraError('E_UNSUPPORTED', `demo needle generates f16 or bf16 data; got ${dtype}`, {
      argument: 'dtype',
      actual: dtype,
    });
  const gpuBudget = (o.gpuBudgetMiB ?? 256) * MiB;
  const seed = (o.seed ?? 1234) >>> 0 || 1;
  if (!Number.isInteger(N) || N < needleMinTokens(seed)) {
    throw new TesseraError(
      'E_ARG',
      `tokens: ${N} tokens cannot hold the needle (seed ${seed} plants it at ${needlePosition(Number(N) || 0, seed)})`,
      { argument: 'tokens', actual: N, expected: `at least ${needleMinTokens(seed)} tokens` },
    );
  }
  const log = (s: string) => !o.quiet && process.stderr.write(s + '\n');
  const heldBefore = dev.resetPeak(); // the peak counts this run's buffers only
  // The cache gets the budget minus a reserve for the stream/quest workspaces (partials, scores, lists).
  const reserve = Math.min(32 * MiB, gpuBudget / 8);
  const perPageSummary = Hkv * D * 2 * ((o.mean ?? true) ? 3 : 2);
  const levels =
    o.summaryLevels === 1 || o.summaryLevels === 2
      ? o.summaryLevels
      : Math.ceil(N / P) * perPageSummary > gpuBudget / 4
        ? 2
        : 1;
  if (levels !== 2) o.summaryStore?.close();
  const summaryStore = levels === 2 ? o.summaryStore : undefined;
  const cache: KvCache = createKvCache(dev, {
    Hkv,
    D,
    pageSize: P,
    dtype,
    gpuBudgetBytes: gpuBudget - reserve,
    store: o.store,
    sinkPages: 1,
    recentPages: 1,
    meanSummaries: o.mean ?? true,
    summaryLevels: levels,
    summaryStore,
  });
  let rssPeak = process.memoryUsage().rss;
  const sampleRss = () => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss));
  try {
    // Query: +-1 per channel (deterministic); needle key = 3 q (score 3 D / sqrt(D) = 34 at D = 128).
    const st = { s: seed };
    const q = new Float32Array(Hq * D);
    const bits = new Uint32Array(1);
    for (let i = 0; i < q.length; i++) {
      fillRandom(bits, st, 0xffffffff);
      q[i] = bits[0]! & 1 ? 1 : -1;
    }
    const needlePos = needlePosition(N, seed);
    const conv = dtype === 'f16' ? f32ToF16Bits : f32ToBf16Bits;
    const needleV = new Float32Array(D).map((_, d) => (d % 2 === 0 ? 1.5 : -1.5));
    // The needle's share of a head's attention: the projection of o on the needle value.
    const weight64 = (x: ArrayLike<number>) => {
      let dot = 0;
      for (let d = 0; d < D; d++) dot += x[d]! * needleV[d]!;
      return dot / (D * 1.5 * 1.5);
    };
    // 1. Build the context.
    const t0 = performance.now();
    const chunk = 65536;
    const kw = new Uint32Array((chunk * Hkv * D) / 2);
    const vw = new Uint32Array((chunk * Hkv * D) / 2);
    const mask = 0xbfffbfff; // top exponent bit clear: |x| < 2 for f16 and bf16
    const seq = cache.addSequence();
    const bar = o.quiet ? () => {} : progress('build');
    for (let t = 0; t < N; t += chunk) {
      const n = Math.min(chunk, N - t);
      const kv16 = new Uint16Array(kw.buffer, 0, n * Hkv * D);
      const vv16 = new Uint16Array(vw.buffer, 0, n * Hkv * D);
      fillRandom(kw.subarray(0, (n * Hkv * D) / 2), st, mask);
      fillRandom(vw.subarray(0, (n * Hkv * D) / 2), st, mask);
      if (needlePos >= t && needlePos < t + n) {
        const r = needlePos - t;
        for (let h = 0; h < Hkv; h++) {
          const g = Hq / Hkv;
          for (let d = 0; d < D; d++) {
            kv16[(r * Hkv + h) * D + d] = conv(3 * q[h * g * D + d]!);
            vv16[(r * Hkv + h) * D + d] = conv(needleV[d]!);
          }
        }
      }
      cache.appendRaw(seq, { dtype, k: kv16, v: vv16 });
      bar(t + n, N);
      if ((t / chunk) % 64 === 0) sampleRss();
    }
    const buildMs = performance.now() - t0;
    sampleRss();
    const qBuf = dev.upload(q, { label: 'needle.q' });
    const usage = GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_SRC | GPUBufferUsageFlags.COPY_DST;
    const oS = dev.createBuffer({ size: Hq * D * 4, usage, label: 'needle.oSparse' });
    const oE = dev.createBuffer({ size: Hq * D * 4, usage, label: 'needle.oExact' });
    const lS = dev.createBuffer({ size: Hq * 4, usage, label: 'needle.lseSparse' });
    const lE = dev.createBuffer({ size: Hq * 4, usage, label: 'needle.lseExact' });
    const qT = { buffer: qBuf, shape: [1, Hq, D], dtype: 'f32' as const };
    // 2. Sparse decode (Quest). Planning compiles the pipelines; the run is timed on its own.
    const quest = await planQuestDecode(cache, { Hq, budgetTokens });
    const sparse = await quest.run(seq, qT, {
      o: { buffer: oS, shape: [1, Hq, D], dtype: 'f32' },
      lse: { buffer: lS, shape: [1, Hq], dtype: 'f32' },
    });
    const warm = await quest.run(seq, qT, {
      o: { buffer: oS, shape: [1, Hq, D], dtype: 'f32' },
      lse: { buffer: lS, shape: [1, Hq], dtype: 'f32' },
    });
    log(
      `sparse   ${sparse.ms.toFixed(1)} ms (score+select ${sparse.scoreMs.toFixed(1)}, fetch+attend ${sparse.attendMs.toFixed(1)}; warm ${warm.ms.toFixed(1)} ms), ${sparse.selected[0]!.length} pages per KV head`,
    );
    const needlePage = Math.floor(needlePos / P);
    const g = Hq / Hkv;
    // The needle is planted for the first query head of each KV group (key = 3 q of that head).
    const planted = (h: number) => h % g === 0;
    const needlePageSelected = sparse.selected.every((s) => s.includes(needlePage));
    const oSparse = new Float32Array(await dev.readback(oS));
    // 3. Exact streaming attention over every page.
    let exactMs = NaN;
    let exactTiles = 0;
    let oExact: Float32Array | undefined;
    const f64: Partial<NeedleResult> = {};
    if (o.checkFloat64 && o.exact === false)
      throw new TesseraError('E_ARG', 'demo needle: --check-float64 needs the exact pass (drop --no-exact)', {
        argument: 'checkFloat64',
        actual: true,
      });
    if (o.exact !== false) {
      const exact = await planStreamAttention(cache, { Hq });
      const es = await exact.run(
        seq,
        qT,
        { o: { buffer: oE, shape: [1, Hq, D], dtype: 'f32' }, lse: { buffer: lE, shape: [1, Hq], dtype: 'f32' } },
        { onProgress: o.quiet ? undefined : progress('exact'), measureOverlap: 8 },
      );
      exactMs = es.ms;
      if (es.overlap) {
        Object.assign(f64, {
          overlapFraction: es.overlap.fraction,
          overlapTiles: es.overlap.tiles,
          overlapTransferMs: es.overlap.transferMs,
          overlapComputeMs: es.overlap.computeMs,
          overlapPipelinedMs: es.overlap.overlappedMs,
        });
        log(
          `overlap  ${es.overlap.tiles} tiles: transfer ${es.overlap.transferMs.toFixed(0)} ms + compute ${es.overlap.computeMs.toFixed(0)} ms alone, ${es.overlap.overlappedMs.toFixed(0)} ms pipelined: ${(100 * es.overlap.fraction).toFixed(0)}% of the transfer hidden`,
        );
      }
      exactTiles = es.tiles;
      oExact = new Float32Array(await dev.readback(oE));
      if (o.checkFloat64) {
        // A second decode query: Gaussian random, every head.
        const qr = new Float32Array(Hq * D);
        for (let i = 0; i < qr.length; i += 2) {
          fillRandom(bits, st, 0xffffffff);
          const u1 = (bits[0]! >>> 8) / 2 ** 24 + 2 ** -25;
          fillRandom(bits, st, 0xffffffff);
          const u2 = (bits[0]! >>> 8) / 2 ** 24;
          const r = Math.sqrt(-2 * Math.log(u1));
          qr[i] = r * Math.cos(2 * Math.PI * u2);
          if (i + 1 < qr.length) qr[i + 1] = r * Math.sin(2 * Math.PI * u2);
        }
        // A third: the needle query scaled by c so that the needle holds about 99.9% of the
        // attention and the thin background of every other token matters at the 1e-3 level
        // (34 c - ln 1000 = ln N + 0.055 c^2: the score variance of the random keys is ~0.11).
        const c = (34 - Math.sqrt(34 * 34 - 4 * 0.055 * (Math.log(N) + Math.log(1000)))) / (2 * 0.055);
        const qs = q.map((x) => x * c);
        const lseN = new Float32Array(await dev.readback(lE));
        const got = [oExact, new Float32Array(0), new Float32Array(0)];
        const gotLse = [lseN, new Float32Array(0), new Float32Array(0)];
        for (const [i, qx] of [
          [1, qr],
          [2, qs],
        ] as const) {
          dev.device.queue.writeBuffer(qBuf, 0, qx);
          await exact.run(
            seq,
            qT,
            { o: { buffer: oE, shape: [1, Hq, D], dtype: 'f32' }, lse: { buffer: lE, shape: [1, Hq], dtype: 'f32' } },
            { onProgress: o.quiet ? undefined : progress(`exact${i + 1}`) },
          );
          got[i] = new Float32Array(await dev.readback(oE));
          gotLse[i] = new Float32Array(await dev.readback(lE));
        }
        dev.device.queue.writeBuffer(qBuf, 0, q);
        const tf = performance.now();
        const qq = new Float32Array(3 * Hq * D);
        qq.set(q);
        qq.set(qr, Hq * D);
        qq.set(qs, 2 * Hq * D);
        const ref = decodeReference64(cache, seq, qq, { Hq, onProgress: o.quiet ? undefined : progress('float64') });
        let rN = 0,
          lN = 0,
          rR = 0,
          lR = 0;
        let share = Infinity;
        for (let qi = 0; qi < 3; qi++) {
          for (let h = 0; h < Hq; h++) {
            let num = 0,
              den = 0;
            for (let d = 0; d < D; d++) {
              const x = ref.o[(qi * Hq + h) * D + d]!;
              num += (got[qi]![h * D + d]! - x) ** 2;
              den += x * x;
            }
            const rel = Math.sqrt(num / den);
            const le = Math.abs(gotLse[qi]![h]! - ref.lse[qi * Hq + h]!);
            if (qi !== 1 && planted(h)) {
              rN = Math.max(rN, rel);
              lN = Math.max(lN, le);
            } else {
              rR = Math.max(rR, rel);
              lR = Math.max(lR, le);
            }
            if (qi === 2 && planted(h))
              share = Math.min(share, weight64(ref.o.subarray((qi * Hq + h) * D, (qi * Hq + h + 1) * D)));
          }
        }
        Object.assign(f64, {
          float64RelRmsMax: Math.max(rN, rR),
          float64LseErrMax: Math.max(lN, lR),
          float64RelRmsNeedle: rN,
          float64LseErrNeedle: lN,
          float64RelRmsRandom: rR,
          float64LseErrRandom: lR,
          float64NeedleShare: share,
          float64Ms: performance.now() - tf,
        });
        log(
          `float64  needle heads: rel RMS ${rN.toExponential(2)}, |lse err| ${lN.toExponential(2)}; random: rel RMS ${rR.toExponential(2)}, |lse err| ${lR.toExponential(2)}`,
        );
      }
      exact.dispose();
    }
    sampleRss();
    // Needle weight: the projection of o on the needle value (o = w v_needle + (1 - w) mean(v), mean ~ 0).
    const weight = (x: Float32Array, h: number) => {
      let dot = 0;
      let nn = 0;
      for (let d = 0; d < D; d++) {
        dot += x[h * D + d]! * needleV[d]!;
        nn += needleV[d]! * needleV[d]!;
      }
      return dot / nn;
    };
    let wS = Infinity;
    let wE = Infinity;
    let maxDiff = 0;
    for (let h = 0; h < Hq; h++) {
      if (!planted(h)) continue;
      wS = Math.min(wS, weight(oSparse, h));
      if (oExact) wE = Math.min(wE, weight(oExact, h));
    }
    // Sparse vs exact on the planted heads (the others are random queries, which Quest approximates).
    if (oExact)
      for (let i = 0; i < oSparse.length; i++)
        if (planted(Math.floor(i / D))) maxDiff = Math.max(maxDiff, Math.abs(oSparse[i]! - oExact[i]!));
    quest.dispose();
    for (const b of [qBuf, oS, oE, lS, lE]) dev.destroyBuffer(b);
    const stats = cache.stats();
    const r: NeedleResult = {
      tokens: N,
      headDim: D,
      kvHeads: Hkv,
      qHeads: Hq,
      pageSize: P,
      budgetTokens,
      dtype,
      store: cache.store.kind,
      needlePosition: needlePos,
      needleFound: needlePageSelected && wS > 0.9,
      needlePageSelected,
      needleWeightSparse: wS,
      needleWeightExact: oExact ? wE : NaN,
      maxAbsDiffSparseVsExact: oExact ? maxDiff : NaN,
      kvBytesTotal: stats.kvBytes,
      kvBytesRead: sparse.kvBytesRead,
      kvBytesReadFraction: sparse.kvBytesRead / stats.kvBytes,
      summaryBytesRead: sparse.summaryBytesRead,
      sparseMs: sparse.ms,
      sparseWarmMs: warm.ms,
      exactMs,
      speedup: exactMs / sparse.ms,
      exactTiles,
      buildMs,
      gpuBudgetBytes: gpuBudget,
      gpuBytesPeak: dev.memory().bytesPeak - heldBefore,
      hostBytesPeak: stats.hostBytesPeak,
      hostBytesPeakFraction: stats.hostBytesPeak / stats.kvBytes,
      rssPeakBytes: rssPeak,
      adapter: dev.adapterName,
      summaryLevels: levels,
      summaryBytesGpuPeak: cache.tiers ? cache.tiers.bytesPeak : stats.summaryBytes,
      summaryBytesHost: cache.summaryHostBytes,
      summaryTier: summaryStore ? summaryStore.kind : 'memory',
      summarySupers: sparse.levels?.supers,
      summarySupersVisited: sparse.levels?.supersVisited,
      summaryPagesScored: sparse.levels?.pagesScored,
      summarySelectionCertified: sparse.levels?.certified,
      ...f64,
    };
    return r;
  } finally {
    cache.dispose();
  }
}

function fmtBytes(b: number): string {
  return b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : `${(b / MiB).toFixed(1)} MiB`;
}

/** CLI entry: `tessera demo needle --tokens N [--json FILE] ...`. */
export async function needleCli(argv: string[]): Promise<void> {
  const cmd = new Command('needle')
    .option('--tokens <n>', 'context length in tokens', '1000000')
    .option('--head-dim <n>', 'head dim D', '128')
    .option('--kv-heads <n>', 'KV heads', '1')
    .option('--q-heads <n>', 'query heads (default = KV heads)')
    .option('--page-size <n>', 'tokens per page', '64')
    .option('--budget-tokens <n>', 'Quest token budget per KV head', '2048')
    .option('--dtype <d>', 'f16 or bf16', 'f16')
    .option('--gpu-budget <MiB>', 'GPU bytes budget in MiB', '256')
    .option('--disk [path]', 'keep the cache on disk (a file; default a temp file)')
    .option('--no-exact', 'skip the exact streaming pass')
    .option('--no-mean', 'keep only the min/max summaries (no MoBA means): less GPU memory')
    .option('--seed <n>', 'random seed', '1234')
    .option(
      '--summary-levels <n>',
      '1, 2 or auto (2 when page summaries would take over a quarter of the GPU budget)',
      'auto',
    )
    .option(
      '--check-float64',
      'check the exact pass against float64 attention over the stored K/V (needle and random queries)',
    )
    .option('--json <file>', 'write the results as JSON')
    .option('--adapter <name>', 'auto | swiftshader | llvmpipe')
    .exitOverride();
  cmd.parse(argv, { from: 'user' });
  const a = cmd.opts();
  const int = (s: string, name: string, min = 1) => intOption(s, `--${name}`, { min });
  const seedArg = int(a.seed, 'seed', 0);
  const dev = await cliDevice({ adapter: a.adapter });
  let store: Store | undefined;
  let summaryStore: Store | undefined;
  if (a.disk) {
    const { FileStore } = await import('../kv/file-store.js');
    store = new FileStore(typeof a.disk === 'string' ? { path: a.disk, removeOnClose: true } : {});
    // Two summary levels: the page summaries go to disk too, in a file beside the pages.
    summaryStore = new FileStore(
      typeof a.disk === 'string' ? { path: `${a.disk}.summaries`, removeOnClose: true } : {},
    );
  }
  try {
    const r = await runNeedle(dev, {
      tokens: int(a.tokens, 'tokens', needleMinTokens(seedArg)),
      headDim: int(a.headDim, 'head-dim'),
      kvHeads: int(a.kvHeads, 'kv-heads'),
      qHeads: a.qHeads ? int(a.qHeads, 'q-heads') : undefined,
      pageSize: int(a.pageSize, 'page-size'),
      budgetTokens: int(a.budgetTokens, 'budget-tokens'),
      dtype: a.dtype as KvDType,
      gpuBudgetMiB: int(a.gpuBudget, 'gpu-budget'),
      seed: seedArg,
      store,
      summaryStore,
      exact: a.exact,
      mean: a.mean,
      checkFloat64: a.checkFloat64 === true,
      summaryLevels: a.summaryLevels === 'auto' ? 'auto' : (int(a.summaryLevels, 'summary-levels') as 1 | 2),
    });
    const lines = [
      `needle demo on ${r.adapter}: ${r.tokens.toLocaleString('en-US')} tokens, D=${r.headDim}, Hkv=${r.kvHeads}, Hq=${r.qHeads}, page ${r.pageSize}, ${r.dtype}, ${r.store} tier`,
      `  needle at ${r.needlePosition}: ${r.needleFound ? 'FOUND' : 'NOT FOUND'} (page selected: ${r.needlePageSelected}, weight sparse ${r.needleWeightSparse.toFixed(4)}, exact ${r.needleWeightExact.toFixed(4)})`,
      `  KV bytes ${fmtBytes(r.kvBytesTotal)}; sparse read ${fmtBytes(r.kvBytesRead)} = ${(100 * r.kvBytesReadFraction).toFixed(3)}% (summaries ${fmtBytes(r.summaryBytesRead)})`,
      `  sparse ${r.sparseMs.toFixed(1)} ms (warm ${r.sparseWarmMs.toFixed(1)} ms); exact ${(r.exactMs / 1000).toFixed(2)} s over ${r.exactTiles} tiles; speedup ${r.speedup.toFixed(1)}x`,
      `  max |sparse - exact| = ${r.maxAbsDiffSparseVsExact.toExponential(2)}`,
      `  summaries: ${r.summaryLevels} level(s), GPU peak ${fmtBytes(r.summaryBytesGpuPeak)}, host ${fmtBytes(r.summaryBytesHost)} (page summaries in ${r.summaryTier})${r.summarySupers !== undefined ? `; ${r.summarySupersVisited} of ${r.summarySupers} super-pages visited, ${r.summaryPagesScored} pages scored, certified ${r.summarySelectionCertified}` : ''}`,
      `  GPU peak ${fmtBytes(r.gpuBytesPeak)} of ${fmtBytes(r.gpuBudgetBytes)} budget; host tier peak ${fmtBytes(r.hostBytesPeak)} (${r.hostBytesPeakFraction.toFixed(3)}x KV); RSS peak ${fmtBytes(r.rssPeakBytes)}; build ${(r.buildMs / 1000).toFixed(1)} s`,
    ];
    if (r.float64RelRmsMax !== undefined)
      lines.push(
        `  vs float64: rel RMS of o ${r.float64RelRmsMax.toExponential(2)}, |lse error| ${r.float64LseErrMax!.toExponential(2)} (needle share of the scaled query ${r.float64NeedleShare!.toFixed(4)}; needle heads ${r.float64RelRmsNeedle!.toExponential(2)} / ${r.float64LseErrNeedle!.toExponential(2)}, random ${r.float64RelRmsRandom!.toExponential(2)} / ${r.float64LseErrRandom!.toExponential(2)})`,
      );
    console.log(lines.join('\n'));
    if (a.json) writeFileSync(a.json, JSON.stringify(r, null, 2) + '\n');
  } finally {
    summaryStore?.close(); // idempotent: closed by the cache already unless runNeedle failed first
    dev.destroy();
  }
}
