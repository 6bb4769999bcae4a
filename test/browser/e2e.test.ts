/**
 * End to end in a real browser: build the bench/verify page with Vite, serve it (and the golden
 * vectors under /golden) on 127.0.0.1, open it in headless Chromium with WebGPU (Debian's
 * /usr/bin/chromium through playwright-core; headless Chromium gives pages the SwiftShader
 * adapter), and check that its numerics pass the same tolerances as Node's: the page judges with
 * the same `compare`/`passes`/`TOLERANCE` and the same golden `judge`, and reports each result.
 * A screenshot of the results goes to the system's temp folder; with TESSERA_SAVE_SCREENSHOT=1 to
 * bench/results/browser/ (committed results change only when asked, as benchmarks' `--save`).
 *
 * Environment: CHROMIUM (default /usr/bin/chromium), TESSERA_GOLDEN (default ../shared/golden),
 * TESSERA_GOLDEN_FILTER (a regex of case names; default all), TESSERA_BROWSER_BENCH=0 to skip
 * the page's bench, TESSERA_BROWSER_SUITES (the page's `suites` parameter for the extended tier's
 * second load of the page; default all four, at the tiny sizes of SUITE_QUERY).
 */
import { createReadStream, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { extname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readManifest } from '../../src/verify/golden-node.js';
import type { PageState } from '../../bench/browser/main.js';
import { LINEAR_OPS } from '../../bench/suites/linear.js';
import { SPARSE_METHODS } from '../../bench/suites/sparse.js';

const repo = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const goldenDir = resolve(process.env.TESSERA_GOLDEN ?? join(repo, '..', 'shared', 'golden'));
const haveGolden = existsSync(join(goldenDir, 'manifest.json'));
/** The flags that give pages WebGPU on the software adapter (see docs/browser.md). */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--enable-unsafe-webgpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-gpu-sandbox',
  '--use-angle=swiftshader',
  '--enable-features=Vulkan',
];

/** Tiny suite sizes: every suite and every method/op runs, in seconds on SwiftShader. */
export const SUITE_QUERY: Record<string, string> = {
  suites: process.env.TESSERA_BROWSER_SUITES ?? 'dense,sparse,linear,topk',
  runs: '1',
  denseT: '64,128',
  sparseT: '256',
  block: '64',
  window: '128',
  nsaCount: '2',
  dsaTopk: '64',
  linearT: '128',
  topk: '1x4096x64',
  roofCopyMiB: '4',
  roofMatmul: '256',
  // ONNX Runtime Web (WebGPU EP) in the dense suite; TESSERA_BROWSER_ORT=0 leaves it out
  ort: process.env.TESSERA_BROWSER_ORT ?? '1',
};
const suitesAsked = SUITE_QUERY.suites!.split(',').filter((s) => s && s !== 'none');

const TYPES: Record<string, string> = {
  '.html': 'text/html',
  '.js': 'text/javascript',
  '.json': 'application/json',
  '.css': 'text/css',
  '.wasm': 'application/wasm',
};

function serve(root: string, golden: string): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const path = decodeURIComponent((req.url ?? '/').split('?')[0]!);
    const [base, rel] = path.startsWith('/golden/')
      ? [golden, path.slice('/golden/'.length)]
      : [root, path === '/' ? 'index.html' : path.slice(1)];
    const file = resolve(base, rel);
    if (!file.startsWith(base) || !existsSync(file) || !statSync(file).isFile()) {
      res.statusCode = 404;
      res.end('not found');
      return;
    }
    res.setHeader('Content-Type', TYPES[extname(file)] ?? 'application/octet-stream');
    createReadStream(file).pipe(res);
  });
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r(server)));
}

const canRun = existsSync(chromiumPath);

/**
 * The bench/browser pages (index.html and needle.html), built with Vite once for both describes
 * of this file (a build takes seconds) and removed after the file.
 */
let pages: Promise<string> | undefined;
function buildPages(): Promise<string> {
  pages ??= (async () => {
    const { execFileSync } = await import('node:child_process');
    execFileSync(process.execPath, [join(repo, 'scripts', 'embed-wgsl.mjs')]);
    const dir = mkdtempSync(join(tmpdir(), 'tessera-browser-'));
    const { build } = await import('vite');
    await build({
      configFile: join(repo, 'bench', 'browser', 'vite.config.ts'),
      logLevel: 'warn',
      build: { outDir: dir, emptyOutDir: true },
    });
    return dir;
  })();
  return pages;
}
afterAll(async () => {
  const dir = await pages?.catch(() => undefined);
  if (dir) rmSync(dir, { recursive: true, force: true });
});
type Page = import('playwright-core').Page;

/**
 * Builds and serves the pages, opens a headless chromium page and hands it to `fn` with the
 * server's origin and the page's console lines; the browser and the server close after `fn`.
 */
async function withPage<T>(fn: (page: Page, origin: string, lines: string[]) => Promise<T>): Promise<T> {
  const server = await serve(await buildPages(), goldenDir);
  const { port } = server.address() as AddressInfo;
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: CHROMIUM_ARGS });
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    const lines: string[] = [];
    page.on('console', (m) => lines.push(m.text()));
    page.on('pageerror', (e) => lines.push(`pageerror: ${e.message}`));
    return await fn(page, `http://127.0.0.1:${port}`, lines);
  } finally {
    await browser.close();
    server.close();
  }
}

/** Loads `url` and returns the page's `globalThis[key]` once its `done` is true. */
async function loadUntilDone<S>(page: Page, url: string, key: string): Promise<S> {
  await page.goto(url);
  await page.waitForFunction(
    (k) => (globalThis as unknown as Record<string, { done?: boolean } | undefined>)[k]?.done === true,
    key,
    { timeout: 800_000, polling: 500 },
  );
  return page.evaluate((k) => (globalThis as unknown as Record<string, S>)[k]!, key);
}

/**
 * Opens index.html with `query`, waits for it to finish and returns its state, with a full-page
 * screenshot saved as `e2e-<adapter><suffix>.png`.
 */
function runBenchPage(query: URLSearchParams, suffix: string): Promise<{ state: PageState; screenshot: string }> {
  return withPage(async (page, origin, lines) => {
    const state = await loadUntilDone<PageState>(page, `${origin}/?${query}`, '__tessera');
    const dir = process.env.TESSERA_SAVE_SCREENSHOT === '1' ? join(repo, 'bench', 'results', 'browser') : tmpdir();
    mkdirSync(dir, { recursive: true });
    const screenshot = join(dir, `e2e-${state.adapter ?? 'unknown'}${suffix}.png`);
    await page.screenshot({ path: screenshot, fullPage: true });
    if (state.error) console.error(lines.join('\n'));
    return { state, screenshot };
  });
}

let state: PageState;
let screenshot = '';

// npm test: the kernel checks and the page's small bench; the golden cases (which npm test runs
// in Node) and the bench suites run on a second load of the page in the extended tier (below).
describe.skipIf(!canRun)('browser e2e (headless chromium, WebGPU)', () => {
  beforeAll(async () => {
    const q = new URLSearchParams({ ...SUITE_QUERY, suites: 'none', verify: '0' });
    if (process.env.TESSERA_BROWSER_BENCH === '0') q.set('bench', '0');
    ({ state, screenshot } = await runBenchPage(q, ''));
  });

  it('the page got a WebGPU device and finished without an error', () => {
    expect(state.error, state.log.join('\n')).toBeUndefined();
    expect(state.adapter).toBeTruthy();
    expect(existsSync(screenshot)).toBe(true);
  });

  it('kernels match their float64 references with the Node tolerances (merge, topk, attention)', () => {
    const names = state.checks.map((c) => c.name);
    expect(names.some((n) => n.startsWith('merge'))).toBe(true);
    expect(names.some((n) => n.startsWith('topk'))).toBe(true);
    for (const c of state.checks) expect(c.status, `${c.name}: ${c.note ?? ''}`).toBe('PASS');
  });

  it.skipIf(process.env.TESSERA_BROWSER_BENCH === '0')('the page ran its bench and plotted it', () => {
    expect(state.bench.length).toBeGreaterThanOrEqual(3);
    for (const b of state.bench) expect(b.median_ms).toBeGreaterThan(0);
    expect(
      state.log.some((l) => l.startsWith('plot:')),
      'the page rendered its Vega-Lite plot',
    ).toBe(true);
  });
});

// The golden cases through the page's verify, and the bench suites (every method and op of each
// suite, at the tiny sizes of SUITE_QUERY, with TensorFlow.js and ONNX Runtime Web in the dense
// suite), on a second load of the page without the small bench: the extended tier.
describe.skipIf(!canRun)('browser golden cases and bench suites on the page', { tags: ['extended'] }, () => {
  let suitesState: PageState;
  beforeAll(async () => {
    const q = new URLSearchParams({ ...SUITE_QUERY, bench: '0' });
    if (process.env.TESSERA_GOLDEN_FILTER) q.set('filter', process.env.TESSERA_GOLDEN_FILTER);
    ({ state: suitesState } = await runBenchPage(q, '-suites'));
  });

  it('the page finished without an error', () => {
    expect(suitesState.error, suitesState.log.join('\n')).toBeUndefined();
  });

  it.skipIf(!haveGolden)('golden cases pass verify in the browser as in Node', () => {
    const filter = process.env.TESSERA_GOLDEN_FILTER ? new RegExp(process.env.TESSERA_GOLDEN_FILTER) : undefined;
    const expected = readManifest(goldenDir).filter((c) => !filter || filter.test(c.name)).length;
    expect(suitesState.golden, suitesState.goldenError).not.toBeNull();
    expect(suitesState.golden!.cases.length).toBe(expected);
    const failing = suitesState.golden!.cases.filter((c) => c.status === 'FAIL').map((c) => `${c.name}: ${c.reason}`);
    expect(failing).toEqual([]);
    expect(suitesState.golden!.passed).toBeGreaterThan(0);
  });

  it.skipIf(!suitesAsked.length)(
    'every bench suite ran on the page with finite positive times and its full impl/method list',
    () => {
      const { roofline, suites } = suitesState.suites;
      expect(roofline, suitesState.log.join('\n')).toBeDefined();
      expect(roofline!.copy_gbps).toBeGreaterThan(0);
      expect(roofline!.matmul_gflops).toBeGreaterThan(0);
      expect(suites.map((s) => s.suite)).toEqual(suitesAsked);
      const want: Record<string, string[]> = {
        dense: ['tessera', 'tfjs', ...(SUITE_QUERY.ort === '1' ? ['ort'] : [])],
        sparse: ['dense', ...SPARSE_METHODS],
        linear: Object.keys(LINEAR_OPS).flatMap((op) => [`${op}/chunk`, `${op}/recurrent`]),
        topk: ['tessera', 'tfjs'],
      };
      const Ts: Record<string, number[]> = { dense: [64, 128], sparse: [256], linear: [128], topk: [4096] };
      for (const s of suites) {
        expect(s.error, `${s.suite}: ${s.error}`).toBeUndefined();
        // tfjs (and ort) may be skipped only if it failed to load, and then the page says so
        const expected = want[s.suite]!.filter(
          (x) => (x !== 'tfjs' && x !== 'ort') || !s.skipped.some((k) => k.startsWith(x)),
        );
        if (s.suite === 'dense' && SUITE_QUERY.ort === '1') {
          // ort ran on the same inputs and was compared with Tessera's output
          for (const r of s.results.filter((x) => x.impl === 'ort'))
            expect(typeof r.max_abs_diff, 'ort max_abs_diff').toBe('number');
          console.log(
            `dense: ort ${
              s.results
                .filter((x) => x.impl === 'ort')
                .map(
                  (r) =>
                    `T=${r.T} ${r.median_ms.toFixed(1)} ms max_abs_diff ${Number(r.max_abs_diff).toExponential(2)}`,
                )
                .join('; ') || `skipped: ${s.skipped.join('; ')}`
            }`,
          );
        }
        expect(s.expected, s.suite).toEqual(expected);
        const key = (r: (typeof s.results)[number]) =>
          s.suite === 'sparse'
            ? r.impl === 'dense'
              ? 'dense'
              : r.suite
            : s.suite === 'linear'
              ? `${r.suite}/${r.mode}`
              : r.impl;
        // every expected impl/method at every T, once
        const got = s.results.map((r) => `${key(r)}@${r.T}`).sort();
        expect(got, s.suite).toEqual(expected.flatMap((x) => Ts[s.suite]!.map((T) => `${x}@${T}`)).sort());
        for (const r of s.results) {
          for (const k of ['median_ms', 'min_ms', 'max_ms', 'pct_roofline'] as const) {
            expect(Number.isFinite(r[k]) && r[k] > 0, `${s.suite} ${key(r)} T=${r.T} ${k}=${r[k]}`).toBe(true);
          }
          expect(r.min_ms).toBeLessThanOrEqual(r.median_ms);
          expect(r.median_ms).toBeLessThanOrEqual(r.max_ms);
          if (s.suite === 'sparse' && r.impl !== 'dense')
            expect(
              Number.isFinite(r.speedup_vs_dense) && (r.speedup_vs_dense as number) > 0,
              `${r.suite} vs dense`,
            ).toBe(true);
        }
      }
    },
  );
});

/**
 * The needle page (bench/browser/needle.html): a worker holds the device and an OPFS cache (a real
 * FileSystemSyncAccessHandle), streams `TESSERA_BROWSER_NEEDLE_TOKENS` tokens (default 100,000:
 * 1,563 pages, 25 times the 2,048-token selection budget, so the needle is found by the summaries
 * and most pages are never read; `TESSERA_BROWSER_NEEDLE_TOKENS=1000000` for the 1M-token run of
 * docs/browser.md, about 50 s longer, whose JSON goes to bench/results/browser/ with
 * TESSERA_SAVE_SCREENSHOT=1) through
 * `runNeedle` (the Node demo's code and JSON keys); a second load of the page with `run=0` finds
 * the cache on OPFS and checks every page against the checksum recorded when it was written; a
 * third flips one byte of a page first, and the check must name that page.
 */
const needleTokens = Number(process.env.TESSERA_BROWSER_NEEDLE_TOKENS ?? 100_000);
describe.skipIf(!canRun)('browser needle demo (worker, OPFS cache)', () => {
  type NeedleState = import('../../bench/browser/needle-page.js').NeedlePageState;
  let run: NeedleState;
  let reload: NeedleState;
  let corrupt: NeedleState;
  let nodeKeys: string[] = [];
  beforeAll(async () => {
    await withPage(async (page, origin, lines) => {
      const load = (query: string) =>
        loadUntilDone<NeedleState>(page, `${origin}/needle.html?${query}`, '__tesseraNeedle');
      run = await load(`tokens=${needleTokens}`);
      reload = await load(`tokens=${needleTokens}&run=0`);
      corrupt = await load(`tokens=${needleTokens}&run=0&corrupt=123`);
      if (run.error || reload.error) console.error(lines.join('\n'));
      // committed results change only when asked (as the screenshot's)
      const dirOut = process.env.TESSERA_SAVE_SCREENSHOT === '1' ? join(repo, 'bench', 'results', 'browser') : tmpdir();
      mkdirSync(dirOut, { recursive: true });
      writeFileSync(
        join(dirOut, `needle-${needleTokens}-${run.result?.adapter ?? 'unknown'}.json`),
        JSON.stringify(
          { result: run.result, manifest: run.manifest, reload: reload.verify, corrupt: corrupt.verify },
          null,
          2,
        ) + '\n',
      );
    });
    // The Node demo's JSON keys, from the same function at a small size (with the exact pass, as the page runs it).
    const { requestDevice } = await import('../../src/gpu/device.js');
    const { runNeedle } = await import('../../src/demo/needle.js');
    const dev = await requestDevice();
    try {
      nodeKeys = Object.keys(await runNeedle(dev, { tokens: 20_000, quiet: true }));
    } finally {
      dev.destroy();
    }
  });

  it(`streams ${needleTokens.toLocaleString('en-US')} tokens from OPFS in a worker and finds the needle`, () => {
    expect(run.error, run.log.join('\n')).toBeUndefined();
    expect(run.verify?.found).toBe(false); // a fresh profile: nothing on OPFS before the run
    const r = run.result!;
    expect(r.tokens).toBe(needleTokens);
    expect(r.store).toBe('opfs');
    expect(r.needleFound).toBe(true);
    expect(r.kvBytesReadFraction).toBeGreaterThan(0);
    // the min/max summaries (1/64 of the KV bytes at D 128, page 64, f16) plus 2048 tokens of pages
    expect(r.kvBytesReadFraction).toBeLessThan(1 / 64 + 2048 / needleTokens + 1e-3);
    expect(r.maxAbsDiffSparseVsExact).toBeLessThan(1e-3);
    expect(r.gpuBytesPeak).toBeLessThanOrEqual(r.gpuBudgetBytes);
    expect(Object.keys(r).sort()).toEqual([...nodeKeys].sort());
  });

  it('a reload finds the cache on OPFS with every page checksum intact', () => {
    expect(reload.error, reload.log.join('\n')).toBeUndefined();
    expect(reload.result).toBeUndefined();
    const v = reload.verify!;
    expect(v.found).toBe(true);
    expect(v.pages).toBe(Math.ceil(needleTokens / 64));
    expect(v.checked).toBe(v.pages);
    expect(v.fileBytes).toBe(run.manifest!.fileBytes);
    expect(v.mismatches).toBe(0);
  });

  it('the check fails on a page whose bytes changed on OPFS', () => {
    expect(corrupt.error, corrupt.log.join('\n')).toBeUndefined();
    expect(corrupt.verify!.mismatches).toBe(1);
    expect(corrupt.verify!.firstMismatch).toBe(123);
  });
});
