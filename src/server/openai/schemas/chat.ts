/** /v1/chat/completions: the request, the response and the stream chunk, as OpenAI defines them. */
import { z } from '@hono/zod-openapi';
import { FinishReason, MAX_LOGPROBS, orNull, samplingFields, StopReason, Usage } from './common.ts';

export const ROLES = ['system', 'developer', 'user', 'assistant', 'tool'] as const;

const TextPart = z.object({ type: z.literal('text'), text: z.string() }).openapi('TextContentPart');

export const ChatMessage = z
  .object({
    role: z.enum(ROLES),
    content: z
      .union([z.string(), z.array(TextPart)])
      .nullish()
      .describe('A string or text parts (joined with newlines). Only an assistant turn may leave it out.'),
    name: z.string().nullish(),
    tool_call_id: z.string().nullish(),
  })
  .openapi('ChatMessage');

export const ChatCompletionRequest = z
  .object({
    messages: z.array(ChatMessage).min(1),
    ...samplingFields,
    max_completion_tokens: z.int().min(1).nullish().describe('Same as max_tokens (OpenAI\'s newer name); wins when both are given.'),
    logprobs: z.boolean().nullish().describe('Return the log probability of each output token.'),
    top_logprobs: z.int().min(0).max(MAX_LOGPROBS).nullish().describe('Also return the 0 to 20 most likely alternatives (needs logprobs: true).'),
    add_generation_prompt: z.boolean().nullish().describe('vLLM extension: end the prompt with the assistant turn opener (default true).'),
    continue_final_message: z.boolean().nullish().describe('vLLM extension: leave the last message open so the model continues it.'),
    chat_template_kwargs: z.record(z.string(), z.unknown()).nullish().describe('vLLM extension: extra variables for the chat template.'),
  })
  .superRefine((req, ctx) => {
    req.messages.forEach((m, i) => {
      if (m.role !== 'assistant' && (m.content === null || m.content === undefined)) {
        ctx.addIssue({ code: 'custom', path: ['messages', i, 'content'], message: `a ${m.role} message needs content` });
      }
    });
  })
  .openapi('ChatCompletionRequest');
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequest>;

const TopLogprob = z.object({ token: z.string(), logprob: z.number(), bytes: z.array(z.int()).nullable() });
export const ChatLogprobs = z
  .object({
    content: z.array(TopLogprob.extend({ top_logprobs: z.array(TopLogprob) })).nullable(),
  })
  .openapi('ChatLogprobs');
export type ChatLogprobs = z.infer<typeof ChatLogprobs>;

export const ChatCompletionResponse = z
  .object({
    id: z.string(),
    object: z.literal('chat.completion'),
    created: z.int(),
    model: z.string(),
    system_fingerprint: z.string(),
    choices: z.array(
      z.object({
        index: z.int(),
        message: z.object({ role: z.literal('assistant'), content: z.string(), refusal: z.null() }),
        logprobs: orNull(ChatLogprobs),
        finish_reason: FinishReason,
        stop_reason: StopReason,
      }),
    ),
    usage: Usage,
  })
  .openapi('ChatCompletionResponse');
export type ChatCompletionResponse = z.infer<typeof ChatCompletionResponse>;

export const ChatCompletionChunk = z
  .object({
    id: z.string(),
    object: z.literal('chat.completion.chunk'),
    created: z.int(),
    model: z.string(),
    system_fingerprint: z.string(),
    choices: z.array(
      z.object({
        index: z.int(),
        delta: z.object({ role: z.literal('assistant').optional(), content: z.string().optional() }),
        logprobs: orNull(ChatLogprobs),
        finish_reason: FinishReason,
        stop_reason: StopReason.optional(),
      }),
    ),
    usage: orNull(Usage).optional().describe('With stream_options.include_usage: null on every chunk but the last, which has choices [].'),
  })
  .openapi('ChatCompletionChunk');
export type ChatCompletionChunk = z.infer<typeof ChatCompletionChunk>;
