/**
 * The golden handlers `verify` knows. A family registers by adding its handler here.
 */
import type { GoldenHandler } from './golden.js';

export const GOLDEN_HANDLERS: GoldenHandler[] = [];
