/**
 * Long contexts at small sizes: the needle demo's per-head check and its float64 check
 * (`--check-float64`) on a context of several tiles.
 */
import { describe, expect, it } from 'vitest';
import { runNeedle } from '../src/demo/needle.js';
import { createKvCache } from '../src/kv/cache.js';
import { streamAttention } from '../src/stream/exact.js';
import { decodeReference64 } from '../src/stream/reference64.js';
import { Rng, compare } from '../src/testing.js';
import { useGpu } from './helpers/gpu.js';

const gpu = useGpu();

describe('needle demo (small)', () => {
  it('4 query heads: the needle counts on the head it was planted for; exact vs float64 <= 1e-5', async () => {
    // 8 MiB budget: 1.75 MiB tiles, so 40K tokens (20 MiB of KV) stream in 12 tiles.
    const r = await runNeedle(gpu.dev, { tokens: 40_000, qHeads: 4, checkFloat64: true, quiet: true, gpuBudgetMiB: 8 });
    expect(r.needleFound).toBe(true);
    expect(r.needleWeightSparse).toBeGreaterThan(0.9);
    expect(r.exactTiles).toBeGreaterThan(5);
    expect(r.float64NeedleShare!).toBeGreaterThan(0.99);
    expect(r.float64NeedleShare!).toBeLessThan(0.9999);
    for (const k of [
      'float64RelRmsMax',
      'float64LseErrMax',
      'float64RelRmsNeedle',
      'float64LseErrNeedle',
      'float64RelRmsRandom',
      'float64LseErrRandom',
    ] as const) {
      expect(Number.isFinite(r[k]), k).toBe(true);
      expect(r[k], k).toBeLessThanOrEqual(1e-5);
    }
    expect(r.float64RelRmsMax).toBe(Math.max(r.float64RelRmsNeedle!, r.float64RelRmsRandom!));
    expect(r.overlapFraction).toBeGreaterThanOrEqual(0);
    expect(r.overlapTiles).toBeGreaterThan(0);
    expect(r.summaryLevels).toBe(1);
    expect(r.summaryBytesGpuPeak).toBeGreaterThan(0);
  });

  it('two levels with the page summaries on disk: found, summaryTier file, host summary bytes below the page summaries, GPU within budget', async () => {
    const { FileStore } = await import('../src/kv/file-store.js');
    const r = await runNeedle(gpu.dev, {
      tokens: 60_000,
      exact: false,
      quiet: true,
      gpuBudgetMiB: 8,
      summaryLevels: 2,
      store: new FileStore(),
      summaryStore: new FileStore(),
    });
    expect(r.needleFound).toBe(true);
    expect(r.summaryLevels).toBe(2);
    expect(r.summaryTier).toBe('file');
    // 938 pages x (min/max + mean) 768 bytes = 720 KB of page summaries, none of it in host RAM.
    expect(r.summaryBytesHost).toBeGreaterThan(0);
    expect(r.summaryBytesHost).toBeLessThan(Math.ceil(60_000 / 64) * 768);
    expect(r.gpuBytesPeak).toBeLessThanOrEqual(r.gpuBudgetBytes);
    expect(r.kvBytesReadFraction).toBeLessThan(0.2);
  });

  it('--check-float64 needs the exact pass', async () => {
    await expect(
      runNeedle(gpu.dev, { tokens: 5000, checkFloat64: true, exact: false, quiet: true, gpuBudgetMiB: 24 }),
    ).rejects.toMatchObject({ code: 'E_ARG', argument: 'checkFloat64' });
  });
});

describe('decodeReference64', () => {
  it('equals a direct float64 softmax over the keys read back (ragged last page, GQA)', () => {
    const cache = createKvCache(gpu.dev, { Hkv: 2, D: 8, pageSize: 16, dtype: 'f16', gpuBudgetBytes: 1 << 20 });
    try {
      const rng = new Rng(5);
      const seq = cache.addSequence();
      const T = 77;
      cache.append(seq, rng.normals(T * 2 * 8), rng.normals(T * 2 * 8));
      const q = rng.normals(2 * 4 * 8); // two queries of [4, 8]
      const got = decodeReference64(cache, seq, q, { Hq: 4 });
      const { k, v } = cache.read(seq, 0, T);
      const scale = Math.fround(1 / Math.sqrt(8));
      const o = new Float64Array(2 * 4 * 8);
      const lse = new Float64Array(2 * 4);
      for (let r = 0; r < 8; r++) {
        const h = Math.floor((r % 4) / 2);
        const s = Array.from({ length: T }, (_, t) => {
          let d = 0;
          for (let i = 0; i < 8; i++) d += Math.fround(q[r * 8 + i]!) * k[(t * 2 + h) * 8 + i]!;
          return d * scale;
        });
        const m = Math.max(...s);
        const z = s.reduce((a, x) => a + Math.exp(x - m), 0);
        lse[r] = m + Math.log(z);
        for (let t = 0; t < T; t++)
          for (let i = 0; i < 8; i++) o[r * 8 + i] += (Math.exp(s[t]! - m) / z) * v[(t * 2 + h) * 8 + i]!;
      }
      expect(compare(got.o, o).relRms).toBeLessThan(1e-13);
      expect(compare(got.lse, lse).maxAbs).toBeLessThan(1e-12);
    } finally {
      cache.dispose();
    }
  });

  it('streaming exact attention over 640 tiles of a peaked query stays within 1e-5 of float64', async () => {
    // One KV head, D 32, 16-token pages, one page per tile. The needle (early) has score 20.5, so
    // each later tile's share of the softmax (~3e-8) is below half an f32 step of the running
    // total: a merge that adds shares to an f32 total drops all of them (2e-5 of the mass, with
    // values far from the needle's), the compensated merge keeps them.
    const cache = createKvCache(gpu.dev, {
      Hkv: 1,
      D: 32,
      pageSize: 16,
      dtype: 'f16',
      gpuBudgetBytes: 1 << 20,
      tilePages: 1,
    });
    try {
      const rng = new Rng(11);
      const seq = cache.addSequence();
      const T = 640 * 16;
      const q = rng.normals(32);
      const k = rng.normals(T * 32);
      const v = rng.normals(T * 32).map((x) => x + 3);
      let qq = 0;
      for (let i = 0; i < 32; i++) qq += q[i]! * q[i]!;
      const c = (20.5 * Math.sqrt(32)) / qq;
      for (let i = 0; i < 32; i++) {
        k[5 * 32 + i] = c * q[i]!;
        v[5 * 32 + i] = -1;
      }
      cache.append(seq, k, v);
      const ref = decodeReference64(cache, seq, q, { Hq: 1 });
      const got = await streamAttention(cache, seq, q, { Hq: 1, tilePages: 1 });
      expect(got.stats.tiles).toBe(640);
      expect(compare(got.o, ref.o).relRms).toBeLessThanOrEqual(1e-5);
      expect(Math.abs(got.lse[0]! - ref.lse[0]!)).toBeLessThanOrEqual(1e-5);
    } finally {
      cache.dispose();
    }
  });
});

describe('two-level summaries (Quest)', () => {
  /** Keys whose pages differ in scale (so page bounds differ), a few hot keys along q, 1250 pages. */
  function data(T: number, Hkv: number, D: number, Hq: number, seed: number) {
    const rng = new Rng(seed);
    const k = rng.normals(T * Hkv * D);
    const v = rng.normals(T * Hkv * D);
    const q = rng.normals(Hq * D);
    for (let t = 0; t < T; t += 16) {
      const sc = 0.1 + 2 * Math.sin(t * 0.0037 + seed) ** 4; // mostly small, a few loud stretches
      for (let i = t * Hkv * D; i < Math.min(T, t + 16) * Hkv * D; i++) k[i] *= sc;
    }
    for (const t of [777, 5001, 12345, 18000])
      for (let h = 0; h < Hkv; h++)
        for (let d = 0; d < D; d++) k[(t * Hkv + h) * D + d] = 4 * q[h * (Hq / Hkv) * D + d]!;
    return { k, v, q };
  }

  async function both(opts: { levels?: { exactSelection?: boolean; superBudget?: number } }) {
    const T = 20_000;
    const [Hkv, D, Hq] = [2, 32, 4];
    const { k, v, q } = data(T, Hkv, D, Hq, 3);
    const one = createKvCache(gpu.dev, { Hkv, D, pageSize: 16, dtype: 'f16', gpuBudgetBytes: 8 << 20 });
    const two = createKvCache(gpu.dev, {
      Hkv,
      D,
      pageSize: 16,
      dtype: 'f16',
      gpuBudgetBytes: 8 << 20,
      summaryLevels: 2,
      superPages: 8,
      candidatePages: 256,
    });
    const { planQuestDecode } = await import('../src/stream/quest.js');
    try {
      const out: {
        selected: Int32Array[];
        o: Float64Array;
        stats: Awaited<ReturnType<Awaited<ReturnType<typeof planQuestDecode>>['run']>>;
        summaryBytes: number;
      }[] = [];
      for (const cache of [one, two]) {
        const seq = cache.addSequence();
        // Appended in uneven pieces, so super-pages are updated across appends.
        for (let t = 0; t < T;) {
          const n = Math.min(T - t, 3001);
          cache.append(seq, k.subarray(t * Hkv * D, (t + n) * Hkv * D), v.subarray(t * Hkv * D, (t + n) * Hkv * D));
          t += n;
        }
        const plan = await planQuestDecode(cache, {
          Hq,
          budgetTokens: 16 * 24,
          levels: cache === two ? opts.levels : undefined,
        });
        const qb = gpu.tensor(q, [1, Hq, D]);
        const o = gpu.nanTensor([1, Hq, D]);
        const stats = await plan.run(seq, qb, { o });
        out.push({ selected: stats.selected, o: await gpu.read(o), stats, summaryBytes: cache.summaryBytes });
        plan.dispose();
      }
      return out;
    } finally {
      one.dispose();
      two.dispose();
    }
  }

  it('exactSelection: the same pages as single-level Quest, certified, without scoring every page; GPU summaries ~1/8', async () => {
    const [a, b] = await both({ levels: { exactSelection: true } });
    const lv = b!.stats.levels!;
    expect(lv.levels).toBe(2);
    expect(lv.certified).toBe(true);
    expect(lv.supers).toBe(Math.ceil(1250 / 8));
    expect(lv.pagesScored).toBeLessThan(1250);
    for (let h = 0; h < 2; h++) expect([...b!.selected[h]!]).toEqual([...a!.selected[h]!]);
    for (const t of [777, 5001, 12345, 18000]) expect(b!.selected[0]).toContain(Math.floor(t / 16));
    expect(compare(b!.o, a!.o).maxAbs).toBe(0);
    // Level 1: (minmax + mean) per page; level 2: minmax per super-page (with headroom) + 256 candidates.
    expect(b!.summaryBytes).toBeLessThan(a!.summaryBytes / 2);
    expect(b!.stats.summaryBytesRead).toBeLessThan(a!.stats.summaryBytesRead);
  });

  it('default (superBudget = k): recall against single-level Quest, the hot pages always in', async () => {
    const [a, b] = await both({ levels: {} });
    let hit = 0;
    let total = 0;
    for (let h = 0; h < 2; h++) {
      const ref = new Set(a!.selected[h]!);
      for (const p of b!.selected[h]!) if (ref.has(p)) hit++;
      total += ref.size;
    }
    const recall = hit / total;
    expect(recall).toBeGreaterThan(0.5);
    for (const t of [777, 5001, 12345, 18000]) expect(b!.selected[0]).toContain(Math.floor(t / 16));
    expect(b!.stats.levels!.rounds).toBe(1);
    expect(b!.stats.levels!.supersVisited).toBeLessThanOrEqual(2 * 22); // Hkv * k
  });

  it('moveTo rebuilds the super-page summaries on the new device: the same selection after the move', async () => {
    const [Hkv, D, Hq, T] = [1, 16, 2, 6000];
    const { k, v, q } = data(T, Hkv, D, Hq, 9);
    let cache = createKvCache(gpu.dev, {
      Hkv,
      D,
      pageSize: 16,
      dtype: 'f16',
      gpuBudgetBytes: 4 << 20,
      summaryLevels: 2,
      superPages: 4,
      candidatePages: 64,
    });
    const { planQuestDecode } = await import('../src/stream/quest.js');
    try {
      const seq = cache.addSequence();
      cache.append(seq, k, v);
      const run = async () => {
        const plan = await planQuestDecode(cache, { Hq, budgetTokens: 16 * 8, levels: { exactSelection: true } });
        const stats = await plan.run(seq, gpu.tensor(q, [1, Hq, D]), { o: gpu.nanTensor([1, Hq, D]) });
        plan.dispose();
        return stats;
      };
      const before = await run();
      cache = cache.moveTo(gpu.dev);
      const after = await run();
      expect(after.levels!.supers).toBe(Math.ceil(Math.ceil(T / 16) / 4));
      expect(after.levels!.certified).toBe(true);
      expect([...after.selected[0]!]).toEqual([...before.selected[0]!]);
    } finally {
      cache.dispose();
    }
  });

  it('page summaries in a store (the disk tier): the same selection and output as the host mirror, host summary bytes ~1/G, only visited super-pages read', async () => {
    const [Hkv, D, Hq, T, G] = [2, 32, 4, 20_000, 8];
    const { k, v, q } = data(T, Hkv, D, Hq, 3);
    const { FileStore } = await import('../src/kv/file-store.js');
    const { planQuestDecode } = await import('../src/stream/quest.js');
    const host = createKvCache(gpu.dev, {
      Hkv,
      D,
      pageSize: 16,
      dtype: 'f16',
      gpuBudgetBytes: 8 << 20,
      summaryLevels: 2,
      superPages: G,
      candidatePages: 256,
      meanSummaries: true,
    });
    const summaryStore = new FileStore();
    let disk = createKvCache(gpu.dev, {
      Hkv,
      D,
      pageSize: 16,
      dtype: 'f16',
      gpuBudgetBytes: 8 << 20,
      summaryLevels: 2,
      superPages: G,
      candidatePages: 256,
      meanSummaries: true,
      summaryStore,
    });
    try {
      const runs = [];
      for (const cache of [host, disk]) {
        const seq = cache.addSequence();
        for (let t = 0; t < T;) {
          const n = Math.min(T - t, 3001); // uneven pieces: partial pages rewritten, super-pages updated across appends
          cache.append(seq, k.subarray(t * Hkv * D, (t + n) * Hkv * D), v.subarray(t * Hkv * D, (t + n) * Hkv * D));
          t += n;
        }
        const plan = await planQuestDecode(cache, { Hq, budgetTokens: 16 * 24, levels: { exactSelection: true } });
        const o = gpu.nanTensor([1, Hq, D]);
        const read0 = cache.tiers!.storeBytesRead;
        const stats = await plan.run(seq, gpu.tensor(q, [1, Hq, D]), { o });
        plan.dispose();
        runs.push({ stats, o: await gpu.read(o), read: cache.tiers!.storeBytesRead - read0 });
      }
      const [a, b] = runs;
      for (let h = 0; h < Hkv; h++) expect([...b!.stats.selected[h]!]).toEqual([...a!.stats.selected[h]!]);
      expect(compare(b!.o, a!.o).maxAbs).toBe(0);
      expect(b!.stats.levels!.certified).toBe(true);
      // The disk tier read the scored pages' records (min/max + mean, 3 * Hkv * D * 2 bytes each), not all 1250.
      expect(b!.read).toBe(b!.stats.levels!.pagesScored * 3 * Hkv * D * 2);
      expect(b!.stats.levels!.pagesScored).toBeLessThan(1250);
      // Host: the mirror holds every page (min/max + mean); the disk tier holds super-pages and scratch.
      expect(disk.summaryHostBytes).toBeLessThan(host.summaryHostBytes / 2);
      expect(disk.summaryHostBytes).toBeGreaterThan(0);
      // summariesHost() reads the disk tier back: the same bits as the host mirror.
      const hs = host.summariesHost();
      const ds = disk.summariesHost();
      expect(ds.minmax.length).toBe(1250 * Hkv * 2 * D);
      expect(ds.minmax.findIndex((x, i) => x !== hs.minmax[i])).toBe(-1);
      expect(ds.mean!.findIndex((x, i) => x !== hs.mean![i])).toBe(-1);
      const stray = new FileStore();
      expect(() => createKvCache(gpu.dev, { Hkv: 1, D: 8, summaryStore: stray })).toThrow(
        expect.objectContaining({ code: 'E_ARG', argument: 'summaryStore' }),
      );
      stray.close();
      // moveTo: the new cache adopts the summary store and rebuilds the super-pages from it.
      disk = disk.moveTo(gpu.dev);
      const plan = await planQuestDecode(disk, { Hq, budgetTokens: 16 * 24, levels: { exactSelection: true } });
      const again = await plan.run(0, gpu.tensor(q, [1, Hq, D]), { o: gpu.nanTensor([1, Hq, D]) });
      plan.dispose();
      for (let h = 0; h < Hkv; h++) expect([...again.selected[h]!]).toEqual([...a!.stats.selected[h]!]);
    } finally {
      host.dispose();
      disk.dispose();
    }
  });

  it('rejects mean mode on a two-level cache', async () => {
    const cache = createKvCache(gpu.dev, { Hkv: 1, D: 8, summaryLevels: 2, gpuBudgetBytes: 1 << 20, pageSize: 16 });
    const { planQuestDecode } = await import('../src/stream/quest.js');
    try {
      await expect(planQuestDecode(cache, { Hq: 1, mode: 'mean' })).rejects.toMatchObject({
        code: 'E_UNSUPPORTED',
        argument: 'mode',
      });
      expect(() => createKvCache(gpu.dev, { Hkv: 1, D: 8, summaryLevels: 3 as never })).toThrow(/summaryLevels/);
    } finally {
      cache.dispose();
    }
  });
});

describe('streaming overlap measurement', () => {
  it('measureOverlap times the same tiles pipelined, transfer alone and compute alone; the pass stays exact', async () => {
    const cache = createKvCache(gpu.dev, {
      Hkv: 1,
      D: 32,
      pageSize: 16,
      dtype: 'f16',
      gpuBudgetBytes: 1 << 20,
      tilePages: 8,
    });
    try {
      const rng = new Rng(21);
      const seq = cache.addSequence();
      const T = 3000;
      cache.append(seq, rng.normals(T * 32), rng.normals(T * 32));
      const q = rng.normals(2 * 32);
      const ref = decodeReference64(cache, seq, q, { Hq: 2 });
      const got = await streamAttention(cache, seq, q, { Hq: 2, measureOverlap: 4 });
      const ov = got.stats.overlap!;
      expect(ov.tiles).toBe(4);
      for (const k of ['transferMs', 'computeMs', 'overlappedMs'] as const) expect(ov[k]).toBeGreaterThan(0);
      expect(ov.fraction).toBeGreaterThanOrEqual(0);
      expect(ov.fraction).toBeLessThanOrEqual(1);
      expect(got.stats.tiles).toBe(Math.ceil(Math.ceil(T / 16) / 8));
      expect(compare(got.o, ref.o).relRms).toBeLessThanOrEqual(1e-5);
      await expect(streamAttention(cache, seq, q, { Hq: 2, measureOverlap: -1 })).rejects.toMatchObject({
        code: 'E_ARG',
        argument: 'measureOverlap',
      });
    } finally {
      cache.dispose();
    }
  });
});

describe('browser needle page parameters (bench/browser/needle-params.ts)', () => {
  it('tokens=10000000 asks for 10M tokens; defaults, underscores, bounds and bad values', async () => {
    const { parseNeedleParams, NEEDLE_MAX_TOKENS } = await import('../bench/browser/needle-params.js');
    expect(parseNeedleParams('?tokens=10000000')).toEqual({
      tokens: 10_000_000,
      run: true,
      exact: true,
      pageSize: 64,
      budgetTokens: 2048,
      gpuBudgetMiB: 256,
      corruptPage: undefined,
    });
    expect(parseNeedleParams('?tokens=10_000_000&exact=0&run=0&corrupt=7')).toMatchObject({
      tokens: 10_000_000,
      exact: false,
      run: false,
      corruptPage: 7,
    });
    expect(parseNeedleParams('').tokens).toBe(1_000_000);
    expect(parseNeedleParams(`?tokens=${NEEDLE_MAX_TOKENS}`).tokens).toBe(100_000_000);
    for (const bad of [
      'tokens=0',
      'tokens=-5',
      'tokens=1.5',
      'tokens=abc',
      'tokens=100000001',
      'pageSize=0',
      'gpuBudget=x',
    ]) {
      expect(() => parseNeedleParams(`?${bad}`), bad).toThrow(new RegExp(`URL parameter ${bad.split('=')[0]}=`));
    }
    expect(() => parseNeedleParams('?corrupt=x')).toThrow(/corrupt=x/);
  });
});
