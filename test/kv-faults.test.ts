/**
 * Issue 12, classes 4, 5 and 8: the KV cache's state under faults and hostile values.
 * - 4: an append that fails at any store write (nothing written, or half a page written) leaves
 *   the cache exactly as before; every earlier token reads back bit-exactly.
 * - 5: int8 pages: NaN / Inf is E_NAN naming k or v; appending never changes earlier tokens.
 * - 8: one live cache per store object, one FileStore per file (E_STATE naming `store` / `path`).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { useGpu } from './helpers/gpu.js';
import { TesseraError } from '../src/errors.js';
import { Rng, TOLERANCE, compare, describeComparison, passes } from '../src/testing.js';
import { createKvCache, type KvCache } from '../src/kv/cache.js';
import { MemoryStore, type Store } from '../src/kv/store.js';
import { FileStore } from '../src/kv/file-store.js';
import type { KvDType } from '../src/kv/codec.js';
import { streamAttention } from '../src/stream/exact.js';
import { streamAttentionReference } from '../kernels/paged/reference.js';
import { MemoryManifest } from '../src/kv/manifest.js';
import { pageCounts } from '../src/kv/refs.js';
import { persistKvCache } from '../src/kv/session.js';

const gpu = useGpu();

/** A store that fails its n-th write from now on: before writing anything, or after half of it. */
class FaultyStore implements Store {
  writes = 0;
  private failAt = -1;
  private mode: 'before' | 'partial' = 'before';
  constructor(readonly inner: Store) {}
  get kind() {
    return this.inner.kind;
  }
  get hostBytes() {
    return this.inner.hostBytes;
  }
  arm(step: number, mode: 'before' | 'partial'): void {
    this.failAt = this.writes + step;
    this.mode = mode;
  }
  disarm(): void {
    this.failAt = -1;
  }
  get armed(): boolean {
    return this.failAt >= 0;
  }
  write(offset: number, src: Uint8Array): void {
    const n = this.writes++;
    if (n === this.failAt) {
      this.failAt = -1;
      if (this.mode === 'partial') this.inner.write(offset, src.subarray(0, src.byteLength >> 1));
      throw new TesseraError('E_IO', `injected: disk full at write ${n} (${this.mode})`);
    }
    this.inner.write(offset, src);
  }
  read(offset: number, dst: Uint8Array): void {
    this.inner.read(offset, dst);
  }
  // No view(): every read goes through read(), as with a disk store.
  close(): void {
    this.inner.close();
  }
}

interface Snapshot {
  lengths: number[];
  numPages: number;
  pages: number[][];
  table: unknown;
  minmax: number[];
  mean: number[];
  sums: number[];
  k: Float32Array[];
  v: Float32Array[];
}

function snapshot(cache: KvCache, seqs: number[]): Snapshot {
  const s = cache.summariesHost();
  return {
    lengths: seqs.map((q) => cache.length(q)),
    numPages: cache.numPages,
    pages: seqs.map((q) => [...cache.pages(q)]),
    table: JSON.parse(
      JSON.stringify(Object.fromEntries(Object.entries(cache.pageTable()).map(([k, v]) => [k, Array.from(v)]))),
    ),
    minmax: Array.from(s.minmax),
    mean: Array.from(s.mean ?? []),
    sums: Array.from({ length: cache.numPages }, (_, p) => cache.checksum(p)),
    k: seqs.map((q) => cache.read(q, 0, cache.length(q)).k),
    v: seqs.map((q) => cache.read(q, 0, cache.length(q)).v),
  };
}

/** The snapshot with the checksums and summaries of unreferenced (free) page ids blanked. */
function liveOnly(a: Snapshot, cache: KvCache): Snapshot {
  const per = a.minmax.length / a.numPages;
  const live = (p: number) => cache.refCount(p) > 0;
  return {
    ...a,
    minmax: a.minmax.map((x, i) => (live(Math.floor(i / per)) ? x : -1)),
    mean: a.mean.map((x, i) => (live(Math.floor(i / (a.mean.length / a.numPages))) ? x : -1)),
    sums: a.sums.map((x, p) => (live(p) ? x : -1)),
  };
}

function expectSame(a: Snapshot, b: Snapshot, what: string): void {
  expect(b.lengths, `${what}: lengths`).toEqual(a.lengths);
  expect(b.numPages, `${what}: page count`).toBe(a.numPages);
  expect(b.pages, `${what}: pages`).toEqual(a.pages);
  expect(b.table, `${what}: page table`).toEqual(a.table);
  expect(b.minmax, `${what}: min/max summaries`).toEqual(a.minmax);
  expect(b.mean, `${what}: mean summaries`).toEqual(a.mean);
  expect(b.sums, `${what}: checksums`).toEqual(a.sums);
  a.k.forEach((k, i) =>
    expect(Buffer.from(b.k[i]!.buffer).equals(Buffer.from(k.buffer)), `${what}: keys of seq ${i} bit-exact`).toBe(true),
  );
  a.v.forEach((v, i) =>
    expect(Buffer.from(b.v[i]!.buffer).equals(Buffer.from(v.buffer)), `${what}: values of seq ${i} bit-exact`).toBe(
      true,
    ),
  );
}

describe('class 4: an append that fails at any write leaves the cache as before', () => {
  const DTYPES: KvDType[] = ['f16', 'int8'];
  for (const dtype of DTYPES) {
    for (const tier of ['memory', 'file'] as const) {
      it(`${dtype}, ${tier} store: every write step, nothing or half a page written`, async () => {
        const Hkv = 2;
        const D = 8;
        const P = 16;
        const store = new FaultyStore(tier === 'memory' ? new MemoryStore({ align: 16 }) : new FileStore());
        const cache = createKvCache(gpu.dev, {
          Hkv,
          D,
          pageSize: P,
          dtype,
          store,
          tilePages: 4,
          gpuBudgetBytes: 1 << 20,
        });
        // The same appends, never failing: what the cache must equal in the end.
        const clean = createKvCache(gpu.dev, { Hkv, D, pageSize: P, dtype, tilePages: 4, gpuBudgetBytes: 1 << 20 });
        try {
          const rng = new Rng(41);
          const seqs = [cache.addSequence(), cache.addSequence()];
          for (let i = 0; i < seqs.length; i++) clean.addSequence();
          const put = (s: number, T: number) => {
            const k = rng.normals(T * Hkv * D);
            const v = rng.normals(T * Hkv * D);
            cache.append(s, k, v);
            clean.append(s, k, v);
          };
          put(0, 40); // 2.5 pages: the last page is partial, rewritten in place by the next append
          put(1, 20);
          put(0, 3);
          const q = rng.normals(2 * Hkv * D);
          const streamed = await streamAttention(cache, 0, q, { Hq: 2 * Hkv }); // pages resident now
          // Arms the store to fail at write 0, 1, 2, ... of one append until the append has fewer
          // writes and goes through; after each failure the cache must equal its snapshot.
          const failEveryStep = (seq: number, T: number, mode: 'before' | 'partial'): number => {
            const k = rng.normals(T * Hkv * D);
            const v = rng.normals(T * Hkv * D);
            const before = snapshot(cache, seqs);
            let failed = 0;
            for (let step = 0; ; step++) {
              store.arm(step, mode);
              let threw: unknown;
              try {
                cache.append(seq, k, v);
              } catch (e) {
                threw = e;
              }
              if (!threw) break;
              failed++;
              expect(threw, `${mode} step ${step}`).toMatchObject({ code: 'E_IO' });
              expectSame(before, snapshot(cache, seqs), `after a failure at write ${step} (${mode})`);
              expect(cache.verifyStore()).toBe(before.numPages);
            }
            store.disarm();
            clean.append(seq, k, v);
            expectSame(snapshot(clean, seqs), snapshot(cache, seqs), `the append that went through (${mode})`);
            return failed;
          };
          // 45 tokens on a page holding 11: the partial page and 3 new pages, 4 writes.
          expect(failEveryStep(0, 45, 'before')).toBe(4);
          put(1, 5); // a partial page again (9 of 16)
          expect(failEveryStep(1, 40, 'partial')).toBe(4);
          expect(failEveryStep(1, 3, 'partial')).toBe(1);
          expect(failEveryStep(1, 16, 'before')).toBe(2);
          // The cache still streams exactly, including pages that were resident during the failures.
          for (const seq of seqs) {
            const got = await streamAttention(cache, seq, q, { Hq: 2 * Hkv });
            const { k, v } = cache.read(seq, 0, cache.length(seq));
            const ref = streamAttentionReference(q, k, v, { Tq: 1, Tk: cache.length(seq), Hq: 2 * Hkv, Hkv, D });
            const c = compare(got.o, ref.o);
            expect(passes(c, TOLERANCE.f32), describeComparison(c)).toBe(true);
          }
          expect(streamed.o.every(Number.isFinite)).toBe(true);
        } finally {
          cache.dispose();
          clean.dispose();
        }
      });
    }
  }
});

describe('class 4 with fork: a failed append to a sequence sharing its partial page', () => {
  it('undoes the copy-on-write: pages, reference counts and page ids as before, then the append goes through', () => {
    const Hkv = 1;
    const D = 8;
    const P = 16;
    const store = new FaultyStore(new MemoryStore({ align: 16 }));
    const cache = createKvCache(gpu.dev, {
      Hkv,
      D,
      pageSize: P,
      dtype: 'f16',
      store,
      tilePages: 4,
      gpuBudgetBytes: 1 << 20,
    });
    try {
      const rng = new Rng(43);
      const parent = cache.addSequence();
      cache.append(parent, rng.normals(40 * Hkv * D), rng.normals(40 * Hkv * D)); // 2 full pages + 8 rows
      const child = cache.fork(parent); // copies only the partial page
      const seqs = [parent, child];
      const shared = cache.pages(parent).slice(0, 2);
      for (const p of shared) expect(cache.refCount(p)).toBe(2);
      cache.freeSequence(child); // its copied partial page becomes a free id, reused by the next allocation
      const child2 = cache.fork(parent);
      seqs[1] = child2;
      const tmp = cache.addSequence(); // three page ids on the free list: the append reuses them
      cache.append(tmp, rng.normals(33 * Hkv * D), rng.normals(33 * Hkv * D));
      cache.freeSequence(tmp);
      // Durable: the committed partial page of child2 is never rewritten in place, so the append
      // copies it to a fresh id first (copy-on-write), which a failure must undo.
      persistKvCache(cache, new MemoryManifest());
      const k = rng.normals(30 * Hkv * D);
      const v = rng.normals(30 * Hkv * D);
      const before = snapshot(cache, seqs);
      const refs = before.pages.map((ps) => ps.map((p) => cache.refCount(p)));
      const counts = pageCounts(cache);
      let failed = 0;
      for (let step = 0; ; step++) {
        store.arm(step, 'partial');
        let threw: unknown;
        try {
          cache.append(child2, k, v);
        } catch (e) {
          threw = e;
        }
        if (!threw) break;
        failed++;
        expect(threw).toMatchObject({ code: 'E_IO' });
        // Free page ids hold no tokens: their bytes, checksums and summaries may change.
        expectSame(liveOnly(before, cache), liveOnly(snapshot(cache, seqs), cache), `after a failure at write ${step}`);
        expect(
          before.pages.map((ps) => ps.map((p) => cache.refCount(p))),
          'reference counts',
        ).toEqual(refs);
        expect(pageCounts(cache), 'live, shared and free page ids').toEqual(counts);
      }
      store.disarm();
      expect(failed).toBeGreaterThan(0);
      // The parent's tokens are untouched; the child has its 40 + 30 tokens.
      expect(cache.length(child2)).toBe(70);
      const got = cache.read(child2, 40, 30);
      const want = new Float32Array(30 * Hkv * D);
      for (let i = 0; i < want.length; i++) want[i] = k[i]!;
      for (let i = 0; i < want.length; i++)
        expect(Math.abs(got.k[i]! - want[i]!)).toBeLessThanOrEqual(Math.abs(want[i]!) * 1e-3 + 1e-4);
      expectSame(
        {
          ...before,
          lengths: [before.lengths[0]!],
          pages: [before.pages[0]!],
          k: [before.k[0]!],
          v: [before.v[0]!],
        } as never,
        {
          ...snapshot(cache, [parent]),
          numPages: before.numPages,
          table: before.table,
          minmax: before.minmax,
          mean: before.mean,
          sums: before.sums,
        } as never,
        'the parent',
      );
    } finally {
      cache.dispose();
    }
  });
});

describe('class 5: int8 pages', () => {
  it('NaN or Inf in k or v is E_NAN naming the argument, and nothing changes', () => {
    const cache = createKvCache(gpu.dev, { Hkv: 1, D: 4, pageSize: 16, dtype: 'int8', gpuBudgetBytes: 1 << 20 });
    try {
      const s = cache.addSequence();
      const rng = new Rng(51);
      cache.append(s, rng.normals(5 * 4), rng.normals(5 * 4));
      const before = snapshot(cache, [s]);
      const ok = rng.normals(2 * 4);
      for (const [bad, where] of [
        [NaN, 'k'],
        [Infinity, 'k'],
        [-Infinity, 'v'],
        [NaN, 'v'],
      ] as const) {
        const k = Float64Array.from(ok);
        const v = Float64Array.from(ok);
        (where === 'k' ? k : v)[5] = bad;
        let err: unknown;
        try {
          cache.append(s, k, v);
        } catch (e) {
          err = e;
        }
        expect(err, `${bad} in ${where}`).toMatchObject({ code: 'E_NAN', argument: where });
        expect((err as Error).message).toContain(`${where}[5]`);
        expectSame(before, snapshot(cache, [s]), `after ${bad} in ${where}`);
      }
    } finally {
      cache.dispose();
    }
  });

  it('appending never changes earlier tokens, even a much larger or smaller one', () => {
    const Hkv = 2;
    const D = 8;
    const P = 16;
    const cache = createKvCache(gpu.dev, { Hkv, D, pageSize: P, dtype: 'int8', gpuBudgetBytes: 1 << 20 });
    try {
      const s = cache.addSequence();
      const rng = new Rng(52);
      let prev: { k: Float32Array; v: Float32Array } = { k: new Float32Array(0), v: new Float32Array(0) };
      for (let t = 0; t < 2 * P + 3; t++) {
        // Magnitudes from 1e-3 to 1e3, one token at a time (decode): a per-page scale would
        // requantise every earlier token of the page when a larger one arrives.
        const mag = 10 ** (3 * Math.sin(t * 1.7));
        const k = rng.normals(Hkv * D).map((x) => x * mag);
        const v = rng.normals(Hkv * D).map((x) => x * mag * 2);
        cache.append(s, k, v);
        const now = cache.read(s, 0, t + 1);
        expect(
          Buffer.from(now.k.buffer, 0, prev.k.byteLength).equals(Buffer.from(prev.k.buffer)),
          `keys before token ${t}`,
        ).toBe(true);
        expect(
          Buffer.from(now.v.buffer, 0, prev.v.byteLength).equals(Buffer.from(prev.v.buffer)),
          `values before token ${t}`,
        ).toBe(true);
        // The new token itself is within int8's step of its own magnitude.
        const got = now.k.subarray(t * Hkv * D);
        for (let h = 0; h < Hkv; h++) {
          const row = Array.from(k.subarray(h * D, (h + 1) * D));
          const amax = Math.max(...row.map(Math.abs));
          row.forEach((x, i) => expect(Math.abs(got[h * D + i]! - x)).toBeLessThanOrEqual(amax / 254 + 1e-6 * amax));
        }
        prev = now;
      }
    } finally {
      cache.dispose();
    }
  });

  for (const target of ['cpu', 'gpu'] as const) {
    it(`streaming over int8 pages of very different token magnitudes equals float64 attention (${target})`, async () => {
      const Hkv = 2;
      const D = 16;
      const cache = createKvCache(gpu.dev, {
        Hkv,
        D,
        pageSize: 32,
        dtype: 'int8',
        tilePages: 4,
        gpuBudgetBytes: 1 << 20,
      });
      try {
        const s = cache.addSequence();
        const rng = new Rng(53);
        const T = 300;
        for (let t = 0; t < T; t++) {
          const mag = 10 ** (1.5 * Math.sin(t * 0.37));
          cache.append(
            s,
            rng.normals(Hkv * D).map((x) => x * mag * 0.2),
            rng.normals(Hkv * D).map((x) => x * mag),
          );
        }
        const Hq = 4;
        const Tq = 3;
        const q = rng.normals(Tq * Hq * D);
        const got = await streamAttention(cache, s, q, { Hq, Tq, target });
        const { k, v } = cache.read(s, 0, T);
        const ref = streamAttentionReference(q, k, v, { Tq, Tk: T, Hq, Hkv, D });
        const c = compare(got.o, ref.o);
        expect(passes(c, TOLERANCE.f32), describeComparison(c)).toBe(true);
        expect(passes(compare(got.lse, ref.lse), TOLERANCE.f32)).toBe(true);
      } finally {
        cache.dispose();
      }
    });
  }
});

describe('class 8: one cache per backing store', () => {
  it('a second live cache on the same store object is E_STATE naming store; moveTo hands it over, dispose frees it', () => {
    const store = new MemoryStore({ align: 16 });
    const opts = { Hkv: 1, D: 4, pageSize: 16, gpuBudgetBytes: 1 << 20, store };
    const a = createKvCache(gpu.dev, opts);
    let b: KvCache | undefined;
    try {
      const s = a.addSequence();
      const rng = new Rng(61);
      a.append(s, rng.normals(20 * 4), rng.normals(20 * 4));
      const before = a.read(s, 0, 20);
      expect(() => createKvCache(gpu.dev, opts)).toThrow(
        expect.objectContaining({ code: 'E_STATE', argument: 'store' }),
      );
      expect(Array.from(a.read(s, 0, 20).k)).toEqual(Array.from(before.k)); // untouched
      b = a.moveTo(gpu.dev);
      expect(() => createKvCache(gpu.dev, opts)).toThrow(
        expect.objectContaining({ code: 'E_STATE', argument: 'store' }),
      );
      expect(Array.from(b.read(s, 0, 20).k)).toEqual(Array.from(before.k));
      b.dispose();
      const c = createKvCache(gpu.dev, opts); // free again
      c.dispose();
    } finally {
      a.dispose();
      b?.dispose();
    }
  });

  it('a second FileStore on the same file is E_STATE naming path, and leaves the first intact', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-claims-'));
    const path = join(dir, 'kv.bin');
    const cache = createKvCache(gpu.dev, {
      Hkv: 1,
      D: 4,
      pageSize: 16,
      gpuBudgetBytes: 1 << 20,
      store: new FileStore({ path }),
    });
    try {
      const s = cache.addSequence();
      const rng = new Rng(62);
      cache.append(s, rng.normals(40 * 4), rng.normals(40 * 4));
      const before = cache.read(s, 0, 40);
      expect(() => new FileStore({ path })).toThrow(expect.objectContaining({ code: 'E_STATE', argument: 'path' }));
      expect(() => new FileStore({ path: join(dir, '.', '..', dir.split('/').pop()!, 'kv.bin') })).toThrow(
        expect.objectContaining({ code: 'E_STATE', argument: 'path' }),
      );
      // The refused store did not truncate the file: every page still verifies and reads back.
      expect(cache.verifyStore()).toBe(cache.numPages);
      expect(Array.from(cache.read(s, 0, 40).v)).toEqual(Array.from(before.v));
      expect(readFileSync(`${path}.lock`, 'utf8')).toBe(String(process.pid));
      cache.dispose();
      expect(existsSync(`${path}.lock`), 'the lock goes with its store').toBe(false);
      const again = new FileStore({ path }); // closed with its cache: free again
      again.close();
    } finally {
      cache.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("across processes: a live process's lock file is E_STATE naming path; a dead one's is taken over", () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-lock-'));
    const path = join(dir, 'kv.bin');
    try {
      // A live process that is not this one: the parent (vitest's runner).
      writeFileSync(`${path}.lock`, String(process.ppid));
      expect(() => new FileStore({ path })).toThrow(expect.objectContaining({ code: 'E_STATE', argument: 'path' }));
      expect(existsSync(path), 'the refused store did not create or truncate the file').toBe(false);
      // A process that has exited: its lock is stale.
      const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], {
        encoding: 'utf8',
      });
      writeFileSync(`${path}.lock`, child.stdout);
      const store = new FileStore({ path });
      expect(readFileSync(`${path}.lock`, 'utf8')).toBe(String(process.pid));
      store.close();
      expect(existsSync(`${path}.lock`)).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
