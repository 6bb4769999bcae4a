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
import { byteSize, decode, encode, numel, type DType, type GpuTensor } from '../tensor.js';
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
  /** Hex SHA-256 of the file: checked before the tensor is used (a damaged file FAILs its case). */
  sha256?: string;
  /** File size in bytes. */
  bytes?: number;
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
  if (data.length !== n)
    throw new TesseraError('E_IO', `golden tensor ${t.file}: ${data.length} values, shape [${t.shape}] needs ${n}`);
  return { shape: t.shape, layout: t.layout, data };
}

/** The cases of a parsed `manifest.json`: a non-empty list, each with a name and its tensors listed. */
export function parseManifest(json: unknown, where = 'manifest.json'): ManifestCase[] {
  const cases = (json as { cases?: ManifestCase[] } | null)?.cases;
  if (!Array.isArray(cases))
    throw new TesseraError('E_IO', `${where}: no "cases" list`, {
      argument: 'manifest',
      expected: '{ "cases": [...] } (see ../shared/golden/README.md)',
    });
  if (cases.length === 0)
    throw new TesseraError('E_IO', `${where}: the "cases" list is empty (nothing to verify)`, {
      argument: 'manifest',
      expected: 'at least one case',
    });
  cases.forEach((c, i) => {
    if (c === null || typeof c !== 'object' || typeof c.name !== 'string' || !c.name) {
      throw new TesseraError('E_IO', `${where}: cases[${i}] has no name`, {
        argument: 'manifest',
        expected: 'every case an object with a "name"',
      });
    }
    for (const part of ['inputs', 'outputs'] as const) {
      const ts = c[part];
      if (ts === null || typeof ts !== 'object' || Object.keys(ts).length === 0) {
        throw new TesseraError('E_IO', `${where}: case ${c.name} lists no ${part}`, {
          argument: 'manifest',
          expected: `"${part}": { name: { shape, file, sha256 } }`,
        });
      }
    }
  });
  return cases;
}

/** Parses the text of `manifest.json`; malformed JSON is an `E_IO` naming the file, not a stack trace. */
export function parseManifestText(text: string, where = 'manifest.json'): ManifestCase[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new TesseraError('E_IO', `${where}: not valid JSON (${e instanceof Error ? e.message : String(e)})`, {
      argument: 'manifest',
      expected: 'a JSON manifest (see ../shared/golden/README.md)',
    });
  }
  return parseManifest(json, where);
}

function hex(buf: ArrayBuffer): string {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Checks a tensor file's bytes against the manifest: its `sha256` is required and must match, and
 * `bytes` (when given) too. A flipped bit is an `E_IO` naming the file, so the case FAILs.
 */
export async function checkTensorBytes(bytes: ArrayBuffer | Uint8Array, t: ManifestTensor): Promise<void> {
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  if (typeof t.sha256 !== 'string' || !/^[0-9a-fA-F]{64}$/.test(t.sha256)) {
    throw new TesseraError('E_IO', `golden tensor ${t.file}: the manifest gives no sha256 for it`, {
      argument: 'manifest',
      actual: t.sha256,
      expected: '64 hex digits',
    });
  }
  if (t.bytes !== undefined && t.bytes !== u8.byteLength) {
    throw new TesseraError('E_IO', `golden tensor ${t.file}: ${u8.byteLength} bytes, the manifest says ${t.bytes}`, {
      actual: u8.byteLength,
      expected: String(t.bytes),
    });
  }
  const copy = u8.slice(); // a plain ArrayBuffer-backed copy for subtle.digest
  const got = hex(await globalThis.crypto.subtle.digest('SHA-256', copy));
  if (got !== t.sha256.toLowerCase()) {
    throw new TesseraError(
      'E_IO',
      `golden tensor ${t.file}: sha256 ${got} does not match the manifest's ${t.sha256} (damaged data)`,
      { actual: got, expected: t.sha256 },
    );
  }
}

/** Builds a case from its manifest entry, reading each tensor's bytes with `read(file)`. */
export async function caseFromManifest(
  mc: ManifestCase,
  read: (file: string) => Promise<ArrayBuffer | Uint8Array> | ArrayBuffer | Uint8Array,
): Promise<GoldenCase> {
  const map = async (r: Record<string, ManifestTensor> | undefined) =>
    Object.fromEntries(
      await Promise.all(
        Object.entries(r ?? {}).map(async ([k, t]) => {
          const bytes = await read(t.file);
          await checkTensorBytes(bytes, t);
          return [k, goldenTensor(bytes, t)] as const;
        }),
      ),
    );
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
      for (let i = 0; i < g.data.length; i++)
        if (!out.excused[i]) {
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
    if (cmp.relRms > GOLDEN_TOLERANCE.relRms)
      reasons.push(`${out.name}: rel_rms ${cmp.relRms.toExponential(2)} > ${GOLDEN_TOLERANCE.relRms}`);
    if (maxAbsRel > GOLDEN_TOLERANCE.maxAbsRel)
      reasons.push(`${out.name}: max_abs ${cmp.maxAbs.toExponential(2)} > 1e-4 * ${cmp.refMax.toPrecision(3)}`);
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

/**
 * The GPU tensors of one golden run: `up` uploads host values as a tensor of `dtype` (default
 * f32), `read` reads one back as numbers, `dispose` destroys every buffer `up` made (call it in a
 * `finally`).
 *
 * @example
 * const t = runTensors(dev);
 * try {
 *   const o = t.up(new Float32Array(T * H * D), [T, H, D]);
 *   // ... run a plan into o ...
 *   const got = await t.read(o);
 * } finally {
 *   t.dispose();
 * }
 */
export function runTensors(dev: TesseraDevice): {
  up(x: ArrayLike<number>, shape: number[], dtype?: DType): GpuTensor;
  read(t: GpuTensor): Promise<Float64Array>;
  dispose(): void;
} {
  const made: GPUBuffer[] = [];
  return {
    up(x, shape, dtype = 'f32') {
      const buffer = dev.upload(encode(x, dtype), { size: byteSize(shape, dtype) });
      made.push(buffer);
      return { buffer, shape, dtype };
    },
    async read(t) {
      return decode(new Uint32Array(await dev.readback(t.buffer)), t.dtype, numel(t.shape));
    },
    dispose() {
      for (const b of made.splice(0)) dev.destroyBuffer(b);
    },
  };
}
