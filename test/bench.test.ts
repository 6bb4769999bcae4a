/**
 * The bench harness: statistics, roofline percentages, the report's JSON/Markdown/SVG shape, and
 * the roofline probes' correctness (the copy copies; every matmul variant multiplies). No timing
 * is asserted.
 */
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  COPY_VARIANTS,
  MATMUL_VARIANTS,
  copyProbe,
  formatTable,
  makeResult,
  matmulProbe,
  matmulSizeOk,
  matmulVariantSupported,
  pctRoofline,
  speedups,
  stats,
  timeGpu,
  writeResults,
  type BenchResult,
  type Roofline,
} from '../bench/harness.js';
import { TesseraError } from '../src/errors.js';
import { compare, passes, Rng, TOLERANCE } from '../src/testing.js';
import { useGpu } from './helpers/gpu.js';

const gpu = useGpu();

const ROOF: Roofline = {
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

describe('stats', () => {
  it('median of odd and even counts, min, max', () => {
    expect(stats([5, 1, 3])).toEqual({ median: 3, min: 1, max: 5 });
    expect(stats([4, 1, 3, 2])).toEqual({ median: 2.5, min: 1, max: 4 });
    expect(stats([7])).toEqual({ median: 7, min: 7, max: 7 });
  });
  it('rejects no samples', () => {
    expect(() => stats([])).toThrow(TesseraError);
  });
});

describe('pctRoofline', () => {
  it('takes the closer bound', () => {
    // 2 GFLOP in 1000 ms = 2 GFLOP/s of 4 = 50%; 1 GB in 1000 ms = 1 GB/s of 2 = 50%.
    expect(pctRoofline(ROOF, { flops: 2e9, bytes: 0, ms: 1000 })).toBeCloseTo(50);
    expect(pctRoofline(ROOF, { flops: 0, bytes: 1e9, ms: 1000 })).toBeCloseTo(50);
    expect(pctRoofline(ROOF, { flops: 4e9, bytes: 1e9, ms: 1000 })).toBeCloseTo(100);
  });
  it('rejects a zero time', () => {
    try {
      pctRoofline(ROOF, { flops: 1, bytes: 1, ms: 0 });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(TesseraError);
      expect((e as TesseraError).argument).toBe('ms');
    }
  });
});

function result(impl: string, T: number, ms: number): BenchResult {
  return makeResult(
    ROOF,
    { suite: 'unit', impl, T, D: 64, H: 1, dtype: 'f32', flops: 2 * 2 * 64 * T * T, bytes: 4 * T * 64 * 4 },
    { median_ms: ms, min_ms: ms * 0.9, max_ms: ms * 1.1, runs: 5 },
  );
}

describe('report', () => {
  const results = [
    result('tessera', 512, 10),
    result('tfjs', 512, 400),
    result('tessera', 1024, 40),
    result('tfjs', 1024, 1600),
  ];

  it('speedups match on configuration', () => {
    const sp = speedups(results);
    expect(sp.get(results[0]!)).toBeCloseTo(40);
    expect(sp.get(results[2]!)).toBeCloseTo(40);
    expect(sp.has(results[1]!)).toBe(false);
    expect(formatTable(results)).toContain('40.0x');
    expect(formatTable(results)).not.toContain('vs dense');
    const withDense = [...results, result('dense', 512, 20)];
    const table = formatTable(withDense);
    expect(table).toContain('vs dense');
    expect(table).toContain('2.0x');
  });

  it('writes JSON of the shared shape, Markdown and SVG plots', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-bench-'));
    try {
      const extra = join(dir, 'copy.json');
      const files = await writeResults(
        undefined,
        'unit',
        { adapter: 'testadapter', roofline: ROOF, results },
        { dir, json: extra },
      );
      const json = JSON.parse(readFileSync(join(dir, 'testadapter', 'unit.json'), 'utf8'));
      expect(Object.keys(json).sort()).toEqual(['adapter', 'results', 'roofline']);
      expect(json.adapter).toBe('testadapter');
      expect(json.roofline.copy_gbps).toBe(2);
      for (const r of json.results) {
        for (const k of [
          'suite',
          'impl',
          'T',
          'D',
          'H',
          'dtype',
          'median_ms',
          'min_ms',
          'max_ms',
          'runs',
          'flops',
          'bytes',
          'pct_roofline',
        ])
          expect(r).toHaveProperty(k);
      }
      expect(JSON.parse(readFileSync(extra, 'utf8'))).toEqual(json);
      const md = readFileSync(join(dir, 'testadapter', 'unit.md'), 'utf8');
      expect(md).toContain('| impl |');
      expect(md).toContain('![unit.svg](unit.svg)');
      const svg = readFileSync(join(dir, 'testadapter', 'unit.svg'), 'utf8');
      expect(svg.startsWith('<svg')).toBe(true);
      expect(svg).toContain('tessera');
      expect(svg).toContain('tfjs');
      expect(files.every((f) => existsSync(f))).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rejects a suite name that is not a file name', async () => {
    await expect(writeResults(undefined, '../x', { adapter: 'a', roofline: ROOF, results: [] })).rejects.toThrow(
      TesseraError,
    );
  });
});

describe('roofline probes', () => {
  it('the copy probe copies every vec4 (n not a multiple of the block)', async () => {
    const dev = gpu.dev;
    const cv = COPY_VARIANTS[dev.adapterClass][0]!;
    const n = cv.wg * cv.items * 3 + 17;
    const src = new Float32Array(n * 4).map((_, i) => i + 0.5);
    const a = gpu.tensor(src, [n * 4]);
    const b = gpu.nanTensor([n * 4 + 4]); // one vec4 past the end must stay untouched
    const probe = await copyProbe(dev, cv);
    const bound = probe.bind(a.buffer, b.buffer, n);
    const t = await timeGpu(dev, bound.encode, { warmup: 0, runs: 1 });
    bound.dispose();
    expect(t.runs).toBe(1);
    const got = await gpu.read(b);
    expect(Array.from(got.subarray(0, n * 4))).toEqual(Array.from(src));
    expect(Array.from(got.subarray(n * 4)).every(Number.isNaN)).toBe(true);
  });

  for (const v of Object.values(MATMUL_VARIANTS)) {
    it(`matmul ${v.name} matches a float64 CPU product`, async () => {
      const dev = gpu.dev;
      if (!matmulVariantSupported(dev, v)) return;
      const [M, N, K] = [64, 128, 64];
      expect(matmulSizeOk(v, M, N, K)).toBe(true);
      const rng = new Rng(7);
      const A = Float32Array.from(rng.normals(M * K));
      const B = Float32Array.from(rng.normals(K * N));
      const ref = new Float64Array(M * N);
      for (let i = 0; i < M; i++)
        for (let k = 0; k < K; k++) for (let j = 0; j < N; j++) ref[i * N + j]! += A[i * K + k]! * B[k * N + j]!;
      const a = gpu.tensor(A, [M, K]);
      const b = gpu.tensor(B, [K, N]);
      const c = gpu.nanTensor([M, N]);
      const probe = await matmulProbe(dev, v);
      const bound = probe.bind(a.buffer, b.buffer, c.buffer, M, N, K);
      await timeGpu(dev, bound.encode, { warmup: 0, runs: 1 });
      bound.dispose();
      const cmp = compare(await gpu.read(c), ref);
      expect(passes(cmp, TOLERANCE.f32), JSON.stringify(cmp)).toBe(true);
    });
  }

  it('rejects a size that does not fit the blocking', async () => {
    const v = MATMUL_VARIANTS.reg8x4!;
    const probe = await matmulProbe(gpu.dev, v);
    const a = gpu.tensor(new Float32Array(16), [16]);
    expect(() => probe.bind(a.buffer, a.buffer, a.buffer, 3, 4, 4)).toThrow(TesseraError);
  });
});
