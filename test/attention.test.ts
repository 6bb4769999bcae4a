import { readFileSync } from 'node:fs';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { patchMethod, useGpu, type GpuFixture } from './helpers/gpu.js';
import { TesseraError } from '../src/errors.js';
import { Rng, TOLERANCE, compare, describeComparison, passes } from '../src/testing.js';
import { quantizePageInt8, writeRows } from '../src/kv/codec.js';
import { roundTo, type FloatDType, type GpuTensor } from '../src/tensor.js';
import {
  attentionKeysPerPart,
  attentionLoopCost,
  attentionPackRows,
  batchAttention,
  batchAttentionReference,
  pageLayout,
  planBatchAttention,
  readPagedSequence,
  type BatchAttentionOptions,
  type BatchSchedule,
  type KvDType,
} from '../kernels/attention/index.js';
import { attention } from '../kernels/dense/index.js';
import { slidingWindowAttention } from '../kernels/sliding_window/index.js';
import { blockSparseAttention } from '../kernels/block_sparse/index.js';
import { mobaVarlen } from '../kernels/moba/index.js';
import { dsa } from '../kernels/dsa/index.js';
import { tier } from './helpers/tier.js';

const gpu = useGpu();

interface Pool {
  bytes: Uint8Array;
  table: Required<BatchSchedule>;
  /** K/V as stored (dequantised), per sequence. */
  seqs: { k: Float64Array; v: Float64Array }[];
  poolPages: number;
}

/**
 * Writes sequences of the given lengths into a pool through the cache's own page writers
 * (src/kv/codec), pages in scrambled slot order, with `spare` unused pages (filled with NaN where
 * the dtype has one) in between.
 */
/** Row offsets of consecutive lengths: [0, l0, l0 + l1, ...] (an indptr / cuSeqlens). */
function offsets(lens: readonly number[]): number[] {
  const out = [0];
  for (const n of lens) out.push(out[out.length - 1]! + n);
  return out;
}

/**
 * A ragged batch of f16-rounded K/V and f32 queries drawn from `rng` (K, then V, then Q): key and
 * query lengths per sequence, their offsets, and the totals N (keys) and T (queries).
 */
function raggedBatch(
  rng: Rng,
  lens: readonly number[],
  qLens: readonly number[],
  d: { Hq: number; Hkv: number; D: number; Dv: number },
) {
  const kvIndptr = offsets(lens);
  const qoIndptr = offsets(qLens);
  const N = kvIndptr[kvIndptr.length - 1]!;
  const T = qoIndptr[qoIndptr.length - 1]!;
  const kv = roundTo(rng.normals(N * d.Hkv * d.D), 'f16');
  const vv = roundTo(rng.normals(N * d.Hkv * d.Dv), 'f16');
  const qv = rng.normals(T * d.Hq * d.D);
  return { kvIndptr, qoIndptr, N, T, kv, vv, qv };
}

function buildPool(
  lens: number[],
  qLens: number[],
  o: { Hkv: number; D: number; Dv: number; pageSize: number; dtype: KvDType; seed: number; spare?: number },
): Pool {
  const rng = new Rng(o.seed);
  const L = pageLayout(o.pageSize, o.Hkv, o.D, o.Dv, o.dtype);
  const pagesPer = lens.map((n) => Math.ceil(n / o.pageSize));
  const total = pagesPer.reduce((a, b) => a + b, 0);
  const poolPages = total + (o.spare ?? 3);
  // A scrambled permutation of slots.
  const slots = Array.from({ length: poolPages }, (_, i) => i);
  for (let i = slots.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [slots[i], slots[j]] = [slots[j]!, slots[i]!];
  }
  const bytes = new Uint8Array(poolPages * L.pageBytes);
  // Unused pages: NaN bits everywhere (0xff bytes are NaN in f32/f16/bf16; int8 -1 with NaN scales).
  bytes.fill(0xff);
  const kvIndptr = [0];
  const kvIndices: number[] = [];
  const kvLastPageLen: number[] = [];
  let next = 0;
  lens.forEach((n, b) => {
    const k = rng.normals(n * o.Hkv * o.D);
    const v = rng.normals(n * o.Hkv * o.Dv);
    for (let p = 0; p < pagesPer[b]!; p++) {
      const slot = slots[next++]!;
      kvIndices.push(slot);
      const page = bytes.subarray(slot * L.pageBytes, (slot + 1) * L.pageBytes);
      page.fill(0);
      const rows = Math.min(o.pageSize, n - p * o.pageSize);
      if (o.dtype === 'int8') {
        // [Hkv, P, width] f32 values, as the cache hands them to the quantiser.
        const kv = new Float32Array(o.Hkv * o.pageSize * o.D);
        const vv = new Float32Array(o.Hkv * o.pageSize * o.Dv);
        for (let r = 0; r < rows; r++) {
          for (let h = 0; h < o.Hkv; h++) {
            for (let d = 0; d < o.D; d++)
              kv[(h * o.pageSize + r) * o.D + d] = k[((p * o.pageSize + r) * o.Hkv + h) * o.D + d]!;
            for (let d = 0; d < o.Dv; d++)
              vv[(h * o.pageSize + r) * o.Dv + d] = v[((p * o.pageSize + r) * o.Hkv + h) * o.Dv + d]!;
          }
        }
        quantizePageInt8(page, L, kv, vv, rows);
      } else {
        writeRows(page, L, 0, k, p * o.pageSize, rows, 0);
        writeRows(page, L, 1, v, p * o.pageSize, rows, 0);
      }
      // Rows past the last valid one: NaN, never visible.
      if (o.dtype !== 'int8' && rows < o.pageSize) {
        const nan = new Float64Array((o.pageSize - rows) * o.Hkv * Math.max(o.D, o.Dv)).fill(NaN);
        writeRows(page, L, 0, nan, 0, o.pageSize - rows, rows);
        writeRows(page, L, 1, nan, 0, o.pageSize - rows, rows);
      }
    }
    kvIndptr.push(kvIndices.length);
    kvLastPageLen.push(n === 0 ? 0 : n - (pagesPer[b]! - 1) * o.pageSize);
  });
  const qoIndptr = offsets(qLens);
  const table = { qoIndptr, kvIndptr, kvIndices, kvLastPageLen };
  const seqs = lens.map((_, b) => readPagedSequence(bytes, L, kvIndptr, kvIndices, kvLastPageLen, b));
  return { bytes, table, seqs, poolPages };
}

interface Case {
  lens: number[];
  /** New query tokens per sequence (default 1 each: decode). */
  qLens?: number[];
  Hq: number;
  Hkv: number;
  D: number;
  Dv?: number;
  pageSize: number;
  dtype: KvDType;
  qDtype?: FloatDType;
  oDtype?: FloatDType;
  causal?: boolean;
  window?: number;
  sinks?: number;
  sinkLogit?: boolean;
  target: 'cpu' | 'gpu';
  kvChunk?: number;
  maxSplits?: number;
  scale?: number;
  /** Packed rows (default: the plan's choice). */
  rows?: number;
  /** cpu: subgroup packs (main_cpu_sg) on or off (default: the plan's choice). */
  subgroups?: boolean;
  /** gpu: workgroup-memory tiles (main_gpu_tile) on or off (default: the plan's choice). */
  tiles?: boolean;
  /** The plan's maxQTokens (default: the step's tokens + 3). */
  maxQTokens?: number;
}

export async function runCase(c: Case, g: GpuFixture = gpu): Promise<{ parts: number; rows: number; lanes: number }> {
  const Dv = c.Dv ?? c.D;
  const qLens = c.qLens ?? c.lens.map(() => 1);
  const pool = buildPool(c.lens, qLens, {
    Hkv: c.Hkv,
    D: c.D,
    Dv,
    pageSize: c.pageSize,
    dtype: c.dtype,
    seed: c.lens.length * 7 + c.D,
  });
  const totalQ = qLens.reduce((a, b) => a + b, 0);
  const rng = new Rng(c.D + totalQ);
  const qDtype = c.qDtype ?? 'f32';
  const oDtype = c.oDtype ?? qDtype;
  const qv = roundTo(rng.normals(totalQ * c.Hq * c.D), qDtype);
  const sinks = c.sinkLogit ? rng.normals(c.Hq) : undefined;
  const plan = await planBatchAttention(g.dev, {
    maxBatch: c.lens.length + 1,
    maxQTokens: c.maxQTokens ?? totalQ + 3,
    maxPages: pool.table.kvIndices.length + 2,
    poolPages: pool.poolPages,
    Hq: c.Hq,
    Hkv: c.Hkv,
    D: c.D,
    Dv,
    pageSize: c.pageSize,
    kvDtype: c.dtype,
    qDtype,
    oDtype,
    causal: c.causal,
    window: c.window,
    sinks: c.sinks,
    sinkLogit: c.sinkLogit,
    scale: c.scale,
    target: c.target,
    kvChunk: c.kvChunk,
    maxSplits: c.maxSplits,
    rows: c.rows,
    subgroups: c.subgroups,
    tiles: c.tiles,
  });
  try {
    if (c.rows !== undefined) expect(plan.rows).toBe(c.rows);
    if (c.subgroups !== undefined) expect(plan.lanes).toBe(c.subgroups ? 4 : 1);
    if (c.tiles !== undefined) expect(plan.lanes).toBe(c.tiles ? 64 / plan.rows : 1);
    const info = plan.schedule(pool.table);
    const q = g.tensor(qv, [totalQ, c.Hq, c.D], qDtype);
    const o = g.nanTensor([totalQ, c.Hq, Dv], oDtype);
    const lse = g.nanTensor([totalQ, c.Hq], 'f32');
    const pages = g.dev.upload(pool.bytes, { label: 'test.pool' });
    const sinkT = sinks ? g.tensor(sinks, [c.Hq], 'f32') : undefined;
    try {
      const enc = g.dev.device.createCommandEncoder();
      plan.run(enc, { q, o, lse, pages, sinkLogits: sinkT });
      await g.dev.submitAndWait([enc.finish()]);
      const ref = batchAttentionReference(qv, pool.seqs, pool.table.qoIndptr, {
        Hq: c.Hq,
        Hkv: c.Hkv,
        D: c.D,
        Dv,
        causal: c.causal,
        scale: c.scale,
        window: c.window,
        sinks: c.sinks,
        sinkLogits: sinks,
      });
      const co = compare(await g.read(o), ref.o);
      const cl = compare(await g.read(lse), ref.lse);
      // The reference sees the stored K/V and the rounded q: f32 accuracy, except the output's own rounding.
      const tol = TOLERANCE[oDtype];
      expect(passes(co, tol), `o ${describeComparison(co)}`).toBe(true);
      expect(passes(cl, TOLERANCE.f32), `lse ${describeComparison(cl)}`).toBe(true);
    } finally {
      g.dev.destroyBuffer(pages);
    }
    return { parts: info.parts, rows: plan.rows, lanes: plan.lanes };
  } finally {
    plan.dispose();
  }
}

describe('attention core: paged decode and prefill vs float64', () => {
  // The core tier runs the non-causal test (every KV dtype, q/o f16 and bf16, both shapes); window
  // and sinks on pages run there in the masked-keys and loop-cap tests below and the docs example,
  // sink logit and split-K in the packs matrix's core rows (ragged source); the rest of this
  // describe (MLA included) runs in the extended tier.
  for (const target of ['cpu', 'gpu'] as const) {
    // Packs of 4 rows in the ragged decode cases and the second prefill case (the plan's default
    // pack follows the capacities, which differ per case: more pack sizes compiled for one
    // behaviour); every pack size runs in the packed-rows describes below.
    it(`${target}: ragged decode, B 1..4, pageSize 16, f16 pages, GQA 8/2`, { tags: ['extended'] }, async () => {
      for (const lens of [[17], [1, 63], [65, 300, 17], [1, 17, 63, 65]]) {
        await runCase({ lens, Hq: 8, Hkv: 2, D: 32, pageSize: 16, dtype: 'f16', rows: 4, target });
      }
    });
    it(
      `${target}: prefill chunks against cached pages (bottom-right causal), pageSize 64`,
      { tags: ['extended'] },
      async () => {
        await runCase({
          lens: [65, 300, 17],
          qLens: [5, 30, 17],
          Hq: 4,
          Hkv: 2,
          D: 32,
          pageSize: 64,
          dtype: 'f32',
          target,
        });
        await runCase({
          lens: [1, 63, 64],
          qLens: [1, 0, 9],
          Hq: 4,
          Hkv: 4,
          D: 32,
          pageSize: 16,
          dtype: 'f32',
          rows: 4,
          target,
        });
      },
    );
    if (target === 'gpu')
      it(
        'gpu: workgroup-memory tiles (main_gpu_tile) over pages: f16, int8, bf16; window + sinks + sink logit, split-K, non-causal',
        { tags: ['extended'] },
        async () => {
          for (const dtype of ['f16', 'int8'] as const)
            await runCase({
              lens: [300, 65, 130],
              qLens: [90, 65, 40],
              Hq: 4,
              Hkv: 2,
              D: 32,
              pageSize: 16,
              dtype,
              window: 100,
              sinks: 3,
              sinkLogit: true,
              kvChunk: 64,
              target,
              tiles: true,
            });
          await runCase({
            lens: [200, 1, 70],
            qLens: [100, 1, 70],
            Hq: 2,
            Hkv: 2,
            D: 64,
            pageSize: 64,
            dtype: 'bf16',
            qDtype: 'f16',
            causal: false,
            target,
            tiles: true,
          });
        },
      );
    it(`${target}: window + sinks + sink logit, prefill and decode`, { tags: ['extended'] }, async () => {
      // cpu: this step fills the subgroup packs, so only main_cpu_sg runs (subgroups: true spares the
      // plan the main_cpu fallback it would compile for steps that do not fill them)
      await runCase({
        lens: [300, 65, 17],
        qLens: [20, 3, 17],
        Hq: 8,
        Hkv: 2,
        D: 32,
        pageSize: 16,
        dtype: 'f16',
        window: 40,
        sinks: 4,
        sinkLogit: true,
        subgroups: target === 'cpu' && gpu.dev.features.subgroups ? true : undefined,
        target,
      });
      await runCase({
        lens: [300, 1],
        Hq: 4,
        Hkv: 1,
        D: 32,
        pageSize: 16,
        dtype: 'f32',
        window: 17,
        sinks: 0,
        target,
      });
    });
    it(`${target}: non-causal, every KV dtype, q/o f16 and bf16`, async () => {
      // Every KV dtype on both shapes (each is its own pipeline); q/o dtypes paired with them.
      await runCase({
        lens: [63, 17],
        qLens: [3, 2],
        Hq: 4,
        Hkv: 2,
        D: 32,
        pageSize: 16,
        dtype: 'f32',
        causal: false,
        target,
      });
      await runCase({
        lens: [63, 17],
        qLens: [3, 2],
        Hq: 4,
        Hkv: 2,
        D: 32,
        pageSize: 16,
        dtype: 'int8',
        causal: false,
        target,
      });
      await runCase({
        lens: [100, 17],
        qLens: [4, 1],
        Hq: 4,
        Hkv: 2,
        D: 32,
        pageSize: 16,
        dtype: 'f16',
        qDtype: 'f16',
        causal: false,
        target,
      });
      await runCase({
        lens: [100],
        qLens: [2],
        Hq: 4,
        Hkv: 2,
        D: 32,
        pageSize: 16,
        dtype: 'bf16',
        qDtype: 'bf16',
        oDtype: 'f32',
        target,
      });
    });
    it(`${target}: split-K merged by kernels/merge`, { tags: ['extended'] }, async () => {
      const r = await runCase({
        lens: [300, 65, 1],
        qLens: [2, 1, 1],
        Hq: 4,
        Hkv: 2,
        D: 32,
        pageSize: 16,
        dtype: 'f32',
        kvChunk: 48,
        target,
      });
      expect(r.parts).toBe(7);
      await runCase({
        lens: [300, 40],
        qLens: [9, 1],
        Hq: 4,
        Hkv: 2,
        D: 32,
        pageSize: 16,
        dtype: 'f16',
        oDtype: 'f16',
        kvChunk: 32,
        window: 50,
        sinks: 3,
        sinkLogit: true,
        target,
      });
    });
    // The MLA head dims (Dqk 576, Dv 512) are the point here, not the page dtype (every dtype runs
    // at D 32 above): one plan shape per target (f16 pages, split-K), so two 576 x 512 pipelines
    // compile on cpu (subgroup and plain packs of 4) and one on gpu. Step A fills the subgroup
    // packs (2 tokens x G 16 = 4 lanes x 4 rows x 2 sequences: main_cpu_sg), step B does not
    // (1 token in a batch of 2: main_cpu).
    it(
      `${target}: MLA absorbed decode (Hq 16, Hkv 1, Dqk 576, Dv 512), f16 pages, split-K`,
      { tags: ['extended'], timeout: 400_000 },
      async () => {
        const mla = { Hq: 16, Hkv: 1, D: 576, Dv: 512, pageSize: 16, dtype: 'f16', kvChunk: 8, target } as const;
        const rows = target === 'cpu' ? 4 : undefined;
        // DeepSeek-V3's scale (1/sqrt(128 + 64))
        const a = await runCase({ ...mla, lens: [33, 5], scale: 1 / Math.sqrt(192), rows });
        expect(a.parts).toBeGreaterThan(1);
        const b = await runCase({ ...mla, lens: [20, 9], qLens: [1, 0], rows });
        expect(b.rows).toBe(a.rows);
      },
    );
  }
});

describe('attention core: packed rows (query heads of one KV head share each K/V load) vs float64', () => {
  // Packs of 8 on SwiftShader; 4 on llvmpipe (loop-capped), whose compiler takes minutes over 8.
  const R8 = () => (Number.isFinite(gpu.dev.loopLimit) ? 4 : 8);
  for (const target of ['cpu', 'gpu'] as const) {
    // The core tier runs the first case (G = 1 in packs of 2); the extended tier the other four
    // (each another pipeline: G 4 and 8, packs of 2 and 4 part empty, D 40).
    it(`${target}: GQA 1 in packs of 2 (every pack has an empty slot); ragged prefill + decode; f32 pages`, async () => {
      // G = 1 with a pack of 2: every pack has an empty slot.
      await runCase({
        lens: [65, 300, 17],
        qLens: [3, 1, 17],
        Hq: 2,
        Hkv: 2,
        D: 32,
        pageSize: 16,
        dtype: 'f32',
        rows: 2,
        target,
      });
    });
    it(
      `${target}: GQA 4, 8 and G not a multiple of the pack; ragged prefill + decode; f32, f16, int8 pages`,
      { tags: ['extended'] },
      async () => {
        await runCase({
          lens: [1, 130, 47],
          qLens: [1, 2, 1],
          Hq: 8,
          Hkv: 2,
          D: 32,
          pageSize: 16,
          dtype: 'f16',
          rows: 4,
          target,
        });
        await runCase({
          lens: [130, 33],
          qLens: [5, 1],
          Hq: 8,
          Hkv: 1,
          D: 32,
          Dv: 16,
          pageSize: 16,
          dtype: 'int8',
          rows: R8(),
          target,
        });
        // G = 3 in packs of 2 and G = 6 in packs of 4: the last pack of each token is part empty.
        await runCase({
          lens: [70, 9],
          qLens: [2, 3],
          Hq: 6,
          Hkv: 2,
          D: 32,
          pageSize: 16,
          dtype: 'f16',
          rows: 2,
          target,
        });
        await runCase({
          lens: [70, 9],
          qLens: [2, 3],
          Hq: 6,
          Hkv: 1,
          D: 40,
          pageSize: 16,
          dtype: 'f32',
          rows: 4,
          target,
        });
      },
    );
    if (target === 'cpu')
      it(
        'cpu: subgroup packs from int8 and bf16 pages (per-key scales), window + sinks + sink logit, split-K',
        { tags: ['extended'] },
        async (t) => {
          if (!gpu.dev.features.subgroups) return t.skip();
          // default plan for 2 x 48-token chunks takes subgroup packs; a decode step on it runs main_cpu
          const r = await runCase({
            lens: [60, 48],
            qLens: [48, 48],
            Hq: 4,
            Hkv: 4,
            D: 32,
            pageSize: 16,
            dtype: 'f16',
            target,
          });
          expect(r.lanes).toBe(4);
          const d = {
            lens: [60, 48],
            qLens: [48, 1],
            Hq: 4,
            Hkv: 4,
            D: 32,
            pageSize: 16,
            dtype: 'f16',
            maxQTokens: 100,
          };
          expect((await runCase({ ...d, dtype: 'f16', target })).lanes).toBe(4);
          for (const dtype of ['int8', 'bf16'] as const)
            await runCase({
              lens: [90, 41],
              qLens: [37, 41],
              Hq: 4,
              Hkv: 2,
              D: 32,
              pageSize: 16,
              dtype,
              window: 30,
              sinks: 3,
              sinkLogit: true,
              kvChunk: 48,
              rows: 2,
              subgroups: true,
              target,
            });
        },
      );
    it(
      `${target}: packed rows with window + sinks + sink logit, split-K, f16 q/o`,
      { tags: ['extended'] },
      async () => {
        const r = await runCase({
          lens: [300, 40],
          qLens: [9, 1],
          Hq: 8,
          Hkv: 1,
          D: 32,
          pageSize: 16,
          dtype: 'f16',
          qDtype: 'f16',
          kvChunk: 32,
          window: 50,
          sinks: 3,
          sinkLogit: true,
          rows: R8(),
          // cpu: the step fills the subgroup packs (only main_cpu_sg runs; no main_cpu fallback compiled)
          subgroups: target === 'cpu' && gpu.dev.features.subgroups ? true : undefined,
          target,
        });
        expect(r.parts).toBeGreaterThan(1);
        await runCase({
          lens: [200, 1],
          qLens: [4, 1],
          Hq: 12,
          Hkv: 2,
          D: 32,
          pageSize: 16,
          dtype: 'int8',
          window: 33,
          sinks: 2,
          sinkLogit: true,
          kvChunk: 48,
          rows: 4,
          target,
        });
      },
    );
    it(
      `${target}: ragged K/V source with packs of 4 (G = 6), sink logit and split-K`,
      { tags: ['extended'] },
      async () => {
        const g = gpu;
        const Hq = 6,
          Hkv = 1,
          D = 32,
          Dv = 32;
        const lens = [33, 1, 150];
        const qLens = [5, 1, 3];
        const rng = new Rng(11);
        const { kvIndptr, qoIndptr, N, T, kv, vv, qv } = raggedBatch(rng, lens, qLens, { Hq, Hkv, D, Dv });
        const sinks = rng.normals(Hq);
        const plan = await planBatchAttention(g.dev, {
          source: 'ragged',
          maxBatch: 4,
          maxQTokens: 16,
          maxKvTokens: 200,
          Hq,
          Hkv,
          D,
          Dv,
          kvDtype: 'f16',
          target,
          rows: 4,
          kvChunk: 64,
          sinkLogit: true,
        });
        try {
          expect(plan.rows).toBe(4);
          expect(plan.schedule({ qoIndptr, kvIndptr }).parts).toBe(3);
          const o = g.nanTensor([T, Hq, Dv]);
          const lse = g.nanTensor([T, Hq]);
          const enc = g.dev.device.createCommandEncoder();
          plan.run(enc, {
            q: g.tensor(qv, [T, Hq, D]),
            o,
            lse,
            k: g.tensor(kv, [N, Hkv, D], 'f16'),
            v: g.tensor(vv, [N, Hkv, Dv], 'f16'),
            sinkLogits: g.tensor(sinks, [Hq]),
          });
          await g.dev.submitAndWait([enc.finish()]);
          const seqs = lens.map((_, b) => ({
            k: kv.subarray(kvIndptr[b]! * Hkv * D, kvIndptr[b + 1]! * Hkv * D),
            v: vv.subarray(kvIndptr[b]! * Hkv * Dv, kvIndptr[b + 1]! * Hkv * Dv),
          }));
          const ref = batchAttentionReference(qv, seqs, qoIndptr, { Hq, Hkv, D, Dv, sinkLogits: sinks });
          const co = compare(await g.read(o), ref.o);
          const cl = compare(await g.read(lse), ref.lse);
          expect(passes(co, TOLERANCE.f32), describeComparison(co)).toBe(true);
          expect(passes(cl, TOLERANCE.f32), describeComparison(cl)).toBe(true);
        } finally {
          plan.dispose();
        }
      },
    );
  }
  it('picks the pack from Hq / Hkv and refuses unsupported packs', async () => {
    expect(attentionPackRows('cpu', 4, 128)).toBe(4);
    expect(attentionPackRows('cpu', 3, 128)).toBe(2);
    expect(attentionPackRows('cpu', 1, 128)).toBe(1);
    expect(attentionPackRows('gpu', 16, 128)).toBe(8);
    expect(attentionPackRows('gpu', 16, 576)).toBe(4);
    // The loop bound grows with the pack, so packed parts cover fewer keys under llvmpipe's cap.
    expect(attentionKeysPerPart(65535, 'cpu', 128, 128, 8, 4)).toBeLessThan(
      attentionKeysPerPart(65535, 'cpu', 128, 128, 8, 1),
    );
    const base = { maxBatch: 1, maxQTokens: 1, maxPages: 4, Hq: 8, Hkv: 2, D: 32, pageSize: 16 };
    await expect(planBatchAttention(gpu.dev, { ...base, rows: 3 })).rejects.toMatchObject({ code: 'E_UNSUPPORTED' });
    await expect(planBatchAttention(gpu.dev, { ...base, rows: 16 })).rejects.toMatchObject({ code: 'E_ARG' });
  });
});

describe('attention core: packs of consecutive tokens (MHA and GQA prefill share each K/V load) vs float64', () => {
  // Sequences: a prefill, one with more new queries than keys (earlyQueries), a chunk against
  // earlier keys, a decode row: packs of 1..8 rows span tokens, cross no sequence, and mask per row.
  const lens = [37, 5, 70, 2];
  const qLens = [37, 7, 20, 1];
  const kvIndptr = offsets(lens);
  const qoIndptr = offsets(qLens);
  const N = kvIndptr[4]!;
  const T = qoIndptr[4]!;
  const D = 16;
  const masks = [
    { causal: true, window: 9, sinks: 2, sinkLogit: true, kvChunk: 16 },
    { causal: true, window: 0, sinks: 0, sinkLogit: false, kvChunk: undefined },
    { causal: false, window: 0, sinks: 0, sinkLogit: false, kvChunk: 32 },
  ];
  // the ragged plans of this block: 4 sequences of T tokens over N keys, f32, head dim D
  const packPlan = (o: Partial<BatchAttentionOptions> & Pick<BatchAttentionOptions, 'Hq' | 'Hkv'>) =>
    planBatchAttention(gpu.dev, {
      source: 'ragged',
      maxBatch: 4,
      maxQTokens: T,
      maxKvTokens: N,
      D,
      kvDtype: 'f32',
      earlyQueries: true,
      ...o,
    });
  // The matrix below, split in two tiers: the core runs rows 4 (window + sinks + sink logit and
  // split-K with shared loads, G = 1; causal without, G = 2) and rows 8 (causal with shared loads,
  // G = 1; non-causal and split-K without, G = 1): every mask, both load choices and both G on 4
  // pipelines per target, 2 of which the NaN-key and earlyQueries tests run too; the extended tier
  // runs the other combinations (rows 1 and 2, and the rest of 4 and 8).
  const CORE_PACKS = [
    [4, 0],
    [4, 1],
    [8, 1],
    [8, 2],
  ] as const;
  async function packsMatrix(target: 'cpu' | 'gpu', tier: 'core' | 'extended') {
    const g = gpu;
    // cpu with subgroups: both the shared-load packs (main_cpu_sg) and the plain ones; gpu: both
    // the workgroup-memory tiles of 64 rows (main_gpu_tile) and main_gpu. The pack code depends on
    // rows and on the shared loads, the masking on rows and the mask: every rows value runs with
    // every mask, and the shared-load choice and G alternate so that every pair of values of
    // (rows, shared loads, mask, G) runs together in the two tiers (12 pipelines instead of the 24
    // of the full cross product). llvmpipe's compiler takes minutes over packs of 8: packs up to 4
    // there (its core tier runs rows 4 with the first two masks).
    const sgs = target === 'cpu' ? (g.dev.features.subgroups ? [true, false] : [undefined]) : [true, false];
    const rowsList = Number.isFinite(g.dev.loopLimit) ? [1, 4] : [1, 2, 4, 8];
    const heads = [
      [2, 2],
      [4, 2],
    ] as const;
    const combos = rowsList
      .flatMap((rows, i) =>
        masks.map((mk, m) => ({
          rows,
          subgroups: sgs[(i + m) % sgs.length],
          mk,
          m,
          heads: heads[(i + Math.floor(m / 2) + m) % 2]!,
        })),
      )
      .filter((c) => CORE_PACKS.some(([r, m]) => r === c.rows && m === c.m) === (tier === 'core'));
    const data = new Map<number, ReturnType<typeof makeData>>();
    function makeData(Hq: number, Hkv: number) {
      const rng = new Rng(40 + Hq);
      const kv = rng.normals(N * Hkv * D);
      const vv = rng.normals(N * Hkv * D);
      const qv = rng.normals(T * Hq * D);
      const sinkLogits = rng.normals(Hq);
      const seqs = lens.map((_, b) => ({
        k: kv.subarray(kvIndptr[b]! * Hkv * D, kvIndptr[b + 1]! * Hkv * D),
        v: vv.subarray(kvIndptr[b]! * Hkv * D, kvIndptr[b + 1]! * Hkv * D),
      }));
      return { kv, vv, qv, sinkLogits, seqs };
    }
    for (const { rows, subgroups, mk, heads: hh } of combos) {
      const [Hq, Hkv] = hh;
      if (!data.has(Hq)) data.set(Hq, makeData(Hq, Hkv));
      const { kv, vv, qv, sinkLogits, seqs } = data.get(Hq)!;
      const ref = batchAttentionReference(qv, seqs, qoIndptr, {
        Hq,
        Hkv,
        D,
        causal: mk.causal,
        window: mk.window,
        sinks: mk.sinks,
        sinkLogits: mk.sinkLogit ? sinkLogits : undefined,
      });
      const plan = await packPlan({
        Hq,
        Hkv,
        causal: mk.causal,
        window: mk.window,
        sinks: mk.sinks,
        sinkLogit: mk.sinkLogit,
        kvChunk: mk.kvChunk,
        rows,
        subgroups: target === 'cpu' ? subgroups : undefined,
        tiles: target === 'gpu' ? subgroups : undefined,
        target,
      });
      try {
        const info = plan.schedule({ qoIndptr, kvIndptr });
        if (mk.kvChunk === 16) expect(info.parts).toBe(5);
        const o = g.nanTensor([T, Hq, D]);
        const lse = g.nanTensor([T, Hq]);
        const enc = g.dev.device.createCommandEncoder();
        plan.run(enc, {
          q: g.tensor(qv, [T, Hq, D]),
          o,
          lse,
          k: g.tensor(kv, [N, Hkv, D]),
          v: g.tensor(vv, [N, Hkv, D]),
          ...(mk.sinkLogit ? { sinkLogits: g.tensor(sinkLogits, [Hq]) } : {}),
        });
        await g.dev.submitAndWait([enc.finish()]);
        expect(plan.lanes).toBe(subgroups ? (target === 'cpu' ? 4 : 64 / rows) : 1);
        const what = `Hq ${Hq} Hkv ${Hkv} rows ${rows} ${target === 'cpu' ? 'subgroups' : 'tiles'} ${subgroups} ${JSON.stringify(mk)}`;
        const co = compare(await g.read(o), ref.o);
        const cl = compare(await g.read(lse), ref.lse);
        expect(passes(co, TOLERANCE.f32), `${what}: ${describeComparison(co)}`).toBe(true);
        expect(passes(cl, TOLERANCE.f32), `${what}: ${describeComparison(cl)}`).toBe(true);
      } finally {
        plan.dispose();
      }
    }
  }
  for (const target of ['cpu', 'gpu'] as const) {
    it(`${target}: rows 4 and 8 with every mask between them (window + sinks + sink logit and split-K; causal; non-causal and split-K), shared loads on and off, G = 1 and G = 2`, async () => {
      await packsMatrix(target, 'core');
    }, 600_000);
    it(
      `${target}: rows 1, 2, 4, 8, each with every mask (window + sinks + sink logit and split-K; causal; non-causal and split-K), shared loads on and off, G = 1 and G = 2: the combinations outside the core tier`,
      { tags: ['extended'], timeout: 600_000 },
      async () => {
        await packsMatrix(target, 'extended');
      },
    );
    it(`${target}: a NaN key that only the pack's last row sees stays out of the earlier rows`, async () => {
      const g = gpu;
      const Hq = 1,
        Hkv = 1;
      const rng = new Rng(7);
      const kv = rng.normals(N * D);
      const vv = rng.normals(N * D);
      const qv = rng.normals(T * D);
      const seqs = lens.map((_, b) => ({
        k: kv.subarray(kvIndptr[b]! * D, kvIndptr[b + 1]! * D),
        v: vv.subarray(kvIndptr[b]! * D, kvIndptr[b + 1]! * D),
      }));
      const ref = batchAttentionReference(qv, seqs, qoIndptr, { Hq, Hkv, D });
      // Key 69 of sequence 2 (its last): only its last query (position 69) sees it.
      const bad = kvIndptr[3]! - 1;
      const kn = Float64Array.from(kv);
      const vn = Float64Array.from(vv);
      kn.fill(NaN, bad * D, (bad + 1) * D);
      vn.fill(NaN, bad * D, (bad + 1) * D);
      const plan = await packPlan({
        Hq,
        Hkv,
        rows: Number.isFinite(g.dev.loopLimit) ? 4 : 8,
        subgroups: target === 'cpu' && g.dev.features.subgroups ? true : undefined,
        tiles: target === 'gpu' ? true : undefined,
        target,
      });
      try {
        plan.schedule({ qoIndptr, kvIndptr });
        const o = g.nanTensor([T, Hq, D]);
        const enc = g.dev.device.createCommandEncoder();
        plan.run(enc, { q: g.tensor(qv, [T, Hq, D]), o, k: g.tensor(kn, [N, Hkv, D]), v: g.tensor(vn, [N, Hkv, D]) });
        await g.dev.submitAndWait([enc.finish()]);
        const got = await g.read(o);
        const last = qoIndptr[3]! - 1; // the row at position 69
        const keep = (x: Float64Array | Float32Array) => Float64Array.from(x).fill(0, last * D, (last + 1) * D);
        expect(keep(got).every(Number.isFinite)).toBe(true);
        const co = compare(keep(got), keep(ref.o));
        expect(passes(co, TOLERANCE.f32), describeComparison(co)).toBe(true);
      } finally {
        plan.dispose();
      }
    });
  }
});

describe('attention core: ragged (contiguous) K/V source', () => {
  // the core tier runs the cpu shape (f16 K/V and Dqk != Dv: the core's only such case besides
  // MLA); gpu runs ragged sources in the packs-of-tokens matrix, this one in the extended tier
  for (const target of ['cpu', 'gpu'] as const) {
    it(`${target}: cuSeqlens K/V, prefill + decode mix, window, split-K`, tier(target === 'gpu'), async () => {
      const g = gpu;
      const Hq = 4,
        Hkv = 2,
        D = 32,
        Dv = 16;
      const lens = [17, 1, 130];
      const qLens = [17, 1, 4];
      const rng = new Rng(5);
      const { kvIndptr, qoIndptr, N, T, kv, vv, qv } = raggedBatch(rng, lens, qLens, { Hq, Hkv, D, Dv });
      for (const opts of [{}, { window: 20, sinks: 2, kvChunk: 40 }] as const) {
        const plan = await planBatchAttention(g.dev, {
          source: 'ragged',
          maxBatch: 4,
          maxQTokens: 32,
          maxKvTokens: 200,
          Hq,
          Hkv,
          D,
          Dv,
          kvDtype: 'f16',
          target,
          ...opts,
        });
        try {
          plan.schedule({ qoIndptr, kvIndptr });
          const o = g.nanTensor([T, Hq, Dv]);
          const lse = g.nanTensor([T, Hq]);
          const enc = g.dev.device.createCommandEncoder();
          plan.run(enc, {
            q: g.tensor(qv, [T, Hq, D]),
            o,
            lse,
            k: g.tensor(kv, [N, Hkv, D], 'f16'),
            v: g.tensor(vv, [N, Hkv, Dv], 'f16'),
          });
          await g.dev.submitAndWait([enc.finish()]);
          const seqs = lens.map((n, b) => ({
            k: kv.subarray(kvIndptr[b]! * Hkv * D, kvIndptr[b + 1]! * Hkv * D),
            v: vv.subarray(kvIndptr[b]! * Hkv * Dv, kvIndptr[b + 1]! * Hkv * Dv),
          }));
          const ref = batchAttentionReference(qv, seqs, qoIndptr, { Hq, Hkv, D, Dv, ...opts });
          const co = compare(await g.read(o), ref.o);
          const cl = compare(await g.read(lse), ref.lse);
          expect(passes(co, TOLERANCE.f32), describeComparison(co)).toBe(true);
          expect(passes(cl, TOLERANCE.f32), describeComparison(cl)).toBe(true);
        } finally {
          plan.dispose();
        }
      }
    });
  }
});

describe('attention core: earlyQueries (more new queries than keys, as in dense attention) and maxKvLen', () => {
  for (const target of ['cpu', 'gpu'] as const) {
    it(`${target}: queries before the first key see none; empty sequences give o = 0 and lse = -inf (or the sink logit)`, async () => {
      const g = gpu;
      const Hq = 4,
        Hkv = 2,
        D = 16;
      const lens = [1, 0, 5, 40];
      const qLens = [3, 1, 7, 2];
      const rng = new Rng(11);
      const kvIndptr = offsets(lens);
      const qoIndptr = offsets(qLens);
      const N = kvIndptr[4]!;
      const T = qoIndptr[4]!;
      const kv = rng.normals(N * Hkv * D);
      const vv = rng.normals(N * Hkv * D);
      const qv = rng.normals(T * Hq * D);
      const sinkv = rng.normals(Hq);
      for (const opts of [{}, { window: 3, sinks: 1, sinkLogit: true, kvChunk: 8, maxKvLen: 40 }] as const) {
        const plan = await planBatchAttention(g.dev, {
          source: 'ragged',
          maxBatch: 4,
          maxQTokens: T,
          maxKvTokens: N,
          Hq,
          Hkv,
          D,
          kvDtype: 'f32',
          target,
          earlyQueries: true,
          ...opts,
        });
        try {
          const info = plan.schedule({ qoIndptr, kvIndptr });
          if ('kvChunk' in opts) {
            // maxKvLen (not maxKvTokens = 46) sizes the partials: 5 parts of 8 keys
            expect(plan.maxSplits).toBe(5);
            expect(info.parts).toBe(5);
            expect(() => plan.schedule({ qoIndptr: [0, 1], kvIndptr: [0, 41] })).toThrow(
              expect.objectContaining({ code: 'E_LIMIT', argument: 'kvIndptr[1]' }),
            );
          }
          const o = g.nanTensor([T, Hq, D]);
          const lse = g.nanTensor([T, Hq]);
          const sinkT = 'sinkLogit' in opts ? g.tensor(sinkv, [Hq]) : undefined;
          const enc = g.dev.device.createCommandEncoder();
          plan.run(enc, {
            q: g.tensor(qv, [T, Hq, D]),
            o,
            lse,
            k: g.tensor(kv, [N, Hkv, D]),
            v: g.tensor(vv, [N, Hkv, D]),
            sinkLogits: sinkT,
          });
          await g.dev.submitAndWait([enc.finish()]);
          const seqs = lens.map((_, b) => ({
            k: kv.subarray(kvIndptr[b]! * Hkv * D, kvIndptr[b + 1]! * Hkv * D),
            v: vv.subarray(kvIndptr[b]! * Hkv * D, kvIndptr[b + 1]! * Hkv * D),
          }));
          const ref = batchAttentionReference(qv, seqs, qoIndptr, {
            Hq,
            Hkv,
            D,
            ...opts,
            sinkLogits: sinkT ? sinkv : undefined,
          });
          const got = await g.read(o);
          const gotL = await g.read(lse);
          // sequence 0 (1 key, 3 queries): queries 0 and 1 see nothing; sequence 1 (no key) likewise
          for (const t of [0, 1, 3]) {
            for (let h = 0; h < Hq; h++) {
              if (sinkT) expect(gotL[t * Hq + h]).toBeCloseTo(sinkv[h]!, 5);
              else expect(gotL[t * Hq + h]).toBe(-Infinity);
              for (let d = 0; d < D; d++) expect(got[(t * Hq + h) * D + d]).toBe(0);
            }
          }
          const co = compare(got, ref.o);
          const cl = compare(gotL, ref.lse);
          expect(passes(co, TOLERANCE.f32), describeComparison(co)).toBe(true);
          expect(passes(cl, TOLERANCE.f32), describeComparison(cl)).toBe(true);
        } finally {
          plan.dispose();
        }
      }
      // without the option the schedule still refuses such a table, naming the argument
      const strict = await planBatchAttention(g.dev, {
        source: 'ragged',
        maxBatch: 4,
        maxQTokens: T,
        maxKvTokens: N,
        Hq,
        Hkv,
        D,
        kvDtype: 'f32',
        target,
      });
      try {
        expect(() => strict.schedule({ qoIndptr, kvIndptr })).toThrow(
          expect.objectContaining({ code: 'E_ARG', argument: 'qoIndptr[1]' }),
        );
      } finally {
        strict.dispose();
      }
    });
  }
});

describe('attention core: masked keys are skipped, never multiplied by zero', () => {
  for (const target of ['cpu', 'gpu'] as const) {
    it(`${target}: NaN in K/V rows outside the window and in the causal future stays invisible`, async () => {
      const g = gpu;
      const Hq = 2,
        Hkv = 1,
        D = 16,
        P = 16,
        W = 8,
        S = 2;
      const L = 40;
      const qn = 6; // prefill chunk: positions 34..39
      const pool = buildPool([L], [qn], { Hkv, D, Dv: D, pageSize: P, dtype: 'f32', seed: 3 });
      const Lay = pageLayout(P, Hkv, D, D, 'f32');
      // Keys S..(34 - W) are outside every row's window (rows see (pos - W, pos] and [0, S)).
      const dv = new DataView(pool.bytes.buffer);
      for (let j = S; j <= 34 - W; j++) {
        const slot = pool.table.kvIndices[Math.floor(j / P)]!;
        for (let d = 0; d < D; d++) {
          dv.setFloat32(slot * Lay.pageBytes + (j % P) * D * 4 + 4 * d, NaN, true);
          dv.setFloat32(slot * Lay.pageBytes + Lay.vOffset + (j % P) * D * 4 + 4 * d, NaN, true);
        }
      }
      const seqs = [
        readPagedSequence(pool.bytes, Lay, pool.table.kvIndptr, pool.table.kvIndices, pool.table.kvLastPageLen, 0),
      ];
      const rng = new Rng(9);
      const qv = rng.normals(qn * Hq * D);
      const plan = await planBatchAttention(g.dev, {
        maxBatch: 1,
        maxQTokens: qn,
        maxPages: 3,
        poolPages: pool.poolPages,
        Hq,
        Hkv,
        D,
        pageSize: P,
        kvDtype: 'f32',
        window: W,
        sinks: S,
        target,
        kvChunk: 16,
      });
      const pages = g.dev.upload(pool.bytes);
      try {
        plan.schedule(pool.table);
        const o = g.nanTensor([qn, Hq, D]);
        const lse = g.nanTensor([qn, Hq]);
        const enc = g.dev.device.createCommandEncoder();
        plan.run(enc, { q: g.tensor(qv, [qn, Hq, D]), o, lse, pages });
        await g.dev.submitAndWait([enc.finish()]);
        const got = await g.read(o);
        expect(got.every(Number.isFinite)).toBe(true);
        const ref = batchAttentionReference(qv, seqs, pool.table.qoIndptr, { Hq, Hkv, D, window: W, sinks: S });
        expect(ref.o.every(Number.isFinite)).toBe(true);
        const co = compare(got, ref.o);
        expect(passes(co, TOLERANCE.f32), describeComparison(co)).toBe(true);
        // Control: the same NaN rows in a plan without a window do reach the output.
        const open = await planBatchAttention(g.dev, {
          maxBatch: 1,
          maxQTokens: qn,
          maxPages: 3,
          poolPages: pool.poolPages,
          Hq,
          Hkv,
          D,
          pageSize: P,
          kvDtype: 'f32',
          target,
        });
        open.schedule(pool.table);
        const enc2 = g.dev.device.createCommandEncoder();
        open.run(enc2, { q: g.tensor(qv, [qn, Hq, D]), o, pages });
        await g.dev.submitAndWait([enc2.finish()]);
        expect((await g.read(o)).some(Number.isNaN)).toBe(true);
        open.dispose();
      } finally {
        plan.dispose();
        g.dev.destroyBuffer(pages);
      }
    });
  }
});

/** A decode setup on the GPU: pool, tensors and the reference, for the plan-behaviour tests. */
async function decodeSetup(g: GpuFixture, lens: number[], seed: number) {
  const Hq = 4,
    Hkv = 2,
    D = 16,
    P = 16;
  const pool = buildPool(
    lens,
    lens.map(() => 1),
    { Hkv, D, Dv: D, pageSize: P, dtype: 'f16', seed, spare: 0 },
  );
  const rng = new Rng(seed);
  const qv = rng.normals(lens.length * Hq * D);
  const ref = batchAttentionReference(qv, pool.seqs, pool.table.qoIndptr, { Hq, Hkv, D });
  return {
    Hq,
    Hkv,
    D,
    P,
    pool,
    qv,
    ref,
    q: g.tensor(qv, [lens.length, Hq, D]),
    o: g.nanTensor([lens.length, Hq, D]),
    lse: g.nanTensor([lens.length, Hq]),
  };
}

async function expectClose(g: GpuFixture, t: GpuTensor, ref: Float64Array): Promise<void> {
  const c = compare(await g.read(t), ref);
  expect(passes(c, TOLERANCE.f32), describeComparison(c)).toBe(true);
}

describe('attention core: plan, schedule, run', () => {
  const base = (poolPages: number): BatchAttentionOptions => ({
    maxBatch: 4,
    maxQTokens: 4,
    maxPages: 64,
    poolPages,
    Hq: 4,
    Hkv: 2,
    D: 16,
    pageSize: 16,
    kvDtype: 'f16',
    kvChunk: 32,
  });

  it('run creates no GPU buffer and, once cached, no bind group', async () => {
    const g = gpu;
    const a = await decodeSetup(g, [17, 63, 65], 1);
    const pages = g.dev.upload(a.pool.bytes);
    const plan = await planBatchAttention(g.dev, base(a.pool.poolPages));
    const dev = g.dev.device;
    let buffers = 0;
    let groups = 0;
    const undo: (() => void)[] = [];
    try {
      plan.schedule(a.pool.table);
      const warm = dev.createCommandEncoder();
      plan.run(warm, { q: a.q, o: a.o, lse: a.lse, pages });
      dev.queue.submit([warm.finish()]);
      undo.push(patchMethod(dev, 'createBuffer', (f) => (d) => (buffers++, f.call(dev, d))));
      undo.push(patchMethod(dev, 'createBindGroup', (f) => (d) => (groups++, f.call(dev, d))));
      for (let step = 0; step < 3; step++) {
        plan.schedule(a.pool.table);
        const enc = dev.createCommandEncoder();
        plan.run(enc, { q: a.q, o: a.o, lse: a.lse, pages });
        plan.run(enc, { q: a.q, o: a.o, lse: a.lse, pages });
        dev.queue.submit([enc.finish()]);
      }
      expect(buffers).toBe(0);
      // 4 ring slots: the first pass over the ring builds each slot's groups once.
      expect(groups).toBeLessThanOrEqual(2 * 3);
      const before = groups;
      for (let step = 0; step < 4; step++) {
        plan.schedule(a.pool.table);
        const enc = dev.createCommandEncoder();
        plan.run(enc, { q: a.q, o: a.o, lse: a.lse, pages });
        dev.queue.submit([enc.finish()]);
      }
      expect(groups - before).toBe(0);
      expect(buffers).toBe(0);
    } finally {
      for (const u of undo) u();
    }
    await dev.queue.onSubmittedWorkDone();
    await expectClose(g, a.o, a.ref.o);
    await expectClose(g, a.lse, a.ref.lse);
    plan.dispose();
    g.dev.destroyBuffer(pages);
  });

  it("split-K: a slot's merge uniform is rewritten only when the parts or rows change, results exact either way", async () => {
    const g = gpu;
    const a = await decodeSetup(g, [300, 65, 17], 5);
    const pages = g.dev.upload(a.pool.bytes);
    const plan = await planBatchAttention(g.dev, { ...base(a.pool.poolPages), scheduleSlots: 1 });
    const dev = g.dev.device;
    const t = a.pool.table;
    // the first two sequences only: the same parts (the longest is in both), fewer rows
    const sub = {
      qoIndptr: [0, 1, 2],
      kvIndptr: Array.from(t.kvIndptr).slice(0, 3),
      kvIndices: Array.from(t.kvIndices).slice(0, t.kvIndptr[2]),
      kvLastPageLen: Array.from(t.kvLastPageLen).slice(0, 2),
    };
    const subRef = batchAttentionReference(a.qv.slice(0, 2 * a.Hq * a.D), a.pool.seqs.slice(0, 2), sub.qoIndptr, {
      Hq: a.Hq,
      Hkv: a.Hkv,
      D: a.D,
    });
    let writes = 0;
    const undo = patchMethod(
      dev.queue,
      'writeBuffer',
      (f) =>
        (...args) => (writes++, f.apply(dev.queue, args)),
    );
    try {
      for (const [table, rows, ref, wantWrites] of [
        [t, 3, a.ref, 2], // slot words + merge uniform
        [sub, 2, subRef, 2], // rows changed: the merge uniform again
        [t, 3, a.ref, 2],
        [t, 3, a.ref, 1], // nothing changed: the slot words only
      ] as const) {
        writes = 0;
        const info = plan.schedule(table);
        expect(info.parts).toBe(10);
        expect(writes).toBe(wantWrites);
        const o = g.nanTensor([rows, a.Hq, a.D]);
        const lse = g.nanTensor([rows, a.Hq]);
        const enc = dev.createCommandEncoder();
        plan.run(enc, { q: a.q, o, lse, pages });
        await g.dev.submitAndWait([enc.finish()]);
        await expectClose(g, o, ref.o);
        await expectClose(g, lse, ref.lse);
      }
    } finally {
      undo();
      plan.dispose();
      g.dev.destroyBuffer(pages);
    }
  });

  it('several runs in one encoder keep their own schedule (ring), and a full ring throws E_STATE', async () => {
    const g = gpu;
    const a = await decodeSetup(g, [17, 300], 2);
    const b = await decodeSetup(g, [65, 1, 33], 3);
    // One pool holding both batches' pages: b's slots shifted past a's.
    const pool = new Uint8Array(a.pool.bytes.length + b.pool.bytes.length);
    pool.set(a.pool.bytes);
    pool.set(b.pool.bytes, a.pool.bytes.length);
    const shift = a.pool.poolPages;
    const bTable = { ...b.pool.table, kvIndices: Array.from(b.pool.table.kvIndices, (s) => s + shift) };
    const pages = g.dev.upload(pool);
    const plan = await planBatchAttention(g.dev, { ...base(a.pool.poolPages + b.pool.poolPages), scheduleSlots: 2 });
    try {
      const dev = g.dev.device;
      const enc = dev.createCommandEncoder();
      plan.schedule(a.pool.table);
      const a2 = { o: g.nanTensor([2, 4, 16]), lse: g.nanTensor([2, 4]) };
      plan.run(enc, { q: a.q, o: a.o, lse: a.lse, pages }); // layer 1
      plan.run(enc, { q: a.q, o: a2.o, lse: a2.lse, pages }); // layer 2, same schedule
      plan.schedule(bTable); // second slot: a's runs keep theirs
      plan.run(enc, { q: b.q, o: b.o, lse: b.lse, pages });
      // Both slots are bound by unsubmitted runs: a third schedule must not overwrite one.
      let err: unknown;
      try {
        plan.schedule(a.pool.table);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(TesseraError);
      expect((err as TesseraError).code).toBe('E_STATE');
      // The failed schedule changed nothing: runs still use b's table.
      const b2 = { o: g.nanTensor([3, 4, 16]), lse: g.nanTensor([3, 4]) };
      plan.run(enc, { q: b.q, o: b2.o, lse: b2.lse, pages });
      await g.dev.submitAndWait([enc.finish()]);
      for (const [t, r] of [
        [a.o, a.ref.o],
        [a2.o, a.ref.o],
        [a.lse, a.ref.lse],
        [a2.lse, a.ref.lse],
        [b.o, b.ref.o],
        [b2.o, b.ref.o],
        [b.lse, b.ref.lse],
      ] as const) {
        await expectClose(g, t, r);
      }
      // After the submit the ring is free again.
      expect(() => plan.schedule(a.pool.table)).not.toThrow();
    } finally {
      plan.dispose();
      g.dev.destroyBuffer(pages);
    }
  });

  it('bad schedules are rejected with typed errors naming the argument, and change nothing', async () => {
    const plan = await planBatchAttention(gpu.dev, base(10));
    const ok = { qoIndptr: [0, 1, 2], kvIndptr: [0, 2, 3], kvIndices: [4, 1, 9], kvLastPageLen: [16, 3] };
    const first = plan.schedule(ok);
    const cases: [Partial<BatchSchedule> & Record<string, unknown>, string, string][] = [
      [{ qoIndptr: [0, 2, 1] }, 'E_ARG', 'qoIndptr[2]'],
      [{ qoIndptr: [1, 2, 3] }, 'E_ARG', 'qoIndptr[0]'],
      [{ qoIndptr: [0, 1, 5] }, 'E_LIMIT', 'qoIndptr[2]'],
      [{ qoIndptr: [0, 1, 2, 3, 4, 5] }, 'E_SHAPE', 'qoIndptr'],
      [{ kvIndptr: [0, 2] }, 'E_SHAPE', 'kvIndptr'],
      [{ kvIndptr: [0, 3, 2] }, 'E_ARG', 'kvIndptr[2]'],
      [{ kvIndptr: [0, 2, 65], kvIndices: new Array(65).fill(0) }, 'E_LIMIT', 'kvIndptr[2]'],
      [{ kvIndices: [4, 10, 9] }, 'E_ARG', 'kvIndices[1]'],
      [{ kvIndices: [4, -1, 9] }, 'E_ARG', 'kvIndices[1]'],
      [{ kvIndices: [4, 1.5, 9] }, 'E_ARG', 'kvIndices[1]'],
      [{ kvIndices: [4, 2 ** 32, 9] }, 'E_ARG', 'kvIndices[1]'],
      [{ kvIndices: [4, 1] }, 'E_SHAPE', 'kvIndices'],
      [{ kvLastPageLen: [17, 3] }, 'E_ARG', 'kvLastPageLen[0]'],
      [{ kvLastPageLen: [16, 0] }, 'E_ARG', 'kvLastPageLen[1]'],
      [{ kvLastPageLen: [16] }, 'E_SHAPE', 'kvLastPageLen'],
      [{ qoIndptr: [0, 1, 5], kvIndptr: [0, 2, 2], kvLastPageLen: [16, 0] }, 'E_LIMIT', 'qoIndptr[2]'],
      [{ qoIndptr: [0, 1, 4], kvIndptr: [0, 2, 3], kvLastPageLen: [16, 2] }, 'E_ARG', 'qoIndptr[2]'],
      [{ kvIndices: undefined }, 'E_ARG', 'kvIndices'],
    ];
    for (const [patch, code, argument] of cases) {
      let err: unknown;
      try {
        plan.schedule({ ...ok, ...patch } as BatchSchedule);
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(patch)).toBeInstanceOf(TesseraError);
      expect((err as TesseraError).code, JSON.stringify(patch)).toBe(code);
      expect((err as TesseraError).argument, JSON.stringify(patch)).toBe(argument);
    }
    expect(plan.scheduled).toBe(first);
    // run before any schedule, and tensors that do not fit.
    const fresh = await planBatchAttention(gpu.dev, base(10));
    const q = gpu.tensor(new Float64Array(2 * 4 * 16), [2, 4, 16]);
    const o = gpu.nanTensor([2, 4, 16]);
    const pages = gpu.dev.createBuffer({
      size: 10 * pageLayout(16, 2, 16, 16, 'f16').pageBytes,
      usage: GPUBufferUsage.STORAGE,
    });
    const enc = gpu.dev.device.createCommandEncoder();
    expect(() => fresh.run(enc, { q, o, pages })).toThrow(/E_STATE/);
    fresh.schedule(ok);
    expect(() => fresh.run(enc, { q: gpu.tensor(new Float64Array(4 * 16), [1, 4, 16]), o, pages })).toThrow(
      /q.shape\[0\]/,
    );
    expect(() => fresh.run(enc, { q, o: gpu.nanTensor([2, 4, 8]), pages })).toThrow(/E_SHAPE/);
    expect(() =>
      fresh.run(enc, { q, o, pages: gpu.dev.createBuffer({ size: 256, usage: GPUBufferUsage.STORAGE }) }),
    ).toThrow(/pages/);
    expect(() => fresh.run(enc, { q: { ...q, dtype: 'f16' }, o, pages })).toThrow(/E_DTYPE/);
    enc.finish();
    fresh.dispose();
    plan.dispose();
    gpu.dev.destroyBuffer(pages);
    // Plan options.
    for (const [opts, argument] of [
      [{ Hq: 3 }, 'Hq'],
      [{ D: 580 }, 'D'],
      [{ Dv: 516 }, 'Dv'],
      [{ D: 18 }, 'D'],
      [{ kvDtype: 'fp8' }, 'kvDtype'],
      [{ qDtype: 'int8' }, 'qDtype'],
      [{ window: 8, causal: false }, 'window'],
      [{ maxPages: 0 }, 'maxPages'],
      [{ scale: NaN }, 'scale'],
      [{ target: 'fast' }, 'target'],
    ] as const) {
      await expect(
        planBatchAttention(gpu.dev, { ...base(10), ...opts } as BatchAttentionOptions),
      ).rejects.toMatchObject({ argument });
    }
  });

  it('batchAttention: the one-call form', async () => {
    const g = gpu;
    const a = await decodeSetup(g, [40, 3], 4);
    const pages = g.dev.upload(a.pool.bytes);
    try {
      await batchAttention(
        g.dev,
        { q: a.q, o: a.o, lse: a.lse, pages },
        { Hq: 4, Hkv: 2, D: 16, pageSize: 16, kvDtype: 'f16', poolPages: a.pool.poolPages, ...a.pool.table },
      );
      await expectClose(g, a.o, a.ref.o);
      await expectClose(g, a.lse, a.ref.lse);
      await expect(
        batchAttention(
          g.dev,
          { q: a.q, o: a.o, pages },
          { Hq: 4, Hkv: 2, D: 16, pageSize: 16, kvDtype: 'f16', ...a.pool.table, kvLastPageLen: [0, 3] },
        ),
      ).rejects.toMatchObject({ code: 'E_ARG', argument: 'kvLastPageLen[0]' });
    } finally {
      g.dev.destroyBuffer(pages);
    }
  });

  it('sizes parts under the llvmpipe loop cap', () => {
    const cap = attentionKeysPerPart(65535, 'cpu', 128, 128, 8);
    expect(cap).toBeGreaterThan(100);
    expect(attentionLoopCost('cpu', 128, 128, cap, 8)).toBeLessThanOrEqual(Math.floor(65535 * 0.9));
    expect(attentionLoopCost('cpu', 128, 128, cap + 1, 8)).toBeGreaterThan(Math.floor(65535 * 0.9));
    expect(attentionKeysPerPart(Infinity, 'gpu', 576, 512, 8)).toBe(Infinity);
    expect(attentionKeysPerPart(65535, 'gpu', 576, 512, 8)).toBeGreaterThan(64);
  });
});

// Extended tier: it compiles every family once more at its own dims (npm test compares each family
// with its float64 reference in that family's file).
describe(
  'cross-family equality: every family with everything selected is dense attention',
  { tags: ['extended'] },
  () => {
    for (const target of ['cpu', 'gpu'] as const) {
      it(`${target}: dense == paged (all pages) == ragged core == block-sparse (all blocks) == MoBA (top-k = all) == DSA (top-k = all) == sliding window (W >= T)`, async () => {
        const g = gpu;
        const Hq = 4,
          Hkv = 2,
          D = 32;
        const lens = [37, 100, 5];
        const cu = [0, 37, 137, 142];
        const T = cu[3]!;
        const rng = new Rng(77);
        const qv = rng.normals(T * Hq * D);
        const kv = rng.normals(T * Hkv * D);
        const vv = rng.normals(T * Hkv * D);
        const q = g.tensor(qv, [T, Hq, D]);
        const k = g.tensor(kv, [T, Hkv, D]);
        const v = g.tensor(vv, [T, Hkv, D]);
        const seqs = lens.map((_, b) => ({
          k: kv.subarray(cu[b]! * Hkv * D, cu[b + 1]! * Hkv * D),
          v: vv.subarray(cu[b]! * Hkv * D, cu[b + 1]! * Hkv * D),
        }));
        const ref = batchAttentionReference(qv, seqs, cu, { Hq, Hkv, D });
        const results: Record<string, { o: Float64Array; lse: Float64Array }> = {};
        const out = () => ({ o: g.nanTensor([T, Hq, D]), lse: g.nanTensor([T, Hq]) });
        const read = async (x: { o: GpuTensor; lse: GpuTensor }) => ({
          o: await g.read(x.o),
          lse: await g.read(x.lse),
        });

        const dense = out();
        await attention(g.dev, { q, k, v, ...dense }, { cuSeqlensQ: cu, causal: true, target });
        results.dense = await read(dense);

        const sw = out();
        await slidingWindowAttention(g.dev, { q, k, v, ...sw }, { cuSeqlensQ: cu, window: Math.max(...lens), target });
        results.slidingWindow = await read(sw);

        // The paged core over a pool holding every page of every sequence (written by the cache's codec).
        const pool = buildPool(lens, lens, { Hkv, D, Dv: D, pageSize: 16, dtype: 'f32', seed: 1 });
        // Same K/V as the dense run: rewrite the pool from kv/vv.
        const Lay = pageLayout(16, Hkv, D, D, 'f32');
        lens.forEach((n, b) => {
          for (let p = 0; p * 16 < n; p++) {
            const slot = pool.table.kvIndices[pool.table.kvIndptr[b]! + p]!;
            const page = pool.bytes.subarray(slot * Lay.pageBytes, (slot + 1) * Lay.pageBytes);
            writeRows(page, Lay, 0, seqs[b]!.k, p * 16, Math.min(16, n - p * 16), 0);
            writeRows(page, Lay, 1, seqs[b]!.v, p * 16, Math.min(16, n - p * 16), 0);
          }
        });
        const pages = g.dev.upload(pool.bytes);
        const paged = out();
        await batchAttention(
          g.dev,
          { q, ...paged, pages },
          { Hq, Hkv, D, pageSize: 16, kvDtype: 'f32', poolPages: pool.poolPages, target, ...pool.table, qoIndptr: cu },
        );
        results.paged = await read(paged);
        g.dev.destroyBuffer(pages);

        const ragged = out();
        await batchAttention(
          g.dev,
          { q, k, v, ...ragged },
          { source: 'ragged', Hq, Hkv, D, kvDtype: 'f32', target, qoIndptr: cu, kvIndptr: cu },
        );
        results.raggedCore = await read(ragged);

        const mb = out();
        const blockSize = 16;
        await mobaVarlen(
          g.dev,
          { q, k, v, ...mb },
          { Hq, Hkv, D, blockSize, topk: Math.ceil(Math.max(...lens) / blockSize), cuSeqlens: cu, target },
        );
        results.moba = await read(mb);

        // Block-sparse: one sequence at a time (its own tensors), every block at or before the diagonal.
        const bs = { o: new Float64Array(T * Hq * D), lse: new Float64Array(T * Hq) };
        for (let b = 0; b < lens.length; b++) {
          const n = lens[b]!;
          const R = 16,
            C = 16;
          const indptr = [0];
          const indices: number[] = [];
          for (let i = 0; i * R < n; i++) {
            const lastKey = Math.min(n - 1, (i + 1) * R - 1);
            for (let c = 0; c * C <= lastKey; c++) indices.push(c);
            indptr.push(indices.length);
          }
          const sl = (x: Float64Array, w: number) => x.subarray(cu[b]! * w, cu[b + 1]! * w);
          const o1 = { o: g.nanTensor([n, Hq, D]), lse: g.nanTensor([n, Hq]) };
          await blockSparseAttention(
            g.dev,
            {
              q: g.tensor(sl(qv, Hq * D), [n, Hq, D]),
              k: g.tensor(sl(kv, Hkv * D), [n, Hkv, D]),
              v: g.tensor(sl(vv, Hkv * D), [n, Hkv, D]),
              ...o1,
            },
            { R, C, indptr, indices, causal: true, target },
          );
          const r1 = await read(o1);
          bs.o.set(r1.o, cu[b]! * Hq * D);
          bs.lse.set(r1.lse, cu[b]! * Hq);
        }
        results.blockSparse = bs;

        // DSA keeping every token (topk = the sequence's length): one sequence at a time; whatever
        // the indexer scores, every causal key is attended.
        const ds = { o: new Float64Array(T * Hq * D), lse: new Float64Array(T * Hq) };
        for (let b = 0; b < lens.length; b++) {
          const n = lens[b]!;
          const HI = 2,
            DI = 8;
          const sl = (x: Float64Array, w: number) => x.subarray(cu[b]! * w, cu[b + 1]! * w);
          const o1 = { o: g.nanTensor([n, Hq, D]), lse: g.nanTensor([n, Hq]) };
          const idx = {
            qI: g.tensor(rng.normals(n * HI * DI), [n, HI, DI]),
            kI: g.tensor(rng.normals(n * DI), [n, DI]),
            w: g.tensor(rng.normals(n * HI), [n, HI]),
          };
          await dsa(
            g.dev,
            {
              q: g.tensor(sl(qv, Hq * D), [n, Hq, D]),
              k: g.tensor(sl(kv, Hkv * D), [n, Hkv, D]),
              v: g.tensor(sl(vv, Hkv * D), [n, Hkv, D]),
              ...idx,
              ...o1,
            },
            { topk: n, target },
          );
          const r1 = await read(o1);
          ds.o.set(r1.o, cu[b]! * Hq * D);
          ds.lse.set(r1.lse, cu[b]! * Hq);
        }
        results.dsa = ds;

        for (const [name, r] of Object.entries(results)) {
          const co = compare(r.o, ref.o);
          const cl = compare(r.lse, ref.lse);
          expect(passes(co, TOLERANCE.f32), `${name} o ${describeComparison(co)}`).toBe(true);
          expect(passes(cl, TOLERANCE.f32), `${name} lse ${describeComparison(cl)}`).toBe(true);
          // And each against dense directly.
          const cd = compare(r.o, results.dense!.o);
          expect(passes(cd, TOLERANCE.f32), `${name} vs dense ${describeComparison(cd)}`).toBe(true);
        }
        expect(Object.keys(results).sort()).toEqual([
          'blockSparse',
          'dense',
          'dsa',
          'moba',
          'paged',
          'raggedCore',
          'slidingWindow',
        ]);
      });
    }
  },
);

describe('docs/attention.md', () => {
  it('the example runs as written and gives the lse of its zero pool', async () => {
    const md = readFileSync(new URL('../docs/attention.md', import.meta.url), 'utf8');
    const block = /```ts\n([\s\S]*?)```/.exec(md)![1]!;
    const body = block
      .split('\n')
      .filter((l) => !l.startsWith('import '))
      .join('\n');
    const js = ts.transpileModule(`async function example() {\n${body}\nreturn { info, o, lse, plan };\n}`, {
      compilerOptions: { target: ts.ScriptTarget.ES2022 },
    }).outputText;
    const run = new Function('requestDevice', 'planBatchAttention', 'pageLayout', `${js}\nreturn example();`);
    const r = await run(async () => gpu.dev, planBatchAttention, pageLayout);
    await gpu.dev.device.queue.onSubmittedWorkDone();
    expect(r.info.parts).toBe(1);
    // Zero keys: every visible key scores 0, so lse = ln(visible keys) and o = 0.
    const lse = await gpu.read({ ...r.lse, shape: [4, 8] });
    const want = [20, 1, 2, 3].flatMap((n) => new Array(8).fill(Math.log(n)));
    expect(compare(lse, want).maxAbs).toBeLessThan(1e-6);
    const o = await gpu.read({ ...r.o, shape: [4, 8, 64] });
    expect(o.every((x) => x === 0)).toBe(true);
    r.plan.dispose();
  });
});

describe('attention core: a schedule buffer the engine fills on the GPU', () => {
  for (const target of ['cpu', 'gpu'] as const) {
    it(`${target}: two steps in one encoder, each table copied in on the GPU before its run`, async () => {
      const g = gpu;
      const a = await decodeSetup(g, [17, 300], 12);
      const b = await decodeSetup(g, [65, 1, 33], 13);
      const pool = new Uint8Array(a.pool.bytes.length + b.pool.bytes.length);
      pool.set(a.pool.bytes);
      pool.set(b.pool.bytes, a.pool.bytes.length);
      const bTable = { ...b.pool.table, kvIndices: Array.from(b.pool.table.kvIndices, (s) => s + a.pool.poolPages) };
      const pages = g.dev.upload(pool);
      const maxQTokens = 4;
      const plan = await planBatchAttention(g.dev, {
        maxBatch: 4,
        maxQTokens,
        maxPages: 32,
        poolPages: a.pool.poolPages + b.pool.poolPages,
        Hq: 4,
        Hkv: 2,
        D: 16,
        pageSize: 16,
        kvDtype: 'f16',
        kvChunk: 64,
        target,
      });
      const L = plan.scheduleLayout;
      expect(L.header[2]).toBe(plan.maxSplits);
      const fill = (t: Required<BatchSchedule>): Uint32Array => {
        const w = new Uint32Array(L.words);
        const B = t.qoIndptr.length - 1;
        w.set([t.qoIndptr[B]!, B, L.header[2], L.header[3], L.header[4]]);
        w.set(Array.from(t.qoIndptr), L.qoIndptr);
        w.set(Array.from(t.kvIndptr), L.kvIndptr);
        w.set(Array.from(t.kvLastPageLen), L.kvLastPageLen);
        w.set(Array.from(t.kvIndices), L.kvIndices);
        return w;
      };
      const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
      const sched = g.dev.createBuffer({ size: L.words * 4, usage });
      const stA = g.dev.upload(fill(a.pool.table));
      const stB = g.dev.upload(fill(bTable));
      try {
        // Capacity-sized outputs; rows past each step's tokens are unspecified.
        const outA = { o: g.nanTensor([maxQTokens, 4, 16]), lse: g.nanTensor([maxQTokens, 4]) };
        const outB = { o: g.nanTensor([maxQTokens, 4, 16]), lse: g.nanTensor([maxQTokens, 4]) };
        const qA = g.tensor(a.qv, [maxQTokens, 4, 16]);
        const qB = g.tensor(b.qv, [maxQTokens, 4, 16]);
        plan.useSchedule(sched);
        const enc = g.dev.device.createCommandEncoder();
        enc.copyBufferToBuffer(stA, 0, sched, 0, L.words * 4);
        plan.run(enc, { q: qA, ...outA, pages });
        enc.copyBufferToBuffer(stB, 0, sched, 0, L.words * 4);
        plan.run(enc, { q: qB, ...outB, pages });
        await g.dev.submitAndWait([enc.finish()]);
        const head = async (t: GpuTensor, n: number, w: number) => (await g.read(t)).subarray(0, n * w);
        const cmp = (got: Float64Array, ref: Float64Array) => {
          const c = compare(got, ref);
          expect(passes(c, TOLERANCE.f32), describeComparison(c)).toBe(true);
        };
        cmp(await head(outA.o, 2, 64), a.ref.o);
        cmp(await head(outA.lse, 2, 4), a.ref.lse);
        cmp(await head(outB.o, 3, 64), b.ref.o);
        cmp(await head(outB.lse, 3, 4), b.ref.lse);
        // q with fewer rows than the capacity is refused: the dispatch covers maxQTokens rows.
        const enc2 = g.dev.device.createCommandEncoder();
        expect(() => plan.run(enc2, { q: a.q, ...outA, pages })).toThrow(/q.shape\[0\]/);
        enc2.finish();
      } finally {
        plan.dispose();
        for (const x of [pages, sched, stA, stB]) g.dev.destroyBuffer(x);
      }
    });
  }
});

describe('attention core under a lowered loop cap (the llvmpipe sizing on any adapter)', () => {
  const capped = useGpu({ loopLimit: 1500 });
  for (const target of ['cpu', 'gpu'] as const) {
    it(`${target}: parts sized by attentionKeysPerPart, default options, results exact`, async () => {
      const r = await runCase(
        {
          lens: [300, 65, 1],
          qLens: [3, 1, 1],
          Hq: 4,
          Hkv: 2,
          D: 32,
          pageSize: 16,
          dtype: 'f16',
          window: 200,
          sinks: 2,
          sinkLogit: true,
          target,
        },
        capped,
      );
      const cap = attentionKeysPerPart(1500, target, 32, 32, 4, r.rows);
      // No part covers more keys than the cap (the cpu shape's cap is below the longest sequence).
      expect(r.parts).toBeGreaterThanOrEqual(Math.ceil(300 / cap));
      if (target === 'cpu') expect(cap).toBeLessThan(300);
      expect(r.parts).toBeGreaterThan(1);
    });
  }
});
