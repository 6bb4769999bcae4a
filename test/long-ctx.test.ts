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
    for (const k of ['float64RelRmsMax', 'float64LseErrMax', 'float64RelRmsNeedle', 'float64LseErrNeedle', 'float64RelRmsRandom', 'float64LseErrRandom'] as const) {
      expect(Number.isFinite(r[k]), k).toBe(true);
      expect(r[k], k).toBeLessThanOrEqual(1e-5);
    }
    expect(r.float64RelRmsMax).toBe(Math.max(r.float64RelRmsNeedle!, r.float64RelRmsRandom!));
  });

  it('--check-float64 needs the exact pass', async () => {
    await expect(runNeedle(gpu.dev, { tokens: 5000, checkFloat64: true, exact: false, quiet: true, gpuBudgetMiB: 24 })).rejects.toMatchObject({ code: 'E_ARG', argument: 'checkFloat64' });
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
        for (let t = 0; t < T; t++) for (let i = 0; i < 8; i++) o[r * 8 + i] += (Math.exp(s[t]! - m) / z) * v[(t * 2 + h) * 8 + i]!;
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
    const cache = createKvCache(gpu.dev, { Hkv: 1, D: 32, pageSize: 16, dtype: 'f16', gpuBudgetBytes: 1 << 20, tilePages: 1 });
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
