/**
 * kernels/quest/batch: head-shared Quest page selection for a batch of decode queries, on the GPU,
 * against its float64 reference; the selected lists are CSR for the attention core.
 */
import { describe, expect, it } from 'vitest';
import { useGpu } from './helpers/gpu.js';
import { TesseraError } from '../src/errors.js';
import { Rng } from '../src/testing.js';
import { f16Down, f16Up } from '../src/kv/codec.js';
import { planQuestBatch, questBatchReference } from '../kernels/quest/index.js';

const gpu = useGpu();
const STORAGE = 0x80 | 0x4 | 0x8;

describe('quest batch selection', () => {
  for (const [sinkPages, budgetPages] of [
    [1, 5],
    [0, 3],
    [2, 8],
  ] as const) {
    it(`sinks ${sinkPages}, budget ${budgetPages}: 4 ragged sequences (2..40 pages) equal float64`, async () => {
      const Hq = 8;
      const Hkv = 2;
      const D = 16;
      const maxPages = 96;
      const rng = new Rng(40 + budgetPages);
      const minmax = new Uint16Array(maxPages * Hkv * 2 * D);
      for (let p = 0; p < maxPages; p++) {
        for (let h = 0; h < Hkv; h++) {
          for (let d = 0; d < D; d++) {
            const a = rng.normal();
            const w = Math.abs(rng.normal());
            minmax[(p * Hkv + h) * 2 * D + d] = f16Down(a - w);
            minmax[(p * Hkv + h) * 2 * D + D + d] = f16Up(a + w);
          }
        }
      }
      const counts = [2, 9, 40, budgetPages + 1];
      const ids = Array.from({ length: maxPages }, (_, i) => i).sort(() => rng.next() - 0.5);
      const kvIndptr = [0];
      const kvIndices: number[] = [];
      for (const c of counts) {
        kvIndices.push(...ids.splice(0, c));
        kvIndptr.push(kvIndices.length);
      }
      const q = rng.normals(counts.length * Hq * D);
      const off = budgetPages === 5 ? 37 : 0; // written at a word offset (an attention schedule's kvIndices)
      const plan = await planQuestBatch(gpu.dev, {
        Hq,
        Hkv,
        D,
        budgetPages,
        sinkPages,
        maxBatch: 4,
        maxPagesPerSeq: 48,
        maxPages,
        selectedOffset: off,
      });
      const summaries = gpu.dev.upload(minmax, { usage: STORAGE });
      const selected = gpu.dev.upload(new Uint32Array(off + 4 * budgetPages).fill(0xffffffff), { usage: STORAGE });
      const step = plan.schedule({ kvIndptr, kvIndices, kvLastPageLen: counts.map(() => 3) });
      const enc = gpu.dev.device.createCommandEncoder();
      plan.run(enc, { q: gpu.tensor(q, [counts.length, Hq, D]), summaries, selected });
      // Until that run is submitted, the next schedule would change what it reads: refused.
      expect(() => plan.schedule({ kvIndptr, kvIndices, kvLastPageLen: counts.map(() => 3) })).toThrow(/submit/);
      gpu.dev.device.queue.submit([enc.finish()]);
      const got = new Uint32Array(await gpu.dev.readback(selected)).subarray(off);
      const ref = questBatchReference(q, minmax, kvIndptr, kvIndices, { Hq, Hkv, D, budgetPages, sinkPages });
      expect(ref.margin).toBeGreaterThan(1e-4); // no near-tie in this draw: lists must be equal
      expect(Array.from(step.selIndptr)).toEqual(
        [0, ...counts.map((c) => Math.min(c, budgetPages))].map((_, i, a) =>
          a.slice(0, i + 1).reduce((s, x) => s + x, 0),
        ),
      );
      ref.lists.forEach((list, b) => {
        expect(Array.from(got.subarray(step.selIndptr[b]!, step.selIndptr[b + 1]!))).toEqual(list);
        expect(list[list.length - 1]).toBe(kvIndices[kvIndptr[b + 1]! - 1]); // the newest page, last
      });
      plan.dispose();
      gpu.dev.destroyBuffer(summaries);
      gpu.dev.destroyBuffer(selected);
    });
  }

  it('bad inputs are typed', async () => {
    await expect(
      planQuestBatch(gpu.dev, { Hq: 6, Hkv: 4, D: 16, budgetPages: 4, maxBatch: 1, maxPagesPerSeq: 8, maxPages: 8 }),
    ).rejects.toMatchObject({ code: 'E_SHAPE', argument: 'Hq' });
    await expect(
      planQuestBatch(gpu.dev, { Hq: 4, Hkv: 2, D: 16, budgetPages: 1, maxBatch: 1, maxPagesPerSeq: 8, maxPages: 8 }),
    ).rejects.toMatchObject({ code: 'E_ARG', argument: 'budgetPages' });
    const plan = await planQuestBatch(gpu.dev, {
      Hq: 4,
      Hkv: 2,
      D: 16,
      budgetPages: 4,
      maxBatch: 2,
      maxPagesPerSeq: 8,
      maxPages: 8,
    });
    expect(() => plan.schedule({ kvIndptr: [0, 9], kvIndices: new Array(9).fill(0), kvLastPageLen: [1] })).toThrow(
      TesseraError,
    );
    expect(() => plan.schedule({ kvIndptr: [0, 1], kvIndices: [8], kvLastPageLen: [1] })).toThrow(/kvIndices\[0\]/);
    const enc = gpu.dev.device.createCommandEncoder();
    const summaries = gpu.dev.createBuffer({ size: 16, usage: STORAGE });
    const selected = gpu.dev.createBuffer({ size: 64, usage: STORAGE });
    expect(() => plan.run(enc, { q: gpu.tensor(new Float64Array(64), [1, 4, 16]), summaries, selected })).toThrow(
      /schedule/,
    );
    // Sizes are checked per buffer: one that passed once is not re-read, any other is still checked.
    plan.schedule({ kvIndptr: [0, 2], kvIndices: [0, 1], kvLastPageLen: [3] });
    const q = gpu.tensor(new Float64Array(64), [1, 4, 16]);
    const goodSumm = gpu.dev.createBuffer({ size: 8 * 2 * 2 * 16 * 2, usage: STORAGE });
    const goodSel = gpu.dev.createBuffer({ size: 2 * 4 * 4, usage: STORAGE });
    const tiny = gpu.dev.createBuffer({ size: 4, usage: STORAGE });
    expect(() => plan.run(enc, { q, summaries, selected: goodSel })).toThrow(
      expect.objectContaining({ code: 'E_BUFFER', argument: 'summaries' }),
    );
    expect(() => plan.run(enc, { q, summaries: goodSumm, selected: tiny })).toThrow(
      expect.objectContaining({ code: 'E_BUFFER', argument: 'selected' }),
    );
    plan.run(enc, { q, summaries: goodSumm, selected: goodSel });
    plan.run(enc, { q, summaries: goodSumm, selected: goodSel });
    expect(() => plan.run(enc, { q, summaries, selected: goodSel })).toThrow(
      expect.objectContaining({ code: 'E_BUFFER', argument: 'summaries' }),
    );
    expect(() => plan.run(enc, { q, summaries: {} as never, selected: goodSel })).toThrow(
      expect.objectContaining({ code: 'E_BUFFER', argument: 'summaries' }),
    );
    expect(() => plan.run(enc, { q, summaries: undefined as never, selected: goodSel })).toThrow(
      expect.objectContaining({ code: 'E_BUFFER', argument: 'summaries' }),
    );
    expect(() => plan.run(enc, { q, summaries: goodSumm, selected: undefined as never })).toThrow(
      expect.objectContaining({ code: 'E_BUFFER', argument: 'selected' }),
    );
    enc.finish();
    plan.dispose();
    gpu.dev.destroyBuffer(summaries);
    gpu.dev.destroyBuffer(selected);
    gpu.dev.destroyBuffer(goodSumm);
    gpu.dev.destroyBuffer(goodSel);
    gpu.dev.destroyBuffer(tiny);
  });
});
