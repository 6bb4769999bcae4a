#!/usr/bin/env node
// The public API report (issue 13): for every entry point named in package.json "exports", each
// exported name with its kind and signature, written to api/tessera.api.md with the TypeScript
// compiler API (no other tool). `npm test` runs it with `--check`, which exits 1 when the
// exported surface differs from the committed report: a change to the public API must come with
// `npm run api-report` and the regenerated file in the same commit, so a reviewer sees it.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
// `--report FILE` compares with (or writes) another file: the test uses it on an edited copy.
const at = process.argv.indexOf('--report');
const OUT = at > 0 ? process.argv[at + 1] : join(root, 'api', 'tessera.api.md');

// "./advanced": { "types": "./dist/src/advanced.d.ts" } -> tessera/advanced, src/advanced.ts
const entries = Object.entries(pkg.exports).map(([sub, target]) => {
  const types = typeof target === 'string' ? target : target.types;
  const src = types.replace(/^\.\/dist\//, '').replace(/\.d\.ts$/, '.ts');
  return { name: sub === '.' ? pkg.name : `${pkg.name}/${sub.replace(/^\.\//, '')}`, file: join(root, src), src };
});

const config = ts.getParsedCommandLineOfConfigFile(
  join(root, 'tsconfig.json'),
  {},
  {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: (d) => {
      throw new Error(ts.flattenDiagnosticMessageText(d.messageText, '\n'));
    },
  },
);
// Created on the first report (seconds of parsing), not on import: test/api-report.test.ts imports
// only diffLines.
let program;
let checker;
const FLAGS =
  ts.TypeFormatFlags.NoTruncation |
  ts.TypeFormatFlags.UseSingleQuotesForStringLiteralType |
  ts.TypeFormatFlags.WriteArrowStyleSignature;
const oneLine = (s) =>
  s
    .replace(/import\("[^"]*"\)\./g, '')
    .replace(/\s+/g, ' ')
    .trim();

function kindOf(sym) {
  const f = sym.flags;
  if (f & ts.SymbolFlags.Class) return 'class';
  if (f & ts.SymbolFlags.Function) return 'function';
  if (f & ts.SymbolFlags.Enum) return 'enum';
  if (f & ts.SymbolFlags.Interface) return 'interface';
  if (f & ts.SymbolFlags.TypeAlias) return 'type';
  if (f & ts.SymbolFlags.Variable) return 'const';
  if (f & ts.SymbolFlags.Module) return 'namespace';
  return 'other';
}

function memberLines(sym, decl) {
  const type = checker.getDeclaredTypeOfSymbol(sym);
  const lines = [];
  for (const p of checker.getPropertiesOfType(type)) {
    const d = p.valueDeclaration ?? p.declarations?.[0];
    if (!d) continue;
    const mods = ts.getCombinedModifierFlags(d);
    if (mods & (ts.ModifierFlags.Private | ts.ModifierFlags.Protected)) continue;
    if (p.name.startsWith('#')) continue;
    const t = checker.getTypeOfSymbolAtLocation(p, decl);
    const opt = p.flags & ts.SymbolFlags.Optional ? '?' : '';
    const ro = mods & ts.ModifierFlags.Readonly ? 'readonly ' : '';
    const dep = ts.getJSDocTags(d).some((tag) => tag.tagName.text === 'deprecated') ? ' (deprecated)' : '';
    const sigs = t.getCallSignatures();
    if (p.flags & ts.SymbolFlags.Method && sigs.length) {
      for (const s of sigs) lines.push(`  ${p.name}${opt}${oneLine(checker.signatureToString(s, decl, FLAGS))}${dep}`);
    } else lines.push(`  ${ro}${p.name}${opt}: ${oneLine(checker.typeToString(t, decl, FLAGS))}${dep}`);
  }
  return lines;
}

function describe(exportName, sym0) {
  const sym = sym0.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(sym0) : sym0;
  const decl = sym.valueDeclaration ?? sym.declarations?.[0];
  const kind = kindOf(sym);
  const dep = decl && ts.getJSDocTags(decl).some((t) => t.tagName.text === 'deprecated') ? ' (deprecated)' : '';
  const head = `${kind} ${exportName}${dep}`;
  if (!decl) return [head];
  if (kind === 'function') {
    const t = checker.getTypeOfSymbolAtLocation(sym, decl);
    return t.getCallSignatures().map((s) => `${head}${oneLine(checker.signatureToString(s, decl, FLAGS))}`);
  }
  if (kind === 'const')
    return [`${head}: ${oneLine(checker.typeToString(checker.getTypeOfSymbolAtLocation(sym, decl), decl, FLAGS))}`];
  if (kind === 'type')
    return [
      `${head} = ${oneLine(checker.typeToString(checker.getDeclaredTypeOfSymbol(sym), decl, FLAGS | ts.TypeFormatFlags.InTypeAlias))}`,
    ];
  if (kind === 'enum') return [head];
  if (kind === 'class') {
    const ctor = checker
      .getTypeOfSymbolAtLocation(sym, decl)
      .getConstructSignatures()
      .map((s) => `  constructor${oneLine(checker.signatureToString(s, decl, FLAGS))}`);
    const statics = checker
      .getPropertiesOfType(checker.getTypeOfSymbolAtLocation(sym, decl))
      .filter(
        (p) =>
          p.name !== 'prototype' &&
          !(
            ts.getCombinedModifierFlags(p.valueDeclaration ?? p.declarations?.[0]) &
            (ts.ModifierFlags.Private | ts.ModifierFlags.Protected)
          ),
      )
      .map(
        (p) =>
          `  static ${p.name}: ${oneLine(checker.typeToString(checker.getTypeOfSymbolAtLocation(p, decl), decl, FLAGS))}`,
      );
    return [`${head} {`, ...ctor, ...statics, ...memberLines(sym, decl), '}'];
  }
  if (kind === 'interface') return [`${head} {`, ...memberLines(sym, decl), '}'];
  return [head];
}

function report() {
  program ??= ts.createProgram(
    entries.map((e) => e.file),
    { ...config.options, noEmit: true },
  );
  checker ??= program.getTypeChecker();
  const out = [
    '<!-- Generated by scripts/api-report.mjs (npm run api-report); checked by npm test (--check). Do not edit. -->',
    '# Tessera public API',
    '',
  ];
  out.push('Each entry point of package.json "exports", its exported names (sorted) with kind and signature.', '');
  for (const e of entries) {
    const sf = program.getSourceFile(e.file);
    if (!sf) throw new Error(`api-report: ${e.src} (from package.json exports) not found`);
    const modSym = checker.getSymbolAtLocation(sf);
    const exports = modSym ? checker.getExportsOfModule(modSym) : [];
    const names = exports.map((s) => s.name).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    out.push(`## \`${e.name}\` (${e.src}): ${names.length} names`, '', '```text');
    for (const n of names)
      out.push(
        ...describe(
          n,
          exports.find((s) => s.name === n),
        ),
      );
    out.push('```', '');
  }
  return out.join('\n');
}

/** Lines of `old` missing from `now` (`- `) and lines of `now` missing from `old` (`+ `). */
export function diffLines(old, now) {
  const a = old.split('\n'),
    b = now.split('\n');
  const sa = new Set(a),
    sb = new Set(b);
  return [...a.filter((l) => !sb.has(l)).map((l) => `- ${l}`), ...b.filter((l) => !sa.has(l)).map((l) => `+ ${l}`)];
}

export { report as apiReport, OUT as REPORT_PATH };

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const text = report();
  if (process.argv.includes('--check')) {
    let old = '';
    try {
      old = readFileSync(OUT, 'utf8');
    } catch {
      /* missing */
    }
    if (old !== text) {
      console.error(
        `api/tessera.api.md is out of date with the exported API: run \`npm run api-report\` and commit it.\n${diffLines(old, text).slice(0, 40).join('\n')}`,
      );
      process.exit(1);
    }
  } else if (process.argv.includes('--counts')) {
    for (const line of text.split('\n')) if (line.startsWith('## ')) console.log(line.slice(3));
  } else {
    mkdirSync(dirname(OUT), { recursive: true });
    writeFileSync(OUT, text);
    console.log(`wrote ${OUT}`);
  }
}
