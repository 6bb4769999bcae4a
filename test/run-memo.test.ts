/**
 * The per-run memos (src/tensor-memo.ts, src/conflict-memo.ts): an engine passing the same input
 * objects every step skips re-validation, but every change to them is validated in full again.
 * Each case runs once with valid inputs (remembered), then changes one field of the SAME object in
 * place and expects the error a fresh object would give; restoring the field runs again, and the
 * results still match the float64 reference.
 */
import { describe, expect, it } from 'vitest';
import { useGpu } from './helpers/gpu.js';
import { TesseraError } from '../src/errors.js';
import { Rng, compare } from '../src/testing.js';
import { planRope, ropeReference } from '../kernels/append/index.js';
import { planAttention } from '../kernels/dense/index.js';
import { GPUBufferUsageFlags } from '../src/tensor.js';

const gpu = useGpu();

function thrown(f: () => void): TesseraError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(TesseraError);
    return e as TesseraError;
  }
  throw new Error('expected a TesseraError');
}

describe('run memos', () => {
  it('RoPE: the same x object changed in place (shape, dtype, buffer, destroyed) is validated again', async () => {
    const H = 2;
    const D = 8;
    const rows = 3;
    const opts = { style: 'half' as const, theta: 1e4, maxPosition: 64 };
    const plan = await planRope(gpu.dev, { H, D, maxRows: 4, ...opts });
    const x = new Rng(5).normals(rows * H * D);
    const positions = [0, 3, 9];
    const xt = gpu.tensor(x, [rows, H, D]);
    const out = gpu.nanTensor([rows, H, D]);
    const t = { x: xt, out };
    plan.schedule({ positions });
    const run = () => {
      const enc = gpu.dev.device.createCommandEncoder();
      plan.run(enc, t);
      gpu.dev.device.queue.submit([enc.finish()]);
    };
    run(); // remembered
    (xt.shape as number[])[2] = 4;
    let e = thrown(run);
    expect([e.code, e.argument]).toEqual(['E_SHAPE', 'x.shape[2]']);
    (xt.shape as number[])[2] = D;
    (xt as { dtype: string }).dtype = 'f16';
    e = thrown(run);
    expect([e.code, e.argument]).toEqual(['E_DTYPE', 'x.dtype']);
    (xt as { dtype: string }).dtype = 'f32';
    const orig = xt.buffer;
    (xt as { buffer: GPUBuffer }).buffer = gpu.dev.createBuffer({ size: 16, usage: GPUBufferUsageFlags.STORAGE });
    e = thrown(run);
    expect([e.code, e.argument]).toEqual(['E_BUFFER', 'x.buffer']);
    (xt as { buffer: GPUBuffer }).buffer = orig;
    run();
    const c = compare(await gpu.read(out), ropeReference(x, positions, H, D, opts));
    expect(c.badCount).toBe(0);
    expect(c.relRms).toBeLessThan(1e-6);
    out.buffer.destroy();
    e = thrown(run);
    expect([e.code, e.argument]).toEqual(['E_BUFFER', 'out.buffer']);
    plan.dispose();
  });

  it('conflict check: the same inputs object given an aliasing output in place is E_BUFFER again', async () => {
    const T = 4;
    const Hq = 2;
    const D = 8;
    const rng = new Rng(9);
    const plan = await planAttention(gpu.dev, { Tq: T, Hq, Hkv: 2, D });
    const q = gpu.tensor(rng.normals(T * Hq * D), [T, Hq, D]);
    const k = gpu.tensor(rng.normals(T * Hq * D), [T, 2, D]);
    const v = gpu.tensor(rng.normals(T * Hq * D), [T, 2, D]);
    const o = gpu.nanTensor([T, Hq, D]);
    const t: Record<string, unknown> = { q, k, v, o };
    const run = () => plan.run(gpu.dev.device.createCommandEncoder(), t as never);
    run();
    run(); // remembered
    t.o = q; // same object, new value
    let e = thrown(run);
    expect([e.code, e.argument]).toEqual(['E_BUFFER', 'o.buffer']);
    t.o = o;
    run();
    (o as { buffer: GPUBuffer }).buffer = k.buffer; // same tensor object, its buffer swapped in place
    e = thrown(run);
    expect(e.code).toBe('E_BUFFER');
    plan.dispose();
  });
});
