/**
 * `tessera demo prefill --context N --chunk 4096`: sparse prefill of a chunk of new tokens over a
 * long cache, against exact attention.
 *
 * The context is random f16 keys and values (|x| < 2) with planted evidence: each block of the
 * chunk's queries has a topic direction u (+-1 per channel), its queries are u plus noise, and
 * `evidence` context tokens per block have the key 1.5 u. The chunk's own keys and values are
 * random. The chunk is appended and attended sparsely (per-block Quest and MoBA gates), then
 * compared with exact attention, either over every query (`--exact full`: exact streaming with
 * Tq = chunk) or over `--samples` sampled queries (`--exact sample`, the default above 256K
 * tokens: the context part by exact streaming of the sampled queries before the chunk is
 * appended, the chunk part in float64 on the host, merged exactly; the exact time for the whole
 * chunk is then extrapolated from two sampled passes, linear in the number of query rows).
 * Recall is measured per sampled query against the float64 attention mass of every context page.
 */
import { writeFileSync } from 'node:fs';
import { Command } from 'commander';
import { cliDevice } from '../cli-common.js';
import { TesseraError } from '../errors.js';
import type { TesseraDevice } from '../gpu/device.js';
import { f32ToF16Bits } from '../tensor.js';
import { createKvCache, type KvCache } from '../kv/cache.js';
import { ALL_HEADS, PAGED_ENTRY_WORDS, planPaged } from '../../kernels/paged/paged.js';
import type { Store } from '../kv/store.js';
import { planStreamAttention } from '../stream/exact.js';
import { planSparsePrefill } from '../stream/prefill.js';
import { mergePartialsF64 } from '../stream/reference.js';
import { f16ToF32, fillWords, positiveInt, relErr, uniform, type Xorshift } from './synth.js';
import { GPUBufferUsageFlags } from '../gpu/flags.js';

const MiB = 2 ** 20;

export interface PrefillGateResult {
  mode: 'quest' | 'mean';
  /** How a block scored a page: the query-box bound or every row's own score (`SparsePrefillOptions.blockScore`). */
  blockScore: 'bound' | 'rows';
  /**
   * With both block scores run for this gate's mode: the share of the `rows` selection (per block
   * and KV head, sinks excluded) that this selection holds too (1 for the `rows` gate itself).
   */
  recallVsRows?: number;
  /** Share of the heavy context pages (>= 1% of a sampled query's context attention mass) the query's block selected. */
  selectedRecall: number;
  /** Overlap of the selection with the sampled query's best |selection| pages by exact attention mass. */
  topPageRecall: number;
  /** Context attention mass on the selected pages / mass on the best |selection| pages. */
  attentionMassRecall: number;
  relRmsVsExact: number;
  maxAbsVsExact: number;
  lseMaxAbsDiff: number;
  /** Sparse prefill time: score, select, fetch and attend (without the append). */
  sparseMs: number;
  scoreMs: number;
  kvBytesRead: number;
  kvBytesReadFraction: number;
}

export interface PrefillResult extends PrefillGateResult {
  context: number;
  chunk: number;
  blockSize: number;
  blocks: number;
  headDim: number;
  kvHeads: number;
  qHeads: number;
  pageSize: number;
  budgetTokens: number;
  evidencePerBlock: number;
  store: string;
  exact: 'full' | 'sample' | 'none';
  exactQueries: number;
  appendMs: number;
  /** Exact attention time for the whole chunk (measured with `exact: full`, else extrapolated). */
  exactMs: number;
  exactMsExtrapolated: boolean;
  speedup: number;
  gates: PrefillGateResult[];
  buildMs: number;
  gpuBudgetBytes: number;
  gpuBytesPeak: number;
  adapter: string;
}

export interface PrefillOptions {
  context: number;
  chunk?: number;
  blockSize?: number;
  budgetTokens?: number;
  headDim?: number;
  pageSize?: number;
  gpuBudgetMiB?: number;
  exact?: 'full' | 'sample' | 'none' | 'auto';
  samples?: number;
  evidence?: number;
  modes?: ('quest' | 'mean')[];
  /** Block scores to run per mode (default `['bound']`); both give `recallVsRows`. */
  blockScores?: ('bound' | 'rows')[];
  seed?: number;
  store?: Store;
  quiet?: boolean;
}

/**
 * Runs the prefill demo and returns its numbers (D 128, one KV head, one query head, f16).
 *
 * @example
 * const r = await runPrefill(dev, { context: 1_000_000, chunk: 4096 });
 * console.log(r.selectedRecall, r.relRmsVsExact, r.exactMs / r.sparseMs);
 */
export async function runPrefill(dev: TesseraDevice, o: PrefillOptions): Promise<PrefillResult> {
  const N = o.context;
  const Tq = o.chunk ?? 4096;
  const B = o.blockSize ?? 64;
  const D = o.headDim ?? 128;
  const P = o.pageSize ?? 64;
  const budgetTokens = o.budgetTokens ?? 2048;
  const E = o.evidence ?? 4;
  const gpuBudget = (o.gpuBudgetMiB ?? 256) * MiB;
  const exactMode = !o.exact || o.exact === 'auto' ? (N <= 262_144 ? 'full' : 'sample') : o.exact;
  const S = exactMode === 'full' ? Tq : exactMode === 'sample' ? Math.min(Tq, o.samples ?? 16) : 0;
  const modes = o.modes ?? ['quest', 'mean'];
  const blockScores = o.blockScores ?? ['bound'];
  const gatesToRun = modes.flatMap((mode) => blockScores.map((blockScore) => ({ mode, blockScore })));
  const log = (s: string) => !o.quiet && console.error(s);
  const nb = Math.ceil(Tq / B);
  const st: Xorshift = { s: (o.seed ?? 4321) >>> 0 || 1 };
  const heldBefore = dev.resetPeak(); // the peak counts this run's buffers only
  const reserve = Math.min(48 * MiB, gpuBudget / 4);
  const cache = createKvCache(dev, {
    Hkv: 1,
    D,
    pageSize: P,
    dtype: 'f16',
    gpuBudgetBytes: gpuBudget - reserve,
    store: o.store,
    meanSummaries: modes.includes('mean'),
  });
  const usage = GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_SRC | GPUBufferUsageFlags.COPY_DST;
  const made: GPUBuffer[] = [];
  const buf = (bytes: number, label: string) => {
    const b = dev.createBuffer({ size: bytes, usage, label });
    made.push(b);
    return b;
  };
  try {
    // Topics, queries, evidence positions.
    const u = Array.from({ length: nb }, () => Float32Array.from({ length: D }, () => (uniform(st) < 0.5 ? -1 : 1)));
    const q = new Float32Array(Tq * D);
    for (let t = 0; t < Tq; t++)
      for (let d = 0; d < D; d++) q[t * D + d] = u[Math.floor(t / B)]![d]! + (uniform(st) - 0.5);
    const evidence = new Map<number, number>(); // position -> block
    for (let b = 0; b < nb; b++) for (let e = 0; e < E; e++) evidence.set(P + Math.floor(uniform(st) * (N - 2 * P)), b);
    // 1. Build the context.
    const t0 = performance.now();
    const CH = 65536;
    const kw = new Uint32Array((CH * D) / 2);
    const vw = new Uint32Array((CH * D) / 2);
    const seq = cache.addSequence();
    for (let t = 0; t < N; t += CH) {
      const n = Math.min(CH, N - t);
      fillWords(kw.subarray(0, (n * D) / 2), st);
      fillWords(vw.subarray(0, (n * D) / 2), st);
      const k16 = new Uint16Array(kw.buffer, 0, n * D);
      for (const [pos, b] of evidence)
        if (pos >= t && pos < t + n) for (let d = 0; d < D; d++) k16[(pos - t) * D + d] = f32ToF16Bits(1.5 * u[b]![d]!);
      cache.appendRaw(seq, { dtype: 'f16', k: k16, v: new Uint16Array(vw.buffer, 0, n * D) });
    }
    const buildMs = performance.now() - t0;
    log(`built ${N.toLocaleString('en-US')} tokens in ${(buildMs / 1000).toFixed(1)} s`);
    const kChunk16 = new Uint16Array(Tq * D);
    const vChunk16 = new Uint16Array(Tq * D);
    fillWords(new Uint32Array(kChunk16.buffer), st);
    fillWords(new Uint32Array(vChunk16.buffer), st);
    const kChunk = f16ToF32(kChunk16);
    const vChunk = f16ToF32(vChunk16);
    const sampled = Array.from({ length: S }, (_, s) => (S === Tq ? s : Math.floor(((s + 0.5) * Tq) / S)));
    // 2. Sampled exact, context part (before the chunk is appended): non-causal over the context.
    let ctxPart: { o: Float32Array; lse: Float32Array } | undefined;
    let exactMs = NaN;
    let exactMsExtrapolated = false;
    const timeCtxPass = async (rows: number[]) => {
      const plan = await planStreamAttention(cache, { Hq: 1, Tq: rows.length, causal: false });
      try {
        const qs = new Float32Array(rows.length * D);
        rows.forEach((t, i) => qs.set(q.subarray(t * D, (t + 1) * D), i * D));
        const qb = dev.upload(qs, { label: 'prefill.qSample' });
        made.push(qb);
        const ob = buf(rows.length * D * 4, 'prefill.oSample');
        const lb = buf(Math.max(16, rows.length * 4), 'prefill.lseSample');
        const stats = await plan.run(
          seq,
          { buffer: qb, shape: [rows.length, 1, D], dtype: 'f32' },
          {
            o: { buffer: ob, shape: [rows.length, 1, D], dtype: 'f32' },
            lse: { buffer: lb, shape: [rows.length, 1], dtype: 'f32' },
          },
        );
        return {
          ms: stats.ms,
          o: new Float32Array(await dev.readback(ob)),
          lse: new Float32Array(await dev.readback(lb, rows.length * 4)),
        };
      } finally {
        plan.dispose();
      }
    };
    if (exactMode === 'sample') {
      const small = sampled.filter((_, i) => i % 4 === 0); // a quarter of the rows: the slope per row
      const a = await timeCtxPass(small);
      log(`exact (sampled): ${small.length} queries ${a.ms.toFixed(0)} ms`);
      const b = await timeCtxPass(sampled);
      ctxPart = { o: b.o, lse: b.lse };
      const slope = Math.max(0, (b.ms - a.ms) / Math.max(1, sampled.length - small.length));
      exactMs = b.ms + slope * (Tq - sampled.length);
      exactMsExtrapolated = true;
      log(
        `exact (sampled): ${small.length} queries ${a.ms.toFixed(0)} ms, ${sampled.length} queries ${b.ms.toFixed(0)} ms -> ${Tq} queries about ${(exactMs / 1000).toFixed(1)} s`,
      );
    }
    // 3. Per-page exact partials of the sampled queries over the context pages (the pages wholly
    //    before the chunk: the selection candidates): each page's attention mass, for the recall.
    const nCtxPages = Math.floor(N / P);
    const mass =
      S && exactMode !== 'none'
        ? await perPagePass(
            dev,
            cache,
            seq,
            q,
            sampled.length > 64 ? sampled.filter((_, i) => i % Math.ceil(S / 64) === 0) : sampled,
            D,
            nCtxPages,
          )
        : undefined;
    const massRows = sampled.length > 64 ? sampled.filter((_, i) => i % Math.ceil(S / 64) === 0) : sampled;
    // 4. Sparse prefill, one gate after the other (the first appends the chunk).
    const qBuf = dev.upload(q, { label: 'prefill.q' });
    made.push(qBuf);
    const oBuf = buf(Tq * D * 4, 'prefill.o');
    const lBuf = buf(Tq * 4, 'prefill.lse');
    const gates: PrefillGateResult[] = [];
    let appendMs = 0;
    let exactRows: { o: Float64Array; lse: Float64Array } | undefined;
    const selections: Int32Array[][][] = [];
    for (const [gi, { mode, blockScore }] of gatesToRun.entries()) {
      const plan = await planSparsePrefill(cache, { Hq: 1, Tq, blockSize: B, budgetTokens, mode, blockScore });
      let stats;
      try {
        stats = await plan.run(
          seq,
          { buffer: qBuf, shape: [Tq, 1, D], dtype: 'f32' },
          { o: { buffer: oBuf, shape: [Tq, 1, D], dtype: 'f32' }, lse: { buffer: lBuf, shape: [Tq, 1], dtype: 'f32' } },
          gi === 0 ? { k: kChunk, v: vChunk } : {},
        );
      } finally {
        plan.dispose();
      }
      if (gi === 0) appendMs = stats.appendMs;
      const oS = new Float32Array(await dev.readback(oBuf));
      const lS = new Float32Array(await dev.readback(lBuf));
      // Exact rows for the comparison.
      if (!exactRows && exactMode === 'full') {
        const plan2 = await planStreamAttention(cache, { Hq: 1, Tq });
        const oE = buf(Tq * D * 4, 'prefill.oExact');
        const lE = buf(Tq * 4, 'prefill.lseExact');
        const es = await plan2.run(
          seq,
          { buffer: qBuf, shape: [Tq, 1, D], dtype: 'f32' },
          { o: { buffer: oE, shape: [Tq, 1, D], dtype: 'f32' }, lse: { buffer: lE, shape: [Tq, 1], dtype: 'f32' } },
        );
        plan2.dispose();
        exactMs = es.ms;
        exactRows = {
          o: Float64Array.from(new Float32Array(await dev.readback(oE))),
          lse: Float64Array.from(new Float32Array(await dev.readback(lE))),
        };
      } else if (!exactRows && exactMode === 'sample') {
        exactRows = { o: new Float64Array(S * D), lse: new Float64Array(S) };
        sampled.forEach((t, i) => {
          const own = ownPart(q.subarray(t * D, (t + 1) * D), kChunk, vChunk, t, D);
          const m = mergePartialsF64(
            [{ o: ctxPart!.o.subarray(i * D, (i + 1) * D), lse: [ctxPart!.lse[i]!] }, own],
            1,
            D,
          );
          exactRows!.o.set(m.o, i * D);
          exactRows!.lse[i] = m.lse[0]!;
        });
      }
      const got = { o: new Float64Array(S * D), lse: new Float64Array(S) };
      sampled.forEach((t, i) => {
        for (let d = 0; d < D; d++) got.o[i * D + d] = oS[t * D + d]!;
        got.lse[i] = lS[t]!;
      });
      const err = exactRows ? relErr(got.o, exactRows.o) : { relRms: NaN, maxAbs: NaN };
      const lseErr = exactRows ? relErr(got.lse, exactRows.lse).maxAbs : NaN;
      const rec = mass
        ? recall(mass.mass, massRows, stats.selected, B, nCtxPages)
        : { selected: NaN, top: NaN, mass: NaN };
      const kvBytes = cache.stats().kvBytes;
      selections.push(stats.selected);
      const g: PrefillGateResult = {
        mode,
        blockScore,
        selectedRecall: rec.selected,
        topPageRecall: rec.top,
        attentionMassRecall: rec.mass,
        relRmsVsExact: err.relRms,
        maxAbsVsExact: err.maxAbs,
        lseMaxAbsDiff: lseErr,
        sparseMs: stats.ms - stats.appendMs,
        scoreMs: stats.scoreMs,
        kvBytesRead: stats.summaryBytesRead + stats.pageBytesRead,
        kvBytesReadFraction: (stats.summaryBytesRead + stats.pageBytesRead) / kvBytes,
      };
      gates.push(g);
      log(
        `${mode.padEnd(5)} ${blockScore.padEnd(5)} sparse ${g.sparseMs.toFixed(0)} ms (score+select ${g.scoreMs.toFixed(0)}), recall ${g.selectedRecall.toFixed(3)} (top ${g.topPageRecall.toFixed(3)}, mass ${g.attentionMassRecall.toFixed(3)}), rel RMS vs exact ${g.relRmsVsExact.toExponential(2)}`,
      );
    }
    // Recall of each selection against the per-row scoring's for the same mode (sinks excluded).
    gates.forEach((g, i) => {
      const j = gates.findIndex((x) => x.mode === g.mode && x.blockScore === 'rows');
      if (j >= 0)
        g.recallVsRows = selectionRecall(
          selections[i]!,
          selections[j]!,
          Math.min(cache.sinkPages, Math.floor(budgetTokens / P)),
        );
    });
    const first = gates[0]!;
    return {
      ...first,
      context: N,
      chunk: Tq,
      blockSize: B,
      blocks: nb,
      headDim: D,
      kvHeads: 1,
      qHeads: 1,
      pageSize: P,
      budgetTokens,
      evidencePerBlock: E,
      store: cache.store.kind,
      exact: exactMode,
      exactQueries: S,
      appendMs,
      exactMs,
      exactMsExtrapolated,
      speedup: exactMs / first.sparseMs,
      gates,
      buildMs,
      gpuBudgetBytes: gpuBudget,
      gpuBytesPeak: dev.memory().bytesPeak - heldBefore,
      adapter: dev.adapterName,
    };
  } finally {
    for (const b of made) dev.destroyBuffer(b);
    cache.dispose();
  }
}

/** Float64 attention of one query over the chunk's keys 0..t (its own causal part). */
function ownPart(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  t: number,
  D: number,
): { o: Float64Array; lse: Float64Array } {
  const scale = 1 / Math.sqrt(D);
  const s = new Float64Array(t + 1);
  let m = -Infinity;
  for (let j = 0; j <= t; j++) {
    let x = 0;
    for (let d = 0; d < D; d++) x += q[d]! * k[j * D + d]!;
    s[j] = x * scale;
    m = Math.max(m, s[j]!);
  }
  const o = new Float64Array(D);
  let l = 0;
  for (let j = 0; j <= t; j++) {
    const p = Math.exp(s[j]! - m);
    l += p;
    for (let d = 0; d < D; d++) o[d] += p * v[j * D + d]!;
  }
  for (let d = 0; d < D; d++) o[d] /= l;
  return { o, lse: Float64Array.of(m + Math.log(l)) };
}

/**
 * Per-page exact partials of the sampled queries over the context pages, on the GPU (kernels/paged,
 * one part per page, non-causal), merged on the host in float64: the context part of exact
 * attention (`o`, `lse`) and each page's share of the query's context attention mass.
 */
async function perPagePass(
  dev: TesseraDevice,
  cache: KvCache,
  seq: number,
  q: Float32Array,
  rows: number[],
  D: number,
  pages: number,
): Promise<{ o: Float64Array; lse: Float64Array; mass: Float64Array[] }> {
  const R = rows.length;
  const tile = Math.min(cache.tilePages, 512);
  const paged = await planPaged(dev, {
    Hq: 1,
    Hkv: 1,
    D,
    Dv: D,
    Tq: R,
    pageSize: cache.pageSize,
    dtype: cache.dtype,
    causal: false,
    maxCalls: 16,
  });
  const usage = GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_SRC | GPUBufferUsageFlags.COPY_DST;
  const qs = new Float32Array(R * D);
  rows.forEach((t, i) => qs.set(q.subarray(t * D, (t + 1) * D), i * D));
  const qb = dev.upload(qs, { label: 'prefill.qPages' });
  const ob = dev.createBuffer({ size: tile * R * D * 4, usage, label: 'prefill.oPages' });
  const lb = dev.createBuffer({ size: Math.max(256, tile * R * 4), usage, label: 'prefill.lsePages' });
  const list = dev.createBuffer({ size: tile * PAGED_ENTRY_WORDS * 4, usage, label: 'prefill.listPages' });
  const lsePage = rows.map(() => new Float64Array(pages));
  const m = new Float64Array(R).fill(-Infinity);
  const l = new Float64Array(R);
  const acc = new Float64Array(R * D);
  const all = cache.pages(seq);
  const P = cache.pageSize;
  try {
    for (let a = 0; a < pages; a += tile) {
      const b = Math.min(pages, a + tile);
      const slots = cache.ensureResident(all.slice(a, b));
      const words = new Uint32Array((b - a) * PAGED_ENTRY_WORDS);
      const byBuf = new Map<number, number[]>();
      for (let i = 0; i < b - a; i++) {
        const loc = cache.pool.location(slots[i]!);
        words.set([loc.index, (a + i) * P, P, ALL_HEADS], i * PAGED_ENTRY_WORDS);
        let g = byBuf.get(loc.bufferIndex);
        if (!g) byBuf.set(loc.bufferIndex, (g = []));
        g.push(i);
      }
      // Entries grouped by pool buffer: reorder the list so each buffer's entries are contiguous.
      const order: number[] = [];
      const enc = dev.device.createCommandEncoder({ label: 'prefill.pages' });
      const sorted = new Uint32Array(words.length);
      for (const [bi, idx] of byBuf) {
        const base = order.length;
        for (const i of idx) {
          sorted.set(
            words.subarray(i * PAGED_ENTRY_WORDS, (i + 1) * PAGED_ENTRY_WORDS),
            order.length * PAGED_ENTRY_WORDS,
          );
          order.push(i);
        }
        paged.run(enc, {
          q: { buffer: qb, shape: [R, 1, D], dtype: 'f32' },
          pages: cache.pool.buffers[bi]!,
          list,
          oParts: { buffer: ob, shape: [tile, R, D], dtype: 'f32' },
          lseParts: { buffer: lb, shape: [tile, R], dtype: 'f32' },
          calls: [{ qPos0: 0, listBase: base, nEntries: idx.length, ePer: 1, partBase: base, partCount: idx.length }],
        });
      }
      dev.device.queue.writeBuffer(list, 0, sorted);
      dev.device.queue.submit([enc.finish()]);
      const oh = new Float32Array(await dev.readback(ob, (b - a) * R * D * 4));
      const lh = new Float32Array(await dev.readback(lb, (b - a) * R * 4));
      order.forEach((i, part) => {
        for (let r = 0; r < R; r++) {
          const x = lh[part * R + r]!;
          lsePage[r]![a + i] = x;
          if (x === -Infinity) continue;
          const mNew = Math.max(m[r]!, x);
          const c = Math.exp(m[r]! - mNew);
          const w = Math.exp(x - mNew);
          l[r] = l[r]! * c + w;
          for (let d = 0; d < D; d++) acc[r * D + d] = acc[r * D + d]! * c + w * oh[(part * R + r) * D + d]!;
          m[r] = mNew;
        }
      });
    }
  } finally {
    paged.dispose();
    for (const x of [qb, ob, lb, list]) dev.destroyBuffer(x);
  }
  const lse = new Float64Array(R);
  for (let r = 0; r < R; r++) {
    lse[r] = m[r]! + Math.log(l[r]!);
    for (let d = 0; d < D; d++) acc[r * D + d] = acc[r * D + d]! / l[r]!;
  }
  const mass = lsePage.map((x, r) => x.map((v) => Math.exp(v - lse[r]!)));
  return { o: acc, lse, mass };
}

function recall(
  mass: Float64Array[],
  rows: number[],
  selected: Int32Array[][],
  B: number,
  pages: number,
): { selected: number; top: number; mass: number } {
  let heavyHit = 0;
  let heavy = 0;
  let topHit = 0;
  let topN = 0;
  let massSel = 0;
  let massBest = 0;
  rows.forEach((t, i) => {
    const sel = selected[Math.floor(t / B)]![0]!;
    const inSel = new Set(sel);
    const m = mass[i]!;
    for (let p = 0; p < pages; p++) {
      if (m[p]! >= 0.01) {
        heavy++;
        if (inSel.has(p)) heavyHit++;
      }
    }
    const order = Array.from({ length: pages }, (_, p) => p).sort((a, b) => m[b]! - m[a]!);
    const best = order.slice(0, sel.length);
    for (const p of best) {
      massBest += m[p]!;
      if (inSel.has(p)) topHit++;
    }
    topN += sel.length;
    for (const p of sel) massSel += m[p]!;
  });
  return { selected: heavy ? heavyHit / heavy : NaN, top: topHit / topN, mass: massSel / massBest };
}

/** Share of `ref`'s selected pages (index >= sinks) that `got` selected too, over every block and KV head. */
function selectionRecall(got: Int32Array[][], ref: Int32Array[][], sinks: number): number {
  let hit = 0;
  let total = 0;
  ref.forEach((heads, b) =>
    heads.forEach((r, h) => {
      const g = new Set(got[b]![h]!);
      for (const p of r) {
        if (p < sinks) continue;
        total++;
        if (g.has(p)) hit++;
      }
    }),
  );
  return total ? hit / total : NaN;
}

/** CLI entry: `tessera demo prefill --context N [--chunk 4096] [--json FILE] ...`. */
export async function prefillCli(argv: string[]): Promise<void> {
  const cmd = new Command('prefill')
    .option('--context <n>', 'context length in tokens before the chunk', '1000000')
    .option('--chunk <n>', 'new tokens (queries) per prefill chunk', '4096')
    .option('--block <n>', 'queries per selection block', '64')
    .option('--budget-tokens <n>', 'context tokens per block (sinks included)', '2048')
    .option('--page-size <n>', 'tokens per page', '64')
    .option('--gpu-budget <MiB>', 'GPU bytes budget in MiB', '256')
    .option('--exact <how>', 'full | sample | none | auto (full up to 256K tokens)', 'auto')
    .option('--samples <n>', 'sampled queries for --exact sample', '16')
    .option('--evidence <n>', 'planted evidence tokens per block', '4')
    .option('--modes <list>', 'gates: quest,mean', 'quest,mean')
    .option(
      '--block-score <list>',
      'page score per block: bound (query box), rows (every query), or bound,rows (recall of bound vs rows)',
      'bound',
    )
    .option('--disk [path]', 'keep the cache on disk (a file; default a temp file)')
    .option('--seed <n>', 'random seed', '4321')
    .option('--json <file>', 'write the results as JSON')
    .option('--adapter <name>', 'auto | swiftshader | llvmpipe')
    .exitOverride();
  cmd.parse(argv, { from: 'user' });
  const a = cmd.opts();
  const exact = String(a.exact);
  if (!['full', 'sample', 'none', 'auto'].includes(exact))
    throw new TesseraError('E_ARG', `--exact: one of full, sample, none, auto; got ${exact}`, {
      argument: 'exact',
      actual: exact,
    });
  const modes = String(a.modes).split(',');
  if (!modes.length || modes.some((m) => m !== 'quest' && m !== 'mean'))
    throw new TesseraError('E_ARG', `--modes: quest and/or mean; got ${a.modes}`, {
      argument: 'modes',
      actual: a.modes,
    });
  const blockScores = String(a.blockScore).split(',');
  if (!blockScores.length || blockScores.some((m) => m !== 'bound' && m !== 'rows'))
    throw new TesseraError('E_ARG', `--block-score: bound and/or rows; got ${a.blockScore}`, {
      argument: 'block-score',
      actual: a.blockScore,
    });
  const dev = await cliDevice({ adapter: a.adapter });
  let store: Store | undefined;
  if (a.disk) {
    const { FileStore } = await import('../kv/file-store.js');
    store = new FileStore(typeof a.disk === 'string' ? { path: a.disk, removeOnClose: true } : {});
  }
  try {
    const r = await runPrefill(dev, {
      context: positiveInt(a.context, 'context'),
      chunk: positiveInt(a.chunk, 'chunk'),
      blockSize: positiveInt(a.block, 'block'),
      budgetTokens: positiveInt(a.budgetTokens, 'budget-tokens'),
      pageSize: positiveInt(a.pageSize, 'page-size'),
      gpuBudgetMiB: positiveInt(a.gpuBudget, 'gpu-budget'),
      exact: exact as PrefillOptions['exact'],
      samples: positiveInt(a.samples, 'samples'),
      evidence: positiveInt(a.evidence, 'evidence'),
      modes: modes as ('quest' | 'mean')[],
      blockScores: blockScores as ('bound' | 'rows')[],
      seed: positiveInt(a.seed, 'seed'),
      store,
    });
    const lines = [
      `prefill demo on ${r.adapter}: ${r.chunk} new tokens (${r.blocks} blocks of ${r.blockSize}) over ${r.context.toLocaleString('en-US')} tokens, D=${r.headDim}, page ${r.pageSize}, budget ${r.budgetTokens} tokens per block, ${r.store} tier`,
      ...r.gates.map(
        (g) =>
          `  ${g.mode.padEnd(5)} ${g.blockScore.padEnd(5)}: ${g.recallVsRows !== undefined ? `recall vs rows ${g.recallVsRows.toFixed(3)}, ` : ''}selected recall ${g.selectedRecall.toFixed(3)}, top-page recall ${g.topPageRecall.toFixed(3)}, mass recall ${g.attentionMassRecall.toFixed(4)}; rel RMS vs exact ${g.relRmsVsExact.toExponential(2)} (lse ${g.lseMaxAbsDiff.toExponential(2)}); sparse ${(g.sparseMs / 1000).toFixed(2)} s; read ${(100 * g.kvBytesReadFraction).toFixed(2)}% of KV bytes`,
      ),
      `  exact (${r.exact}, ${r.exactQueries} queries checked): ${(r.exactMs / 1000).toFixed(1)} s${r.exactMsExtrapolated ? ' (extrapolated to the whole chunk)' : ''}; speedup ${r.speedup.toFixed(1)}x; append ${r.appendMs.toFixed(0)} ms`,
      `  GPU peak ${(r.gpuBytesPeak / MiB).toFixed(1)} MiB of ${(r.gpuBudgetBytes / MiB).toFixed(0)} MiB; build ${(r.buildMs / 1000).toFixed(1)} s`,
    ];
    console.log(lines.join('\n'));
    if (a.json) writeFileSync(a.json, JSON.stringify(r, null, 2) + '\n');
  } finally {
    dev.destroy();
  }
}
