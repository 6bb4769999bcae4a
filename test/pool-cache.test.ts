/**
 * One pool for the 10M-token path and the engine path: the KvCache's GPU working set is a
 * src/pool PagePool (`cache.pool.slots`), so pages streamed in from the host tier and pages an
 * engine appended on the GPU are the same kind of slot, attended by the same core; exact
 * streaming over resident pages encodes into the caller's encoder; and fork / truncate / free
 * work for sequences written on the GPU (copy-on-write and summary fixes inside the encoder).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStore } from '../src/kv/file-store.js';
import { openKvCache, persistKvCache, verifyKvCache } from '../src/kv/session.js';
import { patchMethod, useGpu } from './helpers/gpu.js';
import { GPUBufferUsageFlags } from '../src/gpu/flags.js';
import {
  attentionReference,
  batchAttentionReference,
  pageSummaryReference,
  readPagedSequence,
} from '../src/reference.js';
import { compare, Rng } from '../src/testing.js';
import {
  TesseraError,
  createKvCache,
  createPagePool,
  importPoolSequences,
  pageLayout,
  planAppend,
  planBatchAttention,
  planPageOps,
  planStreamAttention,
  residentPageTable,
  f16BitsToF32,
  f32ToF16Bits,
  type KvCache,
  type PagePool,
  type StepTables,
} from '../src/index.js';

const g = useGpu();
const [Hq, Hkv, D, P] = [4, 2, 16, 16];
const TILE = 12;
const L = pageLayout(P, Hkv, D, D, 'f32');
const SUM_BYTES = TILE * Hkv * 2 * D * 2;

function code(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return e instanceof TesseraError ? `${e.code} ${e.argument ?? ''}`.trim() : String(e);
  }
  return 'no error';
}

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** An f32 cache whose working set is one pool buffer of TILE pages (the one an engine binds). */
function makeCache(store?: FileStore, dtype: 'f32' | 'f16' = 'f32'): KvCache {
  const cache = createKvCache(g.dev, {
    Hkv,
    D,
    pageSize: P,
    dtype,
    tilePages: TILE,
    gpuBudgetBytes: 4 << 20,
    sinkPages: 0,
    recentPages: 0,
    store,
  });
  cache.pool.maxBuffers = 1;
  return cache;
}

async function plans(rows = 8, dtype: 'f32' | 'f16' = 'f32') {
  const append = await planAppend(g.dev, {
    Hkv,
    D,
    pageSize: P,
    pageDtype: dtype,
    maxPages: TILE,
    maxBatch: 4,
    maxRows: rows,
  });
  const attn = await planBatchAttention(g.dev, {
    maxBatch: 4,
    maxQTokens: 4,
    maxPages: 4 * TILE,
    poolPages: TILE,
    Hq,
    Hkv,
    D,
    pageSize: P,
    kvDtype: dtype,
  });
  const ops = await planPageOps(g.dev, { Hkv, D, pageSize: P, pageDtype: dtype, maxPages: TILE, maxFixes: 4 });
  return { append, attn, ops };
}

const usage = GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_SRC | GPUBufferUsageFlags.COPY_DST;

/** Appends host rows `k`, `v` ([n, Hkv, D]) on the GPU through the step's tables, one submit. */
function gpuAppend(
  a: Awaited<ReturnType<typeof plans>>['append'],
  t: StepTables,
  k: Float32Array,
  v: Float32Array,
  pages: GPUBuffer,
  summaries?: GPUBuffer,
): void {
  const kt = g.tensor(k, [k.length / (Hkv * D), Hkv, D]);
  const vt = g.tensor(v, [v.length / (Hkv * D), Hkv, D]);
  a.schedule(t);
  const enc = g.dev.device.createCommandEncoder();
  a.run(enc, { k: kt, v: vt, pages, summaries });
  g.dev.device.queue.submit([enc.finish()]);
}

/** Decode attention for `tables` (one query row per sequence) over `pages`; returns o and lse. */
async function decode(
  attn: Awaited<ReturnType<typeof plans>>['attn'],
  tables: { kvIndptr: ArrayLike<number>; kvIndices: ArrayLike<number>; kvLastPageLen: ArrayLike<number> },
  q: Float32Array,
  pages: GPUBuffer,
) {
  const B = tables.kvLastPageLen.length;
  const qt = g.tensor(q, [B, Hq, D]);
  const o = g.nanTensor([B, Hq, D]);
  const lse = g.nanTensor([B, Hq]);
  attn.schedule({ ...tables, qoIndptr: Array.from({ length: B + 1 }, (_, i) => i) });
  const enc = g.dev.device.createCommandEncoder();
  attn.run(enc, { q: qt, o, lse, pages });
  g.dev.device.queue.submit([enc.finish()]);
  return { o: await g.read(o), lse: await g.read(lse) };
}

const rows = (rng: Rng, n: number) => Float32Array.from(rng.normals(n * Hkv * D));
const cat = (a: Float32Array, b: Float32Array) => {
  const c = new Float32Array(a.length + b.length);
  c.set(a);
  c.set(b, a.length);
  return c;
};

async function poolBytes(cache: KvCache): Promise<Uint8Array> {
  return new Uint8Array(await g.dev.readback(cache.pool.buffers[0]!));
}

/** The K and V bytes of rows [0, len) of page `p` (what a sequence's tokens are). */
function rowBytes(pool: Uint8Array, p: number, len: number): number[] {
  const out: number[] = [];
  for (let h = 0; h < Hkv; h++) {
    for (const base of [h * L.kHeadBytes, L.vOffset + h * L.vHeadBytes]) {
      const o = p * L.pageBytes + base;
      out.push(...pool.subarray(o, o + len * D * 4));
    }
  }
  return out;
}

describe('the KvCache working set is a page pool shared with engines', () => {
  it('pages streamed from the host tier and pages appended on the GPU are slots of one pool, attended by one core', async () => {
    const cache = makeCache();
    const { append, attn } = await plans(24);
    const rng = new Rng(7);
    const pool: PagePool = cache.pool.slots;
    expect(pool.capacity).toBe(TILE);
    // A host sequence (the 10M-token path: host tier, streamed in) and an engine sequence (GPU append).
    const hs = cache.addSequence();
    const hk = rows(rng, 37);
    const hv = rows(rng, 37);
    cache.append(hs, hk, hv);
    const ht = residentPageTable(cache, [hs]);
    expect(Array.from(ht.kvLastPageLen)).toEqual([5]);
    for (const s of ht.kvIndices) expect(pool.refCount(s)).toBe(1); // the cache's residency reference
    const es = pool.addSequence();
    const ek = rows(rng, 21);
    const ev = rows(rng, 21);
    const t = pool.step([{ seq: es, tokens: 21 }]);
    const enginePages = [...pool.pages(es)];
    expect(enginePages.filter((p) => ht.kvIndices.includes(p))).toEqual([]); // distinct slots of one free list
    expect(pool.used).toBe(3 + 2);
    expect(cache.stats().residentPages).toBe(3);
    gpuAppend(append, t, ek, ev, cache.pool.buffers[0]!);
    // One batch of the attention core over both kinds of page.
    const et = pool.tables([es]);
    const tables = {
      kvIndptr: [0, ht.kvIndptr[1]!, ht.kvIndptr[1]! + et.kvIndptr[1]!],
      kvIndices: [...ht.kvIndices, ...et.kvIndices],
      kvLastPageLen: [ht.kvLastPageLen[0]!, et.kvLastPageLen[0]!],
    };
    const q = Float32Array.from(rng.normals(2 * Hq * D));
    const got = await decode(attn, tables, q, cache.pool.buffers[0]!);
    const ref = batchAttentionReference(
      q,
      [
        { k: hk, v: hv },
        { k: ek, v: ev },
      ],
      [0, 1, 2],
      { Hq, Hkv, D },
    );
    const c = compare(got.o, ref.o);
    expect(c.relRms).toBeLessThan(1e-5);
    expect(compare(got.lse, ref.lse).maxAbs).toBeLessThan(1e-4);

    // The cache evicts only its own pages: a request larger than its free and evictable slots is
    // E_LIMIT (engine pages are never candidates), a smaller one evicts host pages only.
    const big = cache.addSequence();
    cache.append(big, rows(rng, 9 * P), rows(rng, 9 * P)); // 9 pages; 12 - 2 engine slots = 10 for the cache
    expect(code(() => cache.ensureResident([...cache.pages(big), ...cache.pages(hs)]))).toBe('E_LIMIT pages');
    cache.ensureResident(cache.pages(big));
    expect(pool.used).toBe(TILE); // 9 new pages: 7 free slots and 2 of hs's evicted
    expect([...pool.pages(es)]).toEqual(enginePages);
    for (const p of enginePages) expect(pool.refCount(p)).toBe(1);
    const again = await decode(
      attn,
      { kvIndptr: et.kvIndptr, kvIndices: et.kvIndices, kvLastPageLen: et.kvLastPageLen },
      q.subarray(Hq * D),
      cache.pool.buffers[0]!,
    );
    expect(Array.from(again.o)).toEqual(Array.from(got.o.subarray(Hq * D))); // the engine's pages survived, bit for bit
    pool.validate();
    // The pool buffer an engine binds never goes away under it.
    expect(cache.pool.addBuffer()).toBe(false);
    expect(cache.pool.removeBuffer()).toBe(false);
    pool.removeSequence(es);
    expect(cache.stats().residentPages).toBe(10);
    pool.validate();
    cache.dispose();
  });
});

describe("exact streaming over resident pages encodes into the caller's encoder", () => {
  for (const [Tq, len, target] of [
    [1, 37, 'cpu'],
    [3, 50, 'cpu'],
    [1, 37, 'gpu'],
    [3, 50, 'gpu'],
  ] as const) {
    it(`${target}: Tq ${Tq}, ${len} tokens: encode() matches float64 and run() bit for bit; non-resident pages are E_STATE`, async () => {
      const cache = makeCache();
      const rng = new Rng(11 + Tq);
      const seq = cache.addSequence();
      const k = rows(rng, len);
      const v = rows(rng, len);
      cache.append(seq, k, v);
      const plan = await planStreamAttention(cache, { Hq, Tq, target });
      const qh = rng.normals(Tq * Hq * D);
      const q = g.tensor(qh, [Tq, Hq, D]);
      const out = () => ({ o: g.nanTensor([Tq, Hq, D]), lse: g.nanTensor([Tq, Hq]) });
      // Nothing resident yet (the host tier): typed, and nothing is encoded.
      const o0 = out();
      const enc0 = g.dev.device.createCommandEncoder();
      expect(code(() => plan.encode(enc0, seq, q, o0))).toBe('E_STATE seq');
      g.dev.device.queue.submit([enc0.finish()]);
      expect((await g.read(o0.o)).every(Number.isNaN)).toBe(true);
      cache.ensureResident(cache.pages(seq));
      const up = cache.pagesUploaded;
      const o1 = out();
      const enc = g.dev.device.createCommandEncoder();
      // No GPU buffer created, nothing awaited (encode is synchronous and returns nothing).
      const device = g.dev.device;
      let created = 0;
      const undo = patchMethod(device, 'createBuffer', (f) => (d) => (created++, f.call(device, d)));
      let ret: unknown;
      try {
        ret = plan.encode(enc, seq, q, o1);
      } finally {
        undo();
      }
      expect(created).toBe(0);
      expect(ret).toBeUndefined();
      // A second encode (or run) before the submit would share the plan's page list: refused.
      expect(code(() => plan.encode(enc, seq, q, out()))).toBe('E_STATE plan');
      await expect(plan.run(seq, q, out())).rejects.toMatchObject({ code: 'E_STATE' });
      g.dev.device.queue.submit([enc.finish()]);
      expect(cache.pagesUploaded).toBe(up); // encode moved no page
      const got = await g.read(o1.o);
      const lse = await g.read(o1.lse);
      const ref = attentionReference(Float32Array.from(qh), k, v, { Tq, Tk: len, Hq, Hkv, D, causal: true });
      expect(compare(got, ref.o).relRms).toBeLessThan(1e-5);
      expect(compare(lse, ref.lse).maxAbs).toBeLessThan(1e-4);
      const o2 = out();
      await plan.run(seq, q, o2);
      expect(Array.from(await g.read(o2.o))).toEqual(Array.from(got));
      expect(Array.from(await g.read(o2.lse))).toEqual(Array.from(lse));
      plan.dispose();
      cache.dispose();
    });
  }

  it('an empty sequence encodes o = 0, lse = -inf; more pages than a tile is E_LIMIT', async () => {
    const cache = makeCache();
    const plan = await planStreamAttention(cache, { Hq, tilePages: 2 });
    const e = cache.addSequence();
    const q = g.tensor(new Float64Array(Hq * D).fill(0.5), [1, Hq, D]);
    const o = { o: g.nanTensor([1, Hq, D]), lse: g.nanTensor([1, Hq]) };
    const enc = g.dev.device.createCommandEncoder();
    plan.encode(enc, e, q, o);
    g.dev.device.queue.submit([enc.finish()]);
    expect(Array.from(await g.read(o.o)).every((x) => x === 0)).toBe(true);
    expect(Array.from(await g.read(o.lse)).every((x) => x === -Infinity)).toBe(true);
    const s = cache.addSequence();
    cache.append(s, new Float32Array(3 * P * Hkv * D).fill(0.25), new Float32Array(3 * P * Hkv * D).fill(1));
    cache.ensureResident(cache.pages(s));
    const enc2 = g.dev.device.createCommandEncoder();
    expect(code(() => plan.encode(enc2, s, q, o))).toBe('E_LIMIT seq');
    enc2.finish();
    plan.dispose();
    cache.dispose();
  });
});

describe('fork / truncate / free for sequences appended on the GPU', () => {
  for (const dtype of ['f32', 'f16'] as const)
    it(`${dtype}: fork shares the full pages and copies one partial page on the GPU; both branches append independently and match float64`, async () => {
      const cache = makeCache(undefined, dtype);
      const { append, attn, ops } = await plans(40, dtype);
      const L = pageLayout(P, Hkv, D, D, dtype);
      // What the pages hold: the rows rounded to the page dtype.
      const st = (x: Float32Array) => (dtype === 'f32' ? x : x.map((e) => f16BitsToF32(f32ToF16Bits(e))));
      const pool = cache.pool.slots;
      const pages = cache.pool.buffers[0]!;
      const summaries = g.dev.createBuffer({ size: SUM_BYTES, usage });
      const rng = new Rng(3);
      const parent = pool.addSequence();
      const k0 = rows(rng, 37);
      const v0 = rows(rng, 37);
      gpuAppend(append, pool.step([{ seq: parent, tokens: 37 }]), k0, v0, pages, summaries);
      const { seq: child, fix } = pool.fork(parent);
      expect(pool.pagesCopied).toBe(1); // 0 bytes copied for the two full pages, one partial page
      expect(fix).toEqual({ src: pool.pages(parent)[2], dst: pool.pages(child)[2], rows: 5 });
      expect(pool.pages(child).slice(0, 2)).toEqual(pool.pages(parent).slice(0, 2));
      for (const p of pool.pages(parent).slice(0, 2)) expect(pool.refCount(p)).toBe(2);
      ops.schedule([fix!]);
      // The copy-on-write and both branches' appends go into one encoder, one submit.
      const [ka, va, kb, vb] = [rows(rng, 3), rows(rng, 3), rows(rng, 3), rows(rng, 3)];
      const t = pool.step([
        { seq: parent, tokens: 3 },
        { seq: child, tokens: 3 },
      ]);
      append.schedule(t);
      const enc = g.dev.device.createCommandEncoder();
      ops.run(enc, { pages, summaries });
      append.run(enc, {
        k: g.tensor(cat(ka, kb), [6, Hkv, D]),
        v: g.tensor(cat(va, vb), [6, Hkv, D]),
        pages,
        summaries,
      });
      g.dev.device.queue.submit([enc.finish()]);
      const q = Float32Array.from(rng.normals(2 * Hq * D));
      const got = await decode(attn, pool.tables([parent, child]), q, pages);
      const ref = batchAttentionReference(
        q,
        [
          { k: st(cat(k0, ka)), v: st(cat(v0, va)) },
          { k: st(cat(k0, kb)), v: st(cat(v0, vb)) },
        ],
        [0, 1, 2],
        { Hq, Hkv, D },
      );
      for (const b of [0, 1]) {
        const c = compare(got.o.subarray(b * Hq * D, (b + 1) * Hq * D), ref.o.subarray(b * Hq * D, (b + 1) * Hq * D));
        expect(c.relRms).toBeLessThan(1e-5);
      }
      // The pool bytes read back equal each branch's tokens, and every page's summary is its rows'.
      const bytes = await poolBytes(cache);
      const tt = pool.tables([parent, child]);
      const seqKv = [0, 1].map((b) => readPagedSequence(bytes, L, tt.kvIndptr, tt.kvIndices, tt.kvLastPageLen, b));
      expect(Array.from(seqKv[0]!.k)).toEqual(Array.from(st(cat(k0, ka))));
      expect(Array.from(seqKv[0]!.v)).toEqual(Array.from(st(cat(v0, va))));
      expect(Array.from(seqKv[1]!.k)).toEqual(Array.from(st(cat(k0, kb))));
      expect(Array.from(seqKv[1]!.v)).toEqual(Array.from(st(cat(v0, vb))));
      const sum = new Uint16Array(await g.dev.readback(summaries));
      for (const s of [parent, child]) {
        pool.pages(s).forEach((p, j) => {
          const len = Math.min(P, pool.length(s) - j * P);
          const want = pageSummaryReference(bytes.subarray(p * L.pageBytes, (p + 1) * L.pageBytes), L, len);
          expect(Array.from(sum.subarray(p * Hkv * 2 * D, (p + 1) * Hkv * 2 * D))).toEqual(Array.from(want));
        });
      }
      pool.validate();
      g.dev.destroyBuffer(summaries);
      cache.dispose();
    });

  it('truncate then re-append equals a fresh sequence bit for bit (pages, summaries, attention); a shared page is copied, not changed', async () => {
    const cache = makeCache();
    const { append, attn, ops } = await plans(64);
    const pool = cache.pool.slots;
    const pages = cache.pool.buffers[0]!;
    const summaries = g.dev.createBuffer({ size: SUM_BYTES, usage });
    const rng = new Rng(5);
    const k = rows(rng, 45);
    const v = rows(rng, 45);
    const a = pool.addSequence();
    gpuAppend(append, pool.step([{ seq: a, tokens: 45 }]), k, v, pages, summaries);
    // A fork that shares a's second page (full at 32 tokens): rewinding a into it must copy.
    const other = pool.fork(a);
    ops.schedule([other.fix!]);
    let enc = g.dev.device.createCommandEncoder();
    ops.run(enc, { pages, summaries });
    g.dev.device.queue.submit([enc.finish()]);
    const shared = pool.pages(a)[1]!;
    const sumBefore = new Uint16Array(await g.dev.readback(summaries));
    const { released, fix } = pool.truncate(a, 29); // into page 1 (13 rows), which `other` shares
    expect(released).toBe(1); // page 2 was a's alone
    expect(fix!.src).toBe(shared);
    expect(fix!.dst).not.toBe(shared);
    expect(fix!.rows).toBe(13);
    expect(pool.refCount(shared)).toBe(1);
    ops.schedule([fix!]);
    // Re-append 11 different tokens after 29, and a fresh sequence gets the same 40 tokens.
    const k2 = rows(rng, 11);
    const v2 = rows(rng, 11);
    const kf = cat(k.subarray(0, 29 * Hkv * D), k2);
    const vf = cat(v.subarray(0, 29 * Hkv * D), v2);
    const fresh = pool.addSequence();
    const t = pool.step([
      { seq: a, tokens: 11 },
      { seq: fresh, tokens: 40 },
    ]);
    append.schedule(t);
    enc = g.dev.device.createCommandEncoder();
    ops.run(enc, { pages, summaries });
    append.run(enc, {
      k: g.tensor(cat(k2, kf), [51, Hkv, D]),
      v: g.tensor(cat(v2, vf), [51, Hkv, D]),
      pages,
      summaries,
    });
    g.dev.device.queue.submit([enc.finish()]);
    const bytes = await poolBytes(cache);
    const sum = new Uint16Array(await g.dev.readback(summaries));
    const pa = pool.pages(a);
    const pf = pool.pages(fresh);
    expect(pa.length).toBe(3);
    const S = Hkv * 2 * D;
    for (let j = 0; j < 3; j++) {
      const len = Math.min(P, 40 - j * P);
      expect(rowBytes(bytes, pa[j]!, len)).toEqual(rowBytes(bytes, pf[j]!, len));
      expect(Array.from(sum.subarray(pa[j]! * S, (pa[j]! + 1) * S))).toEqual(
        Array.from(sum.subarray(pf[j]! * S, (pf[j]! + 1) * S)),
      );
    }
    // The page `other` still holds kept its bytes and its summary (of 16 rows).
    expect(Array.from(sum.subarray(shared * S, (shared + 1) * S))).toEqual(
      Array.from(sumBefore.subarray(shared * S, (shared + 1) * S)),
    );
    const q = Float32Array.from(rng.normals(Hq * D));
    const qq = cat(q, q);
    const got = await decode(attn, pool.tables([a, fresh]), qq, pages);
    expect(Array.from(got.o.subarray(0, Hq * D))).toEqual(Array.from(got.o.subarray(Hq * D)));
    expect(Array.from(got.lse.subarray(0, Hq))).toEqual(Array.from(got.lse.subarray(Hq)));
    const ref = batchAttentionReference(q, [{ k: kf, v: vf }], [0, 1], { Hq, Hkv, D });
    expect(compare(got.o.subarray(0, Hq * D), ref.o).relRms).toBeLessThan(1e-5);
    // An unshared partial last page is fixed in place: its summary covers the kept rows only.
    const { fix: inPlace } = pool.truncate(fresh, 20);
    expect(inPlace).toEqual({ src: pf[1], dst: pf[1], rows: 4 });
    ops.schedule([inPlace!]);
    enc = g.dev.device.createCommandEncoder();
    ops.run(enc, { pages, summaries });
    g.dev.device.queue.submit([enc.finish()]);
    const sum2 = new Uint16Array(await g.dev.readback(summaries));
    const want = pageSummaryReference(bytes.subarray(pf[1]! * L.pageBytes, (pf[1]! + 1) * L.pageBytes), L, 4);
    expect(Array.from(sum2.subarray(pf[1]! * S, (pf[1]! + 1) * S))).toEqual(Array.from(want));
    pool.validate();
    g.dev.destroyBuffer(summaries);
    cache.dispose();
  });

  it('free releases only the pages no other sequence holds; fork and truncate are all or nothing', () => {
    const cache = makeCache();
    const pool = cache.pool.slots;
    const parent = pool.addSequence();
    pool.step([{ seq: parent, tokens: 40 }]); // 3 pages, the last partial
    const { seq: child } = pool.fork(parent);
    pool.step([{ seq: child, tokens: 20 }]); // child: its copy of page 2 filled, one new page
    const before = pool.free;
    const shared = pool.pages(parent).slice(0, 2);
    const own = pool.pages(parent)[2]!;
    pool.removeSequence(parent);
    expect(pool.free).toBe(before + 1); // only the parent's own last page
    expect(pool.refCount(own)).toBe(0);
    for (const p of shared) expect(pool.refCount(p)).toBe(1);
    pool.validate();
    // A fork needing a copy with no free page is E_LIMIT and changes nothing.
    const fill = pool.addSequence();
    pool.step([{ seq: fill, tokens: pool.free * P }]);
    expect(pool.free).toBe(0);
    const used = pool.used;
    expect(code(() => pool.fork(child))).toBe('E_LIMIT seq');
    expect(pool.sequences.length).toBe(2);
    expect(pool.used).toBe(used);
    const full = pool.fork(fill); // whole pages only: nothing to copy, no page needed
    expect(full.fix).toBeUndefined();
    expect(code(() => pool.truncate(full.seq, 3))).toBe('E_LIMIT length');
    expect(pool.length(full.seq)).toBe(pool.length(fill));
    expect(code(() => pool.truncate(child, 61))).toBe('E_ARG length');
    pool.removeSequence(full.seq);
    pool.removeSequence(fill);
    pool.removeSequence(child);
    expect(pool.used).toBe(0);
    pool.validate();
    cache.dispose();
  });

  it('random steps, forks, truncates, window releases and removals keep every invariant; the fixes name what changed', () => {
    const rng = new Rng(21);
    const pool = createPagePool({ capacity: 48, pageSize: 4 });
    const live: number[] = [];
    const seen = { forkCopy: 0, truncCopy: 0, truncInPlace: 0, refused: 0 };
    for (let it = 0; it < 600; it++) {
      const r = rng.next();
      const pick = () => live[Math.floor(rng.next() * live.length)]!;
      try {
        if (live.length === 0 || r < 0.1) live.push(pool.addSequence());
        else if (r < 0.45) pool.step([{ seq: pick(), tokens: Math.floor(rng.next() * 7) }]);
        else if (r < 0.6) {
          const s = pick();
          const len = pool.length(s);
          const used = pool.used;
          let forked;
          try {
            forked = pool.fork(s);
          } catch (e) {
            expect(pool.used).toBe(used); // a refused fork changes nothing
            throw e;
          }
          const { seq, fix } = forked;
          live.push(seq);
          expect(pool.length(seq)).toBe(len);
          if (len % 4)
            expect(fix).toEqual({
              src: pool.pages(s)[pool.pages(s).length - 1],
              dst: pool.pages(seq)[pool.pages(seq).length - 1],
              rows: len % 4,
            });
          else expect(fix).toBeUndefined();
          if (fix) expect(pool.refCount(fix.dst)).toBe(1);
          if (fix) seen.forkCopy++;
        } else if (r < 0.75) {
          const s = pick();
          const to = Math.floor(rng.next() * (pool.length(s) + 1));
          const len = pool.length(s);
          const before = pool.pages(s)[Math.ceil(to / 4) - 1];
          const shared = before !== undefined && before >= 0 && pool.refCount(before) > 1;
          const pagesBefore = [...pool.pages(s)];
          let fix;
          try {
            fix = pool.truncate(s, to).fix;
          } catch (e) {
            expect([...pool.pages(s)]).toEqual(pagesBefore); // a refused rewind changes nothing
            expect(pool.length(s)).toBe(len);
            throw e;
          }
          expect(pool.length(s)).toBe(to);
          expect(fix === undefined).toBe(to % 4 === 0 || to === len);
          if (fix) {
            expect(fix.rows).toBe(to % 4);
            expect(fix.src).toBe(before);
            expect(fix.dst === fix.src).toBe(!shared);
            seen[shared ? 'truncCopy' : 'truncInPlace']++;
            expect(pool.pages(s)[pool.pages(s).length - 1]).toBe(fix.dst);
            expect(pool.refCount(fix.dst)).toBe(1);
          }
        } else if (r < 0.85) pool.releaseOutsideWindow(pick(), { window: 6, sinkTokens: 2 });
        else {
          const i = Math.floor(rng.next() * live.length);
          pool.removeSequence(live[i]!);
          live.splice(i, 1);
        }
      } catch (e) {
        // Only typed refusals that change nothing: a full pool, a rewind into a released page.
        expect(e).toBeInstanceOf(TesseraError);
        expect(['E_LIMIT', 'E_STATE']).toContain((e as TesseraError).code);
        seen.refused++;
      }
      pool.validate();
    }
    for (const s of live) pool.removeSequence(s);
    expect(pool.used).toBe(0);
    for (const [k, n] of Object.entries(seen)) expect(n, k).toBeGreaterThan(0);
  });

  it('page ops validate their schedule and inputs (typed, nothing written)', async () => {
    const { ops } = await plans();
    expect(code(() => ops.schedule([{ src: 0, dst: TILE, rows: 1 }]))).toBe('E_ARG fixes[0].dst');
    expect(code(() => ops.schedule([{ src: 0, dst: 1, rows: 0 }]))).toBe('E_ARG fixes[0].rows');
    expect(
      code(() =>
        ops.schedule([
          { src: 0, dst: 1, rows: 1 },
          { src: 2, dst: 1, rows: 1 },
        ]),
      ),
    ).toBe('E_ARG fixes[1].dst');
    expect(
      code(() =>
        ops.schedule([
          { src: 0, dst: 1, rows: 1 },
          { src: 1, dst: 2, rows: 1 },
        ]),
      ),
    ).toBe('E_ARG fixes[1].src');
    await expect(
      planPageOps(g.dev, { Hkv, D, pageSize: P, pageDtype: 'f8' as 'f16', maxPages: 4 }),
    ).rejects.toMatchObject({ code: 'E_DTYPE', argument: 'pageDtype' });
    await expect(planPageOps(g.dev, { Hkv, D: 6, pageSize: P, maxPages: 4 })).rejects.toMatchObject({
      code: 'E_UNSUPPORTED',
      argument: 'D',
    });
    ops.schedule([]);
    const small = g.dev.createBuffer({ size: 16, usage });
    expect(code(() => ops.run(g.dev.device.createCommandEncoder(), { pages: small }))).toBe('E_BUFFER pages');
    g.dev.destroyBuffer(small);
  });
});

describe('a cache driven from the GPU persists and reopens', () => {
  it('forked pool sequences written on the GPU move to the disk tier (shared pages once), reopen bit for bit, and attend through the core', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-pool-cache-'));
    dirs.push(dir);
    const path = join(dir, 'kv.bin');
    const store = new FileStore({ path });
    const cache = makeCache(store);
    const { append, attn, ops } = await plans(40);
    const pool = cache.pool.slots;
    const pages = cache.pool.buffers[0]!;
    const rng = new Rng(9);
    const a = pool.addSequence();
    const k0 = rows(rng, 35);
    const v0 = rows(rng, 35);
    gpuAppend(append, pool.step([{ seq: a, tokens: 35 }]), k0, v0, pages);
    const { seq: b, fix } = pool.fork(a);
    ops.schedule([fix!]);
    const [ka, va, kb, vb] = [rows(rng, 2), rows(rng, 2), rows(rng, 7), rows(rng, 7)];
    const t = pool.step([
      { seq: a, tokens: 2 },
      { seq: b, tokens: 7 },
    ]);
    append.schedule(t);
    const enc = g.dev.device.createCommandEncoder();
    ops.run(enc, { pages });
    append.run(enc, { k: g.tensor(cat(ka, kb), [9, Hkv, D]), v: g.tensor(cat(va, vb), [9, Hkv, D]), pages });
    g.dev.device.queue.submit([enc.finish()]);
    const [ca, cb] = await importPoolSequences(cache, [a, b]);
    const want = [
      { k: cat(k0, ka), v: cat(v0, va) },
      { k: cat(k0, kb), v: cat(v0, vb) },
    ];
    expect(cache.length(ca!)).toBe(37);
    expect(cache.length(cb!)).toBe(42);
    expect(cache.pages(cb!).slice(0, 2)).toEqual(cache.pages(ca!).slice(0, 2)); // the shared pages stored once
    expect(cache.refCount(cache.pages(ca!)[0]!)).toBe(2);
    expect(cache.numPages).toBe(4); // the 2 shared pages once, and each sequence's own last page
    pool.removeSequence(a);
    pool.removeSequence(b);
    expect(pool.used).toBe(0);
    persistKvCache(cache, store.manifest());
    cache.dispose();
    // A new cache from the file: every checksum holds, the tokens are the GPU's, bit for bit.
    const store2 = new FileStore({ path, mode: 'open' });
    const again = openKvCache(g.dev, {
      store: store2,
      manifest: store2.manifest(),
      tilePages: TILE,
      gpuBudgetBytes: 4 << 20,
      sinkPages: 0,
      recentPages: 0,
    });
    try {
      expect(verifyKvCache(again).failed).toEqual([]);
      [ca!, cb!].forEach((s, i) => {
        const got = again.read(s, 0, again.length(s));
        expect(Array.from(got.k)).toEqual(Array.from(want[i]!.k));
        expect(Array.from(got.v)).toEqual(Array.from(want[i]!.v));
      });
      // Back on the GPU through the engine's core: resident slots of the reopened cache's pool.
      again.pool.maxBuffers = 1;
      const rt = residentPageTable(again, [ca!, cb!]);
      const q = Float32Array.from(rng.normals(2 * Hq * D));
      const got = await decode(attn, rt, q, again.pool.buffers[0]!);
      const ref = batchAttentionReference(q, want, [0, 1, 2], { Hq, Hkv, D });
      expect(compare(got.o, ref.o).relRms).toBeLessThan(1e-5);
    } finally {
      again.dispose();
    }
  });
});
