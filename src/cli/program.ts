/**
 * The library's commands of `tessera`: `info`, `verify`, `demo`. The executable (bin/tessera.ts)
 * builds this program and adds `bench` from bench/, which src/ never imports (layering rules in
 * .dependency-cruiser.cjs). From a checkout: `npm run tessera -- <command>`.
 */
import { writeFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { TesseraError } from '../errors.js';
import { loadCase, readManifest } from '../verify/golden-node.js';
import { verifyCases } from '../verify/verify.js';
import { cliDevice } from '../cli-common.js';
import { deviceInfo, printInfo } from './info.js';
import { registerDemo } from './demo.js';

/** The `tessera` program with the library's commands; callers add more (`bench`) before {@link runProgram}. */
export function createProgram(): Command {
  const program = new Command();
  program.name('tessera').description('WebGPU long-context attention kernels: info, verify, bench, demo');
  program.exitOverride(); // commander errors reach the handler at the end (exit 2); subcommands inherit it

  const collect = (v: string, prev: string[] = []) => [...prev, v];

  program
    .command('info')
    .description('print the adapter, its features and the limits Tessera will use')
    .option('--json', 'print JSON')
    .option('--adapter <name>', 'auto | swiftshader | llvmpipe (default: $TESSERA_ADAPTER or auto)')
    .action(async (o: { json?: boolean; adapter?: string }) => {
      const dev = await cliDevice(o);
      console.log(o.json ? JSON.stringify(deviceInfo(dev), null, 2) : printInfo(dev));
      dev.destroy();
    });

  program
    .command('verify')
    .description('run the golden vectors of a directory (format of ../shared/golden) against the GPU kernels')
    .requiredOption('--golden <dir>', 'golden directory with manifest.json')
    .option('--json <file>', 'write the report as JSON')
    .option('--filter <regex>', 'only cases whose name matches')
    .option('--adapter <name>', 'auto | swiftshader | llvmpipe')
    .option('--dawn-flag <flag>', 'extra Dawn flag (repeatable)', collect)
    .action(async (o: { golden: string; json?: string; filter?: string; adapter?: string; dawnFlag?: string[] }) => {
      let filter: RegExp | undefined;
      try {
        filter = o.filter ? new RegExp(o.filter) : undefined;
      } catch (e) {
        throw new TesseraError('E_ARG', `--filter: not a regular expression (${(e as Error).message})`, {
          argument: '--filter',
          actual: o.filter,
        });
      }
      // Damaged or empty golden data is a verify failure (exit 1), reported without a stack trace.
      let cases: ReturnType<typeof readManifest>;
      try {
        cases = readManifest(o.golden);
      } catch (e) {
        if (!(e instanceof TesseraError)) throw e;
        console.error(`tessera: verify: ${e.message.replace(/^\[tessera \w+\] /, '')} (${e.code})`);
        process.exitCode = 1;
        return;
      }
      const dev = await cliDevice(o);
      try {
        const report = await verifyCases(dev, o.golden, cases, (mc) => loadCase(o.golden, mc), {
          filter,
          log: (l) => console.log(l),
        });
        console.log(`verify: ${report.passed} passed, ${report.failed} failed, ${report.skipped} skipped`);
        if (o.json) writeFileSync(o.json, JSON.stringify(report, null, 2));
        const ran = report.passed + report.failed + report.skipped;
        if (ran === 0)
          console.error(`tessera: verify: no case ran${filter ? ` (--filter ${o.filter} matched none)` : ''}`);
        process.exitCode = report.failed > 0 || report.skipped > 0 || ran === 0 ? 1 : 0;
      } finally {
        dev.destroy();
      }
    });

  registerDemo(program);
  return program;
}

// Bad input never prints a stack trace: `tessera: <message>` and exit 2 for a TesseraError or a
// commander error (commander has printed its own message already; `--help` exits 0). Other
// errors are bugs: the message, exit 1, and the stack only with TESSERA_DEBUG=1.
export function runProgram(program: Command, argv: string[]): Promise<void> {
  return program.parseAsync(argv).then(
    () => undefined,
    (e: unknown) => {
      if (e instanceof CommanderError) {
        process.exitCode = e.exitCode === 0 ? 0 : 2;
        return;
      }
      if (e instanceof TesseraError) {
        console.error(`tessera: ${e.message.replace(/^\[tessera \w+\] /, '')} (${e.code})`);
        process.exitCode = 2;
        return;
      }
      console.error(`tessera: ${e instanceof Error ? e.message : String(e)}`);
      if (process.env.TESSERA_DEBUG && e instanceof Error) console.error(e.stack);
      process.exitCode = 1;
    },
  );
}
