/** CPU-side timings (plan, encode) with Benchmark.js. */

/** A CPU-side measurement by Benchmark.js. */
export interface CpuTiming {
  mean_us: number;
  /** Relative margin of error, percent. */
  rme_pct: number;
  samples: number;
}

/**
 * Measures a synchronous CPU-side operation (planning with a warm cache, encoding a plan into a
 * command encoder) with Benchmark.js, which picks the iteration count for a stable mean.
 *
 * @example
 * const enc = await measureCpu('encode', () => { const e = dev.device.createCommandEncoder(); plan.run(e, t); e.finish(); });
 * console.log(enc.mean_us);
 */
export async function measureCpu(name: string, fn: () => void, opts: { maxTime?: number } = {}): Promise<CpuTiming> {
  const { default: Benchmark } = (await import('benchmark')) as unknown as { default: BenchmarkCtor };
  return new Promise<CpuTiming>((resolveP, reject) => {
    const b = new Benchmark(name, fn, {
      maxTime: opts.maxTime ?? 0.5,
      minSamples: 5,
      onComplete() {
        if (b.error) reject(b.error);
        else resolveP({ mean_us: b.stats.mean * 1e6, rme_pct: b.stats.rme, samples: b.stats.sample.length });
      },
      onError(ev: { target?: { error?: unknown } }) {
        reject(ev?.target?.error ?? new Error(`benchmark ${name} failed`));
      },
    });
    b.run({ async: false });
  });
}

interface BenchmarkInstance {
  error?: unknown;
  stats: { mean: number; rme: number; sample: number[] };
  run(o: { async: boolean }): void;
}
type BenchmarkCtor = new (name: string, fn: () => void, o: Record<string, unknown>) => BenchmarkInstance;
