/**
 * kernels/append: RoPE (both styles, partial rotary, in and out of place) against float64; append
 * through a CSR page table over a ragged batch that crosses page boundaries, bit-exact against the
 * KV cache's host page encoding (src/kv/codec.ts) for every input x page dtype; fused RoPE on K;
 * Quest summaries equal to the KV cache's own; no GPU buffer or bind group per step; bad inputs.
 */
import { describe, expect, it } from 'vitest';
import { useGpu } from './helpers/gpu.js';
import { TesseraError } from '../src/errors.js';
import { Rng, compare, describeComparison } from '../src/testing.js';
import { roundTo, type FloatDType } from '../src/tensor.js';
import { pageLayout, readHeadRows, writeRows, f16Down, f16Up, type KvDType } from '../src/kv/codec.js';
import { createKvCache } from '../src/kv/cache.js';
import { appendReference, f16Bound, pageSummaryReference, planAppend, planRope, ropeReference, type AppendSchedule, type RopeStyle } from '../kernels/append/index.js';

const gpu = useGpu();
const STORAGE = 0x80 | 0x4 | 0x8;

/** Sequences with ragged lengths, each with its own (shuffled) pool pages. */
function table(lens: number[], newTokens: number[], P: number, maxPages: number, rng: Rng) {
  const ids = Array.from({ length: maxPages }, (_, i) => i);
  for (let i = ids.length - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [ids[i], ids[j]] = [ids[j]!, ids[i]!];
  }
  const kvIndptr = [0];
  const kvIndices: number[] = [];
  const batchIndices: number[] = [];
  const positions: number[] = [];
  lens.forEach((len, b) => {
    const total = len + newTokens[b]!;
    const pages = Math.ceil(total / P);
    for (let i = 0; i < pages; i++) kvIndices.push(ids.pop()!);
    kvIndptr.push(kvIndices.length);
    for (let t = len; t < total; t++) {
      batchIndices.push(b);
      positions.push(t);
    }
  });
  return { kvIndptr, kvIndices, batchIndices, positions };
}

async function readPool(buf: GPUBuffer): Promise<Uint8Array> {
  return new Uint8Array(await gpu.dev.readback(buf));
}

describe('rope', () => {
  for (const style of ['half', 'interleaved'] as RopeStyle[]) {
    for (const rotaryDim of [64, 24]) {
      it(`${style} rotaryDim ${rotaryDim}/64, theta 5e5, scale 2: out of place f32 and in place f16 vs float64`, async () => {
        const H = 3;
        const D = 64;
        const rows = 5;
        const rng = new Rng(11 + rotaryDim);
        const positions = [0, 1, 17, 300, 4095];
        const x = rng.normals(rows * H * D);
        const opts = { style, theta: 5e5, scale: 2, rotaryDim, maxPosition: 4096 };
        const ref = ropeReference(x, positions, H, D, opts);
        const plan = await planRope(gpu.dev, { H, D, maxRows: 8, ...opts });
        const xt = gpu.tensor(x, [rows, H, D]);
        const out = gpu.nanTensor([rows, H, D]);
        plan.schedule({ positions });
        const enc = gpu.dev.device.createCommandEncoder();
        plan.run(enc, { x: xt, out });
        gpu.dev.device.queue.submit([enc.finish()]);
        const c = compare(await gpu.read(out), ref);
        expect(c.badCount).toBe(0);
        expect(c.relRms, describeComparison(c)).toBeLessThan(1e-6);
        // Past rotaryDim nothing changes.
        const got = await gpu.read(out);
        for (let i = 0; i < rows * H; i++) for (let d = rotaryDim; d < D; d++) expect(got[i * D + d]).toBe(Math.fround(x[i * D + d]!));
        plan.dispose();
        // In place, f16 storage.
        const p16 = await planRope(gpu.dev, { H, D, maxRows: 8, dtype: 'f16', ...opts });
        const x16 = gpu.tensor(x, [rows, H, D], 'f16');
        p16.schedule({ positions });
        const e2 = gpu.dev.device.createCommandEncoder();
        p16.run(e2, { x: x16 });
        gpu.dev.device.queue.submit([e2.finish()]);
        const ref16 = ropeReference(roundTo(x, 'f16'), positions, H, D, opts);
        const c16 = compare(await gpu.read(x16), ref16);
        expect(c16.relRms, describeComparison(c16)).toBeLessThan(1e-3);
        p16.dispose();
      });
    }
  }
});

describe('append', () => {
  it('the reference summary rounding equals the KV cache codec (f16Down / f16Up)', () => {
    const rng = new Rng(2);
    const xs = [0, -0, 1e-6, -1e-6, 65504, 65519, 65520, 70000, -70000, 1e-9, ...Array.from(rng.normals(2000, 50))];
    for (const x of xs.map(Math.fround)) {
      expect(f16Bound(x, false)).toBe(f16Down(x));
      expect(f16Bound(x, true)).toBe(f16Up(x));
    }
  });

  const cases: [FloatDType, KvDType][] = [
    ['f32', 'f32'],
    ['f32', 'f16'],
    ['f16', 'f16'],
    ['bf16', 'bf16'],
    ['f32', 'bf16'],
    ['f16', 'f32'],
  ];
  for (const [inDt, pageDt] of cases) {
    it(`${inDt} rows -> ${pageDt} pages: ragged prefill then decode, bit-exact vs the host codec, summaries vs host`, async () => {
      const Hkv = 2;
      const D = 12;
      const Dv = 8;
      const P = 4;
      const maxPages = 24;
      const rng = new Rng(5);
      const L = pageLayout(P, Hkv, D, Dv, pageDt);
      const plan = await planAppend(gpu.dev, { Hkv, D, Dv, pageSize: P, pageDtype: pageDt, inputDtype: inDt, maxPages, maxBatch: 3, maxRows: 16 });
      // A pool full of random bytes: rows not appended must stay as they were.
      const initial = new Uint8Array(maxPages * L.pageBytes);
      for (let i = 0; i < initial.length; i++) initial[i] = rng.int(0, 255);
      const host = initial.slice();
      const codecPool = initial.slice();
      const pages = gpu.dev.upload(initial, { usage: STORAGE });
      const sumBytes = maxPages * Hkv * 2 * D * 2;
      const summaries = gpu.dev.createBuffer({ size: sumBytes, usage: STORAGE });
      const lens = [0, 3, 6];
      const steps = [[3, 7, 2], [1, 1, 1]]; // prefill chunk (crosses pages), then decode
      const t = table(lens, steps[0]!.map((n, b) => n + steps[1]![b]!), P, maxPages, rng);
      try {
        for (const [si, step] of steps.entries()) {
          const batchIndices: number[] = [];
          const positions: number[] = [];
          step.forEach((n, b) => {
            for (let i = 0; i < n; i++) {
              batchIndices.push(b);
              positions.push(lens[b]! + i);
            }
            lens[b]! += n;
          });
          const s: AppendSchedule = { kvIndptr: t.kvIndptr, kvIndices: t.kvIndices, batchIndices, positions };
          const n = positions.length;
          const kraw = rng.normals(n * Hkv * D, 3);
          if (si === 0) kraw[5] = 1e-6; // an f16 subnormal: the GPU must not flush it
          const kv = roundTo(kraw, inDt); // the values the engine's buffer holds
          const vv = roundTo(rng.normals(n * Hkv * Dv, 3), inDt);
          const k = gpu.tensor(kv, [n, Hkv, D], inDt);
          const v = gpu.tensor(vv, [n, Hkv, Dv], inDt);
          plan.schedule(s);
          const enc = gpu.dev.device.createCommandEncoder();
          plan.run(enc, { k, v, pages, summaries });
          gpu.dev.device.queue.submit([enc.finish()]);
          appendReference(host, L, kv, vv, s);
          // The KV cache's own codec writes the same bytes.
          for (let i = 0; i < n; i++) {
            const page = s.kvIndices[s.kvIndptr[s.batchIndices[i]!]! + Math.floor(s.positions[i]! / P)]!;
            const bytes = codecPool.subarray(page * L.pageBytes, (page + 1) * L.pageBytes);
            writeRows(bytes, L, 0, kv, i, 1, s.positions[i]! % P);
            writeRows(bytes, L, 1, vv, i, 1, s.positions[i]! % P);
          }
          expect(codecPool).toEqual(host);
          const got = await readPool(pages);
          let diff = -1;
          for (let i = 0; i < got.length && diff < 0; i++) if (got[i] !== host[i]) diff = i;
          expect(diff, `first differing byte (page ${Math.floor(diff / L.pageBytes)})`).toBe(-1);
          // Summaries of every page a step touched equal the KV cache's host computation.
          const sums = new Uint16Array(await gpu.dev.readback(summaries));
          for (let b = 0; b < 3; b++) {
            const np = Math.ceil(lens[b]! / P);
            const last = t.kvIndices[t.kvIndptr[b]! + np - 1]!;
            const len = lens[b]! - (np - 1) * P;
            const want = pageSummaryReference(host.subarray(last * L.pageBytes, (last + 1) * L.pageBytes), L, len);
            expect(Array.from(sums.subarray(last * Hkv * 2 * D, (last + 1) * Hkv * 2 * D))).toEqual(Array.from(want));
          }
        }
      } finally {
        plan.dispose();
        gpu.dev.destroyBuffer(pages);
        gpu.dev.destroyBuffer(summaries);
      }
    });
  }

  for (const style of ['half', 'interleaved'] as RopeStyle[]) {
    it(`fused RoPE on K (${style}, rotaryDim 8 of 16), f32/bf16 rows into f32/f16 pages, vs float64; V bit-exact`, async () => {
      const Hkv = 2;
      const D = 16;
      const P = 8;
      const maxPages = 8;
      const rng = new Rng(9);
      const rope = { style, theta: 1e4, scale: 1.5, rotaryDim: 8, maxPosition: 64 };
      const t = table([5, 0], [6, 9], P, maxPages, rng);
      const n = t.positions.length;
      const kv = rng.normals(n * Hkv * D);
      const vv = rng.normals(n * Hkv * D);
      for (const [inDt, pageDt] of [['f32', 'f32'], ['f32', 'f16'], ['bf16', 'f32']] as [FloatDType, KvDType][]) {
        const L = pageLayout(P, Hkv, D, D, pageDt);
        const plan = await planAppend(gpu.dev, { Hkv, D, pageSize: P, pageDtype: pageDt, inputDtype: inDt, maxPages, maxBatch: 2, maxRows: n, rope, summaries: false });
        const pages = gpu.dev.upload(new Uint8Array(maxPages * L.pageBytes), { usage: STORAGE });
        plan.schedule(t);
        const enc = gpu.dev.device.createCommandEncoder();
        plan.run(enc, { k: gpu.tensor(kv, [n, Hkv, D], inDt), v: gpu.tensor(vv, [n, Hkv, D], inDt), pages });
        gpu.dev.device.queue.submit([enc.finish()]);
        const got = await readPool(pages);
        const kIn = roundTo(kv, inDt);
        const kRot = ropeReference(kIn, t.positions, Hkv, D, rope);
        const host = appendReference(new Uint8Array(maxPages * L.pageBytes), L, kRot, roundTo(vv, inDt), t);
        // K: the rotated rows vs float64 (read back per row through the codec).
        const gk: number[] = [];
        const rk: number[] = [];
        for (let i = 0; i < n; i++) {
          const b = t.batchIndices[i]!;
          const p = t.positions[i]!;
          const page = t.kvIndices[t.kvIndptr[b]! + Math.floor(p / P)]!;
          for (let h = 0; h < Hkv; h++) {
            const row = readHeadRows(got.subarray(page * L.pageBytes, (page + 1) * L.pageBytes), L, 0, h, P);
            for (let d = 0; d < D; d++) {
              gk.push(row[(p % P) * D + d]!);
              rk.push(kRot[(i * Hkv + h) * D + d]!);
            }
          }
        }
        const c = compare(gk, rk);
        expect(c.badCount).toBe(0);
        expect(c.relRms, describeComparison(c)).toBeLessThan(pageDt === 'f32' ? 1e-6 : 1e-3);
        // V: untouched by RoPE, bit-exact.
        for (let page = 0; page < maxPages; page++) {
          const o = page * L.pageBytes + L.vOffset;
          expect(Array.from(got.subarray(o, o + Hkv * L.vHeadBytes))).toEqual(Array.from(host.subarray(o, o + Hkv * L.vHeadBytes)));
        }
        plan.dispose();
        gpu.dev.destroyBuffer(pages);
      }
    });
  }

  it('summaries land where the KV cache keeps them: equal to KvCache.summariesHost() for the same keys', async () => {
    const Hkv = 2;
    const D = 16;
    const P = 16;
    const T = 40;
    const rng = new Rng(21);
    const kv = rng.normals(T * Hkv * D);
    const vv = rng.normals(T * Hkv * D);
    const cache = createKvCache(gpu.dev, { Hkv, D, pageSize: P, dtype: 'f16', gpuBudgetBytes: 1 << 20, meanSummaries: false });
    const seq = cache.addSequence();
    cache.append(seq, kv, vv);
    const want = cache.summariesHost().minmax;
    cache.dispose();
    const L = pageLayout(P, Hkv, D, D, 'f16');
    const plan = await planAppend(gpu.dev, { Hkv, D, pageSize: P, pageDtype: 'f16', maxPages: 3, maxBatch: 1, maxRows: T });
    const pages = gpu.dev.createBuffer({ size: 3 * L.pageBytes, usage: STORAGE });
    const summaries = gpu.dev.createBuffer({ size: 3 * Hkv * 2 * D * 2, usage: STORAGE });
    plan.schedule({ kvIndptr: [0, 3], kvIndices: [0, 1, 2], batchIndices: new Array(T).fill(0), positions: Array.from({ length: T }, (_, i) => i) });
    const enc = gpu.dev.device.createCommandEncoder();
    plan.run(enc, { k: gpu.tensor(kv, [T, Hkv, D]), v: gpu.tensor(vv, [T, Hkv, D]), pages, summaries });
    gpu.dev.device.queue.submit([enc.finish()]);
    const got = new Uint16Array(await gpu.dev.readback(summaries));
    expect(Array.from(got)).toEqual(Array.from(want));
    plan.dispose();
    gpu.dev.destroyBuffer(pages);
    gpu.dev.destroyBuffer(summaries);
  });

  it('schedule + run per step create no GPU buffer and no bind group (after the first step)', async () => {
    const Hkv = 2;
    const D = 8;
    const P = 4;
    const L = pageLayout(P, Hkv, D, D, 'f32');
    const plan = await planAppend(gpu.dev, { Hkv, D, pageSize: P, pageDtype: 'f32', maxPages: 16, maxBatch: 2, rope: { maxPosition: 64 } });
    const rope = await planRope(gpu.dev, { H: 4, D, maxRows: 2, maxPosition: 64 });
    const pages = gpu.dev.createBuffer({ size: 16 * L.pageBytes, usage: STORAGE });
    const summaries = gpu.dev.createBuffer({ size: 16 * Hkv * 2 * D * 2, usage: STORAGE });
    const k = gpu.tensor(new Float64Array(2 * Hkv * D).fill(1), [2, Hkv, D]);
    const v = gpu.tensor(new Float64Array(2 * Hkv * D).fill(2), [2, Hkv, D]);
    const q = gpu.tensor(new Float64Array(2 * 4 * D).fill(3), [2, 4, D]);
    const device = gpu.dev.device;
    const counts = { buffers: 0, groups: 0 };
    const cb = device.createBuffer;
    const cg = device.createBindGroup;
    const step = (s: number) => {
      plan.schedule({ kvIndptr: [0, 8, 16], kvIndices: Array.from({ length: 16 }, (_, i) => i), batchIndices: [0, 1], positions: [s, s] });
      rope.schedule({ positions: [s, s] });
      const enc = device.createCommandEncoder();
      if (s % 2) {
        // Into the caller's open compute pass (no pass of their own).
        const pass = enc.beginComputePass();
        rope.run(pass, { x: q });
        plan.run(pass, { k, v, pages, summaries });
        pass.end();
      } else {
        rope.run(enc, { x: q });
        plan.run(enc, { k, v, pages, summaries });
      }
      device.queue.submit([enc.finish()]);
    };
    step(0);
    Object.defineProperty(device, 'createBuffer', { value: (d: GPUBufferDescriptor) => (counts.buffers++, cb.call(device, d)), configurable: true, writable: true });
    Object.defineProperty(device, 'createBindGroup', { value: (d: GPUBindGroupDescriptor) => (counts.groups++, cg.call(device, d)), configurable: true, writable: true });
    try {
      for (let s = 1; s < 20; s++) step(s);
    } finally {
      Object.defineProperty(device, 'createBuffer', { value: cb, configurable: true, writable: true });
      Object.defineProperty(device, 'createBindGroup', { value: cg, configurable: true, writable: true });
    }
    await device.queue.onSubmittedWorkDone();
    expect(counts).toEqual({ buffers: 0, groups: 0 });
    // The 20 rows really went in (from both encodings): page 4 of sequence 1 (pool page 12)
    // holds positions 16..19, and its summary bounds the rotated keys.
    const got = new Float32Array(await gpu.dev.readback(pages, L.pageBytes, 12 * L.pageBytes));
    expect(Array.from(got.subarray(L.vOffset / 4, L.vOffset / 4 + 4 * Hkv * D))).toEqual(new Array(4 * Hkv * D).fill(2));
    const sums = new Uint16Array(await gpu.dev.readback(summaries));
    const want = pageSummaryReference(new Uint8Array(got.buffer), L, 4);
    expect(Array.from(sums.subarray(12 * Hkv * 2 * D, 13 * Hkv * 2 * D))).toEqual(Array.from(want));
    plan.dispose();
    rope.dispose();
    gpu.dev.destroyBuffer(pages);
    gpu.dev.destroyBuffer(summaries);
  });

  it('bad inputs are typed and leave the last schedule in place', async () => {
    const code = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        expect(e).toBeInstanceOf(TesseraError);
        return (e as TesseraError).code;
      }
      return 'none';
    };
    const acode = async (f: () => Promise<unknown>) => {
      try {
        await f();
      } catch (e) {
        expect(e).toBeInstanceOf(TesseraError);
        return `${(e as TesseraError).code} ${(e as TesseraError).argument}`;
      }
      return 'none';
    };
    const base = { Hkv: 1, D: 8, pageSize: 4, maxPages: 4, maxBatch: 2 };
    expect(await acode(() => planAppend(gpu.dev, { ...base, pageDtype: 'int8' }))).toBe('E_UNSUPPORTED pageDtype');
    expect(await acode(() => planAppend(gpu.dev, { ...base, D: 6 }))).toBe('E_UNSUPPORTED D');
    expect(await acode(() => planAppend(gpu.dev, { ...base, rope: { maxPosition: 8, rotaryDim: 6 } }))).toBe('E_UNSUPPORTED rope.rotaryDim');
    expect(await acode(() => planAppend(gpu.dev, { ...base, rope: { maxPosition: 8, style: 'spiral' as RopeStyle } }))).toBe('E_ARG rope.style');
    expect(await acode(() => planRope(gpu.dev, { H: 1, D: 8, maxRows: 1, maxPosition: 0 }))).toBe('E_ARG options.maxPosition');
    const plan = await planAppend(gpu.dev, { ...base, pageDtype: 'f32', rope: { maxPosition: 8 } });
    const L = pageLayout(4, 1, 8, 8, 'f32');
    const pages = gpu.dev.createBuffer({ size: 4 * L.pageBytes, usage: STORAGE });
    const summaries = gpu.dev.createBuffer({ size: 4 * 2 * 8 * 2, usage: STORAGE });
    const k = gpu.tensor(new Float64Array(8), [1, 1, 8]);
    const v = gpu.tensor(new Float64Array(8), [1, 1, 8]);
    const enc = gpu.dev.device.createCommandEncoder();
    expect(code(() => plan.run(enc, { k, v, pages, summaries }))).toBe('E_STATE');
    const good = { kvIndptr: [0, 1, 2], kvIndices: [0, 1], batchIndices: [1], positions: [3] };
    plan.schedule(good);
    expect(code(() => plan.schedule({ ...good, positions: [4] }))).toBe('E_ARG'); // past the sequence's pages
    expect(code(() => plan.schedule({ ...good, kvIndices: [0, 9] }))).toBe('E_ARG');
    expect(code(() => plan.schedule({ ...good, kvIndptr: [0, 2, 1] }))).toBe('E_ARG');
    expect(code(() => plan.schedule({ ...good, batchIndices: [2] }))).toBe('E_ARG');
    expect(code(() => plan.schedule({ ...good, batchIndices: [1, 1], positions: [3, 3] }))).toBe('E_ARG'); // repeated position
    expect(code(() => plan.schedule({ kvIndptr: [0, 2], kvIndices: [0, 1], batchIndices: [0], positions: [8] }))).toBe('E_LIMIT'); // past rope.maxPosition
    expect(code(() => plan.schedule({ kvIndptr: [0, 1, 2, 3, 4], kvIndices: [0, 1, 2, 3], batchIndices: [], positions: [] }))).toBe('E_LIMIT');
    expect(plan.rows).toBe(1); // the good schedule is still the one in place
    expect(code(() => plan.run(enc, { k: gpu.tensor(new Float64Array(8), [1, 1, 8], 'f16'), v, pages, summaries }))).toBe('E_DTYPE');
    expect(code(() => plan.run(enc, { k, v, pages, summaries: pages }))).toBe('E_BUFFER'); // the pool itself
    expect(code(() => plan.run(enc, { k, v, pages: summaries, summaries }))).toBe('E_BUFFER'); // pool too small
    plan.run(enc, { k, v, pages, summaries });
    // A run encoded since the last submit still reads the tables: the next step must wait.
    expect(code(() => plan.schedule({ ...good, positions: [2] }))).toBe('E_STATE');
    gpu.dev.device.queue.submit([enc.finish()]);
    plan.schedule({ ...good, positions: [2] });
    expect(plan.rows).toBe(1);
    plan.dispose();
    gpu.dev.destroyBuffer(pages);
    gpu.dev.destroyBuffer(summaries);
  });
});
