/**
 * Long-context decode over a paged KV cache: append a context in chunks, then decode one query
 * exactly (streaming every page through the GPU working set) and sparsely (Quest), and compare.
 *
 *   npx tsx examples/long-context.ts [tokens]
 */
import { requestDevice, createKvCache, planStreamAttention, planQuestDecode, Rng } from '../src/index.js';

const T = Number(process.argv[2] ?? 200_000);
const Hq = 8;
const Hkv = 2;
const D = 64;

const dev = await requestDevice();
const cache = createKvCache(dev, { Hkv, D, dtype: 'f16', pageSize: 64, gpuBudgetBytes: 64 << 20 });
const seq = cache.addSequence();
const rng = new Rng(1);
for (let t = 0; t < T; t += 8192) {
  const n = Math.min(8192, T - t);
  cache.append(seq, rng.normals(n * Hkv * D), rng.normals(n * Hkv * D)); // k, v: [n, Hkv, D]
}

const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
const q = { buffer: dev.upload(Float32Array.from(rng.normals(Hq * D))), shape: [1, Hq, D], dtype: 'f32' as const };
const out = () => ({ o: { buffer: dev.createBuffer({ size: Hq * D * 4, usage }), shape: [1, Hq, D], dtype: 'f32' as const } });

const exact = await planStreamAttention(cache, { Hq });
const oExact = out();
const es = await exact.run(seq, q, oExact);

const quest = await planQuestDecode(cache, { Hq, budgetTokens: 4096 });
const oSparse = out();
const qs = await quest.run(seq, q, oSparse);

const a = new Float32Array(await dev.readback(oExact.o.buffer));
const b = new Float32Array(await dev.readback(oSparse.o.buffer));
let diff = 0;
for (let i = 0; i < a.length; i++) diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
console.log(`${T} tokens: exact ${es.ms.toFixed(0)} ms over ${es.tiles} tiles; Quest ${qs.ms.toFixed(0)} ms reading ${((100 * qs.kvBytesRead) / cache.stats().kvBytes).toFixed(2)}% of the KV bytes; max |diff| ${diff.toExponential(2)}`);
console.log(cache.pageTable().indptr, cache.stats());
cache.dispose();
dev.destroy();
