/**
 * fork / truncate / import for int8 pool pages written on the GPU (kernels/append's int8 append):
 * the copy-on-write carries codes and per-token scales, the summary fix decodes with each row's
 * scale, a rewound-then-reappended sequence equals a fresh one bit for bit, and GPU-written int8
 * sequences move into a KvCache (persist, reopen) bit for bit. Every page is also compared with
 * the host codec (`quantizePageInt8`) of the same tokens, and attention with float64.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStore } from '../src/kv/file-store.js';
import { openKvCache, persistKvCache, verifyKvCache } from '../src/kv/session.js';
import { quantizePageInt8 } from '../src/kv/codec.js';
import { useGpu } from './helpers/gpu.js';
import { GPUBufferUsageFlags } from '../src/gpu/flags.js';
import { batchAttentionReference, pageSummaryReference } from '../src/reference.js';
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
  residentPageTable,
  type KvCache,
  type PageLayout,
  type PagePool,
  type StepTables,
} from '../src/index.js';

const g = useGpu();
const [Hq, Hkv, D] = [4, 2, 16];
const TILE = 12;
const usage = GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_SRC | GPUBufferUsageFlags.COPY_DST;

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function code(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return e instanceof TesseraError ? `${e.code} ${e.argument ?? ''}`.trim() : String(e);
  }
  return 'no error';
}

/** An int8 cache whose working set is one pool buffer of TILE pages (the one an engine binds). */
function makeCache(P: number, store?: FileStore): KvCache {
  const cache = createKvCache(g.dev, {
    Hkv,
    D,
    pageSize: P,
    dtype: 'int8',
    tilePages: TILE,
    gpuBudgetBytes: 4 << 20,
    sinkPages: 0,
    recentPages: 0,
    store,
  });
  cache.pool.maxBuffers = 1;
  return cache;
}

async function plans(P: number, maxPages: number, rows: number) {
  const append = await planAppend(g.dev, {
    Hkv,
    D,
    pageSize: P,
    pageDtype: 'int8',
    maxPages,
    maxBatch: 4,
    maxRows: rows,
  });
  const attn = await planBatchAttention(g.dev, {
    maxBatch: 4,
    maxQTokens: 4,
    maxPages: 4 * maxPages,
    poolPages: maxPages,
    Hq,
    Hkv,
    D,
    pageSize: P,
    kvDtype: 'int8',
  });
  const ops = await planPageOps(g.dev, { Hkv, D, pageSize: P, pageDtype: 'int8', maxPages, maxFixes: 4 });
  return { append, attn, ops };
}
type Plans = Awaited<ReturnType<typeof plans>>;

const rows = (rng: Rng, n: number) => Float32Array.from(rng.normals(n * Hkv * D));
const cat = (...xs: Float32Array[]) => {
  const c = new Float32Array(xs.reduce((n, x) => n + x.length, 0));
  let o = 0;
  for (const x of xs) {
    c.set(x, o);
    o += x.length;
  }
  return c;
};

/** Rows `[n, Hkv, D]` as an int8 page stores them: `round(x * 127 / s) / 127 * s` per (token, head). */
function int8Values(x: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  for (let o = 0; o < x.length; o += D) {
    let s = 0;
    for (let i = 0; i < D; i++) s = Math.max(s, Math.abs(x[o + i]!));
    for (let i = 0; i < D; i++) out[o + i] = s > 0 ? ((Math.round((x[o + i]! * 127) / s) + 0) / 127) * s : 0; // + 0: a code is never -0
  }
  return out;
}

/** The host codec's page `j` of a sequence with rows `k`, `v` ([T, Hkv, D]) and its row count. */
function hostPage(L: PageLayout, k: Float32Array, v: Float32Array, j: number): { page: Uint8Array; len: number } {
  const P = L.pageSize;
  const T = k.length / (Hkv * D);
  const len = Math.min(P, T - j * P);
  const kh = new Float32Array(Hkv * P * D);
  const vh = new Float32Array(Hkv * P * D);
  for (let r = 0; r < len; r++)
    for (let h = 0; h < Hkv; h++)
      for (let d = 0; d < D; d++) {
        kh[(h * P + r) * D + d] = k[((j * P + r) * Hkv + h) * D + d]!;
        vh[(h * P + r) * D + d] = v[((j * P + r) * Hkv + h) * D + d]!;
      }
  const page = new Uint8Array(L.pageBytes);
  quantizePageInt8(page, L, kh, vh, len);
  return { page, len };
}

/** What rows [0, len) of an int8 page are: each head's K and V codes, then their K and V scales. */
function rowBytes(L: PageLayout, page: Uint8Array, len: number): number[] {
  const out: number[] = [];
  for (let h = 0; h < Hkv; h++) {
    out.push(...page.subarray(h * L.kHeadBytes, h * L.kHeadBytes + len * D));
    out.push(...page.subarray(L.vOffset + h * L.vHeadBytes, L.vOffset + h * L.vHeadBytes + len * D));
  }
  for (let b = 0; b < 2 * Hkv; b++) {
    const o = L.scaleOffset + 4 * b * L.pageSize;
    out.push(...page.subarray(o, o + 4 * len));
  }
  return out;
}

const pageOf = (L: PageLayout, pool: Uint8Array, p: number) => pool.subarray(p * L.pageBytes, (p + 1) * L.pageBytes);
const sumOf = (sum: Uint16Array, p: number) => Array.from(sum.subarray(p * Hkv * 2 * D, (p + 1) * Hkv * 2 * D));

/**
 * Every page of `seq` holds the host codec's bytes of `k`, `v` (codes and scales of its rows) and,
 * given `sum`, the Quest summary of those rows.
 */
function expectHostCodec(
  L: PageLayout,
  pool: PagePool,
  seq: number,
  bytes: Uint8Array,
  k: Float32Array,
  v: Float32Array,
  sum?: Uint16Array,
): void {
  expect(pool.length(seq) * Hkv * D).toBe(k.length);
  pool.pages(seq).forEach((p, j) => {
    const host = hostPage(L, k, v, j);
    expect(rowBytes(L, pageOf(L, bytes, p), host.len), `seq ${seq} page ${j}`).toEqual(
      rowBytes(L, host.page, host.len),
    );
    if (sum)
      expect(sumOf(sum, p), `seq ${seq} summary ${j}`).toEqual(
        Array.from(pageSummaryReference(host.page, L, host.len)),
      );
  });
}

/** Appends host rows on the GPU through the step's tables (after `pre`'s page ops, if given), one submit. */
function gpuStep(
  p: Plans,
  t: StepTables,
  k: Float32Array,
  v: Float32Array,
  pages: GPUBuffer,
  summaries?: GPUBuffer,
  withOps = false,
): void {
  const n = k.length / (Hkv * D);
  if (n > 0) p.append.schedule(t);
  const enc = g.dev.device.createCommandEncoder();
  if (withOps) p.ops.run(enc, { pages, summaries });
  if (n > 0) p.append.run(enc, { k: g.tensor(k, [n, Hkv, D]), v: g.tensor(v, [n, Hkv, D]), pages, summaries });
  g.dev.device.queue.submit([enc.finish()]);
}

async function decode(
  attn: Plans['attn'],
  tables: { kvIndptr: ArrayLike<number>; kvIndices: ArrayLike<number>; kvLastPageLen: ArrayLike<number> },
  q: Float32Array,
  pages: GPUBuffer,
) {
  const B = tables.kvLastPageLen.length;
  const o = g.nanTensor([B, Hq, D]);
  const lse = g.nanTensor([B, Hq]);
  attn.schedule({ ...tables, qoIndptr: Array.from({ length: B + 1 }, (_, i) => i) });
  const enc = g.dev.device.createCommandEncoder();
  attn.run(enc, { q: g.tensor(q, [B, Hq, D]), o, lse, pages });
  g.dev.device.queue.submit([enc.finish()]);
  return { o: await g.read(o), lse: await g.read(lse) };
}

const readU8 = async (b: GPUBuffer) => new Uint8Array(await g.dev.readback(b));
const readU16 = async (b: GPUBuffer) => new Uint16Array(await g.dev.readback(b));

describe('int8 pool pages: fork, truncate and import on the GPU', () => {
  const P = 16;
  const L = pageLayout(P, Hkv, D, D, 'int8');
  const SUM_BYTES = TILE * Hkv * 2 * D * 2;

  it('fork copies one partial int8 page (codes and scales); both branches append on the GPU, equal the host codec bit for bit and float64 within int8 tolerance', async () => {
    const cache = makeCache(P);
    const p = await plans(P, TILE, 40);
    const pool = cache.pool.slots;
    const pages = cache.pool.buffers[0]!;
    const summaries = g.dev.createBuffer({ size: SUM_BYTES, usage });
    const rng = new Rng(31);
    const parent = pool.addSequence();
    const [k0, v0] = [rows(rng, 37), rows(rng, 37)];
    gpuStep(p, pool.step([{ seq: parent, tokens: 37 }]), k0, v0, pages, summaries);
    const { seq: child, fix } = pool.fork(parent);
    expect(fix).toEqual({ src: pool.pages(parent)[2], dst: pool.pages(child)[2], rows: 5 });
    expect(pool.pages(child).slice(0, 2)).toEqual(pool.pages(parent).slice(0, 2));
    expect(pool.pagesCopied).toBe(1);
    p.ops.schedule([fix!]);
    expect(p.ops.scheduledCopies).toBe(1);
    // The copy and both branches' appends in one encoder, one submit.
    const [ka, va, kb, vb] = [rows(rng, 3), rows(rng, 3), rows(rng, 3), rows(rng, 3)];
    const t = pool.step([
      { seq: parent, tokens: 3 },
      { seq: child, tokens: 3 },
    ]);
    gpuStep(p, t, cat(ka, kb), cat(va, vb), pages, summaries, true);
    const bytes = await readU8(pages);
    const sum = await readU16(summaries);
    const want = [
      { k: cat(k0, ka), v: cat(v0, va) },
      { k: cat(k0, kb), v: cat(v0, vb) },
    ];
    expectHostCodec(L, pool, parent, bytes, want[0]!.k, want[0]!.v, sum);
    expectHostCodec(L, pool, child, bytes, want[1]!.k, want[1]!.v, sum);
    // The copied page holds the parent's 5 rows with their scales; the branches differ after them.
    const [src, dst] = [pool.pages(parent)[2]!, pool.pages(child)[2]!];
    expect(rowBytes(L, pageOf(L, bytes, dst), 5)).toEqual(rowBytes(L, pageOf(L, bytes, src), 5));
    expect(rowBytes(L, pageOf(L, bytes, dst), 8)).not.toEqual(rowBytes(L, pageOf(L, bytes, src), 8));
    // Attention over both branches: float64 over the stored (int8) values, and over the exact rows.
    const q = Float32Array.from(rng.normals(2 * Hq * D));
    const got = await decode(p.attn, pool.tables([parent, child]), q, pages);
    const stored = want.map((w) => ({ k: int8Values(w.k), v: int8Values(w.v) }));
    const refStored = batchAttentionReference(q, stored, [0, 1, 2], { Hq, Hkv, D });
    const refExact = batchAttentionReference(q, want, [0, 1, 2], { Hq, Hkv, D });
    const cs = compare(got.o, refStored.o);
    const ce = compare(got.o, refExact.o);
    console.log(
      `int8 fork: o vs float64 of the stored values rel RMS ${cs.relRms.toExponential(2)}, max ${cs.maxAbs.toExponential(2)};`,
      `vs the exact rows rel RMS ${ce.relRms.toExponential(2)}, max ${ce.maxAbs.toExponential(2)}`,
    );
    expect(cs.relRms).toBeLessThan(1e-5);
    expect(cs.maxAbs).toBeLessThan(1e-5);
    expect(ce.relRms).toBeLessThan(2e-2);
    expect(ce.maxAbs).toBeLessThan(5e-2);
    pool.validate();
    g.dev.destroyBuffer(summaries);
    cache.dispose();
  });

  it('truncate then re-append equals a fresh int8 sequence bit for bit (codes, scales, summaries, attention); a shared page is copied, not changed', async () => {
    const cache = makeCache(P);
    const p = await plans(P, TILE, 64);
    const pool = cache.pool.slots;
    const pages = cache.pool.buffers[0]!;
    const summaries = g.dev.createBuffer({ size: SUM_BYTES, usage });
    const rng = new Rng(35);
    // K of tokens 20.. is 100 times larger: the rewound rows and the re-appended ones have other scales.
    const k = rows(rng, 45).map((x, i) => (i >= 20 * Hkv * D ? 100 * x : x));
    const v = rows(rng, 45);
    const a = pool.addSequence();
    gpuStep(p, pool.step([{ seq: a, tokens: 45 }]), k, v, pages, summaries);
    const other = pool.fork(a); // shares a's pages 0 and 1, copies page 2
    p.ops.schedule([other.fix!]);
    gpuStep(p, pool.step([]), new Float32Array(0), new Float32Array(0), pages, summaries, true);
    const shared = pool.pages(a)[1]!;
    const before = await readU8(pages);
    const sumBefore = await readU16(summaries);
    const { released, fix } = pool.truncate(a, 29);
    expect(released).toBe(1);
    expect(fix!.src).toBe(shared);
    expect(fix!.dst).not.toBe(shared);
    expect(fix!.rows).toBe(13);
    p.ops.schedule([fix!]);
    const [k2, v2] = [rows(rng, 11), rows(rng, 11)];
    const kf = cat(k.subarray(0, 29 * Hkv * D), k2);
    const vf = cat(v.subarray(0, 29 * Hkv * D), v2);
    const fresh = pool.addSequence();
    const t = pool.step([
      { seq: a, tokens: 11 },
      { seq: fresh, tokens: 40 },
    ]);
    gpuStep(p, t, cat(k2, kf), cat(v2, vf), pages, summaries, true);
    const bytes = await readU8(pages);
    const sum = await readU16(summaries);
    const [pa, pf] = [pool.pages(a), pool.pages(fresh)];
    expect(pa.length).toBe(3);
    for (let j = 0; j < 3; j++) {
      const len = Math.min(P, 40 - j * P);
      expect(rowBytes(L, pageOf(L, bytes, pa[j]!), len)).toEqual(rowBytes(L, pageOf(L, bytes, pf[j]!), len));
      expect(sumOf(sum, pa[j]!)).toEqual(sumOf(sum, pf[j]!));
    }
    expectHostCodec(L, pool, a, bytes, kf, vf, sum);
    // The page `other` still holds kept its 16 rows, scales and summary.
    expect(rowBytes(L, pageOf(L, bytes, shared), P)).toEqual(rowBytes(L, pageOf(L, before, shared), P));
    expect(sumOf(sum, shared)).toEqual(sumOf(sumBefore, shared));
    expectHostCodec(L, pool, other.seq, bytes, k, v, sum);
    const q = Float32Array.from(rng.normals(Hq * D));
    const got = await decode(p.attn, pool.tables([a, fresh]), cat(q, q), pages);
    expect(Array.from(got.o.subarray(0, Hq * D))).toEqual(Array.from(got.o.subarray(Hq * D)));
    expect(Array.from(got.lse.subarray(0, Hq))).toEqual(Array.from(got.lse.subarray(Hq)));
    const ref = batchAttentionReference(q, [{ k: int8Values(kf), v: int8Values(vf) }], [0, 1], { Hq, Hkv, D });
    expect(compare(got.o.subarray(0, Hq * D), ref.o).relRms).toBeLessThan(1e-5);
    // An unshared partial last page is fixed in place: its summary covers the 4 kept rows only
    // (tokens 20..28 made the 16-row summary wider).
    const { fix: inPlace } = pool.truncate(fresh, 20);
    expect(inPlace).toEqual({ src: pf[1], dst: pf[1], rows: 4 });
    p.ops.schedule([inPlace!]);
    gpuStep(p, pool.step([]), new Float32Array(0), new Float32Array(0), pages, summaries, true);
    const sum2 = await readU16(summaries);
    const host = hostPage(L, kf.subarray(0, 20 * Hkv * D), vf.subarray(0, 20 * Hkv * D), 1);
    expect(sumOf(sum2, pf[1]!)).toEqual(Array.from(pageSummaryReference(host.page, L, 4)));
    expect(sumOf(sum2, pf[1]!)).not.toEqual(sumOf(sum, pf[1]!));
    pool.validate();
    g.dev.destroyBuffer(summaries);
    cache.dispose();
  });

  it('forked int8 pool sequences move into a disk cache (shared pages once), persist and reopen bit for bit; a row the codec cannot take back is E_UNSUPPORTED', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-pool-int8-'));
    dirs.push(dir);
    const path = join(dir, 'kv.bin');
    const store = new FileStore({ path });
    const cache = makeCache(P, store);
    const p = await plans(P, TILE, 40);
    const pool = cache.pool.slots;
    const pages = cache.pool.buffers[0]!;
    const rng = new Rng(39);
    const a = pool.addSequence();
    const [k0, v0] = [rows(rng, 35), rows(rng, 35)];
    gpuStep(p, pool.step([{ seq: a, tokens: 35 }]), k0, v0, pages);
    const { seq: b, fix } = pool.fork(a);
    p.ops.schedule([fix!]);
    const [ka, va, kb, vb] = [rows(rng, 2), rows(rng, 2), rows(rng, 7), rows(rng, 7)];
    const t = pool.step([
      { seq: a, tokens: 2 },
      { seq: b, tokens: 7 },
    ]);
    gpuStep(p, t, cat(ka, kb), cat(va, vb), pages, undefined, true);
    const poolBytes = await readU8(pages);
    const poolPages = [[...pool.pages(a)], [...pool.pages(b)]];
    const [ca, cb] = await importPoolSequences(cache, [a, b]);
    expect(cache.length(ca!)).toBe(37);
    expect(cache.length(cb!)).toBe(42);
    expect(cache.pages(cb!).slice(0, 2)).toEqual(cache.pages(ca!).slice(0, 2));
    expect(cache.refCount(cache.pages(ca!)[0]!)).toBe(2);
    expect(cache.numPages).toBe(4);
    const want = [
      { k: cat(k0, ka), v: cat(v0, va) },
      { k: cat(k0, kb), v: cat(v0, vb) },
    ];
    // A row whose codes no longer match its scale (all codes 1: none reaches 127 of it) is
    // refused before the cache changes.
    const bad = pool.addSequence();
    gpuStep(p, pool.step([{ seq: bad, tokens: 3 }]), rows(rng, 3), rows(rng, 3), pages);
    const vRow = pool.pages(bad)[0]! * L.pageBytes + L.vOffset + L.vHeadBytes + 2 * D; // V, head 1, row 2
    g.dev.device.queue.writeBuffer(pages, vRow, new Uint8Array(D).fill(1));
    const pagesBefore = cache.numPages;
    const err = await importPoolSequences(cache, [bad]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TesseraError);
    expect(`${(err as TesseraError).code} ${(err as TesseraError).argument}`).toBe('E_UNSUPPORTED seqs[0]');
    expect((err as TesseraError).message).toContain('token 2, KV head 1');
    expect(cache.numPages).toBe(pagesBefore);
    // A scale 10 subnormal steps above 0: code 1 decodes to 0, so the row cannot come back. With a
    // good sequence first in the same call: all or nothing, that one is undone too.
    const tiny = pool.addSequence();
    gpuStep(p, pool.step([{ seq: tiny, tokens: 2 }]), rows(rng, 2), rows(rng, 2), pages);
    const tp = pool.pages(tiny)[0]! * L.pageBytes;
    const codes = new Int8Array(D);
    codes[0] = 127;
    codes[1] = 1;
    g.dev.device.queue.writeBuffer(pages, tp + 1 * D, new Uint8Array(codes.buffer)); // K, head 0, row 1
    g.dev.device.queue.writeBuffer(pages, tp + L.scaleOffset + 4, new Float32Array([10 * 2 ** -149]));
    const tokensBefore = cache.stats().tokens;
    const err2 = await importPoolSequences(cache, [a, tiny]).catch((e: unknown) => e);
    expect(`${(err2 as TesseraError).code} ${(err2 as TesseraError).argument}`).toBe('E_UNSUPPORTED seqs[1]');
    expect((err2 as TesseraError).message).toContain('token 1, KV head 0');
    expect(cache.stats().tokens).toBe(tokensBefore); // the first sequence's import was undone
    expect(cache.refCount(cache.pages(ca!)[0]!)).toBe(2);
    pool.removeSequence(tiny);
    pool.removeSequence(bad);
    pool.removeSequence(a);
    pool.removeSequence(b);
    expect(pool.used).toBe(0);
    persistKvCache(cache, store.manifest());
    cache.dispose();
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
      expect(again.dtype).toBe('int8');
      expect(verifyKvCache(again).failed).toEqual([]);
      [ca!, cb!].forEach((s, i) => {
        const got = again.read(s, 0, again.length(s));
        expect(Array.from(got.k)).toEqual(Array.from(int8Values(want[i]!.k)));
        expect(Array.from(got.v)).toEqual(Array.from(int8Values(want[i]!.v)));
      });
      // Resident again in the reopened cache's pool: every row's codes and scales are the GPU's.
      again.pool.maxBuffers = 1;
      const rt = residentPageTable(again, [ca!, cb!]);
      const slots = await readU8(again.pool.buffers[0]!);
      for (const i of [0, 1]) {
        const n = rt.kvIndptr[i + 1]! - rt.kvIndptr[i]!;
        expect(n).toBe(3);
        for (let j = 0; j < n; j++) {
          const len = j < n - 1 ? P : rt.kvLastPageLen[i]!;
          expect(rowBytes(L, pageOf(L, slots, rt.kvIndices[rt.kvIndptr[i]! + j]!), len)).toEqual(
            rowBytes(L, pageOf(L, poolBytes, poolPages[i]![j]!), len),
          );
        }
      }
      const q = Float32Array.from(rng.normals(2 * Hq * D));
      const got = await decode(p.attn, rt, q, again.pool.buffers[0]!);
      const stored = want.map((w) => ({ k: int8Values(w.k), v: int8Values(w.v) }));
      const ref = batchAttentionReference(q, stored, [0, 1, 2], { Hq, Hkv, D });
      expect(compare(got.o, ref.o).relRms).toBeLessThan(1e-5);
    } finally {
      again.dispose();
    }
  });
});

describe('random int8 pool operations on the GPU', () => {
  it('steps, forks, truncates and removals keep every invariant; every page equals the host codec of its tokens, every summary its rows', async () => {
    const P = 4;
    const CAP = 24;
    const L = pageLayout(P, Hkv, D, D, 'int8');
    const p = await plans(P, CAP, 16);
    const pool = createPagePool({ capacity: CAP, pageSize: P });
    const pages = g.dev.createBuffer({ size: CAP * L.pageBytes, usage });
    const summaries = g.dev.createBuffer({ size: CAP * Hkv * 2 * D * 2, usage });
    const rng = new Rng(43);
    // The host's model: each live sequence's rows.
    const toks = new Map<number, { k: Float32Array; v: Float32Array }>();
    const seen = { step: 0, forkCopy: 0, truncCopy: 0, truncInPlace: 0, refused: 0, checks: 0 };
    const check = async () => {
      const bytes = await readU8(pages);
      const sum = await readU16(summaries);
      for (const [s, x] of toks) expectHostCodec(L, pool, s, bytes, x.k, x.v, sum);
      seen.checks++;
    };
    for (let it = 0; it < 100; it++) {
      const r = rng.next();
      const live = [...toks.keys()];
      const pick = () => live[Math.floor(rng.next() * live.length)]!;
      try {
        if (live.length === 0 || r < 0.1)
          toks.set(pool.addSequence(), { k: new Float32Array(0), v: new Float32Array(0) });
        else if (r < 0.5) {
          const s = pick();
          const n = 1 + Math.floor(rng.next() * 6);
          // Magnitudes from 1e-2 to 1e2, so that rows have very different scales.
          const mag = 10 ** (4 * rng.next() - 2);
          const [k, v] = [rows(rng, n).map((x) => x * mag), rows(rng, n)];
          const t = pool.step([{ seq: s, tokens: n }]);
          gpuStep(p, t, k, v, pages, summaries);
          toks.set(s, { k: cat(toks.get(s)!.k, k), v: cat(toks.get(s)!.v, v) });
          seen.step++;
        } else if (r < 0.7) {
          const s = pick();
          const { seq, fix } = pool.fork(s);
          toks.set(seq, toks.get(s)!);
          if (fix) {
            p.ops.schedule([fix]);
            gpuStep(p, pool.step([]), new Float32Array(0), new Float32Array(0), pages, summaries, true);
            seen.forkCopy++;
          }
        } else if (r < 0.9) {
          const s = pick();
          const to = Math.floor(rng.next() * (pool.length(s) + 1));
          const { fix } = pool.truncate(s, to);
          const x = toks.get(s)!;
          toks.set(s, { k: x.k.slice(0, to * Hkv * D), v: x.v.slice(0, to * Hkv * D) });
          if (fix) {
            p.ops.schedule([fix]);
            gpuStep(p, pool.step([]), new Float32Array(0), new Float32Array(0), pages, summaries, true);
            seen[fix.src === fix.dst ? 'truncInPlace' : 'truncCopy']++;
          }
        } else {
          const s = pick();
          pool.removeSequence(s);
          toks.delete(s);
        }
      } catch (e) {
        // Only a full pool, which changes nothing.
        expect(e).toBeInstanceOf(TesseraError);
        expect((e as TesseraError).code).toBe('E_LIMIT');
        seen.refused++;
      }
      pool.validate();
      if (it % 10 === 9) await check();
    }
    await check();
    console.log('random int8 pool operations:', JSON.stringify(seen));
    for (const k of ['step', 'forkCopy', 'truncCopy', 'truncInPlace'] as const) expect(seen[k], k).toBeGreaterThan(0);
    expect(code(() => pool.validate())).toBe('no error');
    g.dev.destroyBuffer(pages);
    g.dev.destroyBuffer(summaries);
  });
});
