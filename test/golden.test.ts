/**
 * The golden cases (`../shared/golden`, as `tessera verify --golden` reads them) verified inside the
 * test worker, on the shared device: the same check as the `tessera verify` stage of `npm test`,
 * without a process of its own that compiles every kernel again (the CLI itself is tested in
 * test/cli.test.ts). Exits as the CLI does: any FAIL or SKIP, or no case at all, fails.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { expect, it } from 'vitest';
import { verdictLine, verifyGolden } from '../src/verify/run.js';
import { useGpu } from './helpers/gpu.js';

const ROOT = resolve(__dirname, '..');
// ../shared/golden from a checkout (as `npm test` uses it); /work/shared/golden from a worktree
const GOLDEN =
  [process.env.TESSERA_GOLDEN, resolve(ROOT, '../shared/golden'), '/work/shared/golden'].find(
    (d) => d && existsSync(join(d, 'manifest.json')),
  ) ?? resolve(ROOT, '../shared/golden');

const gpu = useGpu();

it('every golden case passes verify (PASS only: no FAIL, no SKIP)', async () => {
  const report = await verifyGolden(gpu.dev, GOLDEN);
  const lines = report.cases.map(verdictLine).join('\n');
  expect(report.cases.length, `cases in ${GOLDEN}`).toBeGreaterThan(0);
  expect(report.failed, lines).toBe(0);
  expect(report.skipped, lines).toBe(0);
  expect(report.passed).toBe(report.cases.length);
}, 600_000);
