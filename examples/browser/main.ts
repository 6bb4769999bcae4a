/**
 * Example `browser`: the bench/verify page (`bench/browser/`), built with Vite exactly as the
 * end-to-end test (`test/browser/e2e.test.ts`) builds it, and where to find it.
 *
 * Run: `npx tsx examples/browser/main.ts [--out DIR]` (default `bench/browser/dist`).
 * Then serve it (the page needs the golden vectors under `golden/` next to it for its verify
 * part), or run the dev server instead: `npm run browser:dev`; or the headless Chromium test:
 * `npm run test:browser`. See README.md here and docs/browser.md.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const repo = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..');

export interface BrowserExampleOptions {
  /** Output folder (default `bench/browser/dist`). */
  outDir?: string;
  /** Accepted for symmetry with the other examples; the build is the same. */
  small?: boolean;
}

export interface BrowserExampleResult {
  outDir: string;
  /** Files written (relative to outDir) and their total bytes. */
  files: string[];
  bytes: number;
  buildMs: number;
  /** Where the dev server serves the page, with the golden vectors under /golden. */
  devUrl: string;
  /** The golden vectors the dev server would serve (exists or not). */
  goldenDir: string;
  goldenFound: boolean;
}

function walk(dir: string, base = dir): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p, base) : [p.slice(base.length + 1)];
  });
}

/**
 * Builds the page with Vite (the e2e test's build) and returns where it is.
 *
 * @example
 * const r = await main();
 * console.log(r.outDir, r.files);
 */
export async function main(opts: BrowserExampleOptions = {}): Promise<BrowserExampleResult> {
  const outDir = resolve(opts.outDir ?? join(repo, 'bench', 'browser', 'dist'));
  // The page imports the embedded shaders (*.wgsl.ts): regenerate them first, as the test does.
  execFileSync(process.execPath, [join(repo, 'scripts', 'embed-wgsl.mjs')]);
  const t0 = performance.now();
  const { build } = await import('vite');
  await build({
    configFile: join(repo, 'bench', 'browser', 'vite.config.ts'),
    logLevel: 'warn',
    build: { outDir, emptyOutDir: true },
  });
  const buildMs = performance.now() - t0;
  const files = walk(outDir).sort();
  const bytes = files.reduce((s, f) => s + statSync(join(outDir, f)).size, 0);
  const goldenDir = resolve(process.env.TESSERA_GOLDEN ?? join(repo, '..', 'shared', 'golden'));
  return {
    outDir,
    files,
    bytes,
    buildMs,
    devUrl: 'http://127.0.0.1:5173/',
    goldenDir,
    goldenFound: existsSync(join(goldenDir, 'manifest.json')),
  };
}

/** The printed summary of a result. */
export function summary(r: BrowserExampleResult): string {
  return [
    `browser example: the bench/verify page built with Vite in ${(r.buildMs / 1000).toFixed(1)} s`,
    `  ${r.outDir}: ${r.files.join(', ')} (${(r.bytes / 1024).toFixed(0)} KiB)`,
    `  serve that folder with the golden vectors as golden/ next to index.html (the page fetches golden/manifest.json), e.g.`,
    `    ln -sfn ${r.goldenDir} ${join(r.outDir, 'golden')} && npx vite preview --config bench/browser/vite.config.ts --outDir ${r.outDir}`,
    `  or: npm run browser:dev   (dev server on ${r.devUrl}, golden vectors ${r.goldenFound ? 'found' : 'NOT found'} at ${r.goldenDir})`,
    `  or: npm run test:browser  (headless Chromium end to end, screenshot in bench/results/browser/)`,
  ].join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const i = process.argv.indexOf('--out');
  const r = await main({ outDir: i > 0 ? process.argv[i + 1] : undefined });
  console.log(summary(r));
}
