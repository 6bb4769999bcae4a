import { describe, expect, it } from 'vitest';
import { attention, attentionReference, planAttention, planDecode, decodeAttention } from '../kernels/dense/index.js';
import { attentionKeysPerPart, planBatchAttention } from '../kernels/attention/attention.js';
import { DensePad, padLayout } from '../kernels/dense/pad.js';
import { queryGroupTables } from '../kernels/dense/prefill_core.js';
import { resolveAttention } from '../kernels/dense/options.js';
import { TesseraError } from '../src/errors.js';
import { compare, describeComparison, passes, Rng, TOLERANCE } from '../src/testing.js';
import { roundTo, type FloatDType } from '../src/tensor.js';
import { patchMethod, useGpu, type GpuFixture } from './helpers/gpu.js';
import { tier } from './helpers/tier.js';

const gpu = useGpu();

interface Case {
  /** Query lengths per sequence (one entry: a single sequence). */
  tq: number[];
  /** Key lengths per sequence (default tq). */
  tk?: number[];
  Hq: number;
  Hkv: number;
  D: number;
  Dv?: number;
  dtype: FloatDType;
  outDtype?: FloatDType;
  causal?: boolean;
  window?: number;
  sinks?: number;
  sinkLogit?: boolean;
  target?: 'cpu' | 'gpu';
  subgroups?: boolean;
  noLse?: boolean;
  /** Bound on a split prefill's partials (forces several query groups when small). */
  partialBytes?: number;
  /** Only in the extended test tier (`npm run test:extended`; CI runs both tiers). */
  extended?: true;
}

function caseName(c: Case): string {
  const t = c.tq.length > 1 ? `ragged${c.tq.join('_')}` : `T${c.tq[0]}`;
  const tk = c.tk ? `-Tk${c.tk.join('_')}` : '';
  const dv = c.Dv !== undefined && c.Dv !== c.D ? `-Dv${c.Dv}` : '';
  const out = c.outDtype && c.outDtype !== c.dtype ? `-out${c.outDtype}` : '';
  const mask = c.causal === false ? 'noncausal' : 'causal';
  const win = c.window ? `-W${c.window}` : '';
  const sinks = c.sinks ? `-S${c.sinks}` : '';
  const sl = c.sinkLogit ? '-sinklogit' : '';
  const target = c.target ? `-${c.target}${c.subgroups === false ? '-nosg' : ''}` : '';
  return `${t}${tk}-Hq${c.Hq}-Hkv${c.Hkv}-D${c.D}${dv}-${c.dtype}${out}-${mask}${win}${sinks}${sl}${target}${c.noLse ? '-nolse' : ''}${c.partialBytes ? `-pb${c.partialBytes}` : ''}`;
}

/** Random inputs, rounded to the storage dtype (what the reference sees). */
function inputs(c: Case, seed: number) {
  const rng = new Rng(seed);
  const Dv = c.Dv ?? c.D;
  const Tq = c.tq.reduce((a, b) => a + b, 0);
  const Tk = (c.tk ?? c.tq).reduce((a, b) => a + b, 0);
  const q = roundTo(rng.normals(Tq * c.Hq * c.D), c.dtype);
  const k = roundTo(rng.normals(Tk * c.Hkv * c.D), c.dtype);
  const v = roundTo(rng.normals(Tk * c.Hkv * Dv), c.dtype);
  const sink = c.sinkLogit ? rng.normals(c.Hq, 2) : undefined;
  return { q, k, v, sink, Tq, Tk, Dv };
}

/** Float64 reference over the ragged batch, sequence by sequence. */
function referenceBatch(c: Case, x: ReturnType<typeof inputs>, tqs: number[], tks: number[]) {
  const { Hq, Hkv, D } = c;
  const Dv = x.Dv;
  const o = new Float64Array(x.Tq * Hq * Dv);
  const lse = new Float64Array(x.Tq * Hq);
  let qo = 0;
  let ko = 0;
  for (let n = 0; n < tqs.length; n++) {
    const tq = tqs[n]!;
    const tk = tks[n]!;
    if (tq > 0) {
      const r = attentionReference(
        x.q.subarray(qo * Hq * D, (qo + tq) * Hq * D),
        x.k.subarray(ko * Hkv * D, (ko + tk) * Hkv * D),
        x.v.subarray(ko * Hkv * Dv, (ko + tk) * Hkv * Dv),
        {
          Tq: tq,
          Tk: tk,
          Hq,
          Hkv,
          D,
          Dv,
          causal: c.causal ?? true,
          window: c.window,
          sinks: c.sinks,
          sinkLogits: x.sink,
        },
      );
      o.set(r.o, qo * Hq * Dv);
      lse.set(r.lse, qo * Hq);
    }
    qo += tq;
    ko += tk;
  }
  return { o, lse };
}

async function check(
  c: Case,
  got: { o: Float64Array; lse?: Float64Array },
  ref: { o: Float64Array; lse: Float64Array },
) {
  const outDtype = c.outDtype ?? c.dtype;
  const co = compare(got.o, ref.o);
  expect(
    passes(co, TOLERANCE[outDtype === 'f32' ? c.dtype : outDtype === 'bf16' || c.dtype === 'bf16' ? 'bf16' : 'f16']),
    `o: ${describeComparison(co)}`,
  ).toBe(true);
  if (got.lse) {
    const cl = compare(got.lse, ref.lse);
    expect(passes(cl, TOLERANCE.f32), `lse: ${describeComparison(cl)}`).toBe(true);
  }
}

// The core tier (npm test) keeps head dims 32 and 64 in f32 and f16, GQA, ragged batches (one
// with a sequence without keys), Tq != Tk, causal and not, windows, sinks and a sink logit, the gpu
// shape (tiles; padded bf16 with Dqk != Dv) and the cpu shape without subgroups; the cases marked
// `extended` (other head dims, each its own pipeline, and the rest of the cross product) run in
// `npm run test:extended`.
const PREFILL: Case[] = [
  { tq: [1], Hq: 1, Hkv: 1, D: 64, dtype: 'f32', extended: true },
  { tq: [63], Hq: 2, Hkv: 1, D: 32, dtype: 'f32' },
  { tq: [64], Hq: 4, Hkv: 4, D: 64, dtype: 'f32', causal: false },
  { tq: [65], Hq: 4, Hkv: 1, D: 80, dtype: 'f32', extended: true },
  { tq: [300], Hq: 4, Hkv: 2, D: 64, dtype: 'f16' },
  { tq: [1000], Hq: 2, Hkv: 1, D: 128, dtype: 'f32', extended: true },
  { tq: [300], Hq: 2, Hkv: 2, D: 96, dtype: 'f16', causal: false, extended: true },
  { tq: [65], Hq: 2, Hkv: 1, D: 112, Dv: 10, dtype: 'bf16', extended: true },
  { tq: [63], Hq: 1, Hkv: 1, D: 256, dtype: 'f32', extended: true },
  { tq: [300], Hq: 4, Hkv: 1, D: 64, Dv: 32, dtype: 'f32', extended: true },
  { tq: [65], Hq: 2, Hkv: 1, D: 6, dtype: 'f16', extended: true },
  { tq: [64], Hq: 1, Hkv: 1, D: 5, Dv: 7, dtype: 'f32', causal: false, noLse: true, extended: true },
  // bottom-right causal with Tq != Tk: rows i < Tq - Tk see no key (o = 0, lse = -inf)
  { tq: [100], tk: [37], Hq: 2, Hkv: 1, D: 64, dtype: 'f32' },
  { tq: [5], tk: [300], Hq: 4, Hkv: 2, D: 64, dtype: 'f16', extended: true },
  // ragged batches; the middle sequence of the second has no keys
  { tq: [65, 1, 300], Hq: 4, Hkv: 2, D: 64, dtype: 'f32' },
  { tq: [65, 3, 200], tk: [80, 0, 200], Hq: 2, Hkv: 1, D: 32, dtype: 'f16', causal: false },
  // sliding windows, sinks, sink logits
  { tq: [300], Hq: 4, Hkv: 2, D: 64, dtype: 'f32', window: 64, sinks: 4 },
  { tq: [1000], Hq: 2, Hkv: 2, D: 32, dtype: 'f16', window: 64 },
  { tq: [65], Hq: 2, Hkv: 1, D: 64, dtype: 'f32', window: 1000, sinks: 2 },
  { tq: [300], Hq: 2, Hkv: 1, D: 32, dtype: 'f32', window: 1 },
  { tq: [300], Hq: 4, Hkv: 2, D: 64, dtype: 'f32', window: 128, sinkLogit: true },
  { tq: [63], Hq: 2, Hkv: 2, D: 32, dtype: 'f32', causal: false, sinkLogit: true, extended: true },
  { tq: [40, 300], tk: [20, 310], Hq: 2, Hkv: 1, D: 64, dtype: 'f32', window: 50, sinks: 3 },
  // the other kernel variants (chosen automatically on other adapters)
  { tq: [300], Hq: 4, Hkv: 2, D: 64, dtype: 'f16', window: 64, sinks: 4, target: 'gpu' },
  { tq: [65, 130], Hq: 2, Hkv: 1, D: 80, Dv: 48, dtype: 'f32', causal: false, target: 'gpu', extended: true },
  { tq: [100], tk: [37], Hq: 2, Hkv: 1, D: 80, Dv: 48, dtype: 'f32', sinkLogit: true, target: 'gpu', extended: true },
  { tq: [300], Hq: 4, Hkv: 2, D: 64, dtype: 'f32', window: 64, sinks: 4, target: 'cpu', subgroups: false },
  // padded copies (pad.ts): head dims not multiples of 4, f16/bf16 K/V not in whole 16-byte words
  {
    tq: [65, 3],
    tk: [80, 20],
    Hq: 4,
    Hkv: 2,
    D: 33,
    Dv: 7,
    dtype: 'f32',
    window: 30,
    sinks: 2,
    sinkLogit: true,
    extended: true,
  },
  { tq: [100], tk: [37], Hq: 2, Hkv: 1, D: 7, dtype: 'f16', outDtype: 'f32', target: 'gpu', extended: true },
  { tq: [63], Hq: 2, Hkv: 1, D: 12, dtype: 'f16', extended: true },
  { tq: [33, 64], Hq: 3, Hkv: 3, D: 20, Dv: 6, dtype: 'bf16', causal: false, target: 'gpu', noLse: true },
  { tq: [130], Hq: 4, Hkv: 1, D: 5, Dv: 36, dtype: 'f32', target: 'cpu', subgroups: false, extended: true },
  { tq: [33], tk: [40], Hq: 1, Hkv: 1, D: 6, Dv: 5, dtype: 'f16', window: 9, extended: true },
  // 17,000 keys per row: under llvmpipe's cap (65,535 loop iterations) the core splits them into
  // parts and merges
  { tq: [16], tk: [17000], Hq: 2, Hkv: 1, D: 128, dtype: 'f32', causal: false, extended: true },
];

/**
 * Whether a plan copies through padded workspaces: head dims that are not multiples of 4, and
 * f16/bf16 K/V of a byte size that is not a multiple of 16 (the core reads 16-byte words).
 */
function expectedPadded(c: Case): boolean {
  const Dv = c.Dv ?? c.D;
  const Tk = (c.tk ?? c.tq).reduce((a, b) => a + b, 0);
  const eb = c.dtype === 'f32' ? 4 : 2;
  if (c.D % 4 !== 0 || Dv % 4 !== 0) return true;
  return (Tk * c.Hkv * c.D * eb) % 16 !== 0 || (Tk * c.Hkv * Dv * eb) % 16 !== 0;
}

/** Plans, runs and checks one prefill case on fixture `g`; returns the plan's split choice. */
async function runPrefill(
  g: GpuFixture,
  c: Case,
  seed: number,
  loopLimit?: number,
): Promise<{ splits: number; kvChunk: number; queryGroups: number; padded: boolean }> {
  const x = inputs(c, seed);
  const tks = c.tk ?? c.tq;
  const ref = referenceBatch(c, x, c.tq, tks);
  const q = g.tensor(x.q, [x.Tq, c.Hq, c.D], c.dtype);
  const k = g.tensor(x.k, [x.Tk, c.Hkv, c.D], c.dtype);
  const v = g.tensor(x.v, [x.Tk, c.Hkv, x.Dv], c.dtype);
  const o = g.nanTensor([x.Tq, c.Hq, x.Dv], c.outDtype ?? c.dtype);
  const lse = c.noLse ? undefined : g.nanTensor([x.Tq, c.Hq]);
  const sinkLogits = x.sink ? g.tensor(x.sink, [c.Hq]) : undefined;
  const cu = (l: number[]) => l.reduce((a, b) => [...a, a[a.length - 1]! + b], [0]);
  const shape = c.tq.length > 1 || c.tk ? { cuSeqlensQ: cu(c.tq), cuSeqlensK: cu(tks) } : { Tq: x.Tq };
  const plan = await planAttention(g.dev, {
    ...shape,
    Hq: c.Hq,
    Hkv: c.Hkv,
    D: c.D,
    Dv: x.Dv,
    dtype: c.dtype,
    outDtype: c.outDtype,
    causal: c.causal,
    window: c.window,
    sinks: c.sinks,
    sinkLogit: c.sinkLogit,
    target: c.target,
    subgroups: c.subgroups,
    partialBytes: c.partialBytes,
    loopLimit,
  } as Parameters<typeof planAttention>[1]);
  await g.dev.scoped('test', async () => {
    const enc = g.dev.device.createCommandEncoder();
    plan.run(enc, { q, k, v, o, lse, sinkLogits });
    await g.dev.submitAndWait([enc.finish()]);
  });
  const split = { splits: plan.splits, kvChunk: plan.kvChunk, queryGroups: plan.queryGroups, padded: plan.padded };
  // the kernel shape: the option, else the adapter's class; the deprecated variant adds subgroups
  const target = c.target ?? g.dev.adapterClass;
  expect(plan.target).toBe(target);
  expect(plan.variant).toBe(target === 'gpu' ? 'gpu' : plan.options.subgroups ? 'cpu+subgroups' : 'cpu-nosubgroups');
  plan.dispose();
  expect(split.padded).toBe(expectedPadded(c));
  await check(c, { o: await g.read(o), lse: lse ? await g.read(lse) : undefined }, ref);
  return split;
}

describe('dense prefill', () => {
  PREFILL.forEach((c, i) => {
    it(caseName(c), tier(c.extended), async () => {
      await runPrefill(gpu, c, 100 + i);
    });
  });

  it('convenience call attention() reads shapes from the tensors', async () => {
    const c: Case = { tq: [70], tk: [90], Hq: 2, Hkv: 1, D: 32, dtype: 'f32' };
    const x = inputs(c, 7);
    const ref = referenceBatch(c, x, [70], [90]);
    const o = gpu.nanTensor([70, 2, 32]);
    const lse = gpu.nanTensor([70, 2]);
    await attention(gpu.dev, {
      q: gpu.tensor(x.q, [70, 2, 32]),
      k: gpu.tensor(x.k, [90, 1, 32]),
      v: gpu.tensor(x.v, [90, 1, 32]),
      o,
      lse,
    });
    await check(c, { o: await gpu.read(o), lse: await gpu.read(lse) }, ref);
  });
});

describe('dense prefill on the core: query groups and padded copies', () => {
  it('queryGroupTables: a group of tokens as its own batch, causal bottom-right kept', () => {
    const spans = [
      { qOff: 0, tq: 5, kOff: 0, tk: 9 },
      { qOff: 5, tq: 0, kOff: 9, tk: 4 },
      { qOff: 5, tq: 6, kOff: 13, tk: 3 },
    ];
    // tokens 2..7: the tail of sequence 0 (all its keys), the empty one, the first 2 queries of
    // sequence 2 (6 queries, 3 keys: its queries 0..1 see none, so it keeps 3 - 6 + 2 < 0 -> 0 keys)
    expect(queryGroupTables(spans, 2, 7, true)).toEqual({ qoIndptr: [0, 3, 3, 5], kvIndptr: [0, 9, 13, 13] });
    expect(queryGroupTables(spans, 2, 7, false)).toEqual({ qoIndptr: [0, 3, 3, 5], kvIndptr: [0, 9, 13, 16] });
    // inside one sequence: its queries 1..3 of 5 over its first 9 - 5 + 4 = 8 keys
    expect(queryGroupTables(spans, 1, 4, true)).toEqual({ qoIndptr: [0, 3], kvIndptr: [0, 8] });
    // the last tokens: the trailing keys of sequence 2 (its 4th query sees 3 - 6 + 4 + 1 = 2 keys)
    expect(queryGroupTables(spans, 8, 11, true)).toEqual({ qoIndptr: [0, 3], kvIndptr: [13, 16] });
    expect(() => queryGroupTables(spans, 4, 4, true)).toThrow(TesseraError);
  });

  it('the core selects a written schedule slot again, and refuses one never written', async () => {
    const core = await planBatchAttention(gpu.dev, {
      source: 'ragged',
      maxBatch: 1,
      maxQTokens: 4,
      maxKvTokens: 8,
      Hq: 1,
      Hkv: 1,
      D: 4,
      scheduleSlots: 3,
    });
    try {
      const a = core.schedule({ qoIndptr: [0, 2], kvIndptr: [0, 5] });
      const b = core.schedule({ qoIndptr: [0, 4], kvIndptr: [1, 8] });
      expect(core.select(a.slot)).toBe(a);
      expect(core.scheduled).toBe(a);
      expect(core.select(b.slot).kvLens).toEqual([7]);
      expect(() => core.select(2)).toThrow(expect.objectContaining({ code: 'E_ARG', argument: 'slot' }));
      expect(() => core.select(1.5)).toThrow(expect.objectContaining({ code: 'E_ARG', argument: 'slot' }));
    } finally {
      core.dispose();
    }
  });

  it('padLayout: which tensors are copied', () => {
    expect(padLayout({ D: 6, Dv: 8, Hkv: 1, dtype: 'f32' }, 100)).toEqual({
      D4: 8,
      Dv4: 8,
      q: true,
      k: true,
      v: false,
      o: false,
    });
    // f16 K/V of 63 rows of 12 channels end inside a 16-byte word: copied, nothing padded
    expect(padLayout({ D: 12, Dv: 12, Hkv: 1, dtype: 'f16' }, 63)).toMatchObject({
      q: false,
      k: true,
      v: true,
      o: false,
    });
    expect(padLayout({ D: 12, Dv: 12, Hkv: 1, dtype: 'f16' }, 64)).toMatchObject({ q: false, k: false, v: false });
    expect(padLayout({ D: 64, Dv: 7, Hkv: 2, dtype: 'f32' }, 5)).toMatchObject({
      q: false,
      k: false,
      v: true,
      o: true,
    });
  });

  // The row copies themselves, bit for bit (no float64: the copies move bits).
  for (const [dtype, outDtype] of [
    ['f32', 'f32'],
    ['f16', 'f16'],
    ['bf16', 'f32'],
  ] as const) {
    it(`the padded copies are exact (${dtype} in, ${outDtype} out)`, async () => {
      // odd element counts: 16-bit q, k and o rows (and their ends) fall mid-word
      const [Tq, Tk, Hq, Hkv, D, Dv] = [3, 5, 1, 1, 5, 7];
      const r = resolveAttention(gpu.dev, { Hq, Hkv, D, Dv, dtype, outDtype });
      const pad = (await DensePad.create(gpu.dev, r, Tq, Tk))!;
      try {
        const rng = new Rng(41);
        const host = {
          q: roundTo(rng.normals(Tq * Hq * D), dtype),
          k: roundTo(rng.normals(Tk * Hkv * D), dtype),
          v: roundTo(rng.normals(Tk * Hkv * Dv), dtype),
          o: roundTo(rng.normals(Tq * Hq * 8), outDtype),
        };
        const t = {
          q: gpu.tensor(host.q, [Tq, Hq, D], dtype),
          k: gpu.tensor(host.k, [Tk, Hkv, D], dtype),
          v: gpu.tensor(host.v, [Tk, Hkv, Dv], dtype),
          o: gpu.nanTensor([Tq, Hq, Dv], outDtype),
        };
        const enc = gpu.dev.device.createCommandEncoder();
        const io = pad.stage(enc, t);
        expect(io.q.shape).toEqual([Tq, Hq, 8]);
        expect(io.v.shape).toEqual([Tk, Hkv, 8]);
        expect(io.o.shape).toEqual([Tq, Hq, 8]);
        // what the core would have written to the padded o
        const oPadded = gpu.tensor(host.o, [Tq, Hq, 8], outDtype);
        enc.copyBufferToBuffer(oPadded.buffer, 0, io.o.buffer, 0, oPadded.buffer.size);
        pad.finish(enc, t.o);
        await gpu.dev.submitAndWait([enc.finish()]);
        const widen = (x: Float64Array, w: number, w4: number) =>
          Array.from({ length: (x.length / w) * w4 }, (_, i) =>
            i % w4 < w ? x[Math.floor(i / w4) * w + (i % w4)]! : 0,
          );
        const narrow = (x: Float64Array, w4: number, w: number) =>
          Array.from({ length: (x.length / w4) * w }, (_, i) => x[Math.floor(i / w) * w4 + (i % w)]!);
        expect(Array.from(await gpu.read(io.q))).toEqual(widen(host.q, D, 8));
        expect(Array.from(await gpu.read(io.k))).toEqual(widen(host.k, D, 8));
        expect(Array.from(await gpu.read(io.v))).toEqual(widen(host.v, Dv, 8));
        expect(Array.from(await gpu.read(t.o))).toEqual(narrow(host.o, 8, Dv));
      } finally {
        pad.dispose();
      }
    });
  }

  it('an o whose buffer ends inside a 4-byte word is refused before anything is encoded', async () => {
    // f16 o [3, 1, 7]: 21 halves = 42 bytes; tensors take whole words (byteSize: 44), which the
    // padded copy back relies on: it writes whole words and keeps the half after the tensor
    const [Tq, Hq, Hkv, D, Dv] = [3, 1, 1, 8, 7];
    const plan = await planAttention(gpu.dev, { Tq, Hq, Hkv, D, Dv, dtype: 'f16' });
    const buffer = gpu.dev.device.createBuffer({ size: 42, usage: 0x80 | 0x4 | 0x8 }); // STORAGE | COPY_SRC | COPY_DST
    try {
      expect(plan.padded).toBe(true);
      const rng = new Rng(5);
      const t = {
        q: gpu.tensor(rng.normals(Tq * Hq * D), [Tq, Hq, D], 'f16'),
        k: gpu.tensor(rng.normals(Tq * Hkv * D), [Tq, Hkv, D], 'f16'),
        v: gpu.tensor(rng.normals(Tq * Hkv * Dv), [Tq, Hkv, Dv], 'f16'),
        o: { buffer, shape: [Tq, Hq, Dv], dtype: 'f16' as const },
      };
      const before = gpu.uncaptured.length;
      const enc = gpu.dev.device.createCommandEncoder();
      let err: unknown;
      try {
        plan.run(enc, t);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(TesseraError);
      expect((err as TesseraError).code, String(err)).toBe('E_BUFFER');
      expect((err as TesseraError).argument).toBe('o.buffer');
      // the encoder holds no open pass: it finishes and submits without a validation error
      await gpu.dev.submitAndWait([enc.finish()]);
      expect(gpu.uncaptured.slice(before)).toEqual([]);
    } finally {
      plan.dispose();
      buffer.destroy();
    }
  });

  it('two runs of one padded, grouped plan in one encoder keep their own inputs and outputs', async () => {
    const c: Case = { tq: [150, 90], tk: [900, 700], Hq: 2, Hkv: 1, D: 6, Dv: 10, dtype: 'f16', partialBytes: 1 };
    const cu = (l: number[]) => l.reduce((a, b) => [...a, a[a.length - 1]! + b], [0]);
    const plan = await planAttention(gpu.dev, {
      cuSeqlensQ: cu(c.tq),
      cuSeqlensK: cu(c.tk!),
      Hq: c.Hq,
      Hkv: c.Hkv,
      D: c.D,
      Dv: c.Dv,
      dtype: c.dtype,
      partialBytes: 1,
      loopLimit: 4096,
    });
    const dev = gpu.dev.device;
    let buffers = 0;
    let groups = 0;
    const undo: (() => void)[] = [];
    try {
      expect(plan.padded).toBe(true);
      expect(plan.queryGroups).toBeGreaterThan(1);
      const runs = [0, 1].map((i) => {
        const x = inputs(c, 60 + i);
        return {
          x,
          ref: referenceBatch(c, x, c.tq, c.tk!),
          t: {
            q: gpu.tensor(x.q, [x.Tq, c.Hq, c.D], c.dtype),
            k: gpu.tensor(x.k, [x.Tk, c.Hkv, c.D], c.dtype),
            v: gpu.tensor(x.v, [x.Tk, c.Hkv, x.Dv], c.dtype),
            o: gpu.nanTensor([x.Tq, c.Hq, x.Dv], c.dtype),
            lse: gpu.nanTensor([x.Tq, c.Hq]),
          },
        };
      });
      // a first run makes the bind groups; later ones create neither buffers nor bind groups
      const warm = dev.createCommandEncoder();
      for (const r of runs) plan.run(warm, r.t);
      await gpu.dev.submitAndWait([warm.finish()]);
      for (const r of runs) {
        await check(c, { o: await gpu.read(r.t.o), lse: await gpu.read(r.t.lse) }, r.ref);
        // NaN again (f16 NaN in both halves of each word), so that an element not written fails
        dev.queue.writeBuffer(r.t.o.buffer, 0, new Uint32Array(r.t.o.buffer.size / 4).fill(0x7e007e00));
        dev.queue.writeBuffer(r.t.lse.buffer, 0, new Float32Array(r.t.lse.buffer.size / 4).fill(NaN));
      }
      undo.push(patchMethod(dev, 'createBuffer', (f) => (d) => (buffers++, f.call(dev, d))));
      undo.push(patchMethod(dev, 'createBindGroup', (f) => (d) => (groups++, f.call(dev, d))));
      const enc = dev.createCommandEncoder();
      for (const r of runs) plan.run(enc, r.t);
      for (const u of undo.splice(0)) u();
      await gpu.dev.submitAndWait([enc.finish()]);
      expect(buffers).toBe(0);
      expect(groups).toBe(0);
      for (const r of runs) await check(c, { o: await gpu.read(r.t.o), lse: await gpu.read(r.t.lse) }, r.ref);
    } finally {
      for (const u of undo) u();
      plan.dispose();
    }
  });
});

interface DecodeCase {
  kvLens: number[];
  Hq: number;
  Hkv: number;
  D: number;
  Dv?: number;
  dtype: FloatDType;
  outDtype?: FloatDType;
  kvChunk?: number;
  window?: number;
  sinks?: number;
  sinkLogit?: boolean;
  noLse?: boolean;
  target?: 'cpu' | 'gpu';
  subgroups?: boolean;
  /** Only in the extended test tier (`npm run test:extended`; CI runs both tiers). */
  extended?: true;
}

// core tier: split-K with and without a window, sinks and a sink logit (D 64, f32); the padded bf16
// case below (cpu, f32 out) and the loop-cap cases run there too
const DECODE: DecodeCase[] = [
  { kvLens: [1, 63, 300], Hq: 4, Hkv: 2, D: 64, dtype: 'f32' },
  { kvLens: [1000, 0, 65], Hq: 4, Hkv: 1, D: 128, dtype: 'f16', outDtype: 'f32', kvChunk: 64, extended: true },
  { kvLens: [300, 50], Hq: 4, Hkv: 2, D: 64, dtype: 'f32', kvChunk: 64, window: 100, sinks: 4, sinkLogit: true },
  { kvLens: [64], Hq: 2, Hkv: 2, D: 80, dtype: 'f32', noLse: true, subgroups: false, extended: true },
  { kvLens: [130, 1, 77], Hq: 6, Hkv: 1, D: 32, Dv: 24, dtype: 'f32', kvChunk: 64, sinkLogit: true, extended: true },
  { kvLens: [1000, 7], Hq: 2, Hkv: 1, D: 64, dtype: 'f16', kvChunk: 128, noLse: true, extended: true },
  { kvLens: [200, 65], Hq: 4, Hkv: 2, D: 80, Dv: 48, dtype: 'f32', kvChunk: 48, target: 'gpu', extended: true },
  // one 17,000-key split would loop past llvmpipe's cap: there the chunk is lowered (2 splits)
  { kvLens: [17000, 3], Hq: 2, Hkv: 1, D: 128, dtype: 'f32', kvChunk: 17000, extended: true },
];

function decodeName(c: DecodeCase): string {
  return `N${c.kvLens.length}-kv${c.kvLens.join('_')}-Hq${c.Hq}-Hkv${c.Hkv}-D${c.D}-${c.dtype}${c.outDtype ? `-out${c.outDtype}` : ''}${c.kvChunk ? `-chunk${c.kvChunk}` : ''}${c.window ? `-W${c.window}` : ''}${c.sinks ? `-S${c.sinks}` : ''}${c.sinkLogit ? '-sinklogit' : ''}${c.noLse ? '-nolse' : ''}${c.target ? `-${c.target}` : ''}${c.subgroups === false ? '-nosg' : ''}`;
}

/** The attention core's keys per part on `g`'s device for a decode case (its loop cap; Infinity without one). */
function coreBound(g: GpuFixture, c: DecodeCase): number {
  const variant = c.target ?? (g.dev.adapterClass === 'cpu' ? 'cpu' : 'gpu');
  const d4 = (d: number) => Math.ceil(d / 4) * 4;
  return attentionKeysPerPart(g.dev.loopLimit, variant, d4(c.D), d4(c.Dv ?? c.D), c.kvLens.length, 1);
}

/** Plans, runs and checks one decode case on fixture `g`; returns the plan's split choice. */
async function runDecode(g: GpuFixture, c: DecodeCase, seed: number): Promise<{ splits: number; kvChunk: number }> {
  const N = c.kvLens.length;
  const asCase: Case = {
    tq: c.kvLens.map(() => 1),
    tk: c.kvLens,
    Hq: c.Hq,
    Hkv: c.Hkv,
    D: c.D,
    Dv: c.Dv,
    dtype: c.dtype,
    outDtype: c.outDtype,
    window: c.window,
    sinks: c.sinks,
    sinkLogit: c.sinkLogit,
  };
  const x = inputs(asCase, seed);
  const ref = referenceBatch(asCase, x, asCase.tq, c.kvLens);
  const Dv = x.Dv;
  const plan = await planDecode(g.dev, {
    kvLens: c.kvLens,
    Hq: c.Hq,
    Hkv: c.Hkv,
    D: c.D,
    Dv,
    dtype: c.dtype,
    outDtype: c.outDtype,
    kvChunk: c.kvChunk,
    window: c.window,
    sinks: c.sinks,
    sinkLogit: c.sinkLogit,
    target: c.target,
    subgroups: c.subgroups,
  });
  const o = g.nanTensor([N, c.Hq, Dv], c.outDtype ?? c.dtype);
  const lse = c.noLse ? undefined : g.nanTensor([N, c.Hq]);
  await g.dev.scoped('test', async () => {
    const enc = g.dev.device.createCommandEncoder();
    plan.run(enc, {
      q: g.tensor(x.q, [N, c.Hq, c.D], c.dtype),
      k: g.tensor(x.k, [x.Tk, c.Hkv, c.D], c.dtype),
      v: g.tensor(x.v, [x.Tk, c.Hkv, Dv], c.dtype),
      o,
      lse,
      sinkLogits: x.sink ? g.tensor(x.sink, [c.Hq]) : undefined,
    });
    await g.dev.submitAndWait([enc.finish()]);
  });
  const split = { splits: plan.splits, kvChunk: plan.kvChunk };
  expect(plan.target).toBe(c.target ?? g.dev.adapterClass);
  plan.dispose();
  await check(asCase, { o: await g.read(o), lse: lse ? await g.read(lse) : undefined }, ref);
  return split;
}

describe('dense decode (split-K + merge)', () => {
  DECODE.forEach((c, i) => {
    it(decodeName(c), tier(c.extended), async () => {
      const split = await runDecode(gpu, c, 500 + i);
      if (c.kvChunk) {
        const chunk = Math.min(c.kvChunk, coreBound(gpu, c));
        expect(split.kvChunk).toBe(chunk);
        expect(split.splits).toBe(Math.ceil(Math.max(...c.kvLens) / chunk));
      }
    });
  });

  it('decodeAttention() convenience call', async () => {
    const asCase: Case = { tq: [1, 1], tk: [30, 500], Hq: 2, Hkv: 1, D: 32, dtype: 'f32' };
    const x = inputs(asCase, 9);
    const ref = referenceBatch(asCase, x, [1, 1], [30, 500]);
    const o = gpu.nanTensor([2, 2, 32]);
    const lse = gpu.nanTensor([2, 2]);
    await decodeAttention(
      gpu.dev,
      { q: gpu.tensor(x.q, [2, 2, 32]), k: gpu.tensor(x.k, [530, 1, 32]), v: gpu.tensor(x.v, [530, 1, 32]), o, lse },
      { kvLens: [30, 500], kvChunk: 100 },
    );
    await check(asCase, { o: await gpu.read(o), lse: await gpu.read(lse) }, ref);
  });
});

describe('dense decode: padded copies', () => {
  // The attention core reads K/V as 16-byte words of head dims that are multiples of 4; other
  // shapes run it on padded copies (kernels/dense/pad.ts). Checked against float64.
  const PADDED: DecodeCase[] = [
    {
      kvLens: [70, 0, 9],
      Hq: 4,
      Hkv: 2,
      D: 6,
      Dv: 10,
      dtype: 'f32',
      kvChunk: 32,
      window: 20,
      sinks: 2,
      sinkLogit: true,
      extended: true,
    },
    { kvLens: [3, 0, 2], Hq: 2, Hkv: 1, D: 12, dtype: 'f16', kvChunk: 2, extended: true },
    { kvLens: [40, 1], Hq: 2, Hkv: 1, D: 5, dtype: 'f32', target: 'gpu', extended: true },
    // 16-bit o of an odd head dim: rows end mid-word
    { kvLens: [9, 4, 1], Hq: 1, Hkv: 1, D: 8, Dv: 3, dtype: 'f16', extended: true },
    { kvLens: [33, 100], Hq: 3, Hkv: 1, D: 7, Dv: 6, dtype: 'bf16', outDtype: 'f32', kvChunk: 40, noLse: true },
  ];
  const paddedOf = async (c: DecodeCase) => {
    const plan = await planDecode(gpu.dev, {
      kvLens: c.kvLens,
      Hq: c.Hq,
      Hkv: c.Hkv,
      D: c.D,
      Dv: c.Dv,
      dtype: c.dtype,
      kvChunk: c.kvChunk,
      window: c.window,
      sinks: c.sinks,
      sinkLogit: c.sinkLogit,
      target: c.target,
    });
    const k = plan.padded;
    plan.dispose();
    return k;
  };
  PADDED.forEach((c, i) => {
    it(`padded: ${decodeName(c)}`, tier(c.extended), async () => {
      expect(await paddedOf(c)).toBe(true);
      await runDecode(gpu, c, 700 + i);
    });
  });
  it('no copies: head dims multiples of 4 and K/V in whole 16-byte words', { tags: ['extended'] }, async () => {
    expect(await paddedOf({ kvLens: [3, 0, 2], Hq: 2, Hkv: 1, D: 16, dtype: 'f16' })).toBe(false);
    expect(await paddedOf(DECODE[0]!)).toBe(false);
  });
});

describe('dense bad input', () => {
  const base = { Tq: 8, Hq: 4, Hkv: 2, D: 16 } as const;
  const rejects = (p: Promise<unknown>, code: string, argument: string | RegExp) =>
    expect(p).rejects.toMatchObject({
      name: 'TesseraError',
      code,
      argument: typeof argument === 'string' ? argument : expect.stringMatching(argument),
    });

  it('rejects bad options in plan', async () => {
    await rejects(planAttention(gpu.dev, { ...base, Hq: 3 }), 'E_ARG', 'Hq');
    await rejects(planAttention(gpu.dev, { ...base, Hkv: 0 }), 'E_ARG', 'Hkv');
    await rejects(planAttention(gpu.dev, { ...base, D: 0 }), 'E_UNSUPPORTED', 'D');
    await rejects(planAttention(gpu.dev, { ...base, D: 257 }), 'E_UNSUPPORTED', 'D');
    await rejects(planAttention(gpu.dev, { ...base, Dv: 300 }), 'E_UNSUPPORTED', 'Dv');
    await rejects(planAttention(gpu.dev, { ...base, Tq: 0 }), 'E_ARG', 'Tq');
    await rejects(planAttention(gpu.dev, { ...base, Tk: 0 }), 'E_ARG', 'Tk');
    await rejects(planAttention(gpu.dev, { ...base, window: -1 }), 'E_ARG', 'window');
    await rejects(planAttention(gpu.dev, { ...base, window: 4, causal: false }), 'E_ARG', 'window');
    await rejects(planAttention(gpu.dev, { ...base, sinks: 1.5 }), 'E_ARG', 'sinks');
    await rejects(planAttention(gpu.dev, { ...base, scale: NaN }), 'E_ARG', 'scale');
    await rejects(planAttention(gpu.dev, { ...base, dtype: 'f64' as never }), 'E_DTYPE', 'dtype');
    await rejects(planAttention(gpu.dev, { Hq: 2, Hkv: 1, D: 16, cuSeqlensQ: [0, 0] }), 'E_ARG', 'cuSeqlensQ');
    await rejects(planAttention(gpu.dev, { Hq: 2, Hkv: 1, D: 16, cuSeqlensQ: [0, 5, 3] }), 'E_ARG', 'cuSeqlensQ[2]');
    await rejects(
      planAttention(gpu.dev, { Hq: 2, Hkv: 1, D: 16, cuSeqlensQ: [0, 5, 8], cuSeqlensK: [0, 5] }),
      'E_SHAPE',
      'cuSeqlensK',
    );
    // a binding past the device's limit is refused before anything compiles
    await rejects(planAttention(gpu.dev, { Tq: 1 << 22, Hq: 32, Hkv: 8, D: 256 }), 'E_LIMIT', 'q');
    await rejects(planDecode(gpu.dev, { Hq: 2, Hkv: 1, D: 16, kvLens: [4, -1] }), 'E_ARG', 'kvLens[1]');
    await rejects(planDecode(gpu.dev, { Hq: 2, Hkv: 1, D: 16, kvLens: [] }), 'E_ARG', 'kvLens');
    await rejects(planDecode(gpu.dev, { Hq: 2, Hkv: 1, D: 16, kvLens: [0, 0] }), 'E_ARG', 'kvLens');
  });

  it('rejects bad tensors in run before encoding', async () => {
    const plan = await planAttention(gpu.dev, { ...base, Tk: 10 });
    const good = {
      q: gpu.nanTensor([8, 4, 16]),
      k: gpu.nanTensor([10, 2, 16]),
      v: gpu.nanTensor([10, 2, 16]),
      o: gpu.nanTensor([8, 4, 16]),
      lse: gpu.nanTensor([8, 4]),
    };
    const enc = gpu.dev.device.createCommandEncoder();
    const throwsArg = (t: object, code: string, argument: string) => {
      try {
        plan.run(enc, { ...good, ...t } as typeof good);
        expect.unreachable('run accepted bad input');
      } catch (e) {
        expect(e).toBeInstanceOf(TesseraError);
        expect(e).toMatchObject({ code, argument });
      }
    };
    throwsArg({ q: gpu.nanTensor([8, 4, 32]) }, 'E_SHAPE', 'q.shape[2]');
    throwsArg({ k: gpu.nanTensor([9, 2, 16]) }, 'E_SHAPE', 'k.shape[0]');
    throwsArg({ v: gpu.nanTensor([10, 2, 16], 'f16') }, 'E_DTYPE', 'v.dtype');
    throwsArg({ lse: gpu.nanTensor([8, 2]) }, 'E_SHAPE', 'lse.shape[1]');
    throwsArg({ o: { ...gpu.nanTensor([8, 4]), shape: [8, 4, 16] } }, 'E_BUFFER', 'o.buffer');
    throwsArg({ sinkLogits: gpu.nanTensor([4]) }, 'E_ARG', 'sinkLogits');
    plan.dispose();
    expect(() => plan.run(enc, good)).toThrow(/disposed/);
    enc.finish();
  });
});

describe('dense with loopLimit 4096 (the split path on any adapter)', () => {
  // prefill plans take the cap as an option; decode goes through the attention core, which reads
  // the device's cap: a view of the shared device with the lower cap (useGpu)
  const small = useGpu({ loopLimit: 4096 });
  // `groups(align)`: the query groups expected where the device's storage offset alignment is
  // `align` (every group's q, o and lse rows start on it)
  const SPLIT: (Case & { groups?: (align: number) => number })[] = [
    { tq: [1000], Hq: 4, Hkv: 2, D: 128, dtype: 'f32', extended: true },
    { tq: [1500], Hq: 2, Hkv: 2, D: 128, dtype: 'f32', window: 900, sinks: 5, extended: true },
    {
      tq: [300, 1, 700],
      tk: [300, 2000, 700],
      Hq: 6,
      Hkv: 2,
      D: 96,
      Dv: 64,
      dtype: 'f32',
      sinkLogit: true,
      extended: true,
    },
    { tq: [40], tk: [1700], Hq: 1, Hkv: 1, D: 64, dtype: 'f32', causal: false, noLse: true },
    {
      tq: [200],
      tk: [700],
      Hq: 4,
      Hkv: 2,
      D: 64,
      dtype: 'f32',
      window: 300,
      sinks: 2,
      sinkLogit: true,
      target: 'gpu',
      extended: true,
    },
    // several query groups, sequences crossing group boundaries, the last one with more queries
    // than keys (its first 80 rows see nothing: o = 0, lse = -inf); lse rows of 2 heads are 8
    // bytes: groups of align / 8 tokens
    {
      tq: [100, 200, 150, 140],
      tk: [900, 1000, 150, 60],
      Hq: 2,
      Hkv: 1,
      D: 128,
      dtype: 'f16',
      partialBytes: 1,
      groups: (align) => Math.ceil(590 / (align / 8)),
      extended: true,
    },
    // query groups over padded copies (D 6 -> 8, Dv 10 -> 12, f16): o rows of 48 bytes, lse 8
    {
      tq: [300, 200],
      tk: [3000, 2500],
      Hq: 2,
      Hkv: 1,
      D: 6,
      Dv: 10,
      dtype: 'f16',
      window: 2000,
      sinks: 3,
      partialBytes: 1,
      groups: (align) => Math.ceil(500 / Math.max(align / 16, align / 8)),
    },
    // a budget that holds 100 tokens' partials of 3 parts: groups of whole alignment units within it
    {
      tq: [700],
      tk: [900],
      Hq: 1,
      Hkv: 1,
      D: 64,
      dtype: 'f32',
      sinkLogit: true,
      partialBytes: 3 * 100 * 65 * 4,
      groups: (align) => Math.ceil(700 / (Math.floor(100 / (align / 4)) * (align / 4))),
      extended: true,
    },
  ];
  SPLIT.forEach((c, i) => {
    it(`${caseName(c)} in KV splits`, tier(c.extended), async () => {
      const got = await runPrefill(gpu, c, 900 + i, 4096);
      expect(got.queryGroups).toBe(c.groups ? c.groups(gpu.dev.limits.minStorageBufferOffsetAlignment) : 1);
      // the core's parts: none longer than its loop bound (packs of one row bound the others),
      // as few as that allows
      const d4 = (d: number) => Math.ceil(d / 4) * 4;
      const variant = c.target ?? (gpu.dev.adapterClass === 'cpu' ? 'cpu' : 'gpu');
      const maxTk = Math.max(...(c.tk ?? c.tq));
      const bound = attentionKeysPerPart(4096, variant, d4(c.D), d4(c.Dv ?? c.D), c.tq.length, 1);
      expect(got.kvChunk).toBeLessThanOrEqual(bound);
      expect(got.splits).toBe(Math.ceil(maxTk / got.kvChunk));
      expect(got.splits).toBeGreaterThan(1);
    });
  });

  it('decode: a kvChunk past the cap is lowered to it', { tags: ['extended'] }, async () => {
    const c: DecodeCase = {
      kvLens: [3000, 5, 1200],
      Hq: 4,
      Hkv: 2,
      D: 128,
      dtype: 'f32',
      kvChunk: 2000,
      window: 2500,
      sinks: 3,
    };
    const cap = coreBound(small, c);
    expect(cap).toBeLessThan(2000);
    const got = await runDecode(small, c, 950);
    expect(got.kvChunk).toBe(cap);
    expect(got.splits).toBe(Math.ceil(3000 / cap));
  });

  it('decode (gpu variant): a kvChunk past the cap is lowered to it', async () => {
    const c: DecodeCase = {
      kvLens: [2500, 33],
      Hq: 4,
      Hkv: 1,
      D: 64,
      dtype: 'f32',
      kvChunk: 2000,
      sinkLogit: true,
      target: 'gpu',
    };
    const cap = coreBound(small, c);
    expect(cap).toBeLessThan(2000);
    const got = await runDecode(small, c, 951);
    expect(got.kvChunk).toBe(cap);
    expect(got.splits).toBe(Math.ceil(2500 / cap));
  });
});
