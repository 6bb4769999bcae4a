import { describe, expect, it } from 'vitest';
import {
  loopBudget,
  loops,
  maxUnits,
  planLoopLimit,
  segment,
  segmentUniforms,
  SEGMENT_FIELDS,
  withLoopLimit,
} from '../src/gpu/segments.js';
import { recurrentLoopIterations } from '../kernels/linear/loops.js';

const err = { op: 'test', what: 'one unit', argument: 'K', actual: 7, expected: 'a smaller K' };

describe('segments (src/gpu/segments.ts)', () => {
  it('counting rules: a loop of n trips costs n + 1, nested loops multiply, calls and early returns cost 1', () => {
    expect(loops.loop(0)).toBe(1);
    expect(loops.loop(10)).toBe(11);
    expect(loops.loop(10, loops.loop(4))).toBe(11 + 10 * 5);
    expect(loops.call(loops.loop(3))).toBe(5);
    // the recurrent linear form written with the rules equals its hand-counted bound
    const o = { K: 64, gate: 'scalar', delta: false, normalize: false };
    // early return; load and store the state rows; per token the decay and the update loops
    for (const t of [0, 1, 499, 1000]) {
      expect(loops.ret + 2 * loops.loop(o.K) + loops.loop(t, 2 * loops.loop(o.K))).toBe(recurrentLoopIterations(o, t));
    }
  });

  it('segment: no cap, one segment; under a cap, the fewest equal segments, each within the budget', () => {
    const cost = (n: number) => 150 + 67 * n;
    const none = segment(5000, cost, Infinity, err);
    expect(none).toMatchObject({ count: 1, length: 5000, budget: Infinity });
    expect(none.segments).toEqual([{ begin: 0, end: 5000, carry: false, last: true }]);
    const s = segment(5000, cost, 65535, err);
    expect(s.budget).toBe(loopBudget(65535));
    expect(cost(s.length)).toBeLessThanOrEqual(s.budget);
    expect(cost(s.length + 1)).toBeGreaterThan(s.budget);
    expect(s.count).toBe(Math.ceil(5000 / s.length));
    expect(s.bound).toBe(cost(s.length));
    // contiguous, covering, carry on all but the first, last on the last only
    let at = 0;
    s.segments.forEach((g, i) => {
      expect(g.begin).toBe(at);
      expect(g.end).toBeGreaterThan(g.begin);
      expect(g.carry).toBe(i > 0);
      expect(g.last).toBe(i === s.count - 1);
      at = g.end;
    });
    expect(at).toBe(5000);
    // exactly fitting: one segment
    expect(segment(s.length, cost, 65535, err).count).toBe(1);
    expect(segment(s.length + 1, cost, 65535, err).count).toBe(2);
  });

  it('segment: a non-affine cost (ceil terms) still gets the largest fitting length', () => {
    const cost = (n: number) => n * 5 + 2 * Math.ceil(n / 64) + 13;
    const s = segment(100_000, cost, 4096, err);
    expect(cost(s.length)).toBeLessThanOrEqual(loopBudget(4096));
    expect(cost(s.length + 1)).toBeGreaterThan(loopBudget(4096));
  });

  it('segment: not even one unit fits is E_LIMIT naming the argument', () => {
    expect(() => segment(10, (n) => 5000 * n, 4096, err)).toThrow(
      expect.objectContaining({ code: 'E_LIMIT', argument: 'K' }),
    );
    expect(() => segment(10, (n) => 10 * n, 'x' as unknown as number, err)).toThrow(
      expect.objectContaining({ code: 'E_ARG', argument: 'loopLimit' }),
    );
  });

  it('maxUnits: the largest count within the budget; Infinity without a cap, 0 when none fits', () => {
    expect(maxUnits((n) => 150 + 67 * n, 65535)).toBe(Math.floor((loopBudget(65535) - 150) / 67));
    expect(maxUnits((n) => 150 + 67 * n, Infinity)).toBe(Infinity);
    expect(maxUnits((n) => 99_999 * n, 65535)).toBe(0);
  });

  it('planLoopLimit: the device cap, or the lower plan option; a bad option is E_ARG naming loopLimit', () => {
    expect(planLoopLimit({ loopLimit: Infinity })).toBe(Infinity);
    expect(planLoopLimit({ loopLimit: Infinity }, 4096)).toBe(4096);
    expect(planLoopLimit({ loopLimit: 65535 }, 100_000)).toBe(65535);
    for (const bad of [0, 255, 1000.5, NaN, -1]) {
      expect(() => planLoopLimit({ loopLimit: Infinity }, bad)).toThrow(
        expect.objectContaining({ code: 'E_ARG', argument: 'loopLimit' }),
      );
    }
  });

  it('one spelling of the segment uniforms', () => {
    expect(SEGMENT_FIELDS.map(([k]) => k)).toEqual(['seg_begin', 'seg_end', 'seg_carry', 'seg_last']);
    expect(segmentUniforms({ begin: 3, end: 9, carry: true, last: false })).toEqual({
      seg_begin: 3,
      seg_end: 9,
      seg_carry: 1,
      seg_last: 0,
    });
  });

  it('withLoopLimit: the device itself at its own cap, else one view per cap that forwards everything else', () => {
    const ctx = {
      loopLimit: Number.POSITIVE_INFINITY,
      held: 1,
      hold(n: number) {
        this.held += n;
        return this.held;
      },
    };
    expect(withLoopLimit(ctx, Number.POSITIVE_INFINITY)).toBe(ctx);
    const v = withLoopLimit(ctx, 4096);
    expect(v).not.toBe(ctx);
    expect(v.loopLimit).toBe(4096);
    expect(ctx.loopLimit).toBe(Number.POSITIVE_INFINITY);
    expect(withLoopLimit(ctx, 4096)).toBe(v);
    expect(withLoopLimit(ctx, 1024).loopLimit).toBe(1024);
    // state lives on the device: writes through the view land there
    expect(v.hold(2)).toBe(3);
    expect(ctx.held).toBe(3);
    expect(Object.keys(v)).toEqual(Object.keys(ctx));
  });
});
