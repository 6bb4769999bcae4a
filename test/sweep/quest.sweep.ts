/**
 * Quest sparse decode over the KV cache (src/stream/quest.ts: GPU page scoring from the cache's
 * summaries, host top-k, paged partials, merge): GQA, page sizes, KV dtypes, budgets below and
 * above the sequence length, both scoring modes and group reductions. Checked: every KV head's
 * selection is sorted, unique, in range, within the budget and holds the sink pages and the newest
 * page (all pages when the budget covers the sequence); o and lse equal float64 attention over
 * exactly the tokens of the selected pages (per KV head), on the cache's stored values.
 */
import fc from 'fast-check';
import { createKvCache } from '../../src/kv/cache.js';
import type { KvDType } from '../../src/kv/codec.js';
import { planQuestDecode } from '../../src/stream/quest.js';
import { Rng, TOLERANCE } from '../../src/testing.js';
import { all, defineSweep, gen, within, type SweepSize } from './run.js';

export interface QuestConfig {
  Hkv: number;
  ratio: number;
  D: number;
  Dv: number;
  pageSize: number;
  dtype: KvDType;
  T: number;
  budgetPages: number;
  sinkPages: number;
  mode: 'quest' | 'mean';
  groupReduce: 'max' | 'sum';
  seed: number;
  target?: 'auto' | 'cpu' | 'gpu';
  selector?: 'gpu' | 'host';
}

export const questSweep = defineSweep<QuestConfig>({
  family: 'quest',
  arb: (size: SweepSize) =>
    fc
      .record({
        Hkv: fc.integer({ min: 1, max: 2 }),
        ratio: fc.integer({ min: 1, max: 4 }),
        D: fc.constantFrom(...(size === 'small' ? [8, 16] : [4, 8, 16, 32, 64])),
        DvSame: fc.boolean(),
        Dv: fc.constantFrom(...(size === 'small' ? [8, 16] : [4, 8, 16, 32, 64])),
        pageSize: fc.constantFrom(16, 32, 64),
        dtype: fc.constantFrom<KvDType>('f32', 'f16', 'bf16', 'int8'),
        T: fc.integer({ min: 1, max: size === 'small' ? 300 : 1500 }),
        budgetPages: fc.integer({ min: 1, max: 12 }),
        sinkPages: fc.integer({ min: 0, max: 2 }),
        mode: fc.constantFrom('quest' as const, 'mean' as const),
        groupReduce: fc.constantFrom('max' as const, 'sum' as const),
        target: fc.constantFrom('auto' as const, 'cpu' as const, 'gpu' as const),
        selector: fc.constantFrom('gpu' as const, 'host' as const),
        seed: gen.seed(),
      })
      .map((r) => ({
        Hkv: r.Hkv,
        ratio: r.ratio,
        D: r.D,
        Dv: r.DvSame ? r.D : r.Dv,
        pageSize: r.pageSize,
        dtype: r.dtype,
        T: r.T,
        // the budget must hold the sink pages and the newest page: a smaller one is not rejected
        // but crashes in run (RangeError; see test/bad-input.test.ts, known bug), so it is not generated
        budgetPages: Math.max(r.budgetPages, r.sinkPages + 1),
        sinkPages: r.sinkPages,
        mode: r.mode,
        groupReduce: r.groupReduce,
        target: r.target,
        selector: r.selector,
        seed: r.seed,
      })),
  async check(b, c) {
    const rng = new Rng(c.seed);
    const Hq = c.Hkv * c.ratio;
    const cache = createKvCache(b.dev, {
      Hkv: c.Hkv,
      D: c.D,
      Dv: c.Dv,
      pageSize: c.pageSize,
      dtype: c.dtype,
      gpuBudgetBytes: 8 << 20,
      tilePages: 16,
    });
    try {
      const seq = cache.addSequence();
      cache.append(seq, rng.normals(c.T * c.Hkv * c.D), rng.normals(c.T * c.Hkv * c.Dv));
      const stored = cache.read(seq, 0, c.T);
      const q = Float32Array.from(rng.normals(Hq * c.D));
      const plan = await planQuestDecode(cache, {
        Hq,
        budgetTokens: c.budgetPages * c.pageSize,
        sinkPages: c.sinkPages,
        mode: c.mode,
        groupReduce: c.groupReduce,
        target: c.target,
        selector: c.selector,
      });
      const qt = b.tensor(q, [1, Hq, c.D]);
      const o = b.nan([1, Hq, c.Dv]);
      const lse = b.nan([1, Hq]);
      let stats;
      try {
        stats = await plan.run(seq, qt, { o, lse });
      } finally {
        plan.dispose();
      }
      const n = Math.ceil(c.T / c.pageSize);
      const G = c.ratio;
      const refO = new Float64Array(Hq * c.Dv);
      const refL = new Float64Array(Hq);
      const scale = 1 / Math.sqrt(c.D);
      for (let hk = 0; hk < c.Hkv; hk++) {
        const sel = Array.from(stats.selected[hk]!);
        const want = Math.min(n, c.budgetPages);
        if (sel.length !== want)
          return `kv head ${hk}: ${sel.length} pages selected, want ${want} (n ${n}, budget ${c.budgetPages}): ${sel}`;
        for (let i = 0; i < sel.length; i++) {
          if (!(sel[i]! >= 0 && sel[i]! < n) || (i > 0 && sel[i]! <= sel[i - 1]!))
            return `kv head ${hk}: selection not sorted/unique/in range: ${sel}`;
        }
        if (!sel.includes(n - 1)) return `kv head ${hk}: newest page ${n - 1} not selected: ${sel}`;
        for (let p = 0; p < Math.min(c.sinkPages, n, want - 1); p++)
          if (!sel.includes(p)) return `kv head ${hk}: sink page ${p} not selected: ${sel}`;
        const toks: number[] = [];
        for (const p of sel) for (let t = p * c.pageSize; t < Math.min(c.T, (p + 1) * c.pageSize); t++) toks.push(t);
        for (let g = 0; g < G; g++) {
          const h = hk * G + g;
          const s = toks.map((t) => {
            let x = 0;
            for (let d = 0; d < c.D; d++) x += q[h * c.D + d]! * stored.k[(t * c.Hkv + hk) * c.D + d]!;
            return x * scale;
          });
          const m = Math.max(...s);
          let z = 0;
          s.forEach((x, i) => {
            const p = Math.exp(x - m);
            z += p;
            for (let d = 0; d < c.Dv; d++) refO[h * c.Dv + d] += p * stored.v[(toks[i]! * c.Hkv + hk) * c.Dv + d]!;
          });
          for (let d = 0; d < c.Dv; d++) refO[h * c.Dv + d] /= z;
          refL[h] = m + Math.log(z);
        }
      }
      return all(
        within('o', await b.read(o), refO, TOLERANCE.f32),
        within('lse', await b.read(lse), refL, TOLERANCE.f32),
      );
    } finally {
      cache.dispose();
    }
  },
});
