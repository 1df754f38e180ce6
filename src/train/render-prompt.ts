/**
 * An example's prompt as the model sees it: chat turns through the model's chat template with
 * the assistant turn opened (what TRL's maybe_apply_chat_template does for conversational
 * prompts), or raw text as it is.
 */
import type { TextTokenizer } from '../model/tokenizer.ts';
import type { ChatTurn } from './prompts.ts';

export function renderPrompt(tokenizer: TextTokenizer, prompt: readonly ChatTurn[] | string): { text: string; ids: number[] } {
  if (typeof prompt === 'string') return { text: prompt, ids: tokenizer.encode(prompt) };
  const text = tokenizer.applyChatTemplate(
    prompt.map((t) => ({ role: t.role, content: t.content })),
    { addGenerationPrompt: true },
  );
  // The template already placed any special tokens; don't let the tokenizer add a BOS again.
  return { text, ids: tokenizer.encode(text, { addSpecialTokens: false }) };
}
