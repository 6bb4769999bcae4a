/**
 * Loop-cost functions checked against the WGSL they describe: a debug build of the kernel counts
 * the loop iterations of every invocation (test/helpers/loop-count.ts) and the bound the plan
 * sizes its segments with must be >= the largest count, and within a small factor of it on the
 * worst-case input (a bound far above the count would split work for nothing).
 */
import { describe, expect, it } from 'vitest';
import { smallKcap, smallProgram, topKSmallLoopIterations, TOPK_SMALL_PARAMS } from '../kernels/topk/topk.js';
import { segmentUniforms, type Segment } from '../src/gpu/segments.js';
import { pipelineShader } from '../src/gpu/pipeline.js';
import { countLoops, maxLoopCount } from './helpers/loop-count.js';
import { LIN_PARAMS, passShader as linearShader } from '../kernels/linear/scan.js';
import { recurrentLoopIterations, scanLoopIterations } from '../kernels/linear/loops.js';
import { getMergeProgram, MERGE_PARAMS, mergeLoopIterations } from '../kernels/merge/merge.js';
import { POOL_PARAMS, POOL_PROGRAM, poolLoopIterations } from '../kernels/moba/pool.js';
import { MOBA_SELECT_PARAMS, mobaSelectSpec, mobaSelectLoopIterations } from '../kernels/moba/moba.js';
import { NSA_SELECT_PARAMS, nsaSelectSpec, nsaSelectLoopIterations } from '../kernels/nsa/nsa.js';
import { DSA_INDEXER_PARAMS, INDEXER_PROGRAM, indexerLoopIterations } from '../kernels/dsa/dsa.js';
import { QUEST_PARAMS, questScoreSpec, questScoreLoopIterations } from '../kernels/quest/score.js';
import { QUEST_BLOCK_PARAMS, QUEST_BOX_PROGRAM, questBlockLoopIterations } from '../kernels/quest/block.js';
import { useGpu } from './helpers/gpu.js';

const gpu = useGpu();

describe('loop-counting debug builds (src/gpu/segments.ts cost functions vs their WGSL)', () => {
  it('the instrumentation counts every loop body and records at each return', () => {
    const code = countLoops(
      'fn f() { for (var i = 0u; i < min(3u, 4u); i++) { } }\n@compute @workgroup_size(1) fn main() { if (true) { return; } loop { break; } while (false) { } }',
    );
    expect(code.match(/dbg_iters \+= 1u;/g)).toHaveLength(3);
    expect(code).toContain('{ dbg_record(); return; }');
    expect(code).toMatch(/dbg_record\(\);\n}\n/);
    expect(() => countLoops('@compute @workgroup_size(1) fn main() { }')).toThrow(/no loop/);
  });

  /** Runs one segment of the small top-k over `rows` rows of `n` scores, counting loop iterations. */
  async function smallCount(
    n: number,
    k: number,
    seg: Segment,
    scores: Float32Array<ArrayBuffer>,
    rows: number,
  ): Promise<number> {
    const dev = gpu.dev.device;
    const S = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST;
    const buf = (size: number, usage = S) => dev.createBuffer({ size: Math.max(16, size), usage });
    const sc = buf(scores.byteLength);
    dev.queue.writeBuffer(sc, 0, scores);
    // a carried list of k real entries (keys > 0), as a previous segment leaves it
    const carried = new Uint32Array(rows * 2 * k);
    for (let r = 0; r < rows; r++) for (let s = 0; s < k; s++) carried[r * 2 * k + s] = 0x80000000 + k - s;
    const carry = buf(carried.byteLength);
    dev.queue.writeBuffer(carry, 0, carried);
    const params = buf(TOPK_SMALL_PARAMS.size, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
    dev.queue.writeBuffer(params, 0, TOPK_SMALL_PARAMS.pack({ rows, n, k, hasValues: 1, ...segmentUniforms(seg) }));
    const all = [sc, buf(rows * k * 4), buf(rows * k * 4), params, carry];
    try {
      return await maxLoopCount(dev, smallProgram(smallKcap(k)).code, all, [Math.ceil(rows / 64)], { WG: 64 });
    } finally {
      for (const b of all) b.destroy();
    }
  }

  for (const [n, k] of [
    [1000, 8],
    [300, 32],
    [77, 3],
  ] as const) {
    it(`topk small: topKSmallLoopIterations bounds the counted iterations (n ${n}, k ${k}), whole row and a carried segment`, async () => {
      const rows = 3;
      // ascending scores: every candidate enters the list at its head (the most shifts: worst case)
      const ascending = new Float32Array(rows * n).map((_, i) => 1 + (i % n));
      const random = new Float32Array(rows * n).map((_, i) => (Math.sin(i * 12.9898) * 43758.5453) % 1);
      const half = Math.ceil(n / 2);
      const cases: [Segment, Float32Array<ArrayBuffer>, boolean][] = [
        [{ begin: 0, end: n, carry: false, last: true }, ascending, true],
        [{ begin: half, end: n, carry: true, last: false }, ascending, true],
        [{ begin: 0, end: n, carry: false, last: true }, random, false],
      ];
      for (const [seg, scores, worst] of cases) {
        const counted = await smallCount(n, k, seg, scores, rows);
        const bound = topKSmallLoopIterations(seg.end - seg.begin, k, seg.carry);
        expect(counted, 'the kernel ran its loops').toBeGreaterThan(seg.end - seg.begin);
        expect(bound, `bound >= counted (${JSON.stringify(seg)})`).toBeGreaterThanOrEqual(counted);
        if (worst)
          expect(bound, `tight on the worst case (${counted} counted)`).toBeLessThanOrEqual(1.5 * counted + 16);
      }
    });
  }

  for (const [parts, D, carry] of [
    [300, 64, 1],
    [130, 256, 0],
    [1, 8, 1],
  ] as const) {
    it(`merge: mergeLoopIterations bounds the counted iterations (${parts} parts, D ${D}, carry ${carry})`, async () => {
      const dev = gpu.dev.device;
      const rows = 2;
      const S = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST;
      const buf = (floats: number) => dev.createBuffer({ size: Math.max(16, floats * 4), usage: S });
      const lse = buf(parts * rows);
      // every part has weight (a finite lse): the most work per part
      dev.queue.writeBuffer(
        lse,
        0,
        new Float32Array(parts * rows).map((_, i) => Math.sin(i)),
      );
      const params = dev.createBuffer({
        size: MERGE_PARAMS.size,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      });
      dev.queue.writeBuffer(params, 0, MERGE_PARAMS.pack({ P: parts, rows, D, p0: 0, carry, out_state: 0, one: 1 }));
      const carryS = buf(rows * 4);
      dev.queue.writeBuffer(carryS, 0, new Float32Array(rows * 4).fill(1));
      const all = [buf(parts * rows * D), lse, buf(rows * D), buf(rows), params, buf(rows * 2 * D), carryS];
      try {
        const counted = await maxLoopCount(dev, getMergeProgram().code, all, [rows], { WG: 64, OUT_DTYPE: 0 });
        const bound = mergeLoopIterations(parts, D);
        expect(counted, 'the kernel ran its loops').toBeGreaterThan(parts);
        expect(bound, 'bound >= counted').toBeGreaterThanOrEqual(counted);
        expect(bound, `tight (${counted} counted)`).toBeLessThanOrEqual(2 * counted + 16);
      } finally {
        for (const b of all) b.destroy();
      }
    });
  }

  for (const c of [
    { K: 64, V: 8, T: 300, gate: 'scalar', delta: false, normalize: false },
    { K: 32, V: 8, T: 200, gate: 'none', delta: false, normalize: true },
    { K: 48, V: 6, T: 100, gate: 'vector', delta: true, normalize: false },
    { K: 16, V: 4, T: 120, gate: 'none', delta: false, normalize: false },
  ] as const) {
    it(`linear recurrent: recurrentLoopIterations bounds the counted iterations (K ${c.K}, gate ${c.gate}, delta ${c.delta}, normalize ${c.normalize})`, async () => {
      const dev = gpu.dev.device;
      const { K, V, T } = c;
      const S = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST;
      const buf = (words: number) => dev.createBuffer({ size: Math.max(16, words * 4), usage: S });
      const meta = buf(2);
      dev.queue.writeBuffer(meta, 0, new Uint32Array([0, T]));
      const G = { none: 0, scalar: 1, vector: 2, constant: 3 }[c.gate];
      const params = dev.createBuffer({
        size: LIN_PARAMS.size,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      });
      const zero = Object.fromEntries(LIN_PARAMS.fields.map(([f]) => [f, 0])) as Record<
        (typeof LIN_PARAMS.fields)[number][0],
        number
      >;
      // one sequence, one head, one segment of all T tokens
      dev.queue.writeBuffer(
        params,
        0,
        LIN_PARAMS.pack({
          ...zero,
          T,
          N: 1,
          H: 1,
          HV: 1,
          K,
          V,
          ratio: 1,
          VS: V,
          scale: 1,
          seg_begin: 0,
          seg_end: T,
          seg_carry: 0,
          seg_last: 1,
        }),
      );
      // by binding number (kernels/linear/scan.ts RECURRENT); optional ones only where the variant binds them
      const all = [
        buf(T * K),
        buf(T * K),
        buf(T * V),
        c.gate !== 'none' ? buf(T * K) : undefined,
        meta,
        c.delta ? buf(T) : undefined,
        buf(T * V),
        buf(K * V),
        params,
        c.normalize ? buf(K) : undefined,
        c.normalize ? buf(K) : undefined,
      ];
      try {
        const f32 = 'f32' as const;
        const code = linearShader('recurrent', {
          ...c,
          dtype: f32,
          vDtype: f32,
          outDtype: f32,
          mode: 'recurrent',
        }).code;
        const counted = await maxLoopCount(dev, code, all, [Math.ceil(V / 2)], {
          WG: 1,
          DT_QK: 0,
          DT_V: 0,
          OUT_DT: 0,
          GATE: G,
          DELTA: +c.delta,
          NORM: +c.normalize,
        });
        const bound = recurrentLoopIterations(c, T);
        expect(counted, 'the kernel ran its loops').toBeGreaterThan(T);
        expect(bound, 'bound >= counted').toBeGreaterThanOrEqual(counted);
        expect(bound, `tight (${counted} counted)`).toBeLessThanOrEqual(1.2 * counted + 16);
      } finally {
        for (const b of all) b?.destroy();
      }
    });
  }

  for (const c of [
    { K: 64, V: 16, T: 640, delta: false },
    { K: 64, V: 8, T: 300, delta: true },
    { K: 32, V: 12, T: 130, delta: true },
  ] as const) {
    it(`linear chunk scan: scanLoopIterations bounds the counted iterations (K ${c.K}, ${Math.ceil(c.T / 64)} chunks, delta ${c.delta})`, async () => {
      const dev = gpu.dev.device;
      const { K, V, T } = c;
      const C = Math.ceil(T / 64);
      const K4 = Math.ceil(K / 4);
      const V4 = Math.ceil(V / 4);
      const S = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST;
      const buf = (words: number) => dev.createBuffer({ size: Math.max(16, words * 4), usage: S });
      // one sequence: cuSeqlens, then (start, length, sequence) per chunk, then its first chunk
      const chunks: number[] = [];
      for (let s = 0; s < T; s += 64) chunks.push(s, Math.min(64, T - s), 0);
      const metaWords = new Uint32Array([0, T, ...chunks, 0, C]);
      const meta = buf(metaWords.length);
      dev.queue.writeBuffer(meta, 0, metaWords);
      const params = dev.createBuffer({
        size: LIN_PARAMS.size,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      });
      const zero = Object.fromEntries(LIN_PARAMS.fields.map(([f]) => [f, 0])) as Record<
        (typeof LIN_PARAMS.fields)[number][0],
        number
      >;
      dev.queue.writeBuffer(
        params,
        0,
        LIN_PARAMS.pack({
          ...zero,
          T,
          N: 1,
          nChunks: C,
          H: 1,
          HV: 1,
          K,
          V,
          ratio: 1,
          VS: V,
          chunkOff: 2,
          seqChunkOff: 2 + chunks.length,
          K4,
          V4,
          VS4: V4,
          KP: 4 * K4,
          scale: 1,
          seg_begin: 0,
          seg_end: C,
          seg_carry: 0,
          seg_last: 1,
          solveSplit: 1,
        }),
      );
      const rows = T * 4 * Math.max(K4, V4);
      // by binding number (kernels/linear/scan.ts SCAN): W and VN with the delta rule only
      const all = [
        c.delta ? buf(rows) : undefined,
        buf(rows),
        buf(rows),
        buf(rows + C * 4 * K4),
        meta,
        buf(C * 4 * K4 * 4 * V4),
        c.delta ? buf(rows) : undefined,
        buf(K * V),
        params,
      ];
      try {
        const f32 = 'f32' as const;
        const opts = { K, V, gate: 'scalar' as const, delta: c.delta, normalize: false, mode: 'chunk' as const };
        const code = linearShader('scan', { ...opts, dtype: f32, vDtype: f32, outDtype: f32 }).code;
        const counted = await maxLoopCount(dev, code, all, [V4], { WG: 1, GATE: 1, DELTA: +c.delta, NORM: 0 });
        const bound = scanLoopIterations(c, C);
        expect(counted, 'the kernel ran its loops').toBeGreaterThan(C * 64);
        expect(bound, 'bound >= counted').toBeGreaterThanOrEqual(counted);
        expect(bound, `tight (${counted} counted)`).toBeLessThanOrEqual(1.5 * counted + 16);
      } finally {
        for (const b of all) b?.destroy();
      }
    });
  }

  /** Storage buffers filled with `data` (f32 / i32 words) and a uniform buffer, destroyed by `free`. */
  function buffers() {
    const dev = gpu.dev.device;
    const all: GPUBuffer[] = [];
    return {
      storage(data: Float32Array<ArrayBuffer> | Int32Array<ArrayBuffer>) {
        const b = dev.createBuffer({
          size: Math.max(16, data.byteLength),
          usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
        });
        dev.queue.writeBuffer(b, 0, data);
        all.push(b);
        return b;
      },
      uniform(words: ArrayBuffer | ArrayBufferView<ArrayBuffer>, size: number) {
        const b = dev.createBuffer({ size, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
        dev.queue.writeBuffer(b, 0, words as ArrayBuffer);
        all.push(b);
        return b;
      },
      free() {
        for (const b of all) b.destroy();
      },
    };
  }

  for (const [tokens, seg] of [
    [300, { begin: 0, end: 300, carry: false, last: true }],
    [300, { begin: 120, end: 300, carry: true, last: false }],
    [37, { begin: 0, end: 37, carry: false, last: true }],
  ] as const) {
    it(`moba/nsa pool: poolLoopIterations bounds the counted iterations (${seg.end - seg.begin} of ${tokens} tokens)`, async () => {
      const H = 2;
      const D = 8;
      const b = buffers();
      try {
        const all = [
          b.storage(new Float32Array(tokens * H * D).fill(1)),
          b.storage(new Float32Array(H * D)),
          b.uniform(
            POOL_PARAMS.pack({ T: tokens, H, D, BS: tokens, NB: 1, ...segmentUniforms(seg) }),
            POOL_PARAMS.size,
          ),
        ];
        const counted = await maxLoopCount(gpu.dev.device, POOL_PROGRAM.code, all, [1], {
          WG: 64,
          IN_DTYPE: 0,
          DIV_MODE: 0,
        });
        const bound = poolLoopIterations(seg.end - seg.begin);
        expect(counted, 'the kernel ran its loops').toBe(seg.end - seg.begin);
        expect(bound, 'bound >= counted').toBeGreaterThanOrEqual(counted);
        expect(bound, `tight (${counted} counted)`).toBeLessThanOrEqual(counted + 4);
      } finally {
        b.free();
      }
    });
  }

  for (const [nc, D, topk, load] of [
    [200, 16, 3, false],
    [200, 16, 3, true],
    [60, 64, 12, false],
    [80, 32, 8, true],
  ] as const) {
    it(`moba select: mobaSelectLoopIterations bounds the counted iterations (${nc} candidates, D ${D}, topk ${topk}, carried ${load})`, async () => {
      const KP = topk - 1;
      const b = buffers();
      try {
        // one row at key position nc (block size 1): candidates 0 .. nc - 1 with ascending gate
        // scores, so every one is inserted at the head of the list (the most shifts); a carried
        // list of KP entries scoring below all of them
        const sel = new Int32Array(topk).map((_, i) => (load && i > 0 ? 0 : -1));
        const all = [
          b.storage(new Float32Array(D).fill(1)),
          b.storage(new Float32Array(nc * D).map((_, i) => Math.floor(i / D) / 1000)),
          b.storage(sel),
          b.uniform(
            MOBA_SELECT_PARAMS.pack({
              Tq: 1,
              Hq: 1,
              Hkv: 1,
              K: topk,
              BS: 1,
              NBM: nc,
              POSOFF: nc,
              ...segmentUniforms({ begin: 0, end: nc, carry: load, last: true }),
            }),
            MOBA_SELECT_PARAMS.size,
          ),
          b.storage(new Float32Array(Math.max(1, KP)).fill(-1)),
        ];
        const counted = await maxLoopCount(
          gpu.dev.device,
          pipelineShader(mobaSelectSpec('f32', D, 'f32', true)).code,
          all,
          [1],
          {
            WG: 64,
            IN_DTYPE: 0,
            D,
            MEANS_DTYPE: 0,
          },
        );
        const bound = mobaSelectLoopIterations(nc, D, topk, load);
        expect(counted, 'the kernel ran its loops').toBeGreaterThan(nc * (D / 4));
        expect(bound, 'bound >= counted').toBeGreaterThanOrEqual(counted);
        expect(bound, `tight (${counted} counted)`).toBeLessThanOrEqual(1.5 * counted + 16);
      } finally {
        b.free();
      }
    });
  }

  for (const [nc, G, D, S, load] of [
    [100, 4, 16, 4, false],
    [100, 4, 16, 4, true],
    [40, 16, 64, 16, false],
    [64, 2, 32, 8, true],
  ] as const) {
    it(`nsa select: nsaSelectLoopIterations bounds the counted iterations (${nc} candidates, G ${G}, D ${D}, S ${S}, carried ${load})`, async () => {
      const b = buffers();
      try {
        // one query at key position nc - 1 (block size 1): candidates 0 .. nc - 1, all visible,
        // scores ascending with the block (every one goes to the head), a carried list of S
        // entries scoring below all of them
        const all = [
          b.storage(new Float32Array(G * D).fill(1)),
          b.storage(new Float32Array(nc * D).map((_, i) => Math.floor(i / D) / 1000)),
          b.storage(new Float32Array(G)),
          b.storage(new Int32Array(S).fill(load ? 0 : -1)),
          b.uniform(
            NSA_SELECT_PARAMS.pack({
              T: 1,
              Hq: G,
              Hkv: 1,
              S,
              BS: 1,
              scale: 1,
              POSOFF: nc - 1,
              ...segmentUniforms({ begin: 0, end: nc, carry: load, last: true }),
            }),
            NSA_SELECT_PARAMS.size,
          ),
          b.storage(new Float32Array(S).fill(-1)),
        ];
        const counted = await maxLoopCount(
          gpu.dev.device,
          pipelineShader(nsaSelectSpec('f32', D, false, true)).code,
          all,
          [1],
          {
            WG: 64,
            IN_DTYPE: 0,
            D,
            FLA: 0,
          },
        );
        const bound = nsaSelectLoopIterations(nc, G, D, S, load);
        expect(counted, 'the kernel ran its loops').toBeGreaterThan((nc - 1) * G * (D / 4));
        expect(bound, 'bound >= counted').toBeGreaterThanOrEqual(counted);
        expect(bound, `tight (${counted} counted)`).toBeLessThanOrEqual(1.5 * counted + 16);
      } finally {
        b.free();
      }
    });
  }

  for (const [HI, DI, J0, J1] of [
    [8, 512, 0, 8],
    [8, 512, 3, 8],
    [64, 128, 0, 64],
  ] as const) {
    it(`dsa indexer: indexerLoopIterations bounds the counted iterations (heads ${J0}..${J1} of ${HI}, DI ${DI})`, async () => {
      const Tk = 8;
      const b = buffers();
      try {
        const all = [
          b.storage(new Float32Array(HI * DI).fill(0.5)),
          b.storage(new Float32Array(Tk * DI).fill(0.25)),
          b.storage(new Float32Array(HI).fill(1)),
          b.storage(new Float32Array(Tk)),
          b.uniform(
            DSA_INDEXER_PARAMS.pack({
              rows: 1,
              T0: 0,
              Tk,
              HI,
              POSOFF: Tk - 1,
              ...segmentUniforms({ begin: J0, end: J1, carry: J0 > 0, last: true }),
            }),
            DSA_INDEXER_PARAMS.size,
          ),
        ];
        const counted = await maxLoopCount(gpu.dev.device, INDEXER_PROGRAM.code, all, [1], { WG: 64, IN_DTYPE: 0, DI });
        const bound = indexerLoopIterations(J1 - J0, DI);
        expect(counted, 'the kernel ran its loops').toBeGreaterThanOrEqual((J1 - J0) * (DI / 4));
        expect(bound, 'bound >= counted').toBeGreaterThanOrEqual(counted);
        expect(bound, `tight (${counted} counted)`).toBeLessThanOrEqual(1.2 * counted + 16);
      } finally {
        b.free();
      }
    });
  }

  for (const [group, D, vec] of [
    [4, 64, false],
    [16, 128, false],
    [3, 32, true],
  ] as const) {
    it(`quest score: questScoreLoopIterations bounds the counted iterations (group ${group}, D ${D}, 16-byte loads ${vec})`, async () => {
      const pages = 4;
      const b = buffers();
      try {
        // min/max summaries of `pages` pages, one KV head (f16 pairs; the values do not change the loops)
        const summ = b.storage(new Int32Array(pages * D).fill(0x3c003c00));
        const all = [
          b.storage(new Float32Array(group * D).fill(0.5)),
          summ,
          b.storage(new Int32Array(pages).map((_, i) => i)),
          b.storage(new Float32Array(pages)),
          b.uniform(
            QUEST_PARAMS.pack({
              n: pages,
              first: 0,
              count: pages,
              Hkv: 1,
              group,
              chunkFirst: 0,
              chunkPages: pages,
              forcedLo: 0,
              forcedHi: pages,
            }),
            QUEST_PARAMS.size,
          ),
          summ,
        ];
        // the WGSL the pipeline compiles: the program plus the variant's binding declarations (summ4)
        const code = pipelineShader(questScoreSpec(D, 'quest', 'max')).code;
        const counted = await maxLoopCount(gpu.dev.device, code, all, [1], {
          WG: 64,
          D,
          MODE: 0,
          REDUCE: 0,
          VEC: +vec,
        });
        const bound = questScoreLoopIterations(group, D);
        expect(counted, 'the kernel ran its loops').toBeGreaterThanOrEqual(group * (D / (vec ? 8 : 4)));
        expect(bound, 'bound >= counted').toBeGreaterThanOrEqual(counted);
        // 16-byte loads halve the channel loop: the bound (D / 4 chunks) covers both
        expect(bound, `tight (${counted} counted)`).toBeLessThanOrEqual((vec ? 2 : 1.2) * counted + 16);
      } finally {
        b.free();
      }
    });
  }

  for (const [B, group, D] of [
    [64, 1, 128],
    [16, 4, 32],
    [48, 2, 16],
  ] as const) {
    it(`quest block box: questBlockLoopIterations bounds the counted iterations (B ${B}, group ${group}, D ${D})`, async () => {
      const b = buffers();
      try {
        const all = [
          b.storage(new Float32Array(B * group * D).fill(0.5)),
          b.storage(new Float32Array(2 * D)),
          b.uniform(
            QUEST_BLOCK_PARAMS.pack({
              n: 1,
              first: 0,
              count: 1,
              Hkv: 1,
              group,
              B,
              blocks: 1,
              chunkFirst: 0,
              chunkPages: 1,
              forcedLo: 0,
              forcedHi: 1,
            }),
            QUEST_BLOCK_PARAMS.size,
          ),
        ];
        const counted = await maxLoopCount(gpu.dev.device, QUEST_BOX_PROGRAM.code, all, [1], { WG: 64, D });
        const bound = questBlockLoopIterations(B, group, D);
        expect(counted, 'the kernel ran its loops').toBe(B + B * group);
        expect(bound, 'bound >= counted').toBeGreaterThanOrEqual(counted);
        // gallivm also counts each inner loop's exit trip (B of them): up to twice the bodies at group 1
        expect(bound, `tight (${counted} counted)`).toBeLessThanOrEqual(2 * counted + 16);
      } finally {
        b.free();
      }
    });
  }
});
