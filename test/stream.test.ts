import { describe, expect, it } from 'vitest';
import { useGpu } from './helpers/gpu.js';
import { TesseraError } from '../src/errors.js';
import { Rng, TOLERANCE, compare, describeComparison, passes } from '../src/testing.js';
import { createKvCache, type KvCacheOptions } from '../src/kv/cache.js';
import type { KvDType } from '../src/kv/codec.js';
import { planStreamAttention, streamAttention } from '../src/stream/exact.js';
import { streamAttentionReference } from '../kernels/paged/reference.js';
import { pagedEntriesPerPart, pagedLoopCost } from '../kernels/paged/paged.js';
import { mergePartsPerSegment } from '../kernels/merge/merge.js';
import { tier } from './helpers/tier.js';

const gpu = useGpu();

interface Case {
  T: number;
  Tq: number;
  Hq: number;
  Hkv: number;
  D: number;
  dtype: KvDType;
  pageSize?: number;
  qPos0?: number;
  /** Cache options beyond the defaults (a tiny budget). */
  cache?: Partial<KvCacheOptions>;
  appendChunk?: number;
  /** Paged kernel shape (default: auto = cpu on SwiftShader). */
  target?: 'cpu' | 'gpu';
  /** Bound on the partials (small: few parts, many pages per part). */
  partialBytes?: number;
  /** The plan's loopLimit option (the split paths on any adapter). */
  loopLimit?: number;
  /** In the `extended` test tier only (npm run test:extended): a size or dim beyond the core matrix. */
  extended?: boolean;
}

async function runCase(c: Case): Promise<{ evictions: number; tiles: number }> {
  const cache = createKvCache(gpu.dev, {
    Hkv: c.Hkv,
    D: c.D,
    dtype: c.dtype,
    pageSize: c.pageSize ?? 64,
    gpuBudgetBytes: 8 << 20,
    ...c.cache,
  });
  try {
    const seq = cache.addSequence();
    const rng = new Rng(c.T + c.D);
    const chunk = c.appendChunk ?? c.T;
    for (let t = 0; t < c.T; t += chunk) {
      const n = Math.min(chunk, c.T - t);
      cache.append(seq, rng.normals(n * c.Hkv * c.D), rng.normals(n * c.Hkv * c.D));
    }
    const q = rng.normals(c.Tq * c.Hq * c.D);
    const got = await streamAttention(cache, seq, q, {
      Hq: c.Hq,
      Tq: c.Tq,
      qPos0: c.qPos0,
      target: c.target,
      partialBytes: c.partialBytes,
      loopLimit: c.loopLimit,
    });
    const { k, v } = cache.read(seq, 0, c.T);
    const ref = streamAttentionReference(q, k, v, { Tq: c.Tq, Tk: c.T, Hq: c.Hq, Hkv: c.Hkv, D: c.D, qPos0: c.qPos0 });
    const co = compare(got.o, ref.o);
    const cl = compare(got.lse, ref.lse);
    // The reference sees the stored (rounded) K/V, so every dtype is held to f32 accuracy.
    expect(passes(co, TOLERANCE.f32), describeComparison(co)).toBe(true);
    expect(passes(cl, TOLERANCE.f32), describeComparison(cl)).toBe(true);
    return { evictions: cache.stats().evictions, tiles: got.stats.tiles };
  } finally {
    cache.dispose();
  }
}

describe('streaming exact attention vs float64', () => {
  // core tier: f32, f16, bf16 and int8 through the cpu shape (GQA, lengths off the page size, Tq 3
  // bottom-right), f16 and int8 (Tq 5 at qPos0 700) through the gpu shape; the rest extended
  const cases: Case[] = [
    { T: 10_000, Tq: 1, Hq: 4, Hkv: 2, D: 16, dtype: 'f32' },
    { T: 10_001, Tq: 1, Hq: 8, Hkv: 1, D: 32, dtype: 'f16', pageSize: 16 },
    { T: 12_345, Tq: 1, Hq: 2, Hkv: 2, D: 12, dtype: 'bf16', pageSize: 32, extended: true },
    { T: 10_300, Tq: 1, Hq: 4, Hkv: 2, D: 8, dtype: 'int8', pageSize: 128 },
    // A prefill chunk of 65 queries in the middle of the context (causal by absolute position).
    { T: 10_000, Tq: 65, Hq: 2, Hkv: 1, D: 16, dtype: 'f16', qPos0: 4_000, extended: true },
    // Queries at the end (bottom-right), a chunk that is not a multiple of the page size.
    { T: 3_000, Tq: 63, Hq: 4, Hkv: 2, D: 8, dtype: 'f32', pageSize: 16, extended: true },
    { T: 200_000, Tq: 1, Hq: 2, Hkv: 1, D: 8, dtype: 'f16', pageSize: 256, appendChunk: 65_536, extended: true },
    // Head dims that are multiples of 32 take the 16-byte-load path of the CPU kernel: every dtype.
    { T: 5_000, Tq: 1, Hq: 2, Hkv: 1, D: 64, dtype: 'int8', extended: true },
    { T: 4_000, Tq: 3, Hq: 4, Hkv: 2, D: 32, dtype: 'bf16', pageSize: 32 },
    { T: 3_000, Tq: 1, Hq: 1, Hkv: 1, D: 96, dtype: 'f32', pageSize: 16, extended: true },
    // The GPU-shaped kernel (workgroup per part and row), run here on the CPU adapter for correctness.
    { T: 3_000, Tq: 1, Hq: 4, Hkv: 2, D: 16, dtype: 'f16', target: 'gpu' },
    { T: 1_201, Tq: 5, Hq: 2, Hkv: 1, D: 32, dtype: 'int8', pageSize: 128, qPos0: 700, target: 'gpu' },
    { T: 1_000, Tq: 1, Hq: 2, Hkv: 2, D: 12, dtype: 'bf16', pageSize: 16, target: 'gpu', extended: true },
    // one part of 128 pages of 256 keys (tiny partialBytes): unbounded, one invocation would loop
    // 363,000 times; on llvmpipe (65,535) the plan shrinks the tile to 20 pages
    {
      T: 40_000,
      Tq: 1,
      Hq: 2,
      Hkv: 1,
      D: 128,
      dtype: 'f16',
      pageSize: 256,
      partialBytes: 1,
      cache: { tilePages: 128, gpuBudgetBytes: 32 << 20 },
      extended: true,
    },
  ];
  for (const c of cases) {
    const name = `T${c.T}-Tq${c.Tq}-H${c.Hq}-Hkv${c.Hkv}-D${c.D}-${c.dtype}-P${c.pageSize ?? 64}${c.qPos0 !== undefined ? `-q@${c.qPos0}` : ''}${c.target ? `-${c.target}` : ''}`;
    it(name, tier(c.extended), async () => {
      const r = await runCase(c);
      expect(r.tiles).toBeGreaterThan(0);
    });
  }

  it('stays exact under a tiny GPU budget (two tiles): pages are evicted and re-fetched', async () => {
    // f16, Hkv 2, D 16, P 16: 2 KiB pages; tiles of 8 pages; summaries of 695 pages take 192 KiB (room for 1024).
    const pageBytes = 2 * 2 * 16 * 16 * 2;
    const r = await runCase({
      T: 11_111,
      Tq: 3,
      Hq: 4,
      Hkv: 2,
      D: 16,
      dtype: 'f16',
      pageSize: 16,
      cache: { tilePages: 8, gpuBudgetBytes: 2 * 8 * pageBytes + 1024 * 192 },
    });
    expect(r.evictions).toBeGreaterThan(0);
    expect(r.tiles).toBe(Math.ceil(Math.ceil(11_111 / 16) / 8));
  });

  it('an empty sequence gives o = 0, lse = -inf', async () => {
    const cache = createKvCache(gpu.dev, { Hkv: 1, D: 8, pageSize: 16, gpuBudgetBytes: 1 << 20 });
    try {
      const seq = cache.addSequence();
      const got = await streamAttention(cache, seq, new Float64Array(8), { Hq: 1 });
      expect(Array.from(got.o)).toEqual(new Array(8).fill(0));
      expect(got.lse[0]).toBe(-Infinity);
    } finally {
      cache.dispose();
    }
  });

  it('rejects bad input', async () => {
    const cache = createKvCache(gpu.dev, { Hkv: 2, D: 8, pageSize: 16, gpuBudgetBytes: 1 << 20 });
    try {
      const bad = async (p: Promise<unknown>, code: string, argument: string) => {
        const e = await p.then(
          () => undefined,
          (x: unknown) => x,
        );
        expect(e).toBeInstanceOf(TesseraError);
        expect((e as TesseraError).code).toBe(code);
        expect((e as TesseraError).argument).toBe(argument);
      };
      await bad(planStreamAttention(cache, { Hq: 3 }), 'E_SHAPE', 'Hq');
      await bad(planStreamAttention(cache, { Hq: 2, tilePages: 1 << 20 }), 'E_LIMIT', 'tilePages');
      const seq = cache.addSequence();
      await bad(streamAttention(cache, seq, new Float64Array(7), { Hq: 2 }), 'E_SHAPE', 'q');
      await bad(streamAttention(cache, 3, new Float64Array(16), { Hq: 2 }), 'E_ARG', 'seq');
    } finally {
      cache.dispose();
    }
  });
});

describe('streaming within a loop cap (plan or cache option loopLimit 4096, on any adapter)', () => {
  it('the cache option reaches every plan on the cache, the plan option one plan; a bad cap is E_ARG naming loopLimit', async () => {
    const capped = createKvCache(gpu.dev, { Hkv: 1, D: 8, loopLimit: 4096 });
    const plain = createKvCache(gpu.dev, { Hkv: 1, D: 8 });
    try {
      expect(capped.ctx.loopLimit).toBe(4096);
      expect(capped.ctx.device).toBe(gpu.dev.device);
      expect(plain.ctx).toBe(gpu.dev);
      const a = await planStreamAttention(capped, { Hq: 2 });
      const b = await planStreamAttention(plain, { Hq: 2, loopLimit: 2048 });
      const c = await planStreamAttention(plain, { Hq: 2 });
      expect([a.options.loopLimit, b.options.loopLimit, c.options.loopLimit]).toEqual([4096, 2048, gpu.dev.loopLimit]);
      for (const p of [a, b, c]) p.dispose();
      expect(() => createKvCache(gpu.dev, { Hkv: 1, D: 8, loopLimit: 10 })).toThrow(
        expect.objectContaining({ code: 'E_ARG', argument: 'loopLimit' }),
      );
      await expect(planStreamAttention(plain, { Hq: 2, loopLimit: 1.5 })).rejects.toMatchObject({
        code: 'E_ARG',
        argument: 'loopLimit',
      });
    } finally {
      capped.dispose();
      plain.dispose();
    }
  });

  it('the paged bound: entries per part keep an invocation within 90% of the cap', () => {
    expect(pagedEntriesPerPart(Infinity, 'cpu', 128, 128, 256)).toBe(Infinity);
    expect(pagedEntriesPerPart(65535, 'cpu', 128, 128, 64)).toBe(71);
    expect(128 * pagedLoopCost('cpu', 128, 128, 256).perEntry).toBeGreaterThan(65535);
    for (const v of ['cpu', 'gpu'] as const) {
      for (const [limit, D, P] of [
        [65535, 256, 256],
        [4096, 32, 64],
        [4096, 64, 128],
      ] as const) {
        const n = pagedEntriesPerPart(limit, v, D, D, P);
        const c = pagedLoopCost(v, D, D, P);
        expect(n).toBeGreaterThanOrEqual(1);
        expect(c.setup + n * c.perEntry).toBeLessThanOrEqual(0.9 * limit);
        expect(c.setup + (n + 1) * c.perEntry).toBeGreaterThan(0.9 * limit);
      }
    }
  });

  it('few parts: the tile shrinks to what one invocation may attend (cpu)', async () => {
    const per = pagedEntriesPerPart(4096, 'cpu', 32, 32, 64);
    const r = await runCase({ T: 3_000, Tq: 5, Hq: 4, Hkv: 2, D: 32, dtype: 'f16', partialBytes: 1, loopLimit: 4096 });
    expect(r.tiles).toBe(Math.ceil(Math.ceil(3_000 / 64) / per));
  });

  it('few parts: the tile shrinks to what one invocation may attend (gpu variant)', async () => {
    const per = pagedEntriesPerPart(4096, 'gpu', 64, 64, 128);
    const r = await runCase({
      T: 2_000,
      Tq: 2,
      Hq: 2,
      Hkv: 1,
      D: 64,
      dtype: 'f32',
      pageSize: 128,
      partialBytes: 1,
      target: 'gpu',
      loopLimit: 4096,
    });
    expect(r.tiles).toBe(Math.ceil(Math.ceil(2_000 / 128) / per));
  });

  it('many parts: the merge runs in segments (the cache option)', async () => {
    // 2,048 one-page parts per tile (+ groups + the accumulator) > the merge's parts per segment
    expect(mergePartsPerSegment(4096, 8)).toBeLessThan(2048);
    const r = await runCase({
      T: 33_000,
      Tq: 1,
      Hq: 2,
      Hkv: 1,
      D: 8,
      dtype: 'f32',
      pageSize: 16,
      cache: { tilePages: 2048, loopLimit: 4096 },
    });
    expect(r.tiles).toBe(2);
  });
});
