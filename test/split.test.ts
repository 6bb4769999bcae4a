import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useGpu } from './helpers/gpu.js';
import { TesseraError } from '../src/errors.js';
import { adapterFromEnv, requestDevice, type TesseraDevice } from '../src/gpu/device.js';
import { Rng, TOLERANCE, compare, describeComparison, passes } from '../src/testing.js';
import { createKvCache } from '../src/kv/cache.js';
import { streamAttention } from '../src/stream/exact.js';
import { createSplitKvCache, planSplitDecode } from '../src/stream/split.js';
import { mergePartialsF64 } from '../src/stream/reference.js';
import { streamAttentionReference } from '../kernels/paged/reference.js';
import { tier } from './helpers/tier.js';

const gpu = useGpu();
let second: TesseraDevice;
beforeAll(async () => {
  second = await requestDevice({ ...adapterFromEnv(), label: 'tessera-test-2' });
});
afterAll(() => second?.destroy());

describe('contexts split across devices', () => {
  const cases = [
    { T: 5_000, Hq: 4, Hkv: 2, D: 16, P: 16, stripe: 512, dtype: 'f16' as const, chunk: 700 },
    { T: 3_001, Hq: 2, Hkv: 1, D: 32, P: 64, stripe: 1024, dtype: 'bf16' as const, chunk: 3_001 },
    // extended tier (npm run test:extended): int8 pages (test/stream.test.ts holds int8 streaming in npm test)
    { T: 2_000, Hq: 3, Hkv: 1, D: 12, P: 32, stripe: 256, dtype: 'int8' as const, chunk: 333, extended: true },
  ];
  for (const c of cases) {
    const name = `T${c.T} H${c.Hq}/${c.Hkv} D${c.D} ${c.dtype} stripes of ${c.stripe}: equals one device and float64`;
    it(name, tier('extended' in c), async () => {
      const split = createSplitKvCache([gpu.dev, second], {
        Hkv: c.Hkv,
        D: c.D,
        pageSize: c.P,
        dtype: c.dtype,
        stripeTokens: c.stripe,
        gpuBudgetBytes: 4 << 20,
      });
      const one = createKvCache(gpu.dev, {
        Hkv: c.Hkv,
        D: c.D,
        pageSize: c.P,
        dtype: c.dtype,
        gpuBudgetBytes: 4 << 20,
      });
      const plan = await planSplitDecode(split, { Hq: c.Hq });
      try {
        const rng = new Rng(c.T);
        const seq = split.addSequence();
        const s1 = one.addSequence();
        for (let t = 0; t < c.T; t += c.chunk) {
          const n = Math.min(c.chunk, c.T - t);
          const k = rng.normals(n * c.Hkv * c.D);
          const v = rng.normals(n * c.Hkv * c.D);
          split.append(seq, k, v);
          one.append(s1, k, v);
        }
        // Stripes alternate between the two devices; each holds its own tokens, in order.
        expect(split.length(seq)).toBe(c.T);
        const pl = split.placement(seq);
        expect(pl.map((r) => r.device)).toEqual(pl.map((_, i) => i % 2));
        const held = [0, 0];
        for (const r of pl) held[r.device]! += r.count;
        expect(split.caches.map((x) => x.length(seq))).toEqual(held);
        const all = one.read(s1, 0, c.T);
        const off = [0, 0];
        for (const r of pl) {
          const got = split.caches[r.device]!.read(seq, off[r.device]!, r.count);
          expect(Array.from(got.k)).toEqual(
            Array.from(all.k.subarray(r.start * c.Hkv * c.D, (r.start + r.count) * c.Hkv * c.D)),
          );
          off[r.device]! += r.count;
        }
        const q = rng.normals(c.Hq * c.D);
        const got = await plan.run(seq, q);
        const ref1 = await streamAttention(one, s1, q, { Hq: c.Hq });
        const ref = streamAttentionReference(q, all.k, all.v, { Tq: 1, Tk: c.T, Hq: c.Hq, Hkv: c.Hkv, D: c.D });
        for (const [a, b] of [
          [got.o, ref.o],
          [got.lse, ref.lse],
          [ref1.o, ref.o],
        ] as const) {
          const cmp = compare(a, b);
          expect(passes(cmp, TOLERANCE.f32), describeComparison(cmp)).toBe(true);
        }
        expect(compare(got.o, ref1.o).relRms).toBeLessThan(1e-5);
        // Only the query and the partials move: Hq * D * 4 out, Hq * (Dv + 1) * 4 back, per device.
        expect(got.stats.qBytes).toBe(2 * c.Hq * c.D * 4);
        expect(got.stats.partialBytes).toBe(2 * c.Hq * (c.D + 1) * 4);
        expect(got.stats.perDevice.every((s) => s !== undefined && s.pages > 0)).toBe(true);
      } finally {
        plan.dispose();
        split.dispose();
        one.dispose();
      }
    });
  }

  it('a device without tokens of the sequence sits out; an empty sequence gives o = 0, lse = -inf', async () => {
    const split = createSplitKvCache([gpu.dev, second, gpu.dev], {
      Hkv: 1,
      D: 8,
      pageSize: 16,
      dtype: 'f32',
      stripeTokens: 64,
      gpuBudgetBytes: 1 << 20,
    });
    const plan = await planSplitDecode(split, { Hq: 2 });
    try {
      const seq = split.addSequence();
      const empty = await plan.run(seq, new Float64Array(16));
      expect(Array.from(empty.o)).toEqual(new Array(16).fill(0));
      expect(Array.from(empty.lse)).toEqual([-Infinity, -Infinity]);
      const rng = new Rng(3);
      const k = rng.normals(100 * 8);
      const v = rng.normals(100 * 8);
      split.append(seq, k, v);
      expect(split.caches.map((c) => c.length(seq))).toEqual([64, 36, 0]);
      const q = rng.normals(16);
      const got = await plan.run(seq, q);
      expect(got.stats.perDevice[2]).toBeUndefined();
      const ref = streamAttentionReference(q, k, v, { Tq: 1, Tk: 100, Hq: 2, Hkv: 1, D: 8 });
      const cmp = compare(got.o, ref.o);
      expect(passes(cmp, TOLERANCE.f32), describeComparison(cmp)).toBe(true);
    } finally {
      plan.dispose();
      split.dispose();
    }
  });

  it('the float64 merge of partials is exact (disjoint halves of one softmax)', () => {
    const rng = new Rng(9);
    const s = rng.normals(10).map((x) => 4 * x);
    const v = rng.normals(10);
    const part = (lo: number, hi: number) => {
      const m = Math.max(...s.slice(lo, hi));
      let l = 0;
      let o = 0;
      for (let i = lo; i < hi; i++) {
        l += Math.exp(s[i]! - m);
        o += Math.exp(s[i]! - m) * v[i]!;
      }
      return { o: [o / l], lse: [m + Math.log(l)] };
    };
    const whole = part(0, 10);
    const got = mergePartialsF64([part(0, 3), part(3, 10), { o: [0], lse: [-Infinity] }], 1, 1);
    expect(got.o[0]).toBeCloseTo(whole.o[0]!, 14);
    expect(got.lse[0]).toBeCloseTo(whole.lse[0]!, 14);
  });

  it('rejects bad input', async () => {
    const bad = (f: () => unknown, code: string, argument: string) => {
      let e: unknown;
      try {
        f();
      } catch (x) {
        e = x;
      }
      expect(e).toBeInstanceOf(TesseraError);
      expect((e as TesseraError).code).toBe(code);
      expect((e as TesseraError).argument).toBe(argument);
    };
    bad(() => createSplitKvCache([], { Hkv: 1, D: 8 }), 'E_ARG', 'devices');
    bad(() => createSplitKvCache([gpu.dev, {} as never], { Hkv: 1, D: 8 }), 'E_ARG', 'devices[1]');
    bad(
      () => createSplitKvCache([gpu.dev], { Hkv: 1, D: 8, pageSize: 16, stripeTokens: 100 }),
      'E_ARG',
      'stripeTokens',
    );
    bad(() => createSplitKvCache([gpu.dev, second], { Hkv: 1, D: 8, stores: [] }), 'E_ARG', 'stores');
    const split = createSplitKvCache([gpu.dev, second], {
      Hkv: 1,
      D: 8,
      pageSize: 16,
      stripeTokens: 32,
      gpuBudgetBytes: 1 << 20,
    });
    try {
      const seq = split.addSequence();
      bad(() => split.append(seq, new Float32Array(12), new Float32Array(12)), 'E_SHAPE', 'k');
      bad(() => split.append(seq, new Float32Array(16), new Float32Array(8)), 'E_SHAPE', 'v');
      expect(split.length(seq)).toBe(0);
      const plan = await planSplitDecode(split, { Hq: 2 });
      await expect(plan.run(seq, new Float32Array(3))).rejects.toMatchObject({ code: 'E_SHAPE', argument: 'q' });
      plan.dispose();
      await expect(plan.run(seq, new Float32Array(16))).rejects.toMatchObject({ code: 'E_STATE' });
    } finally {
      split.dispose();
    }
    bad(() => split.addSequence(), 'E_STATE', undefined as never);
  });
});
