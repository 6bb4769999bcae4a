/**
 * Issue 13, item 8: a benchmark run writes the committed files under `bench/results/` only with
 * `--save`. Each suite that can write a report runs once at a tiny size without `--save` (and with
 * `TESSERA_BENCH_DIR` unset): no file under bench/results is added, removed or changed, and the
 * `--json FILE` it was given holds the run's real results. One suite then runs with `--save` and
 * `TESSERA_BENCH_DIR` pointing at a temp folder, which receives the report.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBenchCli } from '../bench/cli.js';

const RESULTS = resolve(__dirname, '../bench/results');

function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.set(p, `${statSync(p).mtimeMs}:${createHash('sha256').update(readFileSync(p)).digest('hex')}`);
    }
  };
  if (existsSync(dir)) walk(dir);
  return out;
}

// Every suite writes through the same report writer; npm test runs the two quick ones, the
// extended tier the dense and sparse suites (seconds each: their roofline probes and baselines).
const SUITES: [string, string[], string[]][] = [
  ['dense', ['--T', '32', '--D', '16', '--runs', '1', '--baseline-runs', '1', '--baseline', 'none'], ['extended']],
  ['linear', ['--op', 'linear_attn', '--T', '64', '--K', '16', '--mode', 'chunk', '--runs', '1', '--warmup', '0'], []],
  ['sparse', ['--T', '128', '--D', '16', '--methods', 'sliding_window', '--window', '32', '--runs', '1'], ['extended']],
  ['topk', ['--cases', '1x256x8', '--baseline', 'none', '--runs', '1'], []],
];

describe('bench writes bench/results only with --save', () => {
  let tmp: string;
  const env = { dir: process.env.TESSERA_BENCH_DIR, quick: process.env.TESSERA_BENCH_QUICK };
  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), 'tessera-bench-save-'));
    delete process.env.TESSERA_BENCH_DIR;
    process.env.TESSERA_BENCH_QUICK = '1'; // small roofline probes
  });
  afterAll(() => {
    rmSync(tmp, { recursive: true, force: true });
    if (env.dir === undefined) delete process.env.TESSERA_BENCH_DIR;
    else process.env.TESSERA_BENCH_DIR = env.dir;
    if (env.quick === undefined) delete process.env.TESSERA_BENCH_QUICK;
    else process.env.TESSERA_BENCH_QUICK = env.quick;
  });

  for (const [suite, args, tags] of SUITES) {
    it(
      `${suite} without --save leaves bench/results untouched and writes only --json`,
      { tags, timeout: 240_000 },
      async () => {
        const before = snapshot(RESULTS);
        expect(before.size).toBeGreaterThan(0);
        const json = join(tmp, `${suite}.json`);
        await runBenchCli(suite, [...args, '--json', json]);
        expect(snapshot(RESULTS)).toEqual(before);
        const report = JSON.parse(readFileSync(json, 'utf8')) as { results: { median_ms: number }[] };
        expect(report.results.length).toBeGreaterThan(0);
        for (const r of report.results) expect(r.median_ms).toBeGreaterThan(0);
      },
    );
  }

  it('topk with --save writes the report where TESSERA_BENCH_DIR points, not into bench/results', async () => {
    const before = snapshot(RESULTS);
    const out = join(tmp, 'saved');
    process.env.TESSERA_BENCH_DIR = out;
    try {
      await runBenchCli('topk', ['--cases', '1x256x8', '--baseline', 'none', '--runs', '1', '--save']);
    } finally {
      delete process.env.TESSERA_BENCH_DIR;
    }
    expect(snapshot(RESULTS)).toEqual(before);
    const files = [...snapshot(out).keys()].map((p) => p.slice(out.length + 1));
    expect(files.some((f) => f.endsWith('/topk.json'))).toBe(true);
    expect(files.some((f) => f.endsWith('/topk.md'))).toBe(true);
  }, 240_000);
});
