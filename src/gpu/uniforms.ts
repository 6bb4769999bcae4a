/**
 * Uniform blocks declared once, as data: the WGSL struct text and the host-side packing both come
 * from the same field list, so a uniform is never described in two places.
 *
 * @example
 * const PARAMS = uniformLayout('Params', [['T', 'u32'], ['scale', 'f32']] as const);
 * const program = wgslProgram('x', [PARAMS.wgsl, kernelWgsl]); // kernel reads `params.T`
 * device.queue.writeBuffer(buf, 0, PARAMS.pack({ T: 300, scale: 0.125 }));
 */
import { TesseraError } from '../errors.js';

export type ScalarType = 'u32' | 'i32' | 'f32';

export interface UniformLayout<K extends string> {
  readonly name: string;
  readonly fields: readonly (readonly [K, ScalarType])[];
  /** The WGSL struct declaration. */
  readonly wgsl: string;
  /** Size in bytes (a multiple of 16). */
  readonly size: number;
  pack(values: Readonly<Record<K, number>>): ArrayBuffer;
}

export function uniformLayout<K extends string>(
  name: string,
  fields: readonly (readonly [K, ScalarType])[],
): UniformLayout<K> {
  const size = Math.max(16, Math.ceil((fields.length * 4) / 16) * 16);
  const wgsl = `struct ${name} {\n${fields.map(([k, t]) => `  ${k}: ${t},`).join('\n')}\n}\n`;
  return {
    name,
    fields,
    wgsl,
    size,
    pack(values) {
      const buf = new ArrayBuffer(size);
      const dv = new DataView(buf);
      fields.forEach(([k, t], i) => {
        const v = values[k];
        if (typeof v !== 'number' || Number.isNaN(v))
          throw new TesseraError('E_STATE', `uniform ${name}.${k} is not set`, { actual: v });
        // A value the field's type cannot hold is an error, never a silent Inf, NaN or wrap-around
        // (plans validate their options first and name them; this is the backstop).
        if (t === 'f32') {
          if (Number.isFinite(v) && !Number.isFinite(Math.fround(v)))
            throw new TesseraError('E_LIMIT', `uniform ${name}.${k} = ${v} does not fit in f32`, { actual: v });
          dv.setFloat32(i * 4, v, true);
        } else if (t === 'i32') {
          if (v < -0x80000000 || v > 0x7fffffff || !Number.isInteger(v))
            throw new TesseraError('E_LIMIT', `uniform ${name}.${k} = ${v} does not fit in i32`, { actual: v });
          dv.setInt32(i * 4, v, true);
        } else {
          if (v < 0 || v > 0xffffffff || !Number.isInteger(v))
            throw new TesseraError('E_LIMIT', `uniform ${name}.${k} = ${v} does not fit in u32`);
          dv.setUint32(i * 4, v, true);
        }
      });
      return buf;
    },
  };
}
