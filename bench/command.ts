import type { Command } from 'commander';

/** Registers `tessera bench <suite>` on the program of bin/tessera.ts. Suites are listed in bench/cli.ts. */
export function registerBench(program: Command): void {
  program
    .command('bench')
    .description('run a benchmark suite (see bench/README.md)')
    .argument('<suite>', 'suite name')
    .allowUnknownOption(true)
    .allowExcessArguments(true)
    .helpOption(false)
    .action(async (suite: string) => {
      const { runBenchCli } = await import('./cli.js');
      await runBenchCli(suite, process.argv.slice(process.argv.indexOf(suite) + 1));
    });
}
