/**
 * Golden vectors from a directory (Node only): `manifest.json` plus one raw float64 file per
 * tensor. The judging is shared with the browser (`golden.ts`).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TesseraError } from '../errors.js';
import { caseFromManifest, parseManifestText, type GoldenCase, type ManifestCase } from './golden.js';

/**
 * Lists the cases of a golden directory without loading tensors.
 *
 * @example
 * const cases = readManifest('../shared/golden');
 */
export function readManifest(dir: string): ManifestCase[] {
  const path = join(dir, 'manifest.json');
  if (!existsSync(path))
    throw new TesseraError('E_IO', `no manifest.json in ${dir}`, {
      argument: '--golden',
      actual: dir,
      expected: 'a golden directory (see ../shared/golden/README.md)',
    });
  return parseManifestText(readFileSync(path, 'utf8'), path);
}

/**
 * Loads one case's tensors from the directory.
 *
 * @example
 * const c = await loadCase(dir, readManifest(dir)[0]);
 */
export function loadCase(dir: string, mc: ManifestCase): Promise<GoldenCase> {
  return caseFromManifest(mc, (file) => readFileSync(join(dir, file)));
}
