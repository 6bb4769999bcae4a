/** Linear-attention ops: linear attention (with/without the normaliser), simple GLA, retention (constant gates), GLA. */
import { defineSweep } from './run.js';
import { checkScan, scanArb, type ScanConfig } from './scan.js';

export const linearSweep = defineSweep<ScanConfig>({
  family: 'linear',
  arb: (size) =>
    scanArb(size, [
      { gate: 'none', delta: false, gva: false },
      { gate: 'none', delta: false, normalize: true, gva: false },
      { gate: 'scalar', delta: false },
      { gate: 'constant', delta: false },
      { gate: 'vector', delta: false },
    ]),
  check: checkScan,
});
