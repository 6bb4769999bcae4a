/**
 * The last tensor one argument of a plan's `run` validated: an engine that passes the same tensor
 * object every step, unchanged (same buffer, offset, dtype and shape values), skips re-validating
 * it, with no allocation. A GPUBuffer's size and usage never change, so the checks that read them
 * would pass again; destruction can happen at any time and is checked on every hit. Anything else
 * (another object, a changed field) is validated in full by the caller.
 */
import { bufferProblem } from './gpu/buffers.js';
import type { GpuTensor } from './tensor.js';

export class TensorMemo {
  private tensor: GpuTensor | undefined;
  private buffer: GPUBuffer | undefined;
  private offset: number | undefined;
  private dtype: string | undefined;
  private shape: readonly number[] | undefined;
  private dims: number[] = [];

  /** Whether `t` is the tensor last remembered here, with every field as it was and its buffer live. */
  hit(t: unknown): t is GpuTensor {
    const x = t as GpuTensor | undefined;
    if (x === undefined || x !== this.tensor) return false;
    if (x.buffer !== this.buffer || x.offset !== this.offset || x.dtype !== this.dtype || x.shape !== this.shape)
      return false;
    const s = x.shape;
    const d = this.dims;
    if (s.length !== d.length) return false;
    for (let i = 0; i < d.length; i++) if (s[i] !== d[i]) return false;
    return bufferProblem(x.buffer) === null;
  }

  /** Remembers `t` after it passed its checks. */
  remember(t: GpuTensor): void {
    this.tensor = t;
    this.buffer = t.buffer;
    this.offset = t.offset;
    this.dtype = t.dtype;
    this.shape = t.shape;
    this.dims = [...t.shape];
  }

  /** Forgets the tensor (a plan whose checks depend on more than the tensor calls this when that changes). */
  clear(): void {
    this.tensor = undefined;
  }
}
