/**
 * Issue 12, class 14: every TypeScript code block in README.md and docs/*.md is extracted,
 * type-checked with the project's compiler settings, and the blocks marked runnable (fence
 * "```ts runnable") are executed in Node; a snippet that does not compile or does not run fails
 * here. Imports of the package (`tessera`, `tessera/node`, `tessera/tfjs`) are mapped to the
 * sources. Files go to `.doc-snippets/` (git-ignored), one per distinct block.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(__dirname, '..');
const OUT = join(ROOT, '.doc-snippets');
const SOURCES = [
  'README.md',
  ...readdirSync(join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
];
const PACKAGE_PATHS: Record<string, string> = {
  tessera: '../src/index.js',
  'tessera/advanced': '../src/advanced.js',
  'tessera/testing': '../src/testing.js',
  'tessera/reference': '../src/reference.js',
  'tessera/node': '../src/node.js',
  'tessera/tfjs': '../src/interop/tfjs.js',
};

interface Snippet {
  file: string;
  where: string;
  code: string;
  runnable: boolean;
}

function extract(): Snippet[] {
  const seen = new Map<string, Snippet>();
  for (const src of SOURCES) {
    const text = readFileSync(join(ROOT, src), 'utf8');
    for (const m of text.matchAll(/^```(ts|typescript)([^\n]*)\n([\s\S]*?)^```$/gm)) {
      const code = m[3]!;
      const line = text.slice(0, m.index).split('\n').length;
      const prev = seen.get(code);
      if (prev) {
        prev.runnable ||= /\brunnable\b/.test(m[2]!);
        continue;
      }
      seen.set(code, {
        file: `snippet${seen.size}.mts`,
        where: `${src}:${line}`,
        code,
        runnable: /\brunnable\b/.test(m[2]!),
      });
    }
  }
  return [...seen.values()];
}

const snippets = extract();
rmSync(OUT, { recursive: true, force: true });
mkdirSync(OUT, { recursive: true });
for (const s of snippets) {
  const mapped = s.code.replace(
    /(from\s+|import\s*\(\s*)'(tessera(?:\/node|\/tfjs|\/advanced|\/testing|\/reference)?)'/g,
    (_, pre: string, name: string) => `${pre}'${PACKAGE_PATHS[name]}'`,
  );
  writeFileSync(join(OUT, s.file), `// ${s.where}\nexport {};\n${mapped}`);
}
writeFileSync(
  join(OUT, 'tsconfig.json'),
  JSON.stringify({ extends: '../tsconfig.json', compilerOptions: { noEmit: true, rootDir: '..' }, include: ['*.mts'] }),
);

describe('code blocks in README.md and docs/*.md', () => {
  it(`there are blocks to check (${snippets.length} distinct, ${snippets.filter((s) => s.runnable).length} runnable)`, () => {
    expect(snippets.length).toBeGreaterThanOrEqual(6);
  });

  it('every block type-checks', () => {
    const r = spawnSync(
      process.execPath,
      [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(OUT, 'tsconfig.json')],
      { cwd: ROOT, encoding: 'utf8', timeout: 300_000 },
    );
    const where = (out: string) =>
      out.replace(
        /\.doc-snippets\/(snippet\d+)\.mts/g,
        (_, f: string) => snippets.find((s) => s.file === `${f}.mts`)?.where ?? f,
      );
    expect(where(r.stdout + r.stderr), 'tsc errors').toBe('');
    expect(r.status).toBe(0);
  }, 300_000);

  for (const s of snippets.filter((x) => x.runnable)) {
    it(`${s.where} runs`, () => {
      const r = spawnSync(process.execPath, ['--import', 'tsx', join(OUT, s.file)], {
        cwd: ROOT,
        encoding: 'utf8',
        timeout: 240_000,
      });
      expect(r.status, `${s.where}\n${r.stderr.slice(-3000)}`).toBe(0);
    }, 240_000);
  }
});
