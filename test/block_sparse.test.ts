import { describe, expect, it } from 'vitest';
import { blockSparseAttention, planBlockSparse } from '../kernels/block_sparse/index.js';
import { blockSparseReference } from '../kernels/block_sparse/reference.js';
import { blockListParts } from '../kernels/attention/lists.js';
import { attentionListLoopCost } from '../kernels/attention/attention.js';
import { compare, describeComparison, passes, Rng, TOLERANCE } from '../src/testing.js';
import { roundTo, type FloatDType } from '../src/tensor.js';
import { useGpu } from './helpers/gpu.js';
import { tier } from './helpers/tier.js';

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

interface Case {
  Tq: number;
  Tk?: number;
  Hq: number;
  Hkv: number;
  D: number;
  Dv?: number;
  R: number;
  C: number;
  P: 1 | 'kv' | 'q';
  causal: boolean;
  dtype: FloatDType;
  target?: 'cpu' | 'gpu';
  density?: number;
  /** In the `extended` test tier only (npm run test:extended): a size or dim beyond the core matrix. */
  extended?: boolean;
}

/** Runs a case against the float64 reference; returns the plan's launches per run. */
async function runCase(c: Case, loopLimit?: number): Promise<number> {
  const Tk = c.Tk ?? c.Tq;
  const { Tq, Hq, Hkv, D, R, C, dtype } = c;
  const Dv = c.Dv ?? D;
  const rng = new Rng(Tq * 13 + R * 5 + C + Hq);
  const MB = Math.ceil(Tq / R),
    NB = Math.ceil(Tk / C);
  const P = c.P === 1 ? 1 : c.P === 'kv' ? Hkv : Hq;
  const pats = Array.from({ length: P }, (_, p) =>
    randomBsr(rng, MB, NB, c.density ?? 0.5, p === 0 && MB > 1 ? MB - 1 : -1),
  );
  const indptr = P === 1 ? pats[0]!.indptr : pats.map((x) => x.indptr);
  const indices = P === 1 ? pats[0]!.indices : pats.map((x) => x.indices);
  const q = roundTo(rng.normals(Tq * Hq * D), dtype),
    k = roundTo(rng.normals(Tk * Hkv * D), dtype),
    v = roundTo(rng.normals(Tk * Hkv * Dv), dtype);
  const ref = blockSparseReference(q, k, v, { Tq, Tk, Hq, Hkv, D, Dv, R, C, indptr, indices, causal: c.causal });
  const o = gpu.nanTensor([Tq, Hq, Dv], dtype);
  const lse = gpu.nanTensor([Tq, Hq]);
  const plan = await planBlockSparse(gpu.dev, {
    Tq,
    Tk,
    Hq,
    Hkv,
    D,
    Dv,
    R,
    C,
    indptr,
    indices,
    causal: c.causal,
    dtype,
    target: c.target,
    loopLimit,
  });
  const enc = gpu.dev.device.createCommandEncoder();
  plan.run(enc, {
    q: gpu.tensor(q, [Tq, Hq, D], dtype),
    k: gpu.tensor(k, [Tk, Hkv, D], dtype),
    v: gpu.tensor(v, [Tk, Hkv, Dv], dtype),
    o,
    lse,
  });
  await gpu.dev.submitAndWait([enc.finish()]);
  plan.dispose();
  expect(plan.loopIterations).toBeLessThanOrEqual(0.9 * Math.min(loopLimit ?? Infinity, gpu.dev.loopLimit));
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
    { Tq: 64, Hq: 2, Hkv: 2, D: 64, R: 32, C: 8, P: 'q', causal: false, dtype: 'f32', extended: true },
    { Tq: 65, Hq: 4, Hkv: 1, D: 32, R: 8, C: 32, P: 1, causal: true, dtype: 'f16' },
    { Tq: 300, Hq: 4, Hkv: 2, D: 48, R: 64, C: 64, P: 'kv', causal: true, dtype: 'f16', extended: true },
    { Tq: 40, Tk: 300, Hq: 2, Hkv: 1, D: 32, R: 16, C: 32, P: 1, causal: true, dtype: 'f32' },
    { Tq: 1000, Hq: 2, Hkv: 1, D: 16, R: 128, C: 64, P: 'q', causal: true, dtype: 'f32', extended: true },
    { Tq: 96, Hq: 4, Hkv: 2, D: 32, Dv: 48, R: 16, C: 32, P: 1, causal: true, dtype: 'bf16' },
    { Tq: 130, Hq: 4, Hkv: 2, D: 32, Dv: 16, R: 32, C: 16, P: 'kv', causal: true, dtype: 'f32', target: 'gpu' },
  ];
  for (const c of cases) {
    const name = `Tq${c.Tq}-Tk${c.Tk ?? c.Tq}-H${c.Hq}-Hkv${c.Hkv}-D${c.D}${c.Dv ? '-Dv' + c.Dv : ''}-R${c.R}-C${c.C}-P${c.P}-${c.causal ? 'causal' : 'full'}-${c.dtype}${c.target ? '-' + c.target : ''}`;
    it(name, tier(c.extended), async () => void (await runCase(c)));
  }

  it('empty block rows give o = 0 and lse = -inf; convenience call', async () => {
    const T = 32,
      H = 1,
      D = 8;
    const rng = new Rng(3);
    const o = gpu.nanTensor([T, H, D]);
    const lse = gpu.nanTensor([T, H]);
    await blockSparseAttention(
      gpu.dev,
      {
        q: gpu.tensor(rng.normals(T * D), [T, H, D]),
        k: gpu.tensor(rng.normals(T * D), [T, H, D]),
        v: gpu.tensor(rng.normals(T * D), [T, H, D]),
        o,
        lse,
      },
      { R: 16, C: 16, indptr: [0, 0, 1], indices: [1] },
    );
    const og = await gpu.read(o),
      lg = await gpu.read(lse);
    for (let i = 0; i < 16 * D; i++) expect(og[i]).toBe(0);
    for (let i = 0; i < 16; i++) expect(lg[i]).toBe(-Infinity);
    for (let i = 16; i < 32; i++) expect(Number.isFinite(lg[i])).toBe(true);
  });
});

describe('block_sparse loop bounds (llvmpipe stops an invocation after 65,535 loop iterations)', () => {
  // One block row listing 4,000 one-key blocks: the list loop and the key loop (loops whose
  // trip counts come from data, which the compiler cannot unroll) cost more than 16 loop
  // iterations per block on llvmpipe, more than 65,535 per invocation unsplit. Extended tier (D 4
  // pipelines of their own; llvmpipe runs them in test:compat's full tier): the loopLimit block
  // below splits the lists in the core tier.
  for (const target of ['gpu', 'cpu'] as const) {
    it(`4,000 one-key blocks per row on the default device (${target} variant)`, tier(true), async () => {
      const c = attentionListLoopCost(target, 4, 4, 1);
      expect(c.setup + 4000 * c.perEntry).toBeGreaterThan(65535);
      // gpu shape: a 64-thread workgroup per row and block (slow on a CPU adapter), so 2 rows
      const parts = await runCase({
        Tq: target === 'gpu' ? 2 : 16,
        Tk: 4000,
        Hq: 1,
        Hkv: 1,
        D: 4,
        R: 16,
        C: 1,
        P: 1,
        causal: false,
        dtype: 'f32',
        target,
        density: 1,
      });
      if (Number.isFinite(gpu.dev.loopLimit)) expect(parts).toBeGreaterThan(1);
    });
  }
  it('parts: whole entries when one fits, else key ranges; all within budget', () => {
    const byEntries = blockListParts(3686, 'gpu', 32, 32, 63, 16)!;
    expect(byEntries.keyChunks).toBe(1);
    expect(byEntries.parts).toBe(Math.ceil(63 / byEntries.ePer));
    expect(byEntries.parts).toBeGreaterThan(1);
    expect(byEntries.loopIterations).toBeLessThanOrEqual(3686);
    const byKeys = blockListParts(3686, 'gpu', 32, 32, 2, 3000)!;
    expect(byKeys.ePer).toBe(1);
    expect(byKeys.kPer % 64).toBe(0);
    expect(byKeys.keyChunks * byKeys.kPer).toBeGreaterThanOrEqual(3000);
    expect(byKeys.parts).toBe(2 * byKeys.keyChunks);
    expect(byKeys.loopIterations).toBeLessThanOrEqual(3686);
    expect(blockListParts(58981, 'gpu', 32, 32, 63, 16)!.parts).toBe(1);
    expect(blockListParts(Infinity, 'cpu', 32, 32, 1e6, 1e6)!.parts).toBe(1);
    expect(blockListParts(700, 'cpu', 256, 256, 1, 10000)).toBeUndefined();
    // token lists (DSA): one run of keys per part
    const tokens = blockListParts(3686, 'cpu', 32, 32, 3000, 0)!;
    expect(tokens.parts).toBe(Math.ceil(3000 / tokens.ePer));
    expect(tokens.parts).toBeGreaterThan(1);
    expect(tokens.loopIterations).toBeLessThanOrEqual(3686);
  });
});

describe('block_sparse plans with loopLimit 4096 (lists split into parts merged by kernels/merge, on any adapter)', () => {
  const cases: Case[] = [
    // many blocks per row: launches over groups of entries (f16 out: staged, then converted)
    {
      Tq: 64,
      Tk: 1000,
      Hq: 2,
      Hkv: 1,
      D: 32,
      R: 16,
      C: 16,
      P: 'kv',
      causal: false,
      dtype: 'f16',
      target: 'gpu',
      density: 1,
    },
    // one huge block: key ranges, causal, ragged
    {
      Tq: 100,
      Tk: 3001,
      Hq: 2,
      Hkv: 1,
      D: 32,
      R: 32,
      C: 3001,
      P: 1,
      causal: true,
      dtype: 'f32',
      target: 'gpu',
      density: 1,
      extended: true,
    },
    // cpu variant: two long blocks per row, key ranges of whole 16-key steps, bf16
    {
      Tq: 20,
      Tk: 5000,
      Hq: 2,
      Hkv: 2,
      D: 32,
      R: 16,
      C: 2500,
      P: 'q',
      causal: true,
      dtype: 'bf16',
      target: 'cpu',
      density: 1,
    },
    {
      Tq: 17,
      Tk: 4500,
      Hq: 2,
      Hkv: 2,
      D: 16,
      Dv: 32,
      R: 8,
      C: 40,
      P: 1,
      causal: false,
      dtype: 'f32',
      target: 'cpu',
      density: 0.9,
      extended: true,
    },
  ];
  for (const c of cases) {
    it(`Tq${c.Tq}-Tk${c.Tk}-C${c.C}-D${c.D}-${c.dtype}-${c.target}`, tier(c.extended), async () =>
      expect(await runCase(c, 4096)).toBeGreaterThan(1),
    );
  }
});

describe('block_sparse bad input', () => {
  it('rejects bad masks and tensors with a TesseraError naming the argument', async () => {
    const base = { Tq: 32, Hq: 2, Hkv: 1, D: 16, R: 16, C: 16, indptr: [0, 1, 3], indices: [0, 0, 1] };
    await expect(planBlockSparse(gpu.dev, { ...base, indices: [0, 0, 2] })).rejects.toMatchObject({
      code: 'E_ARG',
      argument: 'indices[2]',
    });
    await expect(planBlockSparse(gpu.dev, { ...base, indices: [0, 0, -1] })).rejects.toMatchObject({
      argument: 'indices[2]',
    });
    await expect(planBlockSparse(gpu.dev, { ...base, indices: [0, 1, 1] })).rejects.toMatchObject({
      argument: 'indices[2]',
    });
    await expect(planBlockSparse(gpu.dev, { ...base, indptr: [0, 1] })).rejects.toMatchObject({
      code: 'E_SHAPE',
      argument: 'indptr',
    });
    await expect(planBlockSparse(gpu.dev, { ...base, indptr: [0, 2, 1] })).rejects.toMatchObject({
      argument: 'indptr[2]',
    });
    await expect(
      planBlockSparse(gpu.dev, {
        ...base,
        indptr: [
          [0, 1, 3],
          [0, 1, 3],
          [0, 1, 3],
        ],
        indices: [
          [0, 0, 1],
          [0, 0, 1],
          [0, 0, 1],
        ],
      }),
    ).rejects.toMatchObject({ argument: 'indptr' });
    await expect(planBlockSparse(gpu.dev, { ...base, R: 0 })).rejects.toMatchObject({ argument: 'R' });
    await expect(planBlockSparse(gpu.dev, { ...base, R: 512, indptr: [0, 1], indices: [0] })).rejects.toMatchObject({
      code: 'E_UNSUPPORTED',
      argument: 'R',
    });
    await expect(planBlockSparse(gpu.dev, { ...base, C: 0 })).rejects.toMatchObject({ argument: 'C' });
    const plan = await planBlockSparse(gpu.dev, base);
    const enc = gpu.dev.device.createCommandEncoder();
    expect(() =>
      plan.run(enc, {
        q: gpu.nanTensor([32, 2, 16]),
        k: gpu.nanTensor([32, 1, 16]),
        v: gpu.nanTensor([32, 1, 16]),
        o: gpu.nanTensor([32, 2, 16], 'f16'),
      }),
    ).toThrow(/o\.dtype/);
    plan.dispose();
    enc.finish();
  });
});
