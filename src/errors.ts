/**
 * Typed errors. Every failure Tessera reports is a {@link TesseraError} with a stable `code`;
 * argument errors also name the argument, the value seen and what was expected.
 *
 * @example
 * try { await attention(dev, { q, k, v }); }
 * catch (e) { if (e instanceof TesseraError && e.code === 'E_SHAPE') console.log(e.argument); }
 */
export type TesseraErrorCode =
  | 'E_ARG' // a value outside what the argument accepts
  | 'E_SHAPE' // a tensor shape that does not match
  | 'E_DTYPE' // a storage dtype that is not accepted here
  | 'E_LIMIT' // a size past the device's (or WebGPU's) limits
  | 'E_UNSUPPORTED' // a valid request this build does not implement (say, a head dim)
  | 'E_NAN' // NaN or Inf where the NaN policy forbids it
  | 'E_BUFFER' // a GPUBuffer that is destroyed, too small, from another device, or lacks usage
  | 'E_STATE' // an object used after dispose, or in the wrong order
  | 'E_NO_ADAPTER' // no WebGPU adapter could be found
  | 'E_DEVICE_LOST' // the GPUDevice was lost; pending work is failed, not hung
  | 'E_GPU_VALIDATION' // a GPU validation error captured by an error scope
  | 'E_GPU_OOM' // a GPU out-of-memory error captured by an error scope
  | 'E_GPU_INTERNAL' // a GPU internal error captured by an error scope
  | 'E_CORRUPT' // data failed an integrity check (checksum) on its way between tiers
  | 'E_IO'; // a host or disk tier read/write failed

export interface TesseraErrorDetails {
  /** The argument at fault, as the caller named it (`q`, `options.window`, `k.shape[2]`). */
  argument?: string;
  /** What was expected, in words (`a multiple of Hkv = 2`). */
  expected?: string;
  /** The value seen, rendered for the message. */
  actual?: unknown;
  cause?: unknown;
}

function render(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(render).join(', ')}]`;
  if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

export class TesseraError extends Error {
  readonly code: TesseraErrorCode;
  readonly argument?: string;
  readonly expected?: string;
  readonly actual?: unknown;
  constructor(code: TesseraErrorCode, message: string, details: TesseraErrorDetails = {}) {
    const parts = [message];
    if (details.argument !== undefined && !message.includes(details.argument)) parts.unshift(`${details.argument}:`);
    if (details.actual !== undefined) parts.push(`got ${render(details.actual)}`);
    if (details.expected !== undefined) parts.push(`expected ${details.expected}`);
    super(`[tessera ${code}] ${parts.join(' ')}`, details.cause !== undefined ? { cause: details.cause } : undefined);
    this.name = 'TesseraError';
    this.code = code;
    this.argument = details.argument;
    this.expected = details.expected;
    this.actual = details.actual;
  }
}

/** Throws an argument error of the given code; returns `never` so it reads well in guards. */
export function fail(
  code: TesseraErrorCode,
  argument: string,
  message: string,
  actual?: unknown,
  expected?: string,
): never {
  throw new TesseraError(code, `${argument}: ${message}`, { argument, actual, expected });
}

/** Throws `E_ARG` unless `cond`. */
export function check(
  cond: boolean,
  argument: string,
  expected: string,
  actual?: unknown,
  code: TesseraErrorCode = 'E_ARG',
): asserts cond {
  if (!cond) fail(code, argument, 'invalid value;', actual, expected);
}

/** The largest u32: the default upper bound of {@link checkInt} (options reach shaders as u32). */
export const U32_MAX = 0xffffffff;

/**
 * An integer in `[min, max]` (default `[1, U32_MAX]`). The default bound is u32's because integer
 * options (windows, sinks, block sizes, positions, budgets, ...) reach the shaders as u32 uniforms;
 * byte counts and other host-only sizes pass `max: Number.MAX_SAFE_INTEGER`.
 */
export function checkInt(v: unknown, argument: string, opts: { min?: number; max?: number } = {}): number {
  const min = opts.min ?? 1;
  const max = opts.max ?? U32_MAX;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    fail(
      'E_ARG',
      argument,
      'invalid value;',
      v,
      `an integer in [${min}, ${max === Number.MAX_SAFE_INTEGER ? 'inf' : max}]`,
    );
  }
  return v;
}

/** Largest magnitude {@link checkF32} accepts: f32 range with room for the kernels' log2(e) factor. */
export const F32_PARAM_MAX = 2 ** 126;

/**
 * A finite number that a shader can take as an f32 parameter: `|v| <= 2^126` (f32 overflows at
 * 2^128; kernels multiply scales by log2(e)), so it never becomes Inf or NaN on the GPU.
 */
export function checkF32(v: unknown, argument: string, expected = 'a finite number'): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) fail('E_ARG', argument, 'invalid value;', v, expected);
  if (Math.abs(v) > F32_PARAM_MAX)
    fail('E_ARG', argument, 'does not fit a shader f32 parameter;', v, `${expected} of magnitude at most 2^126`);
  return v;
}

/** A finite number. */
export function checkFinite(v: unknown, argument: string, expected = 'a finite number'): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) fail('E_ARG', argument, 'invalid value;', v, expected);
  return v;
}
