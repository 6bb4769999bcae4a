/** Every family's sweep, in the order the sweep command runs them. */
import type { AnySweep } from './run.js';
import { denseSweep } from './dense.sweep.js';
import { denseDecodeSweep } from './dense_decode.sweep.js';
import { mergeSweep } from './merge.sweep.js';
import { topkSweep } from './topk.sweep.js';
import { mobaSweep } from './moba.sweep.js';
import { nsaSweep } from './nsa.sweep.js';
import { blockSparseSweep } from './block_sparse.sweep.js';
import { linearSweep } from './linear.sweep.js';
import { deltaSweep } from './delta.sweep.js';
import { kvSweep } from './kv.sweep.js';
import { questSweep } from './quest.sweep.js';
import { dsaSweep } from './dsa.sweep.js';

export const SWEEPS: AnySweep[] = [
  mergeSweep,
  topkSweep,
  denseSweep,
  denseDecodeSweep,
  mobaSweep,
  nsaSweep,
  blockSparseSweep,
  linearSweep,
  deltaSweep,
  kvSweep,
  questSweep,
  dsaSweep,
];
