import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  adapterFromEnv,
  adapterLoopLimit,
  bufferErrorFromValidation,
  bufferProblem,
  checkBuffer,
  DEFAULT_LIMITS,
  GALLIVM_LOOP_LIMIT,
  loopBudget,
  requestDevice,
  wrapDevice,
  type TesseraDevice,
} from '../src/gpu/device.js';
import { getPipeline, grid2d, pipelineKey, wgslProgram } from '../src/gpu/pipeline.js';
import { uniformLayout } from '../src/gpu/uniforms.js';
import { TesseraError } from '../src/errors.js';
import { bf16BitsToF32, decode, encode, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from '../src/tensor.js';
import storageWgsl from '../shaders/storage.wgsl.js';
import { useGpu } from './helpers/gpu.js';

const gpu = useGpu();

// A test kernel: reads a tensor of dtype DT element by element through shaders/storage.wgsl and
// writes f32, and writes 16-bit packed pairs back (round trip through st_pack_pair).
const UNPACK = wgslProgram('test/unpack', [
  storageWgsl,
  `
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read_write> repacked: array<u32>;
override DT: u32 = 0;
override N: u32 = 0;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = g.x + g.y * nwg.x * 64u;
  if (i >= N) { return; }
  dst[i] = st_value(src[st_word(i, DT)], i, DT);
  if (DT != 0u && (i & 1u) == 0u) {
    let p = st_pair(src[i >> 1u], DT);
    repacked[i >> 1u] = st_pack_pair(p.x, p.y, DT);
  }
}`,
]);

describe('storage dtypes', () => {
  for (const dt of ['f16', 'bf16'] as const) {
    it(`${dt}: every one of the 65536 bit patterns unpacks on the GPU as on the host, and repacks bit-exactly`, async () => {
      const N = 65536;
      const bits = new Uint16Array(N);
      for (let i = 0; i < N; i++) bits[i] = i;
      const words = new Uint32Array(bits.buffer);
      const src = gpu.dev.upload(words);
      const dst = gpu.dev.createBuffer({ size: N * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
      const rep = gpu.dev.createBuffer({ size: N * 2, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
      const p = await getPipeline(gpu.dev, {
        shader: UNPACK,
        bindings: ['read', 'rw', 'rw'],
        constants: { DT: dt === 'f16' ? 1 : 2, N },
      });
      await gpu.dev.scoped('unpack', async () => {
        const enc = gpu.dev.device.createCommandEncoder();
        const pass = enc.beginComputePass();
        pass.setPipeline(p.pipeline);
        pass.setBindGroup(
          0,
          gpu.dev.device.createBindGroup({
            layout: p.layout,
            entries: [src, dst, rep].map((buffer, binding) => ({ binding, resource: { buffer } })),
          }),
        );
        pass.dispatchWorkgroups(N / 64);
        pass.end();
        await gpu.dev.submitAndWait([enc.finish()]);
      });
      const got = new Float32Array(await gpu.dev.readback(dst));
      const back = new Uint16Array(await gpu.dev.readback(rep));
      const conv = dt === 'f16' ? f16BitsToF32 : bf16BitsToF32;
      let mismatches = 0;
      const samples: unknown[] = [];
      let repackMismatches = 0;
      for (let i = 0; i < N; i++) {
        const want = conv(i);
        if (!(Object.is(got[i], Math.fround(want)) || (Number.isNaN(want) && Number.isNaN(got[i]!)))) {
          if (mismatches < 4) samples.push([i.toString(16), want, got[i]]);
          mismatches++;
        }
        const isNaN16 = Number.isNaN(want);
        // Finite values repack to the same bits; NaNs stay NaN. f16 values beyond 65504 are
        // clamped, so +-Inf repacks to +-65504 by design (never a NaN pattern).
        if (isNaN16) {
          if (!Number.isNaN(conv(back[i]!))) repackMismatches++;
        } else if (dt === 'f16' && !Number.isFinite(want)) {
          if (Math.abs(conv(back[i]!)) !== 65504) repackMismatches++;
        } else if (back[i] !== i) {
          // WGSL lets pack2x16float flush f16 subnormals (|x| < 2^-14) to zero; SwiftShader does.
          const subnormal = dt === 'f16' && Math.abs(want) < 2 ** -14;
          if (!((want === 0 || subnormal) && conv(back[i]!) === 0)) {
            if (repackMismatches < 5) samples.push([i.toString(16), want, back[i]!.toString(16), conv(back[i]!)]);
            repackMismatches++;
          }
        }
      }
      expect(mismatches, JSON.stringify(samples)).toBe(0);
      expect(repackMismatches, JSON.stringify(samples)).toBe(0);
      for (const b of [src, dst, rep]) gpu.dev.destroyBuffer(b);
    });
  }

  it('host f16/bf16 conversion rounds to nearest even and saturates', () => {
    expect(f32ToF16Bits(1)).toBe(0x3c00);
    expect(f32ToF16Bits(65504)).toBe(0x7bff);
    expect(f32ToF16Bits(1e6)).toBe(0x7c00);
    expect(f32ToF16Bits(-0)).toBe(0x8000);
    expect(f16BitsToF32(f32ToF16Bits(1 + 2 ** -11))).toBe(1); // tie -> even
    expect(f16BitsToF32(f32ToF16Bits(1 + 3 * 2 ** -11))).toBe(1 + 2 ** -9);
    expect(f16BitsToF32(f32ToF16Bits(2 ** -24))).toBe(2 ** -24); // smallest subnormal
    expect(bf16BitsToF32(f32ToBf16Bits(1.00390625))).toBe(1); // 1 + 2^-8 ties to even
    expect(Array.from(decode(encode([1.5, -2, 0.25], 'f16'), 'f16', 3))).toEqual([1.5, -2, 0.25]);
  });
});

describe('device layer', () => {
  it('negotiates limits above the defaults when the adapter offers them, and records features', () => {
    const l = gpu.dev.limits;
    expect(l.maxStorageBufferBindingSize).toBeGreaterThanOrEqual(DEFAULT_LIMITS.maxStorageBufferBindingSize);
    expect(l.maxBufferSize).toBeGreaterThanOrEqual(DEFAULT_LIMITS.maxBufferSize);
    expect(typeof gpu.dev.features.subgroups).toBe('boolean');
    expect(['cpu', 'gpu']).toContain(gpu.dev.adapterClass);
    expect(gpu.dev.adapterName).toMatch(/^[a-z0-9._-]+$/);
  });

  it('can be held to the WebGPU default limits', async () => {
    const d = await requestDevice({ ...adapterFromEnv(), defaultLimits: true });
    try {
      expect(d.limits.maxStorageBufferBindingSize).toBe(DEFAULT_LIMITS.maxStorageBufferBindingSize);
      expect(d.limits.maxBufferSize).toBe(DEFAULT_LIMITS.maxBufferSize);
      expect(() => d.createBuffer({ size: DEFAULT_LIMITS.maxBufferSize + 4, usage: GPUBufferUsage.STORAGE })).toThrow(
        /maxBufferSize/,
      );
    } finally {
      d.destroy();
    }
  });

  it('wrapDevice adopts a raw GPUDevice once and never destroys it', () => {
    const a = wrapDevice(gpu.dev.device);
    expect(a).toBe(gpu.dev); // requestDevice registered its own context
    expect(wrapDevice(a)).toBe(a);
  });

  it('caches pipelines by a pure key of the spec', async () => {
    const spec = { shader: UNPACK, bindings: ['read', 'rw', 'rw'] as const, constants: { N: 4, DT: 1 } };
    const k1 = pipelineKey(spec);
    expect(pipelineKey({ ...spec, constants: { DT: 1, N: 4 } })).toBe(k1);
    expect(pipelineKey({ ...spec, constants: { DT: 2, N: 4 } })).not.toBe(k1);
    const p1 = await getPipeline(gpu.dev, spec);
    const p2 = await getPipeline(gpu.dev, { ...spec, constants: { DT: 1, N: 4 } });
    expect(p2.pipeline).toBe(p1.pipeline);
    expect(p2.compileMs).toBe(0);
  });

  it('takes boolean override constants', async () => {
    const flag = wgslProgram('test/bool-override', [
      'override FLAG: bool = false;\n@group(0) @binding(0) var<storage, read_write> out: array<u32>;\n@compute @workgroup_size(1) fn main() { out[0] = select(1u, 2u, FLAG); }',
    ]);
    const p = await getPipeline(gpu.dev, { shader: flag, bindings: ['rw'], constants: { FLAG: true } });
    const out = gpu.dev.createBuffer({ size: 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
    await gpu.dev.scoped('bool override', async () => {
      const enc = gpu.dev.device.createCommandEncoder();
      const pass = enc.beginComputePass();
      pass.setPipeline(p.pipeline);
      pass.setBindGroup(
        0,
        gpu.dev.device.createBindGroup({ layout: p.layout, entries: [{ binding: 0, resource: { buffer: out } }] }),
      );
      pass.dispatchWorkgroups(1);
      pass.end();
      await gpu.dev.submitAndWait([enc.finish()]);
    });
    expect(new Uint32Array(await gpu.dev.readback(out))[0]).toBe(2);
    gpu.dev.destroyBuffer(out);
  });

  it('turns a WGSL compile error into a typed error quoting the compiler', async () => {
    const bad = wgslProgram('test/bad', ['@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }']);
    await expect(getPipeline(gpu.dev, { shader: bad, bindings: [] })).rejects.toMatchObject({
      code: 'E_GPU_VALIDATION',
    });
  });

  it("compiles inline on Node's Dawn by default; compile: 'async' gives the same pipeline; a bad mode is E_ARG", async () => {
    const env = process.env.TESSERA_COMPILE;
    expect(gpu.dev.compile).toBe(env === 'async' ? 'async' : 'sync');
    const flag = wgslProgram('test/compile-mode', [
      'override FLAG: bool = false;\n@group(0) @binding(0) var<storage, read_write> out: array<u32>;\n@compute @workgroup_size(1) fn main() { out[0] = select(3u, 4u, FLAG); }',
    ]);
    const d = await requestDevice({ ...adapterFromEnv(), compile: 'async', label: 'async-compile' });
    try {
      expect(d.compile).toBe('async');
      const p = await getPipeline(d, { shader: flag, bindings: ['rw'], constants: { FLAG: true } });
      expect(p.compileMs).toBeGreaterThan(0);
      const out = d.createBuffer({ size: 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
      const enc = d.device.createCommandEncoder();
      const pass = enc.beginComputePass();
      pass.setPipeline(p.pipeline);
      pass.setBindGroup(
        0,
        d.device.createBindGroup({ layout: p.layout, entries: [{ binding: 0, resource: { buffer: out } }] }),
      );
      pass.dispatchWorkgroups(1);
      pass.end();
      await d.submitAndWait([enc.finish()]);
      expect(new Uint32Array(await d.readback(out))[0]).toBe(4);
    } finally {
      d.destroy();
    }
    await expect(requestDevice({ ...adapterFromEnv(), compile: 'fast' as never })).rejects.toMatchObject({
      code: 'E_ARG',
      argument: 'compile',
    });
    expect(() => wrapDevice({ createBuffer() {} } as never, { compile: 'later' as never })).toThrow(
      expect.objectContaining({ code: 'E_ARG', argument: 'compile' }),
    );
  });

  it.each(['sync', 'async'] as const)(
    'a pipeline that fails to build (unknown entry point) is E_GPU_VALIDATION with compile: %s',
    async (mode) => {
      const prog = wgslProgram(`test/no-entry-${mode}`, ['@compute @workgroup_size(1) fn main() {}']);
      const d = mode === gpu.dev.compile ? gpu.dev : await requestDevice({ ...adapterFromEnv(), compile: mode });
      try {
        await expect(getPipeline(d, { shader: prog, bindings: [], entryPoint: 'nope' })).rejects.toMatchObject({
          code: 'E_GPU_VALIDATION',
        });
      } finally {
        if (d !== gpu.dev) d.destroy();
      }
    },
  );

  it('captures GPU validation errors in scoped() as typed errors', async () => {
    const b = gpu.dev.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE });
    await expect(
      gpu.dev.scoped('bad copy', () => {
        const enc = gpu.dev.device.createCommandEncoder();
        enc.copyBufferToBuffer(b, 0, b, 0, 16); // no COPY_SRC/COPY_DST usage, same buffer
        gpu.dev.device.queue.submit([enc.finish()]);
      }),
    ).rejects.toMatchObject({ code: 'E_GPU_VALIDATION' });
    gpu.dev.destroyBuffer(b);
  });

  it('tracks the bytes it allocates', () => {
    const before = gpu.dev.memory().bytesHeld;
    const b = gpu.dev.createBuffer({ size: 1000, usage: GPUBufferUsage.STORAGE });
    expect(gpu.dev.memory().bytesHeld).toBe(before + 1000);
    gpu.dev.destroyBuffer(b);
    gpu.dev.destroyBuffer(b);
    expect(gpu.dev.memory().bytesHeld).toBe(before);
  });

  it('folds large dispatches into 2-D within the limit', () => {
    expect(grid2d(gpu.dev, 10)).toEqual([10, 1]);
    const [x, y] = grid2d(gpu.dev, 200_000);
    expect(x).toBeLessThanOrEqual(gpu.dev.limits.maxComputeWorkgroupsPerDimension);
    expect(x * y).toBeGreaterThanOrEqual(200_000);
  });

  it('declares uniforms once and packs them', () => {
    const L = uniformLayout('P', [
      ['T', 'u32'],
      ['scale', 'f32'],
      ['off', 'i32'],
    ] as const);
    expect(L.wgsl).toContain('T: u32');
    expect(L.size).toBe(16);
    const dv = new DataView(L.pack({ T: 300, scale: 0.5, off: -2 }));
    expect([dv.getUint32(0, true), dv.getFloat32(4, true), dv.getInt32(8, true)]).toEqual([300, 0.5, -2]);
    expect(() => L.pack({ T: -1, scale: 1, off: 0 })).toThrow(TesseraError);
  });

  it('reports a lost device to pending and later calls instead of hanging', async () => {
    const d = await requestDevice(adapterFromEnv());
    const b = d.createBuffer({ size: 1 << 20, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
    const pending = d.readback(b);
    d.device.destroy();
    await expect(pending).rejects.toMatchObject({ code: 'E_DEVICE_LOST' });
    await expect(d.readback(b)).rejects.toMatchObject({ code: 'E_DEVICE_LOST' });
    expect(d.isLost).toBe(true);
    expect(() => d.createBuffer({ size: 4, usage: GPUBufferUsage.STORAGE })).toThrow(/lost/);
    d.destroy();
  });
});

// One invocation counts its own loop iterations: 3 loops of 40,000 each (120,000 in all). Where the
// adapter caps loop iterations per invocation (Mesa's gallivm: 65,535 over all loops together),
// the count stops at the cap and the invocation ends silently; `loopLimit` must say so.
const LOOP_PROBE = wgslProgram('test/loop_probe', [
  `
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(1)
fn main() {
  var n = 0u;
  let m = out[3];
  for (var i = 0u; i < m; i++) { n++; out[0] = n; }
  for (var i = 0u; i < m; i++) { n++; out[1] = n; }
  for (var i = 0u; i < m; i++) { n++; out[2] = n; }
}`,
]);

describe('loop cap', () => {
  it('loopLimit matches the iterations one invocation really runs on this adapter', async () => {
    const dev = gpu.dev;
    const buf = dev.upload(new Uint32Array([0, 0, 0, 40000]));
    const p = await getPipeline(dev, { shader: LOOP_PROBE, bindings: ['rw'] });
    await dev.scoped('loop probe', async () => {
      const enc = dev.device.createCommandEncoder();
      const pass = enc.beginComputePass();
      pass.setPipeline(p.pipeline);
      pass.setBindGroup(
        0,
        dev.device.createBindGroup({ layout: p.layout, entries: [{ binding: 0, resource: { buffer: buf } }] }),
      );
      pass.dispatchWorkgroups(1);
      pass.end();
      await dev.submitAndWait([enc.finish()]);
    });
    const got = new Uint32Array(await dev.readback(buf));
    dev.destroyBuffer(buf);
    const ran = Math.max(got[0]!, got[1]!, got[2]!);
    const cap = adapterLoopLimit(dev.adapter);
    // The adapter's own cap (not the device's, which a test may lower).
    if (cap === Number.POSITIVE_INFINITY) expect(ran).toBe(120000);
    else expect(Math.abs(ran - cap)).toBeLessThanOrEqual(4); // a back-edge or two per loop entry
    expect(dev.loopLimit).toBeLessThanOrEqual(cap);
  });

  it('a device can be given a smaller loop limit (tests of the segmented paths), never a larger one', async () => {
    const d = await requestDevice({ ...adapterFromEnv(), loopLimit: 4096 });
    try {
      expect(d.loopLimit).toBe(4096);
    } finally {
      d.destroy();
    }
    await expect(requestDevice({ ...adapterFromEnv(), loopLimit: 10 })).rejects.toMatchObject({
      code: 'E_ARG',
      argument: 'loopLimit',
    });
    expect(loopBudget(65535)).toBe(58981);
    expect(loopBudget({ loopLimit: Number.POSITIVE_INFINITY })).toBe(Number.POSITIVE_INFINITY);
    for (const bad of [0, -5, Number.NaN, 'x', null])
      expect(() => loopBudget(bad as never)).toThrow(expect.objectContaining({ code: 'E_ARG', argument: 'loopLimit' }));
    expect(() => wrapDevice({} as never)).toThrow(expect.objectContaining({ code: 'E_ARG', argument: 'device' }));
    expect(() => wrapDevice(gpu.dev.device, { trackBuffers: 'yes' as never })).toThrow(
      expect.objectContaining({ code: 'E_ARG', argument: 'trackBuffers' }),
    );
    expect(
      adapterLoopLimit({
        vendor: 'mesa',
        architecture: '',
        device: 'llvmpipe (LLVM 15.0.6, 256 bits)',
        description: '',
        isFallbackAdapter: false,
      }),
    ).toBe(GALLIVM_LOOP_LIMIT);
    expect(
      adapterLoopLimit({
        vendor: 'google',
        architecture: 'swiftshader',
        device: '',
        description: '',
        isFallbackAdapter: true,
      }),
    ).toBe(Number.POSITIVE_INFINITY);
  });
});

describe('buffer tracking: destroyed buffers and buffers of another device', () => {
  const U = () => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  const code = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      return e instanceof TesseraError ? `${e.code} ${e.argument ?? ''}`.trim() : String(e);
    }
    return 'ok';
  };

  // Tracking every buffer of a device is opt-in: this file's own device asks for it.
  let tracked: TesseraDevice;
  beforeAll(async () => {
    tracked = await requestDevice({ ...adapterFromEnv(), label: 'tracked', trackBuffers: true });
  });
  afterAll(() => tracked?.destroy());

  it('requestDevice leaves the device object alone unless asked (bufferTracking "own")', async () => {
    const dev = gpu.dev; // the test fixture's device: requestDevice without trackBuffers
    expect(dev.bufferTracking).toBe('own');
    expect(Object.hasOwn(dev.device, 'createBuffer')).toBe(false);
    const user = dev.device.createBuffer({ size: 64, usage: U(), label: 'user' }); // not via Tessera
    expect(Object.hasOwn(user, 'destroy')).toBe(false); // the caller's buffers are untouched
    user.destroy();
    expect(bufferProblem(user, dev)).toBeNull(); // unknown: its destruction is not seen
    // Tessera's own buffers are still known: destroyed, and destroy() frees their bytes in memory()
    const own = dev.createBuffer({ size: 64, usage: U() });
    expect(bufferProblem(own, dev)).toBeNull();
    const held = dev.memory().bytesHeld;
    own.destroy();
    expect(dev.memory().bytesHeld).toBe(held - 64);
    expect(bufferProblem(own, dev)).toBe('destroyed');
    await expect(requestDevice({ ...adapterFromEnv(), trackBuffers: 'yes' as never })).rejects.toMatchObject({
      code: 'E_ARG',
      argument: 'trackBuffers',
    });
  });

  it('requestDevice({ trackBuffers: true }) records every buffer of its device, through instance wrappers only', () => {
    const dev = tracked;
    expect(dev.bufferTracking).toBe('all');
    const proto = Object.getPrototypeOf(dev.device) as GPUDevice;
    expect(Object.hasOwn(dev.device, 'createBuffer')).toBe(true);
    expect(proto.createBuffer).not.toBe(dev.device.createBuffer); // the prototype is left alone
    const user = dev.device.createBuffer({ size: 64, usage: U(), label: 'user' }); // not via Tessera
    const own = dev.createBuffer({ size: 64, usage: U() });
    for (const b of [user, own]) {
      expect(Object.hasOwn(b, 'destroy')).toBe(true);
      expect(bufferProblem(b, dev)).toBeNull();
    }
    expect(Object.getPrototypeOf(user).destroy).not.toBe(user.destroy);
    user.destroy();
    expect(bufferProblem(user, dev)).toBe('destroyed');
    expect(bufferProblem(user)).toBe('destroyed'); // no device needed to know it
    expect(code(() => checkBuffer(dev, user, 'q.buffer'))).toBe('E_BUFFER q.buffer');
    expect(() => checkBuffer(dev, user, 'q.buffer')).toThrow(/q\.buffer: is destroyed \(buffer "user"\)/);
    // destroy() on a Tessera buffer also frees its bytes in memory(); destroyBuffer after it is a no-op
    const held = dev.memory().bytesHeld;
    own.destroy();
    expect(dev.memory().bytesHeld).toBe(held - 64);
    dev.destroyBuffer(own);
    expect(dev.memory().bytesHeld).toBe(held - 64);
    expect(bufferProblem(own, dev)).toBe('destroyed');
  });

  it("another device's buffers are foreign; an untracked device knows only Tessera's own", async () => {
    const other = await requestDevice({ ...adapterFromEnv(), label: 'other' });
    const untracked = await requestDevice({ ...adapterFromEnv(), label: 'untracked', trackBuffers: false });
    try {
      expect(untracked.bufferTracking).toBe('own');
      expect(Object.hasOwn(untracked.device, 'createBuffer')).toBe(false);
      const fromOther = other.upload(new Float32Array(4));
      const raw = untracked.device.createBuffer({ size: 64, usage: U(), label: 'raw' }); // unknown to Tessera
      const mine = tracked.upload(new Float32Array(4));
      expect(bufferProblem(fromOther, tracked)).toBe('foreign');
      // `tracked` saw every buffer made on it, so an unknown buffer belongs to another device
      expect(bufferProblem(raw, tracked)).toBe('foreign');
      expect(() => checkBuffer(tracked, raw, 'k.buffer')).toThrow(
        /k\.buffer: belongs to another device \(buffer "raw" was not created on device "tracked"/,
      );
      expect(() => checkBuffer(tracked, fromOther, 'k.buffer')).toThrow(
        /created on device "other"; this call runs on device "tracked"/,
      );
      // the untracked device: its unknown buffers pass (as before), known ones of other devices do not
      expect(bufferProblem(raw, untracked)).toBeNull();
      expect(bufferProblem(mine, untracked)).toBe('foreign');
      raw.destroy();
      expect(bufferProblem(raw, untracked)).toBeNull(); // its destruction is not known either
      // readback of a destroyed or foreign buffer is an error, not zeros
      await expect(tracked.readback(fromOther)).rejects.toMatchObject({ code: 'E_BUFFER', argument: 'src' });
      tracked.destroyBuffer(mine);
    } finally {
      other.destroy();
      untracked.destroy();
    }
  });

  it('wrapDevice tracks buffers only when asked, from then on (bufferTracking "new")', async () => {
    const d = await requestDevice({ ...adapterFromEnv(), label: 'engine', trackBuffers: false });
    try {
      const before = d.device.createBuffer({ size: 64, usage: U() });
      expect(wrapDevice(d.device)).toBe(d);
      expect(d.bufferTracking).toBe('own');
      expect(wrapDevice(d.device, { trackBuffers: true })).toBe(d);
      expect(d.bufferTracking).toBe('new');
      const after = d.device.createBuffer({ size: 64, usage: U() });
      before.destroy();
      after.destroy();
      expect(bufferProblem(before, d)).toBeNull(); // created before tracking: unknown
      expect(bufferProblem(after, d)).toBe('destroyed');
      const theirs = tracked.device.createBuffer({ size: 4, usage: U() });
      expect(bufferProblem(theirs, d)).toBe('foreign');
      expect(bufferProblem(d.device.createBuffer({ size: 4, usage: U() }), tracked)).toBe('foreign');
      theirs.destroy();
    } finally {
      d.destroy();
    }
  });

  it('scoped() turns a destroyed or foreign buffer it did not know into E_BUFFER with the GPU message', async () => {
    const d = await requestDevice({ ...adapterFromEnv(), label: 'raw', trackBuffers: false });
    try {
      const a = d.device.createBuffer({ size: 64, usage: U(), label: 'gone' });
      const b = d.device.createBuffer({ size: 64, usage: U() });
      const f = gpu.dev.device.createBuffer({ size: 64, usage: U(), label: 'foreign' });
      a.destroy();
      const copy = (src: GPUBuffer, dst: GPUBuffer, size = 64) =>
        d.scoped('copy', async () => {
          const enc = d.device.createCommandEncoder();
          enc.copyBufferToBuffer(src, 0, dst, 0, size);
          await d.submitAndWait([enc.finish()]);
        });
      await expect(copy(a, b)).rejects.toMatchObject({
        code: 'E_BUFFER',
        message: expect.stringMatching(/destroyed.*"gone"/s),
      });
      await expect(copy(b, f)).rejects.toMatchObject({
        code: 'E_BUFFER',
        message: expect.stringMatching(/another device.*"foreign"/s),
      });
      await expect(copy(b, b, 6)).rejects.toMatchObject({ code: 'E_GPU_VALIDATION' }); // any other validation error
      f.destroy();
    } finally {
      d.destroy();
    }
    expect(bufferErrorFromValidation('x', 'Buffer "q" used in submit while destroyed.')?.code).toBe('E_BUFFER');
    expect(bufferErrorFromValidation('x', 'Texture "t" used in submit while destroyed.')).toBeNull();
    expect(bufferErrorFromValidation('x', 'Binding size (6) is not a multiple of 4.')).toBeNull();
  });
});
