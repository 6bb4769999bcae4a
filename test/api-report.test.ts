/**
 * Issue 13, item 5: the public API report. api/tessera.api.md must equal what
 * scripts/api-report.mjs derives from the entry points in package.json "exports" (run
 * `npm run api-report` after changing what an entry point exports; `npm test`'s static checks run
 * it with --check), and the check fails, naming the line, when the committed report and the
 * surface differ. The tiers hold what they promise.
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
  // Whether the committed report equals the surface is the `api report` static check of `npm test`
  // (scripts/checks.mjs runs `scripts/api-report.mjs --check`, which derives the report with the
  // TypeScript compiler: seconds, so not derived a second time here); this test holds the diff that
  // check prints: a missing export is named by its line.
  it('a surface that differs from api/tessera.api.md shows as the differing line', async () => {
    // @ts-expect-error: a plain .mjs script without types
    const { diffLines } = (await import('../scripts/api-report.mjs')) as {
      diffLines: (a: string, b: string) => string[];
    };
    const committed = readFileSync(REPORT, 'utf8');
    expect(diffLines(committed, committed)).toEqual([]);
    const line = committed.split('\n').find((l) => l.startsWith('function planAttention'))!;
    expect(line).toBeTruthy();
    expect(diffLines(committed.replace(`${line}\n`, ''), committed)).toEqual([`+ ${line}`]);
    expect(diffLines(committed, committed.replace(`${line}\n`, ''))).toEqual([`- ${line}`]);
  });

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
