import { describe, expect, it } from 'vitest';
import { bandPattern, sparseWork, type SparseBenchConfig } from '../bench/suites/sparse.js';

const base: SparseBenchConfig = {
  T: 300,
  D: 8,
  H: 2,
  dtype: 'f32',
  window: 40,
  mobaBlock: 32,
  mobaTopk: 3,
  bsBlock: 16,
  nsaBlock: 16,
  nsaCount: 4,
  nsaWindow: 40,
  dsaTopk: 50,
  dsaHI: 2,
  dsaDI: 8,
  warmup: 0,
  runs: 1,
};

describe('bench sparse: work accounting', () => {
  it('counts the visible pairs of each method by brute force', () => {
    const { T, D, H } = base;
    const count = (visible: (t: number, j: number) => boolean) => {
      let n = 0;
      for (let t = 0; t < T; t++) for (let j = 0; j <= t; j++) if (visible(t, j)) n++;
      return H * 4 * D * n;
    };
    expect(sparseWork('dense', base).flops).toBe(count(() => true));
    expect(sparseWork('sliding_window', base).flops).toBe(count((t, j) => j > t - base.window));
    const { indptr, indices } = bandPattern(T, base.bsBlock, base.window);
    expect(sparseWork('block_sparse', base).flops).toBe(
      count((t, j) => {
        const r = Math.floor(t / base.bsBlock);
        return indices.slice(indptr[r], indptr[r + 1]).includes(Math.floor(j / base.bsBlock));
      }),
    );
    // MoBA: own block causally + min(k-1, own) full past blocks, plus the gate
    const B = base.mobaBlock;
    let pairs = 0,
      gate = 0;
    for (let t = 0; t < T; t++) {
      const own = Math.floor(t / B);
      pairs += t - own * B + 1 + Math.min(base.mobaTopk - 1, own) * B;
      gate += own;
    }
    expect(sparseWork('moba', base).flops).toBe(H * 4 * D * pairs + H * 2 * D * gate);
  });

  it('band pattern: block 0, the diagonal block and window/bs blocks before it, no repeats', () => {
    const { indptr, indices } = bandPattern(200, 16, 40);
    expect(indptr.length).toBe(Math.ceil(200 / 16) + 1);
    for (let r = 0; r + 1 < indptr.length; r++) {
      const row = indices.slice(indptr[r], indptr[r + 1]);
      expect(new Set(row).size).toBe(row.length);
      expect(row).toContain(r);
      expect(row).toContain(0);
      expect(Math.max(...row)).toBe(r);
    }
  });
});
