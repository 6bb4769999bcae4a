/**
 * The GPU working set of the KV cache: page slots in many GPU buffers (each within the device's
 * binding limit), an LRU list over the unpinned resident pages, and pins for pages that must stay
 * (sinks, the recent window). The pool never decides its own size: the cache grows it up to the
 * byte budget and shrinks it when the summaries need room.
 *
 * The slots are the pages of a `PagePool` (src/pool, {@link GpuPagePool.slots}): slot `s` is pool
 * page `s`, in buffer `floor(s / slotsPerBuffer)`, in the page layout of kernels/attention/page.ts.
 * A page the cache streamed in from host or disk holds one reference on its slot; an engine's
 * sequences (`pool.slots.addSequence()`, `step`, `fork`, `truncate`) take slots from the same
 * free list, written by kernels/append and attended by the same cores, and the cache never evicts
 * them (they are not in its LRU list). See docs/engine.md.
 */
import { TesseraError } from '../errors.js';
import { PagePool } from '../pool/pool.js';
import type { TesseraDevice } from '../gpu/device.js';
import { GPUBufferUsageFlags } from '../gpu/flags.js';

/** Where a slot lives. */
export interface SlotLocation {
  buffer: GPUBuffer;
  bufferIndex: number;
  /** Slot index inside its buffer. */
  index: number;
  /** Byte offset inside its buffer. */
  byteOffset: number;
}

function grow(a: Int32Array<ArrayBuffer>, n: number, fill: number): Int32Array<ArrayBuffer> {
  if (n <= a.length) return a;
  const b = new Int32Array(Math.max(n, a.length * 2, 64)).fill(fill);
  b.set(a);
  return b;
}

export class GpuPagePool {
  readonly pageBytes: number;
  readonly slotsPerBuffer: number;
  readonly bufferBytes: number;
  private readonly ctx: TesseraDevice;
  readonly buffers: GPUBuffer[] = [];
  private slotPage = new Int32Array(0);
  private pageSlot = new Int32Array(0).fill(-1);
  private pinned = new Uint8Array(0);
  // LRU over unpinned resident slots: head = most recent, tail = least recent.
  private prev = new Int32Array(0);
  private next = new Int32Array(0);
  private inList = new Uint8Array(0);
  private head = -1;
  private tail = -1;
  private residentCount = 0;
  /**
   * The slots' bookkeeping: free list and reference counts (src/pool); its capacity follows the
   * buffers (`slotsPerBuffer` pages per buffer).
   */
  readonly slots: PagePool;
  /** Most buffers the pool may grow to (default: no bound but the cache's budget). */
  maxBuffers = Infinity;
  /** Pages evicted so far. */
  evictions = 0;

  constructor(ctx: TesseraDevice, pageBytes: number, slotsPerBuffer: number, pageSize = 1) {
    this.ctx = ctx;
    this.pageBytes = pageBytes;
    this.slotsPerBuffer = slotsPerBuffer;
    this.bufferBytes = pageBytes * slotsPerBuffer;
    this.slots = new PagePool({ capacity: slotsPerBuffer, pageSize });
    this.slots.shrink(0);
  }

  get capacity(): number {
    return this.buffers.length * this.slotsPerBuffer;
  }

  get bytes(): number {
    return this.buffers.length * this.bufferBytes;
  }

  /** Resident pages of the cache now (slots an engine's sequences hold are not counted). */
  get resident(): number {
    return this.residentCount;
  }

  /** Adds one buffer of slots; false (nothing added) at {@link maxBuffers}. */
  addBuffer(): boolean {
    if (this.buffers.length >= this.maxBuffers) return false;
    const b = this.ctx.createBuffer({
      size: this.bufferBytes,
      usage: GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST | GPUBufferUsageFlags.COPY_SRC,
      label: `tessera.kv.pool${this.buffers.length}`,
    });
    const first = this.capacity;
    this.buffers.push(b);
    const cap = this.capacity;
    const sp = new Int32Array(cap).fill(-1);
    sp.set(this.slotPage.subarray(0, first));
    this.slotPage = sp;
    for (const name of ['prev', 'next'] as const) {
      const a = new Int32Array(cap).fill(-1);
      a.set(this[name].subarray(0, first));
      this[name] = a;
    }
    const il = new Uint8Array(cap);
    il.set(this.inList.subarray(0, first));
    this.inList = il;
    this.slots.grow(this.slotsPerBuffer);
    return true;
  }

  /**
   * Drops the last buffer; its pages stop being resident. False (nothing changes) when an
   * engine's sequence holds a slot in it, or a cache page there is held by someone besides the
   * cache (`slots.retain`).
   */
  removeBuffer(): boolean {
    const last = this.buffers.length - 1;
    if (last < 0) return false;
    const first = last * this.slotsPerBuffer;
    for (let s = first; s < first + this.slotsPerBuffer; s++) {
      if (this.slots.refCount(s) > (this.slotPage[s]! >= 0 ? 1 : 0)) return false;
    }
    for (let s = first; s < first + this.slotsPerBuffer; s++) {
      const p = this.slotPage[s]!;
      if (p >= 0) this.drop(s);
    }
    this.slots.shrink(first);
    this.ctx.destroyBuffer(this.buffers.pop());
    this.slotPage = this.slotPage.slice(0, first);
    this.prev = this.prev.slice(0, first);
    this.next = this.next.slice(0, first);
    this.inList = this.inList.slice(0, first);
    return true;
  }

  location(slot: number): SlotLocation {
    const bufferIndex = Math.floor(slot / this.slotsPerBuffer);
    const index = slot - bufferIndex * this.slotsPerBuffer;
    return { buffer: this.buffers[bufferIndex]!, bufferIndex, index, byteOffset: index * this.pageBytes };
  }

  slotOf(page: number): number {
    return page < this.pageSlot.length ? this.pageSlot[page]! : -1;
  }

  pageIn(slot: number): number {
    return this.slotPage[slot]!;
  }

  isPinned(page: number): boolean {
    return page < this.pinned.length && this.pinned[page] === 1;
  }

  private unlink(s: number): void {
    if (!this.inList[s]) return;
    const p = this.prev[s]!;
    const n = this.next[s]!;
    if (p >= 0) this.next[p] = n;
    else this.head = n;
    if (n >= 0) this.prev[n] = p;
    else this.tail = p;
    this.prev[s] = this.next[s] = -1;
    this.inList[s] = 0;
  }

  private pushFront(s: number): void {
    this.prev[s] = -1;
    this.next[s] = this.head;
    if (this.head >= 0) this.prev[this.head] = s;
    this.head = s;
    if (this.tail < 0) this.tail = s;
    this.inList[s] = 1;
  }

  /** Marks a resident page as just used. */
  touch(page: number): void {
    const s = this.slotOf(page);
    if (s < 0 || this.isPinned(page)) return;
    this.unlink(s);
    this.pushFront(s);
  }

  pin(page: number): void {
    if (page >= this.pinned.length) {
      const a = new Uint8Array(Math.max(page + 1, this.pinned.length * 2, 64));
      a.set(this.pinned);
      this.pinned = a;
    }
    this.pinned[page] = 1;
    const s = this.slotOf(page);
    if (s >= 0) this.unlink(s);
  }

  unpin(page: number): void {
    if (!this.isPinned(page)) return;
    this.pinned[page] = 0;
    const s = this.slotOf(page);
    if (s >= 0) this.pushFront(s);
  }

  /** Slots that could be given to a new page now without growing (free or evictable). */
  get available(): number {
    let n = this.slots.free;
    for (let s = this.tail; s >= 0; s = this.prev[s]!) n++;
    return n;
  }

  /** Whether a free slot or an evictable page exists. */
  hasRoom(): boolean {
    return this.slots.free > 0 || this.tail >= 0;
  }

  /**
   * Pins are a preference, not a reservation: a pinned resident page outside `keep` (the pages of
   * the request being served) may be evicted when no free or unpinned slot is left, so pins of
   * earlier sequences and streams can never fill the working set for good. Frees the slot of one
   * such page (the lowest slot; it stays pinned, and is pinned again when next loaded) and returns
   * true, or returns false when every resident page is unpinned or in `keep`.
   */
  evictPinned(keep: ReadonlySet<number>): boolean {
    for (let s = 0; s < this.capacity; s++) {
      const p = this.slotPage[s]!;
      if (p >= 0 && this.isPinned(p) && !keep.has(p)) {
        this.drop(s);
        this.evictions++;
        return true;
      }
    }
    return false;
  }

  /** Gives `page` a slot, evicting the least recently used unpinned page if no slot is free. */
  assign(page: number): number {
    let s = this.slots.allocate();
    // Evict until a slot frees (a page someone else also holds keeps its slot when the cache drops it).
    while (s < 0) {
      if (this.tail < 0)
        throw new TesseraError(
          'E_LIMIT',
          'GPU working set: every slot holds a pinned or in-use page; raise gpuBudgetBytes or lower the tile size',
        );
      this.drop(this.tail);
      this.evictions++;
      s = this.slots.allocate();
    }
    this.residentCount++;
    this.pageSlot = grow(this.pageSlot, page + 1, -1);
    this.pageSlot[page] = s;
    this.slotPage[s] = page;
    if (!this.isPinned(page)) this.pushFront(s);
    return s;
  }

  /** Forgets the page in slot `s` (the slot becomes free). */
  drop(s: number): void {
    const p = this.slotPage[s]!;
    if (p < 0) return;
    this.unlink(s);
    this.pageSlot[p] = -1;
    this.slotPage[s] = -1;
    this.residentCount--;
    this.slots.release(s);
  }

  destroy(): void {
    for (const b of this.buffers) this.ctx.destroyBuffer(b);
    this.buffers.length = 0;
  }
}
