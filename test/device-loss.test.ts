/**
 * Device loss in the middle of a stream: every pending call gets E_DEVICE_LOST (no hang), the host
 * and disk tiers are intact (checksums), and a new device resumes from them with exact results.
 */
import { describe, expect, it } from 'vitest';
import { useGpu } from './helpers/gpu.js';
import { adapterFromEnv, requestDevice } from '../src/gpu/device.js';
import { Rng, TOLERANCE, compare, describeComparison, passes } from '../src/testing.js';
import { createKvCache } from '../src/kv/cache.js';
import { FileStore } from '../src/kv/file-store.js';
import { streamAttention } from '../src/stream/exact.js';
import { streamAttentionReference } from '../kernels/paged/reference.js';

const gpu = useGpu();

describe('device loss mid-stream', () => {
  for (const tier of ['host', 'disk'] as const) {
    it(`${tier} tier: pending calls fail with E_DEVICE_LOST, then a new device resumes exactly`, async () => {
      const lost = await requestDevice(adapterFromEnv());
      const T = 6000;
      const Hq = 4;
      const Hkv = 2;
      const D = 16;
      // A budget of a few tiles, so the stream has many tiles to go when the device is lost.
      let cache = createKvCache(lost, {
        Hkv,
        D,
        dtype: 'f16',
        pageSize: 16,
        tilePages: 4,
        gpuBudgetBytes: 256 << 10,
        store: tier === 'disk' ? new FileStore() : undefined,
      });
      try {
        const seq = cache.addSequence();
        const rng = new Rng(91);
        for (let t = 0; t < T; t += 1000) cache.append(seq, rng.normals(1000 * Hkv * D), rng.normals(1000 * Hkv * D));
        const sumsBefore = Array.from({ length: cache.numPages }, (_, p) => cache.checksum(p));
        const q = rng.normals(Hq * D);
        const pending = streamAttention(cache, seq, q, { Hq });
        const second = streamAttention(cache, seq, q, { Hq });
        await new Promise((r) => setTimeout(r, 5));
        lost.device.destroy();
        await expect(pending).rejects.toMatchObject({ code: 'E_DEVICE_LOST' });
        await expect(second).rejects.toMatchObject({ code: 'E_DEVICE_LOST' });
        // Nothing off the GPU was touched: every page still matches its checksum in the store.
        expect(cache.verifyStore()).toBe(cache.numPages);
        expect(Array.from({ length: cache.numPages }, (_, p) => cache.checksum(p))).toEqual(sumsBefore);
        // Resume on a new device from the host/disk tier.
        cache = cache.moveTo(gpu.dev);
        const got = await streamAttention(cache, seq, q, { Hq });
        const { k, v } = cache.read(seq, 0, T);
        const ref = streamAttentionReference(q, k, v, { Tq: 1, Tk: T, Hq, Hkv, D });
        const c = compare(got.o, ref.o);
        expect(passes(c, TOLERANCE.f32), describeComparison(c)).toBe(true);
        expect(passes(compare(got.lse, ref.lse), TOLERANCE.f32)).toBe(true);
        expect(got.stats.tiles).toBeGreaterThan(10);
      } finally {
        cache.dispose();
        lost.destroy();
      }
    });
  }
});
