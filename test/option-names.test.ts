/**
 * One name per concept across the plan options (docs/design.md, "Names"): every family takes the
 * kernel shape as `target` and the query length as `Tq`; the old names (`variant` for the shape,
 * `T` for NSA/DSA/switch) stay accepted as deprecated aliases, and both given with different values
 * is an `E_ARG` error naming both. Validation-level where possible: an invalid value passed through
 * the alias must be rejected, naming the alias as written (so the alias is read), which compiles
 * nothing.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { useGpu } from './helpers/gpu.js';
import { TesseraError } from '../src/errors.js';
import { aliasedOption, kernelTarget } from '../src/options.js';
import {
  createKvCache,
  planAttention,
  planBatchAttention,
  planCascadeDecode,
  planDecode,
  planDsa,
  planNsa,
  planPaged,
  planQuestDecode,
  planSparsePrefill,
  planSparseSwitch,
  planStreamAttention,
  type KvCache,
} from '../src/index.js';

const gpu = useGpu();

/** Awaits `p` and returns the TesseraError it rejects with (fails if it resolves). */
async function rejection(p: Promise<unknown>): Promise<TesseraError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(TesseraError);
  return e as TesseraError;
}

/** A conflict: code E_ARG, argument the new name, the message naming the alias too. */
async function expectConflict(p: Promise<unknown>, name: string, alias: string): Promise<void> {
  const e = await rejection(p);
  expect(e.code).toBe('E_ARG');
  expect(e.argument).toBe(name);
  expect(e.message).toContain(name);
  expect(e.message).toContain(alias);
}

/** A bad value is reported as `E_ARG` naming the option as the caller wrote it. */
async function expectBad(p: Promise<unknown>, name: string): Promise<void> {
  const e = await rejection(p);
  expect(e.code).toBe('E_ARG');
  expect(e.argument).toBe(name);
}

describe('the shared resolver', () => {
  it('prefers the new name, falls back to the alias, accepts equal values, rejects different ones', () => {
    expect(kernelTarget({})).toBe('auto');
    expect(kernelTarget({ target: 'gpu' })).toBe('gpu');
    expect(kernelTarget({ variant: 'cpu' })).toBe('cpu');
    expect(kernelTarget({ target: 'cpu', variant: 'cpu' })).toBe('cpu');
    expect(() => kernelTarget({ target: 'cpu', variant: 'gpu' })).toThrow(/target.*variant/);
    expect(aliasedOption({ T: 5 }, 'Tq', 'T')).toBe(5);
    expect(aliasedOption({ Tq: 6 }, 'Tq', 'T')).toBe(6);
    expect(aliasedOption({}, 'Tq', 'T')).toBeUndefined();
  });
});

describe('kernel shape: target (deprecated alias variant)', () => {
  const bogus = 'bogus' as never;
  const dense = { Tq: 4, Hq: 2, Hkv: 1, D: 8 };
  const decode = { kvLens: [5, 3], Hq: 2, Hkv: 1, D: 8 };
  const batch = { maxBatch: 2, maxQTokens: 2, maxPages: 4, Hq: 2, Hkv: 1, D: 8, pageSize: 16 };
  const paged = { Hq: 2, Hkv: 1, D: 8, pageSize: 16, dtype: 'f32' as const };

  it('kernel plans read either name and reject a conflict', async () => {
    const cases: [string, (o: object) => Promise<unknown>][] = [
      ['planAttention', (o) => planAttention(gpu.dev, { ...dense, ...o })],
      ['planDecode', (o) => planDecode(gpu.dev, { ...decode, ...o })],
      ['planBatchAttention', (o) => planBatchAttention(gpu.dev, { ...batch, ...o })],
      ['planPaged', (o) => planPaged(gpu.dev, { ...paged, ...o })],
    ];
    for (const [what, plan] of cases) {
      await expectBad(plan({ target: bogus }), 'target').catch((e: Error) => {
        throw new Error(`${what} target: ${e.message}`);
      });
      await expectBad(plan({ variant: bogus }), 'variant').catch((e: Error) => {
        throw new Error(`${what} variant: ${e.message}`);
      });
      await expectConflict(plan({ target: 'cpu', variant: 'gpu' }), 'target', 'variant').catch((e: Error) => {
        throw new Error(`${what} conflict: ${e.message}`);
      });
    }
  });

  it('planPaged: the new name and the alias give the same plan (gpu shape on any adapter)', async () => {
    const a = await planPaged(gpu.dev, { ...paged, target: 'gpu' });
    const b = await planPaged(gpu.dev, { ...paged, variant: 'gpu' });
    const c = await planPaged(gpu.dev, { ...paged, target: 'gpu', variant: 'gpu' });
    try {
      for (const p of [a, b, c]) {
        expect(p.target).toBe('gpu');
        expect(p.options.target).toBe('gpu');
        // the resolved options hold the shape once, as target
        expect('variant' in p.options).toBe(false);
        // the deprecated getter still answers, with the same value
        expect(p.variant).toBe(p.target);
      }
    } finally {
      for (const p of [a, b, c]) p.dispose();
    }
  });

  it('stream plans (quest, cascade, exact, sparse prefill) read either name and reject a conflict', async () => {
    let cache: KvCache | undefined;
    try {
      cache = createKvCache(gpu.dev, { Hkv: 1, D: 8, pageSize: 16, dtype: 'f32' });
      const kv = cache;
      const cases: [string, (o: object) => Promise<{ dispose(): void }>][] = [
        ['planQuestDecode', (o) => planQuestDecode(kv, { Hq: 2, ...o })],
        ['planCascadeDecode', (o) => planCascadeDecode(kv, { Hq: 2, seqs: 2, ...o })],
        ['planStreamAttention', (o) => planStreamAttention(kv, { Hq: 2, Tq: 1, ...o })],
        ['planSparsePrefill', (o) => planSparsePrefill(kv, { Hq: 2, Tq: 16, ...o })],
      ];
      for (const [what, plan] of cases) {
        await expectBad(plan({ variant: bogus }), 'variant').catch((e: Error) => {
          throw new Error(`${what} variant: ${e.message}`);
        });
        await expectBad(plan({ target: bogus }), 'target').catch((e: Error) => {
          throw new Error(`${what} target: ${e.message}`);
        });
        await expectConflict(plan({ target: 'gpu', variant: 'cpu' }), 'target', 'variant').catch((e: Error) => {
          throw new Error(`${what} conflict: ${e.message}`);
        });
      }
    } finally {
      cache?.dispose();
    }
  });
});

describe('public plans: the kernel shape is `target`', () => {
  // The committed API report (test/api-report.test.ts keeps it equal to the exported surface)
  // marks members with a @deprecated tag. A member named variant whose type holds the shape's
  // values ('cpu' | 'gpu') is a deprecated alias in every class and interface of the main entry:
  // a plan's variant getter, an option's old name. variant naming something else (TopK's
  // algorithm, NSA's reference) has other values and is left alone.
  const report = readFileSync(join(__dirname, '..', 'api', 'tessera.api.md'), 'utf8');
  const main = report.slice(0, report.indexOf('\n## `tessera/'));
  const blocks = main.split(/\n(?=(?:class|interface) )/).filter((b) => /^(class|interface) /.test(b));

  it('no class or interface exposes a non-deprecated variant with the values cpu / gpu', () => {
    const offenders: string[] = [];
    let shapes = 0;
    for (const b of blocks) {
      const name = b.slice(0, b.indexOf(' {')).trim();
      for (const line of b.split('\n').filter((l) => /^ {2}(readonly )?variant\??: /.test(l))) {
        if (!/'cpu'|'gpu'/.test(line)) continue;
        shapes++;
        if (!line.endsWith('(deprecated)')) offenders.push(`${name}: ${line.trim()}`);
      }
    }
    expect(offenders).toEqual([]);
    // the check saw the deprecated aliases (so it reads the report it means to)
    expect(shapes).toBeGreaterThan(5);
  });

  it('every plan class that has a deprecated variant getter has target beside it', () => {
    const plans = blocks.filter((b) => /^class \w+Plan /.test(b) && /\n {2}variant: .*\(deprecated\)/.test(b));
    expect(plans.map((b) => b.slice(6, b.indexOf(' {')).trim()).sort()).toEqual([
      'AttentionPlan',
      'BatchAttentionPlan',
      'PagedPlan',
    ]);
    for (const b of plans) expect(b).toMatch(/\n {2}(readonly )?target: 'cpu' \| 'gpu'\n/);
  });
});

describe('query length: Tq (deprecated alias T in NSA, DSA and the switch)', () => {
  const nsa = { Hq: 2, Hkv: 1, D: 8, blockSize: 4, blockCount: 2, window: 4 };
  const dsa = { Hq: 2, Hkv: 1, D: 8, HI: 1, DI: 8, topk: 4 };
  const sw = { Hq: 2, Hkv: 1, D: 8, method: 'moba' as const };

  it('reads either name, rejects a missing length, a zero length and a conflict', async () => {
    const cases: [string, (o: object) => Promise<unknown>][] = [
      ['planNsa', (o) => planNsa(gpu.dev, { ...nsa, ...o })],
      ['planDsa', (o) => planDsa(gpu.dev, { ...dsa, ...o })],
      ['planSparseSwitch', (o) => planSparseSwitch(gpu.dev, { ...sw, ...o })],
    ];
    for (const [what, plan] of cases) {
      const named = (e: Error, how: string) => new Error(`${what} ${how}: ${e.message}`);
      await expectBad(plan({}), 'Tq').catch((e: Error) => {
        throw named(e, 'missing');
      });
      await expectBad(plan({ T: 0 }), 'T').catch((e: Error) => {
        throw named(e, 'T: 0');
      });
      await expectBad(plan({ Tq: 0 }), 'Tq').catch((e: Error) => {
        throw named(e, 'Tq: 0');
      });
      await expectConflict(plan({ Tq: 8, T: 9 }), 'Tq', 'T').catch((e: Error) => {
        throw named(e, 'conflict');
      });
    }
  });

  it('planNsa: Tq and the alias T plan the same query rows', async () => {
    const a = await planNsa(gpu.dev, { ...nsa, Tq: 8 });
    const b = await planNsa(gpu.dev, { ...nsa, T: 8 });
    try {
      for (const p of [a, b]) {
        expect(p.options.Tq).toBe(8);
        expect(p.options.T).toBe(8);
        expect(p.options.Tk).toBe(8);
      }
    } finally {
      a.dispose();
      b.dispose();
    }
  });
});
