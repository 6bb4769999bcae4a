/** SVG line plots of benchmark results (Vega-Lite rendered headless by Vega, no canvas needed). */
import { optionalImport } from '../src/cli-common.js';
import type { BenchResult } from './types.js';

/** A line plot to render. */
export interface PlotSpec {
  /** File name stem: `<suite>` + (`-` + name). Empty for the main plot. */
  name: string;
  title: string;
  /** Field of BenchResult on x (log scale). */
  x: string;
  /** Field on y (log scale). */
  y: string;
  xTitle?: string;
  yTitle?: string;
  /** Only these results. */
  filter?: (r: BenchResult) => boolean;
}

/** The series label of a result in plots: impl, plus mode and D/H/dtype when they vary. */
function seriesLabel(r: BenchResult, varying: Set<string>): string {
  const parts = [r.impl];
  if (r.mode !== undefined && varying.has('mode')) parts.push(String(r.mode));
  if (r.subgroups === false && varying.has('subgroups')) parts.push('no subgroups');
  for (const k of ['D', 'H', 'dtype'] as const) if (varying.has(k)) parts.push(`${k}=${r[k]}`);
  return parts.join(' ');
}

/**
 * Renders a log-log line plot of results to an SVG string with Vega-Lite (compiled to Vega and
 * rendered by Vega's headless View, no canvas).
 *
 * @example
 * const svg = await plotSvg(results, { name: '', title: 'dense: time vs T', x: 'T', y: 'median_ms' });
 */
export async function plotSvg(
  results: readonly BenchResult[],
  spec: PlotSpec,
  rule?: { y: number; label: string },
): Promise<string> {
  const vega = await optionalImport<typeof import('vega')>('vega', '--write (the SVG plots)', '--no-write');
  const vl = await optionalImport<typeof import('vega-lite')>('vega-lite', '--write (the SVG plots)', '--no-write');
  const rs = results.filter(
    (r) => (spec.filter ? spec.filter(r) : true) && Number(r[spec.x]) > 0 && Number(r[spec.y]) > 0,
  );
  const varying = new Set<string>();
  for (const k of ['mode', 'subgroups', 'D', 'H', 'dtype'])
    if (new Set(rs.map((r) => String(r[k]))).size > 1) varying.add(k);
  const values = rs.map((r) => ({ x: Number(r[spec.x]), y: Number(r[spec.y]), series: seriesLabel(r, varying) }));
  const xs = [...new Set(values.map((v) => v.x))].sort((a, b) => a - b);
  const lines = {
    data: { values },
    mark: { type: 'line', point: true },
    encoding: {
      x: {
        field: 'x',
        type: 'quantitative',
        scale: { type: 'log', nice: false, padding: 12 },
        axis: xs.length <= 12 ? { values: xs } : {},
        title: spec.xTitle ?? spec.x,
      },
      y: { field: 'y', type: 'quantitative', scale: { type: 'log' }, title: spec.yTitle ?? spec.y },
      color: { field: 'series', type: 'nominal', title: 'method' },
    },
  };
  const layers: unknown[] = [lines];
  if (rule && rule.y > 0) {
    layers.push({
      data: { values: [{ y: rule.y, label: rule.label }] },
      layer: [
        {
          mark: { type: 'rule', strokeDash: [4, 4], color: 'gray' },
          encoding: { y: { field: 'y', type: 'quantitative' } },
        },
        {
          mark: { type: 'text', align: 'right', dx: -4, dy: -6, color: 'gray' },
          encoding: { y: { field: 'y', type: 'quantitative' }, x: { value: 'width' }, text: { field: 'label' } },
        },
      ],
    });
  }
  const vlSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: spec.title,
    width: 420,
    height: 280,
    background: 'white',
    layer: layers,
  };
  const compiled = vl.compile(vlSpec as never).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** The default plots of a suite: time against T, and the achieved rate against T. */
export function defaultPlots(suite: string): PlotSpec[] {
  return [
    {
      name: '',
      title: `${suite}: time vs T (log-log)`,
      x: 'T',
      y: 'median_ms',
      xTitle: 'T (tokens)',
      yTitle: 'median time (ms)',
    },
    { name: 'gflops', title: `${suite}: GFLOP/s vs T`, x: 'T', y: 'gflops', xTitle: 'T (tokens)', yTitle: 'GFLOP/s' },
  ];
}
