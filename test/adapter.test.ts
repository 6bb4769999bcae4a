/**
 * The one adapter classifier (src/gpu/adapter.ts): class, short name and loop cap from an
 * adapter's description, and the device context takes all three from it.
 */
import { describe, expect, it } from 'vitest';
import {
  adapterFromEnv,
  classifyAdapter,
  describeAdapter,
  GALLIVM_LOOP_LIMIT,
  type AdapterDescription,
} from '../src/gpu/device.js';
import { useGpu } from './helpers/gpu.js';

const gpu = useGpu();

const adapter = (o: Partial<AdapterDescription>): AdapterDescription => ({
  vendor: '',
  architecture: '',
  device: '',
  description: '',
  isFallbackAdapter: false,
  ...o,
});

describe('classifyAdapter', () => {
  it('SwiftShader: a cpu adapter without a loop cap', () => {
    const c = classifyAdapter(
      adapter({ vendor: 'google', architecture: 'swiftshader', description: 'SwiftShader Device (Subzero)' }),
    );
    expect(c).toEqual({ class: 'cpu', name: 'swiftshader', loopLimit: Number.POSITIVE_INFINITY });
  });

  it("Mesa's llvmpipe and lavapipe: cpu adapters with gallivm's 65,535-iteration cap", () => {
    const gl = classifyAdapter(adapter({ vendor: 'mesa', description: 'llvmpipe (LLVM 19.1.7, 256 bits)' }));
    expect(gl).toEqual({ class: 'cpu', name: 'llvmpipe', loopLimit: 65535 });
    expect(GALLIVM_LOOP_LIMIT).toBe(65535);
    const vk = classifyAdapter(adapter({ vendor: 'mesa', device: 'llvmpipe', architecture: 'lavapipe' }));
    expect(vk.class).toBe('cpu');
    expect(vk.loopLimit).toBe(65535);
  });

  it('a discrete GPU: gpu class, vendor-architecture name, no cap', () => {
    expect(
      classifyAdapter(adapter({ vendor: 'nvidia', architecture: 'ampere', description: 'NVIDIA RTX 3090' })),
    ).toEqual({
      class: 'gpu',
      name: 'nvidia-ampere',
      loopLimit: Number.POSITIVE_INFINITY,
    });
    // Google's own GPU adapters carry no vendor prefix; unsafe characters become '-'
    expect(classifyAdapter(adapter({ vendor: 'google', architecture: 'Some Arch/1' })).name).toBe('some-arch-1');
    expect(classifyAdapter(adapter({})).name).toBe('unknown');
  });

  it('a fallback adapter or Microsoft Basic Render Driver is cpu whatever its name', () => {
    expect(classifyAdapter(adapter({ vendor: 'acme', architecture: 'x', isFallbackAdapter: true })).class).toBe('cpu');
    expect(classifyAdapter(adapter({ description: 'Microsoft Basic Render Driver' })).class).toBe('cpu');
  });

  it('describeAdapter fills missing fields with empty strings', () => {
    expect(describeAdapter(undefined)).toEqual({
      vendor: '',
      architecture: '',
      device: '',
      description: '',
      isFallbackAdapter: false,
      subgroupMinSize: undefined,
      subgroupMaxSize: undefined,
    });
    expect(describeAdapter(undefined, true).isFallbackAdapter).toBe(true);
  });

  it("the test device's class, name and loop cap are the classifier's", () => {
    const dev = gpu.dev;
    const c = classifyAdapter(dev.adapter);
    expect(dev.adapterClass).toBe(c.class);
    expect(dev.adapterName).toBe(c.name);
    // TESSERA_LOOP_LIMIT may lower the cap (never raise it)
    const env = adapterFromEnv().loopLimit;
    expect(dev.loopLimit).toBe(env === undefined ? c.loopLimit : Math.min(c.loopLimit, env));
    if (dev.adapterName === 'swiftshader' || dev.adapterName === 'llvmpipe') expect(dev.adapterClass).toBe('cpu');
  });
});
