/**
 * The on-disk manifest of a persistent KV cache: format version, layout (dtype, heads, head dims,
 * page size), the sequences and their page lists, per-page checksums and the per-page summaries.
 * The pages themselves stay in the store (page `p` at byte `p * pageBytes`); the manifest is written
 * atomically after the page writes it names, so the last committed manifest always describes
 * complete pages. See `docs/persistence.md` for the byte layout.
 */
import { TesseraError } from '../errors.js';
import { hash32, KV_DTYPES, type KvDType } from './codec.js';
import type { SyncAccessHandleLike } from './store.js';

/** Format version written by this build; a manifest of a newer version is refused (`E_UNSUPPORTED`). */
export const MANIFEST_VERSION = 1;
/** First 8 bytes of every manifest. */
export const MANIFEST_MAGIC = 'TSRKVMF1';
const FIXED = 24;

/** Where a manifest lives: one blob, replaced atomically by `write`. */
export interface ManifestStore {
  readonly kind: string;
  /** The last manifest written completely, or `undefined` when there is none. */
  read(): Uint8Array | undefined;
  /** Replaces the manifest atomically: after a crash, `read` returns either the old or the new one. */
  write(bytes: Uint8Array): void;
  close?(): void;
}

export interface ManifestLayout {
  Hkv: number;
  D: number;
  Dv: number;
  pageSize: number;
  dtype: KvDType;
  pageBytes: number;
  meanSummaries: boolean;
}

export interface ManifestSequence {
  length: number;
  freed: boolean;
  pages: Int32Array;
}

export interface Manifest {
  version: number;
  generation: number;
  layout: ManifestLayout;
  pageCount: number;
  sequences: ManifestSequence[];
  /** `[pageCount]` hash32 of each page's bytes (0 for a free page id). */
  sums: Uint32Array;
  /** `[pageCount, Hkv, 2, D]` f16 bits. */
  minmax: Uint16Array;
  /** `[pageCount, Hkv, D]` f16 bits (when `meanSummaries`). */
  mean?: Uint16Array;
}

const pad4 = (n: number) => (n + 3) & ~3;

/** Serialises a manifest (see docs/persistence.md). */
export function encodeManifest(m: Manifest): Uint8Array {
  const nIds = m.sequences.reduce((a, s) => a + s.pages.length, 0);
  const sections: Record<string, [number, number]> = {};
  let off = 0;
  const add = (name: string, bytes: number) => {
    sections[name] = [off, bytes];
    off = pad4(off + bytes);
  };
  add('pages', nIds * 4);
  add('sums', m.pageCount * 4);
  add('minmax', m.minmax.byteLength);
  if (m.mean) add('mean', m.mean.byteLength);
  const head = {
    format: 'tessera-kv',
    version: m.version,
    generation: m.generation,
    layout: m.layout,
    pageCount: m.pageCount,
    sequences: m.sequences.map((s) => ({ length: s.length, pages: s.pages.length, freed: s.freed })),
    sections,
  };
  let json = new TextEncoder().encode(JSON.stringify(head));
  const jsonLen = pad4(json.byteLength);
  const total = FIXED + jsonLen + off;
  const out = new Uint8Array(total);
  out.fill(0x20, FIXED, FIXED + jsonLen);
  out.set(json, FIXED);
  json = new Uint8Array(0);
  const base = FIXED + jsonLen;
  let p = base + sections.pages![0];
  for (const s of m.sequences) {
    out.set(new Uint8Array(s.pages.buffer, s.pages.byteOffset, s.pages.byteLength), p);
    p += s.pages.byteLength;
  }
  out.set(new Uint8Array(m.sums.buffer, m.sums.byteOffset, m.pageCount * 4), base + sections.sums![0]);
  out.set(new Uint8Array(m.minmax.buffer, m.minmax.byteOffset, m.minmax.byteLength), base + sections.minmax![0]);
  if (m.mean) out.set(new Uint8Array(m.mean.buffer, m.mean.byteOffset, m.mean.byteLength), base + sections.mean![0]);
  for (let i = 0; i < 8; i++) out[i] = MANIFEST_MAGIC.charCodeAt(i);
  const dv = new DataView(out.buffer);
  dv.setUint32(8, m.version, true);
  dv.setUint32(12, total, true);
  dv.setUint32(16, jsonLen, true);
  dv.setUint32(20, hash32(out.subarray(FIXED)), true);
  return out;
}

function corrupt(what: string): never {
  throw new TesseraError('E_CORRUPT', `manifest: ${what}`, { argument: 'manifest' });
}

/** The total length a manifest's fixed header declares, or -1 when the bytes are not a manifest header. */
export function manifestLength(head: Uint8Array): number {
  if (head.byteLength < FIXED) return -1;
  for (let i = 0; i < 8; i++) if (head[i] !== MANIFEST_MAGIC.charCodeAt(i)) return -1;
  return new DataView(head.buffer, head.byteOffset, FIXED).getUint32(12, true);
}

/**
 * Parses and checks a manifest: magic, length and body checksum (`E_CORRUPT`), format version
 * (`E_UNSUPPORTED` for a newer one).
 */
export function decodeManifest(bytes: Uint8Array): Manifest {
  if (manifestLength(bytes) < 0) corrupt('not a Tessera KV manifest (bad magic)');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = dv.getUint32(8, true);
  const total = dv.getUint32(12, true);
  const jsonLen = dv.getUint32(16, true);
  if (total !== bytes.byteLength || jsonLen > total - FIXED || total % 4 !== 0)
    corrupt(`torn or truncated (${bytes.byteLength} bytes, header says ${total})`);
  if (hash32(bytes.subarray(FIXED)) !== dv.getUint32(20, true)) corrupt('body checksum mismatch');
  if (version > MANIFEST_VERSION) {
    throw new TesseraError('E_UNSUPPORTED', `manifest: format version ${version} is newer than this build reads`, {
      argument: 'manifest',
      actual: version,
      expected: `<= ${MANIFEST_VERSION}`,
    });
  }
  let head: {
    version: number;
    generation: number;
    layout: ManifestLayout;
    pageCount: number;
    sequences: { length: number; pages: number; freed: boolean }[];
    sections: Record<string, [number, number]>;
  };
  try {
    head = JSON.parse(new TextDecoder().decode(bytes.subarray(FIXED, FIXED + jsonLen)));
  } catch {
    corrupt('header is not JSON');
  }
  const L = head.layout;
  if (!L || !KV_DTYPES.includes(L.dtype) || head.version !== version) corrupt('header does not describe a layout');
  const base = bytes.byteOffset + FIXED + jsonLen;
  const sec = (name: string) => {
    const s = head.sections[name];
    if (!s || FIXED + jsonLen + s[0] + s[1] > total) corrupt(`section ${name} is missing or out of range`);
    return { off: base + s[0], len: s[1] };
  };
  // Copy sections out (aligned, independent of the input buffer).
  const copy = <T>(name: string, C: { new (b: ArrayBuffer): T }): T => {
    const s = sec(name);
    return new C(bytes.buffer.slice(s.off, s.off + s.len) as ArrayBuffer);
  };
  const ids = copy('pages', Int32Array);
  const sequences: ManifestSequence[] = [];
  let at = 0;
  for (const s of head.sequences) {
    sequences.push({ length: s.length, freed: !!s.freed, pages: ids.subarray(at, at + s.pages) });
    at += s.pages;
  }
  if (at !== ids.length) corrupt('page lists do not add up');
  for (const x of ids) if (x < 0 || x >= head.pageCount) corrupt(`page id ${x} is past pageCount ${head.pageCount}`);
  return {
    version,
    generation: head.generation,
    layout: L,
    pageCount: head.pageCount,
    sequences,
    sums: copy('sums', Uint32Array),
    minmax: copy('minmax', Uint16Array),
    mean: L.meanSummaries ? copy('mean', Uint16Array) : undefined,
  };
}

/** A manifest held in memory (tests, or a cache that only needs fork/rewind bookkeeping). */
export class MemoryManifest implements ManifestStore {
  readonly kind = 'memory';
  private bytes?: Uint8Array;
  writes = 0;
  read(): Uint8Array | undefined {
    return this.bytes?.slice();
  }
  write(bytes: Uint8Array): void {
    this.bytes = bytes.slice();
    this.writes++;
  }
}

/**
 * A manifest in OPFS: two files (two sync access handles) written in turn, each manifest carrying
 * a generation number and a checksum; `read` returns the newest complete one. A crash in the middle
 * of a write can only tear the older copy, so the last committed manifest survives (OPFS sync
 * handles have no atomic rename).
 *
 * @example
 * // inside a worker
 * const dir = await navigator.storage.getDirectory();
 * const h = async (n) => (await dir.getFileHandle(n, { create: true })).createSyncAccessHandle();
 * const manifest = new OpfsManifest(await h('kv.manifest.0'), await h('kv.manifest.1'));
 */
export class OpfsManifest implements ManifestStore {
  readonly kind = 'opfs';
  private readonly handles: [SyncAccessHandleLike, SyncAccessHandleLike];
  private closed = false;
  /** Which copy holds the newest manifest (after a read or write). */
  private newest = -1;

  constructor(a: SyncAccessHandleLike, b: SyncAccessHandleLike) {
    this.handles = [a, b];
  }

  private load(i: number): { bytes: Uint8Array; generation: number } | undefined {
    const h = this.handles[i]!;
    const head = new Uint8Array(FIXED);
    if (h.read(head, { at: 0 }) !== FIXED) return undefined;
    const total = manifestLength(head);
    if (total < FIXED) return undefined;
    const bytes = new Uint8Array(total);
    if (h.read(bytes, { at: 0 }) !== total) return undefined;
    try {
      return { bytes, generation: decodeManifest(bytes).generation };
    } catch {
      return undefined;
    }
  }

  read(): Uint8Array | undefined {
    if (this.closed) throw new TesseraError('E_STATE', 'OpfsManifest used after close()');
    const a = this.load(0);
    const b = this.load(1);
    this.newest = a && (!b || a.generation >= b.generation) ? 0 : b ? 1 : -1;
    return this.newest < 0 ? undefined : this.newest === 0 ? a!.bytes : b!.bytes;
  }

  write(bytes: Uint8Array): void {
    if (this.closed) throw new TesseraError('E_STATE', 'OpfsManifest used after close()');
    if (this.newest < 0) this.read();
    // Overwrite the copy that is not the newest valid one.
    const target = this.newest === 0 ? 1 : 0;
    const h = this.handles[target]!;
    const n = h.write(bytes, { at: 0 });
    if (n !== bytes.byteLength)
      throw new TesseraError('E_IO', `manifest (OPFS): short write of ${n}/${bytes.byteLength} bytes`);
    h.truncate?.(bytes.byteLength);
    h.flush();
    this.newest = target;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const h of this.handles) {
      h.flush();
      h.close();
    }
  }
}
