/**
 * With TESSERA_COMPILE_REPORT=1, each test file prints how long it spent compiling pipelines and
 * how long it ran (stderr), to see where `npm test`'s time goes. Off by default.
 */
import { afterAll, beforeAll, expect } from 'vitest';
import { compileTimeMs } from '../../src/gpu/pipeline.js';

if (process.env.TESSERA_COMPILE_REPORT) {
  let c0 = 0;
  let t0 = 0;
  let file = '?';
  beforeAll(() => {
    file = (expect.getState().testPath ?? '?').replace(/.*\/test\//, 'test/');
    c0 = compileTimeMs();
    t0 = performance.now();
  });
  afterAll(() => {
    const compile = (compileTimeMs() - c0) / 1000;
    const total = (performance.now() - t0) / 1000;
    process.stderr.write(`compile-report ${file} compile ${compile.toFixed(1)} s of ${total.toFixed(1)} s\n`);
  });
}
