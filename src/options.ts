/**
 * One name per concept across the plan options (see "Names" in docs/design.md). Where a family
 * used another name for a concept, the old name stays accepted as a deprecated alias; this module
 * resolves the pair in one place so every family reports a conflict the same way.
 */
import { fail } from './errors.js';
import type { AdapterClass } from './gpu/adapter.js';

/**
 * Kernel shape of a plan, option `target` in every family: `'cpu'` (an invocation per row, no
 * barriers: CPU adapters), `'gpu'` (a workgroup per row), `'auto'` (by adapter class; the default).
 */
export type KernelTarget = 'auto' | 'cpu' | 'gpu';

/**
 * The value of option `name`, or of its deprecated `alias` when `name` is absent. Both given with
 * different values is an `E_ARG` error naming both.
 */
export function aliasedOption<V>(opts: object, name: string, alias: string): V | undefined {
  const o = opts as Record<string, unknown>;
  const value = o[name];
  const old = o[alias];
  if (value !== undefined && old !== undefined && value !== old)
    fail(
      'E_ARG',
      name,
      `differs from its deprecated alias ${alias} (${String(old)});`,
      value,
      `only ${name}, or equal values`,
    );
  return (value ?? old) as V | undefined;
}

/**
 * The name the user gave the option under: `alias` when only the deprecated alias is set, else
 * `name`. Errors about the value name this, so they name what the caller wrote.
 */
export function optionName(opts: object, name: string, alias: string): string {
  const o = opts as Record<string, unknown>;
  return o[name] === undefined && o[alias] !== undefined ? alias : name;
}

/**
 * Option `target` (deprecated alias `variant`), default `'auto'`, checked: `E_ARG` naming the
 * option as given for any other value than `'auto'`, `'cpu'` or `'gpu'`.
 */
export function kernelTarget(opts: { target?: KernelTarget; variant?: KernelTarget }): KernelTarget {
  const target = aliasedOption<KernelTarget>(opts, 'target', 'variant') ?? 'auto';
  if (target !== 'auto' && target !== 'cpu' && target !== 'gpu')
    fail('E_ARG', optionName(opts, 'target', 'variant'), 'invalid value;', target, '"auto", "cpu" or "gpu"');
  return target;
}

/**
 * The kernel shape a plan runs for option `target`: `'cpu'` or `'gpu'` as given, and `'auto'`
 * (the default) by the device's adapter class.
 *
 * @example
 * resolveTarget(ctx, 'auto'); // 'cpu' on SwiftShader
 */
export function resolveTarget(
  ctx: { readonly adapterClass: AdapterClass },
  target: KernelTarget = 'auto',
): 'cpu' | 'gpu' {
  return target === 'auto' ? ctx.adapterClass : target;
}
