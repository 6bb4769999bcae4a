/**
 * Golden vectors over HTTP (browser, or Node with fetch): `<base>/manifest.json` and the tensor
 * files relative to it. The judging is shared with Node (`golden.ts`).
 */
import { TesseraError } from '../errors.js';
import { caseFromManifest, parseManifestText, type GoldenCase, type ManifestCase } from './golden.js';

function join(base: string, file: string): string {
  return base.replace(/\/+$/, '') + '/' + file.split('/').map(encodeURIComponent).join('/');
}

async function get(url: string): Promise<Response> {
  let r: Response;
  try {
    r = await fetch(url);
  } catch (e) {
    throw new TesseraError('E_IO', `fetch ${url} failed: ${(e as Error).message}`, { cause: e });
  }
  if (!r.ok)
    throw new TesseraError('E_IO', `fetch ${url}: HTTP ${r.status}`, {
      argument: 'url',
      actual: r.status,
      expected: '200',
    });
  return r;
}

/**
 * Fetches `<base>/manifest.json` and returns its cases.
 *
 * @example
 * const cases = await fetchManifest('/golden');
 */
export async function fetchManifest(base: string): Promise<ManifestCase[]> {
  const url = join(base, 'manifest.json');
  return parseManifestText(await (await get(url)).text(), url);
}

/**
 * Fetches one case's tensors.
 *
 * @example
 * const c = await fetchCase('/golden', cases[0]);
 */
export function fetchCase(base: string, mc: ManifestCase): Promise<GoldenCase> {
  return caseFromManifest(mc, async (file) => (await get(join(base, file))).arrayBuffer());
}
