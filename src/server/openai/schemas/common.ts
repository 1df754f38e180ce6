/**
 * Request fields shared by /v1/chat/completions and /v1/completions, with OpenAI's ranges and
 * vLLM's extensions (top_k, min_p, repetition_penalty, ignore_eos, stop_token_ids). Every field
 * accepts null as "not given", as OpenAI clients send it. Objects are not strict: unknown
 * fields are ignored, as OpenAI and vLLM do.
 */
import { z } from '@hono/zod-openapi';

/** Stop strings: OpenAI allows 4, vLLM any number; 16 keeps the per-token check cheap. */
export const MAX_STOP_STRINGS = 16;
export const MAX_N = 128;
export const MAX_LOGPROBS = 20;

/**
 * `schema | null` for a named (component) schema: zod-to-openapi renders `.nullable()` on a
 * registered schema as a bare $ref, dropping the null; a union keeps it.
 */
export const orNull = <T extends z.ZodType>(schema: T) => z.union([schema, z.null()]);

export const StreamOptions = z
  .object({
    include_usage: z.boolean().nullish().describe('Send a last chunk with `usage` (and `choices: []`) before `[DONE]`.'),
    continuous_usage_stats: z.boolean().nullish().describe('vLLM extension: every chunk carries the usage so far.'),
  })
  .openapi('StreamOptions');

export const samplingFields = {
  model: z
    .string()
    .nullish()
    .describe('The served model name, or the name of a loaded LoRA adapter (GET /v1/models); omitted means the base model.'),
  max_tokens: z.int().min(1).nullish().describe('Tokens to generate at most. Default: the rest of the context.'),
  temperature: z.number().min(0).max(2).nullish().describe("0 is greedy. Default: the model's generation_config.json, else 1."),
  top_p: z.number().gt(0).max(1).nullish().describe('Nucleus sampling. Default from generation_config.json, else 1.'),
  top_k: z.int().min(-1).nullish().describe('vLLM extension: keep the k most likely tokens; -1 or 0 is off.'),
  min_p: z.number().min(0).max(1).nullish().describe('vLLM extension: drop tokens below min_p times the top probability.'),
  n: z.int().min(1).max(MAX_N).nullish().describe('Completions per prompt (1 to 128).'),
  seed: z.int().nullish().describe('Same seed, same request: same output. With n > 1, choice i uses seed + i.'),
  stop: z
    .union([z.string().min(1), z.array(z.string().min(1)).max(MAX_STOP_STRINGS)])
    .nullish()
    .describe('Up to 16 strings; generation stops before the first one and never returns it.'),
  stop_token_ids: z.array(z.int().min(0)).max(256).nullish().describe('vLLM extension: token ids that end generation.'),
  ignore_eos: z.boolean().nullish().describe('vLLM extension: keep generating past end-of-sequence tokens.'),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  repetition_penalty: z.number().gt(0).max(10).nullish().describe('vLLM extension: > 1 discourages repeats; 1 is off.'),
  skip_special_tokens: z.boolean().nullish().describe('vLLM extension: leave special tokens out of the text (default true).'),
  return_tokens_as_token_ids: z
    .boolean()
    .nullish()
    .describe('vLLM extension: logprobs name tokens as "token_id:<id>" (token text can be a fragment of a character).'),
  logit_bias: z.record(z.string(), z.number()).nullish().describe('Not supported: must be empty or absent.'),
  stream: z.boolean().nullish().describe('Send server-sent events: `data: {chunk}` lines, then `data: [DONE]`.'),
  stream_options: orNull(StreamOptions).optional(),
  user: z.string().nullish().describe('Ignored.'),
};

export const Usage = z
  .object({
    prompt_tokens: z.int(),
    completion_tokens: z.int(),
    total_tokens: z.int(),
    prompt_tokens_details: z.object({ cached_tokens: z.int() }),
  })
  .openapi('Usage');

export const FinishReason = z.enum(['stop', 'length', 'abort']).nullable();
export const StopReason = z
  .union([z.string(), z.int()])
  .nullable()
  .describe('vLLM extension: the stop string or stop token id that ended the choice; null for end-of-sequence or length.');

export const ErrorResponse = z
  .object({
    error: z.object({
      message: z.string(),
      type: z.string(),
      param: z.string().nullable(),
      code: z.string().nullable(),
    }),
  })
  .openapi('ErrorResponse');
