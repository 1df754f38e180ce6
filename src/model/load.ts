/** Open a Hugging Face model directory: config, weights on a backend, tokenizer, defaults. */
import type { Backend } from '../backend/backend.ts';
import { Checkpoint } from './checkpoint.ts';
import { loadGenerationDefaults, loadModelConfig, ropeInvFreq, type GenerationDefaults, type ModelConfig } from './config.ts';
import { TextTokenizer } from './tokenizer.ts';
import { Transformer } from './transformer.ts';
import { loadWeights } from './weights.ts';

export interface LoadedModel {
  dir: string;
  config: ModelConfig;
  generation: GenerationDefaults;
  tokenizer: TextTokenizer;
  model: Transformer;
}

export function loadModel(dir: string, backend: Backend): LoadedModel {
  const config = loadModelConfig(dir);
  const generation = loadGenerationDefaults(dir, config);
  const tokenizer = TextTokenizer.load(dir);
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new Error(`${dir}: tokenizer has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${config.vocabSize}`);
  }
  const ckpt = Checkpoint.open(dir);
  try {
    const weights = loadWeights(backend, config, ckpt);
    const model = new Transformer(backend, config, weights, ropeInvFreq(config));
    return { dir, config, generation, tokenizer, model };
  } finally {
    ckpt.close();
  }
}
