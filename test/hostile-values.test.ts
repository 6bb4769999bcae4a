/**
 * Issue 12, classes 7, 10 and 11: hostile values that WebGPU or the shaders would take badly.
 * - 7: buffer conflicts WebGPU rejects only at submit (an output the same buffer as an input,
 *   overlapping outputs, views of one buffer read and written in one dispatch, a mapped buffer)
 *   are `E_BUFFER` naming the argument from `plan.run` and the convenience calls, before anything
 *   is encoded; no uncaptured GPU error.
 * - 10: numbers valid in JavaScript that do not fit the shaders' f32 / u32 parameters are `E_ARG`
 *   naming the user's option at plan time, and a rejected plan holds no GPU memory.
 * - 11: the NaN policy through `plan.run` (a NaN gate propagates) and host data that is not numbers
 *   (a string as K/V) is rejected.
 */
import { describe, expect, it } from 'vitest';
import { attention, planAttention, planDecode } from '../kernels/dense/index.js';
import { planSlidingWindow } from '../kernels/sliding_window/index.js';
import { planMoba } from '../kernels/moba/index.js';
import { planNsa } from '../kernels/nsa/index.js';
import { planBlockSparse } from '../kernels/block_sparse/index.js';
import { planDsa } from '../kernels/dsa/index.js';
import { planMerge } from '../kernels/merge/index.js';
import { planTopK } from '../kernels/topk/index.js';
import { planPaged } from '../kernels/paged/index.js';
import { planGla, planSimpleGla, planLinearAttn } from '../kernels/linear/index.js';
import { planGatedDeltaRule } from '../kernels/delta/index.js';
import { createKvCache } from '../src/kv/cache.js';
import { planQuestDecode } from '../src/stream/quest.js';
import { planStreamAttention, streamAttention } from '../src/stream/exact.js';
import { TesseraError } from '../src/errors.js';
import { GPUBufferUsageFlags } from '../src/tensor.js';
import { useGpu } from './helpers/gpu.js';

const gpu = useGpu();

async function rejection(p: Promise<unknown> | (() => unknown)): Promise<TesseraError> {
  let err: unknown = null;
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    err = e;
  }
  expect(err, 'rejected with a TesseraError').toBeInstanceOf(TesseraError);
  return err as TesseraError;
}

async function noUncaptured(before: number): Promise<void> {
  await gpu.dev.device.queue.onSubmittedWorkDone();
  await new Promise((r) => setTimeout(r, 20));
  expect(gpu.uncaptured.slice(before), 'uncaptured GPU errors').toEqual([]);
}

describe('class 7: buffer conflicts are E_BUFFER before encoding', () => {
  const T = 5,
    Hq = 2,
    Hkv = 1,
    D = 8;
  const vals = (n: number) => Float64Array.from({ length: n }, (_, i) => Math.sin(i) * 0.5);

  /** Runs a dense plan with `t`; expects E_BUFFER naming `arg`; the encoder still submits cleanly. */
  async function expectRunConflict(t: Record<string, unknown>, arg: string, match: RegExp): Promise<void> {
    const before = gpu.uncaptured.length;
    const plan = await planAttention(gpu.dev, { Tq: T, Hq, Hkv, D });
    try {
      const enc = gpu.dev.device.createCommandEncoder();
      const err = await rejection(() => plan.run(enc, t as never));
      expect(err.code).toBe('E_BUFFER');
      expect(err.argument).toBe(arg);
      expect(err.message).toMatch(match);
      gpu.dev.device.queue.submit([enc.finish()]); // nothing was encoded: a clean submit
    } finally {
      plan.dispose();
    }
    await noUncaptured(before);
  }

  it('o is the same buffer as q', async () => {
    const q = gpu.tensor(vals(T * Hq * D), [T, Hq, D]);
    await expectRunConflict(
      { q, k: gpu.tensor(vals(T * D), [T, Hkv, D]), v: gpu.tensor(vals(T * D), [T, Hkv, D]), o: q },
      'o.buffer',
      /same GPU buffer as the input q\.buffer/,
    );
  });

  it('o and k are disjoint views of one buffer (read and read-write in one dispatch)', async () => {
    const big = gpu.tensor(vals(T * Hq * D + T * D), [T * Hq * D + T * D]);
    const o = { buffer: big.buffer, shape: [T, Hq, D], dtype: 'f32' as const };
    const k = { buffer: big.buffer, offset: T * Hq * D * 4, shape: [T, Hkv, D], dtype: 'f32' as const };
    await expectRunConflict(
      { q: gpu.tensor(vals(T * Hq * D), [T, Hq, D]), k, v: gpu.tensor(vals(T * D), [T, Hkv, D]), o },
      'o.buffer',
      /k\.buffer/,
    );
  });

  it('o and lse overlap in one buffer', async () => {
    const big = gpu.nanTensor([T * Hq * D + 16]);
    const o = { buffer: big.buffer, shape: [T, Hq, D], dtype: 'f32' as const };
    const lse = { buffer: big.buffer, offset: 256, shape: [T, Hq], dtype: 'f32' as const }; // o is bytes [0, 320)
    const x = {
      q: gpu.tensor(vals(T * Hq * D), [T, Hq, D]),
      k: gpu.tensor(vals(T * D), [T, Hkv, D]),
      v: gpu.tensor(vals(T * D), [T, Hkv, D]),
    };
    await expectRunConflict({ ...x, o, lse }, 'lse.buffer', /overlaps o\.buffer/);
  });

  it('a mapped buffer', async () => {
    const mapped = gpu.dev.createBuffer({
      size: T * Hq * D * 4,
      usage: GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_SRC,
      mappedAtCreation: true,
      label: 'mapped',
    });
    try {
      const x = {
        k: gpu.tensor(vals(T * D), [T, Hkv, D]),
        v: gpu.tensor(vals(T * D), [T, Hkv, D]),
        o: gpu.nanTensor([T, Hq, D]),
      };
      await expectRunConflict({ ...x, q: { buffer: mapped, shape: [T, Hq, D], dtype: 'f32' } }, 'q.buffer', /mapped/);
    } finally {
      gpu.dev.destroyBuffer(mapped);
    }
  });

  it('o and lse in disjoint ranges of one buffer are allowed and give the same result', async () => {
    const x = {
      q: gpu.tensor(vals(T * Hq * D), [T, Hq, D]),
      k: gpu.tensor(vals(T * D), [T, Hkv, D]),
      v: gpu.tensor(vals(T * D), [T, Hkv, D]),
    };
    const o1 = gpu.nanTensor([T, Hq, D]);
    const l1 = gpu.nanTensor([T, Hq]);
    await attention(gpu.dev, { ...x, o: o1, lse: l1 });
    const big = gpu.nanTensor([128 + T * Hq]);
    const o2 = { buffer: big.buffer, shape: [T, Hq, D], dtype: 'f32' as const }; // bytes [0, 320)
    const l2 = { buffer: big.buffer, offset: 512, shape: [T, Hq], dtype: 'f32' as const };
    await attention(gpu.dev, { ...x, o: o2, lse: l2 });
    expect(Array.from(await gpu.read(o2))).toEqual(Array.from(await gpu.read(o1)));
    expect(Array.from(await gpu.read(l2))).toEqual(Array.from(await gpu.read(l1)));
  });

  it('convenience calls reject o = q with E_BUFFER and write nothing', async () => {
    const before = gpu.uncaptured.length;
    const qv = vals(T * Hq * D);
    const q = gpu.tensor(qv, [T, Hq, D]);
    const err = await rejection(
      attention(gpu.dev, { q, k: gpu.tensor(vals(T * D), [T, Hkv, D]), v: gpu.tensor(vals(T * D), [T, Hkv, D]), o: q }),
    );
    expect([err.code, err.argument]).toEqual(['E_BUFFER', 'o.buffer']);
    expect(Array.from(await gpu.read(q))).toEqual(Array.from(qv, Math.fround));
    await noUncaptured(before);
  });

  it('every family: the same check (merge, top-k, paged, moba, linear)', async () => {
    const before = gpu.uncaptured.length;
    // merge: o the same buffer as oParts
    const merge = await planMerge(gpu.dev, { parts: 2, rows: 3, D: 4 });
    const oParts = gpu.tensor(vals(24), [2, 3, 4]);
    let err = await rejection(() =>
      merge.run(gpu.dev.device.createCommandEncoder(), {
        oParts,
        lseParts: gpu.tensor(vals(6), [2, 3]),
        o: { ...oParts, shape: [3, 4] },
        lse: gpu.nanTensor([3]),
      }),
    );
    expect([err.code, err.argument]).toEqual(['E_BUFFER', 'o.buffer']);
    merge.dispose();
    // top-k: values overlapping indices
    const topk = await planTopK(gpu.dev, { rows: 2, n: 10, k: 3 });
    const idx = gpu.tensor(new Int32Array(6), [2, 3], 'i32');
    err = await rejection(() =>
      topk.run(gpu.dev.device.createCommandEncoder(), {
        scores: gpu.tensor(vals(20), [2, 10]),
        indices: idx,
        values: { buffer: idx.buffer, shape: [2, 3], dtype: 'f32' },
      }),
    );
    expect([err.code, err.argument]).toEqual(['E_BUFFER', 'values.buffer']);
    topk.dispose();
    // paged: oParts the same buffer as q (paged writes oParts, not o)
    const paged = await planPaged(gpu.dev, { Hq: 2, Hkv: 1, D: 8, pageSize: 16, dtype: 'f32' });
    const pq = gpu.tensor(vals(16), [1, 2, 8]);
    err = await rejection(() =>
      paged.run(gpu.dev.device.createCommandEncoder(), {
        q: pq,
        pages: gpu.tensor(vals(2 * 16 * 8), [2 * 16 * 8]).buffer,
        list: gpu.tensor(new Uint32Array([0, 0, 16, 0xffffffff]), [4], 'u32').buffer,
        oParts: { ...pq },
        lseParts: gpu.nanTensor([1, 2]),
        calls: [{ qPos0: 15, listBase: 0, nEntries: 1, ePer: 1, partBase: 0, partCount: 1 }],
      } as never),
    );
    expect([err.code, err.argument]).toEqual(['E_BUFFER', 'oParts.buffer']);
    paged.dispose();
    // moba: selection overlapping o
    const moba = await planMoba(gpu.dev, { Tq: 8, Hq: 2, Hkv: 1, D: 16, blockSize: 4, topk: 2 });
    const mo = gpu.nanTensor([8, 2, 16]);
    err = await rejection(() =>
      moba.run(gpu.dev.device.createCommandEncoder(), {
        q: gpu.tensor(vals(256), [8, 2, 16]),
        k: gpu.tensor(vals(128), [8, 1, 16]),
        v: gpu.tensor(vals(128), [8, 1, 16]),
        o: mo,
        selection: { buffer: mo.buffer, shape: [8, 2, 2], dtype: 'i32' },
      }),
    );
    expect([err.code, err.argument]).toEqual(['E_BUFFER', 'selection.buffer']);
    moba.dispose();
    // linear: finalState the same tensor as initialState is in place by design (allowed); o = q is not
    const lin = await planLinearAttn(gpu.dev, { H: 1, K: 8, V: 8, T: 4 });
    const lq = gpu.tensor(vals(32), [4, 1, 8]);
    err = await rejection(() =>
      lin.run(gpu.dev.device.createCommandEncoder(), {
        q: lq,
        k: gpu.tensor(vals(32), [4, 1, 8]),
        v: gpu.tensor(vals(32), [4, 1, 8]),
        o: lq,
      }),
    );
    expect([err.code, err.argument]).toEqual(['E_BUFFER', 'o.buffer']);
    lin.dispose();
    await noUncaptured(before);
  });
});

describe("class 10: values that do not fit the shaders' f32 / u32 parameters", () => {
  const U32 = 2 ** 32;
  const base = { Tq: 8, Hq: 2, Hkv: 1, D: 16 };
  const rows: [string, () => Promise<{ dispose(): void }>, string][] = [
    ['dense scale 1e39', () => planAttention(gpu.dev, { ...base, scale: 1e39 }), 'scale'],
    ['dense scale -3e38', () => planAttention(gpu.dev, { ...base, scale: -3e38 }), 'scale'],
    ['dense window 2^32', () => planAttention(gpu.dev, { ...base, window: U32 }), 'window'],
    ['dense sinks 2^32 + 5', () => planAttention(gpu.dev, { ...base, window: 4, sinks: U32 + 5 }), 'sinks'],
    ['sliding window 2^40', () => planSlidingWindow(gpu.dev, { ...base, window: 2 ** 40 }), 'window'],
    ['decode window 2^32', () => planDecode(gpu.dev, { kvLens: [9], Hq: 2, Hkv: 1, D: 16, window: U32 }), 'window'],
    [
      'decode kvChunk 2^33',
      () => planDecode(gpu.dev, { kvLens: [9], Hq: 2, Hkv: 1, D: 16, kvChunk: 2 ** 33 }),
      'kvChunk',
    ],
    ['moba scale 1e300', () => planMoba(gpu.dev, { ...base, blockSize: 4, topk: 2, scale: 1e300 }), 'scale'],
    [
      'nsa window 2^32',
      () => planNsa(gpu.dev, { Tq: 16, Hq: 2, Hkv: 1, D: 16, blockSize: 4, blockCount: 2, window: U32 }),
      'window',
    ],
    [
      'nsa scale 1e39',
      () => planNsa(gpu.dev, { Tq: 16, Hq: 2, Hkv: 1, D: 16, blockSize: 4, blockCount: 2, window: 4, scale: 1e39 }),
      'scale',
    ],
    [
      'block_sparse scale 1e39',
      () =>
        planBlockSparse(gpu.dev, {
          Tq: 32,
          Hq: 2,
          Hkv: 1,
          D: 16,
          R: 16,
          C: 16,
          indptr: [0, 1, 3],
          indices: [0, 0, 1],
          scale: 1e39,
        }),
      'scale',
    ],
    [
      'dsa scale 1e39',
      () => planDsa(gpu.dev, { Tq: 6, Hq: 2, Hkv: 1, D: 8, HI: 2, DI: 8, topk: 3, scale: 1e39 }),
      'scale',
    ],
    ['dsa topk 2^32', () => planDsa(gpu.dev, { Tq: 6, Hq: 2, Hkv: 1, D: 8, HI: 2, DI: 8, topk: U32 }), 'topk'],
    [
      'paged scale 1e39',
      () => planPaged(gpu.dev, { Hq: 2, Hkv: 1, D: 8, pageSize: 16, dtype: 'f32', scale: 1e39 }),
      'scale',
    ],
    ['linear scale 1e39', () => planLinearAttn(gpu.dev, { H: 1, K: 8, V: 8, T: 4, scale: 1e39 }), 'scale'],
    ['gla T 2^32', () => planGla(gpu.dev, { H: 1, K: 8, V: 8, T: U32 }), 'T'],
  ];
  for (const [what, plan, arg] of rows) {
    it(`${what} -> E_ARG ${arg}; a rejected plan holds no GPU memory`, async () => {
      const before = gpu.dev.memory();
      const err = await rejection(plan().then((p) => p.dispose()));
      expect([err.code, err.argument], err.message).toEqual(['E_ARG', arg]);
      const after = gpu.dev.memory();
      expect(after.bytesHeld, 'bytes held after the rejected plan').toBe(before.bytesHeld);
      expect(after.buffersHeld).toBe(before.buffersHeld);
    });
  }

  it('KV cache and streaming options past u32: sinkPages, qPos0, budgetTokens', async () => {
    const before = gpu.dev.memory();
    let err = await rejection(() =>
      createKvCache(gpu.dev, { Hkv: 1, D: 8, pageSize: 16, dtype: 'f32', sinkPages: U32 }),
    );
    expect([err.code, err.argument]).toEqual(['E_ARG', 'sinkPages']);
    expect(gpu.dev.memory().bytesHeld).toBe(before.bytesHeld);
    const cache = createKvCache(gpu.dev, { Hkv: 1, D: 8, pageSize: 16, dtype: 'f32' });
    try {
      const s = cache.addSequence();
      cache.append(s, new Float32Array(20 * 8).fill(0.1), new Float32Array(20 * 8).fill(0.2));
      err = await rejection(streamAttention(cache, s, new Float32Array(16), { Hq: 2, qPos0: U32 }));
      expect([err.code, err.argument]).toEqual(['E_ARG', 'qPos0']);
      err = await rejection(planQuestDecode(cache, { Hq: 2, budgetTokens: 2 ** 53 }));
      expect([err.code, err.argument]).toEqual(['E_ARG', 'budgetTokens']);
      err = await rejection(planStreamAttention(cache, { Hq: 2, scale: 1e39 }));
      expect([err.code, err.argument]).toEqual(['E_ARG', 'scale']);
    } finally {
      cache.dispose();
    }
  });

  it('large byte budgets (host sizes) stay valid past 2^32', () => {
    const cache = createKvCache(gpu.dev, { Hkv: 1, D: 8, pageSize: 16, dtype: 'f32', gpuBudgetBytes: 2 ** 33 });
    expect(cache.gpuBudgetBytes).toBe(2 ** 33);
    cache.dispose();
  });
});

describe('class 11: the NaN policy', () => {
  for (const [name, plan, gShape] of [
    ['simple_gla', planSimpleGla, (T: number) => [T, 1]],
    ['gla', planGla, (T: number) => [T, 1, 8]],
    ['gated_delta_rule', planGatedDeltaRule, (T: number) => [T, 1]],
  ] as const) {
    for (const T of [4, 100]) {
      it(`${name} plan.run (${T <= 64 ? 'recurrent' : 'chunked'}): a NaN gate at token 1 propagates to o from token 1 on`, async () => {
        const H = 1,
          K = 8,
          V = 8;
        const n = gShape(T).reduce((a, b) => a * b, 1);
        const per = n / T;
        const g = new Float64Array(n).fill(-0.1);
        g.fill(NaN, per, 2 * per);
        const vals = (m: number) => Float64Array.from({ length: m }, (_, i) => Math.sin(i) * 0.5);
        const p = await plan(gpu.dev, { H, K, V, T });
        const o = gpu.nanTensor([T, H, V]);
        try {
          const t: Record<string, unknown> = {
            q: gpu.tensor(vals(T * K), [T, H, K]),
            k: gpu.tensor(vals(T * K), [T, H, K]),
            v: gpu.tensor(vals(T * V), [T, H, V]),
            g: gpu.tensor(g, [...gShape(T)]),
            o,
          };
          if (name === 'gated_delta_rule') t.beta = gpu.tensor(new Float64Array(T).fill(0.5), [T, 1]);
          await gpu.dev.scoped('nan gate', async () => {
            const enc = gpu.dev.device.createCommandEncoder();
            p.run(enc, t as never);
            await gpu.dev.submitAndWait([enc.finish()]);
          });
        } finally {
          p.dispose();
        }
        const got = await gpu.read(o);
        // the recurrent form keeps token 0 finite; the chunked delta rule solves a chunk at once, so
        // there the NaN may reach token 0 too (it propagates either way, never made finite)
        if (T <= 64)
          expect(Array.from(got.subarray(0, V)).every(Number.isFinite), 'token 0 is before the NaN gate').toBe(true);
        for (let t = 1; t < T; t++) {
          expect(
            Array.from(got.subarray(t * V, (t + 1) * V)).some((x) => Number.isNaN(x)),
            `token ${t} after the NaN gate`,
          ).toBe(true);
        }
      });
    }
  }

  it('K/V host data that is not numbers is rejected, the cache unchanged', async () => {
    const cache = createKvCache(gpu.dev, { Hkv: 1, D: 4, pageSize: 16, dtype: 'f32' });
    try {
      const s = cache.addSequence();
      cache.append(s, new Float32Array(8).fill(0.5), new Float32Array(8).fill(0.25));
      const tries: [unknown, unknown, string][] = [
        ['abcdefgh', new Float32Array(8), 'k'],
        [new Float32Array(8), 'abcdefgh', 'v'],
        [[1, 2, 3, '4', 5, 6, 7, 8], new Float32Array(8), 'k'],
        [{ length: 8 }, new Float32Array(8), 'k'],
        [new BigInt64Array(8), new Float32Array(8), 'k'],
      ];
      for (const [k, v, arg] of tries) {
        const err = await rejection(() => cache.append(s, k as never, v as never));
        expect([err.code, err.argument]).toEqual(['E_ARG', arg]);
        expect(cache.length(s)).toBe(2);
      }
      const r = cache.read(s, 0, 2);
      expect(Array.from(r.k)).toEqual(new Array(8).fill(0.5));
      const err = await rejection(streamAttention(cache, s, 'abcdefgh' as never, { Hq: 2 }));
      expect([err.code, err.argument]).toEqual(['E_ARG', 'q']);
    } finally {
      cache.dispose();
    }
  });
});
