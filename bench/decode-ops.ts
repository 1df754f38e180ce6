/**
 * Where a decode step's time goes: each op of one Qwen2.5-3B-shaped layer (bf16) at batch 1 and
 * 64, with each op's bytes floor at the given bandwidth, plus the lm head and sampling. Two
 * timings per op: eager (the op called back to back from JS, mean per call after warm-up, so
 * small ops show their launch cost) and in a CUDA graph (20 calls captured once, the graph
 * replayed back to back: the GPU's time per op as a decode graph runs it, gaps included).
 * The per-layer sums x 36 + head + sampling estimate a step, for the plain ops and for the fused
 * ones the transformer uses (normLinearMany q/k/v, ropeAttentionDecode, normLinearSwiglu).
 * TANDEM_GEMV=0 in the environment sends decode-sized products to cuBLASLt instead of gemv.cu.
 *
 *   node --import tsx bench/decode-ops.ts [--bandwidth-gbs 3003] [--context 512] [--card NAME] [--out FILE.json]
 *   (needs the CUDA addon; --out writes bench/results' JSON form)
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { CudaBackend } from '../src/backend/cuda/cuda-backend.ts';
import type { AttnMeta, Tensor } from '../src/backend/backend.ts';
import { SeededRandom } from '../src/util/random.ts';

const { values } = parseArgs({
  options: { 'bandwidth-gbs': { type: 'string' }, context: { type: 'string' }, card: { type: 'string' }, out: { type: 'string' } },
});
const bw = Number(values['bandwidth-gbs'] ?? 3003) * 1e9;
const ctx = Number(values.context ?? 512);
const be = new CudaBackend();
const graphs = be.graphs;
const [C, F, H, Hkv, D, V, L] = [2048, 11008, 16, 2, 128, 151936, 36];
const rnd = (n: number, seed: number, std = 1): Float32Array => new SeededRandom(seed).normals(n, std);
const up = (shape: number[], seed: number, std = 1, dt: 'bf16' | 'f32' | 'i32' = 'bf16'): Tensor => {
  const n = shape.reduce((a, b) => a * b, 1);
  return dt === 'i32' ? be.upload(new Int32Array(n), shape, 'i32') : be.upload(rnd(n, seed, std), shape, dt);
};

async function time(fn: () => void, iters = 200): Promise<number> {
  for (let i = 0; i < 5; i++) fn();
  await be.synchronize();
  const t0 = performance.now();
  for (let i = 0; i < iters; i++) fn();
  await be.synchronize();
  return ((performance.now() - t0) / iters) * 1000; // us
}

/** us per call inside a CUDA graph: `inner` calls captured once, the graph replayed `reps` times. */
async function timeInGraph(fn: () => void, inner = 20, reps = 20): Promise<number> {
  const g = graphs.capture(() => {
    for (let i = 0; i < inner - 1; i++) fn();
    fn();
    return be.alloc([1], 'f32', 'scratch');
  });
  try {
    for (let i = 0; i < 3; i++) graphs.replay(g);
    await be.synchronize();
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) graphs.replay(g);
    await be.synchronize();
    return ((performance.now() - t0) / (reps * inner)) * 1000;
  } finally {
    graphs.free(g);
  }
}

console.log(`device: ${be.device.name}; floors at ${(bw / 1e9).toFixed(0)} GB/s; context ${ctx}`);
const W = {
  qkv: up([(H + 2 * Hkv) * D, C], 1, 0.02),
  q: up([H * D, C], 2, 0.02),
  k: up([Hkv * D, C], 3, 0.02),
  v: up([Hkv * D, C], 4, 0.02),
  o: up([C, H * D], 5, 0.02),
  gate: up([F, C], 6, 0.02),
  up: up([F, C], 7, 0.02),
  down: up([C, F], 8, 0.02),
  head: up([V, C], 9, 0.02),
  norm: up([C], 10, 0.1),
  qb: up([H * D], 11, 0.1),
};
const invFreq = be.upload(Float32Array.from({ length: D / 2 }, (_, j) => 1e6 ** (-(2 * j) / D)), [D / 2], 'f32');
const blockSize = 16;
const rows: { op: string; batch: number; us: number; graphUs: number; floorUs: number }[] = [];
for (const B of [1, 64]) {
  const blocksPer = Math.ceil(ctx / blockSize);
  const cache = be.allocKvCache({ numLayers: 1, numBlocks: B * blocksPer + 1, blockSize, numKvHeads: Hkv, headDim: D, dtype: 'bf16' });
  const x = up([B, C], 20);
  const xf = up([B, F], 21);
  const pos = be.upload(Int32Array.from({ length: B }, () => ctx - 1), [B], 'i32');
  const slots = be.upload(Int32Array.from({ length: B }, (_, b) => b * blocksPer * blockSize + ctx - 1), [B], 'i32');
  const meta: AttnMeta = {
    cuSeqlensQ: be.upload(Int32Array.from({ length: B + 1 }, (_, b) => b), [B + 1], 'i32'),
    contextLens: be.upload(new Int32Array(B).fill(ctx), [B], 'i32'),
    blockTables: be.upload(Int32Array.from({ length: B * blocksPer }, (_, i) => i), [B, blocksPer], 'i32'),
    maxSeqlenQ: 1,
    maxContextLen: ctx,
  };
  const q = be.view(up([B, H * D], 22), [B, H, D]);
  const k = be.view(up([B, Hkv * D], 23), [B, Hkv, D]);
  const v = be.view(up([B, Hkv * D], 24), [B, Hkv, D]);
  const logits = up([B, V], 25, 2, 'f32');
  const bytes = (t: Tensor): number => t.shape.reduce((a, b) => a * b, 1) * 2;
  const add = async (op: string, fn: () => void, floorBytes: number): Promise<void> => {
    const us = await time(() => { fn(); be.resetScratch(); });
    const graphUs = await timeInGraph(fn);
    be.resetScratch();
    rows.push({ op, batch: B, us, graphUs, floorUs: (floorBytes / bw) * 1e6 });
  };
  await add('rmsnorm + residual', () => be.rmsnorm(x, W.norm, 1e-6, x), 4 * B * C * 2);
  await add('linear q (+bias)', () => be.linear(x, W.q, W.qb), bytes(W.q));
  await add('linear k', () => be.linear(x, W.k), bytes(W.k));
  await add('linear v', () => be.linear(x, W.v), bytes(W.v));
  await add('linear qkv fused (for comparison)', () => be.linear(x, W.qkv), bytes(W.qkv));
  await add('linearMany q (+bias), k, v', () => be.linearMany(x, [{ w: W.q, bias: W.qb }, { w: W.k }, { w: W.v }]), bytes(W.qkv));
  await add('normLinearMany (rmsnorm + residual, q, k, v)', () => be.normLinearMany(x, { w: W.norm, eps: 1e-6, residual: x }, [{ w: W.q, bias: W.qb }, { w: W.k }, { w: W.v }]), bytes(W.qkv));
  await add('rope', () => be.rope(q, k, pos, invFreq), 2 * B * (H + Hkv) * D * 2);
  await add('writeKv', () => be.writeKv(cache, 0, k, v, slots), 4 * B * Hkv * D * 2);
  await add('ropeWriteKv', () => be.ropeWriteKv(q, k, v, pos, invFreq, cache, 0, slots), 2 * B * (H + 2 * Hkv) * D * 2);
  await add(`attention (ctx ${ctx})`, () => be.attention(q, cache, 0, meta, 1 / Math.sqrt(D)), B * ctx * 2 * Hkv * D * 2);
  // As a decode graph runs it: the grid planned for 32k-token block tables, the rows at 128 keys.
  const wide = 32768 / blockSize;
  const graphMeta: AttnMeta = {
    ...meta,
    contextLens: be.upload(new Int32Array(B).fill(128), [B], 'i32'),
    blockTables: be.upload(Int32Array.from({ length: B * wide }, (_, i) => (i % wide < blocksPer ? Math.floor(i / wide) * blocksPer + (i % wide) : -1)), [B, wide], 'i32'),
    maxContextLen: 32768,
  };
  await add('attention (ctx 128, planned for 32k)', () => be.attention(q, cache, 0, graphMeta, 1 / Math.sqrt(D)), B * 128 * 2 * Hkv * D * 2);
  await add('ropeAttentionDecode (ctx 128, planned for 32k)', () => be.ropeAttentionDecode(q, k, v, pos, invFreq, cache, 0, slots, graphMeta, 1 / Math.sqrt(D)), B * 128 * 2 * Hkv * D * 2 + 2 * B * (H + 2 * Hkv) * D * 2);
  await add('linear o', () => be.linear(be.view(q, [B, H * D]), W.o), bytes(W.o));
  await add('linear gate', () => be.linear(x, W.gate), bytes(W.gate));
  await add('linear up', () => be.linear(x, W.up), bytes(W.up));
  await add('swiglu', () => be.swiglu(xf, xf), 3 * B * F * 2);
  await add('linearSwiglu gate, up', () => be.linearSwiglu(x, { w: W.gate }, { w: W.up }), 2 * bytes(W.gate));
  await add('normLinearSwiglu (rmsnorm + residual, gate, up)', () => be.normLinearSwiglu(x, { w: W.norm, eps: 1e-6, residual: x }, { w: W.gate }, { w: W.up }), 2 * bytes(W.gate));
  await add('linear down', () => be.linear(xf, W.down), bytes(W.down));
  await add('lm head (f32 out)', () => be.linear(x, W.head, undefined, 'f32'), bytes(W.head));
  const greedy = Array.from({ length: B }, () => ({ temperature: 0, topK: 0, topP: 1, minP: 0, seed: 0, step: 0 }));
  const t0 = performance.now();
  const reps = 50;
  for (let i = 0; i < reps; i++) await be.sample(logits, greedy);
  const sampleUs = ((performance.now() - t0) / reps) * 1000;
  rows.push({ op: 'sample greedy (incl. download round trip)', batch: B, us: sampleUs, graphUs: sampleUs, floorUs: (B * V * 4 / bw) * 1e6 });
  be.resetScratch();
  be.freeKvCache(cache);
}
console.log('op'.padEnd(44) + 'batch'.padStart(6) + 'eager us'.padStart(10) + 'graph us'.padStart(10) + 'floor us'.padStart(10) + '% floor'.padStart(9));
for (const r of rows) {
  const pct = ((100 * r.floorUs) / r.graphUs).toFixed(0);
  console.log(r.op.padEnd(44) + String(r.batch).padStart(6) + r.us.toFixed(1).padStart(10) + r.graphUs.toFixed(1).padStart(10) + r.floorUs.toFixed(1).padStart(10) + pct.padStart(8) + '%');
}
console.log('(% floor: of the graph time)');
const plainLayer = ['rmsnorm + residual', 'linear q (+bias)', 'linear k', 'linear v', 'rope', 'writeKv', `attention (ctx ${ctx})`, 'linear o', 'rmsnorm + residual', 'linear gate', 'linear up', 'swiglu', 'linear down'];
const fusedLayer = ['normLinearMany (rmsnorm + residual, q, k, v)', 'ropeAttentionDecode (ctx 128, planned for 32k)', 'linear o', 'normLinearSwiglu (rmsnorm + residual, gate, up)', 'linear down'];
for (const B of [1, 64]) {
  const get = (op: string, graph: boolean): number => {
    const r = rows.find((x) => x.op === op && x.batch === B)!;
    return graph ? r.graphUs : r.us;
  };
  for (const [name, ops] of [['plain ops', plainLayer], ['fused ops', fusedLayer]] as const) {
    for (const graph of [false, true]) {
      const layer = ops.reduce((s, op) => s + get(op, graph), 0);
      const step = layer * L + get('lm head (f32 out)', graph) + get('sample greedy (incl. download round trip)', false);
      console.log(`batch ${B}, ${name}, ${graph ? 'graph' : 'eager'}: one layer ${layer.toFixed(0)} us; estimated step ${(step / 1000).toFixed(2)} ms (36 layers + head + sampling)`);
    }
  }
}
if (values.out) {
  const slug = (x: string): string => x.toLowerCase().replace(/[^a-z0-9]+/g, '_').replace(/^_|_$/g, '');
  const results = rows.flatMap((r) =>
    (['eager', 'graph'] as const).map((kind) => ({
      name: `${slug(r.op)}_b${r.batch}_${kind}_us`,
      value: Number((kind === 'eager' ? r.us : r.graphUs).toFixed(2)),
      unit: 'us',
      ...(r.floorUs > 0 ? { floor: Number(r.floorUs.toFixed(3)) } : {}),
    })),
  );
  const doc = {
    card: values.card ?? be.device.name,
    date: new Date().toISOString().slice(0, 10),
    command: `node --import tsx bench/decode-ops.ts ${process.argv.slice(2).join(' ')}`,
    results: results.filter((r, i) => results.findIndex((q) => q.name === r.name) === i),
  };
  writeFileSync(values.out, JSON.stringify(doc, null, 2) + '\n');
}
