/**
 * `tessera demo agents --context N --agents A`: agent memory on a disk-backed KV cache.
 *
 * 1. (this process) builds an N-token shared context in a persistent cache on disk, commits its
 *    manifest and closes it;
 * 2. (a child process) reopens it from the files, checks every page checksum and a bit-exact
 *    sample of tokens, forks A agent sequences, appends private tokens to each, rewinds one and
 *    re-appends, then decodes `steps` steps for all agents with shared-prefix (cascade) attention
 *    and again without sharing (each agent streams its whole sequence), and compares them;
 * 3. (this process) prints the child's numbers and writes them as JSON.
 *
 * Token t's K/V are a hash of (seed, t, channel) encoded as f16 with |x| < 2, so any token can be
 * regenerated for the bit-exact check.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { cliDevice } from '../cli-common.js';
import { positiveInt } from './synth.js';
import { TesseraError } from '../errors.js';
import type { TesseraDevice } from '../gpu/device.js';
import { f16BitsToF32 } from '../tensor.js';
import { createKvCache, type KvCache } from '../kv/cache.js';
import { FileStore } from '../kv/file-store.js';
import { pageCounts, refState } from '../kv/refs.js';
import { commitKvCache, openKvCache, persistKvCache, verifyKvCache } from '../kv/session.js';
import { planStreamAttention } from '../stream/exact.js';
import { planCascadeDecode, questSharedSelection, sharedPrefixPages } from '../stream/cascade.js';
import { GPUBufferUsageFlags } from '../gpu/flags.js';

const MiB = 2 ** 20;

export interface AgentsOptions {
  context: number;
  agents: number;
  /** Private tokens appended per agent (default 1024). */
  privateTokens?: number;
  /** Tokens one agent rewinds and re-appends (default 512). */
  rewind?: number;
  /** Decode steps (default 16). */
  steps?: number;
  headDim?: number;
  kvHeads?: number;
  qHeads?: number;
  pageSize?: number;
  gpuBudgetMiB?: number;
  /** Quest pages per KV head for the sparse cascade (default 32). */
  questPages?: number;
  /** Query rows the cascade packs per invocation/workgroup, sharing each K/V load (1, 2, 4 or 8; default 8, 4 on llvmpipe). */
  packRows?: number;
  seed?: number;
  /** Where the cache files go (default: a fresh temp dir, removed at the end). */
  dir?: string;
  quiet?: boolean;
}

export interface AgentsResult {
  context: number;
  agents: number;
  reopened: boolean;
  reopenMs: number;
  checksumsChecked: number;
  checksumsFailed: number;
  sampleTokensChecked: number;
  sampleTokensMismatched: number;
  pagesShared: number;
  bytesCopiedOnFork: number;
  pageBytes: number;
  rewindOk: boolean;
  sharedDecodeMsPerStep: number;
  unsharedDecodeMsPerStep: number;
  speedup: number;
  sharedBytesReadPerStep: number;
  unsharedBytesReadPerStep: number;
  bytesReadRatio: number;
  relRmsSharedVsUnshared: number;
  maxAbsSharedVsUnshared: number;
  questSelection: 'shared';
  questPagesPerHead: number;
  questRecall: number;
  questSharedBytesReadPerStep: number;
  questDecodeMsPerStep: number;
  /** Per-agent selections attended as one union (recall 1). */
  questUnionPagesPerHead: number;
  questUnionBytesReadPerStep: number;
  questUnionDecodeMsPerStep: number;
  steps: number;
  privateTokens: number;
  rewindTokens: number;
  headDim: number;
  kvHeads: number;
  qHeads: number;
  pageSize: number;
  dtype: 'f16';
  gpuBudgetBytes: number;
  kvBytes: number;
  manifestCommits: number;
  buildMs: number;
  childMs: number;
  adapter: string;
}

/**
 * f16 bits of channel `i` of token `t`: |x| < 2 (the top exponent bit cleared); `mask` 0x3fff also
 * clears the sign (values: V in [0, 2), so an output averaging many values is not a sum that
 * cancels to nearly 0, whose relative error would measure cancellation, not the method).
 */
function tokenBits(seed: number, t: number, i: number, mask = 0xbfff): number {
  let h = Math.imul(t ^ Math.imul(seed, 0x2545f491), 0x9e3779b1) ^ Math.imul(i + 1, 0x85ebca77);
  h ^= h >>> 15;
  h = Math.imul(h, 0xc2b2ae3d);
  h ^= h >>> 13;
  return h & mask;
}

/** Raw f16 rows for tokens [t0, t0 + T): K with `seed`, V with `seed + 1`. */
function tokenRows(seed: number, t0: number, T: number, width: number): { k: Uint16Array; v: Uint16Array } {
  const k = new Uint16Array(T * width);
  const v = new Uint16Array(T * width);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < width; i++) {
      k[t * width + i] = tokenBits(seed, t0 + t, i);
      v[t * width + i] = tokenBits(seed + 1, t0 + t, i, 0x3fff);
    }
  }
  return { k, v };
}

function appendTokens(cache: KvCache, seq: number, seed: number, t0: number, T: number, chunk = 65536): void {
  const width = cache.Hkv * cache.D;
  for (let t = 0; t < T; t += chunk) {
    const n = Math.min(chunk, T - t);
    const r = tokenRows(seed, t0 + t, n, width);
    cache.appendRaw(seq, { dtype: 'f16', k: r.k, v: r.v });
  }
}

/** Tokens of `seq` in [start, start + n) equal the generator's (seed for positions >= from, else base seed). */
function checkTokens(
  cache: KvCache,
  seq: number,
  start: number,
  n: number,
  seedAt: (t: number) => { seed: number; t: number },
): number {
  const { k, v } = cache.read(seq, start, n);
  const width = cache.Hkv * cache.D;
  let bad = 0;
  for (let j = 0; j < n; j++) {
    const { seed, t } = seedAt(start + j);
    for (let i = 0; i < width; i++) {
      if (
        k[j * width + i] !== f16BitsToF32(tokenBits(seed, t, i)) ||
        v[j * width + i] !== f16BitsToF32(tokenBits(seed + 1, t, i, 0x3fff))
      ) {
        bad++;
        break;
      }
    }
  }
  return bad;
}

interface Paths {
  dir: string;
  file: string;
  removeDir: boolean;
}

function layout(o: AgentsOptions) {
  return {
    D: o.headDim ?? 64,
    Hkv: o.kvHeads ?? 1,
    Hq: o.qHeads ?? 4,
    P: o.pageSize ?? 64,
    gpuBudget: (o.gpuBudgetMiB ?? 128) * MiB,
    seed: (o.seed ?? 1234) >>> 0 || 1,
  };
}

/** Step 1: build the shared context in a persistent cache and close it. */
export function buildContext(dev: TesseraDevice, o: AgentsOptions, file: string): { buildMs: number; kvBytes: number } {
  const L = layout(o);
  const t0 = performance.now();
  const store = new FileStore({ path: file });
  const cache = createKvCache(dev, {
    Hkv: L.Hkv,
    D: L.D,
    pageSize: L.P,
    dtype: 'f16',
    gpuBudgetBytes: L.gpuBudget,
    store,
  });
  try {
    persistKvCache(cache, store.manifest(), { autoCommit: false });
    const base = cache.addSequence();
    appendTokens(cache, base, L.seed, 0, o.context);
    commitKvCache(cache);
    return { buildMs: performance.now() - t0, kvBytes: cache.numPages * cache.pageBytes };
  } finally {
    cache.dispose();
  }
}

/** Step 2 (in the child process): reopen, verify, fork, append, rewind, decode. */
export async function resumeAgents(
  dev: TesseraDevice,
  o: AgentsOptions,
  file: string,
): Promise<Omit<AgentsResult, 'buildMs' | 'childMs' | 'kvBytes'>> {
  const L = layout(o);
  const A = o.agents;
  const privateTokens = o.privateTokens ?? 1024;
  const rewind = Math.min(o.rewind ?? 512, privateTokens);
  const steps = o.steps ?? 16;
  const questPages = o.questPages ?? 32;
  const log = (s: string) => !o.quiet && process.stderr.write(s + '\n');
  const t0 = performance.now();
  const store = new FileStore({ path: file, mode: 'open' });
  let manifestCommits = 0;
  const fm = store.manifest();
  const manifest = { kind: fm.kind, read: () => fm.read(), write: (b: Uint8Array) => (fm.write(b), manifestCommits++) };
  const cache = openKvCache(dev, {
    store,
    manifest,
    gpuBudgetBytes: L.gpuBudget,
    Hkv: L.Hkv,
    D: L.D,
    pageSize: L.P,
    dtype: 'f16',
  });
  try {
    const reopenMs = performance.now() - t0;
    const base = 0;
    const N = cache.length(base);
    if (N !== o.context) throw new TesseraError('E_CORRUPT', `reopened context has ${N} tokens, expected ${o.context}`);
    const v = verifyKvCache(cache);
    log(
      `reopened ${N.toLocaleString('en-US')} tokens in ${reopenMs.toFixed(0)} ms; ${v.checked} checksums, ${v.failed.length} failed`,
    );
    // A bit-exact sample: 64 tokens at 64 spread positions (and the last ones).
    let sampleChecked = 0;
    let sampleBad = 0;
    for (let i = 0; i < 64; i++) {
      const start = Math.min(N - 64, Math.floor((i * (N - 64)) / 63));
      sampleBad += checkTokens(cache, base, start, 64, (t) => ({ seed: L.seed, t }));
      sampleChecked += 64;
    }
    // Fork the agents; private tokens each.
    const st = refState(cache);
    const copied0 = st.bytesCopied;
    const agents = Array.from({ length: A }, () => cache.fork(base));
    const bytesCopiedOnFork = st.bytesCopied - copied0;
    const agentSeed = (i: number) => L.seed + 1000 * (i + 1);
    agents.forEach((a, i) => appendTokens(cache, a, agentSeed(i), N, privateTokens));
    // Rewind agent 0 (undo a tool call) and re-append with other tokens.
    const a0 = agents[0]!;
    cache.truncate(a0, N + privateTokens - rewind);
    const redo = L.seed + 777;
    appendTokens(cache, a0, redo, N + privateTokens - rewind, rewind);
    const rewindBad = checkTokens(cache, a0, N - 64, 64 + privateTokens, (t) =>
      t < N ? { seed: L.seed, t } : t < N + privateTokens - rewind ? { seed: agentSeed(0), t } : { seed: redo, t },
    );
    const other = checkTokens(cache, agents[A - 1]!, N, privateTokens, (t) => ({ seed: agentSeed(A - 1), t }));
    const counts = pageCounts(cache);
    const sharedPages = sharedPrefixPages(cache, agents);
    const rewindOk =
      rewindBad === 0 &&
      other === 0 &&
      cache.length(a0) === N + privateTokens &&
      sharedPages === Math.floor(N / L.P) &&
      cache.refCount(cache.pages(base)[0]!) === A + 1;
    log(
      `forked ${A} agents (${counts.shared} pages shared, ${bytesCopiedOnFork} bytes copied), +${privateTokens} tokens each, rewind ${rewind} ok: ${rewindOk}`,
    );
    // Decode.
    const ctx = cache.ctx;
    const { Hq, D } = { Hq: L.Hq, D: L.D };
    const Dv = cache.Dv;
    const cascade = await planCascadeDecode(cache, { Hq, seqs: A, rows: o.packRows });
    const exact = await planStreamAttention(cache, { Hq });
    const usage = GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_DST | GPUBufferUsageFlags.COPY_SRC;
    const qBuf = ctx.createBuffer({ size: A * Hq * D * 4, usage, label: 'demo.q' });
    const qOne = ctx.createBuffer({ size: Hq * D * 4, usage, label: 'demo.q1' });
    const oShared = ctx.createBuffer({ size: A * Hq * Dv * 4, usage, label: 'demo.oShared' });
    const oOne = ctx.createBuffer({ size: Hq * Dv * 4, usage, label: 'demo.o1' });
    const oUnshared = ctx.createBuffer({ size: A * Hq * Dv * 4, usage, label: 'demo.oUnshared' });
    let sharedMs = 0;
    let unsharedMs = 0;
    let questMs = 0;
    let sharedBytes = 0;
    let unsharedBytes = 0;
    let questBytes = 0;
    let unionMs = 0;
    let unionBytes = 0;
    let unionPages = 0;
    let num = 0;
    let den = 0;
    let maxAbs = 0;
    let recall = 0;
    try {
      for (let s = 0; s < steps; s++) {
        const q = new Float32Array(A * Hq * D);
        for (let i = 0; i < q.length; i++) q[i] = f16BitsToF32(tokenBits(L.seed + 5000 + s, i, 0)) * 2;
        ctx.device.queue.writeBuffer(qBuf, 0, q);
        const a = performance.now();
        const cs = await cascade.run(
          agents,
          { buffer: qBuf, shape: [A, Hq, D], dtype: 'f32' },
          { o: { buffer: oShared, shape: [A, Hq, Dv], dtype: 'f32' } },
        );
        sharedMs += performance.now() - a;
        sharedBytes += cs.kvBytesRead;
        const b = performance.now();
        for (let i = 0; i < A; i++) {
          ctx.device.queue.writeBuffer(qOne, 0, q, i * Hq * D, Hq * D);
          const es = await exact.run(
            agents[i]!,
            { buffer: qOne, shape: [1, Hq, D], dtype: 'f32' },
            { o: { buffer: oOne, shape: [1, Hq, Dv], dtype: 'f32' } },
          );
          const enc = ctx.device.createCommandEncoder();
          enc.copyBufferToBuffer(oOne, 0, oUnshared, i * Hq * Dv * 4, Hq * Dv * 4);
          ctx.device.queue.submit([enc.finish()]);
          unsharedBytes += es.kvBytesRead;
        }
        await ctx.device.queue.onSubmittedWorkDone();
        const um = performance.now() - b;
        unsharedMs += um;
        const x = new Float32Array(await ctx.readback(oShared));
        const y = new Float32Array(await ctx.readback(oUnshared));
        for (let i = 0; i < x.length; i++) {
          const d = x[i]! - y[i]!;
          num += d * d;
          den += y[i]! * y[i]!;
          maxAbs = Math.max(maxAbs, Math.abs(d));
          if (!Number.isFinite(x[i]!)) num = NaN;
        }
        // Sparse cascade: one Quest selection over the shared pages for all agents.
        const sel = questSharedSelection(cache, agents, q, {
          Hq,
          budgetPages: questPages,
          sharedPages,
          f16ToF32: f16BitsToF32,
        });
        recall += sel.recall;
        const c = performance.now();
        const qs = await cascade.run(
          agents,
          { buffer: qBuf, shape: [A, Hq, D], dtype: 'f32' },
          { o: { buffer: oShared, shape: [A, Hq, Dv], dtype: 'f32' } },
          { sharedSelection: sel.shared },
        );
        questMs += performance.now() - c;
        questBytes += qs.kvBytesRead;
        // Per-agent selections, attended once as their union.
        const uni = questSharedSelection(cache, agents, q, {
          Hq,
          budgetPages: questPages,
          sharedPages,
          mode: 'union',
          f16ToF32: f16BitsToF32,
        });
        const u0 = performance.now();
        const us = await cascade.run(
          agents,
          { buffer: qBuf, shape: [A, Hq, D], dtype: 'f32' },
          { o: { buffer: oShared, shape: [A, Hq, Dv], dtype: 'f32' } },
          { sharedSelection: uni.shared },
        );
        unionMs += performance.now() - u0;
        unionBytes += us.kvBytesRead;
        unionPages += uni.shared.reduce((x, s) => x + s.length, 0) / cache.Hkv;
        log(
          `step ${s + 1}/${steps}: shared ${cs.ms.toFixed(0)} ms, unshared ${um.toFixed(0)} ms, quest-shared ${qs.ms.toFixed(0)} ms (recall ${sel.recall.toFixed(3)})`,
        );
      }
    } finally {
      cascade.dispose();
      exact.dispose();
      for (const b of [qBuf, qOne, oShared, oOne, oUnshared]) ctx.destroyBuffer(b);
    }
    const relRms = den > 0 ? Math.sqrt(num / den) : NaN;
    return {
      context: N,
      agents: A,
      reopened: true,
      reopenMs,
      checksumsChecked: v.checked,
      checksumsFailed: v.failed.length,
      sampleTokensChecked: sampleChecked,
      sampleTokensMismatched: sampleBad,
      pagesShared: counts.shared,
      bytesCopiedOnFork,
      pageBytes: cache.pageBytes,
      rewindOk,
      sharedDecodeMsPerStep: sharedMs / steps,
      unsharedDecodeMsPerStep: unsharedMs / steps,
      speedup: unsharedMs / sharedMs,
      sharedBytesReadPerStep: sharedBytes / steps,
      unsharedBytesReadPerStep: unsharedBytes / steps,
      bytesReadRatio: sharedBytes / unsharedBytes,
      relRmsSharedVsUnshared: relRms,
      maxAbsSharedVsUnshared: maxAbs,
      questSelection: 'shared',
      questPagesPerHead: questPages,
      questRecall: recall / steps,
      questSharedBytesReadPerStep: questBytes / steps,
      questDecodeMsPerStep: questMs / steps,
      questUnionPagesPerHead: unionPages / steps,
      questUnionBytesReadPerStep: unionBytes / steps,
      questUnionDecodeMsPerStep: unionMs / steps,
      steps,
      privateTokens,
      rewindTokens: rewind,
      headDim: L.D,
      kvHeads: L.Hkv,
      qHeads: L.Hq,
      pageSize: L.P,
      dtype: 'f16',
      gpuBudgetBytes: L.gpuBudget,
      manifestCommits,
      adapter: ctx.adapterName,
    };
  } finally {
    cache.dispose();
  }
}

/** The child's entry: `node agents.(ts|js) --child <json options> <file>`; prints one JSON line. */
async function childMain(): Promise<void> {
  const i = process.argv.indexOf('--child');
  const o = JSON.parse(process.argv[i + 1]!) as AgentsOptions & { adapter?: string };
  const file = process.argv[i + 2]!;
  const dev = await cliDevice({ adapter: o.adapter });
  try {
    const r = await resumeAgents(dev, o, file);
    process.stdout.write('\n@@AGENTS ' + JSON.stringify(r) + '\n');
  } finally {
    dev.destroy();
  }
}

/** Runs step 2 in a child process (node, with tsx when running from source). */
export function runChild(
  o: AgentsOptions & { adapter?: string },
  file: string,
): Promise<Omit<AgentsResult, 'buildMs' | 'childMs' | 'kvBytes'>> {
  const self = fileURLToPath(import.meta.url);
  const args = [...(self.endsWith('.ts') ? ['--import', 'tsx'] : []), self, '--child', JSON.stringify(o), file];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, {
      stdio: ['ignore', 'pipe', 'inherit'],
      cwd: join(dirname(self), '..', '..'),
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('@@AGENTS '));
      if (code !== 0 || !line)
        reject(
          new TesseraError('E_STATE', `demo agents: the child process failed (exit ${code}): ${out.slice(-2000)}`),
        );
      else resolve(JSON.parse(line.slice('@@AGENTS '.length)));
    });
  });
}

/**
 * The whole demo: build and close here, resume in a child process.
 *
 * @example
 * const r = await runAgents(dev, { context: 1_000_000, agents: 8 });
 */
export async function runAgents(dev: TesseraDevice, o: AgentsOptions & { adapter?: string }): Promise<AgentsResult> {
  const paths: Paths = o.dir
    ? { dir: o.dir, file: join(o.dir, 'agents-kv.bin'), removeDir: false }
    : (() => {
        const dir = mkdtempSync(join(tmpdir(), 'tessera-agents-'));
        return { dir, file: join(dir, 'kv.bin'), removeDir: true };
      })();
  try {
    const b = buildContext(dev, o, paths.file);
    if (!o.quiet)
      process.stderr.write(
        `built ${o.context.toLocaleString('en-US')} tokens (${(b.kvBytes / MiB).toFixed(0)} MiB) in ${(b.buildMs / 1000).toFixed(1)} s; closed; reopening in a child process\n`,
      );
    const t = performance.now();
    const r = await runChild(o, paths.file);
    return { ...r, buildMs: b.buildMs, childMs: performance.now() - t, kvBytes: b.kvBytes };
  } finally {
    if (paths.removeDir) rmSync(paths.dir, { recursive: true, force: true });
  }
}

export async function agentsCli(argv: string[]): Promise<void> {
  const cmd = new Command('agents')
    .option('--context <n>', 'shared context tokens', '1000000')
    .option('--agents <n>', 'agent sequences forked from it', '8')
    .option('--private <n>', 'private tokens appended per agent', '1024')
    .option('--rewind <n>', 'tokens one agent rewinds and re-appends', '512')
    .option('--steps <n>', 'decode steps', '16')
    .option('--head-dim <n>', 'head dim', '64')
    .option('--kv-heads <n>', 'KV heads', '1')
    .option('--q-heads <n>', 'query heads', '4')
    .option('--page-size <n>', 'tokens per page', '64')
    .option('--gpu-budget <MiB>', 'GPU bytes budget of the cache in MiB', '128')
    .option('--quest-pages <n>', 'Quest pages per KV head for the sparse cascade', '32')
    .option('--pack-rows <n>', 'query rows the cascade packs per invocation (1, 2, 4 or 8; default 8, 4 on llvmpipe)')
    .option('--dir <path>', 'directory for the cache files (kept)')
    .option('--seed <n>', 'random seed', '1234')
    .option('--json <file>', 'write the results as JSON')
    .option('--adapter <name>', 'auto | swiftshader | llvmpipe')
    .exitOverride();
  cmd.parse(argv, { from: 'user' });
  const a = cmd.opts();
  const dev = await cliDevice({ adapter: a.adapter });
  try {
    const r = await runAgents(dev, {
      context: positiveInt(a.context, 'context'),
      agents: positiveInt(a.agents, 'agents'),
      privateTokens: positiveInt(a.private, 'private'),
      rewind: positiveInt(a.rewind, 'rewind'),
      steps: positiveInt(a.steps, 'steps'),
      headDim: positiveInt(a.headDim, 'head-dim'),
      kvHeads: positiveInt(a.kvHeads, 'kv-heads'),
      qHeads: positiveInt(a.qHeads, 'q-heads'),
      pageSize: positiveInt(a.pageSize, 'page-size'),
      gpuBudgetMiB: positiveInt(a.gpuBudget, 'gpu-budget'),
      questPages: positiveInt(a.questPages, 'quest-pages'),
      packRows: a.packRows === undefined ? undefined : positiveInt(a.packRows, 'pack-rows'),
      seed: positiveInt(a.seed, 'seed'),
      dir: a.dir,
      adapter: a.adapter,
    });
    console.log(
      [
        `agents demo on ${r.adapter}: ${r.context.toLocaleString('en-US')}-token shared context, ${r.agents} agents, D=${r.headDim}, Hkv=${r.kvHeads}, Hq=${r.qHeads}, page ${r.pageSize}, f16, disk tier`,
        `  reopened in a child process in ${r.reopenMs.toFixed(0)} ms: ${r.checksumsChecked} checksums, ${r.checksumsFailed} failed; ${r.sampleTokensChecked} sample tokens, ${r.sampleTokensMismatched} mismatched`,
        `  fork: ${r.pagesShared} pages shared, ${r.bytesCopiedOnFork} bytes copied; rewind ok: ${r.rewindOk}; ${r.manifestCommits} manifest commits`,
        `  decode: shared ${r.sharedDecodeMsPerStep.toFixed(0)} ms/step vs unshared ${r.unsharedDecodeMsPerStep.toFixed(0)} ms/step (${r.speedup.toFixed(2)}x); bytes ${(r.sharedBytesReadPerStep / MiB).toFixed(1)} vs ${(r.unsharedBytesReadPerStep / MiB).toFixed(1)} MiB/step (${r.bytesReadRatio.toFixed(3)}); relRms ${r.relRmsSharedVsUnshared.toExponential(2)}`,
        `  quest (shared selection, ${r.questPagesPerHead} pages/head): ${r.questDecodeMsPerStep.toFixed(0)} ms/step, ${(r.questSharedBytesReadPerStep / MiB).toFixed(2)} MiB/step, recall vs per-agent selection ${r.questRecall.toFixed(3)}`,
        `  quest (per-agent selections as one union: ${r.questUnionPagesPerHead.toFixed(0)} pages/head, recall 1): ${r.questUnionDecodeMsPerStep.toFixed(0)} ms/step, ${(r.questUnionBytesReadPerStep / MiB).toFixed(2)} MiB/step`,
      ].join('\n'),
    );
    if (a.json) writeFileSync(a.json, JSON.stringify(r, null, 2) + '\n');
  } finally {
    dev.destroy();
  }
}

if (
  process.argv.includes('--child') &&
  fileURLToPath(import.meta.url) === process.argv[process.argv.indexOf('--child') - 1]
) {
  childMain().catch((e) => {
    process.stderr.write(String(e?.stack ?? e) + '\n');
    process.exit(1);
  });
}
