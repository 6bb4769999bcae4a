/**
 * Layering rules (docs/design.md, "Layers"): arrows point down only.
 *   kernels/  never import src/kv, src/stream, src/verify, src/cli, src/demo
 *   src/      never imports bench/; only bin/ imports src/cli (bin/tessera.ts joins src/cli and bench/)
 *   no import cycles anywhere in src/, kernels/, bench/
 * Run by `npm run layers` (part of `npm test`).
 */

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'kernels-not-orchestration',
      severity: 'error',
      comment: 'kernels are the bottom layer: they do not know the KV cache, streams, verification or the CLI',
      from: { path: '^kernels/' },
      to: { path: '^src/(kv|stream|verify|cli|demo)/' },
    },
    {
      name: 'src-not-bench',
      severity: 'error',
      comment: 'the library does not import the benchmarks; bench/ registers itself with the CLI instead',
      from: { path: '^src/' },
      to: { path: '^bench/' },
    },
    {
      name: 'cli-on-top',
      severity: 'error',
      comment: 'src/cli is the top of the library: only the executable (bin/) and src/cli itself import it',
      from: { path: '^(src|kernels|bench)/', pathNot: '^src/cli/' },
      to: { path: '^src/cli/' },
    },
    {
      name: 'no-cycles',
      severity: 'error',
      comment:
        'import cycles make the load order matter and the layers meaningless. A cycle closed only by ' +
        '`import type` (src/kv: the modules beside cache.ts name the KvCache type they serve) is erased at ' +
        'compile time and allowed',
      from: { path: '^(bin|src|kernels|bench)/' },
      to: { circular: true, viaOnly: { dependencyTypesNot: ['type-only'] } },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)node_modules/|^dist/|^bench/browser/dist/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js', '.mjs', '.cjs', '.json'] },
  },
};
