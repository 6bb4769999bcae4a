/**
 * Top-k: rows, n, k (k > n included), both variants, fills with ties, -inf masks, NaN (never
 * selected), signed zeros; indices and values must equal the reference exactly.
 */
import fc from 'fast-check';
import { planTopK, TOPK_SMALL_MAX_K } from '../../kernels/topk/index.js';
import { topKReference } from '../../kernels/topk/reference.js';
import { Rng } from '../../src/testing.js';
import { defineSweep, gen, type SweepSize } from './run.js';

type Fill = 'normal' | 'dups' | 'masked' | 'nan' | 'signed-zero';
export interface TopKConfig {
  rows: number;
  n: number;
  k: number;
  variant: 'auto' | 'small' | 'radix';
  fill: Fill;
  values: boolean;
  seed: number;
}

function scores(c: TopKConfig): Float32Array {
  const rng = new Rng(c.seed);
  const s = new Float32Array(c.rows * c.n);
  for (let i = 0; i < s.length; i++) {
    const u = rng.next();
    if (c.fill === 'normal') s[i] = rng.normal();
    else if (c.fill === 'dups') s[i] = Math.floor(u * 5) - 2;
    else if (c.fill === 'masked') s[i] = u < 0.5 ? -Infinity : u > 0.995 ? Infinity : rng.normal();
    else if (c.fill === 'nan') s[i] = u < 0.3 ? NaN : u < 0.5 ? -Infinity : Math.floor(rng.normal() * 4) / 4;
    else s[i] = u < 0.4 ? -0 : u < 0.8 ? 0 : rng.normal();
  }
  return s;
}

export const topkSweep = defineSweep<TopKConfig>({
  family: 'topk',
  arb: (size: SweepSize) =>
    fc
      .record({
        rows: fc.integer({ min: 1, max: size === 'small' ? 20 : 200 }),
        n: fc.oneof(
          fc.integer({ min: 1, max: size === 'small' ? 300 : 5000 }),
          fc.integer({ min: 1, max: size === 'small' ? 2000 : 70000 }),
        ),
        k: fc.oneof(fc.integer({ min: 1, max: 32 }), fc.integer({ min: 1, max: size === 'small' ? 300 : 4096 })),
        variant: fc.constantFrom('auto' as const, 'small' as const, 'radix' as const),
        fill: fc.constantFrom<Fill>('normal', 'dups', 'masked', 'nan', 'signed-zero'),
        values: fc.boolean(),
        seed: gen.seed(),
      })
      .map((c) => {
        const variant = c.variant === 'small' && c.k > TOPK_SMALL_MAX_K ? 'radix' : c.variant;
        // keep one call's host work bounded: long rows come one or a few at a time
        // (n * rows and k * rows bounded, so one configuration stays around a second on SwiftShader)
        const rows = Math.max(
          1,
          Math.min(
            c.rows,
            Math.floor((size === 'small' ? 20000 : 150000) / c.n),
            Math.floor((size === 'small' ? 600 : 8192) / c.k),
          ),
        );
        return { ...c, rows, variant };
      }),
  async check(b, c) {
    const s = scores(c);
    const ref = topKReference(s, c.rows, c.n, c.k);
    const indices = b.nan([c.rows, c.k], 'i32');
    const values = c.values ? b.nan([c.rows, c.k]) : undefined;
    const plan = await planTopK(b.dev, { rows: c.rows, n: c.n, k: c.k, variant: c.variant });
    await b.runPlan(plan, { scores: b.tensor(s, [c.rows, c.n]), indices, values }, 'sweep.topk');
    const gi = await b.read(indices);
    for (let i = 0; i < gi.length; i++) {
      if (gi[i] !== ref.indices[i])
        return `indices: first mismatch at row ${Math.floor(i / c.k)} slot ${i % c.k}: got ${gi[i]}, want ${ref.indices[i]}`;
    }
    if (values) {
      const gv = await b.read(values);
      for (let i = 0; i < gv.length; i++)
        if (!Object.is(gv[i], ref.values[i]) && gv[i] !== ref.values[i])
          return `values: mismatch at ${i}: got ${gv[i]}, want ${ref.values[i]}`;
    }
    return null;
  },
});
