/**
 * Binding tables: a pass declares its group-0 bindings once, by name, and binds by name.
 *
 * - The table's key order gives the `@binding` numbers (0, 1, 2, ...); each key is the WGSL
 *   variable's name and each value its access: `'read'` (`var<storage, read>`), `'rw'`
 *   (`var<storage, read_write>`) or `'uniform'` (`var<uniform>`; by convention named `params`).
 * - An optional binding (`optional(kind, wgslType)`) is one that some variants of the pass do not
 *   use. Its declaration is not written in the kernel's .wgsl file: `variant({ name: true/false })`
 *   generates it, as `@group(0) @binding(n) var<...> name: T;` where the variant binds it, or as an
 *   unbound placeholder where it does not (`const name = array<E, 1>();` for a read-only binding,
 *   uniform like the buffer it stands for; `var<private> name: array<E, 1>;` for a read_write one;
 *   the code that reads it sits behind an `override` flag the variant turns off, so it never runs). The absent binding
 *   keeps its number (layouts may have gaps) and needs no dummy buffer.
 * - `getPipeline` takes a variant in place of the positional kind list, appends the generated
 *   declarations to the shader, and checks the assembled WGSL against the variant (`checkBindings`)
 *   the first time it compiles it: same names, numbers and access, and no declared binding the
 *   table does not have. `bindGroup` takes the resources as an object keyed by name (through the
 *   pipeline's `GroupCache`, the one place that lays out a group by name).
 * - Every table registers itself (`bindingTables()`), and every converted kernel registers the
 *   pipeline specs of its variants with `registerPasses`, so test/bindings.test.ts checks them all.
 *
 * @example
 * const SCAN = bindingTable('linear/scan', { x: 'read', w: optional('read', 'array<f32>'), y: 'rw', params: 'uniform' });
 * const p = await getPipeline(ctx, { shader, bindings: SCAN.variant({ w: hasWeights }) });
 * pass.setBindGroup(0, bindGroup(ctx, p, { x, y, params, ...(hasWeights ? { w } : {}) }));
 */
import { TesseraError } from '../errors.js';
import type { BindingKind, BindingResource, PipelineSpec } from './pipeline.js';

/** A binding some variants of a pass leave out; `type` is its WGSL type (`array<f32>`, ...). */
export interface OptionalBinding {
  readonly kind: BindingKind;
  readonly optional: true;
  readonly type: string;
}

/** Declares an optional binding of a table (see the file header). */
export function optional(kind: Exclude<BindingKind, 'uniform'>, type: string): OptionalBinding {
  if (!/^array<.+>$/.test(type))
    throw new TesseraError('E_ARG', `an optional binding's type must be a runtime-sized array<...>; got ${type}`, {
      argument: 'type',
      actual: type,
    });
  return { kind, optional: true, type };
}

export type BindingEntry = BindingKind | OptionalBinding;
export type BindingEntries = Readonly<Record<string, BindingEntry>>;

type OptionalKeys<E> = { [K in keyof E]: E[K] extends OptionalBinding ? K : never }[keyof E] & string;
type RequiredKeys<E> = Exclude<keyof E & string, OptionalKeys<E>>;

/** The resources of a bind group, keyed by binding name (optional bindings may be left out). */
export type BindingResources<E> = { readonly [K in RequiredKeys<E>]: BindingResource } & {
  readonly [K in OptionalKeys<E>]?: BindingResource;
};

/** Which optional bindings a variant binds. */
export type VariantFlags<E> = { readonly [K in OptionalKeys<E>]: boolean };

/** One binding as a variant lays it out. */
export interface BoundBinding {
  readonly name: string;
  readonly binding: number;
  readonly kind: BindingKind;
}

/** A table with its optional bindings chosen: what `getPipeline` takes as `bindings`. */
export interface BindingVariant<E extends BindingEntries = BindingEntries> {
  readonly table: BindingTable<E>;
  /** The bindings in the layout, in binding order (absent optional ones left out). */
  readonly bound: readonly BoundBinding[];
  /** Names of optional bindings this variant leaves out. */
  readonly absent: readonly string[];
  /** Generated WGSL declarations of the optional bindings (appended to the shader). */
  readonly wgsl: string;
  /** Stable key of the layout (binding numbers, kinds and names). */
  readonly key: string;
}

export interface BindingTable<E extends BindingEntries = BindingEntries> {
  readonly name: string;
  readonly entries: E;
  /** Binding number of each name. */
  readonly slot: Readonly<Record<keyof E & string, number>>;
  /** The variant with the given optional bindings (all required ones always bound). */
  variant(flags: VariantFlags<E>): BindingVariant<E>;
}

const KIND_CODE: Record<BindingKind, string> = { read: 'r', rw: 'w', uniform: 'u' };
const tables = new Map<string, BindingTable>();

/** The variant type of a table (what its pipelines' `spec.bindings` is). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type VariantOf<T extends BindingTable<any>> = ReturnType<T['variant']>;

/** Declares a pass's binding table (key order = binding numbers); see the file header. */
export function bindingTable<const E extends BindingEntries>(name: string, entries: E): BindingTable<E> {
  const names = Object.keys(entries);
  const slot = Object.fromEntries(names.map((n, i) => [n, i])) as Record<keyof E & string, number>;
  const cache = new Map<string, BindingVariant<E>>();
  const table: BindingTable<E> = {
    name,
    entries,
    slot,
    variant(flags) {
      const f = (flags ?? {}) as Record<string, boolean>;
      let mask = '';
      for (const n of names) {
        if (!isOptional(entries[n]!)) continue;
        if (typeof f[n] !== 'boolean')
          throw new TesseraError('E_STATE', `binding table ${name}: the variant does not say whether "${n}" is bound`);
        mask += f[n] ? '1' : '0';
      }
      const hit = cache.get(mask);
      if (hit) return hit;
      for (const k of Object.keys(f)) {
        if (!(k in entries) || !isOptional(entries[k]!))
          throw new TesseraError('E_STATE', `binding table ${name}: "${k}" is not an optional binding`);
      }
      const bound: BoundBinding[] = [];
      const absent: string[] = [];
      const decls: string[] = [];
      names.forEach((n, i) => {
        const e = entries[n]!;
        if (!isOptional(e)) {
          bound.push({ name: n, binding: i, kind: e });
          return;
        }
        if (f[n]) {
          bound.push({ name: n, binding: i, kind: e.kind });
          decls.push(
            `@group(0) @binding(${i}) var<storage, ${e.kind === 'rw' ? 'read_write' : 'read'}> ${n}: ${e.type};`,
          );
        } else {
          absent.push(n);
          // a read-only placeholder is a const: uniform for WGSL's uniformity analysis (a
          // var<private> is not, so code that branches on it could no longer reach a barrier)
          const t = e.type.replace(/>$/, ', 1>');
          decls.push(
            e.kind === 'read'
              ? `const ${n} = ${t}(); // not bound in this variant`
              : `var<private> ${n}: ${t}; // not bound in this variant`,
          );
        }
      });
      const v: BindingVariant<E> = {
        table,
        bound,
        absent,
        wgsl: decls.length ? `// optional bindings of ${name} (src/gpu/bindings.ts)\n${decls.join('\n')}\n` : '',
        key: `${name}:${bound.map((b) => `${b.binding}${KIND_CODE[b.kind]}${b.name}`).join('.')}`,
      };
      cache.set(mask, v);
      return v;
    },
  };
  // names are unique per pass; a module evaluated twice (hot reload) replaces its tables
  tables.set(name, table as unknown as BindingTable);
  return table;
}

function isOptional(e: BindingEntry): e is OptionalBinding {
  return typeof e === 'object';
}

/** Whether `bindings` of a spec is a table variant (else the positional kind list). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function isBindingVariant(b: unknown): b is BindingVariant<any> {
  return typeof b === 'object' && b !== null && !Array.isArray(b) && 'bound' in b;
}

/** Every declared binding table (test/bindings.test.ts checks that each has a registered pass). */
export function bindingTables(): readonly BindingTable[] {
  return [...tables.values()];
}

const passes = new Map<string, () => readonly PipelineSpec[]>();

/**
 * Registers the pipeline specs of a kernel's variants (enough to cover every variant of its
 * binding tables), for test/bindings.test.ts. `specs` must not need a device.
 */
export function registerPasses(kernel: string, specs: () => readonly PipelineSpec[]): void {
  passes.set(kernel, specs);
}

/** The registered kernels and their pass specs. */
export function registeredPasses(): ReadonlyMap<string, () => readonly PipelineSpec[]> {
  return passes;
}

/** A `@group(g) @binding(n) var<...> name` declaration found in WGSL text. */
export interface DeclaredBinding {
  group: number;
  binding: number;
  kind: BindingKind | 'other';
  name: string;
}

/** The resource bindings declared in WGSL text (comments stripped). */
export function declaredBindings(code: string): DeclaredBinding[] {
  const text = code.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/[^\n]*/g, '');
  const out: DeclaredBinding[] = [];
  const re =
    /@group\(\s*(\d+)\s*\)\s*@binding\(\s*(\d+)\s*\)\s*var\s*(?:<\s*([a-z_]+)\s*(?:,\s*([a-z_]+)\s*)?>)?\s*([A-Za-z_][A-Za-z0-9_]*)/g;
  const re2 = /@binding\(\s*(\d+)\s*\)\s*@group\(\s*(\d+)\s*\)/g;
  if (re2.test(text))
    throw new TesseraError('E_STATE', 'write @group before @binding (declaredBindings parses that order)');
  for (let m; (m = re.exec(text));) {
    const space = m[3];
    const access = m[4] ?? 'read';
    const kind: DeclaredBinding['kind'] =
      space === 'uniform' ? 'uniform' : space === 'storage' ? (access === 'read_write' ? 'rw' : 'read') : 'other';
    out.push({ group: Number(m[1]), binding: Number(m[2]), kind, name: m[5]! });
  }
  const count = (text.match(/@binding\(/g) ?? []).length;
  if (count !== out.length)
    throw new TesseraError('E_STATE', `declaredBindings parsed ${out.length} of ${count} @binding declarations`);
  return out;
}

/**
 * Differences between a variant and the bindings declared in `code` (empty when they agree):
 * each group-0 binding of the code must be in the variant with the same number, name and access,
 * each bound binding of the variant must be declared, and no absent one may be.
 */
export function bindingMismatches(variant: BindingVariant, code: string): string[] {
  const problems: string[] = [];
  const decl = declaredBindings(code);
  const byNumber = new Map<number, DeclaredBinding>();
  for (const d of decl) {
    if (d.group !== 0) continue;
    if (byNumber.has(d.binding)) problems.push(`@binding(${d.binding}) is declared twice`);
    byNumber.set(d.binding, d);
  }
  const inTable = new Map(variant.bound.map((b) => [b.binding, b]));
  for (const [n, d] of byNumber) {
    const b = inTable.get(n);
    if (!b) {
      const absent = variant.absent.includes(d.name);
      problems.push(
        absent
          ? `"${d.name}" is declared at @binding(${n}) but this variant leaves it out`
          : `@binding(${n}) ${d.name} is declared in the WGSL but not in the table`,
      );
    } else {
      if (b.name !== d.name) problems.push(`@binding(${n}) is "${d.name}" in the WGSL, "${b.name}" in the table`);
      if (b.kind !== d.kind) problems.push(`@binding(${n}) ${d.name} is ${d.kind} in the WGSL, ${b.kind} in the table`);
    }
  }
  for (const b of variant.bound) {
    if (!byNumber.has(b.binding))
      problems.push(`"${b.name}" (@binding(${b.binding})) is in the table but not declared`);
  }
  return problems.map((p) => `${variant.table.name}: ${p}`);
}

/** Names a variant of table entries `E` binds for sure (required ones) or may bind (optional ones). */
export type BindingName<E extends BindingEntries> = keyof E & string;

/**
 * The bind groups of one pipeline, keyed by the buffers, offsets and sizes bound, for a plan's
 * `run`: the binding order is laid out once (at plan time, from the variant), each run names its
 * resources with `set(name, buffer, offset, size)` into preallocated slots, and `group()` returns
 * the group made for the same resources before. A hit allocates nothing (no resource objects, no
 * key strings); a miss creates the group once. A name the variant does not bind, a binding set
 * twice or left unset throws `E_STATE` naming it. `bindGroup` (src/gpu/pipeline.ts) binds an object of
 * named resources through a cache of this kind per pipeline.
 *
 * @example
 * const groups = new GroupCache(ctx.device, pipeline); // at plan time
 * pass.setBindGroup(0, groups.set('x', x.buffer, 0, bytes).set('params', params).group()); // per run
 */
export class GroupCache<E extends BindingEntries = BindingEntries> {
  /** Groups created so far (a hit creates none). */
  created = 0;
  private readonly names: readonly string[];
  private readonly numbers: readonly number[];
  private readonly position: ReadonlyMap<string, number>;
  private readonly what: string;
  private readonly bufs: (GPUBuffer | undefined)[];
  private readonly offs: number[];
  private readonly sizes: number[];
  private setCount = 0;
  private readonly cache: { bufs: GPUBuffer[]; offs: number[]; sizes: number[]; group: GPUBindGroup }[] = [];
  private last = 0;

  constructor(
    private readonly device: GPUDevice,
    private readonly p: {
      readonly pipeline: GPUComputePipeline;
      readonly layout: GPUBindGroupLayout;
      readonly spec: { readonly shader: { readonly name: string }; readonly bindings: BindingVariant<E> };
    },
    private readonly limit = 32,
  ) {
    const bound = p.spec.bindings.bound;
    this.names = bound.map((b) => b.name);
    this.numbers = bound.map((b) => b.binding);
    this.position = new Map(bound.map((b, i) => [b.name, i]));
    this.what = p.spec.shader.name;
    this.bufs = bound.map(() => undefined);
    this.offs = bound.map(() => 0);
    this.sizes = bound.map(() => -1);
  }

  /** The pipeline whose groups these are. */
  get pipeline(): GPUComputePipeline {
    return this.p.pipeline;
  }

  /** The pass's name (the shader's): the groups' label. */
  get label(): string {
    return this.what;
  }

  /** Binds `buffer` (from `offset`, `size` bytes; -1: to its end) to binding `name` for the next `group()`. */
  set(name: BindingName<E>, buffer: GPUBuffer, offset = 0, size = -1): this {
    const i = this.position.get(name);
    if (i === undefined) {
      this.reset();
      const absent = this.p.spec.bindings.absent.includes(name);
      throw new TesseraError(
        'E_STATE',
        `bind group for ${this.what}: "${name}" is not a binding of this variant (${absent ? 'left out of it' : 'not in the table'})`,
      );
    }
    if (this.bufs[i] !== undefined) {
      this.reset();
      throw new TesseraError('E_STATE', `bind group for ${this.what}: binding "${name}" is set twice`);
    }
    this.bufs[i] = buffer;
    this.offs[i] = offset;
    this.sizes[i] = size;
    this.setCount++;
    return this;
  }

  /**
   * The group of the resources set since the last call (made once per distinct set, labelled
   * `label` or the pass's name); clears them.
   */
  group(label?: string): GPUBindGroup {
    const n = this.names.length;
    if (this.setCount !== n) {
      let missing = 0;
      while (this.bufs[missing] !== undefined) missing++;
      this.reset();
      throw new TesseraError(
        'E_STATE',
        `bind group for ${this.what}: binding "${this.names[missing]}" (@binding(${this.numbers[missing]})) has no buffer`,
      );
    }
    const list = this.cache;
    const m = list.length;
    for (let k = 0; k < m; k++) {
      const e = list[(this.last + k) % m]!;
      let i = 0;
      while (i < n && e.bufs[i] === this.bufs[i] && e.offs[i] === this.offs[i] && e.sizes[i] === this.sizes[i]) i++;
      if (i === n) {
        this.last = (this.last + k) % m;
        this.reset();
        return e.group;
      }
    }
    const entries: GPUBindGroupEntry[] = [];
    for (let i = 0; i < n; i++) {
      const size = this.sizes[i]!;
      entries.push({
        binding: this.numbers[i]!,
        resource: { buffer: this.bufs[i]!, offset: this.offs[i], size: size < 0 ? undefined : size },
      });
    }
    const group = this.device.createBindGroup({ label: label ?? this.what, layout: this.p.layout, entries });
    this.created++;
    if (list.length >= this.limit) list.shift();
    list.push({
      bufs: this.bufs.slice() as GPUBuffer[],
      offs: this.offs.slice(),
      sizes: this.sizes.slice(),
      group,
    });
    this.last = list.length - 1;
    this.reset();
    return group;
  }

  /** Forgets every group (they are dropped, not destroyed: WebGPU bind groups have no destroy). */
  clear(): void {
    this.cache.length = 0;
    this.last = 0;
    this.reset();
  }

  private reset(): void {
    for (let i = 0; i < this.bufs.length; i++) this.bufs[i] = undefined;
    this.setCount = 0;
  }
}
