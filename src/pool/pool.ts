/**
 * The page pool's host bookkeeping (no GPU work): which pool pages are free, which sequence owns
 * which pages in token order, reference counts per page, and the per-step tables an engine hands
 * to `kernels/append` and the attention core (FlashInfer's CSR vocabulary).
 *
 * Pages are ids `0 .. capacity - 1` into the engine's pool buffer (one per layer or one shared;
 * the ids mean the same in each). A page holds `pageSize` tokens. A sequence's page list is in
 * token order: its token `t` lives in page `pages[floor(t / pageSize)]`, row `t mod pageSize`.
 * Window layers may release pages that left the window (`releaseOutsideWindow`); their slots in
 * the list become holes (`-1`), and the tables name a placeholder page there (the attention core
 * never reads a page outside the window).
 */
import { TesseraError, U32_MAX, checkInt, fail } from '../errors.js';

export interface PagePoolOptions {
  /** Pages in the pool (the engine's pool buffer holds this many). */
  capacity: number;
  /** Tokens per page. */
  pageSize: number;
}

/** What one step appends to one sequence. */
export interface StepEntry {
  seq: number;
  /** New tokens of this sequence in this step (1 for decode, a chunk for prefill; 0 allowed). */
  tokens: number;
}

/**
 * The tables of one step, for the sequences in the order given (batch index `b`). Views into the
 * pool's own arrays: valid until the next call that builds tables.
 */
export interface StepTables {
  /** `[B + 1]` start of each sequence's page list. */
  kvIndptr: Int32Array;
  /** Pool page ids (holes of released pages name `placeholder`). */
  kvIndices: Int32Array;
  /** `[B]` tokens used in each sequence's last page (1..pageSize; 0 for an empty sequence). */
  kvLastPageLen: Int32Array;
  /** `[B]` tokens of each sequence after the step. */
  kvLens: Int32Array;
  /** `[B + 1]` start of each sequence's new rows (a ragged query / append chunk). */
  qoIndptr: Int32Array;
  /** `[nnz]` batch index of each new row. */
  batchIndices: Int32Array;
  /** `[nnz]` position of each new row in its sequence. */
  positions: Int32Array;
}

interface Seq {
  pages: number[];
  length: number;
  /** Pages released from the front part (holes in `pages`). */
  holes: number;
  /** The last step that listed this sequence (a step lists each sequence once). */
  stamp: number;
}

function grow(a: Int32Array<ArrayBuffer>, n: number): Int32Array<ArrayBuffer> {
  return a.length >= n ? a : new Int32Array(Math.max(n, a.length * 2, 16));
}

/**
 * A page to copy and/or re-summarise on the GPU (see `planPageOps`, kernels/pool): copy page
 * `src` to page `dst` (nothing to copy when they are equal), then recompute the Quest min/max
 * summaries of `dst` over its first `rows` rows.
 */
export interface PageFix {
  src: number;
  dst: number;
  rows: number;
}

export class PagePool {
  private cap: number;
  readonly pageSize: number;
  private refs: Int32Array;
  /** Free page ids, a stack (the next allocation takes the top). */
  private freeList: Int32Array;
  private freeTop: number;
  /** Pages copied by fork / truncate copy-on-write so far (the page bytes a caller copied). */
  pagesCopied = 0;
  private readonly seqs = new Map<number, Seq>();
  private nextSeq = 0;
  private buf = {
    indptr: new Int32Array(16),
    indices: new Int32Array(16),
    last: new Int32Array(16),
    lens: new Int32Array(16),
    qo: new Int32Array(16),
    batch: new Int32Array(16),
    pos: new Int32Array(16),
  };
  /** The views last handed out, per table (reused while the length and storage are the same). */
  private readonly views: Partial<Record<keyof PagePool['buf'], Int32Array>> = {};
  /** Sequence ids of the step being built (reused: no array per step). */
  private readonly ids: number[] = [];
  private stepGen = 0;

  constructor(opts: PagePoolOptions) {
    if (!opts || typeof opts !== 'object') fail('E_ARG', 'options', 'is required;', opts, '{ capacity, pageSize }');
    this.cap = checkInt(opts.capacity, 'capacity', { min: 1, max: 2 ** 31 - 1 });
    this.pageSize = checkInt(opts.pageSize, 'pageSize', { min: 1 });
    this.refs = new Int32Array(this.cap);
    this.freeList = new Int32Array(this.cap);
    // Low ids first: the top of the stack is page 0.
    for (let i = 0; i < this.cap; i++) this.freeList[i] = this.cap - 1 - i;
    this.freeTop = this.cap;
  }

  /** Pages in the pool (ids `0 .. capacity - 1`). */
  get capacity(): number {
    return this.cap;
  }

  /**
   * Adds `n` pages (ids `capacity .. capacity + n - 1`, e.g. a new GPU buffer of slots); the
   * lowest new id is allocated first.
   */
  grow(n: number): void {
    checkInt(n, 'n', { min: 0, max: 2 ** 31 - 1 - this.cap });
    const cap = this.cap + n;
    const refs = new Int32Array(cap);
    refs.set(this.refs);
    const free = new Int32Array(cap);
    free.set(this.freeList.subarray(0, this.freeTop));
    for (let i = 0; i < n; i++) free[this.freeTop + i] = cap - 1 - i;
    this.refs = refs;
    this.freeList = free;
    this.freeTop += n;
    this.cap = cap;
  }

  /** Whether pages `from .. capacity - 1` are all free (so {@link shrink} to `from` may run). */
  canShrink(from: number): boolean {
    for (let p = Math.max(0, from); p < this.cap; p++) if (this.refs[p] !== 0) return false;
    return true;
  }

  /** Removes pages `from .. capacity - 1`, which must all be free (`E_STATE` otherwise). */
  shrink(from: number): void {
    checkInt(from, 'from', { min: 0, max: this.cap });
    if (!this.canShrink(from))
      throw new TesseraError(
        'E_STATE',
        `pages ${from}..${this.cap - 1} are not all free: shrink() needs them released first`,
        { argument: 'from', actual: from },
      );
    let k = 0;
    for (let i = 0; i < this.freeTop; i++) if (this.freeList[i]! < from) this.freeList[k++] = this.freeList[i]!;
    this.freeTop = k;
    this.cap = from;
    this.refs = this.refs.slice(0, from);
    this.freeList = this.freeList.slice(0, from);
  }

  /**
   * Takes one free page for a holder outside any sequence (e.g. the KV cache's working set holding
   * a page streamed from host or disk), with reference count 1; `-1` when none is free.
   */
  allocate(): number {
    if (this.freeTop === 0) return -1;
    const p = this.freeList[--this.freeTop]!;
    this.refs[p] = 1;
    return p;
  }

  /** Pages free now. */
  get free(): number {
    return this.freeTop;
  }

  /** Pages in use (reference count > 0). */
  get used(): number {
    return this.cap - this.freeTop;
  }

  /** Starts an empty sequence; returns its id. */
  addSequence(): number {
    const id = this.nextSeq++;
    this.seqs.set(id, { pages: [], length: 0, holes: 0, stamp: 0 });
    return id;
  }

  /** Ends a sequence: its pages are released (freed when no one else holds them). */
  removeSequence(seq: number): void {
    const s = this.seq(seq);
    for (const p of s.pages) if (p >= 0) this.release(p);
    this.seqs.delete(seq);
  }

  get sequences(): number[] {
    return [...this.seqs.keys()];
  }

  private seq(id: number, argument = 'seq'): Seq {
    const s = this.seqs.get(id);
    if (!s)
      fail(
        'E_ARG',
        argument,
        'is not a live sequence of this pool;',
        id,
        `one of ${[...this.seqs.keys()].slice(0, 8).join(', ') || '(none)'}`,
      );
    return s;
  }

  /** Tokens in `seq`. */
  length(seq: number): number {
    return this.seq(seq).length;
  }

  /** Page ids of `seq` in token order (`-1` where a window layer released the page). */
  pages(seq: number): readonly number[] {
    return this.seq(seq).pages;
  }

  /** Reference count of `page` (0 = free). */
  refCount(page: number): number {
    this.checkPage(page);
    return this.refs[page]!;
  }

  private checkPage(page: number, argument = 'page'): void {
    checkInt(page, argument, { min: 0, max: this.capacity - 1 });
  }

  /** Takes one more reference on a page in use (e.g. a fork or an agent's memory sharing it). */
  retain(page: number): void {
    this.checkPage(page);
    if (this.refs[page] === 0)
      throw new TesseraError('E_STATE', `page ${page} is free: retain() needs a page in use`, {
        argument: 'page',
        actual: page,
      });
    this.refs[page]!++;
  }

  /** Drops one reference; the page returns to the free list at 0. */
  release(page: number): void {
    this.checkPage(page);
    if (this.refs[page] === 0)
      throw new TesseraError('E_STATE', `page ${page} is already free: release() without a matching reference`, {
        argument: 'page',
        actual: page,
      });
    if (--this.refs[page]! === 0) this.freeList[this.freeTop++] = page;
  }

  private pagesFor(tokens: number): number {
    return Math.ceil(tokens / this.pageSize);
  }

  /**
   * Appends tokens to sequences: allocates the pages they need (all or nothing: `E_LIMIT` when the
   * pool lacks pages, with the pool and every sequence left as they were), advances the lengths,
   * and returns the step's tables for `entries` in order.
   *
   * @example
   * const t = pool.step([{ seq: a, tokens: 1 }, { seq: b, tokens: 1 }]); // a decode step
   * append.schedule(t); attention.schedule(t);
   */
  step(entries: readonly StepEntry[]): StepTables {
    if (!Array.isArray(entries)) fail('E_ARG', 'entries', 'is not an array;', typeof entries, '[{ seq, tokens }]');
    const B = entries.length;
    const gen = ++this.stepGen;
    let need = 0;
    // Argument names are built only for an error (no string per entry and step).
    for (let b = 0; b < B; b++) {
      const e = entries[b]!;
      const s = this.seqs.get(e?.seq) ?? this.seq(e?.seq, `entries[${b}].seq`);
      if (s.stamp === gen)
        fail('E_ARG', `entries[${b}].seq`, 'appears twice in one step;', e.seq, 'each sequence once');
      s.stamp = gen;
      const tokens = e.tokens;
      if (typeof tokens !== 'number' || !Number.isInteger(tokens) || tokens < 0 || tokens > U32_MAX)
        checkInt(tokens, `entries[${b}].tokens`, { min: 0 });
      const last = s.pages.length ? s.pages[s.pages.length - 1]! : -1;
      if (tokens > 0 && s.length % this.pageSize !== 0 && last >= 0 && this.refs[last]! > 1) {
        throw new TesseraError(
          'E_STATE',
          `entries[${b}]: sequence ${e.seq} would write into its last page ${last}, which ${this.refs[last]! - 1} other holder(s) share; copy the page first (copy-on-write)`,
          { argument: `entries[${b}].seq`, actual: e.seq },
        );
      }
      need += this.pagesFor(s.length + tokens) - s.pages.length;
    }
    if (need > this.freeTop) {
      fail(
        'E_LIMIT',
        'entries',
        `need ${need} new pages; the pool has ${this.freeTop} free of ${this.capacity};`,
        need,
        `at most ${this.freeTop} new pages (release sequences or grow the pool)`,
      );
    }
    let nnz = 0;
    const ids = this.ids;
    ids.length = B;
    for (let i = 0; i < B; i++) {
      const e = entries[i]!;
      const s = this.seqs.get(e.seq)!;
      const n = this.pagesFor(s.length + e.tokens);
      while (s.pages.length < n) {
        const p = this.freeList[--this.freeTop]!;
        this.refs[p] = 1;
        s.pages.push(p);
      }
      nnz += e.tokens;
      ids[i] = e.seq;
    }
    const b = this.buf;
    b.batch = grow(b.batch, nnz);
    b.pos = grow(b.pos, nnz);
    b.qo = grow(b.qo, B + 1);
    let r = 0;
    b.qo[0] = 0;
    for (let i = 0; i < B; i++) {
      const e = entries[i]!;
      const s = this.seqs.get(e.seq)!;
      for (let t = 0; t < e.tokens; t++, r++) {
        b.batch[r] = i;
        b.pos[r] = s.length + t;
      }
      s.length += e.tokens;
      b.qo[i + 1] = r;
    }
    const k = this.fill(ids, undefined);
    return {
      kvIndptr: this.view('indptr', B + 1),
      kvIndices: this.view('indices', k),
      kvLastPageLen: this.view('last', B),
      kvLens: this.view('lens', B),
      qoIndptr: this.view('qo', B + 1),
      batchIndices: this.view('batch', nnz),
      positions: this.view('pos', nnz),
    };
  }

  /**
   * The page table of `seqs` (batch index = order in `seqs`) as they stand, with no new rows.
   * `placeholder` fills the holes of released pages (default: the sequence's newest page).
   */
  tables(seqs: readonly number[], placeholder?: number): Omit<StepTables, 'qoIndptr' | 'batchIndices' | 'positions'> {
    const B = seqs.length;
    for (let i = 0; i < B; i++) if (!this.seqs.has(seqs[i]!)) this.seq(seqs[i]!, `seqs[${i}]`);
    const k = this.fill(seqs, placeholder);
    return {
      kvIndptr: this.view('indptr', B + 1),
      kvIndices: this.view('indices', k),
      kvLastPageLen: this.view('last', B),
      kvLens: this.view('lens', B),
    };
  }

  /** Writes the page table of `seqs` (live ids) into the step buffers; returns the number of page entries. */
  private fill(seqs: readonly number[], placeholder: number | undefined): number {
    const b = this.buf;
    const B = seqs.length;
    b.indptr = grow(b.indptr, B + 1);
    b.last = grow(b.last, B);
    b.lens = grow(b.lens, B);
    let n = 0;
    for (let i = 0; i < B; i++) n += this.seqs.get(seqs[i]!)!.pages.length;
    b.indices = grow(b.indices, n);
    b.indptr[0] = 0;
    let k = 0;
    for (let i = 0; i < B; i++) {
      const s = this.seqs.get(seqs[i]!)!;
      const pages = s.pages;
      const np = pages.length;
      const fill = placeholder ?? (np ? pages[np - 1]! : 0);
      for (let j = 0; j < np; j++) {
        const p = pages[j]!;
        b.indices[k++] = p >= 0 ? p : fill;
      }
      b.indptr[i + 1] = k;
      b.last[i] = np ? s.length - (np - 1) * this.pageSize : 0;
      b.lens[i] = s.length;
    }
    return k;
  }

  /** The first `n` entries of a step buffer (the view handed out last when it is the same). */
  private view(name: keyof PagePool['buf'], n: number): Int32Array {
    const a = this.buf[name];
    const v = this.views[name];
    if (v !== undefined && v.length === n && v.buffer === a.buffer) return v;
    return (this.views[name] = a.subarray(0, n));
  }

  /**
   * For a sliding-window layer: releases the pages of `seq` that no later query can see. A query
   * at position `q` sees keys in `(q - window, q]` and the first `sinkTokens` keys; later queries
   * sit at `q >= length - 1`, so pages whose tokens are all below `length - window` and hold no
   * sink token are released (their list entries become holes). Returns the pages released.
   *
   * @example
   * pool.releaseOutsideWindow(seq, { window: 64, sinkTokens: 4 });
   */
  releaseOutsideWindow(seq: number, opts: { window: number; sinkTokens?: number }): number {
    const s = this.seq(seq);
    const window = checkInt(opts?.window, 'window', { min: 1 });
    const sinks = checkInt(opts.sinkTokens ?? 0, 'sinkTokens', { min: 0 });
    const firstSeen = s.length - window;
    let released = 0;
    for (let j = Math.ceil(sinks / this.pageSize); j < s.pages.length && (j + 1) * this.pageSize <= firstSeen; j++) {
      const p = s.pages[j]!;
      if (p < 0) continue;
      this.release(p);
      s.pages[j] = -1;
      s.holes++;
      released++;
    }
    return released;
  }

  /**
   * A new sequence sharing every page of `seq` (one more reference each; window holes stay holes),
   * except a partial last page, which is copy-on-write: the child gets a fresh page and `fix`
   * names the copy (`{ src, dst, rows }`) the caller encodes on the GPU (`planPageOps`) before
   * either sequence writes or the child is attended. Both append independently afterwards. All
   * or nothing: `E_LIMIT` when the copy has no free page, with the pool unchanged.
   *
   * @example
   * const { seq: child, fix } = pool.fork(parent); // fix: the partial last page's copy, if any
   * ops.schedule(fix ? [fix] : []); ops.run(encoder, { pages, summaries });
   */
  fork(seq: number): { seq: number; fix?: PageFix } {
    const s = this.seq(seq);
    const r = s.length % this.pageSize;
    const last = s.pages.length - 1;
    if (r > 0 && this.freeTop === 0) {
      fail(
        'E_LIMIT',
        'seq',
        `needs 1 free page for the copy of its partial last page; the pool has 0 free of ${this.capacity};`,
        seq,
        'a free page (release sequences or grow the pool)',
      );
    }
    const pages = s.pages.slice();
    for (let j = 0; j < pages.length; j++) if (pages[j]! >= 0 && !(r > 0 && j === last)) this.refs[pages[j]!]!++;
    let fix: PageFix | undefined;
    if (r > 0) {
      const dst = this.freeList[--this.freeTop]!;
      this.refs[dst] = 1;
      fix = { src: pages[last]!, dst, rows: r };
      pages[last] = dst;
      this.pagesCopied++;
    }
    const id = this.nextSeq++;
    this.seqs.set(id, { pages, length: s.length, holes: s.holes, stamp: 0 });
    return { seq: id, fix };
  }

  /**
   * Rewinds `seq` to its first `length` tokens: pages past it are released (freed when no one
   * else holds them). A partial new last page needs its summaries recomputed over `rows`, which
   * `fix` names: in place (`src === dst`) when the sequence alone holds it, else on a fresh page
   * (copy-on-write, so the other holders keep their page and summaries). The caller encodes
   * `fix` (`planPageOps`) before the sequence is attended or appended to. All or nothing
   * (`E_LIMIT` when the copy has no free page; `E_STATE` when the new last page was released by
   * a window layer). Returns the pages released.
   *
   * @example
   * const { fix } = pool.truncate(seq, pool.length(seq) - 5); // undo 5 tokens
   */
  truncate(seq: number, length: number): { released: number; fix?: PageFix } {
    const s = this.seq(seq);
    checkInt(length, 'length', { min: 0, max: s.length });
    if (length === s.length) return { released: 0 };
    const P = this.pageSize;
    const keep = Math.ceil(length / P);
    const r = length % P;
    const last = keep > 0 ? s.pages[keep - 1]! : -1;
    if (keep > 0 && last < 0)
      fail(
        'E_STATE',
        'length',
        `ends in page ${keep - 1} of sequence ${seq}, which a window layer released;`,
        length,
        'a length inside a page the sequence still holds',
      );
    const cow = r > 0 && this.refs[last]! > 1;
    if (cow && this.freeTop === 0)
      fail(
        'E_LIMIT',
        'length',
        `needs 1 free page to copy the shared page ${last}; the pool has 0 free of ${this.capacity};`,
        length,
        'a free page (release sequences or grow the pool)',
      );
    let released = 0;
    for (let j = keep; j < s.pages.length; j++) {
      const p = s.pages[j]!;
      if (p < 0) continue;
      if (this.refs[p] === 1) released++;
      this.release(p);
    }
    s.pages.length = keep;
    s.length = length;
    s.holes = s.pages.reduce((n, p) => n + (p < 0 ? 1 : 0), 0);
    if (r === 0) return { released };
    if (!cow) return { released, fix: { src: last, dst: last, rows: r } };
    const dst = this.freeList[--this.freeTop]!;
    this.refs[dst] = 1;
    this.release(last);
    s.pages[keep - 1] = dst;
    this.pagesCopied++;
    return { released, fix: { src: last, dst, rows: r } };
  }

  /** Checks the pool's invariants (tests and debugging): every page is free xor referenced. */
  validate(): void {
    const held = new Int32Array(this.capacity);
    for (const s of this.seqs.values()) {
      for (const p of s.pages) if (p >= 0) held[p]!++;
      if (s.pages.length !== this.pagesFor(s.length))
        throw new TesseraError('E_STATE', `a sequence of ${s.length} tokens holds ${s.pages.length} pages`);
    }
    const inFree = new Uint8Array(this.capacity);
    for (let i = 0; i < this.freeTop; i++) {
      const p = this.freeList[i]!;
      if (inFree[p]) throw new TesseraError('E_STATE', `page ${p} is twice in the free list`);
      inFree[p] = 1;
    }
    for (let p = 0; p < this.capacity; p++) {
      if (this.refs[p]! < held[p]!)
        throw new TesseraError('E_STATE', `page ${p} has ${this.refs[p]} references but ${held[p]} sequences hold it`);
      if ((this.refs[p] === 0) !== (inFree[p] === 1))
        throw new TesseraError(
          'E_STATE',
          `page ${p}: reference count ${this.refs[p]} but ${inFree[p] ? '' : 'not '}in the free list`,
        );
    }
  }
}

/**
 * Creates a page pool.
 *
 * @example
 * const pool = createPagePool({ capacity: 256, pageSize: 16 });
 * const a = pool.addSequence();
 * const t = pool.step([{ seq: a, tokens: 40 }]); // prefill: 3 pages
 */
export function createPagePool(opts: PagePoolOptions): PagePool {
  return new PagePool(opts);
}
