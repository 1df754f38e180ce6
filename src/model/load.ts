/**
 * Open a Hugging Face model directory: config, weights on a backend (in its preferred dtype: f32
 * on cpu, bf16 on cuda), tokenizer, defaults.
 */
import type { Backend } from '../backend/backend.ts';
import { Checkpoint } from './checkpoint.ts';
import { loadGenerationDefaults, loadModelConfig, ropeInvFreq, type GenerationDefaults, type ModelConfig } from './config.ts';
import { TextTokenizer } from './tokenizer.ts';
import { Transformer } from './transformer.ts';
import { loadWeights, loadWeightsAsync, type ModelWeights } from './weights.ts';

export interface LoadedModel {
  dir: string;
  config: ModelConfig;
  generation: GenerationDefaults;
  tokenizer: TextTokenizer;
  model: Transformer;
}

export function loadModel(dir: string, backend: Backend): LoadedModel {
  const { config, generation, tokenizer } = loadMetadata(dir);
  const ckpt = Checkpoint.open(dir);
  try {
    return assembleModel(dir, backend, config, generation, tokenizer, loadWeights(backend, config, ckpt, backend.preferredDtype));
  } finally {
    ckpt.close();
  }
}

/** loadModel that yields to the event loop between tensors (for servers). */
export async function loadModelAsync(dir: string, backend: Backend): Promise<LoadedModel> {
  const { config, generation, tokenizer } = loadMetadata(dir);
  const ckpt = Checkpoint.open(dir);
  try {
    return assembleModel(dir, backend, config, generation, tokenizer, await loadWeightsAsync(backend, config, ckpt, backend.preferredDtype));
  } finally {
    ckpt.close();
  }
}

function loadMetadata(dir: string): { config: ModelConfig; generation: GenerationDefaults; tokenizer: TextTokenizer } {
  const config = loadModelConfig(dir);
  const generation = loadGenerationDefaults(dir, config);
  const tokenizer = TextTokenizer.load(dir);
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new Error(`${dir}: tokenizer has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${config.vocabSize}`);
  }
  return { config, generation, tokenizer };
}

function assembleModel(
  dir: string,
  backend: Backend,
  config: ModelConfig,
  generation: GenerationDefaults,
  tokenizer: TextTokenizer,
  weights: ModelWeights,
): LoadedModel {
  const model = new Transformer(backend, config, weights, ropeInvFreq(config));
  return { dir, config, generation, tokenizer, model };
}
