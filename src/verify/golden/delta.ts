/**
 * Golden handlers of the delta family: fla's `delta_rule_recurrence` (head-first layout, as the
 * reference takes it), `naive_recurrent_gated_delta_rule` and `naive_recurrent_kda`. Both GPU
 * forms (chunked and recurrent) run and are judged.
 */
import type { GoldenCase, GoldenHandler } from '../golden.js';
import { runScanGolden } from './linear.js';

const fn = (c: GoldenCase) => c.source?.function ?? '';

export const deltaGoldenHandler: GoldenHandler = {
  family: 'delta',
  matches: (c) => ['delta_rule_recurrence', 'naive_recurrent_gated_delta_rule', 'naive_recurrent_kda'].includes(fn(c)),
  run: (dev, c) => {
    const f = fn(c);
    if (f === 'delta_rule_recurrence')
      return runScanGolden(dev, c, { gate: 'none', delta: true, op: 'delta_rule' }, { headFirst: true });
    if (f === 'naive_recurrent_gated_delta_rule')
      return runScanGolden(dev, c, { gate: 'scalar', delta: true, op: 'gated_delta_rule' });
    return runScanGolden(dev, c, { gate: 'vector', delta: true, op: 'kda' });
  },
};
