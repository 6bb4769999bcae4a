/**
 * Statistics and GPU / wall-clock timing of benchmark runs: warm-up, then timed runs; GPU
 * timestamp queries where the adapter has them, else wall clock around `onSubmittedWorkDone`.
 */
import { TesseraError } from '../src/errors.js';
import { ctxOf, type DeviceLike } from '../src/gpu/device.js';
import { GpuTimer, type TimingSource } from '../src/gpu/timer.js';

/** Median, min and max of samples (median of an even count: mean of the middle two). */
export function stats(samples: readonly number[]): { median: number; min: number; max: number } {
  if (samples.length === 0)
    throw new TesseraError('E_ARG', 'stats: no samples', {
      argument: 'samples',
      actual: 0,
      expected: 'at least one sample',
    });
  const s = [...samples].sort((a, b) => a - b);
  const m = s.length >> 1;
  const median = s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
  return { median, min: s[0]!, max: s[s.length - 1]! };
}

export interface Timing {
  median_ms: number;
  min_ms: number;
  max_ms: number;
  runs: number;
  samples: number[];
  source: TimingSource;
  /**
   * Node only: CPU time this process used per timed run (median, ms), over wall time per run
   * times the CPU count. On a software adapter, which runs the GPU work on this process's
   * threads, a share well below 1 means other processes were taking the CPU: the times are
   * slower than the adapter can do.
   */
  cpu_share?: number;
}

export interface TimeOptions {
  /** Untimed runs first (pipeline warm-up, page faults in the software adapter). Default 1. */
  warmup?: number;
  /** Timed runs (at least 1; suites use >= 5 unless a run takes seconds). Default 5. */
  runs?: number;
  /** Wall clock even where timestamps exist (for comparison). */
  forceWallclock?: boolean;
}

function timingFrom(samples: number[], source: TimingSource): Timing {
  const s = stats(samples);
  return { median_ms: s.median, min_ms: s.min, max_ms: s.max, runs: samples.length, samples, source };
}

function checkRuns(o: TimeOptions): { warmup: number; runs: number } {
  const warmup = o.warmup ?? 1;
  const runs = o.runs ?? 5;
  if (!Number.isInteger(warmup) || warmup < 0)
    throw new TesseraError('E_ARG', 'warmup must be an integer >= 0', {
      argument: 'warmup',
      actual: warmup,
      expected: 'an integer >= 0',
    });
  if (!Number.isInteger(runs) || runs < 1)
    throw new TesseraError('E_ARG', 'runs must be an integer >= 1', {
      argument: 'runs',
      actual: runs,
      expected: 'an integer >= 1',
    });
  return { warmup, runs };
}

/**
 * Times GPU work: `encode` records it into a fresh encoder each run; `warmup` untimed runs, then
 * `runs` timed ones. With timestamp queries the time is between an empty pass before the work
 * and one after it, on the GPU's clock; otherwise wall clock from submit to
 * `onSubmittedWorkDone` (includes submit overhead; `source: 'wallclock'` says so).
 *
 * @example
 * const t = await timeGpu(dev, (enc) => plan.run(enc, tensors), { warmup: 1, runs: 5 });
 * console.log(`${t.median_ms.toFixed(2)} ms (${t.source})`);
 */
export async function timeGpu(
  dev: DeviceLike,
  encode: (enc: GPUCommandEncoder) => void,
  opts: TimeOptions = {},
): Promise<Timing> {
  const ctx = ctxOf(dev);
  const { warmup, runs } = checkRuns(opts);
  const timer = new GpuTimer(ctx, { forceWallclock: opts.forceWallclock });
  try {
    return await ctx.scoped('timeGpu', async () => {
      for (let i = 0; i < warmup; i++) await timer.time(encode);
      const samples: number[] = [];
      const shares: number[] = [];
      for (let i = 0; i < runs; i++) {
        const c0 = cpuNow();
        const w0 = performance.now();
        samples.push(await timer.time(encode));
        const c1 = cpuNow();
        if (c0 !== undefined && c1 !== undefined) shares.push((c1 - c0) / ((performance.now() - w0) * cpuCount()));
      }
      const t = timingFrom(samples, timer.source);
      return shares.length ? { ...t, cpu_share: Math.round(stats(shares).median * 100) / 100 } : t;
    });
  } finally {
    timer.destroy();
  }
}

/** Process CPU time in ms (Node), else undefined. */
function cpuNow(): number | undefined {
  const p = (globalThis as { process?: { cpuUsage?: () => { user: number; system: number } } }).process;
  if (!p?.cpuUsage) return undefined;
  const u = p.cpuUsage();
  return (u.user + u.system) / 1000;
}

let cpus: number | undefined;
/** Logical CPUs available to this process (Node: os.availableParallelism; browser: hardwareConcurrency). */
export function cpuCount(): number {
  if (cpus === undefined) {
    const g = globalThis as { navigator?: { hardwareConcurrency?: number } };
    cpus = g.navigator?.hardwareConcurrency ?? 1;
    try {
      const req = (
        globalThis as { process?: { getBuiltinModule?: (m: string) => { availableParallelism?: () => number } } }
      ).process?.getBuiltinModule?.('node:os');
      if (req?.availableParallelism) cpus = req.availableParallelism();
    } catch {
      /* keep the fallback */
    }
  }
  return cpus;
}

/**
 * Times an async host-driven operation by wall clock (for baselines that submit their own work,
 * such as TensorFlow.js: `fn` must wait for its GPU work to finish).
 *
 * @example
 * const t = await timeWall(async () => { const y = f(x); await y.data(); y.dispose(); }, { runs: 3 });
 */
export async function timeWall(fn: () => Promise<void>, opts: TimeOptions = {}): Promise<Timing> {
  const { warmup, runs } = checkRuns(opts);
  for (let i = 0; i < warmup; i++) await fn();
  const samples: number[] = [];
  const shares: number[] = [];
  for (let i = 0; i < runs; i++) {
    const c0 = cpuNow();
    const t0 = performance.now();
    await fn();
    const ms = performance.now() - t0;
    const c1 = cpuNow();
    samples.push(ms);
    if (c0 !== undefined && c1 !== undefined) shares.push((c1 - c0) / (ms * cpuCount()));
  }
  const t = timingFrom(samples, 'wallclock');
  return shares.length ? { ...t, cpu_share: Math.round(stats(shares).median * 100) / 100 } : t;
}
