// ESLint (flat config): the recommended rules of ESLint and typescript-eslint over all TypeScript
// and scripts, no style rules (layout is Prettier's: `npm run format:check`). `npm run lint` is part
// of `npm test`.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

export default tseslint.config(
  {
    // generated (embedded WGSL, build output, benchmark results) or not ours
    ignores: [
      'dist/',
      '.doc-snippets/',
      '.wt/',
      '.gl/',
      'tmp/',
      'gpu-bundle/',
      'gpu-results/',
      'node_modules/',
      '**/*.wgsl.ts',
      'bench/results/',
      'bench/browser/dist/',
      'gpu-bundle/',
      'gpu-results/',
      'tmp/',
      'api/',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      // Node (CLI, tests, scripts) and the browser (bench/browser, examples/browser, test/browser)
      globals: { ...globals.node, ...globals.browser },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // `const { dropped: _d, ...rest } = o` is how an option is removed from an object: a leading
      // underscore marks a name as deliberately unused.
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', ignoreRestSiblings: true },
      ],
    },
  },
  {
    // Rewritten on the sparse-core branch; remove this block when that lands (kernels/nsa/nsa.ts:
    // an unused `G`).
    files: ['kernels/nsa/nsa.ts'],
    rules: { '@typescript-eslint/no-unused-vars': 'off' },
  },
);
