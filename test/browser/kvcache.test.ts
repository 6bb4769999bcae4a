/**
 * A persistent KvCache reopened from OPFS after a page reload (issue #16), in headless Chromium:
 * bench/browser/kvcache.html's worker creates a cache on OPFS (`OpfsStore` over a real
 * `FileSystemSyncAccessHandle`, `OpfsManifest`), appends 65,553 tokens, forks a sequence, appends,
 * rewinds and re-appends, commits the manifest, appends more without committing (a crash after
 * the commit) and closes. The page is then loaded again: the
 * worker reopens the cache with `openKvCache`, verifies every page checksum, reads a sample of
 * tokens back bit for bit and decodes one step, which must equal the step decoded before the
 * reload bit for bit (the committed state: the uncommitted tokens are not there). A third load flips one byte of a page on OPFS first: the check must name that
 * page and reading one of its tokens must throw `E_CORRUPT`.
 *
 * Environment: CHROMIUM (default /usr/bin/chromium), TESSERA_BROWSER_KV_TOKENS (default 65553).
 */
import { createReadStream, existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { extname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KvPageState } from '../../bench/browser/kvcache-page.js';

const repo = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const tokens = Number(process.env.TESSERA_BROWSER_KV_TOKENS ?? 65_553);
const P = 64;
/** The flags of test/browser/e2e.test.ts: WebGPU on the software adapter. */
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--enable-unsafe-webgpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-gpu-sandbox',
  '--use-angle=swiftshader',
  '--enable-features=Vulkan',
];
const TYPES: Record<string, string> = {
  '.html': 'text/html',
  '.js': 'text/javascript',
  '.json': 'application/json',
  '.css': 'text/css',
  '.wasm': 'application/wasm',
};

function serve(root: string): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const file = resolve(root, decodeURIComponent((req.url ?? '/').split('?')[0]!).slice(1));
    if (!file.startsWith(root) || !existsSync(file) || !statSync(file).isFile()) {
      res.statusCode = 404;
      res.end('not found');
      return;
    }
    res.setHeader('Content-Type', TYPES[extname(file)] ?? 'application/octet-stream');
    createReadStream(file).pipe(res);
  });
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r(server)));
}

const corruptPage = 100;
let created: KvPageState;
let reopened: KvPageState;
let corrupted: KvPageState;
let dir = '';
let server: http.Server | undefined;

describe.skipIf(!existsSync(chromiumPath))('browser: a persistent KvCache reopened from OPFS after a reload', () => {
  beforeAll(async () => {
    const { execFileSync } = await import('node:child_process');
    execFileSync(process.execPath, [join(repo, 'scripts', 'embed-wgsl.mjs')]);
    dir = mkdtempSync(join(tmpdir(), 'tessera-kvcache-'));
    const here = join(repo, 'bench', 'browser');
    const { build } = await import('vite');
    // Only this page (the config file's other pages pull in TensorFlow.js and ONNX Runtime).
    await build({
      configFile: false,
      root: here,
      base: './',
      logLevel: 'warn',
      resolve: { alias: [{ find: /^node:fs$/, replacement: join(here, 'stubs', 'node-fs.ts') }] },
      build: {
        outDir: dir,
        emptyOutDir: true,
        target: 'es2022',
        rollupOptions: { input: { kvcache: join(here, 'kvcache.html') } },
      },
      worker: { format: 'es' },
    });
    server = await serve(dir);
    const { port } = server.address() as AddressInfo;
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ARGS });
    try {
      const page = await browser.newPage();
      const lines: string[] = [];
      page.on('console', (m) => lines.push(m.text()));
      page.on('pageerror', (e) => lines.push(`pageerror: ${e.message}`));
      const load = async (query: string) => {
        await page.goto(`http://127.0.0.1:${port}/kvcache.html?${query}`);
        await page.waitForFunction(
          () => (globalThis as unknown as { __tesseraKv?: KvPageState }).__tesseraKv?.done === true,
          undefined,
          { timeout: 600_000, polling: 250 },
        );
        return page.evaluate(() => (globalThis as unknown as { __tesseraKv: KvPageState }).__tesseraKv);
      };
      created = await load(`phase=create&tokens=${tokens}`);
      reopened = await load(`phase=reopen&tokens=${tokens}`);
      corrupted = await load(`phase=reopen&tokens=${tokens}&corrupt=${corruptPage}`);
      if (created.error || reopened.error || corrupted.error) console.error(lines.join('\n'));
      for (const st of [created, reopened, corrupted]) {
        const r = st.result;
        if (r)
          console.log(
            `${r.phase}${st.request?.corruptPage !== undefined ? ' (flipped byte)' : ''}: ${r.adapter}, ${r.pageCount} pages, ${r.ms.toFixed(0)} ms, checked ${r.checked ?? '-'}, failed [${r.failed ?? ''}], decode rel RMS vs float64 ${r.base.decodeRelRms?.toExponential(2) ?? '-'} / ${r.child.decodeRelRms?.toExponential(2) ?? '-'}`,
          );
      }
    } finally {
      await browser.close();
    }
  });

  afterAll(() => {
    server?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('creates the cache on OPFS: tokens, a fork, a rewind, a committed manifest; reads back bit for bit; decode vs float64', () => {
    expect(created.error, created.log.join('\n')).toBeUndefined();
    const r = created.result!;
    expect(r.store).toBe('opfs');
    expect(r.generation).toBe(2); // persistKvCache commits generation 1, the explicit commitKvCache 2
    expect(r.base.length).toBe(tokens);
    expect(r.child.length).toBe(tokens + 100);
    expect(r.base.pages).toBe(Math.ceil(tokens / P));
    expect(r.sharedPages).toBe(Math.floor(tokens / P)); // full pages shared, the partial one copied
    expect(r.fileBytes).toBeGreaterThanOrEqual(r.pageCount * r.layout.pageBytes);
    for (const s of [r.base, r.child]) {
      expect(s.sampled).toBeGreaterThanOrEqual(256);
      expect(s.sampleBad).toBe(0);
      expect(s.decode!.length).toBe(4 * 64);
      expect(s.decode!.every(Number.isFinite)).toBe(true);
      expect(s.decodeRelRms!).toBeLessThan(1e-5);
    }
  });

  it('a reload reopens it with openKvCache: every checksum verified, the same tokens and the same decode step bit for bit', () => {
    expect(reopened.error, reopened.log.join('\n')).toBeUndefined();
    const a = created.result!;
    const r = reopened.result!;
    expect(r.generation).toBe(a.generation);
    // The tokens appended after the commit (a crash) are not part of the reopened cache.
    expect(a.uncommitted).toBe(70);
    expect(r.layout).toEqual(a.layout);
    expect(r.pageCount).toBe(a.pageCount);
    expect(r.checked).toBe(a.base.pages + a.child.pages - a.sharedPages);
    expect(r.failed).toEqual([]);
    expect(r.sharedPages).toBe(a.sharedPages);
    for (const k of ['base', 'child'] as const) {
      expect(r[k].length).toBe(a[k].length);
      expect(r[k].sampleBad).toBe(0);
      expect(r[k].sampleHash).toBe(a[k].sampleHash);
      expect(r[k].decode).toEqual(a[k].decode);
      expect(r[k].decodeRelRms!).toBeLessThan(1e-5);
    }
  });

  it('a flipped byte on OPFS: the check names the page and reading it throws E_CORRUPT', () => {
    expect(corrupted.error, corrupted.log.join('\n')).toBeUndefined();
    const r = corrupted.result!;
    expect(r.failed).toEqual([corruptPage]);
    expect(r.checked).toBe(reopened.result!.checked);
    expect(r.readError?.code).toBe('E_CORRUPT');
    expect(r.readError?.message).toContain(String(corruptPage));
  });
});
