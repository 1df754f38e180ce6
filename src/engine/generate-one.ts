/**
 * Generate from one prompt: packed prefill, then paged decode one token at a time.
 * This is what `tandem generate` runs; the serving engine batches many of these.
 */
import type { SamplingParams } from '../backend/backend.ts';
import type { Transformer } from '../model/transformer.ts';
import { packBatch } from '../model/transformer.ts';
import { BlockPool } from './block-pool.ts';

export interface GenerateOptions {
  maxTokens: number;
  sampling: Omit<SamplingParams, 'step'>;
  /** Generation ends after emitting one of these (the eos token is emitted, then stops). */
  stopTokenIds: readonly number[];
  blockSize?: number;
}

export interface GeneratedToken {
  id: number;
  logprob: number;
}

export async function* generateTokens(
  model: Transformer,
  promptIds: readonly number[],
  opts: GenerateOptions,
): AsyncGenerator<GeneratedToken> {
  const be = model.backend;
  const maxLen = model.config.maxPositionEmbeddings;
  if (promptIds.length === 0) throw new Error('the prompt is empty: give at least one token');
  if (promptIds.length + opts.maxTokens > maxLen) {
    throw new Error(
      `prompt (${promptIds.length} tokens) + max tokens (${opts.maxTokens}) = ${promptIds.length + opts.maxTokens} exceeds this model's context of ${maxLen}`,
    );
  }
  for (const id of promptIds) {
    if (!Number.isInteger(id) || id < 0 || id >= model.config.vocabSize) {
      throw new Error(`token id ${id} is outside the vocabulary [0, ${model.config.vocabSize})`);
    }
  }
  const blockSize = opts.blockSize ?? 16;
  const pool = new BlockPool(Math.ceil((promptIds.length + opts.maxTokens) / blockSize), blockSize);
  const cache = be.allocKvCache(model.kvCacheSpec(pool.numBlocks, blockSize));
  const stop = new Set(opts.stopTokenIds);
  try {
    const table: number[] = [];
    let cached = 0;
    let next: readonly number[] = promptIds;
    for (let step = 0; step < opts.maxTokens; step++) {
      pool.ensure(table, cached + next.length);
      const logits = model.forward(packBatch([{ newTokens: next, numCached: cached, blockTable: table }], blockSize), cache);
      const { ids, logprobs } = await be.sample(logits, [{ ...opts.sampling, step }]);
      be.resetScratch();
      cached += next.length;
      const id = ids[0];
      yield { id, logprob: logprobs[0] };
      if (stop.has(id)) return;
      next = [id];
    }
  } finally {
    be.resetScratch();
    be.freeKvCache(cache);
  }
}
