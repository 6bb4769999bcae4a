import { describe, expect, it } from 'vitest';
import { useGpu } from './helpers/gpu.js';
import { TesseraError } from '../src/errors.js';
import { GPUBufferUsageFlags } from '../src/gpu/flags.js';
import { Rng, TOLERANCE, compare, describeComparison, passes } from '../src/testing.js';
import { createKvCache } from '../src/kv/cache.js';
import type { KvDType } from '../src/kv/codec.js';
import { planSparsePrefill, type SparsePrefillOptions } from '../src/stream/prefill.js';
import { streamAttention } from '../src/stream/exact.js';
import { prefillScoresReference, sparsePrefillReference } from '../src/stream/reference.js';
import { streamAttentionReference } from '../kernels/paged/reference.js';
import { questBlockScoresReference } from '../kernels/quest/reference.js';
import { tier } from './helpers/tier.js';

const gpu = useGpu();

interface Case {
  /** Context tokens before the chunk. */
  T: number;
  Tq: number;
  Hq: number;
  Hkv: number;
  D: number;
  dtype: KvDType;
  P: number;
  budget: number;
  blockSize?: number;
  mode?: 'quest' | 'mean';
  /** Page scoring per block: the query-box bound (default) or every row's own score. */
  blockScore?: 'bound' | 'rows';
  target?: 'cpu' | 'gpu';
  /** Append the chunk through run({ k, v }) (default) or before the call. */
  appendInRun?: boolean;
  /** In the `extended` test tier only (npm run test:extended): a repeat of a core method and target. */
  extended?: boolean;
}

async function runCase(c: Case) {
  const dev = gpu.dev;
  const cache = createKvCache(dev, { Hkv: c.Hkv, D: c.D, dtype: c.dtype, pageSize: c.P, gpuBudgetBytes: 8 << 20 });
  const plan = await planSparsePrefill(cache, {
    Hq: c.Hq,
    Tq: c.Tq,
    budgetTokens: c.budget,
    blockSize: c.blockSize,
    mode: c.mode,
    blockScore: c.blockScore,
    target: c.target,
  } satisfies SparsePrefillOptions);
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  const rng = new Rng(c.T + c.Tq + c.D);
  const q = rng.normals(c.Tq * c.Hq * c.D);
  const qb = dev.upload(Float32Array.from(q));
  const ob = dev.createBuffer({ size: c.Tq * c.Hq * c.D * 4, usage });
  const lb = dev.createBuffer({ size: c.Tq * c.Hq * 4, usage });
  dev.device.queue.writeBuffer(ob, 0, new Float32Array(c.Tq * c.Hq * c.D).fill(NaN));
  dev.device.queue.writeBuffer(lb, 0, new Float32Array(c.Tq * c.Hq).fill(NaN));
  try {
    const seq = cache.addSequence();
    cache.append(seq, rng.normals(c.T * c.Hkv * c.D), rng.normals(c.T * c.Hkv * c.D));
    const kNew = rng.normals(c.Tq * c.Hkv * c.D);
    const vNew = rng.normals(c.Tq * c.Hkv * c.D);
    if (c.appendInRun === false) cache.append(seq, kNew, vNew);
    const stats = await plan.run(
      seq,
      { buffer: qb, shape: [c.Tq, c.Hq, c.D], dtype: 'f32' },
      {
        o: { buffer: ob, shape: [c.Tq, c.Hq, c.D], dtype: 'f32' },
        lse: { buffer: lb, shape: [c.Tq, c.Hq], dtype: 'f32' },
      },
      c.appendInRun === false ? {} : { k: kNew, v: vNew },
    );
    const Tk = c.T + c.Tq;
    expect(cache.length(seq)).toBe(Tk);
    const o = Float64Array.from(new Float32Array(await dev.readback(ob)));
    const lse = Float64Array.from(new Float32Array(await dev.readback(lb)));
    const { k, v } = cache.read(seq, 0, Tk);
    const ro = { Tq: c.Tq, Tk, Hq: c.Hq, Hkv: c.Hkv, D: c.D, pageSize: c.P, blockSize: c.blockSize ?? 64 };
    return { cache, seq, stats, o, lse, q, k, v, ro };
  } finally {
    plan.dispose();
    for (const b of [qb, ob, lb]) dev.destroyBuffer(b);
  }
}

describe('sparse prefill vs float64', () => {
  // core tier: each method (quest bound, quest rows, mean), the gpu target and each KV dtype (f16,
  // bf16, int8; f32 in the loop-cap block below); the f32 pair of bound and rows runs extended
  const cases: Case[] = [
    { T: 6_000, Tq: 200, Hq: 2, Hkv: 1, D: 32, dtype: 'f16', P: 64, budget: 512 },
    { T: 6_000, Tq: 200, Hq: 2, Hkv: 1, D: 32, dtype: 'f16', P: 64, budget: 512, blockScore: 'rows' },
    { T: 5_003, Tq: 130, Hq: 4, Hkv: 2, D: 16, dtype: 'f32', P: 16, budget: 256, blockSize: 32, extended: true },
    {
      T: 5_003,
      Tq: 130,
      Hq: 4,
      Hkv: 2,
      D: 16,
      dtype: 'f32',
      P: 16,
      budget: 256,
      blockSize: 32,
      blockScore: 'rows',
      extended: true,
    },
    { T: 4_100, Tq: 97, Hq: 2, Hkv: 1, D: 16, dtype: 'bf16', P: 32, budget: 320, mode: 'mean' },
    { T: 3_000, Tq: 100, Hq: 2, Hkv: 2, D: 16, dtype: 'f16', P: 16, budget: 256, target: 'gpu', appendInRun: false },
    { T: 2_500, Tq: 64, Hq: 3, Hkv: 1, D: 12, dtype: 'int8', P: 64, budget: 640, blockSize: 16 },
  ];
  for (const c of cases) {
    const name = `T${c.T}+${c.Tq} H${c.Hq}/${c.Hkv} D${c.D} ${c.dtype} P${c.P} budget ${c.budget} B${c.blockSize ?? 64} ${c.mode ?? 'quest'} ${c.blockScore ?? 'bound'} ${c.target ?? 'auto'}`;
    it(name, tier(c.extended), async () => {
      const r = await runCase(c);
      try {
        const { stats, ro } = r;
        const ctxPages = Math.floor(c.T / c.P);
        const budgetPages = Math.floor(c.budget / c.P);
        expect(stats.contextPages).toBe(ctxPages);
        expect(stats.blocks).toBe(Math.ceil(c.Tq / ro.blockSize));
        // Selection: per block and KV head, the sink plus the best pages by the float64 block
        // score (the query-box bound, or the max of the rows' own scores) from the same (f16)
        // summaries; any difference is a near-tie.
        const summ = r.cache.summariesHost();
        const mode = c.mode ?? 'quest';
        const summaries = mode === 'mean' ? summ.mean! : summ.minmax;
        const scores =
          c.blockScore === 'rows'
            ? prefillScoresReference(r.q, summaries, mode, ro)
            : questBlockScoresReference(r.q, summaries, mode, {
                T: c.Tq,
                Hq: c.Hq,
                Hkv: c.Hkv,
                D: c.D,
                blockSize: ro.blockSize,
                pages: ctxPages,
              });
        let qAbs = 0;
        for (const x of r.q) qAbs = Math.max(qAbs, Math.abs(x));
        const tol = 1e-5 * qAbs * c.D * 8;
        stats.selected.forEach((perHead, b) =>
          perHead.forEach((sel, h) => {
            expect(sel.length, `block ${b} head ${h}`).toBe(budgetPages);
            expect(sel[0]).toBe(0); // the sink
            const s = scores[b]![h]!;
            const inSel = new Set(sel);
            let worstIn = Infinity;
            let bestOut = -Infinity;
            for (let p = 1; p < ctxPages; p++) {
              if (inSel.has(p)) worstIn = Math.min(worstIn, s[p]!);
              else bestOut = Math.max(bestOut, s[p]!);
            }
            expect(worstIn, `block ${b} head ${h}: a better page was left out`).toBeGreaterThanOrEqual(bestOut - tol);
          }),
        );
        // Blocks differ in what they select (the selection is per block, not per chunk).
        expect(new Set(stats.selected.map((x) => Array.from(x[0]!).join(','))).size).toBeGreaterThan(1);
        const ref = sparsePrefillReference(r.q, r.k, r.v, stats.selected, ro);
        const co = compare(r.o, ref.o);
        const cl = compare(r.lse, ref.lse);
        expect(passes(co, TOLERANCE.f32), describeComparison(co)).toBe(true);
        expect(passes(cl, TOLERANCE.f32), describeComparison(cl)).toBe(true);
        // Bytes: every block's selection per head plus the chunk's pages it reaches.
        expect(stats.pageBytesRead).toBeGreaterThan(0);
        expect(stats.summaryBytesRead).toBe(stats.blocks * ctxPages * (c.mode === 'mean' ? 1 : 2) * c.Hkv * c.D * 2);
      } finally {
        r.cache.dispose();
      }
    });
  }

  // extended tier (the core tier holds each method and target against the float64 reference)
  for (const target of ['cpu', 'gpu'] as const) {
    it(`a budget that covers the context equals exact causal attention (${target})`, tier(true), async () => {
      const c: Case =
        target === 'cpu'
          ? { T: 900, Tq: 70, Hq: 4, Hkv: 2, D: 16, dtype: 'f16', P: 16, budget: 1024, target }
          : { T: 500, Tq: 40, Hq: 2, Hkv: 1, D: 16, dtype: 'f16', P: 16, budget: 1024, target, blockSize: 32 };
      const r = await runCase(c);
      try {
        expect(r.stats.selected.every((x) => x.every((s) => s.length === Math.floor(c.T / c.P)))).toBe(true);
        // Full causal attention in float64 (what exact streaming computes).
        const ref = streamAttentionReference(r.q, r.k, r.v, { Tq: c.Tq, Tk: c.T + c.Tq, Hq: c.Hq, Hkv: c.Hkv, D: c.D });
        for (const [got, want] of [
          [r.o, ref.o],
          [r.lse, ref.lse],
        ] as const) {
          const cmp = compare(got, want);
          expect(passes(cmp, TOLERANCE.f32), describeComparison(cmp)).toBe(true);
        }
        if (target === 'cpu') {
          // and exact streaming itself (the gpu-shaped stream of 280 rows is slow on a CPU adapter)
          const exact = await streamAttention(r.cache, r.seq, r.q, { Hq: c.Hq, Tq: c.Tq, target });
          expect(compare(r.o, exact.o).relRms).toBeLessThan(1e-5);
          expect(compare(r.lse, exact.lse).relRms).toBeLessThan(1e-5);
        }
      } finally {
        r.cache.dispose();
      }
    });
  }

  it('finds planted evidence: each block selects the page aligned with its queries', async () => {
    const dev = gpu.dev;
    const D = 32;
    const P = 32;
    const T = 8_192;
    const Tq = 128;
    const cache = createKvCache(dev, { Hkv: 1, D, pageSize: P, gpuBudgetBytes: 8 << 20 });
    const plan = await planSparsePrefill(cache, { Hq: 1, Tq, budgetTokens: 4 * P, blockSize: 64 });
    try {
      const rng = new Rng(7);
      const seq = cache.addSequence();
      const k = rng.normals(T * D).map((x) => 0.3 * x);
      const dir = [0, 1].map(() => rng.normals(D).map((x) => (x > 0 ? 1 : -1)));
      const at = [1234, 6000];
      for (let b = 0; b < 2; b++) for (let d = 0; d < D; d++) k[at[b]! * D + d] = 2 * dir[b]![d]!;
      cache.append(seq, k, rng.normals(T * D));
      const q = new Float32Array(Tq * D);
      for (let t = 0; t < Tq; t++)
        for (let d = 0; d < D; d++) q[t * D + d] = dir[t < 64 ? 0 : 1]![d]! + 0.1 * rng.normal();
      const qb = dev.upload(q);
      const ob = dev.createBuffer({
        size: Tq * D * 4,
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      });
      const stats = await plan.run(
        seq,
        { buffer: qb, shape: [Tq, 1, D], dtype: 'f32' },
        { o: { buffer: ob, shape: [Tq, 1, D], dtype: 'f32' } },
        { k: rng.normals(Tq * D), v: rng.normals(Tq * D) },
      );
      expect(Array.from(stats.selected[0]![0]!)).toContain(Math.floor(at[0]! / P));
      expect(Array.from(stats.selected[1]![0]!)).toContain(Math.floor(at[1]! / P));
      for (const b of [qb, ob]) dev.destroyBuffer(b);
    } finally {
      plan.dispose();
      cache.dispose();
    }
  });

  it('rejects bad input before appending anything', async () => {
    const cache = createKvCache(gpu.dev, { Hkv: 2, D: 8, pageSize: 16, gpuBudgetBytes: 1 << 20, meanSummaries: false });
    const bad = async (p: Promise<unknown>, code: string, argument: string) => {
      const e = await p.then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(e).toBeInstanceOf(TesseraError);
      expect((e as TesseraError).code).toBe(code);
      expect((e as TesseraError).argument?.startsWith(argument), (e as TesseraError).argument).toBe(true);
    };
    try {
      await bad(planSparsePrefill(cache, { Hq: 3, Tq: 16 }), 'E_SHAPE', 'Hq');
      await bad(planSparsePrefill(cache, { Hq: 2, Tq: 16, blockSize: 24 }), 'E_ARG', 'blockSize');
      await bad(planSparsePrefill(cache, { Hq: 2, Tq: 16, mode: 'mean' }), 'E_UNSUPPORTED', 'mode');
      await bad(planSparsePrefill(cache, { Hq: 2, Tq: 16, blockScore: 'box' as never }), 'E_ARG', 'blockScore');
      await bad(planSparsePrefill(cache, { Hq: 2, Tq: 16, budgetTokens: 1 << 20 }), 'E_LIMIT', 'budgetTokens');
      const plan = await planSparsePrefill(cache, { Hq: 2, Tq: 16, budgetTokens: 64 });
      const seq = cache.addSequence();
      cache.append(seq, new Float32Array(100 * 16), new Float32Array(100 * 16));
      const qb = gpu.tensor(new Float32Array(16 * 2 * 8), [16, 2, 8]);
      const ob = gpu.tensor(new Float32Array(16 * 2 * 8), [16, 2, 8]);
      await bad(
        plan.run(
          seq,
          gpu.tensor(new Float32Array(8 * 2 * 8), [8, 2, 8]),
          { o: ob },
          { k: new Float32Array(256), v: new Float32Array(256) },
        ),
        'E_SHAPE',
        'q',
      );
      await bad(plan.run(seq, qb, { o: ob }, { k: new Float32Array(255), v: new Float32Array(256) }), 'E_SHAPE', 'k');
      await bad(plan.run(seq, qb, { o: ob }, { k: new Float32Array(256) }), 'E_ARG', 'v');
      expect(cache.length(seq)).toBe(100);
      plan.dispose();
      await bad(plan.run(seq, qb, { o: ob }), 'E_STATE', 'plan');
    } finally {
      cache.dispose();
    }
  });
});

describe('sparse prefill within a loop cap (plan or cache option loopLimit 4096, on any adapter)', () => {
  it('a block whose page score would loop past the cap is refused (E_LIMIT naming blockSize)', async () => {
    const cache = createKvCache(gpu.dev, { Hkv: 1, D: 32, pageSize: 16, gpuBudgetBytes: 1 << 20 });
    try {
      const refused = async (o: { blockSize: number; blockScore: 'bound' | 'rows' }) => {
        const e = await planSparsePrefill(cache, { Hq: 2, Tq: 512, loopLimit: 4096, ...o }).then(
          (p) => p.dispose(),
          (x: unknown) => x,
        );
        expect(e).toBeInstanceOf(TesseraError);
        expect((e as TesseraError).code).toBe('E_LIMIT');
        expect((e as TesseraError).argument).toBe('blockSize');
      };
      // Per-row scoring loops over 256 rows x 2 heads x (D/4 + 1) per page: refused.
      await refused({ blockSize: 256, blockScore: 'rows' });
      // The bound loops over the rows once (for the box) and over D / 4 per page: 256 fits ...
      (await planSparsePrefill(cache, { Hq: 2, Tq: 512, blockSize: 256, loopLimit: 4096 })).dispose();
      // ... 1024 rows x 3 do not.
      await refused({ blockSize: 1024, blockScore: 'bound' });
    } finally {
      cache.dispose();
    }
  });

  it('stays exact over the selected pages when a part may cover few pages (the cache option)', async () => {
    const dev = gpu.dev;
    const [T, Tq, Hq, D, P] = [3_000, 80, 2, 32, 64];
    const cache = createKvCache(dev, {
      Hkv: 1,
      D,
      pageSize: P,
      dtype: 'f32',
      gpuBudgetBytes: 4 << 20,
      loopLimit: 4096,
    });
    const plan = await planSparsePrefill(cache, { Hq, Tq, budgetTokens: 640, pagesPerPart: 64 });
    try {
      const rng = new Rng(11);
      const seq = cache.addSequence();
      cache.append(seq, rng.normals(T * D), rng.normals(T * D));
      const q = rng.normals(Tq * Hq * D);
      const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
      const qb = dev.upload(Float32Array.from(q));
      const ob = dev.createBuffer({ size: Tq * Hq * D * 4, usage });
      dev.device.queue.writeBuffer(ob, 0, new Float32Array(Tq * Hq * D).fill(NaN));
      const stats = await plan.run(
        seq,
        { buffer: qb, shape: [Tq, Hq, D], dtype: 'f32' },
        { o: { buffer: ob, shape: [Tq, Hq, D], dtype: 'f32' } },
        { k: rng.normals(Tq * D), v: rng.normals(Tq * D) },
      );
      const o = Float64Array.from(new Float32Array(await dev.readback(ob)));
      const { k, v } = cache.read(seq, 0, T + Tq);
      const ref = sparsePrefillReference(q, k, v, stats.selected, {
        Tq,
        Tk: T + Tq,
        Hq,
        Hkv: 1,
        D,
        pageSize: P,
        blockSize: 64,
      });
      const cmp = compare(o, ref.o);
      expect(passes(cmp, TOLERANCE.f32), describeComparison(cmp)).toBe(true);
      for (const b of [qb, ob]) dev.destroyBuffer(b);
    } finally {
      plan.dispose();
      cache.dispose();
    }
  });
});

describe('demo prefill (small)', { tags: ['extended'] }, () => {
  it('bound and rows gates: the rows gate recalls itself, the bound gate holds most of its pages and the planted evidence, both near exact', async () => {
    const { runPrefill } = await import('../src/demo/prefill.js');
    // Someone else's 16 MiB on the shared device: the run's peak counts its own buffers only.
    const other = gpu.dev.createBuffer({ size: 16 << 20, usage: GPUBufferUsageFlags.STORAGE });
    const r = await runPrefill(gpu.dev, {
      context: 16_384,
      chunk: 128,
      budgetTokens: 512,
      gpuBudgetMiB: 16,
      exact: 'full',
      modes: ['quest'],
      blockScores: ['bound', 'rows'],
      quiet: true,
    });
    expect(r.gates.map((g) => `${g.mode}/${g.blockScore}`)).toEqual(['quest/bound', 'quest/rows']);
    const [bound, rows] = r.gates;
    expect(rows!.recallVsRows).toBe(1);
    expect(bound!.recallVsRows).toBeGreaterThan(0.3);
    expect(bound!.recallVsRows).toBeLessThanOrEqual(1);
    for (const g of r.gates) {
      expect(g.selectedRecall, JSON.stringify(g)).toBe(1); // every heavy page (the planted evidence) selected
      expect(g.relRmsVsExact).toBeLessThan(0.05);
      expect(g.kvBytesReadFraction).toBeGreaterThan(0);
    }
    expect(r.blockSize).toBe(64);
    expect(r.gpuBytesPeak).toBeLessThanOrEqual(r.gpuBudgetBytes);
    expect(r.gpuBytesPeak).toBeGreaterThan(0);
    gpu.dev.destroyBuffer(other);
  });
});
