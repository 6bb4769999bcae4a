/**
 * Padded copies for dense attention on the attention core (kernels/attention), which reads q/o in
 * groups of 4 channels and K/V as 16-byte words. Where a head dim is not a multiple of 4 (q/k: D,
 * v/o: Dv), or f16/bf16 K or V do not end on a 16-byte word, the plan allocates padded workspaces
 * once (`q' [Tq, Hq, D4]`, `k' [Tk, Hkv, D4]`, `v' [Tk, Hkv, Dv4]`, `o' [Tq, Hq, Dv4]`, D4 = D
 * rounded up to 4, each rounded up to 16 bytes); `stage` encodes row copies into them before the
 * core (zero channels past D: q . k and p . v are unchanged) and `finish` copies o' back to o
 * after it. Cost: one extra read and write of the padded tensors per run, only for those shapes.
 */
import type { TesseraDevice } from '../../src/gpu/device.js';
import { GroupCache, bindingTable, registerPasses, type VariantOf } from '../../src/gpu/bindings.js';
import { getPipeline, grid2d, wgslProgram, type PipelineSpec } from '../../src/gpu/pipeline.js';
import { uniformLayout } from '../../src/gpu/uniforms.js';
import { GPUBufferUsageFlags } from '../../src/gpu/flags.js';
import { byteSize, type FloatDType, type GpuTensor } from '../../src/tensor.js';
import padWgsl from './pad.wgsl.js';
import type { ResolvedAttention } from './options.js';

export const PAD_PARAMS = uniformLayout('PadParams', [
  ['words', 'u32'],
  ['elems', 'u32'],
  ['src_stride', 'u32'],
  ['dst_stride', 'u32'],
  ['width', 'u32'],
] as const);

const WG = 64;
const PROGRAM = wgslProgram('dense/pad', [PAD_PARAMS.wgsl, padWgsl]);
const PAD = bindingTable('dense/pad', { src: 'read', dst: 'rw', params: 'uniform' });

/** The row copy's pipeline spec: 32-bit elements, or 16-bit ones (`half`, two per word). */
export function padSpec(half: boolean): PipelineSpec<VariantOf<typeof PAD>> {
  return { shader: PROGRAM, bindings: PAD.variant({}), constants: { WG, HALF: half } };
}
registerPasses('dense/pad', () => [padSpec(false), padSpec(true)]);

/** A head dim rounded up to a multiple of 4 (the core's channel groups). */
export function dim4(d: number): number {
  return Math.ceil(d / 4) * 4;
}

/** Which tensors of a dense call go through padded workspaces, and the head dims the core runs. */
export interface PadLayout {
  D4: number;
  Dv4: number;
  q: boolean;
  k: boolean;
  v: boolean;
  o: boolean;
}

/**
 * The copies a dense call over `keys` K/V rows needs: q and k where D % 4 != 0, v and o where
 * Dv % 4 != 0, and k (v) also where f16/bf16 K (V) end inside a 16-byte word.
 *
 * @example
 * padLayout({ D: 6, Dv: 8, Hkv: 1, dtype: 'f32' }, 100); // { D4: 8, Dv4: 8, q: true, k: true, v: false, o: false }
 */
export function padLayout(r: Pick<ResolvedAttention, 'D' | 'Dv' | 'Hkv' | 'dtype'>, keys: number): PadLayout {
  const D4 = dim4(r.D);
  const Dv4 = dim4(r.Dv);
  const eb = r.dtype === 'f32' ? 4 : 2;
  const whole = (d: number) => (keys * r.Hkv * d * eb) % 16 === 0;
  return { D4, Dv4, q: D4 !== r.D, k: D4 !== r.D || !whole(r.D), v: Dv4 !== r.Dv || !whole(r.Dv), o: Dv4 !== r.Dv };
}

/** One planned row copy: its pipeline, bind groups, uniform and size. */
interface Copy {
  groups: GroupCache;
  params: GPUBuffer;
  words: number;
  /** The workspace (the source of o's copy back, the destination of the others). */
  ws: GpuTensor;
}

/** The tensors the core runs on: workspaces where padded, else the caller's. */
export interface CoreIo {
  q: GpuTensor;
  k: GpuTensor;
  v: GpuTensor;
  o: GpuTensor;
}

/**
 * The padded workspaces and copies of one dense plan (see the file comment). Created by the plan
 * (`DensePad.create`, undefined where nothing needs a copy) and disposed with it.
 */
export class DensePad {
  readonly layout: PadLayout;
  private readonly owned: GPUBuffer[] = [];
  private readonly copies: { q?: Copy; k?: Copy; v?: Copy; o?: Copy } = {};
  /** What `stage` returns (one object, refilled per run). */
  private readonly io: CoreIo;

  private constructor(
    private readonly ctx: TesseraDevice,
    layout: PadLayout,
  ) {
    this.layout = layout;
    this.io = {} as CoreIo;
  }

  /**
   * Plans the copies of a call with `rowsQ` query tokens and `rowsK` keys (compiles the row copy,
   * allocates the workspaces and their uniforms); `undefined` where the core takes the tensors
   * as they are.
   */
  static async create(
    ctx: TesseraDevice,
    r: ResolvedAttention,
    rowsQ: number,
    rowsK: number,
  ): Promise<DensePad | undefined> {
    const L = padLayout(r, rowsK);
    if (!L.q && !L.k && !L.v && !L.o) return undefined;
    const pad = new DensePad(ctx, L);
    try {
      // one bind-group cache per row copy pipeline (32-bit or 16-bit elements)
      const groups = new Map<boolean, GroupCache>();
      const cache = async (half: boolean): Promise<GroupCache> => {
        let g = groups.get(half);
        if (!g) groups.set(half, (g = new GroupCache(ctx.device, await getPipeline(ctx, padSpec(half)))));
        return g;
      };
      // src_stride -> dst_stride over `rows` rows of `width` elements kept, in `dtype`
      const plan = async (rows: number, shape: number[], dtype: FloatDType, src: number, dst: number) => {
        const half = dtype !== 'f32';
        const elems = rows * dst;
        const words = half ? Math.ceil(elems / 2) : elems;
        const wsShape = [shape[0]!, shape[1]!, Math.max(src, dst)];
        const bytes = Math.ceil(byteSize(wsShape, dtype) / 16) * 16;
        const buffer = pad.buffer(bytes, 'dense.pad');
        const params = pad.uniform({ words, elems, src_stride: src, dst_stride: dst, width: Math.min(src, dst) });
        return { groups: await cache(half), params, words, ws: { buffer, shape: wsShape, dtype } };
      };
      const { D4, Dv4 } = L;
      if (L.q) pad.copies.q = await plan(rowsQ * r.Hq, [rowsQ, r.Hq], r.dtype, r.D, D4);
      if (L.k) pad.copies.k = await plan(rowsK * r.Hkv, [rowsK, r.Hkv], r.dtype, r.D, D4);
      if (L.v) pad.copies.v = await plan(rowsK * r.Hkv, [rowsK, r.Hkv], r.dtype, r.Dv, Dv4);
      if (L.o) pad.copies.o = await plan(rowsQ * r.Hq, [rowsQ, r.Hq], r.outDtype, Dv4, r.Dv);
    } catch (e) {
      pad.dispose();
      throw e;
    }
    return pad;
  }

  private buffer(size: number, label: string): GPUBuffer {
    const b = this.ctx.createBuffer({
      size: Math.max(16, size),
      usage: GPUBufferUsageFlags.STORAGE | GPUBufferUsageFlags.COPY_SRC | GPUBufferUsageFlags.COPY_DST,
      label: `tessera.${label}`,
    });
    this.owned.push(b);
    return b;
  }

  private uniform(values: Record<(typeof PAD_PARAMS.fields)[number][0], number>): GPUBuffer {
    const b = this.ctx.createBuffer({
      size: PAD_PARAMS.size,
      usage: GPUBufferUsageFlags.UNIFORM | GPUBufferUsageFlags.COPY_DST,
      label: `tessera.${PAD_PARAMS.name}`,
    });
    this.owned.push(b);
    this.ctx.device.queue.writeBuffer(b, 0, PAD_PARAMS.pack(values));
    return b;
  }

  /**
   * Encodes the copies of q, k, v into their workspaces (one compute pass) and returns the
   * tensors the core runs on (the workspaces, and the caller's tensors where none is needed; o:
   * its workspace, copied back by {@link finish}). The plan has checked the tensors (`checkTensor`:
   * their buffers hold whole 4-byte words, so a 16-bit tensor of an odd element count is bound
   * with the half-word after it, which the copy back keeps). Creates no buffer; bind groups are
   * cached.
   */
  stage(encoder: GPUCommandEncoder, t: CoreIo): CoreIo {
    const c = this.copies;
    const io = this.io;
    io.q = c.q ? c.q.ws : t.q;
    io.k = c.k ? c.k.ws : t.k;
    io.v = c.v ? c.v.ws : t.v;
    io.o = c.o ? c.o.ws : t.o;
    if (c.q || c.k || c.v) {
      const pass = encoder.beginComputePass({ label: 'dense/pad' });
      if (c.q) this.copy(pass, c.q, t.q, c.q.ws);
      if (c.k) this.copy(pass, c.k, t.k, c.k.ws);
      if (c.v) this.copy(pass, c.v, t.v, c.v.ws);
      pass.end();
    }
    return io;
  }

  /** Encodes the copy of the padded o back into the caller's `o` (nothing where o is not padded). */
  finish(encoder: GPUCommandEncoder, o: GpuTensor): void {
    const c = this.copies.o;
    if (!c) return;
    const pass = encoder.beginComputePass({ label: 'dense/unpad' });
    this.copy(pass, c, c.ws, o);
    pass.end();
  }

  private copy(pass: GPUComputePassEncoder, c: Copy, src: GpuTensor, dst: GpuTensor): void {
    const g = c.groups
      .set('src', src.buffer, src.offset ?? 0, Math.max(4, byteSize(src.shape, src.dtype)))
      .set('dst', dst.buffer, dst.offset ?? 0, Math.max(4, byteSize(dst.shape, dst.dtype)))
      .set('params', c.params);
    pass.setPipeline(g.pipeline);
    pass.setBindGroup(0, g.group());
    pass.dispatchWorkgroups(...grid2d(this.ctx, Math.ceil(c.words / WG)));
  }

  /** Frees the workspaces and uniforms. Idempotent. */
  dispose(): void {
    for (const b of this.owned) this.ctx.destroyBuffer(b);
    this.owned.length = 0;
  }
}
