import { mkdtempSync, openSync, readSync, rmSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { useGpu } from './helpers/gpu.js';
import { TesseraError } from '../src/errors.js';
import { Rng, TOLERANCE, compare, describeComparison, passes } from '../src/testing.js';
import { createKvCache, type KvCache } from '../src/kv/cache.js';
import type { KvDType } from '../src/kv/codec.js';
import { FileManifest, FileStore } from '../src/kv/file-store.js';
import { MemoryManifest, OpfsManifest, decodeManifest, type ManifestStore } from '../src/kv/manifest.js';
import { openKvCache, persistKvCache, verifyKvCache } from '../src/kv/session.js';
import { pageCounts } from '../src/kv/refs.js';
import { OpfsStore, type Store, type SyncAccessHandleLike } from '../src/kv/store.js';
import { planCascadeDecode, questSharedSelection, sharedPrefixPages } from '../src/stream/cascade.js';
import { streamAttentionReference } from '../kernels/paged/reference.js';
import { f16BitsToF32 } from '../src/tensor.js';
import { tier } from './helpers/tier.js';

const gpu = useGpu();

function expectError(fn: () => unknown, code: string, argument?: string): TesseraError {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, 'expected a TesseraError').toBeInstanceOf(TesseraError);
  expect((err as TesseraError).code, (err as Error).message).toBe(code);
  if (argument) expect((err as TesseraError).argument).toBe(argument);
  return err as TesseraError;
}

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function tmpPath(): string {
  const d = mkdtempSync(join(tmpdir(), 'tessera-agents-'));
  dirs.push(d);
  return join(d, 'kv.bin');
}

/** Rows `[T, Hkv, W]` of a deterministic stream (token t's values depend only on t and the seed). */
function rows(seed: number, t0: number, T: number, width: number): Float64Array {
  const out = new Float64Array(T * width);
  for (let t = 0; t < T; t++) {
    const r = new Rng(seed * 1_000_003 + t0 + t + 1);
    out.set(r.normals(width), t * width);
  }
  return out;
}

function appendTokens(cache: KvCache, seq: number, seed: number, t0: number, T: number): void {
  cache.append(seq, rows(seed, t0, T, cache.Hkv * cache.D), rows(seed + 7, t0, T, cache.Hkv * cache.Dv));
}

function expectSameTokens(a: KvCache, sa: number, b: KvCache, sb: number): void {
  expect(b.length(sb)).toBe(a.length(sa));
  const x = a.read(sa, 0, a.length(sa));
  const y = b.read(sb, 0, b.length(sb));
  expect(Array.from(y.k)).toEqual(Array.from(x.k));
  expect(Array.from(y.v)).toEqual(Array.from(x.v));
}

const small = { Hkv: 2, D: 8, Dv: 12, pageSize: 16, gpuBudgetBytes: 1 << 20 };

describe('fork, truncate, free: reference counts', () => {
  for (const dtype of ['f16', 'int8'] as const) {
    it(`${dtype}: fork shares full pages, copies only the partial one; rewind and free release exactly`, () => {
      const cache = createKvCache(gpu.dev, { ...small, dtype });
      try {
        const base = cache.addSequence();
        appendTokens(cache, base, 1, 0, 70); // 4 full pages + 6 tokens
        expect(cache.pages(base).length).toBe(5);
        const a = cache.fork(base);
        const b = cache.fork(base);
        expect(cache.length(a)).toBe(70);
        // Full pages shared (3 references each), the partial page copied per fork.
        for (let i = 0; i < 4; i++) expect(cache.refCount(cache.pages(base)[i]!)).toBe(3);
        expect(cache.pages(a).slice(0, 4)).toEqual(cache.pages(base).slice(0, 4));
        expect(cache.pages(a)[4]).not.toBe(cache.pages(base)[4]);
        expect(cache.refCount(cache.pages(a)[4]!)).toBe(1);
        expect(pageCounts(cache)).toEqual({ live: 7, shared: 4, free: 0 });
        expectSameTokens(cache, base, cache, a);
        // Independent appends.
        appendTokens(cache, a, 2, 70, 30);
        appendTokens(cache, b, 3, 70, 5);
        appendTokens(cache, base, 4, 70, 1);
        const ref = createKvCache(gpu.dev, { ...small, dtype });
        try {
          const ra = ref.addSequence();
          appendTokens(ref, ra, 1, 0, 70);
          appendTokens(ref, ra, 2, 70, 30);
          if (dtype === 'f16') expectSameTokens(ref, ra, cache, a);
          else {
            // int8 requantises pages as they fill: compare within the int8 step.
            const x = ref.read(ra, 0, 100).k;
            const y = cache.read(a, 0, 100).k;
            expect(compare(y, x).maxAbs).toBeLessThan(0.05);
          }
          // Rewind a by 40 tokens (into a shared page) and re-append: equals a fresh sequence.
          cache.truncate(a, 60);
          expect(cache.length(a)).toBe(60);
          expect(cache.refCount(cache.pages(base)[3]!)).toBe(2); // a now has its own trimmed copy of page 3
          expect(cache.pages(a)[3]).not.toBe(cache.pages(base)[3]);
          appendTokens(cache, a, 5, 60, 20);
          const rb = ref.addSequence();
          appendTokens(ref, rb, 1, 0, 60);
          appendTokens(ref, rb, 5, 60, 20);
          if (dtype === 'f16') expectSameTokens(ref, rb, cache, a);
          // The parent is untouched.
          const rc = ref.addSequence();
          appendTokens(ref, rc, 1, 0, 70);
          appendTokens(ref, rc, 4, 70, 1);
          if (dtype === 'f16') expectSameTokens(ref, rc, cache, base);
        } finally {
          ref.dispose();
        }
        // Rewind to a page boundary: no new page.
        const before = cache.numPages;
        cache.truncate(b, 32);
        expect(cache.numPages).toBe(before);
        expect(cache.pages(b)).toEqual(cache.pages(base).slice(0, 2));
        // Free base: its private pages go, shared ones stay for b and a.
        const baseOwn = cache.pages(base).slice(4);
        const shared01 = cache.pages(base).slice(0, 2);
        cache.freeSequence(base);
        for (const p of baseOwn) expect(cache.refCount(p)).toBe(0);
        for (const p of shared01) expect(cache.refCount(p)).toBe(2);
        expectError(() => cache.length(base), 'E_STATE', 'seq');
        expect(cache.pageTable().indptr.length).toBe(3); // two live sequences
        // Freed ids are reused by the next append.
        const free = pageCounts(cache).free;
        expect(free).toBeGreaterThan(0);
        const n0 = cache.numPages;
        appendTokens(cache, b, 6, 32, 16);
        expect(cache.numPages).toBe(n0);
        expect(pageCounts(cache).free).toBe(free - 1);
        cache.freeSequence(a);
        cache.freeSequence(b);
        expect(pageCounts(cache).live).toBe(0);
        expect(cache.stats().residentPages).toBe(0);
        // Bad arguments.
        const c = cache.addSequence();
        appendTokens(cache, c, 1, 0, 10);
        expectError(() => cache.truncate(c, 11), 'E_ARG', 'length');
        expectError(() => cache.truncate(c, -1), 'E_ARG', 'length');
        expectError(() => cache.fork(99), 'E_ARG', 'seq');
      } finally {
        cache.dispose();
      }
    });
  }
});

/** A store that fails (E_IO) once `failAfter` more writes have happened: a crash mid-append. */
class CrashingStore implements Store {
  readonly kind = 'file' as const;
  readonly hostBytes = 0;
  failAfter = Infinity;
  constructor(readonly inner: FileStore) {}
  write(offset: number, src: Uint8Array): void {
    if (this.failAfter-- <= 0) throw new TesseraError('E_IO', 'simulated crash');
    this.inner.write(offset, src);
  }
  read(offset: number, dst: Uint8Array): void {
    this.inner.read(offset, dst);
  }
  sync(): void {
    this.inner.sync();
  }
  close(): void {
    this.inner.close();
  }
}

class CrashingManifest implements ManifestStore {
  readonly kind = 'file';
  crash = false;
  constructor(readonly inner: ManifestStore) {}
  read(): Uint8Array | undefined {
    return this.inner.read();
  }
  write(bytes: Uint8Array): void {
    if (this.crash) throw new TesseraError('E_IO', 'simulated crash before the manifest write');
    this.inner.write(bytes);
  }
}

describe('persistent caches', () => {
  for (const dtype of ['f16', 'f32', 'int8'] as const) {
    it(`${dtype}: close and reopen, then keep appending`, () => {
      const path = tmpPath();
      const store = new FileStore({ path });
      const cache = createKvCache(gpu.dev, { ...small, dtype, store });
      persistKvCache(cache, store.manifest());
      const s0 = cache.addSequence();
      appendTokens(cache, s0, 1, 0, 40);
      const s1 = cache.fork(s0);
      appendTokens(cache, s1, 2, 40, 9);
      const want0 = cache.read(s0, 0, 40);
      const want1 = cache.read(s1, 0, 49);
      cache.dispose();
      const store2 = new FileStore({ path, mode: 'open' });
      let again = openKvCache(gpu.dev, { store: store2, manifest: store2.manifest(), gpuBudgetBytes: 1 << 20 });
      try {
        expect(again.numSequences).toBe(2);
        expect(again.dtype).toBe(dtype);
        expect(Array.from(again.read(s0, 0, 40).k)).toEqual(Array.from(want0.k));
        expect(Array.from(again.read(s1, 0, 49).v)).toEqual(Array.from(want1.v));
        expect(verifyKvCache(again)).toEqual({ checked: pageCounts(again).live, failed: [] });
        expect(again.refCount(again.pages(s0)[0]!)).toBe(2);
        // Appends continue where they stopped (the partial pages were restored).
        appendTokens(again, s1, 3, 49, 20);
        const ref = createKvCache(gpu.dev, { ...small, dtype });
        const r = ref.addSequence();
        appendTokens(ref, r, 1, 0, 40);
        appendTokens(ref, r, 2, 40, 9);
        appendTokens(ref, r, 3, 49, 20);
        if (dtype !== 'int8') expectSameTokens(ref, r, again, s1);
        else expect(compare(again.read(s1, 0, 69).k, ref.read(r, 0, 69).k).maxAbs).toBeLessThan(0.05);
        ref.dispose();
        // A cache moved to another device (device loss) stays persistent.
        again = again.moveTo(gpu.dev);
        again.truncate(s0, 33);
        again.freeSequence(s1);
      } finally {
        again.dispose();
      }
      const store3 = new FileStore({ path, mode: 'open' });
      const third = openKvCache(gpu.dev, { store: store3, manifest: store3.manifest() });
      try {
        expect(third.length(s0)).toBe(33);
        const got = third.read(s0, 0, 33).v;
        const want = want0.v.subarray(0, 33 * small.Hkv * small.Dv);
        if (dtype !== 'int8') expect(Array.from(got)).toEqual(Array.from(want));
        else expect(compare(got, want).maxAbs).toBeLessThan(0.05); // the trimmed page is requantised
        expectError(() => third.length(s1), 'E_STATE', 'seq');
        expect(pageCounts(third).live).toBe(3);
        expect(verifyKvCache(third).failed).toEqual([]);
      } finally {
        third.dispose();
      }
    });
  }

  it('a crash between page writes and the manifest write reopens the previous state', () => {
    const path = tmpPath();
    const file = new FileStore({ path });
    const store = new CrashingStore(file);
    const manifest = new CrashingManifest(new FileManifest(`${path}.manifest`));
    const cache = createKvCache(gpu.dev, { ...small, store });
    persistKvCache(cache, manifest);
    const s = cache.addSequence();
    appendTokens(cache, s, 1, 0, 37); // 2 full pages + 5 tokens: the partial page is committed
    const good = cache.read(s, 0, 37);
    // (a) The pages of the next append are written, then the process dies before the manifest.
    manifest.crash = true;
    expect(() => appendTokens(cache, s, 2, 37, 40)).toThrow(/simulated crash/);
    // (b) And a second kind: the store dies in the middle of an append's page writes.
    manifest.crash = false;
    store.failAfter = 1;
    expect(() => appendTokens(cache, s, 3, 37, 40)).toThrow(/simulated crash/);
    // The process is gone: reopen from the files.
    file.close();
    const store2 = new FileStore({ path, mode: 'open' });
    const again = openKvCache(gpu.dev, { store: store2, manifest: store2.manifest() });
    try {
      expect(again.length(s)).toBe(37);
      const got = again.read(s, 0, 37);
      expect(Array.from(got.k)).toEqual(Array.from(good.k));
      expect(Array.from(got.v)).toEqual(Array.from(good.v));
      expect(verifyKvCache(again).failed).toEqual([]);
      // The reopened cache appends over the abandoned pages.
      appendTokens(again, s, 4, 37, 40);
      expect(again.length(s)).toBe(77);
    } finally {
      again.dispose();
    }
    const store3 = new FileStore({ path, mode: 'open' });
    const third = openKvCache(gpu.dev, { store: store3, manifest: store3.manifest() });
    expect(third.length(s)).toBe(77);
    expect(verifyKvCache(third).failed).toEqual([]);
    third.dispose();
  });

  it('refuses a manifest of another layout, a torn manifest and a newer format', () => {
    const path = tmpPath();
    const store = new FileStore({ path });
    const cache = createKvCache(gpu.dev, { ...small, store });
    persistKvCache(cache, store.manifest());
    appendTokens(cache, cache.addSequence(), 1, 0, 20);
    cache.dispose();
    const open = (o: object, manifest?: ManifestStore) => {
      const st = new FileStore({ path, mode: 'open' });
      try {
        return openKvCache(gpu.dev, { store: st, manifest: manifest ?? st.manifest(), ...o });
      } catch (e) {
        st.close();
        throw e;
      }
    };
    expectError(() => open({ Hkv: 4 }), 'E_SHAPE', 'Hkv');
    expectError(() => open({ D: 16 }), 'E_SHAPE', 'D');
    expectError(() => open({ pageSize: 32 }), 'E_SHAPE', 'pageSize');
    expectError(() => open({ dtype: 'bf16' as KvDType }), 'E_DTYPE', 'dtype');
    const bytes = new FileManifest(`${path}.manifest`).read()!;
    const torn = new MemoryManifest();
    torn.write(bytes.subarray(0, bytes.byteLength - 8));
    expectError(() => open({}, torn), 'E_CORRUPT', 'manifest');
    const flipped = new MemoryManifest();
    const f = bytes.slice();
    f[f.length - 3]! ^= 0x10;
    flipped.write(f);
    expectError(() => open({}, flipped), 'E_CORRUPT', 'manifest');
    const newer = new MemoryManifest();
    const nb = bytes.slice();
    new DataView(nb.buffer).setUint32(8, 99, true);
    newer.write(nb);
    expectError(() => open({}, newer), 'E_UNSUPPORTED', 'manifest');
    expectError(() => open({}, new MemoryManifest()), 'E_IO', 'manifest');
    const ok = open({ Hkv: 2, D: 8, Dv: 12, pageSize: 16, dtype: 'f16' });
    expect(ok.length(0)).toBe(20);
    ok.dispose();
  });

  it('a corrupted page is found on reopen, naming the page', () => {
    const path = tmpPath();
    const store = new FileStore({ path });
    const cache = createKvCache(gpu.dev, { ...small, store });
    persistKvCache(cache, store.manifest());
    const s = cache.addSequence();
    appendTokens(cache, s, 1, 0, 50); // pages 0..3, page 3 partial
    const pb = cache.pageBytes;
    const victim = cache.pages(s)[1]!;
    const tail = cache.pages(s)[3]!;
    cache.dispose();
    const flip = (page: number) => {
      const fd = openSync(path, 'r+');
      const b = new Uint8Array(1);
      readSync(fd, b, 0, 1, page * pb + 5);
      b[0]! ^= 0x40;
      writeSync(fd, b, 0, 1, page * pb + 5);
      closeSync(fd);
    };
    flip(victim);
    const st = new FileStore({ path, mode: 'open' });
    const again = openKvCache(gpu.dev, { store: st, manifest: st.manifest() });
    expect(verifyKvCache(again)).toEqual({ checked: 4, failed: [victim] });
    const e = expectError(() => again.verifyStore(), 'E_CORRUPT', 'page');
    expect(e.actual).toBe(victim);
    expect(e.message).toContain(`page ${victim}`);
    again.dispose();
    // A corrupted partial page fails the reopen itself.
    flip(tail);
    const st2 = new FileStore({ path, mode: 'open' });
    const e2 = expectError(() => openKvCache(gpu.dev, { store: st2, manifest: st2.manifest() }), 'E_CORRUPT', 'page');
    expect(e2.actual).toBe(tail);
    st2.close();
  });

  it('OPFS manifest: two copies, a torn write keeps the last committed one', () => {
    class FakeHandle implements SyncAccessHandleLike {
      bytes = new Uint8Array(0);
      tearAt = -1;
      read(buffer: Uint8Array, o?: { at?: number }): number {
        const at = o?.at ?? 0;
        const n = Math.max(0, Math.min(buffer.byteLength, this.bytes.byteLength - at));
        buffer.set(this.bytes.subarray(at, at + n));
        return n;
      }
      write(buffer: Uint8Array, o?: { at?: number }): number {
        const at = o?.at ?? 0;
        const src = this.tearAt >= 0 ? buffer.subarray(0, this.tearAt) : buffer;
        if (at + src.byteLength > this.bytes.byteLength) {
          const b = new Uint8Array(at + src.byteLength);
          b.set(this.bytes);
          this.bytes = b;
        }
        this.bytes.set(src, at);
        return src.byteLength;
      }
      truncate(n: number): void {
        this.bytes = this.bytes.slice(0, n);
      }
      getSize(): number {
        return this.bytes.byteLength;
      }
      flush(): void {}
      close(): void {}
    }
    const h0 = new FakeHandle();
    const h1 = new FakeHandle();
    const pages = new FakeHandle();

    const cache = createKvCache(gpu.dev, { ...small, store: new OpfsStore(pages) });
    const m = new OpfsManifest(h0, h1);
    persistKvCache(cache, m);
    const s = cache.addSequence();
    appendTokens(cache, s, 1, 0, 20);
    appendTokens(cache, s, 2, 20, 20);
    const gen = decodeManifest(m.read()!).generation;
    expect(gen).toBe(3);
    // The next write tears (the page "reloads" mid-write): the older copy is torn, the newest survives.
    (h0.bytes.byteLength && decodeManifest(h0.bytes).generation === gen ? h1 : h0).tearAt = 30;
    expect(() => appendTokens(cache, s, 3, 40, 5)).toThrow(TesseraError);
    const again = openKvCache(gpu.dev, {
      store: new OpfsStore(pages, { existing: true }),
      manifest: new OpfsManifest(h0, h1),
    });
    try {
      expect(again.length(s)).toBe(40);
      expect(verifyKvCache(again).failed).toEqual([]);
    } finally {
      again.dispose();
    }
  });
});

describe('shared-prefix (cascade) decode', () => {
  for (const target of ['cpu', 'gpu'] as const) {
    const cases = [
      // rows: the most packed rows of the passes (default 8: the shared pass's 6 rows of a KV head
      // in packs of 4, one with 2 empty slots; 1: one row per invocation; 4: the shared pass's 12
      // rows in 3 packs, the private pass's 3 heads in packs of 2, one with an empty slot).
      // (the first two through the cpu shape in the extended tier, npm run test:extended: npm test
      // runs the first through the gpu shape and the third through the cpu shape)
      { Hq: 4, Hkv: 2, D: 32, ctx: 200, priv: [0, 5, 37], P: 16, dtype: 'f16' as KvDType, rows: undefined },
      { Hq: 2, Hkv: 1, D: 16, ctx: 300, priv: [9, 80], P: 128, dtype: 'f16' as KvDType, rows: 1 },
      { Hq: 3, Hkv: 1, D: 12, ctx: 96, priv: [17, 1, 64, 3], P: 32, dtype: 'f32' as KvDType, rows: 4 },
    ];
    // Every case through the cpu shape; one case through the gpu shape (compiles dominate the time).
    for (const c of target === 'cpu' ? cases : [cases[0]!]) {
      const name = `${target}: Hq ${c.Hq}/${c.Hkv}, context ${c.ctx}, private ${c.priv}, ${c.dtype}, rows ${c.rows ?? 'default'}: equals independent attention`;
      it(name, tier(target === 'cpu' && c !== cases[2]), async () => {
        const cache = createKvCache(gpu.dev, {
          Hkv: c.Hkv,
          D: c.D,
          pageSize: c.P,
          dtype: c.dtype,
          gpuBudgetBytes: 1 << 20,
          tilePages: 3,
        });
        try {
          const base = cache.addSequence();
          appendTokens(cache, base, 11, 0, c.ctx);
          const agents = c.priv.map((n, i) => {
            const a = cache.fork(base);
            if (n) appendTokens(cache, a, 20 + i, c.ctx, n);
            return a;
          });
          const m = sharedPrefixPages(cache, agents);
          expect(m).toBe(Math.floor(c.ctx / c.P));
          const n = agents.length;
          const rng = new Rng(5);
          const q = rng.normals(n * c.Hq * c.D);
          const plan = await planCascadeDecode(cache, { Hq: c.Hq, seqs: n, target, tilePages: 3, rows: c.rows });
          try {
            const qt = gpu.tensor(q, [n, c.Hq, c.D]);
            const o = gpu.nanTensor([n, c.Hq, c.D]);
            const lse = gpu.nanTensor([n, c.Hq]);
            const stats = await plan.run(agents, qt, { o, lse });
            const go = await gpu.read(o);
            const gl = await gpu.read(lse);
            const privPages = agents.reduce((acc, a) => acc + cache.pages(a).length - m, 0);
            expect(stats.sharedPages).toBe(m);
            expect(stats.privatePages).toBe(privPages);
            expect(stats.kvBytesRead).toBe((m + privPages) * cache.pageBytes);
            agents.forEach((a, i) => {
              const T = cache.length(a);
              const { k, v } = cache.read(a, 0, T);
              const ref = streamAttentionReference(q.subarray(i * c.Hq * c.D, (i + 1) * c.Hq * c.D), k, v, {
                Tq: 1,
                Tk: T,
                Hq: c.Hq,
                Hkv: c.Hkv,
                D: c.D,
              });
              const co = compare(go.subarray(i * c.Hq * c.D, (i + 1) * c.Hq * c.D), ref.o);
              const cl = compare(gl.subarray(i * c.Hq, (i + 1) * c.Hq), ref.lse);
              expect(passes(co, TOLERANCE.f32), `agent ${i} o: ${describeComparison(co)}`).toBe(true);
              expect(passes(cl, TOLERANCE.f32), `agent ${i} lse: ${describeComparison(cl)}`).toBe(true);
            });
            // Sparse: a shared selection per KV head; the result equals attention over exactly
            // the selected shared pages plus the private suffix.
            const budgetPages = 4;
            const selq = questSharedSelection(cache, agents, q, {
              Hq: c.Hq,
              budgetPages,
              sharedPages: m,
              f16ToF32: f16BitsToF32,
            });
            expect(selq.shared.length).toBe(c.Hkv);
            for (const s of selq.shared) expect(s.length).toBe(Math.min(budgetPages, m));
            expect(selq.recall).toBeGreaterThan(0);
            expect(selq.recall).toBeLessThanOrEqual(1);
            // The recall is what it claims: the shared set against each agent's own selection.
            let hit = 0;
            let all = 0;
            selq.perSeq.forEach((heads) =>
              heads.forEach((own, h) => own.forEach((x) => ((all += 1), (hit += selq.shared[h]!.includes(x) ? 1 : 0)))),
            );
            expect(selq.recall).toBeCloseTo(hit / all, 12);
            const uni = questSharedSelection(cache, agents, q, {
              Hq: c.Hq,
              budgetPages,
              sharedPages: m,
              mode: 'union',
              f16ToF32: f16BitsToF32,
            });
            expect(uni.recall).toBe(1);
            uni.shared.forEach((s, h) =>
              expect(Array.from(s)).toEqual(
                [...new Set(uni.perSeq.flatMap((p) => Array.from(p[h]!)))].sort((a, b) => a - b),
              ),
            );
            const o2 = gpu.nanTensor([n, c.Hq, c.D]);
            const st2 = await plan.run(agents, qt, { o: o2 }, { sharedSelection: selq.shared });
            expect(st2.sharedEntries).toBe(selq.shared.reduce((x, s) => x + s.length, 0));
            const g2 = await gpu.read(o2);
            const group = c.Hq / c.Hkv;
            agents.forEach((a, i) => {
              const T = cache.length(a);
              const { k, v } = cache.read(a, 0, T);
              for (let hq = 0; hq < c.Hq; hq++) {
                const h = Math.floor(hq / group);
                const keep = new Set(selq.shared[h]);
                const idx: number[] = [];
                for (let t = 0; t < T; t++) if (t >= m * c.P || keep.has(Math.floor(t / c.P))) idx.push(t);
                const kk = new Float64Array(idx.length * c.D);
                const vv = new Float64Array(idx.length * c.D);
                idx.forEach((t, j) => {
                  kk.set(k.subarray((t * c.Hkv + h) * c.D, (t * c.Hkv + h + 1) * c.D), j * c.D);
                  vv.set(v.subarray((t * c.Hkv + h) * c.D, (t * c.Hkv + h + 1) * c.D), j * c.D);
                });
                const qh = q.subarray((i * c.Hq + hq) * c.D, (i * c.Hq + hq + 1) * c.D);
                const ref = streamAttentionReference(qh, kk, vv, {
                  Tq: 1,
                  Tk: idx.length,
                  Hq: 1,
                  Hkv: 1,
                  D: c.D,
                  scale: 1 / Math.sqrt(c.D),
                });
                const co = compare(g2.subarray((i * c.Hq + hq) * c.D, (i * c.Hq + hq + 1) * c.D), ref.o);
                expect(passes(co, TOLERANCE.f32), `sparse agent ${i} head ${hq}: ${describeComparison(co)}`).toBe(true);
              }
            });
          } finally {
            plan.dispose();
          }
        } finally {
          cache.dispose();
        }
      });
    }
  }
});

describe('tessera demo agents (short)', () => {
  it('builds, reopens in a child process, forks, rewinds, decodes shared and unshared', async () => {
    const { runAgents } = await import('../src/demo/agents.js');
    const r = await runAgents(gpu.dev, {
      context: 2000,
      agents: 3,
      privateTokens: 100,
      rewind: 40,
      steps: 2,
      questPages: 4,
      gpuBudgetMiB: 16,
      quiet: true,
    });
    expect(r.context).toBe(2000);
    expect(r.reopened).toBe(true);
    expect(r.checksumsChecked).toBe(Math.ceil(2000 / 64));
    expect(r.checksumsFailed).toBe(0);
    expect(r.sampleTokensChecked).toBe(4096);
    expect(r.sampleTokensMismatched).toBe(0);
    // 2000 tokens = 31 full pages + 16 tokens: each fork copies exactly the partial page.
    expect(r.pagesShared).toBe(31);
    expect(r.bytesCopiedOnFork).toBe(3 * r.pageBytes);
    expect(r.rewindOk).toBe(true);
    expect(r.relRmsSharedVsUnshared).toBeLessThanOrEqual(1e-6);
    // 2100 tokens per agent = 33 pages. Shared: 31 pages once + each agent's 2 private pages;
    // unshared: every agent's 33 pages.
    expect(r.sharedBytesReadPerStep).toBe((31 + 3 * 2) * r.pageBytes);
    expect(r.unsharedBytesReadPerStep).toBe(3 * 33 * r.pageBytes);
    expect(r.questRecall).toBeGreaterThan(0);
    expect(r.questRecall).toBeLessThanOrEqual(1);
    expect(r.manifestCommits).toBeGreaterThan(0);
  }, 120_000);
});
