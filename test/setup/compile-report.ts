/**
 * With TESSERA_COMPILE_REPORT=1, each test file prints how long it spent compiling pipelines and
 * how long it ran and in which worker (pid; stderr), to see where `npm test`'s time goes; with 2,
 * also each pipeline it compiled first (its key cut to 160 characters; 3: the whole key). Off by
 * default.
 */
import { afterAll, beforeAll, expect } from 'vitest';
import { compileLog, compileTimeMs } from '../../src/gpu/pipeline.js';

if (process.env.TESSERA_COMPILE_REPORT) {
  let c0 = 0;
  let t0 = 0;
  let file = '?';
  let n0 = 0;
  beforeAll(() => {
    file = (expect.getState().testPath ?? '?').replace(/.*\/test\//, 'test/');
    c0 = compileTimeMs();
    n0 = compileLog().length;
    t0 = performance.now();
  });
  afterAll(() => {
    const compile = (compileTimeMs() - c0) / 1000;
    const total = (performance.now() - t0) / 1000;
    const mine = compileLog().slice(n0);
    process.stderr.write(
      `compile-report ${file} compile ${compile.toFixed(1)} s of ${total.toFixed(1)} s, ${mine.length} pipelines, pid ${process.pid}\n`,
    );
    // TESSERA_COMPILE_REPORT=2 lists each pipeline the file compiled first
    const level = Number(process.env.TESSERA_COMPILE_REPORT);
    if (level >= 2)
      for (const c of mine)
        process.stderr.write(`  ${(c.ms / 1000).toFixed(2)} s ${level >= 3 ? c.key : c.key.slice(0, 160)}\n`);
  });
}
