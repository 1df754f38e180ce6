/**
 * A decode step's GPU time without the engine: the model's decode CUDA graph (the one the engine
 * replays with --cuda-graphs, src/engine/decode-graphs.ts) replayed back to back for B rows at a
 * context of --context tokens, then the same with greedy sampling and the ids' download awaited
 * every step (what a synchronous engine step adds). Set against the engine's ms/step
 * (bench/gpu-decode.ts), the difference is the engine's host work per step.
 *
 * --leave-out ropeAttentionDecode,attention,ropeWriteKv adds rows for graphs captured without those
 * ops (the model's one ropeAttentionDecode call becomes q unchanged; ropeWriteKv alone; attention
 * alone): the difference is what the op costs inside the real step (METHOD.md's leave-one-out;
 * the logits are then meaningless, only the time counts). --unfused adds rows with
 * ropeAttentionDecode run as its two ops (ropeWriteKv + attention), for the fused kernel's gain.
 *
 * --trace (an addon built with TANDEM_CUDA_TRACE=1) records one more replay of each batch's graph
 * block by block and prints, per grid size (one row per kind of kernel: the q/k/v product, the
 * attention, ...), its launches' mean share of the critical path, how long their blocks sat
 * resident before their predecessor finished, and how long after it the last block got going
 * (bench/kernel-timeline.ts). The trace's own cost (an atomic and two stores per block) makes
 * that replay slower than the timed ones.
 *
 *   node --import tsx bench/decode-replay.ts --model DIR [--batch 1,8,64] [--context 128] [--steps 50]
 *     [--max-model-len N] [--bandwidth-gbs 3003] [--leave-out ropeAttentionDecode,attention,ropeWriteKv]
 *     [--unfused] [--trace] [--card NAME] [--out FILE.json]
 *   (needs the CUDA addon; --out writes bench/results' JSON form)
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { CudaBackend } from '../src/backend/cuda/cuda-backend.ts';
import { DecodeGraphs, type DecodeRow } from '../src/engine/decode-graphs.ts';
import { loadModel } from '../src/model/load.ts';
import type { Tensor } from '../src/backend/backend.ts';
import { decodeCosts } from './decode-floor.ts';
import { kernelLaunches, summarizeByGrid } from './kernel-timeline.ts';

const { values: v } = parseArgs({
  options: {
    model: { type: 'string' },
    batch: { type: 'string', default: '1,8,64' },
    context: { type: 'string', default: '128' },
    steps: { type: 'string', default: '50' },
    'max-model-len': { type: 'string' },
    'bandwidth-gbs': { type: 'string', default: '3003' },
    'leave-out': { type: 'string', default: '' },
    unfused: { type: 'boolean', default: false },
    trace: { type: 'boolean', default: false },
    card: { type: 'string' },
    out: { type: 'string' },
  },
});
if (!v.model) throw new Error('--model DIR is required');
const be = new CudaBackend();
const loaded = loadModel(v.model, be);
const model = loaded.model;
const context = Number(v.context);
const steps = Number(v.steps);
const blockSize = 16;
const maxModelLen = Number(v['max-model-len'] ?? loaded.config.maxPositionEmbeddings);
const batches = v.batch!.split(',').map(Number);
const maxBatch = Math.max(...batches);
const perSeq = Math.ceil((context + steps + 8) / blockSize);
const numBlocks = maxBatch * perSeq + 1;
const cache = be.allocKvCache(model.kvCacheSpec(numBlocks, blockSize));
const costs = decodeCosts(loaded.config, model.weights.layers[0].q.dtype, 'bf16');
const bw = Number(v['bandwidth-gbs']) * 1e9;
const greedy = { temperature: 0, topK: 0, topP: 1, minP: 0, seed: 0, step: 0 };

console.log(`${be.device.name}: ${v.model}, context ${context}, max_model_len ${maxModelLen} (block tables of ${Math.ceil(maxModelLen / blockSize)})`);
const results: { name: string; value: number; unit: string; floor?: number }[] = [];
const leaveOut = v['leave-out']!.split(',').map((x) => x.trim()).filter((x) => x !== '');
const ops = ['ropeAttentionDecode', 'attention', 'ropeWriteKv'];
for (const op of leaveOut) if (!ops.includes(op)) throw new Error(`--leave-out: unknown op '${op}' (${ops.join(', ')})`);
const original = { ropeAttentionDecode: be.ropeAttentionDecode.bind(be) };
type RopeAttention = typeof be.ropeAttentionDecode;
/** The model's ropeAttentionDecode call in each variant (the same arguments as the real one). */
const stand: Record<string, RopeAttention> = {
  'without ropeAttentionDecode': (q) => q,
  'without attention': (q, k, v, positions, invFreq, cache, layer, slots) => {
    be.ropeWriteKv(q, k, v, positions, invFreq, cache, layer, slots);
    return q;
  },
  'without ropeWriteKv': (q, _k, _v, _p, _f, cache, layer, _s, meta, scale) => be.attention(q, cache, layer, meta, scale),
  unfused: (q, k, v, positions, invFreq, cache, layer, slots, meta, scale) => {
    be.ropeWriteKv(q, k, v, positions, invFreq, cache, layer, slots);
    return be.attention(q, cache, layer, meta, scale);
  },
};
console.log('variant'.padEnd(30) + 'batch'.padStart(5) + 'replay ms'.padStart(11) + '+sample+wait ms'.padStart(17) + 'bytes floor ms'.padStart(16) + '% floor (replay)'.padStart(18));
const variants = ['all ops', ...leaveOut.map((op) => `without ${op}`), ...(v.unfused ? ['unfused'] : [])];
for (const variant of variants) {
  Object.assign(be, original);
  if (variant !== 'all ops') Object.assign(be, { ropeAttentionDecode: stand[variant] });
  for (const B of batches) {
    const graphs = new DecodeGraphs(model, cache, { blockSize, numBlocks, maxModelLen, maxNumSeqs: B });
    const rowsAt = (pos: number): DecodeRow[] =>
      Array.from({ length: B }, (_, i) => ({
        token: (17 * i + pos) % 1000,
        position: pos,
        blockTable: Array.from({ length: perSeq }, (_, j) => 1 + i * perSeq + j),
      }));
    // Warm-up (captures the bucket's graph), then back-to-back replays at fixed context.
    for (let i = 0; i < 3; i++) graphs.run(rowsAt(context - 1));
    await be.synchronize();
    let t0 = performance.now();
    for (let i = 0; i < steps; i++) graphs.run(rowsAt(context - 1));
    await be.synchronize();
    const replayMs = (performance.now() - t0) / steps;
    t0 = performance.now();
    for (let i = 0; i < steps; i++) {
      const logits = graphs.run(rowsAt(context - 1));
      await be.sample(logits, Array.from({ length: B }, () => greedy));
    }
    const syncMs = (performance.now() - t0) / steps;
    const kvBytes = B * context * costs.kvBytesPerPosition;
    const floorMs = ((costs.weightBytesPerStep + kvBytes) / bw) * 1000;
    const tag = variant === 'all ops' ? '' : `${variant.replace(/\W+/g, '_')}_`;
    results.push(
      { name: `replay_${tag}b${B}_ms_per_step`, value: Number(replayMs.toFixed(3)), unit: 'ms', floor: Number(floorMs.toFixed(3)) },
      { name: `replay_sample_wait_${tag}b${B}_ms_per_step`, value: Number(syncMs.toFixed(3)), unit: 'ms', floor: Number(floorMs.toFixed(3)) },
    );
    console.log(
      variant.padEnd(30) + String(B).padStart(5) + replayMs.toFixed(3).padStart(11) + syncMs.toFixed(3).padStart(17) +
        floorMs.toFixed(3).padStart(16) + `${((100 * floorMs) / replayMs).toFixed(1)}%`.padStart(18),
    );
    if (v.trace && variant === 'all ops') await traceReplay(B, () => graphs.run(rowsAt(context - 1)));
    graphs.free();
    be.resetScratch();
  }
}
Object.assign(be, original);
be.freeKvCache(cache);

/** One replay traced block by block (--trace): a table per grid size, figures into results. */
async function traceReplay(B: number, replay: () => void): Promise<void> {
  const { records, dropped } = await be.traceKernels(replay);
  const { launches, unmatchedWaits } = kernelLaunches(records);
  const waits = launches.filter((k) => k.firstWait !== null);
  const span = waits.length > 0 ? (waits[waits.length - 1].firstWait! - launches[0].firstStart) / 1e6 : NaN;
  console.log(
    `trace, batch ${B}: ${launches.length} traced launches, ${records.length} records (${dropped} dropped, ${unmatchedWaits} waits unmatched); ` +
      `first start to last kernel's wait ${span.toFixed(3)} ms`,
  );
  console.log('  blocks  launches  critical us  total ms  lead us  wait spread us  start spread us');
  const us = (ns: number) => (ns / 1000).toFixed(2);
  for (const g of summarizeByGrid(launches)) {
    console.log(
      `  ${String(g.blocks).padStart(6)}${String(g.launches).padStart(10)}${us(g.critical).padStart(13)}${(g.criticalTotal / 1e6).toFixed(3).padStart(10)}` +
        `${us(g.lead).padStart(9)}${us(g.waitSpread).padStart(16)}${us(g.startSpread).padStart(17)}`,
    );
    const at = `trace_b${B}_grid${g.blocks}`;
    if (Number.isFinite(g.critical)) results.push({ name: `${at}_critical_us`, value: Number(us(g.critical)), unit: 'us' });
    if (Number.isFinite(g.lead)) results.push({ name: `${at}_lead_us`, value: Number(us(g.lead)), unit: 'us' });
    if (Number.isFinite(g.waitSpread)) results.push({ name: `${at}_wait_spread_us`, value: Number(us(g.waitSpread)), unit: 'us' });
  }
}
if (v.out) {
  const doc = {
    card: v.card ?? be.device.name,
    date: new Date().toISOString().slice(0, 10),
    // A trace build's own replay figures are slower than a plain build's: the command says which addon ran.
    command: `${process.env.TANDEM_CUDA_ADDON ? `TANDEM_CUDA_ADDON=${process.env.TANDEM_CUDA_ADDON} ` : ''}node --import tsx bench/decode-replay.ts ${process.argv.slice(2).join(' ')}`,
    results,
  };
  writeFileSync(v.out, JSON.stringify(doc, null, 2) + '\n');
}
