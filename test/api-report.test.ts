/**
 * Issue 13, item 5: the public API report. api/tessera.api.md must equal what
 * scripts/api-report.mjs derives from the entry points in package.json "exports" (run
 * `npm run api-report` after changing what an entry point exports), and the check fails, naming
 * the line, when the committed report and the surface differ. The tiers hold what they promise.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import * as main from '../src/index.js';
import * as advanced from '../src/advanced.js';
import * as testing from '../src/testing.js';
import * as reference from '../src/reference.js';

const ROOT = resolve(__dirname, '..');
const REPORT = join(ROOT, 'api/tessera.api.md');

describe('API report', () => {
  it('api/tessera.api.md is up to date with the exported surface, and a missing export shows in the diff', async () => {
    // @ts-expect-error: a plain .mjs script without types
    const { apiReport, diffLines } = (await import('../scripts/api-report.mjs')) as {
      apiReport: () => string;
      diffLines: (a: string, b: string) => string[];
    };
    const now = apiReport();
    const committed = readFileSync(REPORT, 'utf8');
    expect(diffLines(committed, now), 'run `npm run api-report` and commit api/tessera.api.md').toEqual([]);
    expect(now).toBe(committed);
    const line = now.split('\n').find((l) => l.startsWith('function planAttention'))!;
    expect(line).toBeTruthy();
    expect(diffLines(committed.replace(`${line}\n`, ''), now)).toEqual([`+ ${line}`]);
  }, 120_000);

  it('internals are in the tiers, not in the main entry', () => {
    for (const name of [
      'getPipeline',
      'wgslProgram',
      'loopBudget',
      'GALLIVM_LOOP_LIMIT',
      'CORE_PARAMS',
      'checkBuffer',
      'denseGoldenHandler',
      'compare',
      'Rng',
      'TOLERANCE',
      'attentionReference',
    ]) {
      expect(name in main, name).toBe(false);
    }
    expect(typeof advanced.getPipeline).toBe('function');
    expect(typeof advanced.loopBudget).toBe('function');
    expect(typeof testing.compare).toBe('function');
    expect(typeof testing.Rng).toBe('function');
    expect(typeof reference.attentionReference).toBe('function');
    expect(typeof reference.batchAttentionReference).toBe('function');
    expect(typeof main.planAttention).toBe('function');
    expect(typeof main.requestDevice).toBe('function');
  });
});
