/**
 * The library's commands without the benchmarks (`info`, `verify`, `demo`), for
 * `npx tsx src/cli/main.ts <command>` in a checkout. The installed `tessera` executable is
 * bin/tessera.ts, which adds `bench`.
 */
import { createProgram, runProgram } from './program.js';

await runProgram(createProgram(), process.argv);
