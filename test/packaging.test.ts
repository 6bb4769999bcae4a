/**
 * Issue 12, class 14: a device made from the `webgpu` package WITHOUT installing its globals
 * (GPUBufferUsage, GPUMapMode, GPUShaderStage do not exist) works through `wrapDevice`: the
 * library uses its own flag constants (src/gpu/flags.ts). Runs test/fixtures/no-globals.mts in a
 * fresh process (this one has the globals) and checks its dense attention against float64.
 * (`scripts/pack-check.sh`, run by .ci/run, checks the packed and installed CLI.)
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SWIFTSHADER_ICD_PATHS } from '../src/gpu/node.js';
import { TOLERANCE } from '../src/testing.js';

const ROOT = resolve(__dirname, '..');

describe('packaging', () => {
  it('a webgpu device without the WebGPU globals runs attention through wrapDevice', () => {
    const env: NodeJS.ProcessEnv = { ...process.env };
    if (!env.XDG_RUNTIME_DIR) {
      env.XDG_RUNTIME_DIR = `/tmp/tessera-xdg-${process.getuid?.() ?? 0}`;
      mkdirSync(env.XDG_RUNTIME_DIR, { recursive: true, mode: 0o700 });
    }
    if (env.TESSERA_ADAPTER === 'llvmpipe') env.EGL_PLATFORM ??= 'surfaceless';
    else if (!env.VK_ICD_FILENAMES) {
      const icd = SWIFTSHADER_ICD_PATHS.find((p) => existsSync(p));
      if (icd) env.VK_ICD_FILENAMES = icd;
    }
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/fixtures/no-globals.mts'], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 180_000,
      env,
    });
    expect(r.status, r.stderr.slice(-3000)).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { relRms: number };
    expect(out.relRms).toBeLessThan(TOLERANCE.f32.relRms);
  }, 200_000);
});
