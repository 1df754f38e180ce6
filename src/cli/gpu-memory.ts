/**
 * `serve --gpu-memory`: partition the GPU up front, as vLLM's profile run does. Before loading,
 * check that the weights and one full-length request can fit at all (fail in a second, not after
 * reading gigabytes). After loading, run one step of the largest shape the engine will schedule
 * (every token of --max-num-batched-tokens, spread over up to --max-num-seqs sequences, with a
 * LoRA adapter on every row where the backend can run one) and measure its scratch; then plan
 * weights / workspace / adapter reserve / KV pool (src/backend/memory-plan.ts) and hand the plan
 * to the CUDA backend, which allocates the arena now and refuses anything past its parts later.
 * With CUDA graphs on, the decode graph of the largest batch-size bucket is captured once too and
 * its scratch measured: every graph then shares one arena of that size, inside the workspace part.
 */
import type { SamplingParams } from '../backend/backend.ts';
import type { CudaBackend } from '../backend/cuda/cuda-backend.ts';
import { formatBytes, MiB, parseMemorySize, planMemory, type MemoryPlan } from '../backend/memory-plan.ts';
import type { ModelConfig } from '../model/config.ts';
import { LORA_TARGETS, loraShapes, type LoraSpec } from '../model/lora.ts';
import { loraLayout, loraViews, type DeviceLora } from '../model/lora-device.ts';
import { packBatch, type SequenceSlice, type Transformer } from '../model/transformer.ts';
import { DecodeGraphs, graphBuckets } from '../engine/decode-graphs.ts';
import { weightBytes } from '../model/weights.ts';

/** Default --gpu-memory: 90 % of the card (the CUDA context and other processes need the rest). */
export const DEFAULT_GPU_MEMORY = '0.9';
/** Default adapter reserve: 2 % of the budget, at least this. */
const MIN_ADAPTER_RESERVE = 256 * MiB;
/**
 * The measured step scratch gets this margin, and the arena at least SCRATCH_FLOOR: a training
 * slice (one layer's forward and backward, or a 64 MiB f32 logits chunk and its gradient) runs
 * in the same arena between engine steps.
 */
const SCRATCH_MARGIN = 1.1;
const SCRATCH_FLOOR = 256 * MiB;
/** LoRA rank of the profile step's adapter (the reference workload's); the rank barely changes scratch. */
const PROFILE_LORA_RANK = 32;

export interface GpuMemoryOptions {
  /** --gpu-memory as given (default DEFAULT_GPU_MEMORY). */
  gpuMemory?: string;
  /** --adapter-memory as given (a size, or a fraction of the budget). */
  adapterMemory?: string;
  blockSize: number;
  maxModelLen: number;
  maxNumSeqs: number;
  maxNumBatchedTokens: number;
  /** KV blocks asked for with --kv-cache-tokens / --kv-blocks; absent: what the budget leaves. */
  requestedBlocks?: number;
  /** --cuda-graphs: reserve the decode graphs' shared scratch inside the budget. */
  cudaGraphs?: boolean;
}

/** The graphs' measured scratch gets this margin, and at least GRAPH_MARGIN_MIN more. */
const GRAPH_MARGIN = 1.05;
const GRAPH_MARGIN_MIN = 16 * MiB;

/** The budget and the adapter reserve in bytes. */
export function budgetBytes(be: CudaBackend, o: GpuMemoryOptions): { total: number; adapters: number } {
  const card = be.device.totalMemory;
  const total = parseMemorySize('gpu-memory', o.gpuMemory ?? DEFAULT_GPU_MEMORY, card);
  if (total > card) {
    throw new Error(`--gpu-memory ${formatBytes(total)} is more than the ${formatBytes(card)} of ${be.device.name}: give at most ${formatBytes(card)} (or a fraction such as 0.9)`);
  }
  const adapters =
    o.adapterMemory === undefined ? Math.max(Math.floor(0.02 * total), MIN_ADAPTER_RESERVE) : parseMemorySize('adapter-memory', o.adapterMemory, total);
  return { total, adapters };
}

/** Bytes of one KV block over all layers (K and V) and the pool's rounding, in the backend's dtype. */
function kvSizes(be: CudaBackend, cfg: ModelConfig, blockSize: number): { perBlock: number; fixed: number } {
  const elem = be.preferredDtype === 'bf16' ? 2 : 4;
  return { perBlock: 2 * cfg.numLayers * blockSize * cfg.numKvHeads * cfg.headDim * elem, fixed: 2 * cfg.numLayers * 256 };
}

/** Before loading: throws the plan's message when the weights and one full request cannot fit. */
export function checkModelFits(be: CudaBackend, cfg: ModelConfig, o: GpuMemoryOptions): void {
  const { total, adapters } = budgetBytes(be, o);
  const kv = kvSizes(be, cfg, o.blockSize);
  planMemory({
    total,
    weights: weightBytes(cfg, be.preferredDtype),
    workspace: be.memoryUsage().workspace,
    adapters,
    kvBytesPerBlock: kv.perBlock,
    kvFixedBytes: kv.fixed,
    blockSize: o.blockSize,
    maxModelLen: o.maxModelLen,
    requestedBlocks: o.requestedBlocks,
    maxUsefulBlocks: Number.MAX_SAFE_INTEGER,
  });
}

/** After loading, before the engine: measure, plan, and apply the budget to the backend. */
export async function applyGpuMemoryBudget(
  be: CudaBackend,
  model: Transformer,
  o: GpuMemoryOptions,
  log: (line: string) => void,
): Promise<MemoryPlan & { scratch: number; profiledTokens: number }> {
  const { total, adapters } = budgetBytes(be, o);
  const cfg = model.config;
  const profile = await measureStepScratch(be, model, o, log);
  const scratch = Math.ceil(Math.max(profile.bytes * SCRATCH_MARGIN, SCRATCH_FLOOR) / MiB) * MiB;
  const graph = o.cudaGraphs ? await measureGraphScratch(be, model, o) : null;
  const graphs = graph === null ? 0 : Math.ceil(Math.max(graph.bytes * GRAPH_MARGIN, graph.bytes + GRAPH_MARGIN_MIN) / MiB) * MiB;
  const usage = be.memoryUsage();
  const kv = kvSizes(be, cfg, o.blockSize);
  const plan = planMemory({
    total,
    weights: usage.weights,
    workspace: scratch + graphs + usage.workspace,
    adapters,
    kvBytesPerBlock: kv.perBlock,
    kvFixedBytes: kv.fixed,
    blockSize: o.blockSize,
    maxModelLen: o.maxModelLen,
    requestedBlocks: o.requestedBlocks,
    maxUsefulBlocks: Math.ceil((o.maxNumSeqs * o.maxModelLen) / o.blockSize),
  });
  be.setBudget({ total, scratch, kvCache: plan.kvCache, adapters, graphs });
  log(
    `GPU memory budget ${formatBytes(total)} of ${formatBytes(be.device.totalMemory)} (${be.device.name}): weights ${formatBytes(plan.weights)}, ` +
      `KV cache ${formatBytes(plan.kvCache)} (${plan.numBlocks} blocks = ${plan.numBlocks * o.blockSize} tokens), workspace ${formatBytes(plan.workspace)} ` +
      `(a ${profile.tokens}-token step${profile.withLora ? ' with LoRA' : ''} used ${formatBytes(profile.bytes)} of scratch` +
      (graph === null ? '' : `; CUDA graphs share ${formatBytes(graphs)}, the ${graph.rows}-row decode graph${graph.withLora ? ' with LoRA' : ''} took ${formatBytes(graph.bytes)}`) +
      `), ` +
      `adapters ${formatBytes(plan.adapters)}, unassigned ${formatBytes(plan.unassigned)}`,
  );
  return { ...plan, scratch, profiledTokens: profile.tokens };
}

/**
 * Scratch bytes of the largest step: T = --max-num-batched-tokens new tokens over
 * S = min(--max-num-seqs, T) fresh sequences (one logits row each), sampled on the device.
 */
async function measureStepScratch(
  be: CudaBackend,
  model: Transformer,
  o: GpuMemoryOptions,
  log: (line: string) => void,
): Promise<{ bytes: number; tokens: number; withLora: boolean }> {
  const T = Math.min(o.maxNumBatchedTokens, o.maxNumSeqs * o.maxModelLen);
  const S = Math.min(o.maxNumSeqs, T);
  const lens = Array.from({ length: S }, (_, s) => Math.floor(T / S) + (s < T % S ? 1 : 0));
  const blocks = lens.reduce((n, len) => n + Math.ceil(len / o.blockSize), 0);
  const cache = be.allocKvCache(model.kvCacheSpec(blocks, o.blockSize));
  const run = async (lora: DeviceLora | null): Promise<number> => {
    let next = 0;
    const seqs: SequenceSlice[] = lens.map((len) => {
      const blockTable = Array.from({ length: Math.ceil(len / o.blockSize) }, () => next++);
      return { newTokens: Array.from({ length: len }, (_, i) => i % model.config.vocabSize), numCached: 0, blockTable, lora };
    });
    be.resetScratch();
    be.resetScratchPeak();
    try {
      const logits = model.forward(packBatch(seqs, o.blockSize), cache);
      const greedy: SamplingParams = { temperature: 0, topK: 0, topP: 1, minP: 0, seed: 0, step: 0 };
      await be.sample(logits, lens.map(() => greedy));
      return be.scratchPeakBytes;
    } finally {
      be.resetScratch();
    }
  };
  try {
    const lora = zeroLora(be, model.config);
    if (lora !== null) {
      try {
        return { bytes: await run(lora), tokens: T, withLora: true };
      } catch (err) {
        log(`GPU memory profile: a step with LoRA failed (${err instanceof Error ? err.message : String(err)}); sizing scratch without LoRA`);
      } finally {
        be.free(lora.params);
      }
    }
    return { bytes: await run(null), tokens: T, withLora: false };
  } finally {
    be.freeKvCache(cache);
    be.emptyCache();
  }
}

/**
 * Scratch of the decode graph of the largest batch-size bucket, with a LoRA adapter on every
 * target where the backend can run one (graphs of smaller buckets, or of the base model, need
 * less: activations and logits scale with the rows, and split-K's partial results stay under
 * 2 MiB): captured once on a small KV cache, then freed.
 */
async function measureGraphScratch(
  be: CudaBackend, model: Transformer, o: GpuMemoryOptions,
): Promise<{ bytes: number; rows: number; withLora: boolean }> {
  const buckets = graphBuckets(o.maxNumSeqs);
  const rows = buckets[buckets.length - 1];
  const cache = be.allocKvCache(model.kvCacheSpec(rows, o.blockSize));
  // No short-context classes: the graph planned for whole tables (context splits included), the largest one.
  const graphs = new DecodeGraphs(model, cache, { blockSize: o.blockSize, numBlocks: rows, maxModelLen: o.maxModelLen, maxNumSeqs: o.maxNumSeqs, shortContexts: [] });
  const lora = zeroLora(be, model.config);
  const before = be.graphs.bytesHeld;
  try {
    graphs.run(Array.from({ length: rows }, (_, i) => ({ token: 0, position: 0, blockTable: [i] })), lora);
    await be.synchronize();
    return { bytes: be.graphs.bytesHeld - before, rows, withLora: lora !== null };
  } finally {
    graphs.free();
    if (lora !== null) be.free(lora.params);
    be.freeKvCache(cache);
    be.resetScratch();
    be.emptyCache();
  }
}

/** A zero adapter on every target (null where this backend cannot make adapter views yet). */
function zeroLora(be: CudaBackend, cfg: ModelConfig): DeviceLora | null {
  const limit = Math.min(...LORA_TARGETS.map((t) => Math.min(loraShapes(cfg, t).inFeatures, loraShapes(cfg, t).outFeatures)));
  const spec: LoraSpec = { rank: Math.min(PROFILE_LORA_RANK, limit), alpha: 1, targets: [...LORA_TARGETS], useRslora: false };
  const layout = loraLayout(cfg, spec);
  const params = be.alloc([layout.size], 'f32', 'persistent');
  try {
    return { spec, scale: 1, layout, params, views: loraViews(be, params, layout, cfg.numLayers) };
  } catch {
    be.free(params);
    return null;
  }
}
