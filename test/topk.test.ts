import { describe, expect, it } from 'vitest';
import { planTopK, topK, type TopKVariant } from '../kernels/topk/index.js';
import {
  smallSegments,
  sortSegments,
  sortSegmentIterations,
  topKRadixLoopIterations,
  topKSmallLoopIterations,
} from '../kernels/topk/topk.js';
import { loopBudget } from '../src/gpu/segments.js';
import { topKReference } from '../kernels/topk/reference.js';
import { TesseraError } from '../src/errors.js';
import { Rng } from '../src/testing.js';
import { useGpu } from './helpers/gpu.js';

const gpu = useGpu();

type Fill = 'normal' | 'dups' | 'masked' | 'nan' | 'allmasked' | 'signed-zero' | 'ascending';

/** Scores as the GPU sees them (f32), with the pattern `fill`. */
function makeScores(rows: number, n: number, fill: Fill, seed: number): Float32Array {
  const rng = new Rng(seed);
  const s = new Float32Array(rows * n);
  for (let i = 0; i < s.length; i++) {
    const u = rng.next();
    switch (fill) {
      case 'normal':
        s[i] = rng.normal();
        break;
      case 'dups': // many exact ties
        s[i] = Math.floor(u * 5) - 2;
        break;
      case 'masked': // causal-like masking plus a few +inf (forced) candidates
        s[i] = u < 0.5 ? -Infinity : u > 0.995 ? Infinity : rng.normal();
        break;
      case 'nan':
        s[i] = u < 0.3 ? NaN : u < 0.5 ? -Infinity : Math.floor(rng.normal() * 4) / 4;
        break;
      case 'allmasked':
        s[i] = u < 0.5 ? -Infinity : NaN;
        break;
      case 'signed-zero':
        s[i] = u < 0.4 ? -0 : u < 0.8 ? 0 : rng.normal();
        break;
      case 'ascending': // the small variant's worst case: every candidate shifts the whole list
        s[i] = (i % n) + u * 0.5;
        break;
    }
  }
  return s;
}

async function check(
  rows: number,
  n: number,
  k: number,
  fill: Fill,
  variant: TopKVariant | 'auto' = 'auto',
  withValues = true,
  target: 'auto' | 'cpu' | 'gpu' = 'auto',
  loopLimit?: number,
): Promise<number> {
  const s = makeScores(rows, n, fill, rows * 7919 + n * 31 + k);
  const ref = topKReference(s, rows, n, k);
  const indices = gpu.tensor(new Int32Array(rows * k).fill(-7), [rows, k], 'i32');
  const values = withValues ? gpu.nanTensor([rows, k]) : undefined;
  const plan = await planTopK(gpu.dev, { rows, n, k, variant, target, loopLimit });
  let segments = 0;
  try {
    const enc = gpu.dev.device.createCommandEncoder();
    plan.run(enc, { scores: gpu.tensor(s, [rows, n]), indices, values });
    await gpu.dev.submitAndWait([enc.finish()]);
    segments = plan.segments;
    expect(plan.loopIterations).toBeLessThanOrEqual(0.9 * Math.min(loopLimit ?? Infinity, gpu.dev.loopLimit));
  } finally {
    plan.dispose();
  }
  const gotI = Int32Array.from(await gpu.read(indices));
  let bad = -1;
  for (let i = 0; i < gotI.length; i++)
    if (gotI[i] !== ref.indices[i]) {
      bad = i;
      break;
    }
  expect(
    bad,
    bad < 0
      ? ''
      : `first mismatch at row ${Math.floor(bad / k)} slot ${bad % k}: got ${gotI[bad]} want ${ref.indices[bad]}`,
  ).toBe(-1);
  if (values) {
    const gotV = await gpu.read(values);
    for (let i = 0; i < gotV.length; i++) {
      if (gotV[i] !== ref.values[i]) expect.fail(`value mismatch at ${i}: got ${gotV[i]} want ${ref.values[i]}`);
    }
  }
  return segments;
}

describe('topk small variant (one invocation per row)', () => {
  for (const [rows, n, k, fill] of [
    [1, 1, 1, 'normal'],
    [7, 32, 3, 'normal'],
    [300, 64, 8, 'dups'],
    [65, 100, 32, 'masked'],
    [3, 10, 16, 'normal'], // k > n
    [9, 200, 5, 'nan'],
    [4, 50, 4, 'allmasked'],
    [5, 40, 12, 'signed-zero'],
    [2, 4096, 32, 'normal'],
    [3, 4096, 32, 'ascending'], // 135,203 loop iterations unsegmented: 3 segments on llvmpipe
  ] as const) {
    it(`rows${rows}-n${n}-k${k}-${fill}`, async () => void (await check(rows, n, k, fill, 'small')));
  }
  it('without values', async () => void (await check(33, 20, 3, 'dups', 'small', false)));
});

describe.each(['cpu', 'gpu'] as const)('topk radix variant (multi-workgroup radix select), %s shape', (target) => {
  for (const [rows, n, k, fill] of [
    [1, 1, 1, 'normal'],
    [3, 5, 10, 'normal'], // k > n
    [7, 32, 3, 'dups'],
    [2, 1000, 64, 'normal'],
    [4, 5000, 1, 'normal'],
    [3, 9000, 700, 'dups'], // ties across chunks, index digits decide
    [5, 300, 100, 'masked'],
    [6, 777, 33, 'nan'],
    [2, 300, 40, 'allmasked'],
    [3, 500, 64, 'signed-zero'],
    [1, 70000, 4096, 'normal'], // k = 4096
    [1, 70000, 4096, 'dups'],
  ] as const) {
    it(`rows${rows}-n${n}-k${k}-${fill}`, async () => void (await check(rows, n, k, fill, 'radix', true, target)));
  }
  it('without values', async () => void (await check(4, 3000, 50, 'dups', 'radix', false, target)));
  it('ragged rows (n % 4 != 0: unaligned row starts) and a tiny input', async () => {
    await check(5, 4099, 17, 'dups', 'radix', true, target);
    await check(1, 3, 2, 'normal', 'radix', true, target);
  });
  // unsegmented, the cpu sort would run 167,936 loop iterations here (cap 65,536)
  it('one row of 1M candidates, k = 2048', async () =>
    void (await check(1, 1 << 20, 2048, 'normal', 'radix', true, target)));
});

describe('topk auto and convenience', () => {
  it('auto picks small for MoBA-like shapes and radix for long rows', async () => {
    const a = await planTopK(gpu.dev, { rows: 100, n: 32, k: 3 });
    const b = await planTopK(gpu.dev, { rows: 1, n: 100000, k: 2048 });
    expect(a.variant).toBe('small');
    expect(b.variant).toBe('radix');
    a.dispose();
    b.dispose();
  });

  it('topK() convenience equals the reference and checkFinite rejects NaN', async () => {
    const rows = 3;
    const n = 50;
    const k = 5;
    const s = makeScores(rows, n, 'masked', 5);
    const ref = topKReference(s, rows, n, k);
    const indices = gpu.nanTensor([rows, k], 'i32');
    await topK(gpu.dev, { scores: gpu.tensor(s, [rows, n]), indices }, { checkFinite: true });
    expect(Int32Array.from(await gpu.read(indices))).toEqual(ref.indices);
    const bad = s.slice();
    bad[77] = NaN;
    await expect(
      topK(gpu.dev, { scores: gpu.tensor(bad, [rows, n]), indices }, { checkFinite: true }),
    ).rejects.toMatchObject({ code: 'E_NAN', argument: 'scores' });
    // Without the check, NaN is just never selected.
    await topK(gpu.dev, { scores: gpu.tensor(bad, [rows, n]), indices });
    expect(Int32Array.from(await gpu.read(indices))).toEqual(topKReference(bad, rows, n, k).indices);
  });
});

describe('topk bad input', () => {
  it('rejects bad options naming the argument', async () => {
    await expect(planTopK(gpu.dev, { rows: 1, n: 10, k: 0 })).rejects.toMatchObject({ code: 'E_ARG', argument: 'k' });
    await expect(planTopK(gpu.dev, { rows: 1, n: 10, k: 4097 })).rejects.toMatchObject({
      code: 'E_ARG',
      argument: 'k',
    });
    await expect(planTopK(gpu.dev, { rows: 1, n: 10, k: 2.5 })).rejects.toMatchObject({ argument: 'k' });
    await expect(planTopK(gpu.dev, { rows: 0, n: 10, k: 1 })).rejects.toMatchObject({ argument: 'rows' });
    await expect(planTopK(gpu.dev, { rows: 1, n: 0, k: 1 })).rejects.toMatchObject({ argument: 'n' });
    await expect(planTopK(gpu.dev, { rows: 1, n: 10, k: 64, variant: 'small' })).rejects.toMatchObject({
      argument: 'variant',
    });
    await expect(planTopK(gpu.dev, { rows: 1, n: 10, k: 1, variant: 'fast' as never })).rejects.toMatchObject({
      argument: 'variant',
    });
    // The survivor workspace (rows * 2k * 8 bytes) past one binding: E_LIMIT naming rows.
    const rowsBig = Math.floor(gpu.dev.limits.maxStorageBufferBindingSize / 4 / 4097);
    await expect(planTopK(gpu.dev, { rows: rowsBig, n: 4097, k: 4096 })).rejects.toMatchObject({
      code: 'E_LIMIT',
      argument: 'rows',
    });
    const huge = gpu.dev.limits.maxStorageBufferBindingSize / 4 + 1;
    await expect(planTopK(gpu.dev, { rows: 1, n: huge, k: 1 })).rejects.toMatchObject({
      code: 'E_LIMIT',
      argument: 'n',
    });
  });

  it('rejects wrong shapes and dtypes before encoding', async () => {
    const plan = await planTopK(gpu.dev, { rows: 2, n: 10, k: 3 });
    const good = {
      scores: gpu.nanTensor([2, 10]),
      indices: gpu.nanTensor([2, 3], 'i32'),
      values: gpu.nanTensor([2, 3]),
    };
    const enc = gpu.dev.device.createCommandEncoder();
    expect(() => plan.run(enc, { ...good, scores: gpu.nanTensor([2, 11]) })).toThrow(
      expect.objectContaining({ code: 'E_SHAPE', argument: 'scores.shape[1]' }),
    );
    expect(() => plan.run(enc, { ...good, scores: gpu.nanTensor([2, 10], 'f16') })).toThrow(
      expect.objectContaining({ code: 'E_DTYPE', argument: 'scores.dtype' }),
    );
    expect(() => plan.run(enc, { ...good, indices: gpu.nanTensor([2, 3]) })).toThrow(
      expect.objectContaining({ code: 'E_DTYPE', argument: 'indices.dtype' }),
    );
    expect(() => plan.run(enc, { ...good, indices: gpu.nanTensor([2, 4], 'i32') })).toThrow(
      expect.objectContaining({ argument: 'indices.shape[1]' }),
    );
    expect(() => plan.run(enc, { ...good, values: gpu.nanTensor([3, 3]) })).toThrow(
      expect.objectContaining({ argument: 'values.shape[0]' }),
    );
    expect(() => plan.run(enc, { ...good, scores: gpu.nanTensor([20]) })).toThrow(TesseraError);
    plan.dispose();
    expect(() => plan.run(enc, good)).toThrow(expect.objectContaining({ code: 'E_STATE' }));
    enc.finish();
    await expect(
      topK(gpu.dev, { scores: gpu.nanTensor([2, 10]), indices: gpu.nanTensor([3, 3], 'i32') }),
    ).rejects.toMatchObject({ argument: 'indices.shape[0]' });
  });
});

describe('topk loop bounds (llvmpipe stops an invocation after 65,535 loop iterations)', () => {
  it('bound functions', () => {
    expect(topKSmallLoopIterations(4096, 32, false)).toBe(4096 * 33 + 35);
    expect(topKRadixLoopIterations({ target: 'cpu', chunk: 4096, cap: 65536, k: 2048 }).rank).toBe(
      2.5 * 65536 + 2048 * 19 + 3,
    );
    expect(topKRadixLoopIterations({ target: 'gpu', chunk: 4096, cap: 8192, k: 4096 }).rank).toBe(4 + 33 + 8192 + 32);
    // small: segments partition [0, n), each within budget, the list carried between them
    for (const [n, k, limit, count] of [
      [4096, 32, 65535, 3],
      [1000, 8, 1024, 10],
      [77, 3, Infinity, 1],
    ] as const) {
      const budget = loopBudget(limit);
      const segs = smallSegments(n, k, limit);
      expect(segs.length).toBe(count);
      expect(segs[0]!.begin).toBe(0);
      expect(segs.at(-1)!.end).toBe(n);
      segs.forEach((g, i) => {
        if (i > 0) expect(g.begin).toBe(segs[i - 1]!.end);
        expect(g.carry).toBe(i > 0);
        expect(g.last).toBe(i === segs.length - 1);
        expect(topKSmallLoopIterations(g.end - g.begin, k, g.carry)).toBeLessThanOrEqual(budget);
      });
    }
    // cpu sort: heapify node ranges from cap/2 down to 0, then pops 0..k, each within budget
    for (const [cap, k, budget] of [
      [65536, 4096, 58981],
      [8192, 4096, 3686],
      [600, 300, 921],
      [64, 3, 1e9],
    ] as const) {
      const segs = sortSegments(cap, k, budget);
      if (segs.length === 1) {
        expect(topKRadixLoopIterations({ target: 'cpu', chunk: 0, cap, k }).rank).toBeLessThanOrEqual(budget);
        continue;
      }
      const heap = segs.filter((g) => g.h1 > g.h0);
      const pops = segs.filter((g) => g.o1 > g.o0);
      expect(heap.length + pops.length).toBe(segs.length);
      expect(heap[0]!.h1).toBe(cap / 2);
      expect(heap.at(-1)!.h0).toBe(0);
      heap.forEach((g, i) => i > 0 && expect(g.h1).toBe(heap[i - 1]!.h0));
      expect(pops[0]!.o0).toBe(0);
      expect(pops.at(-1)!.o1).toBe(k);
      pops.forEach((g, i) => i > 0 && expect(g.o0).toBe(pops[i - 1]!.o1));
      for (const g of segs) expect(sortSegmentIterations(g, cap, k)).toBeLessThanOrEqual(budget);
    }
  });

  it('plans within the device loop limit', async () => {
    const plan = await planTopK(gpu.dev, { rows: 1, n: 1 << 20, k: 4096, target: 'cpu' });
    expect(plan.loopIterations).toBeLessThanOrEqual(0.9 * gpu.dev.loopLimit);
    if (Number.isFinite(gpu.dev.loopLimit)) expect(plan.segments).toBeGreaterThan(1);
    plan.dispose();
  });
});

describe('topk plans with loopLimit 4096 (the segmented paths, on any adapter)', () => {
  const capped = 4096;
  it('small variant: the scan in segments carrying the list', async () => {
    expect(await check(5, 1000, 8, 'ascending', 'small', true, 'auto', capped)).toBeGreaterThan(1);
    expect(await check(3, 777, 13, 'dups', 'small', false, 'auto', capped)).toBeGreaterThan(1);
    expect(await check(65, 300, 32, 'masked', 'small', true, 'auto', capped)).toBeGreaterThan(1);
  });
  it('radix cpu shape: the heap sort in segments, smaller chunks', async () => {
    expect(await check(3, 5001, 300, 'normal', 'radix', true, 'cpu', capped)).toBeGreaterThan(1);
    expect(await check(2, 9000, 1500, 'dups', 'radix', true, 'cpu', capped)).toBeGreaterThan(1);
    expect(await check(1, 70000, 4096, 'normal', 'radix', false, 'cpu', capped)).toBeGreaterThan(1);
  });
  it('radix gpu shape: fewer survivor slots; k past what one rank invocation reads is E_LIMIT naming target', async () => {
    await check(2, 9000, 1000, 'dups', 'radix', true, 'gpu', capped);
    const plan = await planTopK(gpu.dev, { rows: 1, n: 20000, k: 2000, target: 'gpu', loopLimit: capped });
    expect(plan.cap).toBeLessThan(4096);
    expect(plan.cap).toBeGreaterThanOrEqual(2000);
    plan.dispose();
    await expect(
      planTopK(gpu.dev, { rows: 1, n: 20000, k: 4000, target: 'gpu', loopLimit: capped }),
    ).rejects.toMatchObject({ code: 'E_LIMIT', argument: 'target' });
    // auto falls back to the shape that fits
    const auto = await planTopK(gpu.dev, { rows: 1, n: 20000, k: 4000, loopLimit: capped });
    expect(auto.target).toBe('cpu');
    auto.dispose();
  });
});
