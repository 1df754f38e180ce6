// Chat messages -> prompt text, with the model's own Jinja chat template, as transformers'
// apply_chat_template does. The template is compiled once; render is called per request.
import { Template } from '@huggingface/jinja';

export interface ChatMessage {
  role: string;
  content: string | null | Array<{ type: 'text'; text: string }>;
  name?: string;
}

export interface RenderOptions {
  /** End with the opening of an assistant turn, so the model writes the reply. */
  addGenerationPrompt?: boolean;
  /** More template variables, e.g. `tools` or Qwen3's `enable_thinking`. */
  extra?: Record<string, unknown>;
}

// Variables the renderer or the Jinja runtime sets itself; `extra` may not override them.
const RESERVED = new Set([
  'messages', 'add_generation_prompt', 'bos_token', 'eos_token',
  'raise_exception', 'strftime_now', 'range', 'true', 'false', 'none', 'True', 'False', 'None',
]);

export class ChatTemplate {
  readonly #template: Template;
  readonly #specials: Record<string, string>;
  readonly #name: string;

  /**
   * @param source the Jinja source, as in tokenizer_config.json or chat_template.jinja
   * @param specials the strings templates see as `bos_token` and `eos_token` (left undefined,
   *   and so rendered as '', when the tokenizer has none)
   * @param name where the template came from, for error messages
   */
  constructor(
    source: string,
    specials: { bosToken?: string; eosToken?: string },
    name = 'chat template',
  ) {
    this.#name = name;
    try {
      this.#template = new Template(source);
    } catch (err) {
      throw new Error(`${name}: Jinja syntax error: ${messageOf(err)}`, { cause: err });
    }
    this.#specials = {};
    if (specials.bosToken !== undefined) this.#specials.bos_token = specials.bosToken;
    if (specials.eosToken !== undefined) this.#specials.eos_token = specials.eosToken;
  }

  /**
   * Renders the conversation. Content given as an array of text parts (the OpenAI form) is
   * joined with '\n' into one string first, as vLLM does, because most templates,
   * Qwen's included, concatenate `message.content` as a string. Null content (an assistant
   * turn that only calls tools) becomes ''. Other message fields pass through unchanged.
   * `raise_exception(msg)` and `strftime_now(format)` are available to templates.
   */
  render(messages: readonly ChatMessage[], opts: RenderOptions = {}): string {
    const extra = opts.extra ?? {};
    for (const key of Object.keys(extra)) {
      if (RESERVED.has(key)) throw new Error(`${this.#name}: extra variable '${key}' is set by the renderer; pass it another way`);
    }
    const context: Record<string, unknown> = {
      ...extra,
      ...this.#specials,
      messages: messages.map(flattenContent),
      add_generation_prompt: opts.addGenerationPrompt ?? false,
    };
    try {
      return this.#template.render(context);
    } catch (err) {
      throw new Error(`${this.#name} failed to render: ${messageOf(err)}`, { cause: err });
    }
  }
}

function flattenContent(message: ChatMessage): Record<string, unknown> {
  const { content } = message;
  const text = content === null ? '' : typeof content === 'string' ? content : content.map((part) => part.text).join('\n');
  return { ...message, content: text };
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
