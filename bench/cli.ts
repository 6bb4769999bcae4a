import { TesseraError } from '../src/errors.js';

/** Bench suites, by name. Each parses its own argv (commander) and prints/writes results. */
export const SUITES: Record<string, (argv: string[]) => Promise<void>> = {
  dense: async (argv) => (await import('./suites/dense.js')).runDenseSuite(argv),
  topk: async (argv) => (await import('./suites/topk.js')).runTopKBench(argv),
  linear: async (argv) => (await import('./suites/linear.js')).runLinearSuite(argv),
  sparse: async (argv) => (await import('./suites/sparse.js')).runSparseSuite(argv),
  engine: async (argv) => (await import('./suites/engine.js')).runEngineBench(argv),
};

export async function runBenchCli(suite: string, argv: string[]): Promise<void> {
  const run = SUITES[suite];
  if (!run)
    throw new TesseraError('E_ARG', `unknown bench suite "${suite}"`, {
      argument: 'suite',
      actual: suite,
      expected: Object.keys(SUITES).join(', ') || 'none yet',
    });
  await run(argv);
}
