/**
 * Issue 13, item 7: README.md is short and fresh. It is generated from docs/intro.md and the
 * headings of docs/*.md (`npm run readme`); here the committed file must equal a fresh build,
 * stay under 15 KB, link every doc, and every code block in it is tested by doc-snippets.test.ts.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(__dirname, '..');
const README = readFileSync(join(ROOT, 'README.md'), 'utf8');

describe('README.md', () => {
  it('is what scripts/build-readme.mjs builds from docs/ (run `npm run readme` after editing docs/intro.md)', () => {
    const r = spawnSync(process.execPath, [join(ROOT, 'scripts/build-readme.mjs'), '--check'], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('is under 15 KB', () => {
    expect(Buffer.byteLength(README)).toBeLessThan(15_000);
  });

  it('links every doc in docs/', () => {
    for (const f of readdirSync(join(ROOT, 'docs')).filter((x) => x.endsWith('.md') && x !== 'intro.md')) {
      expect(README, f).toContain(`](docs/${f})`);
    }
  });

  it('names the two set-up commands (main job and tests) that .ci/run runs', () => {
    expect(README).toContain('bash scripts/setup.sh && npm run tessera -- info && npm run bench -- dense');
    expect(README).toContain('bash scripts/setup.sh && npm test');
    expect(readFileSync(join(ROOT, '.ci/run'), 'utf8')).toContain('bash scripts/setup.sh && npm test');
  });

  it('has three or more TypeScript examples, each marked runnable', () => {
    const blocks = [...README.matchAll(/^```(ts|typescript)([^\n]*)\n/gm)];
    expect(blocks.length).toBeGreaterThanOrEqual(3);
    for (const b of blocks) expect(b[2]).toMatch(/\brunnable\b/);
  });
});
