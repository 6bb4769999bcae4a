/**
 * `tessera demo split --tokens N --devices 2`: one context striped over several devices, decoded
 * exactly (each device streams its own pages, the partials merge on the host), against the same
 * context on one device. Random f16 keys and values (|x| < 2) with one planted needle, as in
 * `demo needle`.
 */
import { writeFileSync } from 'node:fs';
import { Command } from 'commander';
import { cliDevice } from '../cli-common.js';
import { TesseraError } from '../errors.js';
import type { TesseraDevice } from '../gpu/device.js';
import { f32ToF16Bits } from '../tensor.js';
import { createKvCache } from '../kv/cache.js';
import { streamAttention } from '../stream/exact.js';
import { createSplitKvCache, planSplitDecode } from '../stream/split.js';
import { fillWords, positiveInt, relErr, type Xorshift } from './synth.js';

const MiB = 2 ** 20;

export interface SplitResult {
  tokens: number;
  devices: number;
  adapters: string[];
  stripeTokens: number;
  headDim: number;
  kvHeads: number;
  qHeads: number;
  pageSize: number;
  needlePosition: number;
  needleDevice: number;
  needleFound: boolean;
  needleWeightSplit: number;
  relRmsVsOneDevice: number;
  maxAbsVsOneDevice: number;
  lseMaxAbsDiff: number;
  /** The same comparison for a random query (no needle: attention spread over the whole context). */
  relRmsVsOneDeviceRandomQuery: number;
  lseMaxAbsDiffRandomQuery: number;
  /** Bytes that crossed between the host and the devices in one decode step (query out, partials back). */
  bytesMovedPerStep: number;
  qBytesPerStep: number;
  partialBytesPerStep: number;
  /** KV bytes each device holds (what would otherwise have to move). */
  kvBytesPerDevice: number[];
  kvBytesTotal: number;
  splitMs: number;
  splitWarmMs: number;
  oneDeviceMs: number;
  perDeviceMs: number[];
  buildMs: number;
  gpuBudgetBytesPerDevice: number;
  gpuBytesPeakPerDevice: number[];
  oneDeviceGpuBytesPeak: number;
}

export interface SplitOptions {
  tokens: number;
  /** Devices to split over (at least 1; the one-device reference runs on the first). */
  devices: TesseraDevice[];
  stripeTokens?: number;
  headDim?: number;
  qHeads?: number;
  pageSize?: number;
  gpuBudgetMiB?: number;
  seed?: number;
  /** The device of the one-device reference (its own device, so the peaks stay apart); none: the comparison fields are NaN. */
  oneDevice?: TesseraDevice;
  quiet?: boolean;
}

/**
 * Runs the split demo and returns its numbers.
 *
 * @example
 * const r = await runSplit({ tokens: 1_000_000, devices: [dev0, dev1] });
 * console.log(r.relRmsVsOneDevice, r.bytesMovedPerStep);
 */
export async function runSplit(o: SplitOptions): Promise<SplitResult> {
  const N = o.tokens;
  const D = o.headDim ?? 128;
  const Hq = o.qHeads ?? 1;
  const P = o.pageSize ?? 64;
  const stripe = o.stripeTokens ?? 65536;
  const gpuBudget = (o.gpuBudgetMiB ?? 256) * MiB;
  const devs = o.devices;
  const log = (s: string) => !o.quiet && console.error(s);
  const heldBefore = devs.map((d) => d.resetPeak()); // each peak counts this run's buffers only
  const oneHeldBefore = o.oneDevice?.resetPeak() ?? 0;
  const split = createSplitKvCache(devs, {
    Hkv: 1,
    D,
    pageSize: P,
    dtype: 'f16',
    stripeTokens: stripe,
    gpuBudgetBytes: gpuBudget - 32 * MiB,
    meanSummaries: false,
  });
  const one = o.oneDevice
    ? createKvCache(o.oneDevice, {
        Hkv: 1,
        D,
        pageSize: P,
        dtype: 'f16',
        gpuBudgetBytes: gpuBudget - 32 * MiB,
        meanSummaries: false,
      })
    : undefined;
  try {
    const st: Xorshift = { s: (o.seed ?? 1234) >>> 0 || 1 };
    const q = new Float32Array(Hq * D);
    const w = new Uint32Array(1);
    for (let i = 0; i < q.length; i++) {
      fillWords(w, st, 0xffffffff);
      q[i] = w[0]! & 1 ? 1 : -1;
    }
    const needlePos = Math.floor(N * 0.63) + 17;
    const needleV = new Float32Array(D).map((_, d) => (d % 2 === 0 ? 1.5 : -1.5));
    const t0 = performance.now();
    const CH = 65536;
    const kw = new Uint32Array((CH * D) / 2);
    const vw = new Uint32Array((CH * D) / 2);
    const seq = split.addSequence();
    const s1 = one?.addSequence() ?? 0;
    for (let t = 0; t < N; t += CH) {
      const n = Math.min(CH, N - t);
      fillWords(kw.subarray(0, (n * D) / 2), st);
      fillWords(vw.subarray(0, (n * D) / 2), st);
      const k16 = new Uint16Array(kw.buffer, 0, n * D);
      const v16 = new Uint16Array(vw.buffer, 0, n * D);
      if (needlePos >= t && needlePos < t + n) {
        for (let d = 0; d < D; d++) {
          k16[(needlePos - t) * D + d] = f32ToF16Bits(3 * q[d]!);
          v16[(needlePos - t) * D + d] = f32ToF16Bits(needleV[d]!);
        }
      }
      split.appendRaw(seq, { dtype: 'f16', k: k16, v: v16 });
      one?.appendRaw(s1, { dtype: 'f16', k: k16, v: v16 });
    }
    const buildMs = performance.now() - t0;
    log(
      `built ${N.toLocaleString('en-US')} tokens on ${devs.length} devices${one ? ' and on one' : ''} in ${(buildMs / 1000).toFixed(1)} s`,
    );
    const plan = await planSplitDecode(split, { Hq });
    const qr = new Float32Array(Hq * D);
    for (let i = 0; i < qr.length; i++) {
      fillWords(w, st, 0xffffffff);
      qr[i] = ((w[0]! >>> 8) / 2 ** 24 - 0.5) * 2;
    }
    let r1;
    let r2;
    let rr;
    try {
      r1 = await plan.run(seq, q);
      r2 = await plan.run(seq, q);
      rr = await plan.run(seq, qr);
    } finally {
      plan.dispose();
    }
    log(`split: ${r1.stats.ms.toFixed(0)} ms (warm ${r2.stats.ms.toFixed(0)} ms), ${r1.stats.bytesMoved} bytes moved`);
    let ref: { o: Float64Array; lse: Float64Array; stats: { ms: number } } | undefined;
    let refR: { o: Float64Array; lse: Float64Array } | undefined;
    if (one) {
      ref = await streamAttention(one, s1, q, { Hq });
      refR = await streamAttention(one, s1, qr, { Hq });
      log(`one device: ${ref.stats.ms.toFixed(0)} ms`);
    }
    const err = ref ? relErr(r1.o, ref.o) : { relRms: NaN, maxAbs: NaN };
    const lseErr = ref ? relErr(r1.lse, ref.lse).maxAbs : NaN;
    let wMin = Infinity;
    for (let h = 0; h < Hq; h++) {
      let dot = 0;
      let nn = 0;
      for (let d = 0; d < D; d++) {
        dot += r1.o[h * D + d]! * needleV[d]!;
        nn += needleV[d]! * needleV[d]!;
      }
      wMin = Math.min(wMin, dot / nn);
    }
    const stats = split.stats();
    const r: SplitResult = {
      tokens: N,
      devices: devs.length,
      adapters: devs.map((d) => d.adapterName),
      stripeTokens: stripe,
      headDim: D,
      kvHeads: 1,
      qHeads: Hq,
      pageSize: P,
      needlePosition: needlePos,
      needleDevice: Math.floor(needlePos / stripe) % devs.length,
      needleFound: wMin > 0.9,
      needleWeightSplit: wMin,
      relRmsVsOneDevice: err.relRms,
      maxAbsVsOneDevice: err.maxAbs,
      lseMaxAbsDiff: lseErr,
      relRmsVsOneDeviceRandomQuery: refR ? relErr(rr.o, refR.o).relRms : NaN,
      lseMaxAbsDiffRandomQuery: refR ? relErr(rr.lse, refR.lse).maxAbs : NaN,
      bytesMovedPerStep: r1.stats.bytesMoved,
      qBytesPerStep: r1.stats.qBytes,
      partialBytesPerStep: r1.stats.partialBytes,
      kvBytesPerDevice: stats.map((s) => s.kvBytes),
      kvBytesTotal: stats.reduce((a, s) => a + s.kvBytes, 0),
      splitMs: r1.stats.ms,
      splitWarmMs: r2.stats.ms,
      oneDeviceMs: ref ? ref.stats.ms : NaN,
      perDeviceMs: r1.stats.perDevice.map((s) => s?.ms ?? 0),
      buildMs,
      gpuBudgetBytesPerDevice: gpuBudget,
      gpuBytesPeakPerDevice: devs.map((d, i) => d.memory().bytesPeak - heldBefore[i]!),
      oneDeviceGpuBytesPeak: o.oneDevice ? o.oneDevice.memory().bytesPeak - oneHeldBefore : NaN,
    };
    return r;
  } finally {
    split.dispose();
    one?.dispose();
  }
}

/** CLI entry: `tessera demo split --tokens N --devices 2 [--json FILE] ...`. */
export async function splitCli(argv: string[]): Promise<void> {
  const cmd = new Command('split')
    .option('--tokens <n>', 'context length in tokens', '1000000')
    .option('--devices <n>', 'devices to split over', '2')
    .option(
      '--adapters <list>',
      'adapter per device, comma separated (auto | swiftshader | llvmpipe); default --adapter for all',
    )
    .option('--stripe <n>', 'tokens per stripe', '65536')
    .option('--q-heads <n>', 'query heads', '1')
    .option('--page-size <n>', 'tokens per page', '64')
    .option('--gpu-budget <MiB>', 'GPU bytes budget per device in MiB', '256')
    .option('--no-one-device', 'skip the one-device reference')
    .option('--seed <n>', 'random seed', '1234')
    .option('--json <file>', 'write the results as JSON')
    .option('--adapter <name>', 'auto | swiftshader | llvmpipe')
    .exitOverride();
  cmd.parse(argv, { from: 'user' });
  const a = cmd.opts();
  const n = positiveInt(a.devices, 'devices');
  const names = a.adapters ? String(a.adapters).split(',') : Array.from({ length: n }, () => a.adapter);
  if (names.length !== n)
    throw new TesseraError('E_ARG', `--adapters: ${names.length} names for ${n} devices`, {
      argument: 'adapters',
      actual: a.adapters,
    });
  const devs: TesseraDevice[] = [];
  try {
    for (const name of names) devs.push(await cliDevice({ adapter: name }));
    if (a.oneDevice) devs.push(await cliDevice({ adapter: names[0] }));
    const r = await runSplit({
      tokens: positiveInt(a.tokens, 'tokens'),
      devices: devs.slice(0, n),
      oneDevice: a.oneDevice ? devs[n] : undefined,
      stripeTokens: positiveInt(a.stripe, 'stripe'),
      qHeads: positiveInt(a.qHeads, 'q-heads'),
      pageSize: positiveInt(a.pageSize, 'page-size'),
      gpuBudgetMiB: positiveInt(a.gpuBudget, 'gpu-budget'),
      seed: positiveInt(a.seed, 'seed'),
    });
    const lines = [
      `split demo: ${r.tokens.toLocaleString('en-US')} tokens over ${r.devices} devices (${r.adapters.join(' + ')}), stripes of ${r.stripeTokens}, D=${r.headDim}, Hq=${r.qHeads}, page ${r.pageSize}, f16`,
      `  needle at ${r.needlePosition} (device ${r.needleDevice}): ${r.needleFound ? 'FOUND' : 'NOT FOUND'} (weight ${r.needleWeightSplit.toFixed(4)})`,
      `  vs one device: rel RMS ${r.relRmsVsOneDevice.toExponential(2)}, max abs ${r.maxAbsVsOneDevice.toExponential(2)}, lse ${r.lseMaxAbsDiff.toExponential(2)}; random query: rel RMS ${r.relRmsVsOneDeviceRandomQuery.toExponential(2)}, lse ${r.lseMaxAbsDiffRandomQuery.toExponential(2)}`,
      `  bytes moved per decode step: ${r.bytesMovedPerStep} (query ${r.qBytesPerStep}, partials ${r.partialBytesPerStep}); KV bytes per device ${r.kvBytesPerDevice.map((b) => (b / MiB).toFixed(1) + ' MiB').join(', ')}`,
      `  split ${(r.splitMs / 1000).toFixed(2)} s (warm ${(r.splitWarmMs / 1000).toFixed(2)} s; per device ${r.perDeviceMs.map((x) => (x / 1000).toFixed(2)).join(', ')} s); one device ${(r.oneDeviceMs / 1000).toFixed(2)} s`,
      `  GPU peak per device ${r.gpuBytesPeakPerDevice.map((b) => (b / MiB).toFixed(1)).join(', ')} MiB of ${(r.gpuBudgetBytesPerDevice / MiB).toFixed(0)} MiB; build ${(r.buildMs / 1000).toFixed(1)} s`,
    ];
    console.log(lines.join('\n'));
    if (a.json) writeFileSync(a.json, JSON.stringify(r, null, 2) + '\n');
  } finally {
    for (const d of devs) d.destroy();
  }
}
