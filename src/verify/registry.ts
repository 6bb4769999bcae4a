/**
 * The golden handlers `verify` knows. A family registers by adding its handler here.
 */
import type { GoldenHandler } from './golden.js';
import { denseGoldenHandler } from '../../kernels/dense/golden.js';

export const GOLDEN_HANDLERS: GoldenHandler[] = [denseGoldenHandler];
