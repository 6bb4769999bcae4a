/**
 * A debug build of a WGSL program that counts loop iterations: every loop body (`for`, `while`,
 * `loop`) adds 1 to a private counter as it starts, and the entry point records the largest count
 * of any invocation (at every `return` and at its end) with `atomicMax` into a storage word at
 * `@group(1) @binding(0)`. Kernels' loop-cost functions (src/gpu/segments.ts) are checked against
 * it: a bound must be >= the count (gallivm also counts each loop's exit trip, so the count is a
 * floor of what llvmpipe counts) and within a small factor of it on the worst-case input.
 */

/** Removes `//` comments (WGSL has no string literals, so this is safe). */
function stripComments(code: string): string {
  return code.replace(/\/\/[^\n]*/g, '').replace(/\/\*[\s\S]*?\*\//g, '');
}

/** Index of the first `{` at parenthesis depth 0 from `from`. */
function bodyOpen(code: string, from: number): number {
  let depth = 0;
  for (let i = from; i < code.length; i++) {
    const c = code[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === '{' && depth === 0) return i;
  }
  throw new Error('loop-count: no body');
}

/** Index of the `}` matching the `{` at `open`. */
function bodyClose(code: string, open: number): number {
  let depth = 0;
  for (let i = open; i < code.length; i++) {
    if (code[i] === '{') depth++;
    else if (code[i] === '}' && --depth === 0) return i;
  }
  throw new Error('loop-count: unbalanced braces');
}

/**
 * The instrumented program. `entry` names the entry point; its `@builtin` parameters stay as they
 * are. Throws when the program has no loop (nothing to check).
 */
export function countLoops(source: string, entry = 'main'): string {
  let code = stripComments(source);
  // loop bodies: insert the increment after each loop's opening brace (from the end, so that
  // indices stay valid)
  const starts: number[] = [];
  for (const m of code.matchAll(/\b(for|while|loop)\b/g)) starts.push(bodyOpen(code, m.index!) + 1);
  if (starts.length === 0) throw new Error('loop-count: the program has no loop');
  for (const at of starts.sort((a, b) => b - a)) code = `${code.slice(0, at)} dbg_iters += 1u;${code.slice(at)}`;
  // the entry point: record at every return and at its end
  const fn = code.search(new RegExp(`\\bfn\\s+${entry}\\s*\\(`));
  if (fn < 0) throw new Error(`loop-count: no entry point ${entry}`);
  const open = bodyOpen(code, fn);
  const close = bodyClose(code, open);
  const body = code.slice(open + 1, close).replace(/\breturn\s*;/g, '{ dbg_record(); return; }');
  code = `${code.slice(0, open + 1)}${body} dbg_record();\n${code.slice(close)}`;
  return `${code}
var<private> dbg_iters: u32;
@group(1) @binding(0) var<storage, read_write> dbg_max: array<atomic<u32>, 1>;
fn dbg_record() {
  atomicMax(&dbg_max[0], dbg_iters);
}
`;
}

/**
 * Runs a loop-counting build of `code` (see {@link countLoops}) with `buffers` bound in order at
 * `@group(0)` (`@binding(i)` = `buffers[i]`; an undefined entry is a binding the program's variant
 * leaves out) and returns the largest loop count of any invocation.
 */
export async function maxLoopCount(
  dev: GPUDevice,
  code: string,
  buffers: readonly (GPUBuffer | undefined)[],
  workgroups: readonly [number, number?],
  constants: Record<string, number> = {},
  entry = 'main',
): Promise<number> {
  const module = dev.createShaderModule({ code: countLoops(code, entry), label: 'loop-count' });
  const pipeline = await dev.createComputePipelineAsync({
    layout: 'auto',
    compute: { module, entryPoint: entry, constants },
  });
  const count = dev.createBuffer({
    size: 16,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
  });
  const read = dev.createBuffer({ size: 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  try {
    dev.queue.writeBuffer(count, 0, new Uint32Array(4));
    const bg0 = dev.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: buffers.flatMap((buffer, binding) => (buffer ? [{ binding, resource: { buffer } }] : [])),
    });
    const bg1 = dev.createBindGroup({
      layout: pipeline.getBindGroupLayout(1),
      entries: [{ binding: 0, resource: { buffer: count } }],
    });
    const enc = dev.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bg0);
    pass.setBindGroup(1, bg1);
    pass.dispatchWorkgroups(workgroups[0], workgroups[1] ?? 1);
    pass.end();
    enc.copyBufferToBuffer(count, 0, read, 0, 4);
    dev.queue.submit([enc.finish()]);
    await read.mapAsync(GPUMapMode.READ);
    const got = new Uint32Array(read.getMappedRange().slice(0))[0]!;
    read.unmap();
    return got;
  } finally {
    count.destroy();
    read.destroy();
  }
}
