/**
 * Request prompts -> token ids: chat messages through the model's template, completion
 * prompts (text or ids) as given. Mistakes the client can fix become 400s naming the field.
 */
import type { ChatMessage as TemplateMessage } from '../../model/chat-template.ts';
import { invalidParam } from '../errors.ts';
import type { ServingEngine } from '../state.ts';
import type { ChatCompletionRequest } from './schemas/chat.ts';
import type { CompletionRequest } from './schemas/completions.ts';

export interface PromptInput {
  ids: number[];
  /** The prompt as text (for echo). */
  text: string;
}

type Messages = ChatCompletionRequest['messages'];

export interface ChatPromptOptions {
  addGenerationPrompt?: boolean | null;
  continueFinalMessage?: boolean | null;
  chatTemplateKwargs?: Record<string, unknown> | null;
}

/** The rendered chat prompt; the template adds the special tokens, so encoding adds none. */
export function renderChat(engine: ServingEngine, messages: Messages, opts: ChatPromptOptions): string {
  const tokenizer = engine.loaded.tokenizer;
  if (!tokenizer.hasChatTemplate) {
    throw invalidParam('messages', 'This model has no chat template; use /v1/completions with a plain prompt.', 'no_chat_template');
  }
  const continueFinal = opts.continueFinalMessage ?? false;
  const addGenerationPrompt = opts.addGenerationPrompt ?? !continueFinal;
  if (continueFinal && addGenerationPrompt) {
    throw invalidParam('continue_final_message', 'continue_final_message and add_generation_prompt cannot both be true.');
  }
  // 'developer' is OpenAI's newer name for the system role; chat templates only know 'system'.
  const converted: TemplateMessage[] = messages.map((m) => ({
    role: m.role === 'developer' ? 'system' : m.role,
    content: m.content ?? null,
    ...(m.name != null ? { name: m.name } : {}),
    ...(m.tool_call_id != null ? { tool_call_id: m.tool_call_id } : {}),
  }));
  let text: string;
  try {
    text = tokenizer.applyChatTemplate(converted, { addGenerationPrompt, extra: opts.chatTemplateKwargs ?? {} });
  } catch (err) {
    throw invalidParam('messages', `The chat template rejected the messages: ${err instanceof Error ? err.message : String(err)}`, 'chat_template_error');
  }
  if (continueFinal) text = cutAfterFinalMessage(text, messages);
  return text;
}

/**
 * vLLM's continue_final_message: drop what the template writes after the last message's
 * content (the end-of-turn marker), so the model carries on writing that message.
 */
function cutAfterFinalMessage(text: string, messages: Messages): string {
  const last = messages[messages.length - 1];
  const content = typeof last.content === 'string' ? last.content : (last.content ?? []).map((p) => p.text).join('\n');
  const at = content === '' ? -1 : text.lastIndexOf(content);
  if (at < 0) {
    throw invalidParam('continue_final_message', "continue_final_message needs the last message's content in the rendered prompt; it is empty or the template rewrote it.");
  }
  return text.slice(0, at + content.length);
}

export function chatPrompt(engine: ServingEngine, req: ChatCompletionRequest): PromptInput {
  const text = renderChat(engine, req.messages, {
    addGenerationPrompt: req.add_generation_prompt,
    continueFinalMessage: req.continue_final_message,
    chatTemplateKwargs: req.chat_template_kwargs,
  });
  return { text, ids: engine.loaded.tokenizer.encode(text, { addSpecialTokens: false }) };
}

/** One entry per prompt: OpenAI returns `n` choices for each. */
export function completionPrompts(engine: ServingEngine, prompt: CompletionRequest['prompt']): PromptInput[] {
  const tokenizer = engine.loaded.tokenizer;
  const fromText = (text: string, param: string): PromptInput => {
    if (text.length === 0) throw invalidParam(param, 'The prompt is empty; give at least one character.');
    const ids = tokenizer.encode(text);
    if (ids.length === 0) throw invalidParam(param, 'The prompt encodes to no tokens.');
    return { text, ids };
  };
  const fromIds = (ids: number[], param: string): PromptInput => {
    checkTokenIds(engine, ids, param);
    return { ids, text: tokenizer.decode(ids) };
  };
  if (typeof prompt === 'string') return [fromText(prompt, 'prompt')];
  if (prompt.every((p) => typeof p === 'number')) return [fromIds(prompt as number[], 'prompt')];
  return prompt.map((p, i) => (typeof p === 'string' ? fromText(p, `prompt[${i}]`) : fromIds(p as number[], `prompt[${i}]`)));
}

/** Token ids must be rows of the embedding: [0, vocab_size). */
export function checkTokenIds(engine: ServingEngine, ids: readonly number[], param: string): void {
  const vocab = engine.loaded.config.vocabSize;
  const bad = ids.findIndex((id) => id >= vocab);
  if (bad >= 0) throw invalidParam(`${param}[${bad}]`, `Token id ${ids[bad]} is out of vocabulary: this model's ids are 0 to ${vocab - 1}.`);
}
