/**
 * What Tessera needs to know about an adapter, decided in one place: its class (CPU or GPU kernel
 * shapes), a short name for reports and result folders, and the loop cap of one shader invocation.
 * {@link classifyAdapter} reads the adapter's strings once; `TesseraDevice` takes all three from it.
 */
import { TesseraError } from '../errors.js';

/**
 * `cpu` for software adapters (SwiftShader, llvmpipe, WARP): they run invocations as CPU code and
 * want different kernel shapes than real GPUs. Kernels pick a variant per class in `plan`.
 */
export type AdapterClass = 'cpu' | 'gpu';

export interface AdapterDescription {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallbackAdapter: boolean;
  subgroupMinSize?: number;
  subgroupMaxSize?: number;
}

/**
 * Mesa's gallivm (llvmpipe, lavapipe, softpipe) stops a shader invocation silently once it has
 * run 65,535 loop iterations in total, counted over all of its loops together (one limiter per
 * invocation, decremented at every loop back-edge; measured here: a 100,000-iteration loop stops
 * at 65,535, a 300 x 300 nested loop after 65,209 inner iterations). Kernels whose per-invocation
 * loops grow with the problem size split their work across invocations or dispatches to stay
 * below it (see `loopLimit`).
 */
export const GALLIVM_LOOP_LIMIT = 65535;

/**
 * The loop iterations one invocation may run under a loop limit: 90% of it (the rest a margin
 * for what the kernels' bound functions cannot see), `Infinity` where there is no cap. Takes the
 * limit or anything holding it (a `TesseraDevice`). Every kernel sizes its splits from this one
 * function.
 *
 * The kernels' bound functions count what gallivm counts (measured on llvmpipe): a loop that runs
 * n times costs n + 1 (the trip that finds the exit reaches the loop's end too), nested loops
 * multiply, and a call of a function holding a loop or an early return costs 1 more (the compiler
 * wraps such bodies in a one-trip loop). Short constant loops are often unrolled (cost 0) but are
 * counted anyway; branch-only helpers cost nothing.
 *
 * @example
 * loopBudget(65535); // 58,981
 * loopBudget(dev);   // Infinity on SwiftShader
 */
export function loopBudget(limit: number | { readonly loopLimit: number }): number {
  const l = typeof limit === 'number' ? limit : limit?.loopLimit;
  if (typeof l !== 'number' || !(l >= 1)) {
    throw new TesseraError('E_ARG', 'loopLimit: is not a positive number', {
      argument: 'loopLimit',
      actual: l,
      expected: 'a number >= 1 (or Infinity), or a TesseraDevice',
    });
  }
  return Number.isFinite(l) ? Math.floor(l * 0.9) : Number.POSITIVE_INFINITY;
}

/** The loop cap of an adapter, from its description: {@link GALLIVM_LOOP_LIMIT} on Mesa's gallivm. */
export function adapterLoopLimit(a: AdapterDescription): number {
  const all = [a.architecture, a.description, a.vendor, a.device].join(' ').toLowerCase();
  return /llvmpipe|lavapipe|softpipe|gallivm/.test(all) ? GALLIVM_LOOP_LIMIT : Number.POSITIVE_INFINITY;
}

/** What {@link classifyAdapter} decides about an adapter. */
export interface AdapterClassification {
  /** `cpu` for software adapters (and fallback adapters), else `gpu`. */
  class: AdapterClass;
  /** A short name for reports and result folders, e.g. `swiftshader`, `nvidia-ampere`. */
  name: string;
  /** The adapter's own loop cap per invocation: {@link GALLIVM_LOOP_LIMIT} on Mesa's gallivm, else `Infinity`. */
  loopLimit: number;
}

const SOFTWARE_NAMES = ['swiftshader', 'llvmpipe', 'lavapipe', 'warp'];

/**
 * Class, name and loop cap of an adapter, from its description (the one place that matches the
 * adapter's vendor, architecture, device and description strings).
 *
 * @example
 * classifyAdapter(dev.adapter); // { class: 'cpu', name: 'swiftshader', loopLimit: Infinity }
 */
export function classifyAdapter(a: AdapterDescription): AdapterClassification {
  const all = [a.architecture, a.description, a.vendor, a.device].join(' ').toLowerCase();
  const cls: AdapterClass =
    a.isFallbackAdapter || /swiftshader|llvmpipe|lavapipe|softpipe|warp|microsoft basic/.test(all) ? 'cpu' : 'gpu';
  return { class: cls, name: adapterShortName(a, all), loopLimit: adapterLoopLimit(a) };
}

function adapterShortName(a: AdapterDescription, all: string): string {
  for (const soft of SOFTWARE_NAMES) if (all.includes(soft)) return soft;
  const base = (a.architecture || a.vendor || a.description || 'unknown').toLowerCase();
  const vendor = a.vendor && a.vendor.toLowerCase() !== base ? `${a.vendor.toLowerCase()}-` : '';
  return `${vendor === 'google-' ? '' : vendor}${base}`.replace(/[^a-z0-9._-]+/g, '-');
}

/** The adapter's description from WebGPU's `GPUAdapterInfo` (missing fields empty). */
export function describeAdapter(info: GPUAdapterInfo | undefined, isFallback = false): AdapterDescription {
  const i = (info ?? {}) as Partial<GPUAdapterInfo> & {
    isFallbackAdapter?: boolean;
    subgroupMinSize?: number;
    subgroupMaxSize?: number;
  };
  return {
    vendor: i.vendor ?? '',
    architecture: i.architecture ?? '',
    device: i.device ?? '',
    description: i.description ?? '',
    isFallbackAdapter: Boolean(i.isFallbackAdapter ?? isFallback),
    subgroupMinSize: i.subgroupMinSize,
    subgroupMaxSize: i.subgroupMaxSize,
  };
}
