#!/usr/bin/env node
/**
 * The `tessera` executable: the library's commands (`info`, `verify`, `demo`; src/cli/program.ts)
 * and `bench` (bench/command.ts). It is the one place that joins src/ and bench/: src/ never
 * imports bench/ (layering rules in .dependency-cruiser.cjs).
 * From a checkout: `npm run tessera -- <command>`.
 */
import { registerBench } from '../bench/command.js';
import { createProgram, runProgram } from '../src/cli/program.js';

const program = createProgram();
registerBench(program);
await runProgram(program, process.argv);
