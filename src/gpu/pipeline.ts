/**
 * Pipeline cache and bind-group layouts declared as data.
 *
 * A kernel describes its pipeline with a {@link PipelineSpec}: the shader (a module built from
 * WGSL files), the entry point, its bindings (a binding-table variant, src/gpu/bindings.ts, bound
 * by name; or the older positional list of kinds), and its `override` constants. The cache key
 * is a pure function of the spec (`pipelineKey`), so equal specs share one compiled pipeline per
 * device, and anything that changes the compiled code must be in the spec.
 *
 * What goes where (as ONNX Runtime's `types.ts` writes down):
 * - shader-cache key: storage dtypes, head dim, tile sizes, workgroup size, flags (causal,
 *   window on/off), subgroup use: everything passed as `override` constants or chosen by name.
 * - uniforms: sizes that vary per call without changing code (T, number of sequences, strides,
 *   scale, window length). They are written into a uniform buffer in `plan`.
 */
import { TesseraError } from '../errors.js';
import type { TesseraDevice } from './device.js';
import { GPUShaderStageFlags } from './flags.js';
import {
  bindingMismatches,
  GroupCache,
  isBindingVariant,
  type BindingEntries,
  type BindingResources,
  type BindingTable,
  type BindingVariant,
  type VariantOf,
} from './bindings.js';

/** A WGSL program: one or more WGSL files concatenated in order, with a stable name. */
export interface ShaderSource {
  /** Unique and stable, e.g. `dense/prefill`. */
  readonly name: string;
  readonly code: string;
  /** WGSL `enable` directives the code needs (`f16`, `subgroups`). */
  readonly enables?: readonly string[];
}

/** Concatenates WGSL files into one program (shared `shaders/` first, then the kernel's own). */
export function wgslProgram(name: string, files: readonly string[], enables: readonly string[] = []): ShaderSource {
  const head = enables.map((e) => `enable ${e};\n`).join('');
  return { name, code: head + files.join('\n'), enables };
}

/** How a binding is used: read-only storage, read-write storage, or a uniform buffer. */
export type BindingKind = 'read' | 'rw' | 'uniform';

/** Group-0 bindings of a spec: a binding-table variant (src/gpu/bindings.ts) or, in the older
 * positional form, the kinds in binding order. */
export type PipelineBindings = readonly BindingKind[] | BindingVariant<any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export interface PipelineSpec<B extends PipelineBindings = PipelineBindings> {
  shader: ShaderSource;
  entryPoint?: string;
  /** Bindings of group 0: a binding-table variant, or the kinds in binding order. */
  bindings: B;
  /** `override` constants. Must include everything that makes this pipeline differ. */
  constants?: Readonly<Record<string, number | boolean>>;
}

/** A pipeline of a binding table's pass (its bind groups are keyed by the table's names). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type TablePipeline<T extends BindingTable<any>> = Pipeline<VariantOf<T>>;

export interface Pipeline<B extends PipelineBindings = PipelineBindings> {
  readonly pipeline: GPUComputePipeline;
  readonly layout: GPUBindGroupLayout;
  readonly spec: PipelineSpec<B>;
  readonly key: string;
  /** Milliseconds spent compiling, 0 when it came from the cache. */
  readonly compileMs: number;
}

function hash(s: string): string {
  let h1 = 0x811c9dc5;
  let h2 = 0x1000193;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = Math.imul(h2 + c, 0x5bd1e995) ^ (h2 >>> 13);
  }
  return (h1 >>> 0).toString(16).padStart(8, '0') + (h2 >>> 0).toString(16).padStart(8, '0');
}

const codeHash = new Map<string, string>();
function hashCode(code: string): string {
  let h = codeHash.get(code);
  if (!h) {
    h = hash(code);
    codeHash.set(code, h);
  }
  return h;
}

/** The cache key of a spec: shader name and code hash, entry point, bindings, sorted constants. */
export function pipelineKey(spec: PipelineSpec): string {
  const c = spec.constants ?? {};
  const consts = Object.keys(c)
    .sort()
    .map((k) => `${k}=${Number(c[k])}`)
    .join(',');
  const shader = pipelineShader(spec);
  return `${shader.name}@${hashCode(shader.code)}|${spec.entryPoint ?? 'main'}|${bindingsKey(spec.bindings)}|${consts}`;
}

function bindingsKey(b: PipelineBindings): string {
  return isBindingVariant(b) ? b.key : b.join('');
}

/**
 * The WGSL a spec compiles: its shader, plus the generated declarations of a binding-table
 * variant's optional bindings (src/gpu/bindings.ts).
 */
export function pipelineShader(spec: PipelineSpec): ShaderSource {
  const b = spec.bindings;
  if (!isBindingVariant(b) || !b.wgsl) return spec.shader;
  return { ...spec.shader, name: `${spec.shader.name}+${b.key}`, code: `${spec.shader.code}\n${b.wgsl}` };
}

/** Override constants as WebGPU takes them: numbers (a boolean override is 1 or 0). */
function overrideValues(c: PipelineSpec['constants']): Record<string, number> | undefined {
  if (!c) return undefined;
  return Object.fromEntries(Object.entries(c).map(([k, v]) => [k, Number(v)]));
}

let totalCompileMs = 0;
/** Total milliseconds spent compiling pipelines in this process (reported by benchmarks). */
export function compileTimeMs(): number {
  return totalCompileMs;
}

const compiles: { key: string; ms: number }[] = [];
/** Every pipeline compiled in this process, in order, with its key and compile time (test reports). */
export function compileLog(): readonly { key: string; ms: number }[] {
  return compiles;
}

function layoutFor(ctx: TesseraDevice, spec: PipelineBindings): GPUBindGroupLayout {
  const bindings = isBindingVariant(spec)
    ? spec.bound
    : spec.map((kind, binding) => ({ kind, binding, name: String(binding) }));
  const key = `layout|${bindings.map((b) => `${b.binding}${b.kind === 'read' ? 'r' : b.kind === 'rw' ? 'w' : 'u'}`).join('')}`;
  let l = ctx.cache.get(key) as GPUBindGroupLayout | undefined;
  if (!l) {
    const storageCount = bindings.filter((b) => b.kind !== 'uniform').length;
    if (storageCount > ctx.limits.maxStorageBuffersPerShaderStage) {
      throw new TesseraError(
        'E_LIMIT',
        `a pipeline needs ${storageCount} storage buffers; the device allows ${ctx.limits.maxStorageBuffersPerShaderStage}`,
      );
    }
    l = ctx.device.createBindGroupLayout({
      label: key,
      entries: bindings.map((b) => ({
        binding: b.binding,
        visibility: GPUShaderStageFlags.COMPUTE,
        buffer: { type: b.kind === 'read' ? 'read-only-storage' : b.kind === 'rw' ? 'storage' : 'uniform' },
      })),
    });
    ctx.cache.set(key, l);
  }
  return l;
}

async function moduleFor(ctx: TesseraDevice, shader: ShaderSource): Promise<GPUShaderModule> {
  const key = `module|${shader.name}@${hashCode(shader.code)}`;
  let m = ctx.cache.get(key) as GPUShaderModule | undefined;
  if (!m) {
    // Compile errors surface here as a captured validation error, never an uncaptured one.
    ctx.device.pushErrorScope('validation');
    const mod = ctx.device.createShaderModule({ label: shader.name, code: shader.code });
    const err = await ctx.raceLost(ctx.device.popErrorScope());
    if (err) {
      let detail = '';
      try {
        const info = await mod.getCompilationInfo();
        detail = info.messages
          .filter((x) => x.type === 'error')
          .map((x) => `${x.lineNum}:${x.linePos} ${x.message}`)
          .join('; ');
      } catch {
        /* no compilation info */
      }
      throw new TesseraError('E_GPU_VALIDATION', `shader ${shader.name} failed to compile: ${detail || err.message}`);
    }
    m = mod;
    ctx.cache.set(key, m);
  }
  return m;
}

/**
 * A pipeline compiled inline (the device's `compile: 'sync'`): a validation error rejects, as the
 * async call's does.
 */
async function createSync(ctx: TesseraDevice, desc: GPUComputePipelineDescriptor): Promise<GPUComputePipeline> {
  ctx.device.pushErrorScope('validation');
  const pipeline = ctx.device.createComputePipeline(desc);
  const err = await ctx.device.popErrorScope();
  if (err) throw new Error(err.message);
  return pipeline;
}

const inflight = new WeakMap<TesseraDevice, Map<string, Promise<Pipeline>>>();

/**
 * Returns the compiled pipeline for `spec`, compiling it once per device. Compilation errors
 * become `E_GPU_VALIDATION` errors that quote the WGSL compiler's messages.
 */
export async function getPipeline<B extends PipelineBindings>(
  ctx: TesseraDevice,
  spec: PipelineSpec<B>,
): Promise<Pipeline<B>> {
  const key = pipelineKey(spec);
  const hit = ctx.cache.get(key) as Pipeline<B> | undefined;
  if (hit) return { ...hit, compileMs: 0 };
  let pending = inflight.get(ctx);
  if (!pending) inflight.set(ctx, (pending = new Map()));
  const running = pending.get(key) as Promise<Pipeline<B>> | undefined;
  if (running) return running;
  const p = (async () => {
    const t0 = performance.now();
    const shader = pipelineShader(spec);
    if (isBindingVariant(spec.bindings)) {
      // the table and the WGSL must agree (names, numbers, access); checked once per compile
      const problems = bindingMismatches(spec.bindings, shader.code);
      if (problems.length)
        throw new TesseraError('E_GPU_VALIDATION', `pipeline ${shader.name}: ${problems.join('; ')}`);
    }
    const layout = layoutFor(ctx, spec.bindings);
    const module = await moduleFor(ctx, shader);
    let pipeline: GPUComputePipeline;
    const desc: GPUComputePipelineDescriptor = {
      label: key.slice(0, 120),
      layout: ctx.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: spec.entryPoint ?? 'main', constants: overrideValues(spec.constants) },
    };
    try {
      pipeline = await ctx.raceLost(
        ctx.compile === 'sync' ? createSync(ctx, desc) : ctx.device.createComputePipelineAsync(desc),
      );
    } catch (e) {
      if (e instanceof TesseraError) throw e;
      let detail = '';
      try {
        const info = await module.getCompilationInfo();
        detail = info.messages
          .filter((m) => m.type === 'error')
          .map((m) => `${m.lineNum}:${m.linePos} ${m.message}`)
          .join('; ');
      } catch {
        /* no compilation info */
      }
      throw new TesseraError(
        'E_GPU_VALIDATION',
        `pipeline ${spec.shader.name} failed to compile: ${(e as Error).message}${detail ? ` [${detail}]` : ''}`,
        { cause: e },
      );
    }
    const compileMs = performance.now() - t0;
    totalCompileMs += compileMs;
    compiles.push({ key, ms: compileMs });
    const entry: Pipeline<B> = { pipeline, layout, spec, key, compileMs };
    ctx.cache.set(key, entry);
    return entry;
  })();
  pending.set(key, p);
  try {
    return await p;
  } finally {
    pending.delete(key);
  }
}

/** A resource for one binding: a buffer with an optional byte range. */
export interface BindingResource {
  buffer: GPUBuffer;
  offset?: number;
  size?: number;
}

/** The resources of a bind group of a pipeline with bindings `B`: keyed by name for a binding
 * table (a missing or extra name is a compile error), else in binding order. */
export type ResourcesFor<B extends PipelineBindings> =
  B extends BindingVariant<infer E extends BindingEntries> ? BindingResources<E> : readonly BindingResource[];

/** The groups `bindGroup` made for each pipeline with a binding table (one cache per pipeline). */
const groupCaches = new WeakMap<object, GroupCache>();

/**
 * The bind group of `p`: resources keyed by binding name (binding tables) or in binding order.
 * By name it is the pipeline's {@link GroupCache} (the one way to bind by name): names checked
 * the same way, and the same buffers, offsets and sizes give the group made before (`label` names
 * a group when it is made).
 */
export function bindGroup<B extends PipelineBindings>(
  ctx: TesseraDevice,
  p: Pipeline<B>,
  resources: ResourcesFor<B>,
  label?: string,
): GPUBindGroup {
  if (isBindingVariant(p.spec.bindings as PipelineBindings)) {
    let groups = groupCaches.get(p);
    if (!groups) {
      groups = new GroupCache(ctx.device, p as unknown as Pipeline<BindingVariant>);
      groupCaches.set(p, groups);
    }
    const named = resources as Readonly<Record<string, BindingResource | undefined>>;
    for (const name in named) {
      const r = named[name];
      if (r !== undefined) groups.set(name, r.buffer, r.offset ?? 0, r.size ?? -1);
    }
    return groups.group(label);
  }
  return positionalGroup(ctx, p as Pipeline<readonly BindingKind[]>, resources as readonly BindingResource[], label);
}

function positionalGroup(
  ctx: TesseraDevice,
  p: Pipeline<readonly BindingKind[]>,
  resources: readonly BindingResource[],
  label?: string,
): GPUBindGroup {
  if (resources.length !== p.spec.bindings.length) {
    throw new TesseraError(
      'E_STATE',
      `bind group for ${p.spec.shader.name} has ${resources.length} resources; the layout has ${p.spec.bindings.length}`,
    );
  }
  return ctx.device.createBindGroup({
    label: label ?? p.spec.shader.name,
    layout: p.layout,
    entries: resources.map((r, i) => ({
      binding: i,
      resource: { buffer: r.buffer, offset: r.offset ?? 0, size: r.size },
    })),
  });
}

/**
 * Splits a 1-D count of workgroups into a 2-D grid within `maxComputeWorkgroupsPerDimension`.
 * Shaders recover the linear id as `wg.x + wg.y * num_workgroups.x` and skip ids past the count.
 */
export function grid2d(ctx: TesseraDevice, count: number): [number, number] {
  const max = ctx.limits.maxComputeWorkgroupsPerDimension;
  if (count <= max) return [Math.max(1, count), 1];
  const y = Math.ceil(count / max);
  if (y > max) throw new TesseraError('E_LIMIT', `a dispatch of ${count} workgroups exceeds ${max}^2`);
  return [Math.ceil(count / y), y];
}
