/**
 * `tandem make-model`: write a complete Hugging Face model directory with seeded random
 * weights (config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
 * chat_template.jinja, generation_config.json) that transformers loads unchanged.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeCheckpoint } from './checkpoint.ts';
import { modelConfigToHfJson, type Architecture, type ModelConfig } from './config.ts';
import { buildByteLevelBpe } from './make-tokenizer.ts';
import type { TensorToWrite } from './safetensors.ts';
import { expectedTensors } from './weights.ts';
import { SeededRandom } from '../util/random.ts';

export interface Preset {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  maxPositionEmbeddings: number;
}

export const PRESETS: Record<'tiny' | 'small', Preset> = {
  // For tests: runs a forward pass in a millisecond or two.
  tiny: { vocabSize: 512, hiddenSize: 64, intermediateSize: 176, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16, maxPositionEmbeddings: 2048 },
  // The embedded default model: big enough to exercise every path, fast on two CPU cores.
  small: { vocabSize: 2048, hiddenSize: 256, intermediateSize: 704, numLayers: 4, numHeads: 8, numKvHeads: 2, headDim: 32, maxPositionEmbeddings: 4096 },
};

export interface MakeModelOptions {
  preset: keyof typeof PRESETS;
  out: string;
  seed?: number;
  architecture?: Architecture;
  /** Override the preset's KV heads (must divide the query heads). */
  numKvHeads?: number;
  /** Override the head dim (Qwen3-style explicit head_dim different from hidden / heads). */
  headDim?: number;
  tieWordEmbeddings?: boolean;
  dtype?: 'BF16' | 'F32' | 'F16';
  /** Override the preset's layer count (e.g. 36, Qwen2.5-3B's, for host-cost benchmarks). */
  numLayers?: number;
}

export function makeModel(opts: MakeModelOptions): ModelConfig {
  const preset = PRESETS[opts.preset];
  if (!preset) throw new Error(`unknown preset '${opts.preset}': choose one of ${Object.keys(PRESETS).join(', ')}`);
  const arch = opts.architecture ?? 'qwen2';
  const tok = buildByteLevelBpe({ vocabSize: preset.vocabSize });
  const idOf = (content: string): number => {
    const added = (tok.tokenizerJson as { added_tokens: { id: number; content: string }[] }).added_tokens;
    const hit = added.find((t) => t.content === content);
    if (!hit) throw new Error(`make-model: tokenizer has no ${content} token`);
    return hit.id;
  };
  const imEnd = idOf('<|im_end|>');
  const endOfText = idOf('<|endoftext|>');
  const config: ModelConfig = {
    architecture: arch,
    vocabSize: preset.vocabSize,
    hiddenSize: preset.hiddenSize,
    intermediateSize: preset.intermediateSize,
    numLayers: opts.numLayers ?? preset.numLayers,
    numHeads: preset.numHeads,
    numKvHeads: opts.numKvHeads ?? preset.numKvHeads,
    headDim: opts.headDim ?? preset.headDim,
    rmsNormEps: 1e-6,
    ropeTheta: 1_000_000,
    ropeScaling: null,
    maxPositionEmbeddings: preset.maxPositionEmbeddings,
    tieWordEmbeddings: opts.tieWordEmbeddings ?? true,
    qkvBias: arch === 'qwen2',
    oBias: false,
    mlpBias: false,
    qkNorm: arch === 'qwen3',
    bosTokenId: null,
    eosTokenIds: [imEnd],
    torchDtype: (opts.dtype ?? 'BF16') === 'F32' ? 'float32' : (opts.dtype ?? 'BF16') === 'F16' ? 'float16' : 'bfloat16',
    hiddenAct: 'silu',
  };
  if (!Number.isInteger(config.numLayers) || config.numLayers < 1) throw new Error(`numLayers must be an integer >= 1, got ${config.numLayers}`);
  if (config.numHeads % config.numKvHeads !== 0) {
    throw new Error(`--kv-heads ${config.numKvHeads} must divide the ${config.numHeads} query heads`);
  }

  const rng = new SeededRandom(opts.seed ?? 0);
  const dtype = opts.dtype ?? 'BF16';
  // Scale each matrix by 1/sqrt(fan_in) so activations keep unit size through the layers.
  // Embedding and head rows get std 2/sqrt(hidden): the normalised hidden state (length
  // ~sqrt(hidden)) then gives logits with a std of about 2, far from uniform (a parity check on
  // near-zero logits would prove little) yet not so peaked that sampling only ever repeats.
  const C = config.hiddenSize;
  const tensors: TensorToWrite[] = expectedTensors(config).map(({ name, shape }) => {
    const count = shape.reduce((a, b) => a * b, 1);
    let data: Float32Array;
    if (name.endsWith('norm.weight')) data = rng.normals(count, 0.1, 1);
    else if (name.endsWith('.bias')) data = rng.normals(count, 0.1);
    else if (name === 'model.embed_tokens.weight' || name === 'lm_head.weight') data = rng.normals(count, 2 / Math.sqrt(C));
    else data = rng.normals(count, 1 / Math.sqrt(shape[1]));
    return { name, shape, data, dtype };
  });

  mkdirSync(opts.out, { recursive: true });
  writeJson(join(opts.out, 'config.json'), modelConfigToHfJson(config));
  writeJson(join(opts.out, 'generation_config.json'), {
    bos_token_id: endOfText,
    pad_token_id: endOfText,
    eos_token_id: [imEnd, endOfText],
    do_sample: true,
    temperature: 0.7,
    top_p: 0.8,
    top_k: 20,
    repetition_penalty: 1.05,
    transformers_version: '4.57.0',
  });
  writeJson(join(opts.out, 'tokenizer.json'), tok.tokenizerJson);
  // Current transformers keeps the template in chat_template.jinja, not in tokenizer_config.
  const { chat_template: _inline, ...tokenizerConfig } = tok.tokenizerConfig as Record<string, unknown>;
  writeJson(join(opts.out, 'tokenizer_config.json'), tokenizerConfig);
  writeFileSync(join(opts.out, 'chat_template.jinja'), tok.chatTemplate);
  writeCheckpoint(opts.out, tensors, { metadata: { format: 'pt' } });
  return config;
}

function writeJson(path: string, value: unknown): void {
  writeFileSync(path, JSON.stringify(value, null, 2) + '\n');
}
