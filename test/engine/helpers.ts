/** Shared by the engine tests: a tiny random model, request defaults, stream collection. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CpuBackend } from '../../src/backend/cpu/cpu-backend.ts';
import type { ModelConfig } from '../../src/model/config.ts';
import { loadModel, type LoadedModel } from '../../src/model/load.ts';
import { LORA_TARGETS, initLoraAdapter, type LoraAdapter, type LoraSpec } from '../../src/model/lora.ts';
import { makeModel } from '../../src/model/make-model.ts';
import { Engine, type EngineOptions } from '../../src/engine/engine.ts';
import type { GenerationRequest, TokenEvent } from '../../src/engine/types.ts';
import { Metrics } from '../../src/metrics.ts';
import { SeededRandom } from '../../src/util/random.ts';

export interface TinyModel {
  loaded: LoadedModel;
  dispose(): void;
}

/** The tiny preset (vocab 512, 2 layers) with seeded random weights, on the CPU backend. */
export function tinyModel(seed = 7): TinyModel {
  const dir = mkdtempSync(join(tmpdir(), 'tandem-engine-'));
  makeModel({ preset: 'tiny', out: dir, seed });
  const loaded = loadModel(dir, new CpuBackend());
  return { loaded, dispose: () => rmSync(dir, { recursive: true, force: true }) };
}

export function makeEngine(loaded: LoadedModel, opts: Partial<EngineOptions> = {}): Engine {
  return new Engine(loaded, {
    blockSize: 16,
    numBlocks: 256,
    maxNumSeqs: 64,
    maxNumBatchedTokens: 512,
    maxWaiting: 64,
    // Process metrics would add GC observers per engine; the metrics test turns them on.
    metrics: new Metrics({ processMetrics: false }),
    ...opts,
  });
}

let nextId = 0;

/** A greedy request that ignores eos, so runs have a known length. */
export function request(promptIds: readonly number[], over: Partial<GenerationRequest> = {}): GenerationRequest {
  return {
    requestId: `req-${nextId++}`,
    promptIds,
    maxTokens: 12,
    sampling: { temperature: 0, topK: 0, topP: 1, minP: 0, seed: null, presencePenalty: 0, frequencyPenalty: 0, repetitionPenalty: 1 },
    stop: { strings: [], tokenIds: [], ignoreEos: true },
    logprobs: null,
    priority: 0,
    skipSpecialTokens: true,
    ...over,
  };
}

export function seeded(seed: number, temperature = 1): GenerationRequest['sampling'] {
  return { temperature, topK: 0, topP: 1, minP: 0, seed, presencePenalty: 0, frequencyPenalty: 0, repetitionPenalty: 1 };
}

export interface Collected {
  events: TokenEvent[];
  ids: number[];
  text: string;
  final: TokenEvent;
}

/**
 * Greedy token ids of each prompt, all added at once to a fresh engine (makeEngine with `opts`),
 * closed afterwards. `setup` runs on the engine first (e.g. to publish an adapter).
 */
export async function generateIds(
  loaded: LoadedModel,
  opts: Partial<EngineOptions>,
  prompts: readonly number[][],
  req: Partial<GenerationRequest>,
  setup: (engine: Engine) => void = () => {},
): Promise<number[][]> {
  const engine = makeEngine(loaded, opts);
  try {
    setup(engine);
    return (await Promise.all(prompts.map((p) => collect(engine.add(request(p, req)))))).map((c) => c.ids);
  } finally {
    await engine.close();
  }
}

export async function collect(stream: AsyncIterable<TokenEvent>): Promise<Collected> {
  const events: TokenEvent[] = [];
  for await (const e of stream) events.push(e);
  const final = events[events.length - 1];
  return { events, ids: events.flatMap((e) => e.tokenIds), text: events.map((e) => e.text).join(''), final };
}

/** Prompt token ids drawn from the ordinary (non-special) part of the vocabulary. */
export function randomPrompt(length: number, seed: number, vocab = 256): number[] {
  const rng = new SeededRandom(seed);
  return Array.from({ length }, () => Math.floor(rng.uniform() * vocab));
}

/**
 * A LoRA adapter as if trained: peft's init for A, and B drawn too (a fresh adapter has B = 0,
 * which would change nothing). With std 0.2 the branch moves each projection by about half the
 * base output's size, so outputs differ clearly from the base model's.
 */
export function trainedAdapter(cfg: ModelConfig, seed: number, spec: Partial<LoraSpec> = {}, std = 0.2): LoraAdapter {
  const full: LoraSpec = { rank: 4, alpha: 8, targets: [...LORA_TARGETS], useRslora: false, ...spec };
  const adapter = initLoraAdapter(cfg, full, seed);
  const rng = new SeededRandom(seed + 7919);
  for (const layer of adapter.layers) for (const w of layer.values()) w.b.set(rng.normals(w.b.length, std));
  return adapter;
}
