import { describe, expect, it } from 'vitest';
import { blockSparseAttention, planBlockSparse } from '../kernels/block_sparse/index.js';
import { blockSparseReference } from '../kernels/block_sparse/reference.js';
import { GATHER_WHOLE, gatherLoopIterations, gatherSegments, gatherSegmentsIterations } from '../kernels/block_sparse/gather.js';
import { compare, describeComparison, passes, Rng, TOLERANCE } from '../src/testing.js';
import { roundTo, type FloatDType } from '../src/tensor.js';
import { useGpu } from './helpers/gpu.js';

const gpu = useGpu();

/** A random BSR pattern: each block row keeps each key block with probability `density`. */
function randomBsr(rng: Rng, MB: number, NB: number, density: number, emptyRow = -1) {
  const indptr = [0];
  const indices: number[] = [];
  for (let r = 0; r < MB; r++) {
    if (r !== emptyRow) for (let b = 0; b < NB; b++) if (rng.next() < density) indices.push(b);
    indptr.push(indices.length);
  }
  return { indptr, indices };
}

interface Case { Tq: number; Tk?: number; Hq: number; Hkv: number; D: number; Dv?: number; R: number; C: number; P: 1 | 'kv' | 'q'; causal: boolean; dtype: FloatDType; target?: 'cpu' | 'gpu'; density?: number }

/** Runs a case against the float64 reference; returns the plan's launches per run. */
async function runCase(c: Case, fx = gpu): Promise<number> {
  const gpu = fx;
  const Tk = c.Tk ?? c.Tq;
  const { Tq, Hq, Hkv, D, R, C, dtype } = c;
  const Dv = c.Dv ?? D;
  const rng = new Rng(Tq * 13 + R * 5 + C + Hq);
  const MB = Math.ceil(Tq / R), NB = Math.ceil(Tk / C);
  const P = c.P === 1 ? 1 : c.P === 'kv' ? Hkv : Hq;
  const pats = Array.from({ length: P }, (_, p) => randomBsr(rng, MB, NB, c.density ?? 0.5, p === 0 && MB > 1 ? MB - 1 : -1));
  const indptr = P === 1 ? pats[0]!.indptr : pats.map((x) => x.indptr);
  const indices = P === 1 ? pats[0]!.indices : pats.map((x) => x.indices);
  const q = roundTo(rng.normals(Tq * Hq * D), dtype), k = roundTo(rng.normals(Tk * Hkv * D), dtype), v = roundTo(rng.normals(Tk * Hkv * Dv), dtype);
  const ref = blockSparseReference(q, k, v, { Tq, Tk, Hq, Hkv, D, Dv, R, C, indptr, indices, causal: c.causal });
  const o = gpu.nanTensor([Tq, Hq, Dv], dtype);
  const lse = gpu.nanTensor([Tq, Hq]);
  const plan = await planBlockSparse(gpu.dev, { Tq, Tk, Hq, Hkv, D, Dv, R, C, indptr, indices, causal: c.causal, dtype, target: c.target });
  const enc = gpu.dev.device.createCommandEncoder();
  plan.run(enc, { q: gpu.tensor(q, [Tq, Hq, D], dtype), k: gpu.tensor(k, [Tk, Hkv, D], dtype), v: gpu.tensor(v, [Tk, Hkv, Dv], dtype), o, lse });
  await gpu.dev.submitAndWait([enc.finish()]);
  plan.dispose();
  expect(plan.loopIterations).toBeLessThanOrEqual(0.9 * gpu.dev.loopLimit);
  const co = compare(await gpu.read(o), dtype === 'f32' ? ref.o : roundTo(ref.o, dtype));
  expect(passes(co, TOLERANCE[dtype]), describeComparison(co)).toBe(true);
  const cl = compare(await gpu.read(lse), ref.lse);
  expect(passes(cl, TOLERANCE.f32), describeComparison(cl)).toBe(true);
  return plan.segments;
}

describe('block_sparse vs float64 reference', () => {
  const cases: Case[] = [
    { Tq: 1, Hq: 2, Hkv: 1, D: 32, R: 16, C: 16, P: 1, causal: true, dtype: 'f32' },
    { Tq: 63, Hq: 4, Hkv: 2, D: 32, R: 16, C: 16, P: 'kv', causal: true, dtype: 'f32' },
    { Tq: 64, Hq: 2, Hkv: 2, D: 64, R: 32, C: 8, P: 'q', causal: false, dtype: 'f32' },
    { Tq: 65, Hq: 4, Hkv: 1, D: 32, R: 8, C: 32, P: 1, causal: true, dtype: 'f16' },
    { Tq: 300, Hq: 4, Hkv: 2, D: 48, R: 64, C: 64, P: 'kv', causal: true, dtype: 'f16' },
    { Tq: 40, Tk: 300, Hq: 2, Hkv: 1, D: 32, R: 16, C: 32, P: 1, causal: true, dtype: 'f32' },
    { Tq: 1000, Hq: 2, Hkv: 1, D: 16, R: 128, C: 64, P: 'q', causal: true, dtype: 'f32' },
    { Tq: 96, Hq: 4, Hkv: 2, D: 32, Dv: 48, R: 16, C: 32, P: 1, causal: true, dtype: 'bf16' },
    { Tq: 130, Hq: 4, Hkv: 2, D: 32, Dv: 16, R: 32, C: 16, P: 'kv', causal: true, dtype: 'f32', target: 'gpu' },
  ];
  for (const c of cases) {
    it(`Tq${c.Tq}-Tk${c.Tk ?? c.Tq}-H${c.Hq}-Hkv${c.Hkv}-D${c.D}${c.Dv ? '-Dv' + c.Dv : ''}-R${c.R}-C${c.C}-P${c.P}-${c.causal ? 'causal' : 'full'}-${c.dtype}${c.target ? '-' + c.target : ''}`, async () => void (await runCase(c)));
  }

  it('empty block rows give o = 0 and lse = -inf; convenience call', async () => {
    const T = 32, H = 1, D = 8;
    const rng = new Rng(3);
    const o = gpu.nanTensor([T, H, D]);
    const lse = gpu.nanTensor([T, H]);
    await blockSparseAttention(gpu.dev, { q: gpu.tensor(rng.normals(T * D), [T, H, D]), k: gpu.tensor(rng.normals(T * D), [T, H, D]), v: gpu.tensor(rng.normals(T * D), [T, H, D]), o, lse }, { R: 16, C: 16, indptr: [0, 0, 1], indices: [1] });
    const og = await gpu.read(o), lg = await gpu.read(lse);
    for (let i = 0; i < 16 * D; i++) expect(og[i]).toBe(0);
    for (let i = 0; i < 16; i++) expect(lg[i]).toBe(-Infinity);
    for (let i = 16; i < 32; i++) expect(Number.isFinite(lg[i])).toBe(true);
  });
});

describe('block_sparse loop bounds (llvmpipe stops an invocation after 65,535 loop iterations)', () => {
  // One block row listing 34,000 one-key blocks: the list loop and the key loop (loops whose
  // trip counts come from data, which the compiler cannot unroll) cost about 3 loop iterations
  // per block on llvmpipe, 102,000 per invocation unsegmented (the bound, counting the head-dim
  // loops and calls too, says 306,008).
  for (const target of ['gpu', 'cpu'] as const) {
    it(`34,000 one-key blocks per row on the default device (${target} variant)`, async () => {
      expect(gatherLoopIterations({ cpu: target === 'cpu', D: 4, Dv: 4 }, { entries: 34000, keys: 1 }, false)).toBeGreaterThan(65535);
      const segs = await runCase({ Tq: 16, Tk: 34000, Hq: 1, Hkv: 1, D: 4, R: 16, C: 1, P: 1, causal: false, dtype: 'f32', target, density: 1 });
      if (Number.isFinite(gpu.dev.loopLimit)) expect(segs).toBeGreaterThan(1);
    });
  }
  it('segments: whole entries when one fits, else key ranges; all within budget', () => {
    const k = { cpu: false, D: 32, Dv: 32 };
    const byEntries = gatherSegments(3686, k, { entries: 63, keys: 16 })!;
    expect(byEntries.every((g) => g.K0 === 0 && g.K1 === 0x7fffffff)).toBe(true);
    expect(byEntries.map((g) => g.E0)).toEqual(byEntries.map((_, i) => i * byEntries[0]!.E1));
    const byKeys = gatherSegments(3686, k, { entries: 2, keys: 3000 })!;
    expect(byKeys.every((g) => g.E1 - g.E0 === 1 && (g.K1 - g.K0) % 4 === 0)).toBe(true);
    expect(byKeys.length).toBeGreaterThan(2);
    for (const segs of [byEntries, byKeys]) {
      expect(segs.map((g) => g.LOAD)).toEqual(segs.map((_, i) => (i ? 1 : 0)));
      expect(gatherSegmentsIterations(k, { entries: 63, keys: 3000 }, segs.length === byKeys.length ? byKeys : [])).toBeLessThanOrEqual(3686);
    }
    expect(gatherSegments(58981, k, { entries: 63, keys: 16 })).toEqual([GATHER_WHOLE]);
    expect(gatherSegments(700, { cpu: true, D: 256, Dv: 256 }, { entries: 1, keys: 10000 })).toBeUndefined();
  });
});

describe('block_sparse with loopLimit 4096 (split launches chained through f32 partials)', () => {
  const capped = useGpu({ loopLimit: 4096 });
  const cases: Case[] = [
    // many blocks per row: launches over groups of entries (f16 out: staged, then converted)
    { Tq: 64, Tk: 1000, Hq: 2, Hkv: 1, D: 32, R: 16, C: 16, P: 'kv', causal: false, dtype: 'f16', target: 'gpu', density: 1 },
    // one huge block: key ranges, causal, ragged
    { Tq: 100, Tk: 3001, Hq: 2, Hkv: 1, D: 32, R: 32, C: 3001, P: 1, causal: true, dtype: 'f32', target: 'gpu', density: 1 },
    // cpu variant: two long blocks per row, key ranges of whole 16-key steps, bf16
    { Tq: 20, Tk: 5000, Hq: 2, Hkv: 2, D: 32, R: 16, C: 2500, P: 'q', causal: true, dtype: 'bf16', target: 'cpu', density: 1 },
    { Tq: 17, Tk: 4500, Hq: 2, Hkv: 2, D: 16, Dv: 32, R: 8, C: 40, P: 1, causal: false, dtype: 'f32', target: 'cpu', density: 0.9 },
  ];
  for (const c of cases) {
    it(`Tq${c.Tq}-Tk${c.Tk}-C${c.C}-D${c.D}-${c.dtype}-${c.target}`, async () => expect(await runCase(c, capped)).toBeGreaterThan(1));
  }
});

describe('block_sparse bad input', () => {
  it('rejects bad masks and tensors with a TesseraError naming the argument', async () => {
    const base = { Tq: 32, Hq: 2, Hkv: 1, D: 16, R: 16, C: 16, indptr: [0, 1, 3], indices: [0, 0, 1] };
    await expect(planBlockSparse(gpu.dev, { ...base, indices: [0, 0, 2] })).rejects.toMatchObject({ code: 'E_ARG', argument: 'indices[2]' });
    await expect(planBlockSparse(gpu.dev, { ...base, indices: [0, 0, -1] })).rejects.toMatchObject({ argument: 'indices[2]' });
    await expect(planBlockSparse(gpu.dev, { ...base, indices: [0, 1, 1] })).rejects.toMatchObject({ argument: 'indices[2]' });
    await expect(planBlockSparse(gpu.dev, { ...base, indptr: [0, 1] })).rejects.toMatchObject({ code: 'E_SHAPE', argument: 'indptr' });
    await expect(planBlockSparse(gpu.dev, { ...base, indptr: [0, 2, 1] })).rejects.toMatchObject({ argument: 'indptr[2]' });
    await expect(planBlockSparse(gpu.dev, { ...base, indptr: [[0, 1, 3], [0, 1, 3], [0, 1, 3]], indices: [[0, 0, 1], [0, 0, 1], [0, 0, 1]] })).rejects.toMatchObject({ argument: 'indptr' });
    await expect(planBlockSparse(gpu.dev, { ...base, R: 0 })).rejects.toMatchObject({ argument: 'R' });
    await expect(planBlockSparse(gpu.dev, { ...base, R: 512, indptr: [0, 1], indices: [0] })).rejects.toMatchObject({ code: 'E_UNSUPPORTED', argument: 'R' });
    await expect(planBlockSparse(gpu.dev, { ...base, C: 0 })).rejects.toMatchObject({ argument: 'C' });
    const plan = await planBlockSparse(gpu.dev, base);
    const enc = gpu.dev.device.createCommandEncoder();
    expect(() => plan.run(enc, { q: gpu.nanTensor([32, 2, 16]), k: gpu.nanTensor([32, 1, 16]), v: gpu.nanTensor([32, 1, 16]), o: gpu.nanTensor([32, 2, 16], 'f16') })).toThrow(/o\.dtype/);
    plan.dispose();
    enc.finish();
  });
});
