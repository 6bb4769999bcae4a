// Ragged batches of the sparse families run as ONE set of dispatches over the whole batch: the
// attention core's block lists with a per-sequence table (kernels/attention/lists.ts `seqs`),
// reading q/k/v and writing o/lse/selection in place at each sequence's rows. Compared with the
// float64 reference run per sequence, at row boundaries that are not 256-byte aligned, with an
// empty sequence and sequences shorter than one block, both kernel shapes.
import { describe, expect, it } from 'vitest';
import { planMobaVarlen } from '../kernels/moba/index.js';
import { mobaReference } from '../kernels/moba/reference.js';
import { planNsaVarlen } from '../kernels/nsa/index.js';
import { planDsaVarlen } from '../kernels/dsa/index.js';
import { dsaReference } from '../kernels/dsa/reference.js';
import { BlockListPlan, type BlockListSeq } from '../kernels/attention/lists.js';
import { blockSparseReference } from '../kernels/block_sparse/reference.js';
import { blockSparseVarlen, planBlockSparseVarlen } from '../kernels/block_sparse/index.js';
import { nsaReference } from '../kernels/nsa/reference.js';
import { compare, describeComparison, passes, Rng, TOLERANCE } from '../src/testing.js';
import { roundTo, type FloatDType } from '../src/tensor.js';
import type { KernelPlan } from '../src/plan.js';
import { patchMethod, useGpu, type GpuFixture } from './helpers/gpu.js';
import { tier } from './helpers/tier.js';

const gpu = useGpu();

/**
 * Runs `plan` once more into a fresh encoder while counting compute passes, buffer copies and
 * buffers created on the device (after one warm run, which may build bind groups).
 */
async function countRun<T>(fx: GpuFixture, plan: KernelPlan<T>, tensors: T) {
  const dev = fx.dev.device;
  const warm = dev.createCommandEncoder();
  plan.run(warm, tensors);
  dev.queue.submit([warm.finish()]);
  let buffers = 0;
  const undo = patchMethod(dev, 'createBuffer', (f) => (d) => (buffers++, f.call(dev, d)));
  const enc = dev.createCommandEncoder();
  let passes = 0;
  let copies = 0;
  const begin = enc.beginComputePass.bind(enc);
  const copy = enc.copyBufferToBuffer.bind(enc) as (...a: unknown[]) => void;
  Object.assign(enc, {
    beginComputePass: (d?: GPUComputePassDescriptor) => (passes++, begin(d)),
    copyBufferToBuffer: (...a: unknown[]) => (copies++, copy(...a)),
  });
  try {
    plan.run(enc, tensors);
  } finally {
    undo();
  }
  await fx.dev.submitAndWait([enc.finish()]);
  return { passes, copies, buffers };
}

interface MobaCase {
  cu: number[];
  Hq: number;
  Hkv: number;
  D: number;
  B: number;
  k: number;
  dtype: FloatDType;
  target: 'cpu' | 'gpu';
  lse?: boolean;
}

function mobaInputs(c: MobaCase, seed: number) {
  const total = c.cu[c.cu.length - 1]!;
  const rng = new Rng(seed);
  return {
    total,
    q: roundTo(rng.normals(total * c.Hq * c.D), c.dtype),
    k: roundTo(rng.normals(total * c.Hkv * c.D), c.dtype),
    v: roundTo(rng.normals(total * c.Hkv * c.D), c.dtype),
  };
}

function mobaTensors(fx: GpuFixture, c: MobaCase, x: ReturnType<typeof mobaInputs>) {
  const { total } = x;
  return {
    q: fx.tensor(x.q, [total, c.Hq, c.D], c.dtype),
    k: fx.tensor(x.k, [total, c.Hkv, c.D], c.dtype),
    v: fx.tensor(x.v, [total, c.Hkv, c.D], c.dtype),
    o: fx.nanTensor([total, c.Hq, c.D], c.dtype),
    lse: c.lse === false ? undefined : fx.nanTensor([total, c.Hq]),
    selection: fx.tensor(new Int32Array(total * c.Hq * c.k).fill(-7), [total, c.Hq, c.k], 'i32'),
  };
}

async function runMoba(c: MobaCase, fx = gpu) {
  const x = mobaInputs(c, c.cu.length * 31 + c.B);
  const { total, q, k, v } = x;
  const { Hq, Hkv, D, B } = c;
  const refO = new Float64Array(total * Hq * D);
  const refL = new Float64Array(total * Hq);
  const refS = new Int32Array(total * Hq * c.k);
  for (let n = 0; n + 1 < c.cu.length; n++) {
    const a = c.cu[n]!,
      len = c.cu[n + 1]! - a;
    if (!len) continue;
    const r = mobaReference(
      q.subarray(a * Hq * D, (a + len) * Hq * D),
      k.subarray(a * Hkv * D, (a + len) * Hkv * D),
      v.subarray(a * Hkv * D, (a + len) * Hkv * D),
      { Tq: len, Hq, Hkv, D, blockSize: B, topk: c.k },
    );
    refO.set(r.o, a * Hq * D);
    refL.set(r.lse, a * Hq);
    refS.set(r.selection, a * Hq * c.k);
  }
  const t = mobaTensors(fx, c, x);
  const plan = await planMobaVarlen(fx.dev, {
    cuSeqlens: c.cu,
    Hq,
    Hkv,
    D,
    blockSize: B,
    topk: c.k,
    dtype: c.dtype,
    target: c.target,
  });
  const enc = fx.dev.device.createCommandEncoder();
  plan.run(enc, t);
  await fx.dev.submitAndWait([enc.finish()]);
  const segments = plan.segments;
  plan.dispose();
  // random gates: no near-ties at these sizes, so the selected sets match exactly
  const sel = await fx.read(t.selection);
  for (let r = 0; r < total * Hq; r++) {
    const got = new Set([...sel.subarray(r * c.k, (r + 1) * c.k)].filter((b) => b >= 0));
    const want = new Set([...refS.subarray(r * c.k, (r + 1) * c.k)].filter((b) => b >= 0));
    expect([...got].sort(), `selection of row ${r}`).toEqual([...want].sort());
  }
  const co = compare(await fx.read(t.o), c.dtype === 'f32' ? refO : roundTo(refO, c.dtype));
  expect(passes(co, TOLERANCE[c.dtype]), describeComparison(co)).toBe(true);
  if (t.lse) {
    const cl = compare(await fx.read(t.lse), refL);
    expect(passes(cl, c.dtype === 'f32' ? TOLERANCE.f32 : TOLERANCE.f16), describeComparison(cl)).toBe(true);
  }
  return segments;
}

// rows of Hq * D * 4 = 128 bytes (f32) / 64 bytes (f16): boundaries at 3, 77, 141 rows are not
// 256-byte aligned; the 3- and 1-token sequences are shorter than one block, [77, 77) is empty
const CU = [0, 3, 77, 77, 140, 141, 230];

describe('moba varlen: one dispatch set over the batch', () => {
  // core tier: cpu f32 and gpu f16 (each shape and each dtype once); the other two extended
  for (const target of ['cpu', 'gpu'] as const)
    for (const dtype of ['f32', 'f16'] as const)
      it(
        `${target} shape, ${dtype}: equals the per-sequence reference`,
        tier((target === 'cpu') === (dtype === 'f16')),
        async () => {
          await runMoba({ cu: CU, Hq: 2, Hkv: 1, D: 16, B: 16, k: 3, dtype, target, lse: dtype === 'f32' });
        },
      );

  it('a batch of only empty sequences runs nothing; a leading empty sequence is skipped', async () => {
    const plan = await planMobaVarlen(gpu.dev, { cuSeqlens: [0, 0, 0], Hq: 2, Hkv: 1, D: 16, blockSize: 4, topk: 2 });
    const t = mobaTensors(gpu, { cu: [0, 0], Hq: 2, Hkv: 1, D: 16, B: 4, k: 2, dtype: 'f32', target: 'cpu' }, {
      total: 0,
      q: new Float32Array(0),
      k: new Float32Array(0),
      v: new Float32Array(0),
    } as never);
    expect((await countRun(gpu, plan, t)).passes).toBe(0);
    plan.dispose();
    await runMoba({ cu: [0, 0, 37, 40], Hq: 2, Hkv: 2, D: 16, B: 8, k: 2, dtype: 'f32', target: 'gpu' });
  });

  it('run creates no buffer, copies nothing and issues the same dispatches for 2 or 7 sequences', async () => {
    const counts = [];
    for (const cu of [
      [0, 100, 230],
      [0, 3, 77, 77, 140, 141, 200, 230],
    ]) {
      const c: MobaCase = { cu, Hq: 2, Hkv: 1, D: 16, B: 16, k: 3, dtype: 'f32', target: 'cpu' };
      const plan = await planMobaVarlen(gpu.dev, { cuSeqlens: cu, Hq: 2, Hkv: 1, D: 16, blockSize: 16, topk: 3 });
      const n = await countRun(gpu, plan, mobaTensors(gpu, c, mobaInputs(c, 5)));
      expect(n.buffers).toBe(0);
      expect(n.copies).toBe(0);
      // gate keys, selection, attention
      expect(n.passes).toBe(plan.segments.pool + plan.segments.select + plan.segments.attention);
      counts.push(n.passes);
      plan.dispose();
    }
    expect(counts).toEqual([3, 3]);
  });
});

describe('varlen with loopLimit 1024 (split dispatches, still one set for the batch)', () => {
  const capped = useGpu({ loopLimit: 1024 });
  // extended tier: the dsa indexer's split (64 heads of 64 dims: pipelines of their own) and the
  // long-block key ranges (gpu shape, slow on a CPU adapter); core: the nsa and moba splits
  it('dsa: indexer over head groups equals the reference', tier(true), async () => {
    const s = await runDsa(
      { cu: [0, 3, 170, 171, 300], Hq: 2, Hkv: 1, D: 16, HI: 64, DI: 64, topk: 150, target: 'cpu', rowChunk: 100 },
      capped,
    );
    expect(s.segments.indexer).toBeGreaterThan(1);
  });
  it('nsa: selection in segments equals the reference', async () => {
    const s = await runNsa(
      { cu: [0, 5, 300, 301, 400], Hq: 2, Hkv: 1, D: 16, bs: 2, S: 3, W: 40, variant: 'fla', target: 'cpu' },
      capped,
    );
    expect(s.select).toBeGreaterThan(1);
  });
  it('selection in segments and attention in parts equal the reference', async () => {
    const s = await runMoba(
      { cu: [0, 5, 250, 251, 400], Hq: 2, Hkv: 1, D: 16, B: 2, k: 3, dtype: 'f32', target: 'cpu' },
      capped,
    );
    expect(s.select).toBeGreaterThan(1);
  });
  it('attention over long blocks in key ranges (merged)', tier(true), async () => {
    const s = await runMoba(
      { cu: [0, 700, 703, 1100], Hq: 2, Hkv: 1, D: 16, B: 500, k: 2, dtype: 'f16', target: 'gpu' },
      capped,
    );
    expect(s.attention).toBeGreaterThan(1);
  });
});

interface NsaCase {
  cu: number[];
  Hq: number;
  Hkv: number;
  D: number;
  bs: number;
  S: number;
  W: number;
  variant: 'nsa' | 'fla';
  target: 'cpu' | 'gpu';
  dtype?: FloatDType;
  /** In the `extended` test tier only. */
  extended?: boolean;
}

function nsaInputs(c: NsaCase, seed: number) {
  const total = c.cu[c.cu.length - 1]!;
  const dt = c.dtype ?? 'f32';
  const rng = new Rng(seed);
  const sig = (x: number) => 1 / (1 + Math.exp(-x));
  return {
    total,
    q: roundTo(rng.normals(total * c.Hq * c.D), dt),
    k: roundTo(rng.normals(total * c.Hkv * c.D), dt),
    v: roundTo(rng.normals(total * c.Hkv * c.D), dt),
    gCmp: roundTo(rng.normals(total * c.Hq).map(sig), 'f32'),
    gSlc: roundTo(rng.normals(total * c.Hq).map(sig), 'f32'),
    gSwa: roundTo(rng.normals(total * c.Hq).map(sig), 'f32'),
  };
}

function nsaTensors(fx: GpuFixture, c: NsaCase, x: ReturnType<typeof nsaInputs>) {
  const { total } = x;
  const dt = c.dtype ?? 'f32';
  return {
    q: fx.tensor(x.q, [total, c.Hq, c.D], dt),
    k: fx.tensor(x.k, [total, c.Hkv, c.D], dt),
    v: fx.tensor(x.v, [total, c.Hkv, c.D], dt),
    gCmp: fx.tensor(x.gCmp, [total, c.Hq]),
    gSlc: fx.tensor(x.gSlc, [total, c.Hq]),
    gSwa: c.W > 0 ? fx.tensor(x.gSwa, [total, c.Hq]) : undefined,
    o: fx.nanTensor([total, c.Hq, c.D], dt),
    blockIndices: fx.tensor(new Int32Array(total * c.Hkv * c.S).fill(-7), [total, c.Hkv, c.S], 'i32'),
  };
}

function nsaPlanOptions(c: NsaCase) {
  return {
    cuSeqlens: c.cu,
    Hq: c.Hq,
    Hkv: c.Hkv,
    D: c.D,
    blockSize: c.bs,
    blockCount: c.S,
    window: c.W,
    variant: c.variant,
    target: c.target,
    dtype: c.dtype,
  };
}

async function runNsa(c: NsaCase, fx = gpu) {
  const x = nsaInputs(c, c.cu.length * 17 + c.bs);
  const { total } = x;
  const { Hq, Hkv, D, S } = c;
  const refO = new Float64Array(total * Hq * D);
  const refSel = new Int32Array(total * Hkv * S);
  for (let n = 0; n + 1 < c.cu.length; n++) {
    const a = c.cu[n]!,
      len = c.cu[n + 1]! - a;
    if (!len) continue;
    const sl = (v: Float64Array, w: number) => v.subarray(a * w, (a + len) * w);
    const r = nsaReference(
      sl(x.q, Hq * D),
      sl(x.k, Hkv * D),
      sl(x.v, Hkv * D),
      { gCmp: sl(x.gCmp, Hq), gSlc: sl(x.gSlc, Hq), gSwa: c.W > 0 ? sl(x.gSwa, Hq) : undefined },
      { T: len, Hq, Hkv, D, blockSize: c.bs, blockCount: S, window: c.W, variant: c.variant },
    );
    refO.set(r.o, a * Hq * D);
    refSel.set(r.blockIndices, a * Hkv * S);
  }
  const t = nsaTensors(fx, c, x);
  const plan = await planNsaVarlen(fx.dev, nsaPlanOptions(c));
  const enc = fx.dev.device.createCommandEncoder();
  plan.run(enc, t);
  await fx.dev.submitAndWait([enc.finish()]);
  const segments = plan.segments;
  plan.dispose();
  const sel = await fx.read(t.blockIndices);
  for (let r = 0; r < total * Hkv; r++) {
    const got = new Set([...sel.subarray(r * S, (r + 1) * S)].filter((b) => b >= 0));
    const want = new Set([...refSel.subarray(r * S, (r + 1) * S)].filter((b) => b >= 0));
    expect([...got].sort(), `blockIndices of row ${r}`).toEqual([...want].sort());
  }
  const dt = c.dtype ?? 'f32';
  const co = compare(await fx.read(t.o), dt === 'f32' ? refO : roundTo(refO, dt));
  expect(passes(co, TOLERANCE[dt]), describeComparison(co)).toBe(true);
  return segments;
}

describe('nsa varlen: one dispatch set over the batch', () => {
  const cases: NsaCase[] = [
    { cu: CU, Hq: 4, Hkv: 2, D: 16, bs: 16, S: 3, W: 20, variant: 'nsa', target: 'cpu' },
    { cu: CU, Hq: 4, Hkv: 2, D: 16, bs: 16, S: 3, W: 20, variant: 'fla', target: 'gpu', extended: true },
    { cu: CU, Hq: 2, Hkv: 1, D: 16, bs: 8, S: 4, W: 0, variant: 'fla', target: 'cpu', dtype: 'f16', extended: true },
    { cu: [0, 0, 9, 100], Hq: 2, Hkv: 2, D: 16, bs: 16, S: 2, W: 0, variant: 'nsa', target: 'gpu' },
  ];
  for (const c of cases)
    it(
      `${c.variant}, ${c.target} shape, window ${c.W}, ${c.dtype ?? 'f32'}, cu ${c.cu.join(',')}`,
      tier(c.extended),
      async () => {
        await runNsa(c);
      },
    );

  it('run creates no buffer, copies nothing and issues the same dispatches for 2 or 7 sequences', async () => {
    const counts = [];
    for (const cu of [
      [0, 100, 230],
      [0, 3, 77, 77, 140, 141, 200, 230],
    ]) {
      const c: NsaCase = { cu, Hq: 4, Hkv: 2, D: 16, bs: 16, S: 3, W: 20, variant: 'nsa', target: 'cpu' };
      const plan = await planNsaVarlen(gpu.dev, nsaPlanOptions(c));
      const n = await countRun(gpu, plan, nsaTensors(gpu, c, nsaInputs(c, 3)));
      expect(n.buffers).toBe(0);
      expect(n.copies).toBe(0);
      const s = plan.segments;
      // pool keys + values, compression, selection, selected blocks, window, combine
      expect(n.passes).toBe(s.pool + s.cmp + s.select + s.slc + s.swa + 1);
      counts.push(n.passes);
      plan.dispose();
    }
    expect(counts).toEqual([7, 7]);
  });
});

interface DsaCase {
  cu: number[];
  Hq: number;
  Hkv: number;
  D: number;
  HI: number;
  DI: number;
  topk: number;
  target: 'cpu' | 'gpu';
  dtype?: FloatDType;
  rowChunk?: number;
}

function dsaInputs(c: DsaCase, seed: number) {
  const total = c.cu[c.cu.length - 1]!;
  const dt = c.dtype ?? 'f32';
  const rng = new Rng(seed);
  return {
    total,
    q: roundTo(rng.normals(total * c.Hq * c.D), dt),
    k: roundTo(rng.normals(total * c.Hkv * c.D), dt),
    v: roundTo(rng.normals(total * c.Hkv * c.D), dt),
    qI: roundTo(rng.normals(total * c.HI * c.DI), dt),
    kI: roundTo(rng.normals(total * c.DI), dt),
    w: roundTo(rng.normals(total * c.HI), dt),
  };
}

function dsaTensors(fx: GpuFixture, c: DsaCase, x: ReturnType<typeof dsaInputs>) {
  const { total } = x;
  const dt = c.dtype ?? 'f32';
  return {
    q: fx.tensor(x.q, [total, c.Hq, c.D], dt),
    k: fx.tensor(x.k, [total, c.Hkv, c.D], dt),
    v: fx.tensor(x.v, [total, c.Hkv, c.D], dt),
    qI: fx.tensor(x.qI, [total, c.HI, c.DI], dt),
    kI: fx.tensor(x.kI, [total, c.DI], dt),
    w: fx.tensor(x.w, [total, c.HI], dt),
    o: fx.nanTensor([total, c.Hq, c.D], dt),
    lse: fx.nanTensor([total, c.Hq]),
  };
}

function dsaPlanOptions(c: DsaCase) {
  const { cu, Hq, Hkv, D, HI, DI, topk, target, dtype, rowChunk } = c;
  return { cuSeqlens: cu, Hq, Hkv, D, HI, DI, topk, target, dtype, rowChunk };
}

async function runDsa(c: DsaCase, fx = gpu) {
  const x = dsaInputs(c, c.cu.length * 13 + c.topk);
  const { total } = x;
  const { Hq, Hkv, D, HI, DI } = c;
  const refO = new Float64Array(total * Hq * D);
  const refL = new Float64Array(total * Hq);
  for (let n = 0; n + 1 < c.cu.length; n++) {
    const a = c.cu[n]!,
      len = c.cu[n + 1]! - a;
    if (!len) continue;
    const sl = (v: Float64Array, w: number) => v.subarray(a * w, (a + len) * w);
    const r = dsaReference(
      sl(x.q, Hq * D),
      sl(x.k, Hkv * D),
      sl(x.v, Hkv * D),
      { qI: sl(x.qI, HI * DI), kI: sl(x.kI, DI), w: sl(x.w, HI) },
      { T: len, Hq, Hkv, D, HI, DI, topk: c.topk },
    );
    refO.set(r.o, a * Hq * D);
    refL.set(r.lse, a * Hq);
  }
  const t = dsaTensors(fx, c, x);
  const plan = await planDsaVarlen(fx.dev, dsaPlanOptions(c));
  const enc = fx.dev.device.createCommandEncoder();
  plan.run(enc, t);
  await fx.dev.submitAndWait([enc.finish()]);
  const info = { chunks: plan.chunks, segments: plan.segments };
  plan.dispose();
  const dt = c.dtype ?? 'f32';
  const co = compare(await fx.read(t.o), dt === 'f32' ? refO : roundTo(refO, dt));
  expect(passes(co, TOLERANCE[dt]), describeComparison(co)).toBe(true);
  const cl = compare(await fx.read(t.lse), refL);
  expect(passes(cl, dt === 'f32' ? TOLERANCE.f32 : TOLERANCE.f16), describeComparison(cl)).toBe(true);
  return info;
}

describe('dsa varlen: one dispatch set over the batch (per row chunk)', () => {
  const cases: DsaCase[] = [
    { cu: CU, Hq: 4, Hkv: 1, D: 16, HI: 2, DI: 16, topk: 24, target: 'cpu' },
    { cu: CU, Hq: 4, Hkv: 2, D: 16, HI: 2, DI: 16, topk: 24, target: 'gpu', dtype: 'f16' },
    // chunks of 50 rows cut through sequences (lists of a sequence that began in the chunk before)
    { cu: CU, Hq: 2, Hkv: 1, D: 16, HI: 3, DI: 8, topk: 10, target: 'gpu', rowChunk: 50 },
    { cu: [0, 0, 5, 100], Hq: 2, Hkv: 1, D: 16, HI: 2, DI: 16, topk: 8, target: 'cpu', rowChunk: 33 },
  ];
  for (const c of cases)
    it(`${c.target} shape, ${c.dtype ?? 'f32'}, topk ${c.topk}, rowChunk ${c.rowChunk ?? 'auto'}, cu ${c.cu.join(',')}`, async () => {
      const r = await runDsa(c);
      if (c.rowChunk) expect(r.chunks).toBe(Math.ceil(c.cu[c.cu.length - 1]! / c.rowChunk));
    });

  it('run creates no buffer, copies nothing and issues the same dispatches for 2 or 7 sequences', async () => {
    const counts = [];
    for (const cu of [
      [0, 100, 230],
      [0, 3, 77, 77, 140, 141, 200, 230],
    ]) {
      const c: DsaCase = { cu, Hq: 2, Hkv: 1, D: 16, HI: 2, DI: 16, topk: 24, target: 'cpu' };
      const plan = await planDsaVarlen(gpu.dev, dsaPlanOptions(c));
      const n = await countRun(gpu, plan, dsaTensors(gpu, c, dsaInputs(c, 4)));
      expect(n.buffers).toBe(0);
      expect(n.copies).toBe(0);
      expect(plan.chunks).toBe(1);
      counts.push(n.passes);
      plan.dispose();
    }
    // indexer, top-k (its passes depend on the row count and longest sequence, both equal here), attention
    expect(counts[0]).toBe(counts[1]);
    expect(counts[0]).toBeLessThanOrEqual(6);
  });
});

describe('attention core lists over a ragged batch: CSR block masks per sequence (block-sparse layout)', () => {
  for (const target of ['cpu', 'gpu'] as const)
    it(`${target} shape: each sequence its own BSR mask, q and k rows of their own (Tq < Tk)`, async () => {
      const Hq = 2,
        Hkv = 1,
        D = 16,
        R = 8,
        C = 8;
      // [Tq, Tk] per sequence: a short one, an empty one, bottom-right Tq < Tk, one not a multiple of R
      const lens: [number, number][] = [
        [3, 3],
        [0, 0],
        [20, 45],
        [37, 37],
      ];
      const rng = new Rng(9);
      const words: number[] = [];
      const seqs: BlockListSeq[] = [];
      const parts: { ptr: number[]; idx: number[] }[] = [];
      let q0 = 0,
        kv0 = 0;
      for (const [Tq, Tk] of lens) {
        const mb = Math.ceil(Tq / R);
        const ptr = [0];
        const idx: number[] = [];
        for (let b = 0; b < mb; b++) {
          const last = Math.floor((Math.min(Tq, (b + 1) * R) - 1 + Tk - Tq) / C);
          for (let c = 0; c <= last; c++) if (c === last || rng.int(0, 2) === 0) idx.push(c);
          ptr.push(idx.length);
        }
        parts.push({ ptr, idx });
        seqs.push({ q0, Tq, kv0, Tk, posOff: Tk - Tq, base: 0, ptr: 0, mb });
        q0 += Tq;
        kv0 += Tk;
      }
      // ptr tables first, then the words; each sequence's ptr values are relative to its words
      for (let i = 0; i < parts.length; i++) {
        seqs[i]!.ptr = words.length;
        words.push(...parts[i]!.ptr);
      }
      for (let i = 0; i < parts.length; i++) {
        seqs[i]!.base = words.length;
        words.push(...parts[i]!.idx);
      }
      const TQ = q0,
        TK = kv0;
      const q = rng.normals(TQ * Hq * D).map(Math.fround);
      const k = rng.normals(TK * Hkv * D).map(Math.fround);
      const v = rng.normals(TK * Hkv * D).map(Math.fround);
      const refO = new Float64Array(TQ * Hq * D);
      const refL = new Float64Array(TQ * Hq);
      lens.forEach(([Tq, Tk], i) => {
        if (!Tq) return;
        const s = seqs[i]!;
        const r = blockSparseReference(
          q.subarray(s.q0 * Hq * D, (s.q0 + Tq) * Hq * D),
          k.subarray(s.kv0 * Hkv * D, (s.kv0 + Tk) * Hkv * D),
          v.subarray(s.kv0 * Hkv * D, (s.kv0 + Tk) * Hkv * D),
          { Tq, Tk, Hq, Hkv, D, R, C, indptr: parts[i]!.ptr, indices: parts[i]!.idx },
        );
        refO.set(r.o, s.q0 * Hq * D);
        refL.set(r.lse, s.q0 * Hq);
      });
      const maxEntries = Math.max(...parts.map((p) => Math.max(0, ...p.ptr.slice(1).map((x, j) => x - p.ptr[j]!))));
      const plan = await BlockListPlan.create(gpu.dev, {
        Tq: TQ,
        Tk: TK,
        Hq,
        Hkv,
        D,
        Dv: D,
        rows: R,
        heads: 1,
        stride: 0,
        base: 0,
        block: C,
        maxEntries,
        posOff: 0,
        causal: true,
        scale: 1 / Math.sqrt(D),
        qDtype: 'f32',
        kvDtype: 'f32',
        oDtype: 'f32',
        target,
        seqs,
      });
      const lists = gpu.dev.upload(new Uint32Array(words));
      const o = gpu.nanTensor([TQ, Hq, D]);
      const lse = gpu.nanTensor([TQ, Hq]);
      const enc = gpu.dev.device.createCommandEncoder();
      plan.run(enc, {
        q: gpu.tensor(q, [TQ, Hq, D]),
        k: gpu.tensor(k, [TK, Hkv, D]),
        v: gpu.tensor(v, [TK, Hkv, D]),
        lists: { buffer: lists },
        o,
        lse,
      });
      await gpu.dev.submitAndWait([enc.finish()]);
      plan.dispose();
      gpu.dev.destroyBuffer(lists);
      const co = compare(await gpu.read(o), refO);
      expect(passes(co, TOLERANCE.f32), describeComparison(co)).toBe(true);
      const cl = compare(await gpu.read(lse), refL);
      expect(passes(cl, TOLERANCE.f32), describeComparison(cl)).toBe(true);
    });
});

interface BsvCase {
  /** Per sequence [Tq, Tk]. */
  lens: [number, number][];
  Hq: number;
  Hkv: number;
  D: number;
  R: number;
  C: number;
  P: 1 | 'kv' | 'q';
  target: 'cpu' | 'gpu';
  dtype?: FloatDType;
  causal?: boolean;
  /** Give cuSeqlensK (else keys = queries per sequence). */
  keys?: boolean;
}

/** A random BSR mask of one pattern: block row r keeps each key block with probability 1/2, row `empty` none. */
function bsrMask(rng: Rng, Tq: number, Tk: number, R: number, C: number, empty: number) {
  const indptr = [0];
  const indices: number[] = [];
  for (let r = 0; r < Math.ceil(Tq / R); r++) {
    if (r !== empty) for (let b = 0; b < Math.ceil(Tk / C); b++) if (rng.next() < 0.5) indices.push(b);
    indptr.push(indices.length);
  }
  return { indptr, indices };
}

function bsvSetup(fx: GpuFixture, c: BsvCase, seed: number) {
  const rng = new Rng(seed);
  const dt = c.dtype ?? 'f32';
  const P = c.P === 1 ? 1 : c.P === 'kv' ? c.Hkv : c.Hq;
  const cuQ = [0];
  const cuK = [0];
  for (const [tq, tk] of c.lens) {
    cuQ.push(cuQ[cuQ.length - 1]! + tq);
    cuK.push(cuK[cuK.length - 1]! + (c.keys ? tk : tq));
  }
  const masks = c.lens.map(([tq, tk], n) => {
    const Tk = c.keys ? tk : tq;
    return Array.from({ length: P }, (_, p) => bsrMask(rng, tq, Tk, c.R, c.C, n === 1 && p === 0 ? 0 : -1));
  });
  const pick = (f: 'indptr' | 'indices') => masks.map((m) => (P === 1 ? m[0]![f] : m.map((x) => x[f])));
  const TQ = cuQ[cuQ.length - 1]!;
  const TK = cuK[cuK.length - 1]!;
  const { Hq, Hkv, D } = c;
  const q = roundTo(rng.normals(TQ * Hq * D), dt);
  const k = roundTo(rng.normals(TK * Hkv * D), dt);
  const v = roundTo(rng.normals(TK * Hkv * D), dt);
  const refO = new Float64Array(TQ * Hq * D);
  const refL = new Float64Array(TQ * Hq);
  c.lens.forEach((_, n) => {
    const Tq = cuQ[n + 1]! - cuQ[n]!;
    const Tk = cuK[n + 1]! - cuK[n]!;
    if (!Tq) return;
    const [a, b] = [cuQ[n]!, cuK[n]!];
    const r = blockSparseReference(
      q.subarray(a * Hq * D, (a + Tq) * Hq * D),
      k.subarray(b * Hkv * D, (b + Tk) * Hkv * D),
      v.subarray(b * Hkv * D, (b + Tk) * Hkv * D),
      {
        Tq,
        Tk,
        Hq,
        Hkv,
        D,
        R: c.R,
        C: c.C,
        indptr: pick('indptr')[n]!,
        indices: pick('indices')[n]!,
        causal: c.causal,
      },
    );
    refO.set(r.o, a * Hq * D);
    refL.set(r.lse, a * Hq);
  });
  const options = {
    cuSeqlens: cuQ,
    cuSeqlensK: c.keys ? cuK : undefined,
    Hq,
    Hkv,
    D,
    R: c.R,
    C: c.C,
    indptr: pick('indptr'),
    indices: pick('indices'),
    causal: c.causal,
    dtype: c.dtype,
    target: c.target,
  };
  const tensors = () => ({
    q: fx.tensor(q, [TQ, Hq, D], dt),
    k: fx.tensor(k, [TK, Hkv, D], dt),
    v: fx.tensor(v, [TK, Hkv, D], dt),
    o: fx.nanTensor([TQ, Hq, D], dt),
    lse: fx.nanTensor([TQ, Hq]),
  });
  const check = async (t: ReturnType<typeof tensors>) => {
    const co = compare(await fx.read(t.o), dt === 'f32' ? refO : roundTo(refO, dt));
    expect(passes(co, TOLERANCE[dt]), describeComparison(co)).toBe(true);
    const cl = compare(await fx.read(t.lse), refL);
    expect(passes(cl, TOLERANCE.f32), describeComparison(cl)).toBe(true);
  };
  return { options, tensors, check };
}

async function runBsv(c: BsvCase, fx = gpu, loopLimit?: number) {
  const s = bsvSetup(fx, c, c.lens.length * 7 + c.R + c.C);
  const plan = await planBlockSparseVarlen(fx.dev, { ...s.options, loopLimit });
  const t = s.tensors();
  const enc = fx.dev.device.createCommandEncoder();
  plan.run(enc, t);
  await fx.dev.submitAndWait([enc.finish()]);
  plan.dispose();
  await s.check(t);
  return plan.segments;
}

// lengths not multiples of R or C, an empty sequence, one shorter than a block; sequence 1's first block row sees nothing
const BSV_LENS: [number, number][] = [
  [3, 3],
  [45, 45],
  [0, 0],
  [37, 37],
  [1, 1],
  [70, 70],
];

describe('block-sparse varlen: one dispatch over the batch, one BSR mask per sequence', () => {
  const cases: BsvCase[] = [
    { lens: BSV_LENS, Hq: 2, Hkv: 1, D: 16, R: 8, C: 16, P: 1, target: 'cpu' },
    { lens: BSV_LENS, Hq: 4, Hkv: 2, D: 16, R: 16, C: 8, P: 'kv', target: 'gpu' },
    { lens: BSV_LENS, Hq: 4, Hkv: 2, D: 16, R: 16, C: 8, P: 'q', target: 'cpu', dtype: 'f16', causal: false },
    // keys of their own (cuSeqlensK): Tq < Tk bottom-right, an empty query sequence with keys
    {
      lens: [
        [20, 45],
        [0, 9],
        [37, 37],
        [5, 70],
      ],
      Hq: 2,
      Hkv: 1,
      D: 16,
      R: 8,
      C: 16,
      P: 1,
      target: 'gpu',
      keys: true,
    },
  ];
  for (const c of cases)
    it(`${c.target} shape, P ${c.P}, ${c.dtype ?? 'f32'}${c.causal === false ? ', not causal' : ''}${c.keys ? ', cuSeqlensK' : ''}: equals the per-sequence reference`, async () => {
      expect(await runBsv(c)).toBe(1);
    });

  // one test per shape: the cpu shape in the core tier, the gpu shape (a workgroup per row and
  // block, slow on a CPU adapter) in the extended tier
  for (const target of ['cpu', 'gpu'] as const) {
    const name = `loopLimit 1024: rows split in parts (merged), still one dispatch set, equals the reference (${target} shape)`;
    it(name, tier(target === 'gpu'), async () => {
      const parts = await runBsv(
        {
          lens: [
            [5, 5],
            [700, 700],
            [0, 0],
            [131, 131],
          ],
          Hq: 2,
          Hkv: 1,
          D: 16,
          R: 64,
          C: 128,
          P: 1,
          target,
        },
        gpu,
        1024,
      );
      expect(parts).toBeGreaterThan(1);
    });
  }

  it('run creates no buffer, copies nothing and issues the same dispatches for 2 or 6 sequences', async () => {
    const counts = [];
    for (const lens of [
      [
        [100, 100],
        [130, 130],
      ],
      BSV_LENS,
    ] as [number, number][][]) {
      const s = bsvSetup(gpu, { lens, Hq: 2, Hkv: 1, D: 16, R: 8, C: 16, P: 1, target: 'cpu' }, 3);
      const plan = await planBlockSparseVarlen(gpu.dev, s.options);
      const t = s.tensors();
      const n = await countRun(gpu, plan, t);
      await s.check(t);
      expect(n.buffers).toBe(0);
      expect(n.copies).toBe(0);
      expect(n.passes).toBe(plan.segments);
      counts.push(n.passes);
      plan.dispose();
    }
    expect(counts).toEqual([1, 1]);
  });

  it('a batch of only empty sequences runs nothing; the convenience call equals the reference', async () => {
    const plan = await planBlockSparseVarlen(gpu.dev, {
      cuSeqlens: [0, 0, 0],
      Hq: 2,
      Hkv: 1,
      D: 16,
      R: 8,
      C: 8,
      indptr: [[0], [0]],
      indices: [[], []],
    });
    const none = {
      q: gpu.nanTensor([0, 2, 16]),
      k: gpu.nanTensor([0, 1, 16]),
      v: gpu.nanTensor([0, 1, 16]),
      o: gpu.nanTensor([0, 2, 16]),
    };
    expect((await countRun(gpu, plan, none)).passes).toBe(0);
    plan.dispose();
    const s = bsvSetup(gpu, { lens: BSV_LENS, Hq: 2, Hkv: 2, D: 16, R: 8, C: 8, P: 1, target: 'gpu' }, 4);
    const t = s.tensors();
    await blockSparseVarlen(gpu.dev, t, s.options);
    await s.check(t);
  });

  it('bad masks are typed errors naming the sequence before anything is planned', async () => {
    const base = { cuSeqlens: [0, 10, 30], Hq: 2, Hkv: 1, D: 16, R: 8, C: 8 };
    const ok = {
      indptr: [
        [0, 1, 2],
        [0, 1, 2, 3],
      ],
      indices: [
        [0, 1],
        [0, 1, 2],
      ],
    };
    await expect(planBlockSparseVarlen(gpu.dev, { ...base, ...ok, indptr: [ok.indptr[0]!] })).rejects.toMatchObject({
      code: 'E_ARG',
      argument: 'indptr',
    });
    await expect(
      planBlockSparseVarlen(gpu.dev, {
        ...base,
        ...ok,
        indices: [
          [0, 1],
          [0, 1, 4],
        ],
      }),
    ).rejects.toMatchObject({ code: 'E_ARG', argument: 'indices[1][2]' });
    await expect(
      planBlockSparseVarlen(gpu.dev, {
        ...base,
        ...ok,
        indptr: [
          [0, 1, 2],
          [0, 1, 2],
        ],
      }),
    ).rejects.toMatchObject({ code: 'E_SHAPE', argument: 'indptr[1]' });
    await expect(
      planBlockSparseVarlen(gpu.dev, {
        ...base,
        indptr: [
          [0, 1, 2],
          [
            [0, 1, 2, 3],
            [0, 1, 2, 3],
          ],
        ],
        indices: [
          [0, 1],
          [
            [0, 1, 2],
            [0, 1, 2],
          ],
        ],
        Hkv: 2,
      }),
    ).rejects.toMatchObject({ code: 'E_ARG', argument: 'indptr[1]' });
    await expect(planBlockSparseVarlen(gpu.dev, { ...base, ...ok, cuSeqlensK: [0, 10] })).rejects.toMatchObject({
      code: 'E_ARG',
      argument: 'cuSeqlensK',
    });
  });
});
