/**
 * `tessera verify` in Node: the golden cases of a directory, read from disk.
 */
import type { TesseraDevice } from '../gpu/device.js';
import { loadCase, readManifest } from './golden-node.js';
import { verifyCases, type VerifyReport } from './verify.js';

export { verdictLine, type VerifyReport } from './verify.js';

/** Runs every case of a golden directory that a registered handler supports. */
export async function verifyGolden(
  dev: TesseraDevice,
  dir: string,
  opts: { filter?: RegExp; log?: (line: string) => void } = {},
): Promise<VerifyReport> {
  return verifyCases(dev, dir, readManifest(dir), (mc) => loadCase(dir, mc), opts);
}
