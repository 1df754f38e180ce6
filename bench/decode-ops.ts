/**
 * Where a decode step's time goes: each op of one Qwen2.5-3B-shaped layer (bf16) at batch 1 and
 * 64, timed back to back (mean of many calls after warm-up, so small ops show their launch
 * cost), with each op's bytes floor at the given bandwidth, plus the lm head and sampling.
 * The per-layer sum x 36 + head + sampling estimates an eager step.
 *
 *   node --import tsx bench/decode-ops.ts [--bandwidth-gbs 3003] [--context 512]   (needs the CUDA addon)
 */
import { parseArgs } from 'node:util';
import { CudaBackend } from '../src/backend/cuda/cuda-backend.ts';
import type { AttnMeta, Tensor } from '../src/backend/backend.ts';
import { SeededRandom } from '../src/util/random.ts';

const { values } = parseArgs({ options: { 'bandwidth-gbs': { type: 'string' }, context: { type: 'string' } } });
const bw = Number(values['bandwidth-gbs'] ?? 3003) * 1e9;
const ctx = Number(values.context ?? 512);
const be = new CudaBackend();
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
const rows: { op: string; batch: number; us: number; floorUs: number }[] = [];
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
    rows.push({ op, batch: B, us: await time(() => { fn(); be.resetScratch(); }), floorUs: (floorBytes / bw) * 1e6 });
  };
  await add('rmsnorm + residual', () => be.rmsnorm(x, W.norm, 1e-6, x), 4 * B * C * 2);
  await add('linear q (+bias)', () => be.linear(x, W.q, W.qb), bytes(W.q));
  await add('linear k', () => be.linear(x, W.k), bytes(W.k));
  await add('linear v', () => be.linear(x, W.v), bytes(W.v));
  await add('linear qkv fused (for comparison)', () => be.linear(x, W.qkv), bytes(W.qkv));
  await add('rope', () => be.rope(q, k, pos, invFreq), 2 * B * (H + Hkv) * D * 2);
  await add('writeKv', () => be.writeKv(cache, 0, k, v, slots), 4 * B * Hkv * D * 2);
  await add(`attention (ctx ${ctx})`, () => be.attention(q, cache, 0, meta, 1 / Math.sqrt(D)), B * ctx * 2 * Hkv * D * 2);
  await add('linear o', () => be.linear(be.view(q, [B, H * D]), W.o), bytes(W.o));
  await add('linear gate', () => be.linear(x, W.gate), bytes(W.gate));
  await add('linear up', () => be.linear(x, W.up), bytes(W.up));
  await add('swiglu', () => be.swiglu(xf, xf), 3 * B * F * 2);
  await add('linear down', () => be.linear(xf, W.down), bytes(W.down));
  await add('lm head (f32 out)', () => be.linear(x, W.head, undefined, 'f32'), bytes(W.head));
  const greedy = Array.from({ length: B }, () => ({ temperature: 0, topK: 0, topP: 1, minP: 0, seed: 0, step: 0 }));
  const t0 = performance.now();
  const reps = 50;
  for (let i = 0; i < reps; i++) await be.sample(logits, greedy);
  rows.push({ op: 'sample greedy (incl. download round trip)', batch: B, us: ((performance.now() - t0) / reps) * 1000, floorUs: (B * V * 4 / bw) * 1e6 });
  be.resetScratch();
  be.freeKvCache(cache);
}
console.log('op'.padEnd(44) + 'batch'.padStart(6) + 'us'.padStart(10) + 'floor us'.padStart(10) + '% floor'.padStart(9));
for (const r of rows) {
  console.log(r.op.padEnd(44) + String(r.batch).padStart(6) + r.us.toFixed(1).padStart(10) + r.floorUs.toFixed(1).padStart(10) + ((100 * r.floorUs) / r.us).toFixed(0).padStart(8) + '%');
}
const layerOps = ['rmsnorm + residual', 'linear q (+bias)', 'linear k', 'linear v', 'rope', 'writeKv', `attention (ctx ${ctx})`, 'linear o', 'rmsnorm + residual', 'linear gate', 'linear up', 'swiglu', 'linear down'];
for (const B of [1, 64]) {
  const get = (op: string): number => rows.find((r) => r.op === op && r.batch === B)!.us;
  const layer = layerOps.reduce((s, op) => s + get(op), 0);
  const step = layer * L + get('lm head (f32 out)') + get('sample greedy (incl. download round trip)');
  console.log(`batch ${B}: one layer ${layer.toFixed(0)} us; estimated eager step ${(step / 1000).toFixed(2)} ms (36 layers + head + sampling)`);
}
