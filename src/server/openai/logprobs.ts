/**
 * The engine's per-token logprobs -> OpenAI's two formats: chat (`content: [{token, logprob,
 * bytes, top_logprobs}]`) and legacy completions (parallel arrays plus text offsets).
 * -inf (a token the filters removed) is sent as -9999.0, as vLLM does: JSON has no infinity.
 */
import type { TokenLogprob } from '../../engine/types.ts';
import type { ChatLogprobs } from './schemas/chat.ts';
import type { CompletionLogprobs } from './schemas/completions.ts';

type ChatEntry = NonNullable<ChatLogprobs['content']>[number];

const finite = (x: number): number => (Number.isFinite(x) ? x : -9999.0);

/** How a token is named: its text, or (vLLM's return_tokens_as_token_ids) "token_id:<id>". */
export type TokenNamer = (t: { id: number; token: string }) => string;
export const tokenText: TokenNamer = (t) => t.token;
export const tokenIdName: TokenNamer = (t) => `token_id:${t.id}`;

export function chatLogprobs(entries: readonly TokenLogprob[], topCount: number, name: TokenNamer = tokenText): ChatEntry[] {
  return entries.map((e) => ({
    token: name(e),
    logprob: finite(e.logprob),
    bytes: e.bytes,
    top_logprobs: e.top.slice(0, topCount).map((t) => ({ token: name(t), logprob: finite(t.logprob), bytes: t.bytes })),
  }));
}

/** Accumulates a completion choice's logprobs across events; text_offset counts from `start`. */
export class CompletionLogprobsBuilder {
  readonly #out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  #offset: number;

  constructor(
    start: number,
    private readonly topCount: number,
    private readonly name: TokenNamer = tokenText,
  ) {
    this.#offset = start;
  }

  /** Appends entries and returns just their part (for a stream chunk). */
  add(entries: readonly TokenLogprob[]): CompletionLogprobs {
    const part: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
    for (const e of entries) {
      // The chosen token always appears among the alternatives, as OpenAI documents.
      const top: Record<string, number> = {};
      for (const t of e.top.slice(0, this.topCount)) top[this.name(t)] ??= finite(t.logprob);
      const token = this.name(e);
      if (!(token in top)) top[token] = finite(e.logprob);
      part.tokens.push(token);
      part.token_logprobs.push(finite(e.logprob));
      part.top_logprobs.push(top);
      part.text_offset.push(this.#offset);
      // Offsets count characters of the text, so they follow the token's text, not its name.
      this.#offset += e.token.length;
    }
    this.#out.tokens.push(...part.tokens);
    this.#out.token_logprobs.push(...part.token_logprobs);
    this.#out.top_logprobs.push(...part.top_logprobs);
    this.#out.text_offset.push(...part.text_offset);
    return part;
  }

  result(): CompletionLogprobs {
    return this.#out;
  }
}
