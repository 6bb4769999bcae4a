/**
 * Binding tables (src/gpu/bindings.ts) against the WGSL each pass actually compiles: for every
 * registered pass variant, the group-0 declarations of the assembled shader (`pipelineShader`)
 * must have the table's names, numbers and access, declare nothing the table lacks, and leave out
 * what the variant leaves out. Importing the library registers every converted kernel, so a new
 * table or pass is checked here without editing this file.
 */
import { describe, expect, it } from 'vitest';
import '../src/index.js';
import {
  GroupCache,
  bindingMismatches,
  bindingTable,
  bindingTables,
  declaredBindings,
  isBindingVariant,
  optional,
  registeredPasses,
} from '../src/gpu/bindings.js';
import {
  bindGroup,
  getPipeline,
  pipelineKey,
  pipelineShader,
  wgslProgram,
  type PipelineSpec,
} from '../src/gpu/pipeline.js';
import { TesseraError } from '../src/errors.js';
import { wgslConstants } from '../src/gpu/specialize.js';
import { useGpu } from './helpers/gpu.js';

const gpu = useGpu();

function allSpecs(): { kernel: string; spec: PipelineSpec }[] {
  const out: { kernel: string; spec: PipelineSpec }[] = [];
  for (const [kernel, specs] of registeredPasses()) for (const spec of specs()) out.push({ kernel, spec });
  return out;
}

describe('binding tables', () => {
  it('every registered pass variant declares exactly its table (names, numbers, access)', () => {
    const specs = allSpecs();
    expect(specs.length).toBeGreaterThan(10);
    let checked = 0;
    for (const { kernel, spec } of specs) {
      expect(isBindingVariant(spec.bindings), `${kernel}: ${spec.shader.name} uses a binding table`).toBe(true);
      if (!isBindingVariant(spec.bindings)) continue;
      const code = pipelineShader(spec).code;
      expect(bindingMismatches(spec.bindings, code), `${kernel}: ${spec.shader.name}`).toEqual([]);
      // and directly: every declared group-0 binding is in the variant, every bound one declared
      const declared = declaredBindings(code)
        .filter((d) => d.group === 0)
        .map((d) => `${d.binding}:${d.name}:${d.kind}`)
        .sort();
      const bound = spec.bindings.bound.map((b) => `${b.binding}:${b.name}:${b.kind}`).sort();
      expect(declared, `${kernel}: ${spec.shader.name} (${spec.bindings.key})`).toEqual(bound);
      for (const name of spec.bindings.absent)
        expect(code).toMatch(new RegExp(`(var<private> ${name}:|const ${name} = )`));
      checked++;
    }
    expect(checked).toBe(specs.length);
  });

  it('every declared table has at least one registered pass, and every optional binding is both bound and left out by some variant', () => {
    const seen = new Map<string, { bound: Set<string>; absent: Set<string> }>();
    for (const { spec } of allSpecs()) {
      if (!isBindingVariant(spec.bindings)) continue;
      const name = spec.bindings.table.name;
      const s = seen.get(name) ?? { bound: new Set(), absent: new Set() };
      for (const b of spec.bindings.bound) s.bound.add(b.name);
      for (const a of spec.bindings.absent) s.absent.add(a);
      seen.set(name, s);
    }
    const tables = bindingTables().filter((t) => !t.name.startsWith('test/'));
    expect(tables.length).toBeGreaterThan(5);
    for (const t of tables) {
      const s = seen.get(t.name);
      expect(s, `table ${t.name} has a registered pass (registerPasses)`).toBeDefined();
      for (const [n, e] of Object.entries(t.entries)) {
        expect(s!.bound.has(n), `${t.name}.${n} is bound by some variant`).toBe(true);
        if (typeof e === 'object') expect(s!.absent.has(n), `${t.name}.${n} is left out by some variant`).toBe(true);
      }
    }
  });

  it('the uniform binding of every table is named params', () => {
    for (const t of bindingTables()) {
      for (const [n, e] of Object.entries(t.entries)) if (e === 'uniform') expect(n, t.name).toBe('params');
    }
  });

  it('finds wrong names, numbers, access, undeclared and extra bindings', () => {
    const T = bindingTable('test/mismatch', {
      a: 'read',
      b: 'rw',
      c: optional('read', 'array<f32>'),
      params: 'uniform',
    });
    const v = T.variant({ c: false });
    const ok =
      '@group(0) @binding(0) var<storage, read> a: array<f32>;\n@group(0) @binding(1) var<storage, read_write> b: array<f32>;\n@group(0) @binding(3) var<uniform> params: P;';
    expect(bindingMismatches(v, ok + '\n' + v.wgsl)).toEqual([]);
    const bad = (code: string) => bindingMismatches(v, code).join('\n');
    expect(bad(ok.replace('> a:', '> x:'))).toMatch(/@binding\(0\) is "x" in the WGSL, "a" in the table/);
    expect(bad(ok.replace('read_write> b', 'read> b'))).toMatch(/b is read in the WGSL, rw in the table/);
    expect(bad(ok.replace('@binding(3) var<uniform>', '@binding(4) var<uniform>'))).toMatch(
      /@binding\(4\) params is declared in the WGSL but not in the table[\s\S]*"params" \(@binding\(3\)\) is in the table but not declared/,
    );
    expect(bad(ok + '\n@group(0) @binding(2) var<storage, read> c: array<f32>;')).toMatch(
      /"c" is declared at @binding\(2\) but this variant leaves it out/,
    );
    expect(bad(ok + '\n// @group(0) @binding(7) var<storage, read> zz: array<f32>;')).toBe('');
    // the variant that binds c declares it, at its number
    const v2 = T.variant({ c: true });
    expect(v2.wgsl).toMatch(/@group\(0\) @binding\(2\) var<storage, read> c: array<f32>;/);
    expect(bindingMismatches(v2, ok + '\n' + v2.wgsl)).toEqual([]);
    expect(() => T.variant({} as { c: boolean })).toThrow(/does not say whether "c" is bound/);
  });

  it('getPipeline refuses a table that disagrees with the WGSL, and binds by name', async () => {
    const dev = gpu.dev;
    const T = bindingTable('test/pipeline', { src: 'read', w: optional('read', 'array<f32>'), dst: 'rw' });
    const code = `override SCALE: bool = false;
@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@compute @workgroup_size(4) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  var x = src[id.x];
  if (SCALE) { x *= w[id.x]; }
  dst[id.x] = x;
}`;
    const shader = wgslProgram('test/pipeline', [code]);
    const wrong = bindingTable('test/pipeline-wrong', { src: 'read', w: optional('read', 'array<f32>'), out: 'rw' });
    await expect(getPipeline(dev, { shader, bindings: wrong.variant({ w: false }) })).rejects.toThrow(
      /"dst" in the WGSL, "out" in the table/,
    );
    const plain = await getPipeline(dev, { shader, bindings: T.variant({ w: false }) });
    const scaled = await getPipeline(dev, { shader, bindings: T.variant({ w: true }), constants: { SCALE: true } });
    expect(pipelineKey(plain.spec)).not.toBe(pipelineKey(scaled.spec));
    const src = gpu.tensor([1, 2, 3, 4], [4]);
    const w = gpu.tensor([10, 20, 30, 40], [4]);
    const out1 = gpu.nanTensor([4]);
    const out2 = gpu.nanTensor([4]);
    const enc = dev.device.createCommandEncoder();
    for (const [p, group] of [
      [plain, bindGroup(dev, plain, { src, dst: out1 })],
      [scaled, bindGroup(dev, scaled, { src, w, dst: out2 })],
    ] as const) {
      const pass = enc.beginComputePass();
      pass.setPipeline(p.pipeline);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(1);
      pass.end();
    }
    dev.device.queue.submit([enc.finish()]);
    expect(Array.from(await gpu.read(out1))).toEqual([1, 2, 3, 4]);
    expect(Array.from(await gpu.read(out2))).toEqual([10, 40, 90, 160]);
    // a binding the variant leaves out, or one it needs, is refused by name
    const err = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return e as TesseraError;
      }
      throw new Error('did not throw');
    };
    expect(err(() => bindGroup(dev, plain, { src, w, dst: out1 })).message).toMatch(
      /"w" is not a binding of this variant \(left out of it\)/,
    );
    expect(err(() => bindGroup(dev, scaled, { src, dst: out2 })).message).toMatch(
      /binding "w" \(@binding\(1\)\) has no buffer/,
    );
    expect(err(() => bindGroup(dev, scaled, { src, dst: out2 })).code).toBe('E_STATE');
    // @ts-expect-error a missing required name is a compile error
    expect(() => bindGroup(dev, plain, { src })).toThrow(/binding "dst"/);
    // @ts-expect-error an unknown name is a compile error
    expect(() => bindGroup(dev, plain, { src, dst: out1, nope: out1 })).toThrow(/"nope" is not a binding/);
    // by name, bindGroup is the pipeline's GroupCache: a refused call leaves nothing set behind, the
    // same resources give the group made before, another range or buffer a new one
    const again = bindGroup(dev, plain, { src, dst: out1 });
    expect(bindGroup(dev, plain, { dst: out1, src })).toBe(again);
    expect(bindGroup(dev, plain, { src, dst: { buffer: out1.buffer, size: 8 } })).not.toBe(again);
    expect(bindGroup(dev, plain, { src, dst: out2 })).not.toBe(again);
    expect(bindGroup(dev, scaled, { src, w, dst: out2 })).not.toBe(again);
  });

  it('GroupCache binds by name into fixed slots: one group per distinct set of buffers, offsets and sizes, names checked', async () => {
    const dev = gpu.dev;
    const T = bindingTable('test/group-cache', { src: 'read', w: optional('read', 'array<f32>'), dst: 'rw' });
    const code = `override SCALE: bool = false;
@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@compute @workgroup_size(4) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  var x = src[id.x];
  if (SCALE) { x *= w[id.x]; }
  dst[id.x] = x;
}`;
    const shader = wgslProgram('test/group-cache', [code]);
    const plain = await getPipeline(dev, { shader, bindings: T.variant({ w: false }) });
    const scaled = await getPipeline(dev, { shader, bindings: T.variant({ w: true }), constants: { SCALE: true } });
    // offsets in steps of 256 bytes (minStorageBufferOffsetAlignment)
    const src = gpu.tensor(
      Array.from({ length: 128 }, (_, i) => i + 1),
      [128],
    );
    const w = gpu.tensor([10, 20, 30, 40], [4]);
    const out = gpu.nanTensor([128]);
    const gp = new GroupCache(dev.device, plain);
    const gs = new GroupCache(dev.device, scaled);
    const a = gp.set('src', src.buffer, 0, 16).set('dst', out.buffer, 0, 16).group();
    expect(gp.set('dst', out.buffer, 0, 16).set('src', src.buffer, 0, 16).group()).toBe(a); // order-free
    const b = gp.set('src', src.buffer, 256, 16).set('dst', out.buffer, 256, 16).group();
    expect(b).not.toBe(a);
    expect(gp.set('src', src.buffer, 0, 16).set('dst', out.buffer, 0, 16).group()).toBe(a);
    expect(gp.set('src', src.buffer, 256).set('dst', out.buffer, 256, 16).group()).not.toBe(b); // size differs
    expect(gp.created).toBe(3);
    const c = gs.set('src', src.buffer, 0, 16).set('w', w.buffer).set('dst', out.buffer, 256, 16).group();
    const enc = dev.device.createCommandEncoder();
    for (const [p, g] of [
      [plain, a],
      [scaled, c],
    ] as const) {
      const pass = enc.beginComputePass();
      pass.setPipeline(p.pipeline);
      pass.setBindGroup(0, g);
      pass.dispatchWorkgroups(1);
      pass.end();
    }
    dev.device.queue.submit([enc.finish()]);
    const got = Array.from(await gpu.read(out));
    expect(got.slice(0, 4)).toEqual([1, 2, 3, 4]);
    expect(got.slice(64, 68)).toEqual([10, 40, 90, 160]);
    expect(got.filter((x) => Number.isNaN(x)).length).toBe(120); // nothing else written
    // names are checked as bindGroup checks them, and a refused call leaves nothing set behind
    const err = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return e as TesseraError;
      }
      throw new Error('did not throw');
    };
    const left = err(() => gp.set('src', src.buffer).set('w', w.buffer));
    expect([left.code, left.message]).toEqual([
      'E_STATE',
      expect.stringMatching(/"w" is not a binding of this variant \(left out of it\)/),
    ]);
    // @ts-expect-error an unknown name is a compile error
    expect(err(() => gp.set('nope', src.buffer)).message).toMatch(
      /"nope" is not a binding of this variant \(not in the table\)/,
    );
    expect(err(() => gs.set('src', src.buffer).set('dst', out.buffer).group()).message).toMatch(
      /binding "w" \(@binding\(1\)\) has no buffer/,
    );
    expect(err(() => gp.set('src', src.buffer).set('src', src.buffer)).message).toMatch(/"src" is set twice/);
    expect(gp.set('src', src.buffer, 0, 16).set('dst', out.buffer, 0, 16).group()).toBe(a);
    expect(gp.created).toBe(3);
  });

  it('wgslConstants writes typed const declarations and refuses values their type cannot hold', () => {
    const C = wgslConstants({ KMAX: 'u32', OFF: 'i32', EPS: 'f32', ON: 'bool' });
    const v = { KMAX: 64, OFF: -3, EPS: 0.5, ON: true };
    expect(C.wgsl(v)).toBe(
      'const KMAX: u32 = 64u;\nconst OFF: i32 = -3i;\nconst EPS: f32 = 0.5f;\nconst ON: bool = true;\n',
    );
    expect(C.tag(v)).toBe('KMAX64.OFF-3.EPS0.5.ON1');
    expect(C.wgsl({ ...v, EPS: 2 })).toContain('const EPS: f32 = 2.0f;');
    expect(() => C.wgsl({ ...v, KMAX: -1 })).toThrow(/KMAX: -1 does not fit in u32/);
    expect(() => C.wgsl({ ...v, KMAX: 1.5 })).toThrow(/not an integer/);
    expect(() => C.wgsl({ ...v, EPS: NaN })).toThrow(/not a finite number/);
    expect(() => C.wgsl({ ...v, EPS: 1e39 })).toThrow(/does not fit in f32/);
    // @ts-expect-error a missing constant is a compile error
    expect(() => C.wgsl({ KMAX: 1, OFF: 0, EPS: 0 })).toThrow(/ON: undefined is not a boolean/);
  });

  it('every binding variant of every table compiles against its layout', { timeout: 600_000 }, async () => {
    // one pipeline per layout variant (a table with its optional bindings chosen): the generated
    // declarations and placeholders compile, and Dawn accepts the shader with that layout
    const seen = new Set<string>();
    let compiled = 0;
    for (const { spec } of allSpecs()) {
      if (!isBindingVariant(spec.bindings)) continue;
      const key = spec.bindings.key;
      if (seen.has(key)) continue;
      seen.add(key);
      await getPipeline(gpu.dev, spec);
      compiled++;
    }
    expect(compiled).toBeGreaterThan(10);
  });
});
