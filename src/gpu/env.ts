/**
 * The device options Tessera takes from environment variables, in one place and only on request:
 * `requestDevice` never reads the environment; tests, benchmarks and the CLI call
 * {@link adapterFromEnv} and pass the result on. (src/gpu/node.ts sets the variables Dawn's
 * loaders need, `VK_ICD_FILENAMES` and the like, when it creates the Node GPU.)
 */
import type { RequestDeviceOptions } from './device.js';

/**
 * Device options from the environment, for tests, benchmarks and the CLI only:
 * `TESSERA_ADAPTER` = `auto` | `swiftshader` | `llvmpipe`, `TESSERA_DAWN_FLAGS` (comma list),
 * `TESSERA_LOOP_LIMIT` (run the suite with llvmpipe's loop cap, or a smaller one, on any adapter)
 * and `TESSERA_COMPILE` = `sync` | `async` (how pipelines compile, see `RequestDeviceOptions.compile`).
 */
export function adapterFromEnv(
  env: Record<string, string | undefined> = (globalThis as { process?: { env: Record<string, string | undefined> } })
    .process?.env ?? {},
): RequestDeviceOptions {
  const a = env.TESSERA_ADAPTER;
  const adapter = a === 'swiftshader' || a === 'llvmpipe' ? a : 'auto';
  const dawnFlags = env.TESSERA_DAWN_FLAGS ? env.TESSERA_DAWN_FLAGS.split(',').filter(Boolean) : undefined;
  const opts: RequestDeviceOptions = { adapter, dawnFlags };
  if (env.TESSERA_LOOP_LIMIT) opts.loopLimit = Number(env.TESSERA_LOOP_LIMIT);
  const c = env.TESSERA_COMPILE;
  if (c === 'sync' || c === 'async') opts.compile = c;
  return opts;
}
