/**
 * kernels/append: RoPE (both styles, partial rotary, in and out of place) against float64; append
 * through a CSR page table over a ragged batch that crosses page boundaries, bit-exact against the
 * KV cache's host page encoding (src/kv/codec.ts) for every input x page dtype; fused RoPE on K;
 * Quest summaries equal to the KV cache's own; no GPU buffer or bind group per step; bad inputs.
 */
import { describe, expect, it } from 'vitest';
import { useGpu } from './helpers/gpu.js';
import { TesseraError } from '../src/errors.js';
import { Rng, TOLERANCE, compare, describeComparison, passes } from '../src/testing.js';
import { batchAttentionReference, planBatchAttention, readPagedSequence } from '../kernels/attention/index.js';
import { roundTo, type FloatDType } from '../src/tensor.js';
import {
  pageLayout,
  quantizePageInt8,
  readHeadRows,
  writeRows,
  f16Down,
  f16Up,
  type KvDType,
} from '../src/kv/codec.js';
import { createKvCache } from '../src/kv/cache.js';
import {
  appendReference,
  f16Bound,
  pageSummaryReference,
  planAppend,
  planRope,
  ropeReference,
  type AppendSchedule,
  type RopeStyle,
} from '../kernels/append/index.js';

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
        for (let i = 0; i < rows * H; i++)
          for (let d = rotaryDim; d < D; d++) expect(got[i * D + d]).toBe(Math.fround(x[i * D + d]!));
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
      const plan = await planAppend(gpu.dev, {
        Hkv,
        D,
        Dv,
        pageSize: P,
        pageDtype: pageDt,
        inputDtype: inDt,
        maxPages,
        maxBatch: 3,
        maxRows: 16,
      });
      // A pool full of random bytes: rows not appended must stay as they were.
      const initial = new Uint8Array(maxPages * L.pageBytes);
      for (let i = 0; i < initial.length; i++) initial[i] = rng.int(0, 255);
      const host = initial.slice();
      const codecPool = initial.slice();
      const pages = gpu.dev.upload(initial, { usage: STORAGE });
      const sumBytes = maxPages * Hkv * 2 * D * 2;
      const summaries = gpu.dev.createBuffer({ size: sumBytes, usage: STORAGE });
      const lens = [0, 3, 6];
      const steps = [
        [3, 7, 2],
        [1, 1, 1],
      ]; // prefill chunk (crosses pages), then decode
      const t = table(
        lens,
        steps[0]!.map((n, b) => n + steps[1]![b]!),
        P,
        maxPages,
        rng,
      );
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
      for (const [inDt, pageDt] of [
        ['f32', 'f32'],
        ['f32', 'f16'],
        ['bf16', 'f32'],
      ] as [FloatDType, KvDType][]) {
        const L = pageLayout(P, Hkv, D, D, pageDt);
        const plan = await planAppend(gpu.dev, {
          Hkv,
          D,
          pageSize: P,
          pageDtype: pageDt,
          inputDtype: inDt,
          maxPages,
          maxBatch: 2,
          maxRows: n,
          rope,
          summaries: false,
        });
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
          expect(Array.from(got.subarray(o, o + Hkv * L.vHeadBytes))).toEqual(
            Array.from(host.subarray(o, o + Hkv * L.vHeadBytes)),
          );
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
    const cache = createKvCache(gpu.dev, {
      Hkv,
      D,
      pageSize: P,
      dtype: 'f16',
      gpuBudgetBytes: 1 << 20,
      meanSummaries: false,
    });
    const seq = cache.addSequence();
    cache.append(seq, kv, vv);
    const want = cache.summariesHost().minmax;
    cache.dispose();
    const L = pageLayout(P, Hkv, D, D, 'f16');
    const plan = await planAppend(gpu.dev, {
      Hkv,
      D,
      pageSize: P,
      pageDtype: 'f16',
      maxPages: 3,
      maxBatch: 1,
      maxRows: T,
    });
    const pages = gpu.dev.createBuffer({ size: 3 * L.pageBytes, usage: STORAGE });
    const summaries = gpu.dev.createBuffer({ size: 3 * Hkv * 2 * D * 2, usage: STORAGE });
    plan.schedule({
      kvIndptr: [0, 3],
      kvIndices: [0, 1, 2],
      batchIndices: new Array(T).fill(0),
      positions: Array.from({ length: T }, (_, i) => i),
    });
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
    const plan = await planAppend(gpu.dev, {
      Hkv,
      D,
      pageSize: P,
      pageDtype: 'f32',
      maxPages: 16,
      maxBatch: 2,
      rope: { maxPosition: 64 },
    });
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
      plan.schedule({
        kvIndptr: [0, 8, 16],
        kvIndices: Array.from({ length: 16 }, (_, i) => i),
        batchIndices: [0, 1],
        positions: [s, s],
      });
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
    const ownBuffer = Object.getOwnPropertyDescriptor(device, 'createBuffer');
    const ownGroup = Object.getOwnPropertyDescriptor(device, 'createBindGroup');
    Object.defineProperty(device, 'createBuffer', {
      value: (d: GPUBufferDescriptor) => (counts.buffers++, cb.call(device, d)),
      configurable: true,
      writable: true,
    });
    Object.defineProperty(device, 'createBindGroup', {
      value: (d: GPUBindGroupDescriptor) => (counts.groups++, cg.call(device, d)),
      configurable: true,
      writable: true,
    });
    try {
      for (let s = 1; s < 20; s++) step(s);
    } finally {
      // put back exactly what was there (no own property left on a device that had none)
      if (ownBuffer) Object.defineProperty(device, 'createBuffer', ownBuffer);
      else delete (device as unknown as Record<string, unknown>).createBuffer;
      if (ownGroup) Object.defineProperty(device, 'createBindGroup', ownGroup);
      else delete (device as unknown as Record<string, unknown>).createBindGroup;
    }
    await device.queue.onSubmittedWorkDone();
    expect(counts).toEqual({ buffers: 0, groups: 0 });
    // The 20 rows really went in (from both encodings): page 4 of sequence 1 (pool page 12)
    // holds positions 16..19, and its summary bounds the rotated keys.
    const got = new Float32Array(await gpu.dev.readback(pages, L.pageBytes, 12 * L.pageBytes));
    expect(Array.from(got.subarray(L.vOffset / 4, L.vOffset / 4 + 4 * Hkv * D))).toEqual(
      new Array(4 * Hkv * D).fill(2),
    );
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
    expect(await acode(() => planAppend(gpu.dev, { ...base, pageDtype: 'int4' as KvDType }))).toBe('E_DTYPE pageDtype');
    expect(await acode(() => planAppend(gpu.dev, { ...base, D: 6 }))).toBe('E_UNSUPPORTED D');
    expect(await acode(() => planAppend(gpu.dev, { ...base, rope: { maxPosition: 8, rotaryDim: 6 } }))).toBe(
      'E_UNSUPPORTED rope.rotaryDim',
    );
    expect(
      await acode(() => planAppend(gpu.dev, { ...base, rope: { maxPosition: 8, style: 'spiral' as RopeStyle } })),
    ).toBe('E_ARG rope.style');
    expect(await acode(() => planRope(gpu.dev, { H: 1, D: 8, maxRows: 1, maxPosition: 0 }))).toBe(
      'E_ARG options.maxPosition',
    );
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
    expect(code(() => plan.schedule({ kvIndptr: [0, 2], kvIndices: [0, 1], batchIndices: [0], positions: [8] }))).toBe(
      'E_LIMIT',
    ); // past rope.maxPosition
    expect(
      code(() =>
        plan.schedule({ kvIndptr: [0, 1, 2, 3, 4], kvIndices: [0, 1, 2, 3], batchIndices: [], positions: [] }),
      ),
    ).toBe('E_LIMIT');
    expect(plan.rows).toBe(1); // the good schedule is still the one in place
    expect(
      code(() => plan.run(enc, { k: gpu.tensor(new Float64Array(8), [1, 1, 8], 'f16'), v, pages, summaries })),
    ).toBe('E_DTYPE');
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

describe('append: int8 pages (one scale per token, KV head and K/V block)', () => {
  /** The first differing byte of two pools, with where it is, or '' when equal. */
  function firstDiff(got: Uint8Array, want: Uint8Array, pageBytes: number): string {
    for (let i = 0; i < got.length; i++)
      if (got[i] !== want[i])
        return `byte ${i} (page ${Math.floor(i / pageBytes)}, offset ${i % pageBytes}): ${got[i]} vs ${want[i]}`;
    return '';
  }

  for (const inDt of ['f32', 'f16', 'bf16'] as FloatDType[]) {
    it(`${inDt} rows -> int8 pages: ragged prefill then decode, bit-exact vs the host codec (quantizePageInt8), summaries vs host`, async () => {
      const Hkv = 2;
      const D = 12;
      const Dv = 8;
      const P = 4;
      const maxPages = 24;
      const rng = new Rng(31);
      const L = pageLayout(P, Hkv, D, Dv, 'int8');
      const plan = await planAppend(gpu.dev, {
        Hkv,
        D,
        Dv,
        pageSize: P,
        pageDtype: 'int8',
        inputDtype: inDt,
        maxPages,
        maxBatch: 3,
        maxRows: 16,
      });
      // Random bytes everywhere: cells and scales of rows not appended must stay as they were.
      const initial = new Uint8Array(maxPages * L.pageBytes);
      for (let i = 0; i < initial.length; i++) initial[i] = rng.int(0, 255);
      // Scales of the rows already there (positions below lens) are finite, as a cache keeps them:
      // zero, subnormal and large ones among them.
      const idv = new DataView(initial.buffer);
      for (let p = 0; p < maxPages; p++) {
        for (let j = 0; j < 2 * Hkv * P; j++) {
          const pick = rng.int(0, 9);
          const x =
            pick === 0
              ? 0
              : pick === 1
                ? 3e-39 * rng.next()
                : pick === 2
                  ? 1e37 * rng.next()
                  : Math.abs(rng.normal() * 5);
          idv.setFloat32(p * L.pageBytes + L.scaleOffset + 4 * j, x, true);
        }
      }
      const host = initial.slice();
      const codecPool = initial.slice();
      const pages = gpu.dev.upload(initial, { usage: STORAGE });
      const summaries = gpu.dev.createBuffer({ size: maxPages * Hkv * 2 * D * 2, usage: STORAGE });
      const lens = [0, 3, 6];
      const steps = [
        [3, 7, 2],
        [1, 1, 1],
      ];
      const t = table(
        lens,
        steps[0]!.map((n, b) => n + steps[1]![b]!),
        P,
        maxPages,
        rng,
      );
      const appended: { page: number; row: number }[] = [];
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
          const vraw = rng.normals(n * Hkv * Dv, 3);
          if (si === 0) {
            // Row 0 head 0 of K: scale 381 = 127 * 3, codes at exact halves (x * 127 / s = n + 1/2),
            // where 127 / s is inexact: ties round up (Math.round), -ties toward zero.
            kraw.set([381, 1.5, -1.5, 4.5, -4.5, 190.5, -190.5, 0.375, 1e-30, -381, 7.5, -7.5], 0);
            // Row 1 head 1 of K: all zeros (scale 0). Row 2 head 0 of V: tiny values (scale ~1e-39, f32 subnormal).
            kraw.fill(0, (1 * Hkv + 1) * D, (1 * Hkv + 2) * D);
            for (let d = 0; d < Dv; d++) vraw[2 * Hkv * Dv + d] = (d - 3.5) * 1e-40;
            // Row 5 head 0 of K (f32 rows): code -100 of scale 81.28000640869140625 decodes to
            // 100 * s / 127 = 64 + 0.77 ulp: exactly rounded, -64.0000076; truncated, -64: the
            // column's min summary (f16, rounded down) is -64.0625 only if the decode rounds.
            kraw.set([81.2800064086914, -64.00000762939453], 5 * Hkv * D);
          }
          const kv = roundTo(kraw, inDt);
          const vv = roundTo(vraw, inDt);
          plan.schedule(s);
          const enc = gpu.dev.device.createCommandEncoder();
          plan.run(enc, {
            k: gpu.tensor(kv, [n, Hkv, D], inDt),
            v: gpu.tensor(vv, [n, Hkv, Dv], inDt),
            pages,
            summaries,
          });
          gpu.dev.device.queue.submit([enc.finish()]);
          appendReference(host, L, kv, vv, s);
          // The KV cache's own quantiser, one row at a time on a scratch page.
          for (let i = 0; i < n; i++) {
            const page = s.kvIndices[s.kvIndptr[s.batchIndices[i]!]! + Math.floor(s.positions[i]! / P)]!;
            const r = s.positions[i]! % P;
            appended.push({ page, row: r });
            const kVals = new Float32Array(Hkv * P * D);
            const vVals = new Float32Array(Hkv * P * Dv);
            for (let h = 0; h < Hkv; h++) {
              for (let d = 0; d < D; d++) kVals[(h * P + r) * D + d] = kv[(i * Hkv + h) * D + d]!;
              for (let d = 0; d < Dv; d++) vVals[(h * P + r) * Dv + d] = vv[(i * Hkv + h) * Dv + d]!;
            }
            const scratch = new Uint8Array(L.pageBytes);
            quantizePageInt8(scratch, L, kVals, vVals, r + 1);
            const dst = codecPool.subarray(page * L.pageBytes, (page + 1) * L.pageBytes);
            for (let h = 0; h < Hkv; h++) {
              const ko = h * L.kHeadBytes + r * D;
              dst.set(scratch.subarray(ko, ko + D), ko);
              const vo = L.vOffset + h * L.vHeadBytes + r * Dv;
              dst.set(scratch.subarray(vo, vo + Dv), vo);
              for (const which of [0, 1]) {
                const so = L.scaleOffset + 4 * ((which * Hkv + h) * P + r);
                dst.set(scratch.subarray(so, so + 4), so);
              }
            }
          }
          expect(firstDiff(codecPool, host, L.pageBytes), 'reference vs KV cache codec').toBe('');
          const got = await readPool(pages);
          expect(firstDiff(got, host, L.pageBytes), 'GPU vs host').toBe('');
          // The summary of every page an append has touched so far (its rows used: up to the sequence's length).
          const sums = new Uint16Array(await gpu.dev.readback(summaries));
          const touched = new Set(appended.map((x) => x.page));
          for (let b = 0; b < 3; b++) {
            for (let j = 0; j < Math.ceil(lens[b]! / P); j++) {
              const page = t.kvIndices[t.kvIndptr[b]! + j]!;
              if (!touched.has(page)) continue;
              const len = Math.min(P, lens[b]! - j * P);
              const want = pageSummaryReference(host.subarray(page * L.pageBytes, (page + 1) * L.pageBytes), L, len);
              expect(
                Array.from(sums.subarray(page * Hkv * 2 * D, (page + 1) * Hkv * 2 * D)),
                `summary of page ${page}`,
              ).toEqual(Array.from(want));
            }
          }
        }
        if (inDt === 'f32') {
          // The constructed row really has its ties: 1.5 * 127 / 381 = 0.5 -> 1, -0.5 -> 0, 4.5 -> 2 (1.5), -1 ...
          const first = appended[0]!;
          const codes = new Int8Array(host.buffer, first.page * L.pageBytes + first.row * D, D);
          expect(Array.from(codes)).toEqual([127, 1, 0, 2, -1, 64, -63, 0, 0, -127, 3, -2]);
        }
      } finally {
        plan.dispose();
        gpu.dev.destroyBuffer(pages);
        gpu.dev.destroyBuffer(summaries);
      }
    });
  }

  it('equal to the pages and summaries of an int8 KvCache given the same tokens', async () => {
    const Hkv = 2;
    const D = 16;
    const P = 16;
    const T = 37;
    const rng = new Rng(41);
    const kv = rng.normals(T * Hkv * D, 2);
    const vv = rng.normals(T * Hkv * D, 2);
    const cache = createKvCache(gpu.dev, {
      Hkv,
      D,
      pageSize: P,
      dtype: 'int8',
      gpuBudgetBytes: 1 << 20,
      meanSummaries: false,
    });
    const seq = cache.addSequence();
    cache.append(seq, kv.subarray(0, 5 * Hkv * D), vv.subarray(0, 5 * Hkv * D)); // two appends: a partial page requantised
    cache.append(seq, kv.subarray(5 * Hkv * D), vv.subarray(5 * Hkv * D));
    const ids = cache.pages(seq);
    const want = ids.map((p) => cache.hostPage(p).slice());
    const wantSums = cache.summariesHost().minmax;
    const sumIds = ids.map((p) => Array.from(wantSums.subarray(p * Hkv * 2 * D, (p + 1) * Hkv * 2 * D)));
    cache.dispose();
    const L = pageLayout(P, Hkv, D, D, 'int8');
    const np = Math.ceil(T / P);
    const plan = await planAppend(gpu.dev, {
      Hkv,
      D,
      pageSize: P,
      pageDtype: 'int8',
      maxPages: np,
      maxBatch: 1,
      maxRows: T,
    });
    const pages = gpu.dev.upload(new Uint8Array(np * L.pageBytes), { usage: STORAGE });
    const summaries = gpu.dev.createBuffer({ size: np * Hkv * 2 * D * 2, usage: STORAGE });
    try {
      // Decode-style: one token per step, as an engine appends.
      for (let tok = 0; tok < T; tok++) {
        plan.schedule({
          kvIndptr: [0, np],
          kvIndices: Array.from({ length: np }, (_, i) => i),
          batchIndices: [0],
          positions: [tok],
        });
        const enc = gpu.dev.device.createCommandEncoder();
        plan.run(enc, {
          k: gpu.tensor(kv.subarray(tok * Hkv * D, (tok + 1) * Hkv * D), [1, Hkv, D]),
          v: gpu.tensor(vv.subarray(tok * Hkv * D, (tok + 1) * Hkv * D), [1, Hkv, D]),
          pages,
          summaries,
        });
        gpu.dev.device.queue.submit([enc.finish()]);
      }
      const got = await readPool(pages);
      const sums = new Uint16Array(await gpu.dev.readback(summaries));
      for (let i = 0; i < np; i++) {
        expect(
          firstDiff(got.subarray(i * L.pageBytes, (i + 1) * L.pageBytes), want[i]!, L.pageBytes),
          `page ${i}`,
        ).toBe('');
        expect(Array.from(sums.subarray(i * Hkv * 2 * D, (i + 1) * Hkv * 2 * D)), `summary of page ${i}`).toEqual(
          sumIds[i],
        );
      }
    } finally {
      plan.dispose();
      gpu.dev.destroyBuffer(pages);
      gpu.dev.destroyBuffer(summaries);
    }
  });

  for (const style of ['half', 'interleaved'] as RopeStyle[]) {
    it(`fused RoPE (${style}) before quantisation; attention over the appended int8 pages vs float64, cpu and gpu shapes`, async () => {
      const Hq = 4;
      const Hkv = 2;
      const D = 16;
      const P = 8;
      const maxPages = 12;
      const rng = new Rng(51);
      const rope = { style, theta: 1e4, rotaryDim: 8, maxPosition: 64 };
      const lens = [13, 1, 30];
      const t = table([0, 0, 0], lens, P, maxPages, rng);
      const n = t.positions.length;
      const kv = rng.normals(n * Hkv * D);
      const vv = rng.normals(n * Hkv * D);
      const L = pageLayout(P, Hkv, D, D, 'int8');
      const plan = await planAppend(gpu.dev, {
        Hkv,
        D,
        pageSize: P,
        pageDtype: 'int8',
        maxPages,
        maxBatch: 3,
        maxRows: n,
        rope,
        summaries: false,
      });
      const pages = gpu.dev.upload(new Uint8Array(maxPages * L.pageBytes), { usage: STORAGE });
      try {
        plan.schedule(t);
        const enc = gpu.dev.device.createCommandEncoder();
        plan.run(enc, { k: gpu.tensor(kv, [n, Hkv, D]), v: gpu.tensor(vv, [n, Hkv, D]), pages });
        gpu.dev.device.queue.submit([enc.finish()]);
        const got = await readPool(pages);
        // V is not rotated: bit-exact against the host quantiser.
        const host = appendReference(
          new Uint8Array(maxPages * L.pageBytes),
          L,
          ropeReference(kv, t.positions, Hkv, D, rope),
          vv,
          t,
        );
        const kvb = Hkv * L.vHeadBytes;
        for (let page = 0; page < maxPages; page++) {
          const o = page * L.pageBytes + L.vOffset;
          expect(Array.from(got.subarray(o, o + kvb)), `V of page ${page}`).toEqual(
            Array.from(host.subarray(o, o + kvb)),
          );
          const so = page * L.pageBytes + L.scaleOffset + 4 * Hkv * P;
          expect(Array.from(got.subarray(so, so + 4 * Hkv * P)), `V scales of page ${page}`).toEqual(
            Array.from(host.subarray(so, so + 4 * Hkv * P)),
          );
        }
        // K: rotated in f32 then quantised; against the float64 rotation, within int8's step
        // (half a code of each row's scale), and no code more than one away from the float64 one.
        const kvLastPageLen = lens.map((len) => len - (Math.ceil(len / P) - 1) * P);
        const kRot = ropeReference(kv, t.positions, Hkv, D, rope);
        let off = 0;
        // Codes of the f32 rotation vs the host quantiser on the float64 rotation: equal except
        // where the two rotations fall on either side of a half (at most one code apart).
        const gi = new Int8Array(got.buffer);
        const hi = new Int8Array(host.buffer);
        let codeDiffs = 0;
        let codes = 0;
        for (let page = 0; page < maxPages; page++) {
          for (let i = page * L.pageBytes; i < page * L.pageBytes + L.vOffset; i++) {
            codes++;
            if (gi[i] !== hi[i]) {
              codeDiffs++;
              expect(Math.abs(gi[i]! - hi[i]!)).toBe(1);
            }
          }
        }
        const seqs = lens.map((len, b) => {
          const s = readPagedSequence(got, L, t.kvIndptr, t.kvIndices, kvLastPageLen, b);
          for (let i = 0; i < len * Hkv; i++) {
            let scale = 0;
            for (let d = 0; d < D; d++) scale = Math.max(scale, Math.abs(kRot[(off + i) * D + d]!));
            for (let d = 0; d < D; d++) {
              expect(Math.abs(s.k[i * D + d]! - kRot[(off + i) * D + d]!)).toBeLessThanOrEqual(
                (scale / 127) * 0.5 * (1 + 1e-5),
              );
            }
          }
          off += len * Hkv;
          return s;
        });
        expect(codeDiffs, `${codeDiffs} of ${codes} K codes`).toBeLessThanOrEqual(Math.ceil(codes / 100));
        // Attention over the GPU-appended pages (decode + a 3-token prefill chunk) vs float64 on the stored values.
        const qLens = [1, 1, 3];
        const totalQ = 5;
        const qoIndptr = [0, 1, 2, 5];
        const q = rng.normals(totalQ * Hq * D);
        for (const target of ['cpu', 'gpu'] as const) {
          const att = await planBatchAttention(gpu.dev, {
            maxBatch: 3,
            maxQTokens: totalQ,
            maxPages: t.kvIndices.length,
            poolPages: maxPages,
            Hq,
            Hkv,
            D,
            pageSize: P,
            kvDtype: 'int8',
            target,
          });
          try {
            att.schedule({ qoIndptr, kvIndptr: t.kvIndptr, kvIndices: t.kvIndices, kvLastPageLen });
            const o = gpu.nanTensor([totalQ, Hq, D]);
            const lse = gpu.nanTensor([totalQ, Hq], 'f32');
            const e2 = gpu.dev.device.createCommandEncoder();
            att.run(e2, { q: gpu.tensor(q, [totalQ, Hq, D]), o, lse, pages });
            await gpu.dev.submitAndWait([e2.finish()]);
            const ref = batchAttentionReference(q, seqs, qoIndptr, { Hq, Hkv, D });
            const co = compare(await gpu.read(o), ref.o);
            const cl = compare(await gpu.read(lse), ref.lse);
            expect(passes(co, TOLERANCE.f32), `${target} o ${describeComparison(co)}`).toBe(true);
            expect(passes(cl, TOLERANCE.f32), `${target} lse ${describeComparison(cl)}`).toBe(true);
            expect(qLens.length).toBe(3);
          } finally {
            att.dispose();
          }
        }
      } finally {
        plan.dispose();
        gpu.dev.destroyBuffer(pages);
      }
    });
  }
});
