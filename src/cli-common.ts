import { TesseraError } from './errors.js';
import { adapterFromEnv, requestDevice, type TesseraDevice } from './gpu/device.js';

export interface DeviceCliOptions {
  adapter?: string;
  dawnFlag?: string[];
}

/** The device for a CLI command: `--adapter`, else `TESSERA_ADAPTER`, else auto. */
export async function cliDevice(opts: DeviceCliOptions): Promise<TesseraDevice> {
  const env = adapterFromEnv();
  const adapter = (opts.adapter ?? env.adapter) as 'auto' | 'swiftshader' | 'llvmpipe';
  return requestDevice({
    adapter,
    dawnFlags: [...(env.dawnFlags ?? []), ...(opts.dawnFlag ?? [])],
    label: 'tessera-cli',
  });
}

/**
 * Parses a list option such as `--T 512,1024,2048`: every entry an integer in `[min, max]`
 * (default `[1, 2^32 - 1]`). Anything else (`0`, `-5`, `abc`, `1.5`, an empty entry) is an `E_ARG`
 * naming the option, which the CLI prints as `tessera: --T: ...` (no stack trace, exit 2).
 *
 * @example
 * intList('512,1024', '--T'); // [512, 1024]
 */
export function intList(s: unknown, option: string, opts: { min?: number; max?: number } = {}): number[] {
  const min = opts.min ?? 1;
  const max = opts.max ?? 0xffffffff;
  const text = String(s ?? '');
  const parts = text.split(',').map((x) => x.trim().replace(/_/g, ''));
  return parts.map((x) => {
    const n = x === '' ? NaN : Number(x);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new TesseraError(
        'E_ARG',
        `${option}: "${text}" is not ${parts.length > 1 ? 'a list of integers' : 'an integer'} in [${min}, ${max}]`,
        { argument: option, actual: text, expected: `integers in [${min}, ${max}]` },
      );
    }
    return n;
  });
}

/** One integer option (`--runs 5`): as {@link intList}, exactly one entry. */
export function intOption(s: unknown, option: string, opts: { min?: number; max?: number } = {}): number {
  const list = intList(s, option, opts);
  if (list.length !== 1)
    throw new TesseraError('E_ARG', `${option}: "${String(s)}" is a list; one integer expected`, {
      argument: option,
      actual: s,
    });
  return list[0]!;
}

/**
 * Imports an optional package (a devDependency that an installed tessera does not bring along:
 * the TensorFlow.js baseline, the Vega plots of `bench`). Missing, it is an `E_UNSUPPORTED`
 * naming the option that needs it and how to get it, instead of a module-resolution stack trace.
 *
 * @example
 * const vega = await optionalImport<typeof import('vega')>('vega', '--write (the SVG plots)', '--no-write');
 */
export async function optionalImport<T>(name: string, purpose: string, instead: string): Promise<T> {
  try {
    return (await import(name)) as T;
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') throw e;
    throw new TesseraError(
      'E_UNSUPPORTED',
      `${purpose} needs the optional package "${name}", which is not installed (npm install ${name}), or pass ${instead}`,
      { argument: purpose.split(' ')[0], cause: e },
    );
  }
}
