/**
 * The golden handlers `verify` knows. A family registers by adding its handler here.
 */
import type { GoldenHandler } from './golden.js';
import { denseGoldenHandler } from '../../kernels/dense/golden.js';
import { linearGoldenHandler } from '../../kernels/linear/golden.js';
import { deltaGoldenHandler } from '../../kernels/delta/golden.js';
import { mobaGolden } from '../../kernels/moba/golden.js';
import { nsaGolden } from '../../kernels/nsa/golden.js';

export const GOLDEN_HANDLERS: GoldenHandler[] = [
  denseGoldenHandler,
  linearGoldenHandler,
  deltaGoldenHandler,
  mobaGolden,
  nsaGolden,
];
