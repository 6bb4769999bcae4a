/**
 * The golden handlers `verify` knows. A family registers by adding its handler here.
 */
import type { GoldenHandler } from './golden.js';
import { mobaGolden } from '../../kernels/moba/golden.js';

export const GOLDEN_HANDLERS: GoldenHandler[] = [mobaGolden];
