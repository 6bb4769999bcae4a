/**
 * `tessera bench engine`: the engine of `examples/engine` (3 layers: full attention, sliding window
 * with sinks, Quest-sparse; GQA 8/2, head dim 64, RoPE; a batch of 4 ragged prompts, prefill then
 * decode steps fed by the previous step's GPU output) measured as an engine sees it, with today's
 * way (a new decode plan per step and layer) measured in the same run as the baseline.
 *
 *   npm run --silent tessera -- bench engine [--steps 64] [--small] [--no-baseline] [--no-mirror] [--json FILE]
 *
 * Writes (and prints) `{ adapter, layers, batch, steps, kvDtype, hostUsPerStep: { median, p90 },
 * gpuMsPerStep: { median }, buffersCreatedPerStep, bindGroupsCreatedPerStep, submitsPerStep,
 * readbacks, relRms, baseline: { hostUsPerStep: { median }, buffersCreatedPerStep } }` plus
 * details (warm-up, host-time breakdown, targets). Host time is the host thread's time per decode
 * step (pool tables, schedules, encoding, submit); GPU time is the wall time from submit to
 * `onSubmittedWorkDone` of one decode step submitted alone (no timestamp queries); per-step counts are over the
 * steps after the warm-up (bind-group caches fill in the first steps). `relRms` compares the last
 * layer's outputs with the float64 mirror of the whole model. Targets: 0 buffers, 0 bind groups,
 * 0 readbacks, 1 submit per step, host time <= 50 us per layer (median).
 */
import { writeFileSync } from 'node:fs';
import { Command } from 'commander';
import { benchDevice } from '../harness.js';
import { intOption } from '../../src/cli-common.js';
import { main as runEngine, summary, type EngineResult } from '../../examples/engine/main.js';

export interface EngineBenchJson {
  adapter: string;
  layers: number;
  batch: number;
  steps: number;
  kvDtype: string;
  hostUsPerStep: { median: number; p90: number };
  gpuMsPerStep: { median: number };
  buffersCreatedPerStep: number;
  bindGroupsCreatedPerStep: number;
  submitsPerStep: number;
  readbacks: number;
  relRms: number;
  baseline: { hostUsPerStep: { median: number }; buffersCreatedPerStep: number };
  details: {
    layerKinds: string[];
    prompts: number[];
    warmupSteps: number;
    bindGroupsWarmup: number;
    hostUsBreakdown: EngineResult['hostUsBreakdown'];
    hostUsPerLayer: number;
    questSelections: number;
    questMargin: number;
    windowPagesReleased: number;
    targets: Record<string, boolean>;
    gpuTiming: string;
    loadAverage?: number[];
  };
}

/** The suite's JSON from an engine run. */
export function engineBenchJson(r: EngineResult): EngineBenchJson {
  const perLayer = r.hostUsPerStep.median / r.layers;
  let loadAverage: number[] | undefined;
  try {
    loadAverage = (globalThis as { process?: { getBuiltinModule?: (m: string) => { loadavg(): number[] } } }).process
      ?.getBuiltinModule?.('node:os')
      ?.loadavg();
  } catch {
    loadAverage = undefined;
  }
  return {
    adapter: r.adapter,
    layers: r.layers,
    batch: r.batch,
    steps: r.steps,
    kvDtype: r.kvDtype,
    hostUsPerStep: r.hostUsPerStep,
    gpuMsPerStep: r.gpuMsPerStep,
    buffersCreatedPerStep: r.buffersCreatedPerStep,
    bindGroupsCreatedPerStep: r.bindGroupsCreatedPerStep,
    submitsPerStep: r.submitsPerStep,
    readbacks: r.readbacks,
    relRms: r.relRms,
    baseline: r.baseline ?? { hostUsPerStep: { median: NaN }, buffersCreatedPerStep: NaN },
    details: {
      layerKinds: r.layerKinds,
      prompts: r.prompts,
      warmupSteps: r.warmupSteps,
      bindGroupsWarmup: r.bindGroupsWarmup,
      hostUsBreakdown: r.hostUsBreakdown,
      hostUsPerLayer: perLayer,
      questSelections: r.questSelections,
      questMargin: r.questMargin,
      windowPagesReleased: r.windowPagesReleased,
      targets: {
        buffers0: r.buffersCreatedPerStep === 0,
        bindGroups0: r.bindGroupsCreatedPerStep === 0,
        readbacks0: r.readbacks === 0,
        submits1: r.submitsPerStep === 1,
        hostUsPerLayerAtMost50: perLayer <= 50,
        relRmsAtMost1e5: r.relRms <= 1e-5,
      },
      gpuTiming:
        'wall time from submit to onSubmittedWorkDone of one decode step submitted alone (no timestamp queries)',
      loadAverage,
    },
  };
}

/** Runs the suite from CLI arguments. */
export async function runEngineBench(argv: string[]): Promise<void> {
  const cmd = new Command('engine')
    .option('--steps <n>', 'decode steps', '64')
    .option('--small', 'short prompts and 8-token pages (as the example test)')
    .option('--no-baseline', "skip today's way (a new decode plan per step)")
    .option('--no-mirror', 'skip the float64 mirror (relRms NaN)')
    .option('--json <file>', 'write the JSON here')
    .exitOverride();
  cmd.parse(argv, { from: 'user' });
  const o = cmd.opts<{ steps: string; small?: boolean; baseline: boolean; mirror: boolean; json?: string }>();
  const steps = intOption(o.steps, '--steps', { min: 2 });
  const dev = await benchDevice();
  try {
    const r = await runEngine({
      small: o.small ?? false,
      device: dev.device,
      config: { steps },
      baseline: o.baseline,
      skipMirror: !o.mirror,
    });
    console.error(summary(r));
    const json = engineBenchJson(r);
    const text = JSON.stringify(json, null, 2);
    if (o.json) writeFileSync(o.json, text + '\n');
    console.log(text);
  } finally {
    dev.destroy();
  }
}
