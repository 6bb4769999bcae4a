/** The JSON shapes of benchmark results, shared by the suites, the tables, the plots and the writer. */
import type { TimingSource } from '../src/gpu/timer.js';

/** One measured configuration. The JSON shape every suite shares. */
export interface BenchResult {
  suite: string;
  /** `tessera`, `tfjs`, or a labelled variant (`tessera-norobust`). */
  impl: 'tessera' | 'tfjs' | string;
  T: number;
  D: number;
  H: number;
  dtype: string;
  median_ms: number;
  min_ms: number;
  max_ms: number;
  runs: number;
  /** Floating-point operations of one run (a multiply-add counts 2). */
  flops: number;
  /** Bytes one run must move at least (inputs read once, outputs written once). */
  bytes: number;
  /** {@link pctRoofline} of the median. */
  pct_roofline: number;
  /** Sub-variant within a suite (`prefill`, `decode`, `chunk`, ...). */
  mode?: string;
  [extra: string]: unknown;
}

/** The adapter's roofline, measured in the same run as the results it judges. */
export interface Roofline {
  /**
   * Bandwidth of the copy probe, GB/s (10^9 bytes/s), counting bytes read + bytes written, from
   * the best (minimum) time of its runs, as STREAM reports: a ceiling, which other processes on
   * the machine can only lower.
   */
  copy_gbps: number;
  /** Rate of the matmul probe, GFLOP/s (10^9 flop/s, a multiply-add is 2), from its best time. */
  matmul_gflops: number;
  /** How the probes were timed. */
  source: TimingSource;
  /** The copy probe: variant, bytes per run, timing. */
  copy: {
    variant: string;
    bytes: number;
    median_ms: number;
    min_ms: number;
    max_ms: number;
    runs: number;
    variants?: Record<string, number>;
    cpu_share?: number;
  };
  /** The matmul probe that won, its size, timing, and every variant tried (GFLOP/s). */
  matmul: {
    variant: string;
    M: number;
    N: number;
    K: number;
    median_ms: number;
    min_ms: number;
    max_ms: number;
    runs: number;
    variants: Record<string, number>;
    cpu_share?: number;
  };
  adapter: string;
  adapter_class: 'cpu' | 'gpu';
  [extra: string]: unknown;
}

/** What {@link writeResults} writes: `{adapter, roofline, results}` plus optional metadata. */
export interface BenchReport {
  adapter: string;
  roofline: Roofline;
  results: BenchResult[];
  [extra: string]: unknown;
}
