import { openSync, writeSync, closeSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { useGpu } from './helpers/gpu.js';
import { TesseraError } from '../src/errors.js';
import { Rng, compare } from '../src/testing.js';
import { roundTo } from '../src/tensor.js';
import { createKvCache, type KvCache } from '../src/kv/cache.js';
import { f16Table, type KvDType } from '../src/kv/codec.js';
import { FileStore } from '../src/kv/file-store.js';
import { MemoryStore, OpfsStore, type SyncAccessHandleLike } from '../src/kv/store.js';

const gpu = useGpu();

function expectError(fn: () => unknown, code: string, argument?: string): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, 'expected a TesseraError').toBeInstanceOf(TesseraError);
  expect((err as TesseraError).code).toBe(code);
  if (argument) expect((err as TesseraError).argument).toBe(argument);
}

/** Expected stored values for a dtype (int8 is checked against its per-token scale separately). */
function stored(x: Float64Array, dtype: KvDType): Float64Array {
  return dtype === 'int8' ? x : roundTo(x, dtype);
}

describe('kv cache round trips', () => {
  for (const dtype of ['f32', 'f16', 'bf16', 'int8'] as const) {
    it(`${dtype}: three sequences, ragged appends across page boundaries`, () => {
      const Hkv = 2;
      const D = 8;
      const Dv = 12;
      const cache = createKvCache(gpu.dev, { Hkv, D, Dv, dtype, pageSize: 16, gpuBudgetBytes: 1 << 20 });
      try {
        const rng = new Rng(7);
        const sizes = [[1, 63, 64, 65], [300], [16, 17, 15, 2]];
        const all: { k: Float64Array; v: Float64Array }[] = [];
        const seqs = sizes.map(() => cache.addSequence());
        const ks: number[][] = sizes.map(() => []);
        const vs: number[][] = sizes.map(() => []);
        // Interleave appends between sequences so their pages are not contiguous.
        for (let step = 0; step < 4; step++) {
          sizes.forEach((list, i) => {
            const T = list[step];
            if (!T) return;
            const k = rng.normals(T * Hkv * D);
            const v = rng.normals(T * Hkv * Dv);
            cache.append(seqs[i]!, k, v);
            ks[i]!.push(...k);
            vs[i]!.push(...v);
          });
        }
        sizes.forEach((list, i) => {
          const T = list.reduce((a, b) => a + b, 0);
          expect(cache.length(seqs[i]!)).toBe(T);
          all.push({ k: Float64Array.from(ks[i]!), v: Float64Array.from(vs[i]!) });
          const back = cache.read(seqs[i]!, 0, T);
          const ck = compare(back.k, stored(all[i]!.k, dtype));
          const cv = compare(back.v, stored(all[i]!.v, dtype));
          const tol = dtype === 'int8' ? 1.5e-2 : 1e-7; // int8: half a step of max|x|/127 per token
          expect(ck.relRms).toBeLessThan(tol);
          expect(cv.relRms).toBeLessThan(tol);
          expect(ck.badCount + cv.badCount).toBe(0);
          // A middle slice reads the same values.
          const mid = cache.read(seqs[i]!, 5, Math.min(40, T - 5));
          expect(Array.from(mid.k.subarray(0, 16))).toEqual(Array.from(back.k.subarray(5 * Hkv * D, 5 * Hkv * D + 16)));
        });
        // Page table in CSR form.
        const pt = cache.pageTable();
        expect(Array.from(pt.indptr)).toEqual([0, 13, 32, 36]);
        expect(Array.from(pt.lastPageLen)).toEqual([1, 12, 2]);
        expect(new Set(pt.indices).size).toBe(36);
      } finally {
        cache.dispose();
      }
    });
  }

  it('summaries bound the stored keys and match on the GPU', async () => {
    const Hkv = 2;
    const D = 16;
    const cache = createKvCache(gpu.dev, { Hkv, D, dtype: 'f16', pageSize: 16, gpuBudgetBytes: 1 << 20 });
    try {
      const seq = cache.addSequence();
      const rng = new Rng(3);
      const T = 200;
      cache.append(seq, rng.normals(150 * Hkv * D), rng.normals(150 * Hkv * D));
      cache.append(seq, rng.normals(50 * Hkv * D), rng.normals(50 * Hkv * D));
      const { k } = cache.read(seq, 0, T);
      const { minmax, mean } = cache.summariesHost();
      const lut = f16Table();
      const pages = cache.pages(seq);
      for (let i = 0; i < pages.length; i++) {
        for (let h = 0; h < Hkv; h++) {
          for (let d = 0; d < D; d++) {
            let mn = Infinity;
            let mx = -Infinity;
            let s = 0;
            const t1 = Math.min(T, (i + 1) * 16);
            for (let t = i * 16; t < t1; t++) {
              const x = k[(t * Hkv + h) * D + d]!;
              mn = Math.min(mn, x);
              mx = Math.max(mx, x);
              s += x;
            }
            const o = (pages[i]! * Hkv + h) * 2 * D;
            expect(lut[minmax[o + d]!]!).toBeLessThanOrEqual(mn);
            expect(lut[minmax[o + D + d]!]!).toBeGreaterThanOrEqual(mx);
            expect(lut[minmax[o + d]!]!).toBeGreaterThan(mn - 1e-2);
            expect(Math.abs(lut[mean![(pages[i]! * Hkv + h) * D + d]!]! - s / (t1 - i * 16))).toBeLessThan(2e-3);
          }
        }
      }
      const onGpu = new Uint16Array(await gpu.dev.readback(cache.minmaxGpu[0]!, minmax.byteLength));
      expect(Array.from(onGpu)).toEqual(Array.from(minmax));
      const meanGpu = new Uint16Array(await gpu.dev.readback(cache.meanGpu[0]!, mean!.byteLength));
      expect(Array.from(meanGpu)).toEqual(Array.from(mean!));
    } finally {
      cache.dispose();
    }
  });
});

describe('kv cache tiers', () => {
  it('LRU eviction keeps pinned sink and recent pages; GPU copies pass their checksums', async () => {
    const cache = createKvCache(gpu.dev, {
      Hkv: 1,
      D: 8,
      dtype: 'f32',
      pageSize: 16,
      tilePages: 4,
      gpuBudgetBytes: 2 * 4 * 1024 + 4096,
      sinkPages: 1,
      recentPages: 1,
    });
    try {
      const seq = cache.addSequence();
      const rng = new Rng(5);
      cache.append(seq, rng.normals(16 * 20 * 8), rng.normals(16 * 20 * 8));
      const pages = cache.pages(seq);
      expect(pages.length).toBe(20);
      for (let a = 0; a < 20; a += 4) cache.ensureResident(pages.slice(a, a + 4));
      // The pool holds two tiles (8 slots); sink (page 0) and newest (page 19) are pinned.
      expect(cache.pool.capacity).toBe(8);
      expect(cache.pool.slotOf(pages[0]!)).toBeGreaterThanOrEqual(0);
      expect(cache.pool.slotOf(pages[19]!)).toBeGreaterThanOrEqual(0);
      expect(cache.stats().evictions).toBeGreaterThan(0);
      expect(cache.pool.slotOf(pages[1]!)).toBe(-1); // least recently used: gone
      let checked = 0;
      for (const p of pages) if (await cache.verifyGpuPage(p)) checked++;
      expect(checked).toBe(cache.pool.resident);
      expect(cache.verifyStore()).toBe(20);
      expect(gpu.dev.memory().bytesHeld).toBeGreaterThan(0);
      expect(cache.summaryBytes + cache.pool.bytes).toBeLessThanOrEqual(cache.gpuBudgetBytes);
    } finally {
      cache.dispose();
    }
  });

  it('disk tier: pages round trip through a file, verified; a corrupted page gives E_CORRUPT', async () => {
    const store = new FileStore();
    const cache = createKvCache(gpu.dev, { Hkv: 2, D: 8, dtype: 'f16', pageSize: 16, gpuBudgetBytes: 1 << 20, store });
    try {
      const seq = cache.addSequence();
      const rng = new Rng(11);
      const k = rng.normals(100 * 2 * 8);
      const v = rng.normals(100 * 2 * 8);
      cache.append(seq, k, v);
      const back = cache.read(seq, 0, 100);
      expect(compare(back.k, roundTo(k, 'f16')).maxAbs).toBe(0);
      expect(cache.verifyStore()).toBe(7);
      const pages = cache.pages(seq);
      cache.ensureResident(pages);
      for (const p of pages) expect(await cache.verifyGpuPage(p)).toBe(true);
      // Flip bytes of page 3 on disk.
      const fd = openSync(store.path, 'r+');
      writeSync(fd, new Uint8Array([1, 2, 3, 4, 5]), 0, 5, pages[3]! * cache.pageBytes + 17);
      closeSync(fd);
      expectError(() => cache.read(seq, 48, 4), 'E_CORRUPT');
      expectError(() => cache.verifyStore(), 'E_CORRUPT');
      // A non-resident corrupted page fails on its way to the GPU.
      const small = createKvCache(gpu.dev, {
        Hkv: 2,
        D: 8,
        dtype: 'f16',
        pageSize: 16,
        gpuBudgetBytes: 1 << 20,
        store: new FileStore(),
      });
      try {
        const s2 = small.addSequence();
        small.append(s2, k, v);
        const fd2 = openSync((small.store as FileStore).path, 'r+');
        writeSync(fd2, new Uint8Array([9]), 0, 1, small.pages(s2)[2]! * small.pageBytes);
        closeSync(fd2);
        expectError(() => small.ensureResident(small.pages(s2)), 'E_CORRUPT');
      } finally {
        small.dispose();
      }
    } finally {
      cache.dispose();
    }
  });

  it('OPFS store (through a sync-access-handle stand-in) holds the cache', () => {
    let file = new Uint8Array(0);
    const handle: SyncAccessHandleLike = {
      read(buf, o) {
        const at = o?.at ?? 0;
        const n = Math.max(0, Math.min(buf.byteLength, file.byteLength - at));
        buf.set(file.subarray(at, at + n));
        return n;
      },
      write(buf, o) {
        const at = o?.at ?? 0;
        if (at + buf.byteLength > file.byteLength) {
          const f = new Uint8Array(at + buf.byteLength);
          f.set(file);
          file = f;
        }
        file.set(buf, at);
        return buf.byteLength;
      },
      flush() {},
      close() {},
    };
    const cache = createKvCache(gpu.dev, {
      Hkv: 1,
      D: 8,
      dtype: 'bf16',
      pageSize: 16,
      gpuBudgetBytes: 1 << 20,
      store: new OpfsStore(handle),
    });
    try {
      const seq = cache.addSequence();
      const rng = new Rng(4);
      const k = rng.normals(70 * 8);
      cache.append(seq, k, rng.normals(70 * 8));
      expect(compare(cache.read(seq, 0, 70).k, roundTo(k, 'bf16')).maxAbs).toBe(0);
      expect(cache.verifyStore()).toBe(5);
      file[cache.pages(seq)[4]! * cache.pageBytes] ^= 1;
      expectError(() => cache.read(seq, 64, 6), 'E_CORRUPT');
    } finally {
      cache.dispose();
    }
  });

  it('debug mode verifies host pages on upload', () => {
    const store = new MemoryStore({ align: 4096 });
    const cache = createKvCache(gpu.dev, {
      Hkv: 1,
      D: 8,
      dtype: 'f32',
      pageSize: 16,
      gpuBudgetBytes: 1 << 20,
      store,
      debug: true,
    });
    try {
      const seq = cache.addSequence();
      const rng = new Rng(1);
      cache.append(seq, rng.normals(40 * 8), rng.normals(40 * 8));
      const p = cache.pages(seq)[1]!;
      store.view(p * cache.pageBytes, cache.pageBytes)![8] ^= 0x40;
      expectError(() => cache.ensureResident([p]), 'E_CORRUPT');
    } finally {
      cache.dispose();
    }
  });
});

describe('kv cache bad input leaves the cache intact', () => {
  it('rejects bad options', () => {
    expectError(() => createKvCache(gpu.dev, { Hkv: 1, D: 8, pageSize: 24 }), 'E_UNSUPPORTED', 'pageSize');
    expectError(() => createKvCache(gpu.dev, { Hkv: 1, D: 8, pageSize: 512 }), 'E_UNSUPPORTED', 'pageSize');
    expectError(() => createKvCache(gpu.dev, { Hkv: 1, D: 6 }), 'E_UNSUPPORTED', 'D');
    expectError(() => createKvCache(gpu.dev, { Hkv: 0, D: 8 }), 'E_ARG', 'Hkv');
    expectError(() => createKvCache(gpu.dev, { Hkv: 1, D: 8, dtype: 'f8' as KvDType }), 'E_DTYPE', 'dtype');
    // Budget smaller than one tile.
    expectError(
      () =>
        createKvCache(gpu.dev, {
          Hkv: 1,
          D: 8,
          pageSize: 16,
          dtype: 'f32',
          tilePages: 64,
          gpuBudgetBytes: 64 * 1024 - 1,
        }),
      'E_LIMIT',
      'gpuBudgetBytes',
    );
  });

  it('rejects bad appends and reads without changing anything', () => {
    const cache: KvCache = createKvCache(gpu.dev, {
      Hkv: 2,
      D: 8,
      dtype: 'f16',
      pageSize: 16,
      gpuBudgetBytes: 1 << 20,
    });
    try {
      const seq = cache.addSequence();
      const rng = new Rng(2);
      const k = rng.normals(20 * 2 * 8);
      const v = rng.normals(20 * 2 * 8);
      cache.append(seq, k, v);
      const before = cache.read(seq, 0, 20);
      const pagesBefore = [...cache.pages(seq)];
      const sums = pagesBefore.map((p) => cache.checksum(p));
      // Wrong head count: rows of 3 heads.
      expectError(() => cache.append(seq, rng.normals(5 * 3 * 8), rng.normals(5 * 3 * 8)), 'E_SHAPE', 'k');
      expectError(() => cache.append(seq, rng.normals(4 * 2 * 8), rng.normals(4 * 3 * 8)), 'E_SHAPE', 'v');
      expectError(() => cache.append(seq, rng.normals(7), rng.normals(7)), 'E_SHAPE', 'k');
      // Wrong dtype.
      expectError(
        () => cache.appendRaw(seq, { dtype: 'bf16', k: new Uint16Array(16), v: new Uint16Array(16) }),
        'E_DTYPE',
        'raw.dtype',
      );
      expectError(
        () =>
          cache.appendRaw(seq, {
            dtype: 'f16',
            k: new Float32Array(16) as unknown as Uint16Array,
            v: new Uint16Array(16),
          }),
        'E_DTYPE',
        'raw.k',
      );
      // Unknown sequence; reading past the end.
      expectError(() => cache.append(5, k, v), 'E_ARG', 'seq');
      expectError(() => cache.read(seq, 10, 11), 'E_ARG', 'count');
      expectError(() => cache.read(seq, -1, 1), 'E_ARG', 'start');
      expectError(() => cache.hostPage(99), 'E_ARG', 'page');
      expect(cache.length(seq)).toBe(20);
      expect([...cache.pages(seq)]).toEqual(pagesBefore);
      expect(pagesBefore.map((p) => cache.checksum(p))).toEqual(sums);
      const after = cache.read(seq, 0, 20);
      expect(Array.from(after.k)).toEqual(Array.from(before.k));
      expect(Array.from(after.v)).toEqual(Array.from(before.v));
      // Appending still works afterwards.
      cache.append(seq, rng.normals(2 * 2 * 8), rng.normals(2 * 2 * 8));
      expect(cache.length(seq)).toBe(22);
    } finally {
      cache.dispose();
    }
    expectError(() => cache.addSequence(), 'E_STATE');
  });
});
