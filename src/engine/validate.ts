/**
 * Checks a generation request before the engine takes it: ids, sampling parameters, and whether
 * prompt + max_tokens fits the context and the KV cache at all. Every failure is an EngineError
 * naming the OpenAI parameter at fault (the server maps it to a 400).
 */
import type { KvBlockManager } from './kv-cache.ts';
import { EngineError, type GenerationRequest } from './types.ts';

export interface ValidationContext {
  /** Whether a live request already uses this id. */
  live(requestId: string): boolean;
  vocabSize: number;
  maxModelLen: number;
  blocks: Pick<KvBlockManager, 'blocksFor' | 'numBlocks' | 'blockSize'>;
}

/** 9000 -> "9,000", as in the messages users read. */
const fmt = (n: number): string => n.toLocaleString('en-US');

export function validateRequest(req: GenerationRequest, ctx: ValidationContext): void {
  const bad = (message: string, param: string | null): never => {
    throw new EngineError('invalid_request', message, param);
  };
  if (typeof req.requestId !== 'string' || req.requestId === '') bad('requestId must be a non-empty string', null);
  if (ctx.live(req.requestId)) bad(`request id '${req.requestId}' is already in use by a live request`, null);
  const prompt = req.promptIds;
  if (prompt.length === 0) bad('the prompt is empty: give at least one token', 'prompt');
  const vocab = ctx.vocabSize;
  for (let i = 0; i < prompt.length; i++) {
    const id = prompt[i];
    if (!Number.isInteger(id) || id < 0 || id >= vocab) bad(`prompt token ${i} is ${id}, outside this model's vocabulary [0, ${vocab})`, 'prompt');
  }
  if (!Number.isInteger(req.maxTokens) || req.maxTokens < 1) bad(`max_tokens must be an integer >= 1, got ${req.maxTokens}`, 'max_tokens');
  const s = req.sampling;
  if (!(Number.isFinite(s.temperature) && s.temperature >= 0)) bad(`temperature must be a finite number >= 0, got ${s.temperature}`, 'temperature');
  if (!Number.isInteger(s.topK)) bad(`top_k must be an integer (<= 0 turns it off), got ${s.topK}`, 'top_k');
  if (!(s.topP > 0 && s.topP <= 1)) bad(`top_p must be in (0, 1], got ${s.topP}`, 'top_p');
  if (!(s.minP >= 0 && s.minP <= 1)) bad(`min_p must be in [0, 1], got ${s.minP}`, 'min_p');
  if (s.seed !== null && !Number.isSafeInteger(s.seed)) bad(`seed must be an integer, got ${s.seed}`, 'seed');
  if (!Number.isFinite(s.presencePenalty)) bad(`presence_penalty must be a finite number, got ${s.presencePenalty}`, 'presence_penalty');
  if (!Number.isFinite(s.frequencyPenalty)) bad(`frequency_penalty must be a finite number, got ${s.frequencyPenalty}`, 'frequency_penalty');
  if (!(Number.isFinite(s.repetitionPenalty) && s.repetitionPenalty > 0)) bad(`repetition_penalty must be a number > 0, got ${s.repetitionPenalty}`, 'repetition_penalty');
  if (req.logprobs !== null && !(Number.isInteger(req.logprobs) && req.logprobs >= 0 && req.logprobs <= vocab)) {
    bad(`logprobs must be null or an integer in [0, ${vocab}], got ${req.logprobs}`, 'logprobs');
  }
  if (!Number.isFinite(req.priority)) bad(`priority must be a finite number, got ${req.priority}`, 'priority');
  for (const id of req.stop.tokenIds) if (!Number.isInteger(id)) bad(`stop token ids must be integers, got ${id}`, 'stop_token_ids');

  const n = prompt.length;
  const m = req.maxTokens;
  const limit = ctx.maxModelLen;
  if (n >= limit) {
    throw new EngineError(
      'context_length_exceeded',
      `prompt is ${fmt(n)} tokens; this model's context is ${fmt(limit)}, which leaves no room to generate: shorten the prompt`,
      'prompt',
    );
  }
  if (n + m > limit) {
    throw new EngineError(
      'context_length_exceeded',
      `prompt (${fmt(n)}) + max_tokens (${fmt(m)}) = ${fmt(n + m)} exceeds the context of ${fmt(limit)}: lower max_tokens to at most ${fmt(limit - n)} or shorten the prompt`,
      'max_tokens',
    );
  }
  const blocks = ctx.blocks.blocksFor(n + m);
  if (blocks > ctx.blocks.numBlocks) {
    const bs = ctx.blocks.blockSize;
    throw new EngineError(
      'out_of_capacity',
      `prompt (${fmt(n)}) + max_tokens (${fmt(m)}) = ${fmt(n + m)} tokens need ${fmt(blocks)} KV blocks, but the KV cache holds only ` +
        `${fmt(ctx.blocks.numBlocks)} blocks (${fmt(ctx.blocks.numBlocks * bs)} tokens): lower max_tokens or shorten the prompt`,
      'max_tokens',
    );
  }
}
