/** Merge of attention partials: parts, rows, D, output dtype, with empty (-inf) partials. */
import fc from 'fast-check';
import { planMerge } from '../../kernels/merge/index.js';
import { mergeReference } from '../../kernels/merge/reference.js';
import { roundTo, type FloatDType } from '../../src/tensor.js';
import { Rng, TOLERANCE } from '../../src/testing.js';
import { all, defineSweep, gen, within, type SweepSize } from './run.js';

export interface MergeConfig {
  P: number;
  rows: number;
  D: number;
  outDtype: FloatDType;
  emptyFrac: number;
  lseScale: number;
  seed: number;
}

export const mergeSweep = defineSweep<MergeConfig>({
  family: 'merge',
  arb: (size: SweepSize) =>
    fc
      .record({
        P: fc.integer({ min: 1, max: size === 'small' ? 6 : 24 }),
        rows: fc.integer({ min: 1, max: size === 'small' ? 40 : 700 }),
        D: fc.integer({ min: 1, max: size === 'small' ? 48 : 320 }),
        outDtype: gen.dtype(),
        emptyFrac: fc.constantFrom(0, 0.1, 0.5, 0.9, 1),
        lseScale: fc.constantFrom(0.1, 3, 30),
        seed: gen.seed(),
      })
      .map((c) => ({ ...c, D: c.outDtype === 'f32' ? c.D : c.D + (c.D % 2) })),
  async check(b, c) {
    const rng = new Rng(c.seed);
    const oParts = roundTo(rng.normals(c.P * c.rows * c.D), 'f32');
    const lseParts = roundTo(rng.normals(c.P * c.rows, c.lseScale), 'f32');
    for (let i = 0; i < lseParts.length; i++) if (rng.next() < c.emptyFrac) lseParts[i] = -Infinity;
    const ref = mergeReference(oParts, lseParts, c.P, c.rows, c.D);
    const o = b.nan([c.rows, c.D], c.outDtype);
    const lse = b.nan([c.rows]);
    const plan = await planMerge(b.dev, { parts: c.P, rows: c.rows, D: c.D, outDtype: c.outDtype });
    await b.runPlan(
      plan,
      { oParts: b.tensor(oParts, [c.P, c.rows, c.D]), lseParts: b.tensor(lseParts, [c.P, c.rows]), o, lse },
      'sweep.merge',
    );
    return all(
      within('o', await b.read(o), c.outDtype === 'f32' ? ref.o : roundTo(ref.o, c.outDtype), TOLERANCE[c.outDtype]),
      within('lse', await b.read(lse), ref.lse, TOLERANCE.f32),
    );
  },
});
