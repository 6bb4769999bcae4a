/**
 * Loop-iteration bounds of the linear-attention / delta-rule kernels, one small function per
 * shader, to be read against the WGSL beside it. Mesa's llvmpipe stops a shader invocation
 * silently once it has run `TesseraDevice.loopLimit` (65,535) loop iterations, counted over all
 * of its loops together; the plan (`scan.ts`) sizes its segments and splits from these bounds so
 * that no invocation passes `loopBudget` (src/gpu/segments.ts), and rejects a shape with `E_LIMIT` where even
 * the smallest piece would.
 *
 * Counting: a loop that runs n trips costs n + 1 (the trip that finds the exit is counted too),
 * nested loops multiply, an entry point's early return costs 1. Branch-only helper functions
 * (`exp_decay`, `st_value`, `ld_x`, ...) cost nothing: measured on llvmpipe, the recurrent form
 * with per-channel gates (K calls of `exp_decay` per token) stops at the same token as with a
 * scalar gate. Short constant loops (4 trips) are usually unrolled but are counted anyway.
 * Measured on llvmpipe (Mesa 22.3, one head, unsegmented): the recurrent form at K = 64 computes
 * 499 tokens correctly and stops in the 500th, exactly as {@link recurrentLoopIterations}
 * predicts (2 + 130 + 499 x 131 = 65,501 <= 65,535 < 65,632); the chunk scan completes 56 chunks
 * at K = 64 (the bound allows 54), 105 at K = 32 (103) and 28 with the delta rule at K = 64 (28).
 */
/** Chunk length of the parallel form (`CH` in common.wgsl). */
const CH = 64;

/**
 * `recurrent.wgsl` over a segment of `tokens` tokens: the early return (1), loading and storing
 * the K state rows (K + 1 each, and as much again for z with the normaliser), the token loop
 * (tokens + 1) and per token the decay / `S^T k` loop (K + 1; skipped for ungated linear
 * attention without the delta rule) and the update / output loop (K + 1).
 *
 * @example
 * recurrentLoopIterations({ K: 64, gate: 'scalar', delta: false, normalize: false }, 1000); // 131,132: past 65,535
 */
export function recurrentLoopIterations(
  o: { K: number; gate: string; delta: boolean; normalize: boolean },
  tokens: number,
): number {
  const rows = (o.K + 1) * (o.normalize ? 4 : 2);
  const perToken = 1 + (o.gate !== 'none' || o.delta ? 2 : 1) * (o.K + 1);
  return 1 + rows + 1 + tokens * perToken;
}

/**
 * `scan.wgsl` over a segment of `chunks` chunks (each at most 64 tokens; K4 = ceil(K / 4)): the
 * early return (1), loading the state (4 K4 rows + 1, each with its 4-column loop: 5) and
 * storing it (K + 1, each with 5), the chunk loop (chunks + 1) and per chunk: storing the
 * chunk-start state (K + 1), loading the values (65), the delta rule's `V_new = U - W S`
 * (K4 (65 + 1) + 1) and storing V_new (65), the state update (K4 (65 + 1) + 1).
 *
 * @example
 * scanLoopIterations({ K: 64, delta: true }, 32); // 74,692: a 2,048-token sequence is past 65,535
 */
export function scanLoopIterations(o: { K: number; delta: boolean }, chunks: number): number {
  const K4 = Math.ceil(o.K / 4);
  const tokens = CH + 1;
  const update = K4 * (tokens + 1) + 1;
  const perChunk = 1 + (o.K + 1) + tokens + (o.delta ? update + tokens : 0) + update;
  const state = 4 * K4 + 1 + 4 * K4 * 5 + (o.K + 1) + o.K * 5;
  return 1 + state + 1 + chunks * perChunk;
}

/**
 * `solve.wgsl` with `split` workgroups of `wg` invocations per (chunk, value head): the early
 * return (1), the column loop (cols + 1, cols = ceil((K4 + V4) / (wg split)) per invocation) and
 * per column the forward substitution over at most 16 row blocks: 17 + sum_{I<16} (I + 1) = 153.
 *
 * @example
 * solveLoopIterations({ K: 128, V: 4096 }, 4, 1); // 40,658
 */
export function solveLoopIterations(o: { K: number; V: number }, wg: number, split: number): number {
  const cols = Math.ceil((Math.ceil(o.K / 4) + Math.ceil(o.V / 4)) / (wg * split));
  const nb = CH / 4;
  return 1 + cols + 1 + cols * (nb + 1 + (nb * (nb + 1)) / 2);
}

/**
 * `intra.wgsl` with `wg` invocations per (chunk, value head): the early return (1), the block
 * pair loop (ceil(136 / wg) + 1) and per 4x4 block pair: the row and accumulator set-up (5 + 5),
 * the key-channel loop (K4 + 1, plus the scalar gates' 5; per-channel gates on diagonal blocks:
 * K4 (5 + 14) + 1) and the stores (5 + 4 x 5).
 *
 * @example
 * intraLoopIterations({ K: 256, gate: 'vector' }, 64); // 3,761
 */
export function intraLoopIterations(o: { K: number; gate: string }, wg: number): number {
  const K4 = Math.ceil(o.K / 4);
  const nb = CH / 4;
  const pairs = Math.ceil((nb * (nb + 1)) / 2 / wg);
  const dot = o.gate === 'vector' ? Math.max(K4 + 1, K4 * 19 + 1) : K4 + 1 + 5;
  return 1 + pairs + 1 + pairs * (10 + dot + 25);
}

/**
 * `prep.wgsl` with `wg` invocations per (chunk, value head): the early return (1), the key
 * channel loop (ceil(K4 / wg) + 1) and per vec4 of channels the forward and backward token
 * loops (65 each).
 *
 * @example
 * prepLoopIterations({ K: 64 }, 64); // 133
 */
export function prepLoopIterations(o: { K: number }, wg: number): number {
  const q = Math.ceil(Math.ceil(o.K / 4) / wg);
  return 1 + q + 1 + q * 2 * (CH + 1);
}

/**
 * `output.wgsl`: two early returns (2), the key-channel loop (K4 + 1) and the in-chunk loop
 * over the earlier tokens (at most 65).
 *
 * @example
 * outputLoopIterations({ K: 128 }); // 100
 */
export function outputLoopIterations(o: { K: number }): number {
  return 2 + Math.ceil(o.K / 4) + 1 + CH + 1;
}

/**
 * `convert.wgsl`: one row per invocation, K4 + 1 (q and k rows) or V4 + 1 (v rows).
 *
 * @example
 * convertLoopIterations({ K: 64, V: 4096 }); // 1,025
 */
export function convertLoopIterations(o: { K: number; V: number }): number {
  return Math.max(Math.ceil(o.K / 4), Math.ceil(o.V / 4)) + 1;
}
