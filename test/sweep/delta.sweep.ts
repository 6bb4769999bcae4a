/** Delta-rule ops: DeltaNet, Gated DeltaNet, KDA (GVA value heads, chunked WY and recurrent forms). */
import { defineSweep } from './run.js';
import { checkScan, scanArb, type ScanConfig } from './scan.js';

export const deltaSweep = defineSweep<ScanConfig>({
  family: 'delta',
  arb: (size) =>
    scanArb(size, [
      { gate: 'none', delta: true },
      { gate: 'scalar', delta: true },
      { gate: 'vector', delta: true },
    ]),
  check: checkScan,
});
