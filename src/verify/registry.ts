/**
 * The golden handlers `verify` knows. A family registers by adding its handler here.
 */
import type { GoldenHandler } from './golden.js';
import { denseGoldenHandler } from './golden/dense.js';
import { linearGoldenHandler } from './golden/linear.js';
import { deltaGoldenHandler } from './golden/delta.js';
import { mobaGolden } from './golden/moba.js';
import { nsaGolden } from './golden/nsa.js';

export const GOLDEN_HANDLERS: GoldenHandler[] = [
  denseGoldenHandler,
  linearGoldenHandler,
  deltaGoldenHandler,
  mobaGolden,
  nsaGolden,
];
