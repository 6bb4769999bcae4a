/**
 * A plan's memory of the last inputs whose buffer conflicts passed (see `checkBufferConflicts` in
 * plan.ts): an engine that passes the same input objects every step (same keys, same tensors,
 * same buffers, offsets, shapes and dtypes) skips re-deriving the byte ranges, with no allocation.
 *
 * The outcome of the conflict check depends only on those fields and on the buffers' map state.
 * A buffer's map state can only change again when its usage includes MAP_READ or MAP_WRITE, so
 * inputs are remembered only when none of their buffers has a map usage: the skipped check would
 * then have passed again. Anything else (another object, a changed field, a key added or removed,
 * a mappable buffer) runs the full check. Destroyed and foreign buffers are checked every run by
 * `checkInputBuffers`, outside this memo.
 */
import { GPUBufferUsageFlags } from './gpu/flags.js';

const MAP_USAGE = GPUBufferUsageFlags.MAP_READ | GPUBufferUsageFlags.MAP_WRITE;

interface Entry {
  key: string;
  value: object;
  buffer: unknown;
  offset: unknown;
  dtype: unknown;
  shape: unknown;
  dims: number[] | undefined;
  /** The value is an object (a tensor or a buffer), whose fields are compared too. */
  object: boolean;
}

/** One remembered inputs object: its fields as checked. */
interface Remembered {
  inputs: object;
  entries: Entry[];
}

/**
 * One plan's last few conflict-free inputs (a plan used by several layers sees one inputs object
 * per layer each step; up to `size` are remembered, the oldest replaced first).
 */
export class ConflictMemo {
  private readonly list: Remembered[] = [];
  private next = 0;

  constructor(private readonly size = 4) {}

  /** Whether `inputs` is a remembered object with every checked field as it was. */
  same(inputs: unknown): boolean {
    if (inputs === null || typeof inputs !== 'object') return false;
    let r: Remembered | undefined;
    for (let i = 0; i < this.list.length; i++) if (this.list[i]!.inputs === inputs) r = this.list[i];
    if (!r) return false;
    const t = inputs as Record<string, unknown>;
    let n = 0;
    for (const key in t) if (Object.prototype.hasOwnProperty.call(t, key)) n++;
    const list = r.entries;
    if (n !== list.length) return false;
    for (let i = 0; i < list.length; i++) {
      const e = list[i]!;
      if (!Object.prototype.hasOwnProperty.call(t, e.key) || t[e.key] !== e.value) return false;
      if (!e.object) continue;
      const v = e.value as { buffer?: unknown; offset?: unknown; dtype?: unknown; shape?: unknown };
      if (v.buffer !== e.buffer || v.offset !== e.offset || v.dtype !== e.dtype || v.shape !== e.shape) return false;
      const dims = e.dims;
      if (dims) {
        const s = v.shape as number[];
        if (s.length !== dims.length) return false;
        for (let j = 0; j < dims.length; j++) if (s[j] !== dims[j]) return false;
      }
    }
    return true;
  }

  /** Remembers `inputs` after its conflict check passed (forgets it instead when a buffer is mappable). */
  remember(inputs: unknown): void {
    if (inputs === null || typeof inputs !== 'object') return;
    for (let i = 0; i < this.list.length; i++) {
      if (this.list[i]!.inputs === inputs) {
        this.list.splice(i, 1);
        this.next = this.list.length % this.size;
        break;
      }
    }
    const t = inputs as Record<string, unknown>;
    const entries: Entry[] = [];
    for (const key of Object.keys(t)) {
      const v = t[key];
      if (v === null || typeof v !== 'object') {
        // A primitive input cannot change without replacing the value: compare it as the value.
        entries.push({
          key,
          value: v as object,
          buffer: 0,
          offset: 0,
          dtype: 0,
          shape: 0,
          dims: undefined,
          object: false,
        });
        continue;
      }
      const tv = v as { buffer?: unknown; offset?: unknown; dtype?: unknown; shape?: unknown; usage?: unknown };
      const buffer = tv.buffer !== null && typeof tv.buffer === 'object' ? (tv.buffer as GPUBuffer) : undefined;
      const usage = buffer ? buffer.usage : typeof tv.usage === 'number' ? tv.usage : 0;
      if (typeof usage === 'number' && (usage & MAP_USAGE) !== 0) return;
      entries.push({
        key,
        value: v,
        buffer: tv.buffer,
        offset: tv.offset,
        dtype: tv.dtype,
        shape: tv.shape,
        dims: Array.isArray(tv.shape) ? [...(tv.shape as number[])] : undefined,
        object: true,
      });
    }
    const r = { inputs, entries };
    if (this.list.length < this.size) this.list.push(r);
    else {
      this.list[this.next] = r;
      this.next = (this.next + 1) % this.size;
    }
  }
}
