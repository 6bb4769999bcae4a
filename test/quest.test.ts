import { describe, expect, it } from 'vitest';
import { useGpu } from './helpers/gpu.js';
import { TesseraError } from '../src/errors.js';
import { Rng, TOLERANCE, compare, describeComparison, passes } from '../src/testing.js';
import { createKvCache, type KvCache } from '../src/kv/cache.js';
import { planQuestDecode, type QuestDecodeOptions } from '../src/stream/quest.js';
import { streamAttention } from '../src/stream/exact.js';
import { questScoresReference, questSelectReference } from '../kernels/quest/reference.js';
import { streamAttentionReference } from '../kernels/paged/reference.js';
import { planQuestScore, questScoreLoopIterations } from '../kernels/quest/score.js';
import { planQuestBlock } from '../kernels/quest/block.js';
import { questBlockScoresReference } from '../kernels/quest/reference.js';
import { f16BitsToF32, f32ToF16Bits } from '../src/tensor.js';
import { mergePartsPerSegment } from '../kernels/merge/merge.js';
import { tier } from './helpers/tier.js';

const gpu = useGpu();

interface Setup {
  cache: KvCache;
  seq: number;
  q: Float64Array;
  k: Float32Array;
  v: Float32Array;
}

function setup(
  T: number,
  Hq: number,
  Hkv: number,
  D: number,
  pageSize: number,
  seed: number,
  meanSummaries = true,
  loopLimit?: number,
): Setup {
  const cache = createKvCache(gpu.dev, {
    Hkv,
    D,
    dtype: 'f16',
    pageSize,
    gpuBudgetBytes: 4 << 20,
    meanSummaries,
    loopLimit,
  });
  const seq = cache.addSequence();
  const rng = new Rng(seed);
  // Append in uneven chunks so summaries are refreshed on partial pages.
  for (let t = 0; t < T;) {
    const n = Math.min(T - t, 1 + rng.int(0, 700));
    cache.append(seq, rng.normals(n * Hkv * D), rng.normals(n * Hkv * D));
    t += n;
  }
  const { k, v } = cache.read(seq, 0, T);
  return { cache, seq, q: rng.normals(Hq * D), k, v };
}

async function decode(s: Setup, opts: QuestDecodeOptions) {
  const { cache } = s;
  const { Hq } = opts;
  const plan = await planQuestDecode(cache, opts);
  const dev = cache.ctx;
  const qb = dev.upload(Float32Array.from(s.q));
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  const ob = dev.createBuffer({ size: Hq * cache.Dv * 4, usage });
  const lb = dev.createBuffer({ size: Hq * 4, usage });
  dev.device.queue.writeBuffer(ob, 0, new Float32Array(Hq * cache.Dv).fill(NaN));
  try {
    const stats = await plan.run(
      s.seq,
      { buffer: qb, shape: [1, Hq, cache.D], dtype: 'f32' },
      { o: { buffer: ob, shape: [1, Hq, cache.Dv], dtype: 'f32' }, lse: { buffer: lb, shape: [1, Hq], dtype: 'f32' } },
    );
    const o = Float64Array.from(new Float32Array(await dev.readback(ob)));
    const lse = Float64Array.from(new Float32Array(await dev.readback(lb)));
    return { stats, o, lse };
  } finally {
    plan.dispose();
    for (const b of [qb, ob, lb]) dev.destroyBuffer(b);
  }
}

/**
 * Checks a selection against the float64 reference: every difference must be a near-tie, i.e. the
 * page's reference score within `tol` of the k-th selected reference score (f16 summaries are
 * rounded outwards by at most one ulp: |error| <= 2^-10 * sum_d |q_d| * max|k|).
 */
function checkSelection(
  got: Int32Array[],
  ref: Int32Array[],
  scores: Float64Array,
  pages: number,
  tol: number,
): number {
  let ties = 0;
  got.forEach((g, h) => {
    const r = ref[h]!;
    expect(g.length).toBe(r.length);
    const gs = new Set(g);
    const rs = new Set(r);
    let kth = Infinity;
    for (const p of r) if (p !== 0 && p !== pages - 1) kth = Math.min(kth, scores[h * pages + p]!);
    for (const p of [...g].filter((x) => !rs.has(x)).concat([...r].filter((x) => !gs.has(x)))) {
      expect(
        Math.abs(scores[h * pages + p]! - kth),
        `page ${p} of head ${h} differs and is not a near-tie`,
      ).toBeLessThanOrEqual(tol);
      ties++;
    }
  });
  return ties;
}

function tolerance(q: Float64Array, k: Float32Array, Hq: number, D: number): number {
  let qmax = 0;
  for (let h = 0; h < Hq; h++) {
    let s = 0;
    for (let d = 0; d < D; d++) s += Math.abs(q[h * D + d]!);
    qmax = Math.max(qmax, s);
  }
  let kmax = 0;
  for (const x of k) kmax = Math.max(kmax, Math.abs(x));
  return 2 * 2 ** -10 * qmax * kmax;
}

describe('quest selection vs float64', () => {
  const cases = [
    { T: 3000, Hq: 4, Hkv: 2, D: 32, P: 16, budget: 256, mode: 'quest' as const, groupReduce: 'max' as const },
    { T: 5001, Hq: 2, Hkv: 1, D: 16, P: 64, budget: 640, mode: 'quest' as const, groupReduce: 'max' as const },
    { T: 4000, Hq: 6, Hkv: 3, D: 16, P: 32, budget: 320, mode: 'quest' as const, groupReduce: 'sum' as const },
    { T: 4100, Hq: 4, Hkv: 1, D: 32, P: 16, budget: 512, mode: 'mean' as const, groupReduce: 'max' as const },
    // D not a multiple of 8: the scalar summary loads.
    { T: 2000, Hq: 2, Hkv: 2, D: 12, P: 16, budget: 160, mode: 'quest' as const, groupReduce: 'max' as const },
    // extended tier (npm run test:extended): mean with sum, a second dim of the scalar loads
    {
      T: 1500,
      Hq: 2,
      Hkv: 1,
      D: 20,
      P: 16,
      budget: 160,
      mode: 'mean' as const,
      groupReduce: 'sum' as const,
      extended: true,
    },
  ];
  for (const c of cases) {
    for (const selector of ['gpu', 'host'] as const) {
      const name = `T${c.T}-H${c.Hq}-Hkv${c.Hkv}-D${c.D}-P${c.P}-budget${c.budget}-${c.mode}-${c.groupReduce}-${selector}`;
      it(name, tier('extended' in c), async () => {
        const s = setup(c.T, c.Hq, c.Hkv, c.D, c.P, c.T);
        try {
          const { stats, o, lse } = await decode(s, {
            Hq: c.Hq,
            budgetTokens: c.budget,
            mode: c.mode,
            groupReduce: c.groupReduce,
            selector,
          });
          const pages = Math.ceil(c.T / c.P);
          const budgetPages = Math.floor(c.budget / c.P);
          const scores = questScoresReference(s.q, s.k, {
            Hq: c.Hq,
            Hkv: c.Hkv,
            D: c.D,
            pageSize: c.P,
            T: c.T,
            budgetPages,
            mode: c.mode,
            groupReduce: c.groupReduce,
          });
          const ref = questSelectReference(scores, c.Hkv, pages, budgetPages, 1);
          for (const sel of stats.selected) {
            expect(sel[0]).toBe(0); // sink page
            expect(sel[sel.length - 1]).toBe(pages - 1); // newest page
            expect(sel.length).toBe(budgetPages);
          }
          const ties = checkSelection(stats.selected, ref, scores, pages, tolerance(s.q, s.k, c.Hq, c.D));
          expect(ties).toBeLessThanOrEqual(4);
          // The output is exact attention over the selected pages of each KV head.
          const group = c.Hq / c.Hkv;
          for (let h = 0; h < c.Hkv; h++) {
            const toks: number[] = [];
            for (const p of stats.selected[h]!)
              for (let t = p * c.P; t < Math.min(c.T, (p + 1) * c.P); t++) toks.push(t);
            const kk = new Float64Array(toks.length * c.D);
            const vv = new Float64Array(toks.length * c.D);
            toks.forEach((t, i) => {
              kk.set(s.k.subarray((t * c.Hkv + h) * c.D, (t * c.Hkv + h + 1) * c.D), i * c.D);
              vv.set(s.v.subarray((t * c.Hkv + h) * c.D, (t * c.Hkv + h + 1) * c.D), i * c.D);
            });
            const r = streamAttentionReference(s.q.subarray(h * group * c.D, (h + 1) * group * c.D), kk, vv, {
              Tq: 1,
              Tk: toks.length,
              Hq: group,
              Hkv: 1,
              D: c.D,
              causal: false,
            });
            const co = compare(o.subarray(h * group * c.D, (h + 1) * group * c.D), r.o);
            expect(passes(co, TOLERANCE.f32), describeComparison(co)).toBe(true);
            expect(compare(lse.subarray(h * group, (h + 1) * group), r.lse).maxAbs).toBeLessThan(1e-4);
          }
          // Bytes: summaries of every page plus the selected pages of each head.
          const perPage = c.mode === 'quest' ? c.Hkv * 2 * c.D * 2 : c.Hkv * c.D * 2;
          expect(stats.summaryBytesRead).toBe(pages * perPage);
          expect(stats.pageBytesRead).toBe(c.Hkv * budgetPages * 2 * c.P * c.D * 2);
        } finally {
          s.cache.dispose();
        }
      });
    }
  }

  it('many summary chunks, two interleaved sequences (page ids not contiguous)', async () => {
    const Hkv = 2;
    const Hq = 4;
    const D = 16;
    const P = 16;
    const cache = createKvCache(gpu.dev, {
      Hkv,
      D,
      dtype: 'f16',
      pageSize: P,
      gpuBudgetBytes: 4 << 20,
      summaryChunkBytes: 40 * Hkv * 2 * D * 2,
    });
    try {
      const a = cache.addSequence();
      const b = cache.addSequence();
      const rng = new Rng(77);
      for (let i = 0; i < 12; i++) {
        cache.append(a, rng.normals(100 * Hkv * D), rng.normals(100 * Hkv * D));
        cache.append(b, rng.normals(150 * Hkv * D), rng.normals(150 * Hkv * D));
      }
      expect(cache.minmaxGpu.length).toBe(5);
      const T = cache.length(b);
      const { k, v } = cache.read(b, 0, T);
      const q = rng.normals(Hq * D);
      const { stats } = await decode({ cache, seq: b, q, k, v }, { Hq, budgetTokens: 320 });
      const pages = Math.ceil(T / P);
      const scores = questScoresReference(q, k, { Hq, Hkv, D, pageSize: P, T, budgetPages: 20 });
      const ref = questSelectReference(scores, Hkv, pages, 20, 1);
      const ties = checkSelection(stats.selected, ref, scores, pages, tolerance(q, k, Hq, D));
      expect(ties).toBeLessThanOrEqual(4);
    } finally {
      cache.dispose();
    }
  });

  it('a budget that covers the whole sequence equals exact streaming attention', async () => {
    const s = setup(700, 4, 2, 16, 16, 9);
    try {
      const { stats, o, lse } = await decode(s, { Hq: 4, budgetTokens: 1024 });
      expect(stats.selected[0]!.length).toBe(44);
      const exact = await streamAttention(s.cache, s.seq, s.q, { Hq: 4 });
      expect(compare(o, exact.o).maxAbs).toBeLessThan(1e-6);
      expect(compare(lse, exact.lse).maxAbs).toBeLessThan(1e-5);
    } finally {
      s.cache.dispose();
    }
  });

  it('finds a planted needle', async () => {
    const T = 20_000;
    const D = 32;
    const cache = createKvCache(gpu.dev, { Hkv: 1, D, dtype: 'f16', pageSize: 64, gpuBudgetBytes: 4 << 20 });
    try {
      const seq = cache.addSequence();
      const rng = new Rng(42);
      const q = Float64Array.from({ length: D }, () => (rng.next() < 0.5 ? -1 : 1));
      const k = rng.normals(T * D, 0.5);
      const v = rng.normals(T * D, 0.5);
      const at = 12_345;
      for (let d = 0; d < D; d++) {
        k[at * D + d] = 3 * q[d]!;
        v[at * D + d] = 4;
      }
      cache.append(seq, k, v);
      const { stats, o } = await decode(
        { cache, seq, q, k: new Float32Array(k), v: new Float32Array(v) },
        { Hq: 1, budgetTokens: 512 },
      );
      expect(stats.selected[0]).toContain(Math.floor(at / 64));
      expect(Math.min(...o)).toBeGreaterThan(3.5);
    } finally {
      cache.dispose();
    }
  });

  it('rejects bad input', async () => {
    const s = setup(300, 2, 2, 8, 16, 1, false);
    try {
      const bad = async (p: Promise<unknown>, code: string, argument: string) => {
        const e = await p.then(
          () => undefined,
          (x: unknown) => x,
        );
        expect(e).toBeInstanceOf(TesseraError);
        expect((e as TesseraError).code).toBe(code);
        expect((e as TesseraError).argument).toBe(argument);
      };
      await bad(planQuestDecode(s.cache, { Hq: 3 }), 'E_SHAPE', 'Hq');
      await bad(planQuestDecode(s.cache, { Hq: 2, budgetTokens: 8 }), 'E_ARG', 'budgetTokens');
      await bad(planQuestDecode(s.cache, { Hq: 2, mode: 'mean' }), 'E_UNSUPPORTED', 'mode');
      await bad(planQuestDecode(s.cache, { Hq: 2, budgetTokens: 1 << 30 }), 'E_LIMIT', 'budgetTokens');
      await bad(
        decode(s, { Hq: 2, budgetTokens: 64 }).then(() =>
          planQuestDecode(s.cache, { Hq: 2, selector: 'cpu' as 'gpu' }),
        ),
        'E_ARG',
        'selector',
      );
    } finally {
      s.cache.dispose();
    }
  });
});

describe('quest within a loop cap (the cache and plan option loopLimit 4096, on any adapter)', () => {
  for (const where of ['cache', 'plan'] as const)
    it(`a whole-sequence budget with more parts than one merge dispatch takes equals float64 attention (the ${where} option)`, async () => {
      // 768 pages x 2 KV heads = 1,536 one-page parts (+ groups): the merge runs in two segments.
      expect(mergePartsPerSegment(4096, 16)).toBeLessThan(1536);
      const s = setup(12_200, 4, 2, 16, 16, 11, true, where === 'cache' ? 4096 : undefined);
      try {
        const { stats, o, lse } = await decode(s, {
          Hq: 4,
          budgetTokens: 12_288,
          loopLimit: where === 'plan' ? 4096 : undefined,
        });
        expect(stats.selected[0]!.length).toBe(Math.ceil(12_200 / 16));
        const ref = streamAttentionReference(s.q, s.k, s.v, { Tq: 1, Tk: 12_200, Hq: 4, Hkv: 2, D: 16, qPos0: 12_199 });
        const co = compare(o, ref.o);
        const cl = compare(lse, ref.lse);
        expect(passes(co, TOLERANCE.f32), describeComparison(co)).toBe(true);
        expect(passes(cl, TOLERANCE.f32), describeComparison(cl)).toBe(true);
      } finally {
        s.cache.dispose();
      }
    });

  it('scoring refuses a group whose heads x channels pass the cap, naming Hq', async () => {
    expect(questScoreLoopIterations(64, 256)).toBeGreaterThan(0.9 * 4096);
    await expect(planQuestScore(gpu.dev, { Hq: 128, Hkv: 2, D: 256, loopLimit: 4096 })).rejects.toMatchObject({
      code: 'E_LIMIT',
      argument: 'Hq',
    });
    const ok = await planQuestScore(gpu.dev, { Hq: 64, Hkv: 2, D: 256, loopLimit: 4096 });
    ok.dispose();
  });
});

describe('quest block bound (kernels/quest/block) vs float64', () => {
  /** Random f16 summaries: min <= max per channel (quest) or a mean (mean). */
  function summaries(pages: number, Hkv: number, D: number, mode: 'quest' | 'mean', rng: Rng): Uint16Array {
    const per = mode === 'quest' ? 2 * D : D;
    const out = new Uint16Array(pages * Hkv * per);
    for (let p = 0; p < pages; p++) {
      for (let h = 0; h < Hkv; h++) {
        const base = (p * Hkv + h) * per;
        for (let d = 0; d < D; d++) {
          const a = rng.normal();
          const b = a + Math.abs(rng.normal());
          out[base + d] = f32ToF16Bits(a);
          if (mode === 'quest') out[base + D + d] = f32ToF16Bits(b);
        }
      }
    }
    return out;
  }

  const cases = [
    { Hq: 2, Hkv: 1, D: 16, B: 16, T: 40, pages: 77, mode: 'quest' as const },
    { Hq: 4, Hkv: 2, D: 32, B: 32, T: 64, pages: 130, mode: 'mean' as const },
    { Hq: 3, Hkv: 1, D: 12, B: 16, T: 33, pages: 50, mode: 'quest' as const },
  ];
  for (const c of cases) {
    it(`Hq ${c.Hq}/${c.Hkv} D ${c.D} B ${c.B} T ${c.T} pages ${c.pages} ${c.mode}: equal to the reference, an upper bound of every row's Quest score, forced -inf; two summary chunks (box reused)`, async () => {
      const dev = gpu.dev;
      const rng = new Rng(c.T * 7 + c.D);
      const { Hq, Hkv, D, B, T, pages, mode } = c;
      const blocks = Math.ceil(T / B);
      const q = Float32Array.from(rng.normals(T * Hq * D));
      const qPad = new Float32Array(blocks * B * Hq * D);
      qPad.set(q);
      for (let t = T; t < blocks * B; t++) qPad.set(q.subarray((T - 1) * Hq * D, T * Hq * D), t * Hq * D); // copies of the last row
      const summ = summaries(pages, Hkv, D, mode, rng);
      const per = (mode === 'quest' ? 2 : 1) * Hkv * D;
      // Two summary chunks: pages [0, split) and [split, pages); the list holds page ids in order.
      const split = Math.floor(pages / 2);
      const s0 = dev.upload(new Uint32Array(summ.slice(0, split * per).buffer));
      const s1 = dev.upload(new Uint32Array(summ.slice(split * per).buffer));
      const list = dev.upload(Uint32Array.from({ length: pages }, (_, i) => i));
      const scores = gpu.nanTensor([blocks * Hkv, pages]);
      const plan = await planQuestBlock(dev, { Hq, Hkv, D, blockSize: B, maxBlocks: blocks, mode });
      try {
        const enc = dev.device.createCommandEncoder();
        plan.run(enc, {
          q: gpu.tensor(qPad, [blocks * B, Hq, D]),
          summaries: s0,
          list,
          scores,
          calls: [{ chunkFirst: 0, chunkPages: split, forcedLo: 1, forcedHi: pages - 2 }],
        });
        plan.run(enc, {
          summaries: s1,
          list,
          scores,
          calls: [{ first: split, chunkFirst: split, chunkPages: pages - split, forcedLo: 1, forcedHi: pages - 2 }],
        });
        dev.device.queue.submit([enc.finish()]);
        const got = await gpu.read(scores);
        const ref = questBlockScoresReference(q, summ, mode, { T, Hq, Hkv, D, blockSize: B, pages });
        const group = Hq / Hkv;
        let checked = 0;
        for (let b = 0; b < blocks; b++) {
          for (let h = 0; h < Hkv; h++) {
            for (let p = 0; p < pages; p++) {
              const x = got[(b * Hkv + h) * pages + p]!;
              if (p < 1 || p >= pages - 2) {
                expect(x, `forced page ${p}`).toBe(-Infinity);
                continue;
              }
              const want = ref[b]![h]![p]!;
              expect(Math.abs(x - want), `block ${b} head ${h} page ${p}: ${x} vs ${want}`).toBeLessThanOrEqual(
                1e-5 * (1 + Math.abs(want)) * D,
              );
              // The bound: at least every row's (and query head's) own Quest score of the page.
              for (let t = b * B; t < Math.min(T, (b + 1) * B); t++) {
                for (let g = 0; g < group; g++) {
                  let s = 0;
                  for (let d = 0; d < D; d++) {
                    const qq = q[(t * Hq + h * group + g) * D + d]!;
                    const m = f16BitsToF32(summ[(p * Hkv + h) * (per / Hkv) + d]!);
                    const M = mode === 'quest' ? f16BitsToF32(summ[(p * Hkv + h) * (per / Hkv) + D + d]!) : m;
                    s += Math.max(qq * m, qq * M);
                  }
                  expect(want).toBeGreaterThanOrEqual(s - 1e-9);
                }
              }
              checked++;
            }
          }
        }
        expect(checked).toBe(blocks * Hkv * (pages - 3));
      } finally {
        plan.dispose();
        for (const x of [s0, s1, list, scores.buffer]) dev.destroyBuffer(x);
      }
    });
  }

  it("a NaN query makes its block's scores NaN (the other blocks stay finite); bad input is typed", async () => {
    const dev = gpu.dev;
    const [Hq, Hkv, D, B, pages] = [1, 1, 8, 16, 20];
    const rng = new Rng(5);
    const q = Float32Array.from(rng.normals(2 * B * D));
    q[B * D + 3] = NaN; // block 1
    const summ = summaries(pages, Hkv, D, 'quest', rng);
    const s0 = dev.upload(new Uint32Array(summ.buffer));
    const list = dev.upload(Uint32Array.from({ length: pages }, (_, i) => i));
    const scores = gpu.nanTensor([2, pages]);
    const plan = await planQuestBlock(dev, { Hq, Hkv, D, blockSize: B, maxBlocks: 2 });
    try {
      const call = { chunkFirst: 0, chunkPages: pages, forcedLo: 0, forcedHi: pages };
      const enc = dev.device.createCommandEncoder();
      plan.run(enc, { q: gpu.tensor(q, [2 * B, Hq, D]), summaries: s0, list, scores, calls: [call] });
      dev.device.queue.submit([enc.finish()]);
      const got = await gpu.read(scores);
      expect(got.subarray(0, pages).every((x) => Number.isFinite(x))).toBe(true);
      expect(got.subarray(pages).every((x) => Number.isNaN(x))).toBe(true);
      const enc2 = dev.device.createCommandEncoder();
      expect(() =>
        plan.run(enc2, {
          q: gpu.tensor(q.subarray(0, 24 * D), [24, Hq, D]),
          summaries: s0,
          list,
          scores,
          calls: [call],
        }),
      ).toThrow(expect.objectContaining({ code: 'E_SHAPE', argument: 'q' }));
      expect(() =>
        plan.run(enc2, {
          q: gpu.tensor(new Float32Array(3 * B * D), [3 * B, Hq, D]),
          summaries: s0,
          list,
          scores: gpu.nanTensor([3, pages]),
          calls: [call],
        }),
      ).toThrow(expect.objectContaining({ code: 'E_SHAPE', argument: 'q' }));
      await expect(planQuestBlock(dev, { Hq: 3, Hkv: 2, D, blockSize: B, maxBlocks: 1 })).rejects.toMatchObject({
        code: 'E_SHAPE',
        argument: 'Hq',
      });
    } finally {
      plan.dispose();
      for (const x of [s0, list, scores.buffer]) dev.destroyBuffer(x);
    }
  });
});
