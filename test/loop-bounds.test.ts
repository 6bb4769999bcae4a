/**
 * Loop-cost functions checked against the WGSL they describe: a debug build of the kernel counts
 * the loop iterations of every invocation (test/helpers/loop-count.ts) and the bound the plan
 * sizes its segments with must be >= the largest count, and within a small factor of it on the
 * worst-case input (a bound far above the count would split work for nothing).
 */
import { describe, expect, it } from 'vitest';
import { smallKcap, smallProgram, topKSmallLoopIterations, TOPK_SMALL_PARAMS } from '../kernels/topk/topk.js';
import { segmentUniforms, type Segment } from '../src/gpu/segments.js';
import { countLoops } from './helpers/loop-count.js';
import { useGpu } from './helpers/gpu.js';

const gpu = useGpu();

describe('loop-counting debug builds (src/gpu/segments.ts cost functions vs their WGSL)', () => {
  it('the instrumentation counts every loop body and records at each return', () => {
    const code = countLoops('fn f() { for (var i = 0u; i < min(3u, 4u); i++) { } }\n@compute @workgroup_size(1) fn main() { if (true) { return; } loop { break; } while (false) { } }');
    expect(code.match(/dbg_iters \+= 1u;/g)).toHaveLength(3);
    expect(code).toContain('{ dbg_record(); return; }');
    expect(code).toMatch(/dbg_record\(\);\n}\n/);
    expect(() => countLoops('@compute @workgroup_size(1) fn main() { }')).toThrow(/no loop/);
  });

  /** Runs one segment of the small top-k over `rows` rows of `n` scores, counting loop iterations. */
  async function smallCount(n: number, k: number, seg: Segment, scores: Float32Array<ArrayBuffer>, rows: number): Promise<number> {
    const dev = gpu.dev.device;
    const code = countLoops(smallProgram(smallKcap(k)).code);
    const module = dev.createShaderModule({ code, label: 'topk.small.count' });
    const pipeline = await dev.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main', constants: { WG: 64 } } });
    const S = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
    const buf = (size: number, usage = S) => dev.createBuffer({ size: Math.max(16, size), usage });
    const sc = buf(scores.byteLength);
    dev.queue.writeBuffer(sc, 0, scores);
    const idx = buf(rows * k * 4);
    const val = buf(rows * k * 4);
    const carry = buf(rows * 2 * k * 4);
    // a carried list of k real entries (keys > 0), as a previous segment leaves it
    const carried = new Uint32Array(rows * 2 * k);
    for (let r = 0; r < rows; r++) for (let s = 0; s < k; s++) carried[r * 2 * k + s] = 0x80000000 + k - s;
    dev.queue.writeBuffer(carry, 0, carried);
    const params = buf(TOPK_SMALL_PARAMS.size, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
    dev.queue.writeBuffer(params, 0, TOPK_SMALL_PARAMS.pack({ rows, n, k, hasValues: 1, ...segmentUniforms(seg) }));
    const count = buf(4);
    dev.queue.writeBuffer(count, 0, new Uint32Array(1));
    const bg0 = dev.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [sc, idx, val, params, carry].map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
    const bg1 = dev.createBindGroup({ layout: pipeline.getBindGroupLayout(1), entries: [{ binding: 0, resource: { buffer: count } }] });
    const read = buf(4, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
    const enc = dev.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bg0);
    pass.setBindGroup(1, bg1);
    pass.dispatchWorkgroups(Math.ceil(rows / 64));
    pass.end();
    enc.copyBufferToBuffer(count, 0, read, 0, 4);
    dev.queue.submit([enc.finish()]);
    await read.mapAsync(GPUMapMode.READ);
    const got = new Uint32Array(read.getMappedRange().slice(0))[0]!;
    read.unmap();
    for (const b of [sc, idx, val, carry, params, count, read]) b.destroy();
    return got;
  }

  for (const [n, k] of [[1000, 8], [300, 32], [77, 3]] as const) {
    it(`topk small: topKSmallLoopIterations bounds the counted iterations (n ${n}, k ${k}), whole row and a carried segment`, async () => {
      const rows = 3;
      // ascending scores: every candidate enters the list at its head (the most shifts: worst case)
      const ascending = new Float32Array(rows * n).map((_, i) => 1 + (i % n));
      const random = new Float32Array(rows * n).map((_, i) => Math.sin(i * 12.9898) * 43758.5453 % 1);
      const half = Math.ceil(n / 2);
      const cases: [Segment, Float32Array<ArrayBuffer>, boolean][] = [
        [{ begin: 0, end: n, carry: false, last: true }, ascending, true],
        [{ begin: half, end: n, carry: true, last: false }, ascending, true],
        [{ begin: 0, end: n, carry: false, last: true }, random, false],
      ];
      for (const [seg, scores, worst] of cases) {
        const counted = await smallCount(n, k, seg, scores, rows);
        const bound = topKSmallLoopIterations(seg.end - seg.begin, k, seg.carry);
        expect(counted, 'the kernel ran its loops').toBeGreaterThan(seg.end - seg.begin);
        expect(bound, `bound >= counted (${JSON.stringify(seg)})`).toBeGreaterThanOrEqual(counted);
        if (worst) expect(bound, `tight on the worst case (${counted} counted)`).toBeLessThanOrEqual(1.5 * counted + 16);
      }
    });
  }
});
