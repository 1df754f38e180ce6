/** /v1/completions (legacy text completions): request, response and stream chunk. */
import { z } from '@hono/zod-openapi';
import { FinishReason, MAX_LOGPROBS, orNull, samplingFields, StopReason, Usage } from './common.ts';

const tokenId = z.int().min(0);

export const Prompt = z
  .union([z.string(), z.array(z.string()).min(1).max(128), z.array(tokenId).min(1), z.array(z.array(tokenId).min(1)).min(1).max(128)])
  .describe('A string, a list of strings, a list of token ids, or a list of token-id lists (one choice set per prompt).');

export const CompletionRequest = z
  .object({
    prompt: Prompt,
    ...samplingFields,
    logprobs: z.int().min(0).max(MAX_LOGPROBS).nullish().describe('Log probabilities of the chosen token and the 0 to 20 most likely alternatives.'),
    echo: z.boolean().nullish().describe('Return the prompt before the completion (not with logprobs).'),
    suffix: z.string().nullish().describe('Not supported: must be absent.'),
    best_of: z.int().min(1).nullish().describe('Not supported beyond n: must equal n or be absent.'),
  })
  .openapi('CompletionRequest');
export type CompletionRequest = z.infer<typeof CompletionRequest>;

export const CompletionLogprobs = z
  .object({
    tokens: z.array(z.string()),
    token_logprobs: z.array(z.number().nullable()),
    top_logprobs: z.array(z.record(z.string(), z.number()).nullable()),
    text_offset: z.array(z.int()),
  })
  .openapi('CompletionLogprobs');
export type CompletionLogprobs = z.infer<typeof CompletionLogprobs>;

const choice = {
  index: z.int(),
  text: z.string(),
  logprobs: orNull(CompletionLogprobs),
  finish_reason: FinishReason,
  stop_reason: StopReason,
};

export const CompletionResponse = z
  .object({
    id: z.string(),
    object: z.literal('text_completion'),
    created: z.int(),
    model: z.string(),
    system_fingerprint: z.string(),
    choices: z.array(z.object(choice)),
    usage: Usage,
  })
  .openapi('CompletionResponse');
export type CompletionResponse = z.infer<typeof CompletionResponse>;

export const CompletionChunk = z
  .object({
    id: z.string(),
    object: z.literal('text_completion'),
    created: z.int(),
    model: z.string(),
    system_fingerprint: z.string(),
    choices: z.array(z.object(choice)),
    usage: orNull(Usage).optional(),
  })
  .openapi('CompletionChunk');
export type CompletionChunk = z.infer<typeof CompletionChunk>;
