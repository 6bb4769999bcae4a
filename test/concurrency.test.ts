/**
 * Issue 12, classes 1, 2, 3 and 9: calls in flight together on one device.
 * - 1: a lost device with several internal promises in flight is one E_DEVICE_LOST to the caller
 *   and no unhandled rejection (test/setup/unhandled.ts fails any test that leaves one).
 * - 2: a plan with mutable scratch refuses a second overlapping run (E_STATE), and a plan with a
 *   uniform ring refuses more calls in one command encoder than it has slots; what it accepts is
 *   exact.
 * - 3: GPU errors reach the call that caused them, however calls interleave.
 * - 9: pinned pages never fill the GPU working set for good.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { patchMethod, useGpu } from './helpers/gpu.js';
import { adapterFromEnv, requestDevice, type TesseraDevice } from '../src/gpu/device.js';
import { Rng, TOLERANCE, compare, describeComparison, passes } from '../src/testing.js';
import { createKvCache, type KvCache } from '../src/kv/cache.js';
import { planStreamAttention, streamAttention } from '../src/stream/exact.js';
import { planQuestDecode } from '../src/stream/quest.js';
import { streamAttentionReference } from '../kernels/paged/reference.js';
import { ALL_HEADS, PAGED_ENTRY_WORDS, planPaged } from '../kernels/paged/paged.js';
import { planQuestScore } from '../kernels/quest/score.js';
import { attention } from '../kernels/dense/prefill.js';
import { planDecode } from '../kernels/dense/decode.js';
import { attentionReference } from '../kernels/dense/reference.js';
import { LinearStream } from '../src/stream/linear.js';
import { byteSize, type GpuTensor } from '../src/tensor.js';
import type { KernelPlan } from '../src/plan.js';
import { planMoba, planMobaVarlen } from '../kernels/moba/index.js';
import { mobaReference } from '../kernels/moba/reference.js';
import { planNsa, planNsaVarlen } from '../kernels/nsa/index.js';
import { nsaReference } from '../kernels/nsa/reference.js';
import { planDsa, planDsaVarlen } from '../kernels/dsa/index.js';
import { dsaReference } from '../kernels/dsa/reference.js';
import { planBlockSparse, planBlockSparseVarlen } from '../kernels/block_sparse/index.js';
import { blockSparseReference } from '../kernels/block_sparse/reference.js';
import { tier } from './helpers/tier.js';

const gpu = useGpu();
const VARIANTS = ['cpu', 'gpu'] as const;

function fill(cache: KvCache, seq: number, T: number, rng: Rng): void {
  for (let t = 0; t < T; t += 500) {
    const n = Math.min(500, T - t);
    cache.append(seq, rng.normals(n * cache.Hkv * cache.D), rng.normals(n * cache.Hkv * cache.Dv));
  }
}

type F32Tensor = GpuTensor & { dtype: 'f32' };

function f32(dev: TesseraDevice, values: ArrayLike<number>, shape: number[]): F32Tensor {
  return { buffer: dev.upload(Float32Array.from(values), { size: byteSize(shape, 'f32') }), shape, dtype: 'f32' };
}

function nan(dev: TesseraDevice, shape: number[]): F32Tensor {
  return f32(dev, new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(NaN), shape);
}

async function read(dev: TesseraDevice, t: GpuTensor): Promise<Float64Array> {
  return Float64Array.from(new Float32Array(await dev.readback(t.buffer, byteSize(t.shape, 'f32'))));
}

function expectClose(got: Float64Array, ref: Float64Array, what: string): void {
  const c = compare(got, ref);
  expect(passes(c, TOLERANCE.f32), `${what}: ${describeComparison(c)}`).toBe(true);
}

describe('class 1: device loss with internal promises in flight', () => {
  for (const target of VARIANTS) {
    it(`streaming (${target}): tiles in flight, device lost -> one E_DEVICE_LOST, no unhandled rejection`, async () => {
      const lost = await requestDevice(adapterFromEnv());
      const unhandled: unknown[] = [];
      const onUnhandled = (e: unknown) => unhandled.push(e);
      process.on('unhandledRejection', onUnhandled);
      const cache = createKvCache(lost, {
        Hkv: 1,
        D: 16,
        dtype: 'f16',
        pageSize: 16,
        tilePages: 2,
        gpuBudgetBytes: 64 << 10,
      });
      try {
        const seq = cache.addSequence();
        fill(cache, seq, 2000, new Rng(5));
        const plan = await planStreamAttention(cache, { Hq: 2, inflight: 6, target });
        const q = f32(lost, new Rng(6).normals(2 * 16), [1, 2, 16]);
        const o = nan(lost, [1, 2, 16]);
        let tiles = 0;
        // Lose the device once 4 tiles are submitted and none awaited yet (inflight 6): several
        // internal tile promises reject after the caller's own rejection.
        const run = plan.run(
          seq,
          q,
          { o },
          {
            onProgress: () => {
              if (++tiles === 4) lost.device.destroy();
            },
          },
        );
        const results = await Promise.allSettled([run]);
        expect(results[0]!.status).toBe('rejected');
        expect((results[0] as PromiseRejectedResult).reason).toMatchObject({ code: 'E_DEVICE_LOST' });
        // Let every internal promise settle; none may surface as an unhandled rejection.
        await new Promise((r) => setTimeout(r, 50));
        expect(unhandled).toEqual([]);
        expect(tiles).toBeGreaterThanOrEqual(4);
        plan.dispose();
      } finally {
        process.off('unhandledRejection', onUnhandled);
        cache.dispose();
        lost.destroy();
      }
    });

    it(`Quest decode (${target}): device lost between its sections -> one E_DEVICE_LOST, no unhandled rejection`, async () => {
      const lost = await requestDevice(adapterFromEnv());
      const unhandled: unknown[] = [];
      const onUnhandled = (e: unknown) => unhandled.push(e);
      process.on('unhandledRejection', onUnhandled);
      const cache = createKvCache(lost, { Hkv: 1, D: 16, dtype: 'f16', pageSize: 16, gpuBudgetBytes: 1 << 20 });
      try {
        const seq = cache.addSequence();
        fill(cache, seq, 1000, new Rng(7));
        const plan = await planQuestDecode(cache, { Hq: 2, budgetTokens: 128, target });
        const q = f32(lost, new Rng(8).normals(2 * 16), [1, 2, 16]);
        const run = plan.run(seq, q, { o: nan(lost, [1, 2, 16]) });
        lost.device.destroy(); // the scores are submitted; the selection waits on them
        await expect(run).rejects.toMatchObject({ code: 'E_DEVICE_LOST' });
        await new Promise((r) => setTimeout(r, 50));
        expect(unhandled).toEqual([]);
        plan.dispose();
      } finally {
        process.off('unhandledRejection', onUnhandled);
        cache.dispose();
        lost.destroy();
      }
    });
  }
});

describe('class 2: overlapping runs of one plan', () => {
  for (const target of VARIANTS) {
    it(`stream plan (${target}): a second overlapping run is E_STATE; the first and later runs are exact`, async () => {
      const dev = gpu.dev;
      const Hq = 2;
      const D = 16;
      const cache = createKvCache(dev, {
        Hkv: 1,
        D,
        dtype: 'f32',
        pageSize: 16,
        tilePages: 4,
        gpuBudgetBytes: 256 << 10,
      });
      try {
        const seq = cache.addSequence();
        const T = 700;
        fill(cache, seq, T, new Rng(11));
        const plan = await planStreamAttention(cache, { Hq, target });
        const rng = new Rng(12);
        const qa = rng.normals(Hq * D);
        const qb = rng.normals(Hq * D);
        const oa = nan(dev, [1, Hq, D]);
        const ob = nan(dev, [1, Hq, D]);
        const [ra, rb] = await Promise.allSettled([
          plan.run(seq, f32(dev, qa, [1, Hq, D]), { o: oa }),
          plan.run(seq, f32(dev, qb, [1, Hq, D]), { o: ob }),
        ]);
        expect(ra.status).toBe('fulfilled');
        expect(rb.status).toBe('rejected');
        expect((rb as PromiseRejectedResult).reason).toMatchObject({ code: 'E_STATE', argument: 'plan' });
        const { k, v } = cache.read(seq, 0, T);
        expectClose(
          await read(dev, oa),
          streamAttentionReference(qa, k, v, { Tq: 1, Tk: T, Hq, Hkv: 1, D }).o,
          'first run',
        );
        expect(Array.from(await read(dev, ob)).every(Number.isNaN), 'the refused run wrote nothing').toBe(true);
        // The plan is free again once the first run settled.
        await plan.run(seq, f32(dev, qb, [1, Hq, D]), { o: ob });
        expectClose(
          await read(dev, ob),
          streamAttentionReference(qb, k, v, { Tq: 1, Tk: T, Hq, Hkv: 1, D }).o,
          'later run',
        );
        // Two plans on one cache do run concurrently, each exact.
        const other = await planStreamAttention(cache, { Hq, target });
        const oc = nan(dev, [1, Hq, D]);
        await Promise.all([
          plan.run(seq, f32(dev, qa, [1, Hq, D]), { o: oa }),
          other.run(seq, f32(dev, qb, [1, Hq, D]), { o: oc }),
        ]);
        expectClose(
          await read(dev, oa),
          streamAttentionReference(qa, k, v, { Tq: 1, Tk: T, Hq, Hkv: 1, D }).o,
          'plan A beside plan B',
        );
        expectClose(
          await read(dev, oc),
          streamAttentionReference(qb, k, v, { Tq: 1, Tk: T, Hq, Hkv: 1, D }).o,
          'plan B beside plan A',
        );
        plan.dispose();
        other.dispose();
      } finally {
        cache.dispose();
      }
    });

    it(`Quest decode plan (${target}): a second overlapping run is E_STATE; the first equals a clean run`, async () => {
      const dev = gpu.dev;
      const Hq = 4;
      const D = 16;
      const cache = createKvCache(dev, { Hkv: 2, D, dtype: 'f16', pageSize: 16, gpuBudgetBytes: 1 << 20 });
      try {
        const seq = cache.addSequence();
        fill(cache, seq, 1200, new Rng(13));
        const plan = await planQuestDecode(cache, { Hq, budgetTokens: 160, target });
        const rng = new Rng(14);
        const qa = f32(dev, rng.normals(Hq * D), [1, Hq, D]);
        const qb = f32(dev, rng.normals(Hq * D), [1, Hq, D]);
        const oa = nan(dev, [1, Hq, D]);
        const ob = nan(dev, [1, Hq, D]);
        const [ra, rb] = await Promise.allSettled([plan.run(seq, qa, { o: oa }), plan.run(seq, qb, { o: ob })]);
        expect(ra.status).toBe('fulfilled');
        expect((rb as PromiseRejectedResult).reason).toMatchObject({ code: 'E_STATE', argument: 'plan' });
        const first = await read(dev, oa);
        expect(first.every(Number.isFinite)).toBe(true);
        // A clean, sequential run of the same query gives the same bits.
        const oc = nan(dev, [1, Hq, D]);
        await plan.run(seq, qa, { o: oc });
        expect(Array.from(first)).toEqual(Array.from(await read(dev, oc)));
        // And with the whole sequence in budget, against float64 attention.
        const all = await planQuestDecode(cache, { Hq, budgetTokens: 1216, target });
        await all.run(seq, qb, { o: ob });
        const { k, v } = cache.read(seq, 0, 1200);
        expectClose(
          await read(dev, ob),
          streamAttentionReference(await read(dev, qb), k, v, { Tq: 1, Tk: 1200, Hq, Hkv: 2, D }).o,
          'whole-budget decode',
        );
        plan.dispose();
        all.dispose();
      } finally {
        cache.dispose();
      }
    });

    it(`paged partials (${target}): runs in one encoder are exact up to maxCalls, then E_STATE`, async () => {
      const dev = gpu.dev;
      const Hq = 2;
      const D = 16;
      const P = 16;
      const cache = createKvCache(dev, { Hkv: 1, D, dtype: 'f16', pageSize: P, gpuBudgetBytes: 1 << 20 });
      try {
        const seq = cache.addSequence();
        fill(cache, seq, 2 * P, new Rng(15));
        const slots = cache.ensureResident(cache.pages(seq));
        const words = new Uint32Array(2 * PAGED_ENTRY_WORDS);
        slots.forEach((s, i) => words.set([cache.pool.location(s).index, i * P, P, ALL_HEADS], i * PAGED_ENTRY_WORDS));
        const list = dev.upload(words);
        const plan = await planPaged(dev, { Hq, Hkv: 1, D, pageSize: P, dtype: 'f16', maxCalls: 2, target });
        const qv = new Rng(16).normals(Hq * D);
        const q = f32(dev, qv, [1, Hq, D]);
        const oParts = nan(dev, [2, Hq, D]);
        const lseParts = nan(dev, [2, Hq]);
        const pages = cache.pool.buffers[cache.pool.location(slots[0]!).bufferIndex]!;
        const call = (qPos0: number, part: number) => ({
          qPos0,
          listBase: 0,
          nEntries: 2,
          ePer: 2,
          partBase: part,
          partCount: 1,
        });
        const enc = dev.device.createCommandEncoder();
        // Two runs, two different positions, one encoder: each must keep its own parameters.
        plan.run(enc, { q, pages, list, oParts, lseParts, calls: [call(2 * P - 1, 0)] });
        plan.run(enc, { q, pages, list, oParts, lseParts, calls: [call(5, 1)] });
        expect(() => plan.run(enc, { q, pages, list, oParts, lseParts, calls: [call(9, 0)] })).toThrow(
          expect.objectContaining({ code: 'E_STATE', argument: 'encoder' }),
        );
        await dev.submitAndWait([enc.finish()]);
        const got = await read(dev, oParts);
        const { k, v } = cache.read(seq, 0, 2 * P);
        expectClose(
          got.subarray(0, Hq * D),
          streamAttentionReference(qv, k, v, { Tq: 1, Tk: 2 * P, Hq, Hkv: 1, D, qPos0: 2 * P - 1 }).o,
          'run 1 of 2 in one encoder',
        );
        expectClose(
          got.subarray(Hq * D),
          streamAttentionReference(qv, k, v, { Tq: 1, Tk: 2 * P, Hq, Hkv: 1, D, qPos0: 5 }).o,
          'run 2 of 2 in one encoder',
        );
        // A new encoder has its own count.
        const enc2 = dev.device.createCommandEncoder();
        plan.run(enc2, { q, pages, list, oParts, lseParts, calls: [call(9, 0), call(20, 1)] });
        await dev.submitAndWait([enc2.finish()]);
        plan.dispose();
        dev.destroyBuffer(list);
      } finally {
        cache.dispose();
      }
    });
  }

  for (const target of VARIANTS) {
    it(`a plan with workspace (split decode + merge, ${target}): two runs in one command buffer are both exact`, async () => {
      const dev = gpu.dev;
      const Hq = 4;
      const Hkv = 2;
      const D = 16;
      const kvLens = [300, 77];
      const total = 377;
      const plan = await planDecode(dev, { Hq, Hkv, D, kvLens, kvChunk: 64, target });
      expect(plan.kvChunk).toBeLessThan(300); // several splits: f32 partials in the plan's workspace, then the merge
      const rng = new Rng(20);
      const kv = [rng.normals(total * Hkv * D), rng.normals(total * Hkv * D)];
      const k = f32(dev, kv[0]!, [total, Hkv, D]);
      const v = f32(dev, kv[1]!, [total, Hkv, D]);
      const qs = [rng.normals(2 * Hq * D), rng.normals(2 * Hq * D)];
      const os = [nan(dev, [2, Hq, D]), nan(dev, [2, Hq, D])];
      const enc = dev.device.createCommandEncoder();
      qs.forEach((q, i) => plan.run(enc, { q: f32(dev, q, [2, Hq, D]), k, v, o: os[i]! }));
      await dev.submitAndWait([enc.finish()]);
      for (const i of [0, 1]) {
        const got = await read(dev, os[i]!);
        let off = 0;
        kvLens.forEach((len, n) => {
          const ref = attentionReference(
            qs[i]!.subarray(n * Hq * D, (n + 1) * Hq * D),
            kv[0]!.subarray(off * Hkv * D, (off + len) * Hkv * D),
            kv[1]!.subarray(off * Hkv * D, (off + len) * Hkv * D),
            { Tq: 1, Tk: len, Hq, Hkv, D },
          );
          expectClose(got.subarray(n * Hq * D, (n + 1) * Hq * D), ref.o, `run ${i}, sequence ${n}`);
          off += len;
        });
      }
      plan.dispose();
    });
  }

  it('Quest scoring: more calls in one encoder than its uniform ring holds is E_STATE', async () => {
    const dev = gpu.dev;
    const cache = createKvCache(dev, { Hkv: 1, D: 16, dtype: 'f16', pageSize: 16, gpuBudgetBytes: 1 << 20 });
    try {
      const seq = cache.addSequence();
      fill(cache, seq, 64, new Rng(17));
      const n = 4;
      const plan = await planQuestScore(dev, { Hq: 2, Hkv: 1, D: 16, maxCalls: 1 });
      const list = dev.upload(Uint32Array.from(cache.pages(seq)));
      const scores = nan(dev, [1, n]);
      const q = f32(dev, new Rng(18).normals(32), [2, 16]);
      const t = {
        q,
        summaries: cache.minmaxGpu[0]!,
        list,
        scores,
        calls: [{ n, chunkFirst: 0, chunkPages: cache.summaryChunkPages, forcedLo: 1, forcedHi: n - 1 }],
      };
      const enc = dev.device.createCommandEncoder();
      plan.run(enc, t);
      expect(() => plan.run(enc, t)).toThrow(expect.objectContaining({ code: 'E_STATE', argument: 'encoder' }));
      await dev.submitAndWait([enc.finish()]);
      expect(Array.from(await read(dev, scores)).some(Number.isNaN), 'the accepted call wrote every score').toBe(false);
      plan.dispose();
      dev.destroyBuffer(list);
    } finally {
      cache.dispose();
    }
  });

  it('LinearStream: an overlapping push is E_STATE and the state stays that of the pushes it accepted', async () => {
    const dev = gpu.dev;
    const H = 1;
    const K = 8;
    const V = 8;
    const s = await LinearStream.create(dev, { H, K, V, gate: 'none', delta: false });
    try {
      const rng = new Rng(19);
      const seg = (T: number) => ({
        q: f32(dev, rng.normals(T * H * K), [T, H, K]),
        k: f32(dev, rng.normals(T * H * K), [T, H, K]),
        v: f32(dev, rng.normals(T * H * V), [T, H, V]),
        o: nan(dev, [T, H, V]),
      });
      const a = seg(5);
      const b = seg(3);
      const [ra, rb] = await Promise.allSettled([s.push(a), s.push(b)]);
      expect(ra.status).toBe('fulfilled');
      expect((rb as PromiseRejectedResult).reason).toMatchObject({ code: 'E_STATE', argument: 'plan' });
      expect(s.position).toBe(5);
      await expect(Promise.all([s.push(b), s.rollback(0)])).rejects.toMatchObject({ code: 'E_STATE' });
      expect(s.position).toBe(8);
    } finally {
      s.dispose();
    }
  });
});

describe('class 3: GPU errors reach the call that caused them', () => {
  // A device that does not track buffers: a destroyed buffer it never saw passes every check
  // before encoding and is only caught by the error scopes at submit.
  let d: TesseraDevice;
  const uncaptured: string[] = [];
  beforeAll(async () => {
    d = await requestDevice({ ...adapterFromEnv(), trackBuffers: false });
    d.device.addEventListener('uncapturederror', (ev) =>
      uncaptured.push((ev as GPUUncapturedErrorEvent).error.message),
    );
  });
  afterAll(async () => {
    await d.device.queue.onSubmittedWorkDone();
    expect(uncaptured, 'uncaptured GPU errors').toEqual([]);
    d.destroy();
  });

  for (const target of VARIANTS) {
    it(`a valid and an invalid attention call in flight together (${target})`, async () => {
      const Tq = 40;
      const H = 2;
      const D = 16;
      const rng = new Rng(21);
      const qv = rng.normals(Tq * H * D);
      const kv = rng.normals(Tq * H * D);
      const vv = rng.normals(Tq * H * D);
      const shape = [Tq, H, D];
      const good = { q: f32(d, qv, shape), k: f32(d, kv, shape), v: f32(d, vv, shape), o: nan(d, shape) };
      const gone = d.device.createBuffer({
        size: byteSize(shape, 'f32'),
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
        label: 'gone',
      });
      gone.destroy();
      const bad = {
        q: f32(d, qv, shape),
        k: { buffer: gone, shape, dtype: 'f32' as const },
        v: f32(d, vv, shape),
        o: nan(d, shape),
      };
      for (const order of ['valid first', 'invalid first'] as const) {
        const calls =
          order === 'valid first'
            ? [attention(d, good, { target }), attention(d, bad, { target })]
            : [attention(d, bad, { target }), attention(d, good, { target })].reverse();
        const [rv, ri] = await Promise.allSettled(calls);
        expect(rv.status, `${order}: the valid call`).toBe('fulfilled');
        expect(ri.status, `${order}: the invalid call`).toBe('rejected');
        expect((ri as PromiseRejectedResult).reason).toMatchObject({ code: 'E_BUFFER' });
        expectClose(
          await read(d, good.o),
          attentionReference(qv, kv, vv, { Tq, Hq: H, Hkv: H, D }).o,
          `${order}: valid output`,
        );
        expect(Array.from(await read(d, bad.o)).every(Number.isNaN), `${order}: the invalid call wrote nothing`).toBe(
          true,
        );
        d.device.queue.writeBuffer(good.o.buffer, 0, new Float32Array(Tq * H * D).fill(NaN));
      }
      await d.device.queue.onSubmittedWorkDone();
      expect(uncaptured).toEqual([]);
    });
  }

  it('a streaming call beside a failing convenience call keeps its own result', async () => {
    const cache = createKvCache(d, {
      Hkv: 1,
      D: 16,
      dtype: 'f32',
      pageSize: 16,
      tilePages: 2,
      gpuBudgetBytes: 64 << 10,
    });
    const seq = cache.addSequence();
    fill(cache, seq, 500, new Rng(22));
    const q = new Rng(23).normals(32);
    const gone = d.device.createBuffer({ size: 40 * 2 * 16 * 4, usage: GPUBufferUsage.STORAGE, label: 'gone' });
    gone.destroy();
    const shape = [40, 2, 16];
    const x = new Rng(24).normals(40 * 32);
    const bad = {
      q: f32(d, x, shape),
      k: { buffer: gone, shape, dtype: 'f32' as const },
      v: f32(d, x, shape),
      o: nan(d, shape),
    };
    const [rs, rb] = await Promise.allSettled([
      streamAttention(cache, seq, q, { Hq: 2 }),
      attention(d, bad),
      attention(d, bad),
    ]);
    expect(rs.status).toBe('fulfilled');
    expect((rb as PromiseRejectedResult).reason).toMatchObject({ code: 'E_BUFFER' });
    const { k, v } = cache.read(seq, 0, 500);
    expectClose(
      (rs as PromiseFulfilledResult<{ o: Float64Array }>).value.o,
      streamAttentionReference(q, k, v, { Tq: 1, Tk: 500, Hq: 2, Hkv: 1, D: 16 }).o,
      'stream',
    );
    cache.dispose();
  });
});

describe('class 9: pins never fill the working set for good', () => {
  for (const target of VARIANTS) {
    it(`many pinned sequences, streams aborted mid-way, then a new sequence still streams (${target})`, async () => {
      const dev = gpu.dev;
      const Hq = 2;
      const D = 16;
      // 1 KiB pages, 4 per pool buffer; 48 KiB hold 12 KiB of summaries and at most 36 pages.
      const cache = createKvCache(dev, {
        Hkv: 1,
        D,
        dtype: 'f16',
        pageSize: 16,
        tilePages: 4,
        sinkPages: 1,
        recentPages: 2,
        gpuBudgetBytes: 48 << 10,
      });
      try {
        const rng = new Rng(25);
        const q = rng.normals(Hq * D);
        // Each sequence pins 3 of its 5 pages (1 sink, 2 recent) once streamed: 16 sequences pin 48.
        const seqs = Array.from({ length: 16 }, () => cache.addSequence());
        for (const s of seqs) fill(cache, s, 16 * 5, rng);
        let aborted = 0;
        for (const [i, s] of seqs.entries()) {
          if (i % 2 === 0) {
            await streamAttention(cache, s, q, { Hq, target });
          } else {
            // Aborted after its first tile (a caller's callback throws).
            await expect(
              streamAttention(cache, s, q, {
                Hq,
                target,
                onProgress: () => {
                  throw new Error('abort');
                },
              }),
            ).rejects.toThrow('abort');
            aborted++;
          }
        }
        expect(aborted).toBeGreaterThan(2);
        expect(cache.stats().poolBytes / cache.pageBytes).toBeLessThan(48);
        const fresh = cache.addSequence();
        fill(cache, fresh, 16 * 9, rng);
        const got = await streamAttention(cache, fresh, q, { Hq, target });
        const { k, v } = cache.read(fresh, 0, 16 * 9);
        expectClose(got.o, streamAttentionReference(q, k, v, { Tq: 1, Tk: 16 * 9, Hq, Hkv: 1, D }).o, 'fresh sequence');
        // And every old sequence still streams exactly.
        const { k: k0, v: v0 } = cache.read(seqs[1]!, 0, 80);
        expectClose(
          (await streamAttention(cache, seqs[1]!, q, { Hq, target })).o,
          streamAttentionReference(q, k0, v0, { Tq: 1, Tk: 80, Hq, Hkv: 1, D }).o,
          'old sequence',
        );
      } finally {
        cache.dispose();
      }
    });
  }
});

/**
 * Issue 11 item 2 for the sparse families: several runs of one plan in one encoder keep their own
 * parameters. Their plans write nothing with `queue.writeBuffer` at run time (counted here), so no
 * run can change what an earlier run of the same encoder reads; their workspaces (pooled keys,
 * scores, selected lists, branch outputs) are written and read by the run's own dispatches, in
 * encoder order. Two runs with different inputs in one encoder, and in two encoders submitted in
 * the reverse order, each equal the float64 reference.
 */
describe('class 2: runs of one sparse plan in one encoder (MoBA, NSA, DSA, block-sparse; single and varlen)', () => {
  const Hq = 2;
  const Hkv = 1;
  const D = 16;
  const HI = 2;
  const DI = 16;
  type Host = Record<string, Float64Array>;
  interface Family {
    name: string;
    /** Row widths of the inputs (all `[T, ...]`), for slicing a sequence out of the batch. */
    widths: Record<string, number>;
    /** The float64 `o` of one sequence of `len` tokens. */
    ref: (x: Host, len: number) => Float64Array;
    /** The plan: one sequence of T tokens (`cu` undefined) or the batch `cu`. */
    plan: (T: number, cu: number[] | undefined, target: 'cpu' | 'gpu') => Promise<KernelPlan<never>>;
  }
  const shapes: Record<string, number[]> = {
    q: [Hq, D],
    k: [Hkv, D],
    v: [Hkv, D],
    gCmp: [Hq],
    gSlc: [Hq],
    gSwa: [Hq],
    qI: [HI, DI],
    kI: [DI],
    w: [HI],
  };
  const qkv = { q: Hq * D, k: Hkv * D, v: Hkv * D };
  /** Blocks of 8: block row r sees key block 0 and its own (diagonal) block. */
  const bandMask = (len: number) => {
    const indptr = [0];
    const indices: number[] = [];
    for (let r = 0; r < Math.ceil(len / 8); r++) {
      indices.push(...(r ? [0, r] : [0]));
      indptr.push(indices.length);
    }
    return { indptr, indices };
  };
  const families: Family[] = [
    {
      name: 'moba',
      widths: qkv,
      ref: (x, len) => mobaReference(x.q!, x.k!, x.v!, { Tq: len, Hq, Hkv, D, blockSize: 8, topk: 2 }).o,
      plan: (T, cu, target) =>
        (cu
          ? planMobaVarlen(gpu.dev, { cuSeqlens: cu, Hq, Hkv, D, blockSize: 8, topk: 2, target })
          : planMoba(gpu.dev, { Tq: T, Hq, Hkv, D, blockSize: 8, topk: 2, target })) as Promise<KernelPlan<never>>,
    },
    {
      name: 'nsa',
      widths: { ...qkv, gCmp: Hq, gSlc: Hq, gSwa: Hq },
      ref: (x, len) =>
        nsaReference(
          x.q!,
          x.k!,
          x.v!,
          { gCmp: x.gCmp!, gSlc: x.gSlc!, gSwa: x.gSwa! },
          { T: len, Hq, Hkv, D, blockSize: 8, blockCount: 2, window: 12 },
        ).o,
      plan: (T, cu, target) => {
        const o = { Hq, Hkv, D, blockSize: 8, blockCount: 2, window: 12, target };
        return (cu ? planNsaVarlen(gpu.dev, { cuSeqlens: cu, ...o }) : planNsa(gpu.dev, { Tq: T, ...o })) as Promise<
          KernelPlan<never>
        >;
      },
    },
    {
      name: 'dsa',
      widths: { ...qkv, qI: HI * DI, kI: DI, w: HI },
      ref: (x, len) =>
        dsaReference(x.q!, x.k!, x.v!, { qI: x.qI!, kI: x.kI!, w: x.w! }, { T: len, Hq, Hkv, D, HI, DI, topk: 10 }).o,
      plan: (T, cu, target) => {
        const o = { Hq, Hkv, D, HI, DI, topk: 10, target };
        return (cu ? planDsaVarlen(gpu.dev, { cuSeqlens: cu, ...o }) : planDsa(gpu.dev, { Tq: T, ...o })) as Promise<
          KernelPlan<never>
        >;
      },
    },
    {
      name: 'block-sparse',
      widths: qkv,
      ref: (x, len) => blockSparseReference(x.q!, x.k!, x.v!, { Tq: len, Hq, Hkv, D, R: 8, C: 8, ...bandMask(len) }).o,
      plan: (T, cu, target) => {
        const o = { Hq, Hkv, D, R: 8, C: 8, target };
        const lens = cu?.slice(1).map((e, n) => e - cu[n]!);
        return (
          lens
            ? planBlockSparseVarlen(gpu.dev, {
                cuSeqlens: cu!,
                ...o,
                indptr: lens.map((n) => bandMask(n).indptr),
                indices: lens.map((n) => bandMask(n).indices),
              })
            : planBlockSparse(gpu.dev, { Tq: T, ...o, ...bandMask(T) })
        ) as Promise<KernelPlan<never>>;
      },
    },
  ];
  const sig = (x: number) => 1 / (1 + Math.exp(-x));
  /** Inputs of the batch `cu` (one sequence: [0, T]), their GPU tensors and the reference o. */
  function inputs(f: Family, cu: number[], seed: number) {
    const T = cu[cu.length - 1]!;
    const rng = new Rng(seed);
    const host: Host = {};
    const tensors: Record<string, GpuTensor> = {};
    for (const [name, width] of Object.entries(f.widths)) {
      const vals = rng.normals(T * width).map((x) => Math.fround(name.startsWith('g') ? sig(x) : x));
      host[name] = vals;
      tensors[name] = gpu.tensor(vals, [T, ...shapes[name]!]);
    }
    tensors.o = gpu.nanTensor([T, Hq, D]);
    const ref = new Float64Array(T * Hq * D);
    for (let n = 0; n + 1 < cu.length; n++) {
      const a = cu[n]!;
      const len = cu[n + 1]! - a;
      if (!len) continue;
      const part: Host = {};
      for (const [name, width] of Object.entries(f.widths))
        part[name] = host[name]!.subarray(a * width, (a + len) * width);
      ref.set(f.ref(part, len), a * Hq * D);
    }
    return { tensors, ref };
  }
  /** Encodes `plan.run` and counts the queue writes it makes (none: nothing is shared on the queue timeline). */
  function encode(plan: KernelPlan<never>, enc: GPUCommandEncoder, t: Record<string, GpuTensor>): number {
    const queue = gpu.dev.device.queue;
    let writes = 0;
    const undo = patchMethod(
      queue,
      'writeBuffer',
      (w) => ((...a: unknown[]) => (writes++, (w as (...b: unknown[]) => void).apply(queue, a))) as never,
    );
    try {
      plan.run(enc, t as never);
    } finally {
      undo();
    }
    return writes;
  }
  for (const f of families)
    for (const [shape, cu] of [
      ['one sequence', [0, 37]],
      ['varlen', [0, 5, 29, 29, 40]],
    ] as const)
      for (const target of VARIANTS)
        // the runs' uniform slots are the plan's, not the shape's: the gpu shape is in the extended tier
        it(
          `${f.name} ${shape} (${target}): two runs in one encoder, and in two encoders submitted in reverse, each exact`,
          tier(target === 'gpu'),
          async () => {
            const T = cu[cu.length - 1]!;
            const plan = await f.plan(T, shape === 'varlen' ? [...cu] : undefined, target);
            try {
              const runs = [inputs(f, [...cu], 11), inputs(f, [...cu], 12)];
              const enc = gpu.dev.device.createCommandEncoder();
              for (const r of runs) expect(encode(plan, enc, r.tensors), 'queue writes at run time').toBe(0);
              await gpu.dev.submitAndWait([enc.finish()]);
              for (const [i, r] of runs.entries())
                expectClose(await gpu.read(r.tensors.o!), r.ref, `one encoder, run ${i}`);
              const again = [inputs(f, [...cu], 13), inputs(f, [...cu], 14)];
              const encs = again.map((r) => {
                const e = gpu.dev.device.createCommandEncoder();
                encode(plan, e, r.tensors);
                return e.finish();
              });
              await gpu.dev.submitAndWait([encs[1]!]);
              await gpu.dev.submitAndWait([encs[0]!]);
              for (const [i, r] of again.entries()) expectClose(await gpu.read(r.tensors.o!), r.ref, `encoder ${i}`);
            } finally {
              plan.dispose();
            }
          },
        );
});
