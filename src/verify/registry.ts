/**
 * The golden handlers `verify` knows. A family registers by adding its handler here.
 */
import type { GoldenHandler } from './golden.js';
import { mobaGolden } from '../../kernels/moba/golden.js';
import { nsaGolden } from '../../kernels/nsa/golden.js';

export const GOLDEN_HANDLERS: GoldenHandler[] = [mobaGolden, nsaGolden];
