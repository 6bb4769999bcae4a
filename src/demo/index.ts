import { TesseraError } from '../errors.js';

/** Demos, by name. Each takes its own argv (parsed with commander). */
export const DEMOS: Record<string, (argv: string[]) => Promise<void>> = {
  needle: async (argv) => (await import('./needle.js')).needleCli(argv),
  agents: async (argv) => (await import('./agents.js')).agentsCli(argv),
  prefill: async (argv) => (await import('./prefill.js')).prefillCli(argv),
  split: async (argv) => (await import('./split.js')).splitCli(argv),
};

export async function runDemoCli(name: string, argv: string[]): Promise<void> {
  const demo = DEMOS[name];
  if (!demo)
    throw new TesseraError('E_ARG', `unknown demo "${name}"`, {
      argument: 'name',
      actual: name,
      expected: Object.keys(DEMOS).join(', ') || 'none yet',
    });
  await demo(argv);
}
