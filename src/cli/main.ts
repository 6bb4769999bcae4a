#!/usr/bin/env node
/**
 * The `tessera` command: `info`, `verify`, `bench`, `demo`.
 * From a checkout: `npm run tessera -- <command>`.
 */
import { writeFileSync } from 'node:fs';
import { Command } from 'commander';
import { TesseraError } from '../errors.js';
import { verifyGolden } from '../verify/run.js';
import { cliDevice } from './common.js';
import { deviceInfo, printInfo } from './info.js';
import { registerBench } from './bench.js';
import { registerDemo } from './demo.js';

const program = new Command();
program.name('tessera').description('WebGPU long-context attention kernels: info, verify, bench, demo');

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
    const dev = await cliDevice(o);
    const report = await verifyGolden(dev, o.golden, { filter: o.filter ? new RegExp(o.filter) : undefined, log: (l) => console.log(l) });
    console.log(`verify: ${report.passed} passed, ${report.failed} failed, ${report.skipped} skipped`);
    if (o.json) writeFileSync(o.json, JSON.stringify(report, null, 2));
    dev.destroy();
    process.exitCode = report.failed > 0 ? 1 : 0;
  });

registerBench(program);
registerDemo(program);

program.parseAsync(process.argv).catch((e: unknown) => {
  if (e instanceof TesseraError) console.error(e.message);
  else console.error(e);
  process.exitCode = 2;
});
