/** Benchmark results as tables: plain text for the console, Markdown for `bench/results`. */
import type { BenchReport, BenchResult, Roofline } from './types.js';

const fmt = (x: number, d = 2) =>
  Number.isFinite(x) ? (Math.abs(x) >= 1000 ? x.toFixed(0) : x.toFixed(d)) : String(x);

/** The key results are matched on for speedups (same T, D, H, dtype, mode). */
function configKey(r: BenchResult): string {
  return `${r.mode ?? ''}|${r.T}|${r.D}|${r.H}|${r.dtype}`;
}

/**
 * Speedup of each result over `baseline` (same configuration), or undefined. Where both rows say
 * whether they used subgroups (`subgroups: boolean`), only rows that agree are compared.
 */
export function speedups(results: readonly BenchResult[], baseline = 'tfjs'): Map<BenchResult, number> {
  const base = new Map<string, BenchResult[]>();
  for (const r of results) if (r.impl === baseline) base.set(configKey(r), [...(base.get(configKey(r)) ?? []), r]);
  const out = new Map<BenchResult, number>();
  for (const r of results) {
    const b = base
      .get(configKey(r))
      ?.find(
        (x) => typeof x.subgroups !== 'boolean' || typeof r.subgroups !== 'boolean' || x.subgroups === r.subgroups,
      );
    if (b && r.impl !== baseline) out.set(r, b.median_ms / r.median_ms);
  }
  return out;
}

/**
 * Impl names that get a speedup column when present in the results: `tfjs` (the TensorFlow.js
 * baseline), `ort` (ONNX Runtime WebGPU) and `dense` (Tessera's dense flash attention, as sparse
 * and linear suites label it).
 */
export const BASELINES = ['tfjs', 'ort', 'dense'];

/** Rows of the results table (shared by the terminal and the Markdown output). */
export function tableRows(
  results: readonly BenchResult[],
  baselines: readonly string[] = BASELINES,
): { header: string[]; rows: string[][] } {
  const present = baselines.filter((b) => results.some((r) => r.impl === b));
  const sps = present.map((b) => speedups(results, b));
  const hasMode = results.some((r) => r.mode !== undefined);
  // suites that report several ops (bench linear: suite = op name) get a column for it
  const hasSuites = new Set(results.map((r) => r.suite)).size > 1;
  // subgroups on/off (bench dense --subgroups) and baselines' error against Tessera, when present
  const hasSg = results.some((r) => typeof r.subgroups === 'boolean');
  const hasDiff = results.some((r) => typeof r.max_abs_diff === 'number');
  const header = [
    ...(hasSuites ? ['suite'] : []),
    'impl',
    ...(hasMode ? ['mode'] : []),
    ...(hasSg ? ['subgroups'] : []),
    'T',
    'D',
    'H',
    'dtype',
    'median ms',
    'min ms',
    'max ms',
    'runs',
    'GFLOP/s',
    'GB/s',
    '% roofline',
    ...(hasDiff ? ['max abs diff'] : []),
    ...present.map((b) => `vs ${b}`),
  ];
  const rows = results.map((r) => [
    ...(hasSuites ? [r.suite] : []),
    r.impl,
    ...(hasMode ? [r.mode ?? ''] : []),
    ...(hasSg ? [typeof r.subgroups === 'boolean' ? (r.subgroups ? 'on' : 'off') : ''] : []),
    String(r.T),
    String(r.D),
    String(r.H),
    r.dtype,
    fmt(r.median_ms),
    fmt(r.min_ms),
    fmt(r.max_ms),
    String(r.runs),
    fmt(r.flops / (r.median_ms * 1e6)),
    fmt(r.bytes / (r.median_ms * 1e6), 3),
    fmt(r.pct_roofline, 1),
    ...(hasDiff ? [typeof r.max_abs_diff === 'number' ? r.max_abs_diff.toExponential(1) : ''] : []),
    ...sps.map((sp) => (sp.has(r) ? `${fmt(sp.get(r)!, 1)}x` : '')),
  ]);
  return { header, rows };
}

/** A plain-text table for the terminal. */
export function formatTable(results: readonly BenchResult[], baselines: readonly string[] = BASELINES): string {
  const { header, rows } = tableRows(results, baselines);
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ');
  return [line(header), ...rows.map(line)].join('\n');
}

/** One-line summary of a roofline. */
export function describeRoofline(r: Roofline): string {
  return `copy ${fmt(r.copy_gbps, 3)} GB/s (${r.copy.variant}, ${(r.copy.bytes / 2 ** 20).toFixed(0)} MiB moved), matmul ${fmt(r.matmul_gflops, 3)} GFLOP/s (${r.matmul.variant}, ${r.matmul.M}x${r.matmul.N}x${r.matmul.K}), timed by ${r.source}`;
}

/** The Markdown page of a report: roofline, then the table. */
export function markdownReport(suite: string, report: BenchReport, plots: string[] = []): string {
  const { header, rows } = tableRows(report.results);
  const meta = Object.entries(report)
    .filter(([k]) => !['adapter', 'roofline', 'results'].includes(k))
    .map(([k, v]) => `- ${k}: ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`);
  return [
    `# ${suite} on ${report.adapter}`,
    '',
    `Roofline (same run): ${describeRoofline(report.roofline)}.`,
    '',
    `| ${header.join(' | ')} |`,
    `|${header.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
    '',
    ...(meta.length ? [...meta, ''] : []),
    ...plots.map((p) => `![${p}](${p})`),
    '',
  ].join('\n');
}
