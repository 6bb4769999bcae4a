/**
 * Issue 12, classes 12 and 13: the `tessera` command with bad input and damaged golden data.
 * Spawns the CLI (`node --import tsx bin/tessera.ts`). Bad options are `tessera: <message>`
 * naming the option, exit 2, never a stack trace; damaged golden data (a flipped bit, an empty
 * manifest, a missing parameter, an unknown function, malformed JSON) FAILs `verify` (exit 1).
 * Golden data is copied to a temp directory (one small case) and damaged there.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import type { Command } from 'commander';
import { registerBench } from '../bench/command.js';
import { createProgram, runProgram } from '../src/cli/program.js';

const ROOT = resolve(__dirname, '..');
// ../shared/golden from a checkout (as `npm test` uses it); /work/shared/golden from a worktree
const GOLDEN =
  [process.env.TESSERA_GOLDEN, resolve(ROOT, '../shared/golden'), '/work/shared/golden'].find(
    (d) => d && existsSync(join(d, 'manifest.json')),
  ) ?? resolve(ROOT, '../shared/golden');
const CASE = 'gated_delta_rule_decode'; // the smallest case (156 KB)

function cli(args: string[]): { status: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'bin/tessera.ts', ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 180_000,
    env: { ...process.env, TESSERA_DEBUG: '' },
  });
  return { status: r.status, out: r.stdout, err: r.stderr };
}

/**
 * The same program as bin/tessera.ts, run inside the test worker (no process start, no tsx
 * transform of the whole tree): what it prints (console and commander's own output) and the exit
 * code it sets. The spawned form above stays for the tests that check the executable itself.
 */
async function cliIn(args: string[]): Promise<{ status: number | null; out: string; err: string }> {
  let out = '';
  let err = '';
  const program = createProgram();
  registerBench(program);
  const route = (c: Command): void => {
    c.configureOutput({ writeOut: (x) => void (out += x), writeErr: (x) => void (err += x) });
    c.commands.forEach(route);
  };
  route(program);
  const line = (...a: unknown[]) => `${a.map(String).join(' ')}\n`;
  const log = vi.spyOn(console, 'log').mockImplementation((...a) => void (out += line(...a)));
  const error = vi.spyOn(console, 'error').mockImplementation((...a) => void (err += line(...a)));
  const saved = process.exitCode;
  const debug = process.env.TESSERA_DEBUG;
  process.exitCode = undefined;
  delete process.env.TESSERA_DEBUG;
  try {
    await runProgram(program, [process.execPath, 'tessera', ...args]);
    return { status: Number(process.exitCode ?? 0), out, err };
  } finally {
    process.exitCode = saved;
    if (debug !== undefined) process.env.TESSERA_DEBUG = debug;
    log.mockRestore();
    error.mockRestore();
  }
}

/** No stack trace: no `    at ...` frame line. */
function expectNoStack(s: string): void {
  expect(s).not.toMatch(/^\s+at\s/m);
}

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A temp golden directory holding the one case; `edit` may change its manifest entry. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the tests edit arbitrary manifest fields
function goldenCopy(edit?: (c: Record<string, any>) => void): string {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-golden-'));
  dirs.push(dir);
  const manifest = JSON.parse(readFileSync(join(GOLDEN, 'manifest.json'), 'utf8'));
  const c = manifest.cases.find((x: { name: string }) => x.name === CASE);
  cpSync(join(GOLDEN, CASE), join(dir, CASE), { recursive: true });
  edit?.(c);
  manifest.cases = [c];
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
  return dir;
}

describe('class 12: verify does not trust damaged golden data', () => {
  it('an intact copy passes (exit 0; the executable itself, spawned)', () => {
    const r = cli(['verify', '--golden', goldenCopy()]);
    expect(r.out, r.err).toMatch(new RegExp(`^PASS ${CASE} `, 'm'));
    expect(r.status).toBe(0);
  });

  it('one flipped bit in a tensor file FAILs the case on its sha256 (exit 1)', async () => {
    const dir = goldenCopy();
    const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
    const file = join(dir, manifest.cases[0].inputs.q.file);
    const bytes = readFileSync(file);
    bytes[100] ^= 0x01; // the lowest mantissa bit of one value: numerically invisible
    writeFileSync(file, bytes);
    const r = await cliIn(['verify', '--golden', dir]);
    expect(r.out).toMatch(new RegExp(`^FAIL ${CASE} .*sha256`, 'm'));
    expect(r.status).toBe(1);
    expectNoStack(r.out + r.err);
  });

  it('a tensor without a sha256 in the manifest FAILs (exit 1)', async () => {
    const r = await cliIn(['verify', '--golden', goldenCopy((c) => delete c.outputs.o.sha256)]);
    expect(r.out).toMatch(new RegExp(`^FAIL ${CASE} .*no sha256`, 'm'));
    expect(r.status).toBe(1);
  });

  it('an empty manifest is a failure (exit 1), with a typed message', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-golden-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ cases: [] }));
    const r = await cliIn(['verify', '--golden', dir]);
    expect(r.err).toMatch(/^tessera: verify: .*empty.*\(E_IO\)$/m);
    expect(r.status).toBe(1);
    expectNoStack(r.out + r.err);
  });

  it('malformed JSON is a typed error, no stack trace (exit 1)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-golden-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'manifest.json'), '{ "cases": [ { "name": ');
    const r = await cliIn(['verify', '--golden', dir]);
    expect(r.err).toMatch(/^tessera: verify: .*not valid JSON.*\(E_IO\)$/m);
    expect(r.status).toBe(1);
    expectNoStack(r.out + r.err);
  });

  it('a case with a missing parameter FAILs (exit 1)', async () => {
    const r = await cliIn(['verify', '--golden', goldenCopy((c) => delete c.params.K)]);
    expect(r.out).toMatch(new RegExp(`^FAIL ${CASE} `, 'm'));
    expect(r.status).toBe(1);
    expectNoStack(r.out + r.err);
  });

  it('a case with an unknown function FAILs (exit 1)', async () => {
    const r = await cliIn([
      'verify',
      '--golden',
      goldenCopy((c) => {
        c.name = 'mystery_op';
        c.source.function = 'naive_mystery_op';
      }),
    ]);
    expect(r.out).toMatch(/^FAIL mystery_op .*unknown function/m);
    expect(r.status).toBe(1);
  });

  it('a --filter that matches no case is a failure (exit 1)', async () => {
    const r = await cliIn(['verify', '--golden', goldenCopy(), '--filter', '^nothing$']);
    expect(r.err).toMatch(/no case ran/);
    expect(r.status).toBe(1);
  });
});

describe('class 13: CLI options are validated, named, never a stack trace', () => {
  const rows: [string[], RegExp][] = [
    [['bench', 'dense', '--T', '0'], /^tessera: --T: "0" /m],
    [['bench', 'dense', '--T', '-5'], /^tessera: --T: "-5" /m],
    [['bench', 'dense', '--T', 'abc'], /^tessera: --T: "abc" /m],
    [['bench', 'dense', '--T', '64,0'], /^tessera: --T: "64,0" /m],
    [['bench', 'dense', '--runs', '1.5'], /^tessera: --runs: /m],
    [['bench', 'dense', '--D', '64,128'], /^tessera: --D: /m],
    [['bench', 'linear', '--K', 'x'], /^tessera: --K: /m],
    [['bench', 'linear', '--warmup', '-1'], /^tessera: --warmup: /m],
    [['bench', 'topk', '--runs', '0'], /^tessera: --runs: /m],
    [['bench', 'sparse', '--window', 'abc'], /^tessera: --window: /m],
    [['bench', 'sparse', '--T', '0'], /^tessera: --T: /m],
    [['bench', 'nope'], /^tessera: unknown bench suite/m],
    [['demo', 'needle', '--tokens', '1'], /^tessera: --tokens: "1" is not an integer in \[\d+, /m],
    [['demo', 'needle', '--tokens', 'abc'], /^tessera: --tokens: /m],
    [['demo', 'needle', '--seed', '-3'], /^tessera: --seed: /m],
    [['verify', '--golden', GOLDEN, '--filter', '('], /^tessera: --filter: /m],
  ];
  for (const [args, want] of rows) {
    it(`tessera ${args.join(' ')} -> exit 2 naming the option`, async () => {
      const r = await cliIn(args);
      expect(r.err, r.out).toMatch(want);
      expect(r.status).toBe(2);
      // refused before any GPU work: no device opened, no roofline measured
      expect(r.out).not.toMatch(/^(adapter|roofline):/m);
      expectNoStack(r.out + r.err);
    });
  }

  it('an unknown command or option is exit 2 without a stack trace', () => {
    for (const args of [['frobnicate'], ['info', '--bogus']]) {
      const r = cli(args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.err).toMatch(/error/);
      expectNoStack(r.out + r.err);
    }
  });
});
