import type { Command } from 'commander';

/** Registers `tessera demo <name>`. */
export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description(
      'run a demo (needle: 10M-token sparse decode vs exact streaming; agents: persistent, forked, rewound sessions with shared-prefix decode)',
    )
    .argument('<name>', 'demo name')
    .allowUnknownOption(true)
    .allowExcessArguments(true)
    .action(async (name: string) => {
      const { runDemoCli } = await import('../demo/index.js');
      await runDemoCli(name, process.argv.slice(process.argv.indexOf(name) + 1));
    });
}
