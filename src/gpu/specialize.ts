/**
 * Module-scope WGSL `const` declarations from typed values: the one place a kernel's program gets
 * a compile-time constant that cannot be an `override` (a private array's length, which WGSL
 * needs as a creation-time constant). Declared once per program family, as data, like uniforms
 * (`uniformLayout`): the values are checked against their types, and `tag` names the variant in
 * the program's name (so in the pipeline key). Everything else a variant changes is an
 * `override` constant in `PipelineSpec.constants`.
 *
 * @example
 * const STATE = wgslConstants({ KMAX: 'u32', ZMAX: 'u32' });
 * wgslProgram(`linear/scan/${STATE.tag({ KMAX: 64, ZMAX: 1 })}`, [STATE.wgsl({ KMAX: 64, ZMAX: 1 }), scanWgsl]);
 * // const KMAX: u32 = 64u; const ZMAX: u32 = 1u;
 */
import { TesseraError } from '../errors.js';

export type ConstType = 'u32' | 'i32' | 'f32' | 'bool';
type ValueOf<T extends ConstType> = T extends 'bool' ? boolean : number;

export interface WgslConstants<F extends Readonly<Record<string, ConstType>>> {
  readonly fields: F;
  /** The declarations, one `const NAME: T = value;` line per field in declaration order. */
  wgsl(values: { readonly [K in keyof F]: ValueOf<F[K]> }): string;
  /** A short stable name of the values (`KMAX64.ZMAX1`), for program names. */
  tag(values: { readonly [K in keyof F]: ValueOf<F[K]> }): string;
}

function literal(name: string, t: ConstType, v: unknown): string {
  const bad = (why: string) =>
    new TesseraError('E_STATE', `WGSL constant ${name}: ${String(v)} ${why}`, { argument: name, actual: v });
  if (t === 'bool') {
    if (typeof v !== 'boolean') throw bad('is not a boolean');
    return String(v);
  }
  if (typeof v !== 'number' || !Number.isFinite(v)) throw bad('is not a finite number');
  if (t === 'f32') {
    if (!Number.isFinite(Math.fround(v))) throw bad('does not fit in f32');
    const s = String(Math.fround(v));
    return /[.e]/.test(s) ? `${s}f` : `${s}.0f`;
  }
  if (!Number.isInteger(v)) throw bad(`is not an integer (${t})`);
  if (t === 'u32' && (v < 0 || v > 0xffffffff)) throw bad('does not fit in u32');
  if (t === 'i32' && (v < -0x80000000 || v > 0x7fffffff)) throw bad('does not fit in i32');
  return t === 'u32' ? `${v}u` : `${v}i`;
}

/** Declares the `const` specialisations of a program family (see the file header). */
export function wgslConstants<const F extends Readonly<Record<string, ConstType>>>(fields: F): WgslConstants<F> {
  const names = Object.keys(fields);
  for (const n of names)
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(n)) throw new TesseraError('E_STATE', `"${n}" is not a WGSL identifier`);
  const cache = new Map<string, string>();
  return {
    fields,
    wgsl(values) {
      const v = values as Readonly<Record<string, unknown>>;
      const key = names.map((n) => String(v[n])).join(',');
      let text = cache.get(key);
      if (text === undefined) {
        text = names.map((n) => `const ${n}: ${fields[n]} = ${literal(n, fields[n]!, v[n])};\n`).join('');
        cache.set(key, text);
      }
      return text;
    },
    tag(values) {
      const v = values as Readonly<Record<string, unknown>>;
      return names.map((n) => `${n}${typeof v[n] === 'boolean' ? +(v[n] as boolean) : String(v[n])}`).join('.');
    },
  };
}
