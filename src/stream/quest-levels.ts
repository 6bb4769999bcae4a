/**
 * Quest page selection over two-level summaries (`summaryLevels: 2`, src/kv/summaries.ts): score
 * every super-page of the sequence on the GPU, then visit super-pages in descending score per KV
 * head, bringing their pages' summaries into the GPU candidate buffer and scoring them there, and
 * keep each head's k best pages.
 *
 * A super-page's score bounds the score of each of its pages, so once a head's k-th best page
 * score is above the best score of the super-pages it has not visited, no unvisited page can
 * enter its top k: the selection equals single-level Quest's (`certified`). With
 * `exactSelection: true` the visit continues until every head is certified (in the worst case,
 * random keys whose super-page bounds are all alike, that is every page, streamed through the
 * fixed candidate buffer); by default it visits `superBudget` super-pages per head (more only if
 * they hold fewer than k pages) and reports whether the result happened to be certified.
 */
import { checkInt } from '../errors.js';
import type { TesseraDevice } from '../gpu/device.js';
import type { GpuTensor } from '../tensor.js';
import type { KvCache } from '../kv/cache.js';
import type { SummaryTiers } from '../kv/summaries.js';
import type { QuestScorePlan } from '../../kernels/quest/score.js';
import { GPUBufferUsageFlags } from '../gpu/flags.js';

export interface LevelSelectOptions {
  /** Super-pages visited per KV head in the first round (default: k, the free page slots). */
  superBudget?: number;
  /** Visit super-pages until the selection provably equals single-level Quest (default false). */
  exactSelection?: boolean;
}

export interface LevelStats {
  /** Summary levels (2). */
  levels: number;
  supers: number;
  /** Super-pages whose pages were scored. */
  supersVisited: number;
  /** Pages scored from their summaries. */
  pagesScored: number;
  rounds: number;
  /** Every head's selection provably equals single-level Quest's. */
  certified: boolean;
  /** Summary bytes read: every super-page plus the pages scored. */
  summaryBytesRead: number;
}

interface Best {
  score: Float64Array;
  page: Int32Array;
  size: number;
}

/** Inserts (s, p) into a head's best-k list, ordered by score descending then page ascending. */
function offer(b: Best, k: number, s: number, p: number): void {
  if (b.size === k) {
    const ls = b.score[k - 1]!;
    if (s < ls || (s === ls && p > b.page[k - 1]!)) return;
  }
  let i = Math.min(b.size, k - 1);
  while (i > 0 && (b.score[i - 1]! < s || (b.score[i - 1] === s && b.page[i - 1]! > p))) {
    b.score[i] = b.score[i - 1]!;
    b.page[i] = b.page[i - 1]!;
    i--;
  }
  b.score[i] = s;
  b.page[i] = p;
  if (b.size < k) b.size++;
}

export class TwoLevelSelector {
  private readonly ctx: TesseraDevice;
  private readonly tiers: SummaryTiers;
  private readonly opts: LevelSelectOptions;
  private iota?: GPUBuffer;
  private superScores?: GPUBuffer;
  private readonly candScores: GPUBuffer;
  private readonly scratch: Uint16Array<ArrayBuffer>;

  constructor(
    private readonly cache: KvCache,
    private readonly scorer: QuestScorePlan,
    opts: LevelSelectOptions = {},
  ) {
    this.ctx = cache.ctx;
    this.tiers = cache.tiers!;
    if (opts.superBudget !== undefined) checkInt(opts.superBudget, 'superBudget', { min: 1 });
    this.opts = opts;
    const C = this.tiers.candidatePages;
    this.candScores = this.ctx.createBuffer({
      size: Math.max(256, cache.Hkv * C * 4),
      usage: GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_SRC,
      label: 'tessera.quest.candScores',
    });
    this.scratch = new Uint16Array(C * cache.Hkv * 2 * cache.D);
  }

  private ensure(n: number): void {
    const need = Math.max(n, this.tiers.candidatePages);
    if (!this.iota || this.iota.size < need * 4) {
      this.ctx.destroyBuffer(this.iota);
      const cap = Math.max(1024, 2 ** Math.ceil(Math.log2(need)));
      this.iota = this.ctx.createBuffer({
        size: cap * 4,
        usage: GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST,
        label: 'tessera.quest.iota',
      });
      this.ctx.device.queue.writeBuffer(
        this.iota,
        0,
        Uint32Array.from({ length: cap }, (_, i) => i),
      );
    }
    if (!this.superScores || this.superScores.size < this.cache.Hkv * n * 4) {
      this.ctx.destroyBuffer(this.superScores);
      const cap = Math.max(1024, 2 ** Math.ceil(Math.log2(n)));
      this.superScores = this.ctx.createBuffer({
        size: this.cache.Hkv * cap * 4,
        usage: GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_SRC,
        label: 'tessera.quest.superScores',
      });
    }
  }

  /**
   * The `k` best pages per KV head (sequence page indices, any order) among pages that are not
   * forced (indices < forcedLo and the last page), for query `q` (`[Hq, D]` f32 on the GPU).
   */
  async select(
    seq: number,
    q: GpuTensor,
    k: number,
    forcedLo: number,
  ): Promise<{ top: Int32Array[]; stats: LevelStats }> {
    const { cache, ctx, tiers } = this;
    const { Hkv, D } = cache;
    const qT = { buffer: q.buffer, offset: q.offset, shape: [this.scorer.options.Hq, D], dtype: 'f32' as const };
    const pages = cache.pages(seq);
    const n = pages.length;
    const G = tiers.superPages;
    const nS = tiers.count(seq);
    this.ensure(nS);
    const queue = ctx.device.queue;
    // 1. Every super-page's score.
    // Each submit in its own error-scope section (no scope held across an await: see device.section).
    await ctx.section('questDecode.superScore', () => {
      const enc = ctx.device.createCommandEncoder({ label: 'tessera.quest.superScore' });
      this.scorer.run(enc, {
        q: qT,
        summaries: tiers.gpu(seq)!,
        list: this.iota!,
        scores: { buffer: this.superScores!, shape: [Hkv, nS], dtype: 'f32' },
        calls: [{ n: nS, chunkFirst: 0, chunkPages: nS, forcedLo: 0, forcedHi: nS }],
      });
      queue.submit([enc.finish()]);
    }).errors;
    const sup = new Float32Array(await ctx.readback(this.superScores!, Hkv * nS * 4));
    const order: Int32Array[] = [];
    for (let h = 0; h < Hkv; h++) {
      const o = Int32Array.from({ length: nS }, (_, i) => i);
      const row = sup.subarray(h * nS, (h + 1) * nS);
      o.sort((a, b) => row[b]! - row[a]! || a - b);
      order.push(o);
    }
    const ptr = new Int32Array(Hkv);
    const visited = new Uint8Array(nS);
    const best: Best[] = Array.from({ length: Hkv }, () => ({
      score: new Float64Array(k),
      page: new Int32Array(k),
      size: 0,
    }));
    const C = tiers.candidatePages;
    const per = cache.minmaxBytesPerPage;
    let pagesScored = 0;
    let supersVisited = 0;
    let rounds = 0;
    let take = this.opts.superBudget ?? Math.max(1, k);
    const certified = (h: number) => {
      while (ptr[h]! < nS && visited[order[h]![ptr[h]!]!]) ptr[h]++;
      if (ptr[h]! >= nS) return true;
      return best[h]!.size === k && best[h]!.score[k - 1]! > sup[h * nS + order[h]![ptr[h]!]!]!;
    };
    const filled = (h: number) => best[h]!.size === k || ptr[h]! >= nS;
    for (;;) {
      // 2. This round's super-pages: the next `take` unvisited ones of each head, as one union.
      const round: number[] = [];
      for (let h = 0; h < Hkv; h++) {
        let got = 0;
        while (got < take && ptr[h]! < nS) {
          const j = order[h]![ptr[h]!]!;
          ptr[h]++;
          if (visited[j]) continue;
          visited[j] = 1;
          round.push(j);
          got++;
        }
      }
      if (round.length === 0) break;
      rounds++;
      supersVisited += round.length;
      // 3. Their pages, in batches that fit the candidate buffer: upload, score, read back.
      const idx: number[] = [];
      for (const j of round)
        for (let i = j * G; i < Math.min(n, (j + 1) * G); i++) if (i >= forcedLo && i !== n - 1) idx.push(i);
      for (let b = 0; b < idx.length; b += C) {
        const batch = idx.slice(b, b + C);
        const m = batch.length;
        tiers.uploadCandidates(
          batch.map((i) => pages[i]!),
          0,
          this.scratch,
        );
        await ctx.section('questDecode.candScore', () => {
          const enc = ctx.device.createCommandEncoder({ label: 'tessera.quest.candScore' });
          this.scorer.run(enc, {
            q: qT,
            summaries: tiers.candidates,
            list: this.iota!,
            scores: { buffer: this.candScores, shape: [Hkv, m], dtype: 'f32' },
            calls: [{ n: m, chunkFirst: 0, chunkPages: m, forcedLo: 0, forcedHi: m }],
          });
          queue.submit([enc.finish()]);
        }).errors;
        const sc = new Float32Array(await ctx.readback(this.candScores, Hkv * m * 4));
        for (let h = 0; h < Hkv; h++) for (let i = 0; i < m; i++) offer(best[h]!, k, sc[h * m + i]!, batch[i]!);
        pagesScored += m;
      }
      // 4. Done when every head is certified; without exactSelection, when every head is full.
      let done = true;
      for (let h = 0; h < Hkv; h++) {
        if (this.opts.exactSelection ? !certified(h) : !filled(h)) done = false;
      }
      if (done) break;
      take *= 2;
    }
    let all = true;
    for (let h = 0; h < Hkv; h++) all &&= certified(h);
    return {
      top: best.map((b) => b.page.slice(0, b.size)),
      stats: {
        levels: 2,
        supers: nS,
        supersVisited,
        pagesScored,
        rounds,
        certified: all,
        summaryBytesRead: (nS + pagesScored) * per,
      },
    };
  }

  dispose(): void {
    for (const b of [this.iota, this.superScores, this.candScores]) this.ctx.destroyBuffer(b);
  }
}
