/**
 * src/pool: page allocation (free list), per-sequence page lists and lengths, reference counts,
 * step tables (CSR page table + per-row batch indices and positions), window release with sinks,
 * typed errors that leave the pool as it was. Host only.
 */
import { describe, expect, it } from 'vitest';
import { TesseraError } from '../src/errors.js';
import { Rng } from '../src/testing.js';
import { createPagePool } from '../src/pool/index.js';

function code(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(TesseraError);
    return `${(e as TesseraError).code} ${(e as TesseraError).argument ?? ''}`.trim();
  }
  return 'none';
}

describe('page pool', () => {
  it('prefill (ragged) then decode: pages, CSR tables, rows and positions', () => {
    const pool = createPagePool({ capacity: 16, pageSize: 4 });
    const a = pool.addSequence();
    const b = pool.addSequence();
    const c = pool.addSequence();
    const t = pool.step([
      { seq: a, tokens: 5 },
      { seq: b, tokens: 0 },
      { seq: c, tokens: 8 },
    ]);
    expect(Array.from(t.kvIndptr)).toEqual([0, 2, 2, 4]);
    expect(Array.from(t.kvIndices)).toEqual([0, 1, 2, 3]);
    expect(Array.from(t.kvLastPageLen)).toEqual([1, 0, 4]);
    expect(Array.from(t.kvLens)).toEqual([5, 0, 8]);
    expect(Array.from(t.qoIndptr)).toEqual([0, 5, 5, 13]);
    expect(Array.from(t.batchIndices)).toEqual([0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2]);
    expect(Array.from(t.positions)).toEqual([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6, 7]);
    const d = pool.step([
      { seq: c, tokens: 1 },
      { seq: a, tokens: 1 },
      { seq: b, tokens: 1 },
    ]);
    // c crosses into a new page (4), a stays in its page 1, b gets its first page (5).
    expect(Array.from(d.kvIndptr)).toEqual([0, 3, 5, 6]);
    expect(Array.from(d.kvIndices)).toEqual([2, 3, 4, 0, 1, 5]);
    expect(Array.from(d.kvLastPageLen)).toEqual([1, 2, 1]);
    expect(Array.from(d.batchIndices)).toEqual([0, 1, 2]);
    expect(Array.from(d.positions)).toEqual([8, 5, 0]);
    expect(pool.free).toBe(10);
    pool.validate();
  });

  it('a step that does not fit is E_LIMIT and changes nothing', () => {
    const pool = createPagePool({ capacity: 4, pageSize: 2 });
    const a = pool.addSequence();
    const b = pool.addSequence();
    pool.step([{ seq: a, tokens: 3 }]);
    const before = { free: pool.free, a: [...pool.pages(a)], la: pool.length(a) };
    expect(
      code(() =>
        pool.step([
          { seq: a, tokens: 2 },
          { seq: b, tokens: 3 },
        ]),
      ),
    ).toBe('E_LIMIT entries'); // 1 + 2 pages, 2 free
    expect({ free: pool.free, a: [...pool.pages(a)], la: pool.length(a) }).toEqual(before);
    expect(pool.length(b)).toBe(0);
    pool.step([
      { seq: a, tokens: 1 },
      { seq: b, tokens: 4 },
    ]); // 0 + 2 pages: fits exactly
    expect(pool.free).toBe(0);
    pool.validate();
  });

  it('reference counts: a retained page outlives its sequence; release frees it; misuse is E_STATE', () => {
    const pool = createPagePool({ capacity: 8, pageSize: 4 });
    const a = pool.addSequence();
    pool.step([{ seq: a, tokens: 8 }]);
    const [p0, p1] = pool.pages(a) as number[];
    pool.retain(p0!);
    expect(pool.refCount(p0!)).toBe(2);
    pool.removeSequence(a);
    expect(pool.refCount(p0!)).toBe(1);
    expect(pool.refCount(p1!)).toBe(0);
    expect(pool.free).toBe(7);
    pool.release(p0!);
    expect(pool.free).toBe(8);
    expect(code(() => pool.release(p0!))).toBe('E_STATE page');
    expect(code(() => pool.retain(p1!))).toBe('E_STATE page');
    expect(code(() => pool.retain(8))).toBe('E_ARG page');
    pool.validate();
  });

  it("writing into a shared partial last page is refused (copy-on-write is the caller's)", () => {
    const pool = createPagePool({ capacity: 8, pageSize: 4 });
    const a = pool.addSequence();
    pool.step([{ seq: a, tokens: 6 }]);
    pool.retain(pool.pages(a)[1]!);
    expect(code(() => pool.step([{ seq: a, tokens: 1 }]))).toBe('E_STATE entries[0].seq');
    expect(pool.length(a)).toBe(6);
    pool.release(pool.pages(a)[1]!);
    pool.step([{ seq: a, tokens: 1 }]);
    expect(pool.length(a)).toBe(7);
  });

  it('window release keeps sink pages and the window, frees the rest; tables fill holes', () => {
    const pool = createPagePool({ capacity: 32, pageSize: 4 });
    const a = pool.addSequence();
    pool.step([{ seq: a, tokens: 30 }]); // pages 0..7
    // window 9: the next query (position >= 29) sees keys >= 21: pages 5.. stay; sinks 5 keep pages 0, 1.
    expect(pool.releaseOutsideWindow(a, { window: 9, sinkTokens: 5 })).toBe(3);
    expect(pool.pages(a)).toEqual([0, 1, -1, -1, -1, 5, 6, 7]);
    expect(pool.free).toBe(32 - 5);
    const t = pool.tables([a]);
    expect(Array.from(t.kvIndices)).toEqual([0, 1, 7, 7, 7, 5, 6, 7]);
    expect(Array.from(pool.tables([a], 0).kvIndices)).toEqual([0, 1, 0, 0, 0, 5, 6, 7]);
    // Idempotent; decode steps release more as the window slides.
    expect(pool.releaseOutsideWindow(a, { window: 9, sinkTokens: 5 })).toBe(0);
    for (let i = 0; i < 4; i++) pool.step([{ seq: a, tokens: 1 }]);
    expect(pool.releaseOutsideWindow(a, { window: 9, sinkTokens: 5 })).toBe(1);
    expect(pool.pages(a).slice(0, 6)).toEqual([0, 1, -1, -1, -1, -1]);
    pool.validate();
    pool.removeSequence(a);
    expect(pool.free).toBe(32);
  });

  it('random steps, releases and removals keep every invariant', () => {
    const rng = new Rng(3);
    const pool = createPagePool({ capacity: 40, pageSize: 3 });
    const live: number[] = [];
    for (let i = 0; i < 400; i++) {
      const op = rng.int(0, 9);
      if (op === 0 || live.length === 0) live.push(pool.addSequence());
      else if (op === 1) pool.removeSequence(live.splice(rng.int(0, live.length - 1), 1)[0]!);
      else if (op === 2)
        pool.releaseOutsideWindow(live[rng.int(0, live.length - 1)]!, {
          window: rng.int(1, 10),
          sinkTokens: rng.int(0, 4),
        });
      else {
        const entries = live.filter(() => rng.next() < 0.7).map((seq) => ({ seq, tokens: rng.int(0, 5) }));
        const free = pool.free;
        try {
          const t = pool.step(entries);
          expect(t.positions.length).toBe(entries.reduce((s, e) => s + e.tokens, 0));
          entries.forEach((e, b) => expect(t.kvLens[b]).toBe(pool.length(e.seq)));
        } catch (e) {
          expect((e as TesseraError).code).toBe('E_LIMIT');
          expect(pool.free).toBe(free);
        }
      }
      pool.validate();
    }
  });

  it('bad inputs are typed', () => {
    expect(code(() => createPagePool({ capacity: 0, pageSize: 4 }))).toBe('E_ARG capacity');
    expect(code(() => createPagePool({ capacity: 4, pageSize: 1.5 }))).toBe('E_ARG pageSize');
    const pool = createPagePool({ capacity: 4, pageSize: 4 });
    const a = pool.addSequence();
    expect(code(() => pool.step([{ seq: 7, tokens: 1 }]))).toBe('E_ARG entries[0].seq');
    expect(code(() => pool.step([{ seq: a, tokens: -1 }]))).toBe('E_ARG entries[0].tokens');
    expect(
      code(() =>
        pool.step([
          { seq: a, tokens: 1 },
          { seq: a, tokens: 1 },
        ]),
      ),
    ).toBe('E_ARG entries[1].seq');
    expect(code(() => pool.step([{ seq: a, tokens: 1.5 }]))).toBe('E_ARG entries[0].tokens');
    expect(code(() => pool.step([{ seq: a, tokens: 2 ** 32 }]))).toBe('E_ARG entries[0].tokens');
    // @ts-expect-error a missing entry is refused by name
    expect(code(() => pool.step([{ seq: a, tokens: 1 }, undefined]))).toBe('E_ARG entries[1].seq');
    expect(code(() => pool.tables([a, 9]))).toBe('E_ARG seqs[1]');
    expect(code(() => pool.releaseOutsideWindow(a, { window: 0 }))).toBe('E_ARG window');
    expect(code(() => pool.length(9))).toBe('E_ARG seq');
    expect(pool.length(a)).toBe(0);
    expect(pool.used).toBe(0); // the refused steps allocated nothing
  });

  it('decode steps reuse the table storage: each step returns its own values, with no stale entries', () => {
    const pool = createPagePool({ capacity: 16, pageSize: 4 });
    const a = pool.addSequence();
    const b = pool.addSequence();
    pool.step([
      { seq: a, tokens: 3 },
      { seq: b, tokens: 1 },
    ]);
    const entries = [
      { seq: a, tokens: 1 },
      { seq: b, tokens: 1 },
    ];
    for (let s = 0; s < 6; s++) {
      const t = pool.step(entries);
      const la = 4 + s;
      const lb = 2 + s;
      const pa = pool.pages(a);
      const pb = pool.pages(b);
      expect(Array.from(t.kvLens)).toEqual([la, lb]);
      expect(Array.from(t.kvIndptr)).toEqual([0, pa.length, pa.length + pb.length]);
      expect(Array.from(t.kvIndices)).toEqual([...pa, ...pb]);
      expect(Array.from(t.kvLastPageLen)).toEqual([la - 4 * (pa.length - 1), lb - 4 * (pb.length - 1)]);
      expect(Array.from(t.qoIndptr)).toEqual([0, 1, 2]);
      expect(Array.from(t.batchIndices)).toEqual([0, 1]);
      expect(Array.from(t.positions)).toEqual([la - 1, lb - 1]);
      // the page table of the same sequences without new rows is the same
      const u = pool.tables([a, b]);
      expect(Array.from(u.kvIndices)).toEqual([...pa, ...pb]);
      expect(Array.from(u.kvLens)).toEqual([la, lb]);
    }
  });
});
