/**
 * KV cache + paged partials + merge, end to end: streaming exact attention (src/stream/exact.ts)
 * over a chunked cache holding several sequences appended in random pieces, with small tiles and a
 * small GPU budget (so tiles stream and pages are evicted), every KV dtype (f32, f16, bf16, int8),
 * page sizes, GQA, D != Dv, Tq 1..4 (decode and prefill chunks), causal or not, a small partials
 * bound (several pages per part). Reference: `streamAttentionReference` over the cache's own
 * stored values (read back with `cache.read`, i.e. after the dtype's rounding / quantisation).
 */
import fc from 'fast-check';
import { streamAttentionReference } from '../../kernels/paged/reference.js';
import { createKvCache } from '../../src/kv/cache.js';
import type { KvDType } from '../../src/kv/codec.js';
import { streamAttention } from '../../src/stream/exact.js';
import { Rng, TOLERANCE } from '../../src/testing.js';
import { all, defineSweep, gen, within, type SweepSize } from './run.js';

export interface KvConfig {
  Hkv: number;
  ratio: number;
  D: number;
  Dv: number;
  pageSize: number;
  dtype: KvDType;
  /** Lengths of the pieces appended to each sequence. */
  seqs: number[][];
  target: number;
  Tq: number;
  causal: boolean;
  tilePages: number;
  budgetTiles: number;
  partialBytes: number;
  seed: number;
  /** Paged kernel shape (kernels/paged): auto (by adapter class), cpu or gpu. */
  kernel?: 'auto' | 'cpu' | 'gpu';
}

export const kvSweep = defineSweep<KvConfig>({
  family: 'kv',
  arb: (size: SweepSize) =>
    fc
      .record({
        Hkv: fc.integer({ min: 1, max: 2 }),
        ratio: fc.integer({ min: 1, max: 4 }),
        D: fc.constantFrom(...(size === 'small' ? [4, 8, 16] : [4, 8, 16, 32, 64])),
        DvSame: fc.boolean(),
        Dv: fc.constantFrom(...(size === 'small' ? [4, 8, 16] : [4, 8, 16, 32, 64])),
        pageSize: fc.constantFrom(16, 32, 64),
        dtype: fc.constantFrom<KvDType>('f32', 'f16', 'bf16', 'int8'),
        seqs: fc.array(
          fc.array(fc.integer({ min: 0, max: size === 'small' ? 60 : 300 }), { minLength: 1, maxLength: 4 }),
          { minLength: 1, maxLength: 3 },
        ),
        target: fc.nat(),
        Tq: fc.integer({ min: 1, max: 4 }),
        causal: fc.oneof({ arbitrary: fc.constant(true), weight: 3 }, { arbitrary: fc.constant(false), weight: 1 }),
        tilePages: fc.integer({ min: 1, max: 4 }),
        budgetTiles: fc.integer({ min: 1, max: 3 }),
        partialBytes: fc.constantFrom(1, 2048, 8 << 20),
        kernel: fc.constantFrom('auto' as const, 'cpu' as const, 'gpu' as const),
        seed: gen.seed(),
      })
      .map((r) => {
        const target = r.target % r.seqs.length;
        const seqs = r.seqs.map((s) => [...s]);
        // the attended sequence needs at least Tq tokens (queries are its newest tokens)
        const len = seqs[target]!.reduce((a, b) => a + b, 0);
        if (len < r.Tq) seqs[target]!.push(r.Tq - len);
        return {
          Hkv: r.Hkv,
          ratio: r.ratio,
          D: r.D,
          Dv: r.DvSame ? r.D : r.Dv,
          pageSize: r.pageSize,
          dtype: r.dtype,
          seqs,
          target,
          Tq: r.Tq,
          causal: r.causal,
          tilePages: r.tilePages,
          budgetTiles: r.budgetTiles,
          partialBytes: r.partialBytes,
          kernel: r.kernel,
          seed: r.seed,
        };
      }),
  async check(b, c) {
    const rng = new Rng(c.seed);
    const Hq = c.Hkv * c.ratio;
    // summaries + budgetTiles tiles of pages (the cache needs at least one tile)
    const probe = createKvCache(b.dev, {
      Hkv: c.Hkv,
      D: c.D,
      Dv: c.Dv,
      pageSize: c.pageSize,
      dtype: c.dtype,
      tilePages: c.tilePages,
      gpuBudgetBytes: 1 << 30,
    });
    const pageBytes = probe.pageBytes;
    probe.dispose();
    const totalPages = c.seqs.reduce((a, s) => a + Math.ceil(s.reduce((x, y) => x + y, 0) / c.pageSize) + 1, 0);
    // summaries: min/max + mean (6 bytes per key channel and page); their capacity grows with 25%
    // headroom in steps of 64 pages (src/kv/cache.ts chunkCapFor), which twice the next power of
    // two >= 64 always covers
    let cap = 64;
    while (cap < totalPages) cap *= 2;
    const summaries = 2 * cap * c.Hkv * c.D * 6;
    // pinned pages (1 sink + 1 recent per sequence, the defaults) hold pool slots too: a budget of
    // one tile with pins in it is rejected at run time (E_LIMIT), so the valid budget adds them
    const pinned = 2 * c.seqs.length;
    const buffers = c.budgetTiles + Math.ceil(pinned / c.tilePages);
    const cache = createKvCache(b.dev, {
      Hkv: c.Hkv,
      D: c.D,
      Dv: c.Dv,
      pageSize: c.pageSize,
      dtype: c.dtype,
      tilePages: c.tilePages,
      gpuBudgetBytes: summaries + buffers * c.tilePages * pageBytes + 4096,
    });
    try {
      for (let s = 0; s < c.seqs.length; s++) cache.addSequence();
      // interleave the pieces of all sequences
      const maxPieces = Math.max(...c.seqs.map((s) => s.length));
      for (let p = 0; p < maxPieces; p++) {
        for (let s = 0; s < c.seqs.length; s++) {
          const n = c.seqs[s]![p];
          if (n === undefined) continue;
          cache.append(s, rng.normals(n * c.Hkv * c.D), rng.normals(n * c.Hkv * c.Dv));
        }
      }
      const Tk = cache.length(c.target);
      const stored = cache.read(c.target, 0, Tk);
      const q = Float32Array.from(rng.normals(c.Tq * Hq * c.D));
      const ref = streamAttentionReference(q, stored.k, stored.v, {
        Tq: c.Tq,
        Tk,
        Hq,
        Hkv: c.Hkv,
        D: c.D,
        Dv: c.Dv,
        causal: c.causal,
      });
      const got = await streamAttention(cache, c.target, q, {
        Hq,
        Tq: c.Tq,
        causal: c.causal,
        tilePages: c.tilePages,
        partialBytes: c.partialBytes,
        target: c.kernel,
      });
      return all(within('o', got.o, ref.o, TOLERANCE.f32), within('lse', got.lse, ref.lse, TOLERANCE.f32));
    } finally {
      cache.dispose();
    }
  },
});
