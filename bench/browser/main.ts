/**
 * The browser page: requests a device from `navigator.gpu`, checks kernels against their float64
 * references with the same tolerances as the Node tests, runs the golden cases fetched from
 * `./golden/` through the same `verify` as Node, and times a small bench. Progress and results
 * show on the page; the whole state is also on `window.__tessera` for the e2e test.
 *
 * Then it runs the CLI's bench suites (dense, sparse, linear, topk, after the roofline) through
 * the suites' own functions (./suites.ts), with small sizes from URL parameters; their results are
 * on `window.__tessera.suites`.
 *
 * URL parameters: `golden=<url>` (default `golden`), `filter=<regex>` (golden case names),
 * `verify=0` (skip the golden cases), `bench=0` (skip the small top-k/merge bench),
 * `suites=dense,sparse,linear,topk|none` and the suite sizes (docs/browser.md).
 */
import { attention } from '../../kernels/dense/index.js';
import { attentionReference } from '../../kernels/dense/reference.js';
import { merge, planMerge } from '../../kernels/merge/index.js';
import { mergeReference } from '../../kernels/merge/reference.js';
import { planTopK } from '../../kernels/topk/index.js';
import { topKReference } from '../../kernels/topk/reference.js';
import { requestDevice, type TesseraDevice } from '../../src/gpu/device.js';
import { GpuTimer } from '../../src/gpu/timer.js';
import { byteSize, decode, encode, roundTo, type DType, type GpuTensor } from '../../src/tensor.js';
import { compare, passes, Rng, TOLERANCE } from '../../src/testing.js';
import type { CaseVerdict } from '../../src/verify/golden.js';
import { fetchCase, fetchManifest } from '../../src/verify/golden-fetch.js';
import { verifyCases, type VerifyReport } from '../../src/verify/verify.js';
import { ratioOf, runSuites, suiteParams, type PageSuite, type PageSuites } from './suites.js';
import type { Roofline } from '../harness.js';

export type { PageSuite, PageSuites };

export interface PageCheck {
  name: string;
  status: 'PASS' | 'FAIL';
  relRms?: number;
  maxAbs?: number;
  note?: string;
}

export interface PageBench {
  kernel: string;
  shape: string;
  /** Candidates per row and rows (top-k only), for the plot. */
  n?: number;
  rows?: number;
  median_ms: number;
  min_ms: number;
  max_ms: number;
  runs: number;
  timing: string;
}

export interface PageState {
  done: boolean;
  ok: boolean;
  adapter?: string;
  adapterClass?: string;
  description?: string;
  checks: PageCheck[];
  golden: VerifyReport | null;
  goldenError?: string;
  bench: PageBench[];
  /** The bench suites (roofline + a result list per suite). */
  suites: PageSuites;
  error?: string;
  log: string[];
}

const state: PageState = {
  done: false,
  ok: false,
  checks: [],
  golden: null,
  bench: [],
  suites: { suites: [] },
  log: [],
};
(globalThis as unknown as { __tessera: PageState }).__tessera = state;

const params = new URLSearchParams(location.search);
const $ = (id: string) => document.getElementById(id)!;

function log(line: string): void {
  state.log.push(line);
  const pre = $('log');
  pre.textContent += line + '\n';
  pre.scrollTop = pre.scrollHeight;
}

function setStatus(text: string, cls = ''): void {
  const s = $('status');
  s.textContent = text;
  s.className = cls;
}

let stepsDone = 0;
let stepsTotal = 1;
function step(): void {
  stepsDone++;
  const p = $('progress') as HTMLProgressElement;
  p.max = stepsTotal;
  p.value = Math.min(stepsDone, stepsTotal);
}

function row(table: string, cells: (string | number | undefined)[], statusCol = 1): void {
  const tr = document.createElement('tr');
  cells.forEach((c, i) => {
    const td = document.createElement('td');
    td.textContent =
      c === undefined
        ? '-'
        : typeof c === 'number'
          ? Number.isInteger(c)
            ? String(c)
            : Math.abs(c) < 1e-2 && c !== 0
              ? c.toExponential(2)
              : c.toFixed(2)
          : c;
    if (i === 0) td.className = 'name';
    if (i === statusCol) td.className = String(c);
    tr.appendChild(td);
  });
  $(table).querySelector('tbody')!.appendChild(tr);
}

// ---------------------------------------------------------------------------------------------
// Tensors

function makeIo(dev: TesseraDevice) {
  const made: GPUBuffer[] = [];
  return {
    tensor(values: ArrayLike<number>, shape: number[], dtype: DType = 'f32'): GpuTensor {
      const buffer = dev.upload(encode(values, dtype), { size: byteSize(shape, dtype) });
      made.push(buffer);
      return { buffer, shape, dtype };
    },
    empty(shape: number[], dtype: DType = 'f32'): GpuTensor {
      const n = shape.reduce((a, b) => a * b, 1);
      return this.tensor(new Float64Array(n).fill(dtype === 'i32' ? -7 : NaN), shape, dtype);
    },
    async read(t: GpuTensor): Promise<Float64Array> {
      const n = t.shape.reduce((a, b) => a * b, 1);
      return decode(
        new Uint32Array(await dev.readback(t.buffer, byteSize(t.shape, t.dtype), t.offset ?? 0)),
        t.dtype,
        n,
      );
    },
    free(): void {
      for (const b of made) dev.destroyBuffer(b);
      made.length = 0;
    },
  };
}

function addCheck(c: PageCheck): void {
  state.checks.push(c);
  row('checks', [c.name, c.status, c.relRms, c.maxAbs, c.note ?? '']);
  log(
    `${c.status} ${c.name}${c.relRms !== undefined ? ` rel_rms=${c.relRms.toExponential(2)} max_abs=${c.maxAbs?.toExponential(2)}` : ''}${c.note ? ` (${c.note})` : ''}`,
  );
  step();
}

// ---------------------------------------------------------------------------------------------
// Numerics: the same cases and tolerances as test/merge.test.ts, test/topk.test.ts and the
// dense tests, against the float64 references.

async function checkMerge(dev: TesseraDevice): Promise<void> {
  const io = makeIo(dev);
  for (const [P, rows, D, dtype] of [
    [2, 7, 64, 'f32'],
    [5, 33, 80, 'f32'],
    [8, 3, 128, 'f16'],
  ] as const) {
    const rng = new Rng(P * 1000 + rows);
    const oParts = rng.normals(P * rows * D);
    const lseParts = rng.normals(P * rows, 3);
    for (let p = 0; p < P; p++) lseParts[p * rows] = -Infinity;
    const ref = mergeReference(oParts, lseParts, P, rows, D);
    const o = io.empty([rows, D], dtype);
    const lse = io.empty([rows]);
    await merge(dev, { oParts: io.tensor(oParts, [P, rows, D]), lseParts: io.tensor(lseParts, [P, rows]), o, lse });
    const co = compare(await io.read(o), dtype === 'f32' ? ref.o : roundTo(ref.o, dtype));
    const cl = compare(await io.read(lse), ref.lse);
    const ok = passes(co, TOLERANCE[dtype]) && passes(cl, TOLERANCE.f32);
    addCheck({
      name: `merge P${P}-rows${rows}-D${D}-${dtype}`,
      status: ok ? 'PASS' : 'FAIL',
      relRms: Math.max(co.relRms, cl.relRms),
      maxAbs: Math.max(co.maxAbs, cl.maxAbs),
    });
    io.free();
  }
}

async function checkTopK(dev: TesseraDevice): Promise<void> {
  const io = makeIo(dev);
  for (const [rows, n, k, ties] of [
    [7, 32, 3, false],
    [300, 64, 8, true],
    [3, 9000, 700, true],
    [1, 1 << 18, 2048, false],
  ] as const) {
    const rng = new Rng(rows * 7919 + n);
    const s = new Float32Array(rows * n);
    for (let i = 0; i < s.length; i++) s[i] = ties ? Math.floor(rng.next() * 5) - 2 : rng.normal();
    s[0] = -Infinity;
    const ref = topKReference(s, rows, n, k);
    const indices = io.empty([rows, k], 'i32');
    const values = io.empty([rows, k]);
    const plan = await planTopK(dev, { rows, n, k });
    await dev.scoped('topk', async () => {
      const enc = dev.device.createCommandEncoder();
      plan.run(enc, { scores: io.tensor(s, [rows, n]), indices, values });
      await dev.submitAndWait([enc.finish()]);
    });
    const gi = await io.read(indices);
    const gv = await io.read(values);
    let bad = 0;
    for (let i = 0; i < gi.length; i++) if (gi[i] !== ref.indices[i] || gv[i] !== ref.values[i]) bad++;
    addCheck({
      name: `topk rows${rows}-n${n}-k${k}${ties ? '-ties' : ''} (${plan.variant}/${plan.target})`,
      status: bad === 0 ? 'PASS' : 'FAIL',
      note: bad ? `${bad} slots differ` : 'indices and values exact',
    });
    plan.dispose();
    io.free();
  }
}

async function checkAttention(dev: TesseraDevice): Promise<void> {
  const io = makeIo(dev);
  const [Tq, Hq, Hkv, D] = [65, 4, 2, 32];
  const rng = new Rng(3);
  const q = rng.normals(Tq * Hq * D);
  const k = rng.normals(Tq * Hkv * D);
  const v = rng.normals(Tq * Hkv * D);
  const ref = attentionReference(q, k, v, { Tq, Hq, Hkv, D });
  const o = io.empty([Tq, Hq, D]);
  const lse = io.empty([Tq, Hq]);
  await attention(dev, {
    q: io.tensor(q, [Tq, Hq, D]),
    k: io.tensor(k, [Tq, Hkv, D]),
    v: io.tensor(v, [Tq, Hkv, D]),
    o,
    lse,
  });
  const co = compare(await io.read(o), ref.o);
  const cl = compare(await io.read(lse), ref.lse);
  const ok = passes(co, TOLERANCE.f32) && passes(cl, TOLERANCE.f32);
  addCheck({
    name: `attention T${Tq}-Hq${Hq}-Hkv${Hkv}-D${D} causal`,
    status: ok ? 'PASS' : 'FAIL',
    relRms: Math.max(co.relRms, cl.relRms),
    maxAbs: Math.max(co.maxAbs, cl.maxAbs),
  });
  io.free();
}

// ---------------------------------------------------------------------------------------------
// Bench

async function timeIt(
  dev: TesseraDevice,
  timer: GpuTimer,
  encode: (enc: GPUCommandEncoder) => void,
  runs = 5,
): Promise<{ median: number; min: number; max: number; runs: number }> {
  await timer.time(encode);
  const t: number[] = [];
  for (let i = 0; i < runs; i++) t.push(await timer.time(encode));
  t.sort((a, b) => a - b);
  return { median: t[t.length >> 1]!, min: t[0]!, max: t[t.length - 1]!, runs };
}

function addBench(b: PageBench): void {
  state.bench.push(b);
  row('bench', [b.kernel, b.shape, b.median_ms, b.min_ms, b.max_ms, b.runs, b.timing], -1);
  log(`bench ${b.kernel} ${b.shape}: ${b.median_ms.toFixed(2)} ms (${b.timing})`);
  step();
}

async function bench(dev: TesseraDevice): Promise<void> {
  const timer = new GpuTimer(dev);
  const io = makeIo(dev);
  try {
    for (const [rows, n, k] of [
      [1, 1 << 16, 2048],
      [1, 1 << 18, 2048],
      [1, 1 << 20, 2048],
      [16384, 32, 3],
    ] as const) {
      const s = new Float32Array(rows * n);
      const rng = new Rng(rows + n);
      for (let i = 0; i < s.length; i++) s[i] = rng.next() * 2 - 1;
      const t = { scores: io.tensor(s, [rows, n]), indices: io.empty([rows, k], 'i32'), values: io.empty([rows, k]) };
      const plan = await planTopK(dev, { rows, n, k });
      const r = await timeIt(dev, timer, (enc) => plan.run(enc, t));
      addBench({
        kernel: `topk (${plan.variant})`,
        shape: `rows=${rows} n=${n} k=${k}`,
        n,
        rows,
        median_ms: r.median,
        min_ms: r.min,
        max_ms: r.max,
        runs: r.runs,
        timing: timer.source,
      });
      plan.dispose();
      io.free();
    }
    {
      const [P, rows, D] = [4, 4096, 128];
      const rng = new Rng(1);
      const t = {
        oParts: io.tensor(rng.normals(P * rows * D), [P, rows, D]),
        lseParts: io.tensor(rng.normals(P * rows), [P, rows]),
        o: io.empty([rows, D]),
        lse: io.empty([rows]),
      };
      const plan = await planMerge(dev, { parts: P, rows, D });
      const r = await timeIt(dev, timer, (enc) => plan.run(enc, t));
      addBench({
        kernel: 'merge',
        shape: `P=${P} rows=${rows} D=${D}`,
        median_ms: r.median,
        min_ms: r.min,
        max_ms: r.max,
        runs: r.runs,
        timing: timer.source,
      });
      plan.dispose();
      io.free();
    }
  } finally {
    timer.destroy();
  }
  await plot();
}

/** Log-log plot of top-k time against candidates per row (one row), rendered by Vega-Lite to SVG. */
async function plot(): Promise<void> {
  const values = state.bench
    .filter((b) => b.rows === 1 && b.n)
    .map((b) => ({ n: b.n, ms: b.median_ms, series: 'tessera topk, 1 row, k = 2048' }));
  if (values.length < 2) return;
  const [vega, vl] = await Promise.all([import('vega'), import('vega-lite')]);
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: `topk on ${state.adapter}: time vs candidates per row (log-log)`,
    width: 420,
    height: 240,
    background: 'white',
    data: { values },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'n', type: 'quantitative', scale: { type: 'log' }, title: 'n (candidates per row)' },
      y: { field: 'ms', type: 'quantitative', scale: { type: 'log' }, title: 'median time (ms)' },
      color: { field: 'series', type: 'nominal', title: 'method' },
    },
  };
  const view = new vega.View(vega.parse(vl.compile(spec as never).spec), { renderer: 'none' });
  try {
    $('plot').innerHTML = await view.toSVG();
  } finally {
    view.finalize();
  }
  log('plot: topk time vs n');
}

// ---------------------------------------------------------------------------------------------
// Bench suites: a table per suite

const fmtNum = (x: unknown, d = 2) =>
  typeof x === 'number' && Number.isFinite(x) ? (Math.abs(x) >= 1000 ? x.toFixed(0) : x.toFixed(d)) : '-';

function suiteTable(s: PageSuite, roofline: Roofline): void {
  const box = $('suites');
  const h = document.createElement('h3');
  h.textContent = `${s.suite} (${s.wall_s} s)${s.error ? ` (error: ${s.error})` : ''}${s.skipped.length ? ` (skipped: ${s.skipped.join('; ')})` : ''}`;
  box.appendChild(h);
  const table = document.createElement('table');
  table.className = 'suite';
  table.dataset.suite = s.suite;
  const head = [
    'suite',
    'impl',
    'mode',
    'T',
    'median ms',
    'min ms',
    'max ms',
    'runs',
    'GFLOP/s',
    'GB/s',
    '% roofline',
    'ratio',
  ];
  table.innerHTML = `<thead><tr>${head.map((x) => `<th>${x}</th>`).join('')}</tr></thead><tbody></tbody>`;
  for (const r of s.results) {
    const tr = document.createElement('tr');
    const cells = [
      r.suite,
      r.impl,
      r.mode ?? '',
      String(r.T),
      fmtNum(r.median_ms),
      fmtNum(r.min_ms),
      fmtNum(r.max_ms),
      String(r.runs),
      fmtNum(r.flops / (r.median_ms * 1e6)),
      fmtNum(r.bytes / (r.median_ms * 1e6), 3),
      fmtNum(r.pct_roofline, 1),
      ratioOf(s, r),
    ];
    cells.forEach((c, i) => {
      const td = document.createElement('td');
      td.textContent = c;
      if (i < 3) td.className = 'name';
      tr.appendChild(td);
    });
    table.querySelector('tbody')!.appendChild(tr);
  }
  box.appendChild(table);
  log(
    `${s.suite}: ${s.results.length} results in ${s.wall_s} s (roofline copy ${roofline.copy_gbps.toFixed(2)} GB/s, matmul ${roofline.matmul_gflops.toFixed(2)} GFLOP/s)`,
  );
  step();
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const doVerify = params.get('verify') !== '0';
  const doBench = params.get('bench') !== '0';
  const goldenBase = params.get('golden') ?? 'golden';
  const filter = params.get('filter') ? new RegExp(params.get('filter')!) : undefined;
  const sp = suiteParams(params);
  setStatus('requesting a device');
  if (!(navigator as Navigator & { gpu?: GPU }).gpu)
    throw new Error('navigator.gpu is missing: this browser has no WebGPU (Chromium: --enable-unsafe-webgpu)');
  const dev = await requestDevice({ label: 'tessera-browser' });
  state.adapter = dev.adapterName;
  state.adapterClass = dev.adapterClass;
  state.description = dev.adapter.description;
  $('adapter').textContent =
    `${dev.adapterName} (${dev.adapterClass}; ${dev.adapter.description || dev.adapter.vendor}); features: ${JSON.stringify(dev.features)}`;
  log(`adapter ${dev.adapterName} (${dev.adapterClass})`);

  let manifest: Awaited<ReturnType<typeof fetchManifest>> = [];
  if (doVerify) {
    try {
      manifest = (await fetchManifest(goldenBase)).filter((c) => !filter || filter.test(c.name));
    } catch (e) {
      state.goldenError = (e as Error).message;
      log(`golden: ${state.goldenError}`);
    }
  }
  stepsTotal = 3 + 4 + 1 + manifest.length + (doBench ? 5 : 0) + sp.suites.length;

  setStatus('checking kernels against the float64 references');
  await checkMerge(dev);
  await checkTopK(dev);
  await checkAttention(dev);

  if (manifest.length) {
    setStatus(`golden cases (${manifest.length})`);
    state.golden = await verifyCases(dev, goldenBase, manifest, (mc) => fetchCase(goldenBase, mc), {
      log,
      onVerdict: (v: CaseVerdict) => {
        row('golden', [
          v.name,
          v.status,
          v.relRms,
          v.maxAbs,
          v.reason ?? (v.selection ? `selection rows differing ${v.selection.differing}/${v.selection.rows}` : ''),
        ]);
        step();
      },
    });
    log(`verify: ${state.golden.passed} passed, ${state.golden.failed} failed, ${state.golden.skipped} skipped`);
  }

  if (doBench) {
    setStatus('bench');
    await bench(dev);
  }
  if (sp.suites.length) {
    await runSuites(dev, sp, state.suites, {
      log,
      status: (t) => setStatus(t),
      onSuite: (s, roof) => {
        $('roofline').textContent = `Roofline (same run): ${state.suites.rooflineText}`;
        suiteTable(s, roof);
      },
    });
  }
  const failed =
    state.checks.filter((c) => c.status === 'FAIL').length +
    (state.golden?.failed ?? 0) +
    state.suites.suites.filter((x) => x.error).length;
  state.ok = failed === 0;
  setStatus(state.ok ? 'done: all checks pass' : `done: ${failed} failing`, state.ok ? 'ok' : 'bad');
  dev.destroy();
}

main()
  .catch((e: unknown) => {
    state.error = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    log(`error: ${state.error}`);
    setStatus(`error: ${state.error}`, 'bad');
  })
  .finally(() => {
    state.done = true;
  });
