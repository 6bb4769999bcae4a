import type { TesseraDevice } from '../gpu/device.js';
import { TesseraError } from '../errors.js';
import { judge, loadCase, readManifest, type CaseVerdict } from './golden.js';
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

export function verdictLine(v: CaseVerdict): string {
  if (v.status === 'SKIP') return `SKIP ${v.name} (${v.reason ?? 'not supported'})`;
  const tail = v.status === 'FAIL' && v.reason ? ` -- ${v.reason}` : '';
  const sel = v.selection ? ` selection_rows_differing=${v.selection.differing}/${v.selection.rows}` : '';
  return `${v.status} ${v.name} rel_rms=${fmt(v.relRms)} max_abs=${fmt(v.maxAbs)}${sel}${tail}`;
}

/** Runs every case of a golden directory that a registered handler supports. */
export async function verifyGolden(dev: TesseraDevice, dir: string, opts: { filter?: RegExp; log?: (line: string) => void } = {}): Promise<VerifyReport> {
  const cases = readManifest(dir);
  const out: CaseVerdict[] = [];
  for (const mc of cases) {
    if (opts.filter && !opts.filter.test(mc.name)) continue;
    const c = loadCase(dir, mc);
    const handler = GOLDEN_HANDLERS.find((h) => h.matches(c));
    let v: CaseVerdict;
    if (!handler) {
      v = { name: c.name, status: 'SKIP', reason: `no kernel for ${c.source?.function ?? 'this case'} yet` };
    } else {
      try {
        const result = await dev.scoped(`verify ${c.name}`, () => handler.run(dev, c));
        v = judge(c, result);
      } catch (e) {
        if (e instanceof TesseraError && e.code === 'E_UNSUPPORTED') v = { name: c.name, status: 'SKIP', reason: e.message };
        else v = { name: c.name, status: 'FAIL', reason: e instanceof Error ? e.message : String(e) };
      }
    }
    out.push(v);
    opts.log?.(verdictLine(v));
  }
  const count = (s: CaseVerdict['status']) => out.filter((v) => v.status === s).length;
  return { golden: dir, adapter: dev.adapterName, cases: out, passed: count('PASS'), failed: count('FAIL'), skipped: count('SKIP') };
}
