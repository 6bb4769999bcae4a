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
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      const { runDemoCli } = await import('../demo/index.js');
      // the demo's own options: what followed the demo name on the command line this program parsed
      await runDemoCli(name, cmd.args.slice(1));
    });
}
