/**
 * Issue 12, class 6: a NaN or Inf in a key or value that a row cannot see must not reach that row.
 * Masked positions are skipped (selected away), never multiplied by zero (0 * NaN = NaN), in every
 * attention family and both kernel shapes. The float64 references skip masked keys, so every row
 * whose reference is finite must match it; rows that do see the planted value must be non-finite
 * (the value propagates, it is never made finite).
 *
 * Plants: the last key / value row (invisible to every earlier causal row: in the same block, in
 * the same 64-row tile of the GPU-shaped kernel), an early row past the sinks (invisible to rows
 * whose sliding window has moved past it), and a block outside a sparse pattern.
 */
import { describe, expect, it } from 'vitest';
import { attentionReference, planAttention, planDecode } from '../kernels/dense/index.js';
import { planSlidingWindow } from '../kernels/sliding_window/index.js';
import { planBlockSparse } from '../kernels/block_sparse/index.js';
import { blockSparseReference } from '../kernels/block_sparse/reference.js';
import { planMoba } from '../kernels/moba/index.js';
import { mobaReference } from '../kernels/moba/reference.js';
import { planNsa } from '../kernels/nsa/index.js';
import { nsaReference } from '../kernels/nsa/reference.js';
import { planDsa } from '../kernels/dsa/index.js';
import { dsaReference } from '../kernels/dsa/reference.js';
import { planMerge } from '../kernels/merge/index.js';
import { createKvCache } from '../src/kv/cache.js';
import { planStreamAttention } from '../src/stream/exact.js';
import { compare, describeComparison, passes, Rng, TOLERANCE } from '../src/testing.js';
import { useGpu } from './helpers/gpu.js';

const gpu = useGpu();

const BAD = [NaN, Infinity, -Infinity] as const;
/**
 * Whether a NaN score (a planted non-finite KEY) must reach the rows that see it. Mesa llvmpipe
 * (OpenGL ES) may drop a NaN score in max() (WGSL allows it), so there a visible non-finite key
 * can leave a row finite: not checked there (found by this test; see docs/reliability.md). The
 * rows that cannot see the key must match the reference on every adapter.
 */
const KEY_NAN_PROPAGATES = process.env.TESSERA_ADAPTER !== 'llvmpipe';
const VARIANTS = ['cpu', 'gpu'] as const;

/** Sets every element of rows `rows` (of `width` elements each) of `x` to `value`. */
function plant(x: ArrayLike<number>, rows: number[], width: number, value: number): Float64Array {
  const y = Float64Array.from(x);
  for (const r of rows) y.fill(value, r * width, (r + 1) * width);
  return y;
}

/**
 * Elements whose reference is finite must match it (f32 tolerance); elements whose reference is
 * not finite must not be finite either. Returns how many rows of `width` were finite / not.
 */
function checkAgainst(
  got: Float64Array,
  ref: ArrayLike<number>,
  width: number,
  what: string,
  requirePropagation = true,
): { finite: number; nonFinite: number } {
  const g: number[] = [];
  const r: number[] = [];
  let finite = 0;
  let nonFinite = 0;
  for (let row = 0; row < ref.length / width; row++) {
    let rowFinite = true;
    for (let d = 0; d < width; d++) if (!Number.isFinite(ref[row * width + d]!)) rowFinite = false;
    if (rowFinite) {
      finite++;
      for (let d = 0; d < width; d++) {
        g.push(got[row * width + d]!);
        r.push(ref[row * width + d]!);
      }
    } else {
      nonFinite++;
      const someNonFinite = Array.from(got.subarray(row * width, (row + 1) * width)).some((x) => !Number.isFinite(x));
      if (requirePropagation)
        expect(someNonFinite, `${what}: row ${row} sees the planted value in the reference but is finite`).toBe(true);
    }
  }
  const c = compare(g, r);
  expect(passes(c, TOLERANCE.f32), `${what}: rows that cannot see the planted value: ${describeComparison(c)}`).toBe(
    true,
  );
  expect(finite, `${what}: some rows cannot see the planted value`).toBeGreaterThan(0);
  return { finite, nonFinite };
}

async function submit(run: (enc: GPUCommandEncoder) => void): Promise<void> {
  await gpu.dev.scoped('masked-nonfinite', async () => {
    const enc = gpu.dev.device.createCommandEncoder();
    run(enc);
    await gpu.dev.submitAndWait([enc.finish()]);
  });
}

describe('dense / sliding window prefill: a non-finite key or value never reaches rows that cannot see it', () => {
  interface C {
    T: number;
    D: number;
    window?: number;
    sinks?: number;
    plantRow: (T: number) => number;
    tensor: 'k' | 'v';
  }
  const cases: (C & { name: string })[] = [
    { name: 'last value, T 70 (crosses a 64-row tile)', T: 70, D: 16, plantRow: (T) => T - 1, tensor: 'v' },
    { name: 'last key, T 70', T: 70, D: 16, plantRow: (T) => T - 1, tensor: 'k' },
    { name: 'value 40 of 45 (same tile, same block)', T: 45, D: 8, plantRow: () => 40, tensor: 'v' },
    {
      name: 'window 8 sinks 2: value 5 (past the sinks)',
      T: 77,
      D: 16,
      window: 8,
      sinks: 2,
      plantRow: () => 5,
      tensor: 'v',
    },
    { name: 'window 16: key 3', T: 90, D: 8, window: 16, plantRow: () => 3, tensor: 'k' },
  ];
  for (const target of VARIANTS) {
    for (const c of cases) {
      for (const bad of BAD) {
        it(`${target}: ${c.name} = ${bad}`, async () => {
          const Hq = 2,
            Hkv = 1,
            D = c.D,
            T = c.T;
          const rng = new Rng(T * 3 + D);
          const q = rng.normals(T * Hq * D).map(Math.fround);
          let k: Float64Array = rng.normals(T * Hkv * D).map(Math.fround);
          let v: Float64Array = rng.normals(T * Hkv * D).map(Math.fround);
          const row = c.plantRow(T);
          if (c.tensor === 'k') k = plant(k, [row], Hkv * D, bad);
          else v = plant(v, [row], Hkv * D, bad);
          const ref = attentionReference(q, k, v, {
            Tq: T,
            Hq,
            Hkv,
            D,
            causal: true,
            window: c.window,
            sinks: c.sinks,
          });
          const o = gpu.nanTensor([T, Hq, D]);
          const lse = gpu.nanTensor([T, Hq]);
          const plan = c.window
            ? await planSlidingWindow(gpu.dev, { Tq: T, Hq, Hkv, D, window: c.window, sinks: c.sinks, target })
            : await planAttention(gpu.dev, { Tq: T, Hq, Hkv, D, target });
          try {
            await submit((enc) =>
              plan.run(enc, {
                q: gpu.tensor(q, [T, Hq, D]),
                k: gpu.tensor(k, [T, Hkv, D]),
                v: gpu.tensor(v, [T, Hkv, D]),
                o,
                lse,
              }),
            );
          } finally {
            plan.dispose();
          }
          const n = checkAgainst(await gpu.read(o), ref.o, D, 'o', c.tensor === 'v' || KEY_NAN_PROPAGATES);
          expect(n.nonFinite, 'rows that see the planted value propagate it').toBeGreaterThan(0);
          checkAgainst(await gpu.read(lse), ref.lse, 1, 'lse', c.tensor === 'v' || KEY_NAN_PROPAGATES);
        });
      }
    }
  }
});

describe('dense / sliding window decode: a non-finite key or value outside the window is skipped', () => {
  for (const target of VARIANTS) {
    for (const bad of BAD) {
      for (const tensor of ['k', 'v'] as const) {
        it(`${target}: ${tensor}[4] = ${bad}, window 32, sinks 2, kvLens [100, 37]`, async () => {
          const Hq = 2,
            Hkv = 1,
            D = 16,
            kvLens = [100, 37],
            W = 32,
            S = 2;
          const rng = new Rng(11);
          const Tk = kvLens[0]! + kvLens[1]!;
          const q = rng.normals(2 * Hq * D).map(Math.fround);
          let k: Float64Array = rng.normals(Tk * Hkv * D).map(Math.fround);
          let v: Float64Array = rng.normals(Tk * Hkv * D).map(Math.fround);
          // row 4 of sequence 0 (outside its window) and row 10 of sequence 1 (visible: 36 - 32 < 10)
          const rows = [4, kvLens[0]! + 10];
          if (tensor === 'k') k = plant(k, rows, Hkv * D, bad);
          else v = plant(v, rows, Hkv * D, bad);
          const refO = new Float64Array(2 * Hq * D);
          let ko = 0;
          kvLens.forEach((n, s) => {
            const r = attentionReference(
              q.subarray(s * Hq * D, (s + 1) * Hq * D),
              k.subarray(ko * D, (ko + n) * D),
              v.subarray(ko * D, (ko + n) * D),
              { Tq: 1, Tk: n, Hq, Hkv, D, window: W, sinks: S },
            );
            refO.set(r.o, s * Hq * D);
            ko += n;
          });
          const o = gpu.nanTensor([2, Hq, D]);
          const plan = await planDecode(gpu.dev, { kvLens, Hq, Hkv, D, window: W, sinks: S, kvChunk: 16, target });
          try {
            await submit((enc) =>
              plan.run(enc, {
                q: gpu.tensor(q, [2, Hq, D]),
                k: gpu.tensor(k, [Tk, Hkv, D]),
                v: gpu.tensor(v, [Tk, Hkv, D]),
                o,
              }),
            );
          } finally {
            plan.dispose();
          }
          const n = checkAgainst(await gpu.read(o), refO, D, 'o', tensor === 'v' || KEY_NAN_PROPAGATES);
          expect(n.nonFinite).toBe(Hq);
        });
      }
    }
  }
});

describe("block-sparse, MoBA, NSA, DSA: a non-finite key or value outside a row's blocks or past its position is skipped", () => {
  const Hq = 2,
    Hkv = 1,
    D = 16;
  /** Inputs with `bad` planted in rows `rows` of k or v. */
  function inputs(T: number, tensor: 'k' | 'v', rows: number[], bad: number, seed: number) {
    const rng = new Rng(seed);
    const q = rng.normals(T * Hq * D).map(Math.fround);
    let k: Float64Array = rng.normals(T * Hkv * D).map(Math.fround);
    let v: Float64Array = rng.normals(T * Hkv * D).map(Math.fround);
    if (tensor === 'k') k = plant(k, rows, Hkv * D, bad);
    else v = plant(v, rows, Hkv * D, bad);
    return { q, k, v, t: (x: Float64Array, shape: number[]) => gpu.tensor(x, shape) };
  }
  for (const target of VARIANTS) {
    for (const bad of BAD) {
      for (const tensor of ['k', 'v'] as const) {
        it(`block_sparse ${target}: ${tensor} rows 37 (causal, same block) and 18 (a block outside some rows' pattern) = ${bad}`, async () => {
          const T = 45,
            R = 16,
            C = 16;
          // rows 0..15 see block 0; rows 16..31 see block 0 only (not their own block 1); rows 32..44 see blocks 1, 2
          const indptr = [0, 1, 2, 4];
          const indices = [0, 0, 1, 2];
          const x = inputs(T, tensor, [37, 18], bad, 5);
          const ref = blockSparseReference(x.q, x.k, x.v, { Tq: T, Hq, Hkv, D, R, C, indptr, indices, causal: true });
          const o = gpu.nanTensor([T, Hq, D]);
          const lse = gpu.nanTensor([T, Hq]);
          const plan = await planBlockSparse(gpu.dev, {
            Tq: T,
            Hq,
            Hkv,
            D,
            R,
            C,
            indptr,
            indices,
            causal: true,
            target,
          });
          try {
            await submit((enc) =>
              plan.run(enc, { q: x.t(x.q, [T, Hq, D]), k: x.t(x.k, [T, Hkv, D]), v: x.t(x.v, [T, Hkv, D]), o, lse }),
            );
          } finally {
            plan.dispose();
          }
          const n = checkAgainst(await gpu.read(o), ref.o, D, 'o', tensor === 'v' || KEY_NAN_PROPAGATES);
          expect(n.nonFinite).toBeGreaterThan(0);
          checkAgainst(await gpu.read(lse), ref.lse, 1, 'lse', tensor === 'v' || KEY_NAN_PROPAGATES);
        });

        it(`moba ${target}: ${tensor} row 41 of 45 (last block, causal) = ${bad}`, async () => {
          const T = 45,
            blockSize = 8,
            topk = 2;
          const x = inputs(T, tensor, [41], bad, 6);
          const ref = mobaReference(x.q, x.k, x.v, { Tq: T, Hq, Hkv, D, blockSize, topk });
          const o = gpu.nanTensor([T, Hq, D]);
          const plan = await planMoba(gpu.dev, { Tq: T, Hq, Hkv, D, blockSize, topk, target });
          try {
            await submit((enc) =>
              plan.run(enc, { q: x.t(x.q, [T, Hq, D]), k: x.t(x.k, [T, Hkv, D]), v: x.t(x.v, [T, Hkv, D]), o }),
            );
          } finally {
            plan.dispose();
          }
          const n = checkAgainst(await gpu.read(o), ref.o, D, 'o', tensor === 'v' || KEY_NAN_PROPAGATES);
          expect(n.nonFinite).toBeGreaterThan(0);
        });

        it(`nsa ${target}: ${tensor} row 41 of 45 (causal; window 8) = ${bad}`, async () => {
          const T = 45,
            blockSize = 8,
            blockCount = 2,
            window = 8;
          const x = inputs(T, tensor, [41], bad, 7);
          const rng = new Rng(8);
          const gate = () => rng.normals(T * Hq).map((z) => Math.fround(1 / (1 + Math.exp(-z))));
          const gCmp = gate(),
            gSlc = gate(),
            gSwa = gate();
          const ref = nsaReference(
            x.q,
            x.k,
            x.v,
            { gCmp, gSlc, gSwa },
            { T, Hq, Hkv, D, blockSize, blockCount, window },
          );
          const o = gpu.nanTensor([T, Hq, D]);
          const plan = await planNsa(gpu.dev, { Tq: T, Hq, Hkv, D, blockSize, blockCount, window, target });
          try {
            await submit((enc) =>
              plan.run(enc, {
                q: x.t(x.q, [T, Hq, D]),
                k: x.t(x.k, [T, Hkv, D]),
                v: x.t(x.v, [T, Hkv, D]),
                gCmp: x.t(gCmp, [T, Hq]),
                gSlc: x.t(gSlc, [T, Hq]),
                gSwa: x.t(gSwa, [T, Hq]),
                o,
              }),
            );
          } finally {
            plan.dispose();
          }
          const n = checkAgainst(await gpu.read(o), ref.o, D, 'o', tensor === 'v' || KEY_NAN_PROPAGATES);
          expect(n.nonFinite).toBeGreaterThan(0);
        });

        it(`dsa ${target}: ${tensor} row 41 of 45 (causal) = ${bad}`, async () => {
          const T = 45,
            HI = 2,
            DI = 8,
            topk = 20;
          const x = inputs(T, tensor, [41], bad, 9);
          const rng = new Rng(10);
          const qI = rng.normals(T * HI * DI).map(Math.fround),
            kI = rng.normals(T * DI).map(Math.fround),
            w = rng.normals(T * HI, 0.5).map(Math.fround);
          const ref = dsaReference(x.q, x.k, x.v, { qI, kI, w }, { T, Hq, Hkv, D, HI, DI, topk });
          const o = gpu.nanTensor([T, Hq, D]);
          const plan = await planDsa(gpu.dev, { Tq: T, Hq, Hkv, D, HI, DI, topk, target });
          try {
            await submit((enc) =>
              plan.run(enc, {
                q: x.t(x.q, [T, Hq, D]),
                k: x.t(x.k, [T, Hkv, D]),
                v: x.t(x.v, [T, Hkv, D]),
                qI: x.t(qI, [T, HI, DI]),
                kI: x.t(kI, [T, DI]),
                w: x.t(w, [T, HI]),
                o,
              }),
            );
          } finally {
            plan.dispose();
          }
          const n = checkAgainst(await gpu.read(o), ref.o, D, 'o', tensor === 'v' || KEY_NAN_PROPAGATES);
          expect(n.nonFinite).toBeGreaterThan(0);
        });
      }
    }
  }
});

describe("paged partials (streaming over the KV cache) and merge: non-finite values past a row's position or in empty partials are skipped", () => {
  // The paged kernel visits only a row's visible keys (len is cut at the row's position), so there
  // is no masked product to skip. Only the CPU shape here: the GPU shape of the paged kernel did
  // not finish within minutes on SwiftShader for this f32 case on the loaded shared machine
  // (reported, not investigated here).
  for (const target of ['cpu'] as const) {
    for (const bad of BAD) {
      it(`stream ${target}: v of the newest token = ${bad}; the 5 earlier causal queries do not see it`, async () => {
        const Hq = 2,
          Hkv = 1,
          D = 8,
          Tk = 40,
          Tq = 6;
        const rng = new Rng(12);
        const k = rng.normals(Tk * Hkv * D).map(Math.fround);
        const v = plant(rng.normals(Tk * Hkv * D).map(Math.fround), [Tk - 1], Hkv * D, bad);
        const q = rng.normals(Tq * Hq * D).map(Math.fround);
        const ref = attentionReference(q, k, v, { Tq, Tk, Hq, Hkv, D, causal: true });
        const cache = createKvCache(gpu.dev, { Hkv, D, pageSize: 16, dtype: 'f32' });
        try {
          const s = cache.addSequence();
          cache.append(s, Float32Array.from(k), Float32Array.from(v));
          const plan = await planStreamAttention(cache, { Hq, Tq, causal: true, target });
          try {
            const o = gpu.nanTensor([Tq, Hq, D]);
            await plan.run(s, gpu.tensor(q, [Tq, Hq, D]), { o });
            const n = checkAgainst(await gpu.read(o), ref.o, D, 'o');
            expect(n.nonFinite).toBe(Hq);
          } finally {
            plan.dispose();
          }
        } finally {
          cache.dispose();
        }
      });
    }
  }

  for (const bad of BAD) {
    it(`merge: a partial with lse = -inf (saw no key) and o = ${bad} has no weight`, async () => {
      const P = 3,
        rows = 5,
        D = 8;
      const rng = new Rng(13);
      const oParts = rng.normals(P * rows * D).map(Math.fround);
      const lseParts = rng.normals(P * rows).map(Math.fround);
      for (let r = 0; r < rows; r++) {
        lseParts[1 * rows + r] = -Infinity;
        oParts.fill(bad, (1 * rows + r) * D, (1 * rows + r + 1) * D);
      }
      const ref = new Float64Array(rows * D);
      for (let r = 0; r < rows; r++) {
        const m = Math.max(lseParts[r]!, lseParts[2 * rows + r]!);
        const w0 = Math.exp(lseParts[r]! - m),
          w2 = Math.exp(lseParts[2 * rows + r]! - m);
        for (let d = 0; d < D; d++)
          ref[r * D + d] = (w0 * oParts[r * D + d]! + w2 * oParts[(2 * rows + r) * D + d]!) / (w0 + w2);
      }
      const o = gpu.nanTensor([rows, D]);
      const plan = await planMerge(gpu.dev, { parts: P, rows, D });
      try {
        await submit((enc) =>
          plan.run(enc, {
            oParts: gpu.tensor(oParts, [P, rows, D]),
            lseParts: gpu.tensor(lseParts, [P, rows]),
            o,
            lse: gpu.nanTensor([rows]),
          }),
        );
      } finally {
        plan.dispose();
      }
      checkAgainst(await gpu.read(o), ref, D, 'o');
    });
  }
});
