/** vLLM's /tokenize and /detokenize. */
import { z } from '@hono/zod-openapi';
import { ChatMessage } from './chat.ts';

export const TokenizeRequest = z
  .object({
    model: z.string().nullish(),
    prompt: z.string().nullish().describe('Text to tokenize (give this or messages).'),
    messages: z.array(ChatMessage).min(1).nullish().describe('A conversation, rendered with the chat template first.'),
    add_generation_prompt: z.boolean().nullish().describe('With messages: end with the assistant turn opener (default true).'),
    continue_final_message: z.boolean().nullish(),
    add_special_tokens: z.boolean().nullish().describe('Default true for prompt, false for messages (the template adds them).'),
    chat_template_kwargs: z.record(z.string(), z.unknown()).nullish(),
    return_token_strs: z.boolean().nullish().describe('Also return each token as text.'),
  })
  .superRefine((req, ctx) => {
    const given = Number(req.prompt != null) + Number(req.messages != null);
    if (given !== 1) ctx.addIssue({ code: 'custom', path: ['prompt'], message: 'give exactly one of prompt or messages' });
  })
  .openapi('TokenizeRequest');
export type TokenizeRequest = z.infer<typeof TokenizeRequest>;

export const TokenizeResponse = z
  .object({
    count: z.int(),
    max_model_len: z.int(),
    tokens: z.array(z.int()),
    token_strs: z.array(z.string()).nullable(),
  })
  .openapi('TokenizeResponse');

export const DetokenizeRequest = z
  .object({ model: z.string().nullish(), tokens: z.array(z.int().min(0)) })
  .openapi('DetokenizeRequest');
export type DetokenizeRequest = z.infer<typeof DetokenizeRequest>;

export const DetokenizeResponse = z.object({ prompt: z.string() }).openapi('DetokenizeResponse');
