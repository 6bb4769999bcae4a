/**
 * The ONNX Runtime baseline of `bench dense`: the hand-written ONNX encoder produces a
 * GroupQueryAttention model that ONNX Runtime accepts and that computes Tessera's attention
 * (checked on ORT's CPU EP against the float64 reference, GQA and ragged sizes); the dense
 * suite's helpers (baseline list, error measure) and the report's subgroup-aware speedups.
 */
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { encodeOnnxModel, gqaModel, ProtoWriter } from '../bench/baseline/onnx.js';
import { formatTable, makeResult, speedups, type Roofline } from '../bench/harness.js';
import { maxAbsDiff, parseBaselines } from '../bench/suites/dense.js';
import { attentionReference } from '../kernels/dense/reference.js';
import { TesseraError } from '../src/errors.js';
import { Rng } from '../src/testing.js';

const ort = createRequire(import.meta.url)('onnxruntime-node') as typeof import('onnxruntime-node');

describe('ONNX encoder', () => {
  it('writes protobuf varints, fixed32 floats and nested messages', () => {
    const b = new ProtoWriter()
      .int(1, 300)
      .float(2, 1.5)
      .string(3, 'ab')
      .message(4, new ProtoWriter().int(1, -1))
      .finish();
    // 300 = 0xAC 0x02; 1.5f = 00 00 C0 3F; -1 as int64 = ten bytes
    expect(Array.from(b)).toEqual([
      0x08, 0xac, 0x02, 0x15, 0, 0, 0xc0, 0x3f, 0x1a, 2, 97, 98, 0x22, 11, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
      0xff, 0xff, 0xff, 0x01,
    ]);
  });

  it('a one-node standard model runs in ONNX Runtime', async () => {
    const bytes = encodeOnnxModel({
      opsets: { '': 17 },
      nodes: [{ op: 'Mul', inputs: ['x', 'c'], outputs: ['y'] }],
      initializers: [{ name: 'c', dtype: 'float', dims: [3], values: [2, -1, 0.5] }],
      inputs: [{ name: 'x', dtype: 'float', shape: ['n', 3] }],
      outputs: [{ name: 'y', dtype: 'float', shape: ['n', 3] }],
    });
    const s = await ort.InferenceSession.create(bytes, { executionProviders: ['cpu'] });
    const y = await s.run({ x: new ort.Tensor('float32', Float32Array.from([1, 2, 3, 4, 5, 6]), [2, 3]) });
    expect(Array.from(y.y!.data as Float32Array)).toEqual([2, -2, 1.5, 8, -5, 3]);
    await s.release();
  });

  for (const c of [
    { T: 7, Hq: 1, Hkv: 1, D: 16 },
    { T: 33, Hq: 4, Hkv: 2, D: 8 },
  ]) {
    it(`GroupQueryAttention T=${c.T} Hq=${c.Hq} Hkv=${c.Hkv} D=${c.D} matches the float64 causal reference (ORT CPU EP)`, async () => {
      const rng = new Rng(7 + c.T);
      const q = Float32Array.from(rng.normals(c.T * c.Hq * c.D));
      const k = Float32Array.from(rng.normals(c.T * c.Hkv * c.D));
      const v = Float32Array.from(rng.normals(c.T * c.Hkv * c.D));
      const s = await ort.InferenceSession.create(gqaModel(c), { executionProviders: ['cpu'] });
      const out = await s.run({
        query: new ort.Tensor('float32', q, [1, c.T, c.Hq * c.D]),
        key: new ort.Tensor('float32', k, [1, c.T, c.Hkv * c.D]),
        value: new ort.Tensor('float32', v, [1, c.T, c.Hkv * c.D]),
      });
      await s.release();
      const got = out.output!.data as Float32Array;
      expect(out.output!.dims).toEqual([1, c.T, c.Hq * c.D]);
      const ref = attentionReference(q, k, v, { Tq: c.T, Hq: c.Hq, Hkv: c.Hkv, D: c.D, causal: true });
      const d = maxAbsDiff(ref.o, got);
      expect(d).toBeLessThan(1e-5);
      // causal: token 0 sees only itself, so its output is v's row 0 (head 0)
      expect(maxAbsDiff(ref.o.subarray(0, c.D), v.subarray(0, c.D))).toBeLessThan(1e-6);
    });
  }
});

describe('dense suite helpers', () => {
  it('parses --baseline lists and rejects unknown names', () => {
    expect(parseBaselines('tfjs,ort')).toEqual(['tfjs', 'ort']);
    expect(parseBaselines('ort')).toEqual(['ort']);
    expect(parseBaselines('none')).toEqual([]);
    expect(() => parseBaselines('tfjs,torch')).toThrow(TesseraError);
    try {
      parseBaselines('xla');
    } catch (e) {
      expect((e as TesseraError).code).toBe('E_ARG');
      expect(String((e as Error).message)).toContain('--baseline');
    }
  });

  it('maxAbsDiff finds the largest difference and lets NaN through', () => {
    expect(maxAbsDiff([1, 2, 3], [1, 2.5, 2])).toBe(1);
    expect(maxAbsDiff([1, NaN], [1, 1])).toBeNaN();
    expect(() => maxAbsDiff([1], [1, 2])).toThrow(TesseraError);
  });

  it('speedups over ort pair rows by subgroups; the table shows subgroups and the error', () => {
    const roof: Roofline = {
      copy_gbps: 2,
      matmul_gflops: 4,
      source: 'timestamp',
      copy: { variant: 'x', bytes: 1, median_ms: 1, min_ms: 1, max_ms: 1, runs: 5 },
      matmul: {
        variant: 'reg8x4',
        M: 64,
        N: 64,
        K: 64,
        median_ms: 1,
        min_ms: 1,
        max_ms: 1,
        runs: 5,
        variants: { reg8x4: 4 },
      },
      adapter: 'test',
      adapter_class: 'cpu',
    };
    const row = (impl: string, ms: number, extra: Record<string, unknown>) => ({
      ...makeResult(
        roof,
        { suite: 'dense', impl, T: 512, D: 64, H: 1, dtype: 'f32', flops: 1e6, bytes: 1e3 },
        { median_ms: ms, min_ms: ms, max_ms: ms, runs: 3 },
      ),
      ...extra,
    });
    const rs = [
      row('tessera', 10, { subgroups: true }),
      row('tessera', 40, { subgroups: false }),
      row('ort', 30, { subgroups: true, max_abs_diff: 0.4 }),
      row('ort', 50, { subgroups: false, max_abs_diff: 1e-6 }),
      row('tfjs', 100, { max_abs_diff: 5e-7 }),
    ];
    const sp = speedups(rs, 'ort');
    expect(sp.get(rs[0]!)).toBeCloseTo(3);
    expect(sp.get(rs[1]!)).toBeCloseTo(1.25);
    expect(speedups(rs, 'tfjs').get(rs[1]!)).toBeCloseTo(2.5);
    const table = formatTable(rs);
    expect(table).toContain('vs ort');
    expect(table).toContain('subgroups');
    expect(table).toContain('4.0e-1');
    expect(table).toContain('3.0x');
  });
});
