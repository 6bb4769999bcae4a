/**
 * Running golden cases, shared by Node (`tessera verify`) and the browser page: for each case,
 * the first registered handler that claims it runs it and the result is judged. Cases nobody
 * claims, cases a handler declines (a missing or unsupported parameter), tensors whose sha256
 * does not match the manifest, and a run that ran no case at all are failures.
 */
import type { TesseraDevice } from '../gpu/device.js';
import { judge, type CaseVerdict, type GoldenCase, type GoldenHandler, type ManifestCase } from './golden.js';
import { GOLDEN_HANDLERS } from './registry.js';

export interface VerifyReport {
  golden: string;
  adapter: string;
  cases: CaseVerdict[];
  passed: number;
  failed: number;
  skipped: number;
}

function fmt(x: number | undefined): string {
  return x === undefined ? '-' : x.toExponential(2);
}

/** One line per verdict, as `tessera verify` prints it. */
export function verdictLine(v: CaseVerdict): string {
  if (v.status === 'SKIP') return `SKIP ${v.name} (${v.reason ?? 'not supported'})`;
  const tail = v.status === 'FAIL' && v.reason ? ` -- ${v.reason}` : '';
  const sel = v.selection ? ` selection_rows_differing=${v.selection.differing}/${v.selection.rows}` : '';
  return `${v.status} ${v.name} rel_rms=${fmt(v.relRms)} max_abs=${fmt(v.maxAbs)}${sel}${tail}`;
}

/** Runs and judges one loaded case. */
export async function runCase(
  dev: TesseraDevice,
  c: GoldenCase,
  handlers: readonly GoldenHandler[] = GOLDEN_HANDLERS,
): Promise<CaseVerdict> {
  const handler = handlers.find((h) => h.matches(c));
  // A case no kernel implements, or one whose parameters a kernel cannot take (missing, wrong
  // type, unsupported), FAILs: verify never passes by skipping what it was asked to check.
  if (!handler)
    return {
      name: c.name,
      status: 'FAIL',
      reason: `no kernel for ${c.source?.function ?? 'this case'} (unknown function)`,
    };
  try {
    const result = await dev.scoped(`verify ${c.name}`, () => handler.run(dev, c));
    return judge(c, result);
  } catch (e) {
    return { name: c.name, status: 'FAIL', reason: e instanceof Error ? e.message : String(e) };
  }
}

/**
 * Runs the cases of a manifest, loading each with `load` (from disk or over HTTP).
 *
 * @example
 * const report = await verifyCases(dev, '/golden', await fetchManifest('/golden'), (mc) => fetchCase('/golden', mc));
 */
export async function verifyCases(
  dev: TesseraDevice,
  golden: string,
  cases: readonly ManifestCase[],
  load: (mc: ManifestCase) => Promise<GoldenCase>,
  opts: { filter?: RegExp; log?: (line: string) => void; onVerdict?: (v: CaseVerdict) => void } = {},
): Promise<VerifyReport> {
  const out: CaseVerdict[] = [];
  for (const mc of cases) {
    if (opts.filter && !opts.filter.test(mc.name)) continue;
    let v: CaseVerdict;
    try {
      v = await runCase(dev, await load(mc));
    } catch (e) {
      v = { name: mc.name, status: 'FAIL', reason: e instanceof Error ? e.message : String(e) };
    }
    out.push(v);
    opts.log?.(verdictLine(v));
    opts.onVerdict?.(v);
  }
  const count = (s: CaseVerdict['status']) => out.filter((v) => v.status === s).length;
  return {
    golden,
    adapter: dev.adapterName,
    cases: out,
    passed: count('PASS'),
    failed: count('FAIL'),
    skipped: count('SKIP'),
  };
}
