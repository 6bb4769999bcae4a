/**
 * Golden vectors (`../shared/golden` format): loading, judging and the case registry.
 *
 * A kernel family takes part by exporting a {@link GoldenHandler} from `kernels/<family>/golden.ts`
 * and adding it to `src/verify/registry.ts`. `verify` runs, for each case in the manifest, the
 * first handler that claims it; cases nobody claims print SKIP.
 *
 * This module is shared by Node and the browser: reading the files is elsewhere
 * (`golden-node.ts` from a directory, `golden-fetch.ts` over HTTP); both build a case with
 * {@link caseFromManifest} from the manifest entry and the bytes of each tensor file.
 *
 * Judging (the golden README): per output, relative RMS error <= 1e-5 and max-abs error
 * <= 1e-4 * max|golden| for f32 storage, no NaN/Inf where the golden value is finite. Selections
 * compare as sets per row; a row may differ only where the case's selection margin is < 1e-5, and
 * then that row's outputs are excused from the error bounds.
 */
import { TesseraError } from '../errors.js';
import type { TesseraDevice } from '../gpu/device.js';
import { compare, type Comparison } from '../testing.js';

export interface GoldenTensor {
  shape: number[];
  layout?: string;
  data: Float64Array;
}

export interface GoldenCase {
  name: string;
  description: string;
  params: Record<string, unknown>;
  inputs: Record<string, GoldenTensor>;
  outputs: Record<string, GoldenTensor>;
  aux: Record<string, GoldenTensor>;
  source?: { repo?: string; path?: string; function?: string };
}

export interface GoldenOutput {
  /** Output name as in the manifest (`o`, `lse`, `ht`). */
  name: string;
  got: ArrayLike<number>;
  /** Elements excused from the bounds (1 = excused), e.g. rows of a legitimate near-tie. */
  excused?: Uint8Array;
}

export interface GoldenSelectionReport {
  rows: number;
  differing: number;
  /** Differing rows whose margin is >= 1e-5: each one fails the case. */
  unexcused: number;
}

export interface GoldenRunResult {
  outputs: GoldenOutput[];
  selection?: GoldenSelectionReport;
}

export interface GoldenHandler {
  /** The family, for messages. */
  family: string;
  /** Whether this handler implements the case (by name, source function and params). */
  matches(c: GoldenCase): boolean;
  /** Runs the case; throw `TesseraError('E_UNSUPPORTED', ...)` to SKIP with a reason. */
  run(dev: TesseraDevice, c: GoldenCase): Promise<GoldenRunResult>;
}

export const GOLDEN_TOLERANCE = { relRms: 1e-5, maxAbsRel: 1e-4 } as const;
export const SELECTION_MARGIN = 1e-5;

export interface ManifestTensor {
  shape: number[];
  file: string;
  layout?: string;
}
export interface ManifestCase {
  name: string;
  description?: string;
  params?: Record<string, unknown>;
  inputs: Record<string, ManifestTensor>;
  outputs: Record<string, ManifestTensor>;
  aux?: Record<string, ManifestTensor>;
  source?: { repo?: string; path?: string; function?: string };
}

/** A golden tensor from the raw little-endian float64 bytes of its file. */
export function goldenTensor(bytes: ArrayBuffer | Uint8Array, t: ManifestTensor): GoldenTensor {
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const data = new Float64Array(u8.buffer.slice(u8.byteOffset, u8.byteOffset + u8.byteLength));
  const n = t.shape.reduce((a, b) => a * b, 1);
  if (data.length !== n) throw new TesseraError('E_IO', `golden tensor ${t.file}: ${data.length} values, shape [${t.shape}] needs ${n}`);
  return { shape: t.shape, layout: t.layout, data };
}

/** The cases of a parsed `manifest.json`. */
export function parseManifest(json: unknown, where = 'manifest.json'): ManifestCase[] {
  const cases = (json as { cases?: ManifestCase[] } | null)?.cases;
  if (!Array.isArray(cases)) throw new TesseraError('E_IO', `${where}: no "cases" list`, { argument: 'manifest', expected: '{ "cases": [...] } (see ../shared/golden/README.md)' });
  return cases;
}

/** Builds a case from its manifest entry, reading each tensor's bytes with `read(file)`. */
export async function caseFromManifest(mc: ManifestCase, read: (file: string) => Promise<ArrayBuffer | Uint8Array> | ArrayBuffer | Uint8Array): Promise<GoldenCase> {
  const map = async (r: Record<string, ManifestTensor> | undefined) =>
    Object.fromEntries(await Promise.all(Object.entries(r ?? {}).map(async ([k, t]) => [k, goldenTensor(await read(t.file), t)] as const)));
  return {
    name: mc.name,
    description: mc.description ?? '',
    params: mc.params ?? {},
    inputs: await map(mc.inputs),
    outputs: await map(mc.outputs),
    aux: await map(mc.aux),
    source: mc.source,
  };
}

/**
 * Compares per-row selected sets. `got`/`ref` hold `width` slots per row, `-1` for unused.
 * Returns the report and a per-row mask of rows that differ but are excused (margin < 1e-5).
 */
export function compareSelections(
  got: ArrayLike<number>,
  ref: ArrayLike<number>,
  width: number,
  margin: ArrayLike<number> | undefined,
): { report: GoldenSelectionReport; excusedRows: Uint8Array } {
  const rows = ref.length / width;
  const excusedRows = new Uint8Array(rows);
  let differing = 0;
  let unexcused = 0;
  for (let r = 0; r < rows; r++) {
    const a = new Set<number>();
    const b = new Set<number>();
    for (let i = 0; i < width; i++) {
      const x = got[r * width + i]!;
      const y = ref[r * width + i]!;
      if (x >= 0) a.add(x);
      if (y >= 0) b.add(y);
    }
    let same = a.size === b.size;
    if (same) for (const x of a) if (!b.has(x)) same = false;
    if (!same) {
      differing++;
      if (margin && margin[r]! < SELECTION_MARGIN) excusedRows[r] = 1;
      else unexcused++;
    }
  }
  return { report: { rows, differing, unexcused }, excusedRows };
}

export interface CaseVerdict {
  name: string;
  status: 'PASS' | 'FAIL' | 'SKIP';
  relRms?: number;
  maxAbs?: number;
  reason?: string;
  perOutput?: Record<string, Comparison>;
  selection?: GoldenSelectionReport;
}

/** Judges a run against the case's golden outputs. */
export function judge(c: GoldenCase, result: GoldenRunResult): CaseVerdict {
  let worstRel = 0;
  let worstAbs = 0;
  const perOutput: Record<string, Comparison> = {};
  const reasons: string[] = [];
  for (const out of result.outputs) {
    const g = c.outputs[out.name];
    if (!g) throw new TesseraError('E_STATE', `case ${c.name} has no output ${out.name}`);
    let got = out.got;
    let ref: ArrayLike<number> = g.data;
    if (out.excused) {
      const keepG: number[] = [];
      const keepR: number[] = [];
      for (let i = 0; i < g.data.length; i++) if (!out.excused[i]) {
        keepG.push(got[i]!);
        keepR.push(g.data[i]!);
      }
      got = keepG;
      ref = keepR;
    }
    const cmp = compare(got, ref);
    perOutput[out.name] = cmp;
    // max-abs is reported relative to max|golden| (the README's bound is 1e-4 * max|g|)
    const maxAbsRel = cmp.maxAbs / Math.max(cmp.refMax, 1e-300);
    worstRel = Math.max(worstRel, cmp.relRms);
    worstAbs = Math.max(worstAbs, cmp.maxAbs);
    if (cmp.badCount > 0) reasons.push(`${out.name}: ${cmp.badCount} non-finite values where the golden is finite`);
    if (cmp.relRms > GOLDEN_TOLERANCE.relRms) reasons.push(`${out.name}: rel_rms ${cmp.relRms.toExponential(2)} > ${GOLDEN_TOLERANCE.relRms}`);
    if (maxAbsRel > GOLDEN_TOLERANCE.maxAbsRel) reasons.push(`${out.name}: max_abs ${cmp.maxAbs.toExponential(2)} > 1e-4 * ${cmp.refMax.toPrecision(3)}`);
  }
  if (result.selection && result.selection.unexcused > 0) {
    reasons.push(`${result.selection.unexcused} selection rows differ where the margin is >= ${SELECTION_MARGIN}`);
  }
  return {
    name: c.name,
    status: reasons.length ? 'FAIL' : 'PASS',
    relRms: worstRel,
    maxAbs: worstAbs,
    reason: reasons.join('; ') || undefined,
    perOutput,
    selection: result.selection,
  };
}
