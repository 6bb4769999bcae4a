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
    .action(async (suite: string, _opts: unknown, cmd: Command) => {
      const { runBenchCli } = await import('./cli.js');
      // the suite's own options: what followed the suite name on the command line this program parsed
      await runBenchCli(suite, cmd.args.slice(1));
    });
}
